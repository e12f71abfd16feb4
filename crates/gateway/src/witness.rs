//! The audit witness: every checkpoint, as it is signed, goes to an HTTP(S)
//! endpoint and/or a file off the machine, so that whoever holds the disk
//! (even with the master key) cannot rewrite or cut what was witnessed
//! without `latchkey audit verify --witness` noticing.
//!
//! Appends never wait for a witness: each witness follows the log's latest
//! checkpoint (a `watch`), delivers it, and on failure logs loudly and
//! retries with backoff. If checkpoints come faster than a slow witness
//! takes them, it gets the newest; each checkpoint names the one before it,
//! so the newest vouches for all earlier ones.

use std::path::PathBuf;
use std::time::Duration;

use latchkey_audit::Checkpoint;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::WitnessConfig;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Where one witness delivers.
#[derive(Debug, Clone)]
enum Target {
    Http {
        client: reqwest::Client,
        url: String,
    },
    File(PathBuf),
    /// The state store several nodes share: each node's checkpoints sit
    /// beside the others', where `latchkey audit verify` and every node's
    /// start read them, so a node's log cut short is detected.
    Store(latchkey_store::SharedStore),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Self::Http { url, .. } => url.clone(),
            Self::File(path) => path.display().to_string(),
            Self::Store(store) => format!("the state store (node `{}`)", store.node()),
        }
    }

    async fn deliver(&self, cp: &Checkpoint) -> Result<(), String> {
        match self {
            Self::Http { client, url } => {
                let resp = client
                    .post(url)
                    .json(cp)
                    .send()
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("answered {}", resp.status()))
                }
            }
            Self::Store(store) => {
                let json = serde_json::to_string(cp).map_err(|e| e.to_string())?;
                store
                    .witness_audit_checkpoint(&latchkey_store::WitnessedCheckpoint {
                        seq: cp.n,
                        json,
                    })
                    .await
                    .map_err(|e| e.to_string())
            }
            Self::File(path) => {
                let path = path.clone();
                let mut line = serde_json::to_vec(cp).map_err(|e| e.to_string())?;
                line.push(b'\n');
                tokio::task::spawn_blocking(move || append_synced(&path, &line))
                    .await
                    .map_err(|e| format!("writing panicked: {e}"))?
                    .map_err(|e| format!("cannot append: {e}"))
            }
        }
    }
}

fn append_synced(path: &std::path::Path, line: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    file.write_all(line)?;
    file.sync_data()
}

/// Starts one task per configured witness, and one for a shared store.
/// Each first delivers the current checkpoint, so the witness learns where
/// the log stands at start.
pub(crate) fn spawn(
    config: Option<&WitnessConfig>,
    shared: Option<latchkey_store::SharedStore>,
    checkpoints: &watch::Receiver<Checkpoint>,
) -> Result<Vec<JoinHandle<()>>, reqwest::Error> {
    let mut targets = Vec::new();
    if let Some(store) = shared {
        targets.push(Target::Store(store));
    }
    let Some(config) = config else {
        return Ok(targets
            .into_iter()
            .map(|target| tokio::spawn(run(target, checkpoints.clone())))
            .collect());
    };
    if let Some(url) = &config.url {
        let client = reqwest::Client::builder().timeout(config.timeout).build()?;
        targets.push(Target::Http {
            client,
            url: url.clone(),
        });
    }
    if let Some(file) = &config.file {
        targets.push(Target::File(file.clone()));
    }
    Ok(targets
        .into_iter()
        .map(|target| tokio::spawn(run(target, checkpoints.clone())))
        .collect())
}

async fn run(target: Target, mut rx: watch::Receiver<Checkpoint>) {
    loop {
        let cp = rx.borrow_and_update().clone();
        let superseded = deliver_with_retry(&target, &cp, &mut rx).await;
        if !superseded && rx.changed().await.is_err() {
            // The log is closed and its last checkpoint delivered.
            return;
        }
    }
}

/// Delivers `cp` until it succeeds; true if a newer checkpoint came first
/// (it is delivered instead: it vouches for this one). Gives up when the log
/// closes with nothing newer to send.
async fn deliver_with_retry(
    target: &Target,
    cp: &Checkpoint,
    rx: &mut watch::Receiver<Checkpoint>,
) -> bool {
    let mut wait = FIRST_RETRY;
    loop {
        match target.deliver(cp).await {
            Ok(()) => return false,
            Err(e) => {
                tracing::error!(
                    witness = %target.name(),
                    checkpoint = cp.n,
                    seq = cp.seq,
                    error = %e,
                    retry_in = ?wait,
                    "AUDIT WITNESS UNREACHABLE: checkpoints are not leaving the machine; \
                     until it is back, a rewrite of the log since the last witnessed checkpoint would go unnoticed"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = rx.changed() => match changed {
                Ok(()) => return true,
                // Closed: keep trying the last checkpoint a while longer.
                Err(_) => tokio::time::sleep(wait).await,
            },
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}
