//! Whether a peer is there: the one probe that `serve --check --online`
//! and `/readyz` both run, so the two cannot disagree about what
//! "reachable" means. Each caller picks its own time limit and says in its
//! own words what the operator should check.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a peer is probed.
#[derive(Debug, Clone)]
pub(crate) enum ProbeKind {
    /// Any HTTP answer from this URL: the point is that the peer is there.
    Http(String),
    /// A TCP connect to `host:port` (the Firestore emulator speaks gRPC only).
    Tcp(String),
    /// A directory exists (a Git upstream's `local_root`).
    Dir(PathBuf),
}

impl ProbeKind {
    /// What was found (`Ok`), or what failed (`Err`), within `limit`.
    pub(crate) async fn run(
        &self,
        http: &reqwest::Client,
        limit: Duration,
    ) -> Result<String, String> {
        match self {
            ProbeKind::Http(url) => match http.get(url).timeout(limit).send().await {
                Ok(resp) => Ok(format!("reachable (HTTP {})", resp.status().as_u16())),
                Err(e) if e.is_timeout() => Err(format!("`{url}` did not answer within {limit:?}")),
                Err(e) if e.is_connect() => Err(format!("cannot connect to `{url}`")),
                Err(e) => Err(format!("`{url}`: {e}")),
            },
            ProbeKind::Tcp(hostport) => {
                match tokio::time::timeout(limit, tokio::net::TcpStream::connect(hostport.as_str()))
                    .await
                {
                    Ok(Ok(_)) => Ok("reachable".into()),
                    Ok(Err(e)) => Err(format!("cannot connect to `{hostport}`: {e}")),
                    Err(_) => Err(format!("`{hostport}` did not answer within {limit:?}")),
                }
            }
            ProbeKind::Dir(dir) => dir_exists(dir),
        }
    }
}

/// The [`ProbeKind::Dir`] probe, which needs no client (`serve --check`
/// runs it offline too).
pub(crate) fn dir_exists(dir: &Path) -> Result<String, String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(format!("repositories in {}", dir.display())),
        Ok(_) => Err(format!("`{}` is not a directory", dir.display())),
        Err(e) => Err(format!("`{}`: {e}", dir.display())),
    }
}
