//! A throwaway PostgreSQL for tests.
//!
//! [`PostgresServer::start`] hands out the URL of an empty database:
//!
//! - when `DATABASE_URL` is set, a fresh database `latchkey_t_<random>` is
//!   created in that server (and dropped, best effort, on drop). Restarts
//!   are not available then ([`PostgresServer::can_restart`] is false);
//! - otherwise a private cluster: `initdb` (found on `PATH`, else under
//!   `/usr/lib/postgresql/*/bin`) into a temporary directory, started with
//!   `pg_ctl -w start` on a free loopback port (`listen_addresses=127.0.0.1`,
//!   its Unix socket inside the directory, trust authentication), stopped
//!   with `pg_ctl stop -m immediate` on drop. When the tests run as root
//!   the directory is given to the `postgres` user and `initdb`/`pg_ctl`
//!   run as that user (`runuser`, else `setpriv`), since PostgreSQL refuses
//!   to run as root.
//!
//! It never touches the machine's own server on port 5432. `fsync` is off
//! (a test cluster need not survive power loss), but commits still reach
//! the kernel before they return, so [`PostgresServer::restart_immediate`]
//! (a crash of the server processes) loses nothing committed.
//!
//! Without `initdb` the start is a [`Skip`] (peer `postgres`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Skip;

/// The peer name of PostgreSQL in [`crate::REQUIRE_PEERS_ENV`].
pub const PEER: &str = "postgres";

/// A PostgreSQL database for one test; see the module docs.
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A database created in the server `DATABASE_URL` names.
    External {
        /// The URL of the server's maintenance database (for the drop).
        admin_url: String,
        name: String,
    },
    /// A private cluster.
    Cluster(Cluster),
}

#[derive(Debug)]
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Whether to run the binaries as the `postgres` user.
    as_postgres: bool,
    running: bool,
    /// The server's certificate and key, when it serves TLS.
    tls: Option<crate::tls::TestCerts>,
}

