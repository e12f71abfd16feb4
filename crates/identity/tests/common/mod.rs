//! Helpers shared by the identity integration tests.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use latchkey_core::{Clock, FakeClock, SharedClock, SystemClock};
#[allow(unused_imports)] // each test binary uses a subset
pub use latchkey_testkit::forge::{b64, rsa_key, sign_rs256};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn now() -> u64 {
    SystemClock.unix()
}

/// A fake clock standing at the real current time, and the shared handle.
pub fn clock() -> (Arc<FakeClock>, SharedClock) {
    let c = Arc::new(FakeClock::at(now()));
    (c.clone(), c)
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A compact JWS with any header and claims and a junk signature.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(b"not-a-signature")
    )
}

/// A tiny HTTP/1.1 server on 127.0.0.1 serving fixed JSON bodies by path,
/// counting requests. Stops when dropped.
pub struct TinyServer {
    pub base: String,
    pub hits: Arc<AtomicUsize>,
    routes: Arc<std::sync::Mutex<BTreeMap<String, (String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TinyServer {
    pub async fn start() -> TinyServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let routes: Arc<std::sync::Mutex<BTreeMap<String, (String, String)>>> = Arc::default();
        let (h, r) = (hits.clone(), routes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (h, r) = (h.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(m) => n += m,
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let found = r.lock().unwrap().get(&path).cloned();
                    let resp = match found {
                        Some((extra, body)) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                    };
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        TinyServer {
            base,
            hits,
            routes,
            task,
        }
    }

    /// Serves `body` at `path`; `extra_headers` are full lines ending in CRLF.
    pub fn route(&self, path: &str, extra_headers: &str, body: String) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), (extra_headers.to_owned(), body));
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
