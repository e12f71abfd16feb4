//! A real Git web UI for integration tests: Debian's `cgit` run as a CGI
//! behind a throwaway `nginx` and `fcgiwrap`, serving every repository under
//! one folder ([`Cgit::start`]).
//!
//! Everything it writes lives in its own temporary folder: the nginx config,
//! pid file, error log and temp dirs, and the `cgitrc`. It never reads the
//! system's nginx config or `/etc/cgitrc`, listens only on loopback ports
//! picked at start, and kills both daemons when dropped. nginx runs with
//! `master_process off`, so there are no worker processes to outlive it.
//!
//! [`cgitrc`] is public on its own: the same settings serve cgit as a plain
//! CGI without nginx (what `latchkey dev` can do; see [`cgi_env`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::{Skip, free_port};

/// The peer name of cgit (with nginx and fcgiwrap) in `LATCHKEY_REQUIRE_PEERS`.
pub const PEER: &str = "cgit";

/// Where Debian's `cgit` package installs the CGI program.
pub const CGIT_CGI: &str = "/usr/lib/cgit/cgit.cgi";

/// Where Debian's `cgit` package installs its stylesheet and logo, served
/// at `/cgit-css/` (the paths Debian's own `/etc/cgitrc` uses).
pub const CGIT_STATIC: &str = "/usr/share/cgit";

const NGINX: &str = "/usr/sbin/nginx";
const FCGIWRAP: &str = "/usr/sbin/fcgiwrap";
const INSTALL_HINT: &str = "install them with `apt-get install cgit nginx fcgiwrap`";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `cgitrc` that lists every repository under `repos_dir` (`scan-path`)
/// with pretty URLs under `virtual_root` (e.g. `/`, or `/git/` when cgit is
/// mounted below a prefix) and cgit's page cache off, so a page always shows
/// the repository as it is now (a test pushes, then looks).
///
/// `scan-path` comes last on purpose: cgit applies the settings read
/// *before* it to the repositories it finds, and ignores later ones.
pub fn cgitrc(repos_dir: &Path, virtual_root: &str) -> String {
    format!(
        "# Written by latchkey-testkit (crates/testkit/src/cgit.rs); see cgitrc(5).\n\
         cache-size=0\n\
         virtual-root={virtual_root}\n\
         css={virtual_root}cgit-css/cgit.css\n\
         logo={virtual_root}cgit-css/cgit.png\n\
         root-title=Latchkey test repositories\n\
         enable-http-clone=0\n\
         enable-index-owner=0\n\
         remove-suffix=1\n\
         scan-path={}\n",
        repos_dir.display()
    )
}

/// The CGI environment cgit needs for one request when run directly (no
/// web server), as `(name, value)` pairs: `CGIT_CONFIG` (the `cgitrc`),
/// `GATEWAY_INTERFACE`, `REQUEST_METHOD`, `SCRIPT_NAME` (the mount point
/// without its trailing slash, `""` at the root), `PATH_INFO` (the path
/// below it, e.g. `/demo/tree/`), `QUERY_STRING` and the server's name and
/// port. This is what the nginx harness passes too, so a test of one
/// documents the other.
pub fn cgi_env<'a>(
    cgitrc_path: &'a Path,
    method: &'a str,
    script_name: &'a str,
    path_info: &'a str,
    query: &'a str,
    server_port: u16,
) -> Vec<(&'static str, String)> {
    vec![
        ("CGIT_CONFIG", cgitrc_path.display().to_string()),
        ("GATEWAY_INTERFACE", "CGI/1.1".to_owned()),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_owned()),
        ("SERVER_SOFTWARE", "latchkey-testkit".to_owned()),
        ("SERVER_NAME", "127.0.0.1".to_owned()),
        ("SERVER_PORT", server_port.to_string()),
        ("REQUEST_METHOD", method.to_owned()),
        ("SCRIPT_NAME", script_name.to_owned()),
        ("PATH_INFO", path_info.to_owned()),
        ("QUERY_STRING", query.to_owned()),
    ]
}

/// A running cgit behind nginx and fcgiwrap on `127.0.0.1`. Both daemons are
/// killed when dropped.
#[derive(Debug)]
pub struct Cgit {
    nginx: Child,
    fcgiwrap: Child,
    port: u16,
    url: String,
    cgitrc: PathBuf,
    // Dropped last: the daemons' files live here.
    dir: tempfile::TempDir,
}