impl PostgresServer {
    /// Starts the database (see the module docs). Panics with the cause
    /// when a found PostgreSQL fails to start.
    pub async fn start() -> Result<PostgresServer, Skip> {
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            return Ok(Self::external(&url).await);
        }
        let Some(bin) = find_bin() else {
            return Err(Skip::report(
                PEER,
                "no `initdb` on PATH or under /usr/lib/postgresql/*/bin and DATABASE_URL is \
                 unset; install postgresql",
            ));
        };
        let cluster = tokio::task::spawn_blocking(move || Cluster::create(bin, false))
            .await
            .expect("the cluster start task panicked");
        Ok(PostgresServer {
            url: cluster.url(),
            kind: Kind::Cluster(cluster),
        })
    }

    /// A private cluster that serves TLS only to clients that ask
    /// (`ssl=on`, a certificate for `127.0.0.1` from [`crate::tls`]): the
    /// server and the CA file clients must trust. Always a private cluster,
    /// whatever `DATABASE_URL` says. The URL asks for nothing; add
    /// `sslmode=verify-full&sslrootcert=<ca>` to connect over TLS.
    pub async fn start_tls() -> Result<(PostgresServer, PathBuf), Skip> {
        let Some(bin) = find_bin() else {
            return Err(Skip::report(
                PEER,
                "no `initdb` on PATH or under /usr/lib/postgresql/*/bin; install postgresql",
            ));
        };
        let cluster = tokio::task::spawn_blocking(move || Cluster::create(bin, true))
            .await
            .expect("the cluster start task panicked");
        let ca = cluster
            .tls
            .as_ref()
            .map(|t| t.ca.clone())
            .expect("a TLS cluster has certificates");
        Ok((
            PostgresServer {
                url: cluster.url(),
                kind: Kind::Cluster(cluster),
            },
            ca,
        ))
    }

    async fn external(url: &str) -> PostgresServer {
        use sqlx::Connection as _;
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes).expect("random bytes for a database name");
        let name = format!("latchkey_t_{}", hex_lower(&bytes));
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
        // The name is ours (hex), so it is safe to splice into the SQL.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create database `{name}` in DATABASE_URL: {e}"));
        drop(conn.close().await);
        let mut parsed = url::Url::parse(url).expect("DATABASE_URL is a URL");
        parsed.set_path(&format!("/{name}"));
        PostgresServer {
            url: parsed.to_string(),
            kind: Kind::External {
                admin_url: url.to_owned(),
                name,
            },
        }
    }

    /// The database's URL (`postgres://postgres@127.0.0.1:<port>/postgres`
    /// for a private cluster).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether [`Self::restart_immediate`], [`Self::stop`] and
    /// [`Self::start_again`] work (a private cluster, not `DATABASE_URL`).
    pub fn can_restart(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// `pg_ctl restart -m immediate`: every backend is killed as in a
    /// crash, and the server comes back on the same port (crash recovery).
    pub async fn restart_immediate(&mut self) -> Result<(), String> {
        self.cluster_op(|c| {
            c.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "60"], true)?;
            c.running = true;
            Ok(())
        })
        .await
    }

    /// `pg_ctl stop -m fast`: the server is down until [`Self::start_again`].
    pub async fn stop(&mut self) -> Result<(), String> {
        self.cluster_op(|c| {
            c.pg_ctl(&["stop", "-m", "fast", "-w"], false)?;
            c.running = false;
            Ok(())
        })
        .await
    }

    /// Starts a stopped server again, on the same port.
    pub async fn start_again(&mut self) -> Result<(), String> {
        self.cluster_op(|c| {
            c.start()?;
            Ok(())
        })
        .await
    }

    async fn cluster_op(
        &mut self,
        op: impl FnOnce(&mut Cluster) -> Result<(), String>,
    ) -> Result<(), String> {
        match &mut self.kind {
            // Blocks this thread for the pg_ctl run (seconds at most): fine
            // for a test, and works on a current-thread runtime.
            Kind::Cluster(c) => op(c),
            Kind::External { .. } => {
                Err("a database in DATABASE_URL's server cannot be restarted by a test".into())
            }
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        match &mut self.kind {
            Kind::Cluster(c) => {
                if c.running {
                    let _ = c.pg_ctl(&["stop", "-m", "immediate", "-w"], false);
                }
            }
            Kind::External { admin_url, name } => {
                // Best effort, on a thread of its own: Drop cannot await and
                // may run inside (or outside) a runtime.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        use sqlx::Connection as _;
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                                .execute(&mut conn)
                                .await;
                            let _ = conn.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory holding `initdb` and `pg_ctl`.
fn find_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    // The newest version installed.
    versions.sort();
    versions.pop()
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl Cluster {
    fn create(bin: PathBuf, tls: bool) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("latchkey-pg-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        let as_postgres = is_root();
        if as_postgres {
            let (uid, gid) =
                postgres_user().expect("running as root, but there is no `postgres` user");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the cluster directory to `postgres`");
        }
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
            running: false,
            tls: None,
        };
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &cluster.data().display().to_string(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        if tls {
            let certs_dir = cluster.dir.path().join("certs");
            std::fs::create_dir_all(&certs_dir).expect("a directory for the certificates");
            let certs = crate::tls::TestCerts::create(&certs_dir)
                .unwrap_or_else(|e| panic!("test certificates: {e}"));
            // PostgreSQL refuses a key others may read, and must own it.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&certs.key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the server key");
            if as_postgres {
                let (uid, gid) = postgres_user().expect("a `postgres` user");
                for f in [&certs_dir, &certs.key, &certs.cert, &certs.ca] {
                    std::os::unix::fs::chown(f, Some(uid), Some(gid))
                        .expect("give the certificates to `postgres`");
                }
            }
            cluster.tls = Some(certs);
        }
        // A free port can be taken between the probe and the start: retry.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = crate::free_port();
            match cluster.start() {
                Ok(()) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn server_options(&self) -> String {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if let Some(t) = &self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                t.cert.display(),
                t.key.display()
            ));
        }
        options
    }

    fn start(&mut self) -> Result<(), String> {
        self.pg_ctl(&["start", "-w", "-t", "60"], true)?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl <args> -D <data>` (with the server options and log file when
    /// `with_options`).
    fn pg_ctl(&self, args: &[&str], with_options: bool) -> Result<(), String> {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let options = self.server_options();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-D", &data]);
        if with_options {
            all.extend(["-l", &log, "-o", &options]);
        }
        self.run("pg_ctl", &all).map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}\nserver log:\n{}", tail.join("\n"))
        })
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd =
                if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
                    let mut c = Command::new("runuser");
                    c.args(["-u", "postgres", "--"]);
                    c
                } else {
                    let mut c = Command::new("setpriv");
                    c.args([
                        "--reuid=postgres",
                        "--regid=postgres",
                        "--init-groups",
                        "--",
                    ]);
                    c
                };
            cmd.arg(&path);
            cmd
        } else {
            Command::new(&path)
        };
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", path.display()))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "`{} {}` failed ({}): {}{}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Waits until `url` accepts connections again (after a restart), up to
/// `limit`.
pub async fn wait_ready(url: &str, limit: Duration) -> Result<(), String> {
    use sqlx::Connection as _;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => {
                drop(conn.close().await);
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("PostgreSQL did not come back: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
