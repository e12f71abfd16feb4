//! DEV ONLY: cgit, the Git web UI, for `latchkey dev` when Debian's `cgit`
//! is installed. A loopback server that runs `/usr/lib/cgit/cgit.cgi` as a
//! plain CGI for each request (no web server: cgit reads its request from
//! the environment and writes a CGI head and the page to stdout) and
//! serves cgit's stylesheet and logo itself. The sandbox puts it behind
//! `[[apps]] preset = "cgit"`, so its pages are decided like clones.
//!
//! Not for production: one process per page, the whole page buffered,
//! no limits beyond a time-out. There, run cgit behind a web server and
//! point an `[[apps]]` entry at it (see the README).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Where Debian's `cgit` package installs the CGI program.
pub(crate) const CGIT_CGI: &str = "/usr/lib/cgit/cgit.cgi";
/// Where it installs the stylesheet and logo.
const CGIT_STATIC: &str = "/usr/share/cgit";
/// The app's path prefix on the gateway; cgit's links start with it.
pub(crate) const PREFIX: &str = "/apps/cgit";
/// A page that takes longer is cut off (a huge repository's log).
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Cgi {
    cgitrc: PathBuf,
    port: u16,
}

/// Whether cgit is installed.
pub(crate) fn installed() -> bool {
    Path::new(CGIT_CGI).is_file()
}

/// Writes `DATA/cgit/cgitrc` (every repository under `repos`, links under
/// [`PREFIX`], page cache and dumb-HTTP clone off) and starts the server
/// on `127.0.0.1:0`; returns its address.
pub(crate) async fn spawn(data: &Path, repos: &Path) -> Result<SocketAddr> {
    let dir = data.join("cgit");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let repos = std::fs::canonicalize(repos)
        .with_context(|| format!("cannot read `{}`", repos.display()))?;
    let cgitrc = dir.join("cgitrc");
    // `scan-path` last: cgit applies only the settings before it to the
    // repositories it finds. Clone goes through `/git/…`, not cgit.
    std::fs::write(
        &cgitrc,
        format!(
            "# Written by `latchkey dev`; see cgitrc(5).\n\
             cache-size=0\n\
             virtual-root={PREFIX}/\n\
             css={PREFIX}/cgit-css/cgit.css\n\
             logo={PREFIX}/cgit-css/cgit.png\n\
             root-title=Latchkey dev repositories\n\
             enable-http-clone=0\n\
             enable-index-owner=0\n\
             remove-suffix=1\n\
             scan-path={}\n",
            repos.display()
        ),
    )
    .with_context(|| format!("cannot write `{}`", cgitrc.display()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the cgit runner's port")?;
    let addr = listener.local_addr()?;
    let state = Cgi {
        cgitrc,
        port: addr.port(),
    };
    let app = Router::new().fallback(page).with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the cgit runner stopped");
        }
    });
    Ok(addr)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// `%xx` decoded, as a web server hands `PATH_INFO` to a CGI. The gateway
/// has already refused every spelling that decodes two ways.
fn decode(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.contains('\0'))
}

async fn page(State(cgi): State<Cgi>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let Some(path) = decode(req.uri().path()) else {
        return plain(StatusCode::BAD_REQUEST, "the path does not decode");
    };
    // Only the three files cgit's pages link to; never a path from the caller.
    if let Some(name) = path.strip_prefix("/cgit-css/") {
        let (file, mime) = match name {
            "cgit.css" => ("cgit.css", "text/css"),
            "cgit.png" => ("cgit.png", "image/png"),
            "favicon.ico" => ("favicon.ico", "image/x-icon"),
            _ => return plain(StatusCode::NOT_FOUND, "no such file"),
        };
        return match tokio::fs::read(Path::new(CGIT_STATIC).join(file)).await {
            Ok(bytes) => ([(axum::http::header::CONTENT_TYPE, mime)], bytes).into_response(),
            Err(_) => plain(StatusCode::NOT_FOUND, "no such file"),
        };
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    // cgit embeds libgit, which reads `GIT_*` and `HOME`: nothing of the
    // sandbox's own environment reaches it.
    let child = tokio::process::Command::new(CGIT_CGI)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CGIT_CONFIG", &cgi.cgitrc)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "latchkey-dev")
        .env("SERVER_NAME", "127.0.0.1")
        .env("SERVER_PORT", cgi.port.to_string())
        .env("REQUEST_METHOD", &method)
        .env("SCRIPT_NAME", "")
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot run cgit");
            return plain(StatusCode::BAD_GATEWAY, "cgit could not be started");
        }
    };
    let out = match tokio::time::timeout(PAGE_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cgit failed");
            return plain(StatusCode::BAD_GATEWAY, "cgit failed");
        }
        Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "cgit took too long"),
    };
    if !out.stderr.is_empty() {
        tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr), "cgit complained");
    }
    cgi_response(&out.stdout)
}

/// A CGI program's output as a response: the head up to the first empty
/// line (`Status:` gives the code, 200 without), then the body.
fn cgi_response(out: &[u8]) -> Response {
    let split = out
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, 2))
        .into_iter()
        .chain(
            out.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4)),
        )
        .min_by_key(|(i, _)| *i);
    let Some((end, sep)) = split else {
        return plain(StatusCode::BAD_GATEWAY, "cgit sent no CGI head");
    };
    let head = String::from_utf8_lossy(&out[..end]);
    let mut resp = Response::new(Body::from(out[end + sep..].to_vec()));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            if let Some(s) = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
                *resp.status_mut() = s;
            }
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgi_head_becomes_the_response() {
        let r = cgi_response(b"Status: 404 Not found\nContent-Type: text/html\n\n<p>x</p>");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "text/html");
        let r = cgi_response(b"Content-Type: text/plain\r\n\r\nbody");
        assert_eq!(r.status(), 200);
        assert_eq!(cgi_response(b"no head").status(), 502);
        assert_eq!(decode("/acme/%61pp/"), Some("/acme/app/".into()));
        assert_eq!(decode("/a%0"), None);
        assert_eq!(decode("/a%00"), None);
    }
}