impl Cgit {
    /// Starts cgit over the bare repositories under `repos_dir` (any
    /// depth: `owner/repo.git` is listed as `owner/repo`). `Err(Skip)`,
    /// after [`crate::skip_or_fail`], when cgit, nginx or fcgiwrap is not
    /// installed; panics with the daemons' own words when they are installed
    /// but do not start.
    pub async fn start(repos_dir: &Path) -> Result<Cgit, Skip> {
        let missing: Vec<&str> = [CGIT_CGI, NGINX, FCGIWRAP]
            .into_iter()
            .filter(|p| !Path::new(p).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(Skip::report(
                PEER,
                format!("missing `{}`; {INSTALL_HINT}", missing.join("`, `")),
            ));
        }
        let repos_dir = std::fs::canonicalize(repos_dir).unwrap_or_else(|e| {
            panic!(
                "the repositories folder `{}` cannot be read: {e}",
                repos_dir.display()
            )
        });

        let dir = tempfile::Builder::new()
            .prefix("latchkey-cgit-")
            .tempdir()
            .expect("create a temporary folder for nginx and cgit");
        let cgitrc_path = dir.path().join("cgitrc");
        write(&cgitrc_path, &cgitrc(&repos_dir, "/"));

        // fcgiwrap on a loopback TCP port rather than a Unix socket: nginx
        // then needs no permission on a socket file whoever it runs as. One
        // process, no `-c N`: preforked children would outlive the kill on
        // drop (they keep the listening socket), and tests need no more.
        let fcgi_port = free_port();
        let mut fcgiwrap = Command::new(FCGIWRAP)
            .arg("-s")
            .arg(format!("tcp:127.0.0.1:{fcgi_port}"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(create(&dir.path().join("fcgiwrap.log"))))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{FCGIWRAP}`: {e}"));
        if let Err(why) = wait_listening(fcgi_port, &mut fcgiwrap).await {
            panic!(
                "fcgiwrap did not start: {why}; its log:\n{}",
                read(&dir.path().join("fcgiwrap.log"))
            );
        }

        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        write(
            &conf,
            &nginx_conf(dir.path(), port, fcgi_port, &cgitrc_path),
        );
        let error_log = dir.path().join("error.log");
        let mut nginx = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(create(&dir.path().join("nginx.stderr"))))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{NGINX}`: {e}"));
        if let Err(why) = wait_listening(port, &mut nginx).await {
            panic!(
                "nginx did not start: {why}; its stderr:\n{}\nits error log:\n{}\n\
                 try `{NGINX} -t -p {d} -c {d}/nginx.conf` by hand",
                read(&dir.path().join("nginx.stderr")),
                read(&error_log),
                d = dir.path().display()
            );
        }

        Ok(Cgit {
            nginx,
            fcgiwrap,
            port,
            url: format!("http://127.0.0.1:{port}"),
            cgitrc: cgitrc_path,
            dir,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT` (no trailing slash); the
    /// repository index is at `/`, a repository's summary at `/NAME/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `cgitrc` in use (see [`cgitrc`]).
    pub fn cgitrc_path(&self) -> &Path {
        &self.cgitrc
    }

    /// nginx's error log so far (cgit's and fcgiwrap's complaints land
    /// here), for a failing test's message.
    pub fn error_log(&self) -> String {
        format!(
            "{}{}",
            read(&self.dir.path().join("error.log")),
            read(&self.dir.path().join("fcgiwrap.log"))
        )
    }
}

impl Drop for Cgit {
    fn drop(&mut self) {
        let _ = self.nginx.start_kill();
        let _ = self.fcgiwrap.start_kill();
    }
}

/// nginx's whole configuration: one loopback server, cgit for every path
/// but the static files, and every file nginx writes inside `dir`.
fn nginx_conf(dir: &Path, port: u16, fcgi_port: u16, cgitrc: &Path) -> String {
    let d = dir.display();
    let cgitrc = cgitrc.display();
    format!(
        r#"# Written by latchkey-testkit (crates/testkit/src/cgit.rs).
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ text/css css; image/png png; image/x-icon ico; text/plain txt; }}
    server {{
        listen 127.0.0.1:{port};
        server_name 127.0.0.1;
        location /cgit-css/ {{
            alias {CGIT_STATIC}/;
        }}
        location / {{
            fastcgi_pass 127.0.0.1:{fcgi_port};
            fastcgi_param SCRIPT_FILENAME {CGIT_CGI};
            fastcgi_param CGIT_CONFIG {cgitrc};
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param SERVER_SOFTWARE nginx;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param HTTP_PROXY "";
        }}
    }}
}}
"#
    )
}

/// Waits until something accepts connections on `127.0.0.1:port`, or the
/// child exits, or [`START_TIMEOUT`] passes.
async fn wait_listening(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited with {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nothing listens on 127.0.0.1:{port} after {START_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write `{}`: {e}", path.display()));
}

fn create(path: &Path) -> std::fs::File {
    std::fs::File::create(path)
        .unwrap_or_else(|e| panic!("cannot create `{}`: {e}", path.display()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
