//! `latchkey-bench firestore`: gRPC Firestore calls straight to the
//! emulator against the same calls through Latchkey, in one run.
//!
//! One Firestore emulator (Google's, through the testkit harness) and one
//! gateway in this process, on loopback, configured for it. For each
//! operation (point reads: `GetDocument` of seeded documents; one-document
//! writes: `Commit` with one update write) and each concurrency, the targets
//! take turns in interleaved rounds (the order rotates every round), so a
//! slow spell of the machine hits every target alike. The load generator
//! runs on a thread and runtime of its own and drives N in-flight calls over
//! one or a few HTTP/2 connections (cleartext, prior knowledge), the way a
//! gRPC channel does. Any call that does not end in `grpc-status: 0` fails
//! the bench.
//!
//! Targets: `direct` (the emulator, credential `Bearer owner`, as Latchkey
//! itself sends), `latchkey` (the gateway, audit log on this directory's
//! disk, as deployed) and, for the breakdown only, `latchkey_audit_tmpfs`
//! (a second gateway whose data directory, audit log included, is on
//! `/dev/shm`, where fsync costs nothing; not a supported deployment).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full};
use latchkey_documents::proto;
use latchkey_testkit::firestore::FirestoreEmulator;
use latchkey_tokens::MasterKey;
use prost::Message as _;
use serde_json::{Value as Json, json};
use tokio::time::Instant;

use super::{clock, dev_id_token, one_request, percentile, write_starter_policies};

/// The project and database every call names.
const PROJECT: &str = "latchkey-bench";
const DATABASE: &str = "(default)";
/// Documents seeded for reads, and documents the writes cycle through
/// (a power of two, so every in-flight slot gets its own documents).
const DOCS: usize = 1024;
/// The target the issue sets: Latchkey adds at most 10 % to p99, and at
/// most 1 ms.
const TARGET_P99_RATIO: f64 = 1.10;
const TARGET_P99_ADDED_US: f64 = 1000.0;

/// Knobs, from the environment (see bench/README.md).
struct Settings {
    round: Duration,
    rounds: usize,
    warmup: Duration,
    concurrency: Vec<usize>,
    connections: usize,
    /// Also run the breakdown targets (`bare_h2_relay`, `latchkey_audit_tmpfs`).
    breakdown: bool,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env(secs: u64) -> Result<Settings> {
        let concurrency = match std::env::var("BENCH_FIRESTORE_CONCURRENCY") {
            Ok(list) => list
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .context("BENCH_FIRESTORE_CONCURRENCY is a comma-separated list such as `8,1`")?,
            Err(_) => vec![8, 1],
        };
        ensure!(
            !concurrency.is_empty() && concurrency.iter().all(|&c| c > 0),
            "BENCH_FIRESTORE_CONCURRENCY needs at least one number above zero"
        );
        Ok(Settings {
            round: Duration::from_secs(secs.max(1)),
            rounds: env_num("BENCH_FIRESTORE_ROUNDS", 5usize).max(1),
            warmup: Duration::from_secs(env_num("BENCH_FIRESTORE_WARMUP", 5u64)),
            concurrency,
            connections: env_num("BENCH_FIRESTORE_CONNECTIONS", 1usize).max(1),
            breakdown: env_num("BENCH_FIRESTORE_BREAKDOWN", 1u8) != 0,
        })
    }
}

/// Where calls go and the credential they carry.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    authorization: HeaderValue,
    /// The audit log file, for targets that are a gateway.
    audit_log: Option<PathBuf>,
}

/// One measured operation: its gRPC path and its request messages, framed.
struct Op {
    name: &'static str,
    method: &'static str,
    bodies: Vec<Bytes>,
}

fn database() -> String {
    format!("projects/{PROJECT}/databases/{DATABASE}")
}

fn doc_name(collection: &str, i: usize) -> String {
    format!("{}/documents/{collection}/d{i:04}", database())
}

fn string_value(s: impl Into<String>) -> proto::Value {
    proto::Value {
        value_type: Some(proto::value::ValueType::StringValue(s.into())),
    }
}

fn int_value(n: i64) -> proto::Value {
    proto::Value {
        value_type: Some(proto::value::ValueType::IntegerValue(n)),
    }
}

/// A small document (~200 bytes of fields), like a user profile.
fn document(name: String, i: usize) -> proto::Document {
    let mut fields = std::collections::HashMap::new();
    fields.insert("n".to_owned(), int_value(i as i64));
    fields.insert("owner".to_owned(), string_value("alice"));
    fields.insert("status".to_owned(), string_value("active"));
    fields.insert(
        "note".to_owned(),
        string_value(format!(
            "{i:04} {}",
            "lorem ipsum dolor sit amet ".repeat(5)
        )),
    );
    proto::Document {
        name,
        fields,
        ..Default::default()
    }
}

/// A commit of one update write (a set: no precondition, no mask).
fn commit(doc: proto::Document) -> proto::CommitRequest {
    proto::CommitRequest {
        database: database(),
        writes: vec![proto::Write {
            operation: Some(proto::write::Operation::Update(doc)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn ops() -> Vec<Op> {
    let reads = (0..DOCS)
        .map(|i| {
            let req = proto::GetDocumentRequest {
                name: doc_name("bench", i),
                ..Default::default()
            };
            latchkey_documents::encode_frame(&req.encode_to_vec())
        })
        .collect();
    let writes = (0..DOCS)
        .map(|i| {
            let req = commit(document(doc_name("bench-writes", i), i));
            latchkey_documents::encode_frame(&req.encode_to_vec())
        })
        .collect();
    vec![
        Op {
            name: "get_document",
            method: "GetDocument",
            bodies: reads,
        },
        Op {
            name: "commit_one_write",
            method: "Commit",
            bodies: writes,
        },
    ]
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Opens one HTTP/2 connection (prior knowledge) and drives it on the
/// current runtime.
async fn connect(addr: SocketAddr) -> Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The result of one call that reached a gRPC status.
struct Reply {
    status: i32,
    message: String,
    body: Bytes,
}

/// One unary gRPC call; the status comes from the trailers (or from the
/// head of a trailers-only answer).
async fn call(sender: &mut Sender, target: &Target, method: &str, body: Bytes) -> Result<Reply> {
    let req = hyper::Request::post(format!(
        "http://{}/google.firestore.v1.Firestore/{method}",
        target.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", target.authorization.clone())
    .header("google-cloud-resource-prefix", database())
    .body(Full::new(body))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let http_status = resp.status();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status_in = |h: &HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    let message_in = |h: &HeaderMap| {
        h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(latchkey_documents::status::grpc_message_decode)
    };
    let (status, message) = match status_in(&trailers) {
        Some(s) => (s, message_in(&trailers)),
        None => match status_in(&parts.headers) {
            Some(s) => (s, message_in(&parts.headers)),
            None => bail!(
                "HTTP {http_status} without a grpc-status from {}",
                target.name
            ),
        },
    };
    Ok(Reply {
        status,
        message: message.unwrap_or_default(),
        body: collected.to_bytes(),
    })
}

/// A call that must succeed; returns the response message.
async fn call_ok(target: &Target, method: &str, body: Bytes) -> Result<Bytes> {
    let mut sender = connect(target.addr).await?;
    let reply = call(&mut sender, target, method, body).await?;
    ensure!(
        reply.status == 0,
        "{method} via {} ended with grpc-status {}: {}",
        target.name,
        reply.status,
        reply.message
    );
    let mut decoder = latchkey_documents::FrameDecoder::new(16 * 1024 * 1024);
    decoder.push(&reply.body);
    decoder
        .next_message()?
        .with_context(|| format!("{method} via {} returned no message", target.name))
}

/// What one round of one target measured.
struct Round {
    calls: u64,
    elapsed: Duration,
    /// Latency of every call, nanoseconds.
    samples: Vec<u64>,
    /// CPU time of this whole process (load generator, gateways, relay)
    /// during the round, clock ticks.
    cpu_ticks: u64,
}

/// User + system CPU time of this process so far, in clock ticks
/// (`/proc/self/stat`; 0 where there is no procfs).
fn process_cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name, which ends with the last `)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// Runs one round on a thread and runtime of its own, so the load
/// generator's scheduling does not depend on what the gateway's runtime is
/// doing.
async fn round(
    target: Target,
    op: Arc<Op>,
    concurrency: usize,
    connections: usize,
    length: Duration,
) -> Result<Round> {
    let cpu0 = process_cpu_ticks();
    let mut r = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(drive(target, op, concurrency, connections, length))
    })
    .await??;
    r.cpu_ticks = process_cpu_ticks().saturating_sub(cpu0);
    Ok(r)
}

async fn drive(
    target: Target,
    op: Arc<Op>,
    concurrency: usize,
    connections: usize,
    length: Duration,
) -> Result<Round> {
    let mut senders = Vec::new();
    for _ in 0..connections.min(concurrency) {
        senders.push(connect(target.addr).await?);
    }
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..concurrency {
        let mut sender = senders[slot % senders.len()].clone();
        let (target, op) = (target.clone(), op.clone());
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(16 * 1024);
            let mut failure: Option<String> = None;
            let mut errors = 0u64;
            let mut i = 0usize;
            while Instant::now() < deadline {
                // Slot s takes documents s, s + N, s + 2N, ...: no two
                // in-flight writes touch one document.
                let body = op.bodies[(slot + i * concurrency) % op.bodies.len()].clone();
                i += 1;
                let t0 = Instant::now();
                match call(&mut sender, &target, op.method, body).await {
                    Ok(r) if r.status == 0 => samples.push(t0.elapsed().as_nanos() as u64),
                    Ok(r) => {
                        errors += 1;
                        failure.get_or_insert(format!("grpc-status {}: {}", r.status, r.message));
                    }
                    Err(e) => {
                        errors += 1;
                        failure.get_or_insert(format!("{e:#}"));
                        break;
                    }
                }
            }
            (samples, errors, failure)
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        let (s, e, f) = done?;
        samples.extend(s);
        errors += e;
        failure = failure.or(f);
    }
    let elapsed = start.elapsed();
    if errors > 0 {
        bail!(
            "{} {} at concurrency {concurrency}: {errors} of {} calls failed; first: {}",
            op.method,
            target.name,
            errors + samples.len() as u64,
            failure.unwrap_or_default()
        );
    }
    Ok(Round {
        calls: samples.len() as u64,
        elapsed,
        samples,
        cpu_ticks: 0,
    })
}

/// Every round of one target in one cell (operation × concurrency).
#[derive(Default)]
struct Series {
    calls: u64,
    elapsed: Duration,
    samples: Vec<u64>,
    round_ops_per_s: Vec<f64>,
    round_p99_us: Vec<f64>,
    audit_bytes: u64,
    cpu_ticks: u64,
}

impl Series {
    fn add(&mut self, mut r: Round, audit_bytes: u64) {
        r.samples.sort_unstable();
        self.round_ops_per_s
            .push(round1(r.calls as f64 / r.elapsed.as_secs_f64()));
        self.round_p99_us.push(us(percentile(&r.samples, 0.99)));
        self.calls += r.calls;
        self.elapsed += r.elapsed;
        self.samples.extend(r.samples);
        self.audit_bytes += audit_bytes;
        self.cpu_ticks += r.cpu_ticks;
    }

    /// This process's CPU time per call, µs.
    fn cpu_us_per_call(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        round1(self.cpu_ticks as f64 / TICKS_PER_S * 1e6 / self.calls as f64)
    }

    fn finish(&mut self) {
        self.samples.sort_unstable();
    }

    fn ops_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p(&self, q: f64) -> f64 {
        us(percentile(&self.samples, q))
    }

    fn json(&self, gateway: bool) -> Json {
        let mut v = json!({
            "calls": self.calls,
            "ops_per_s": self.ops_per_s().round(),
            "p50_us": self.p(0.50),
            "p90_us": self.p(0.90),
            "p99_us": self.p(0.99),
            "p999_us": self.p(0.999),
            "round_ops_per_s": self.round_ops_per_s,
            "round_p99_us": self.round_p99_us,
            "process_cpu_us_per_call": self.cpu_us_per_call(),
        });
        if gateway && self.calls > 0 {
            v["audit_bytes_per_call"] =
                json!((self.audit_bytes as f64 / self.calls as f64).round());
        }
        v
    }
}

fn us(ns: u64) -> f64 {
    round1(ns as f64 / 1000.0)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn file_len(path: Option<&PathBuf>) -> u64 {
    path.and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// A gateway serving on a loopback port, configured for the emulator.
struct BenchGateway {
    gw: Arc<latchkey_gateway::Gateway>,
    addr: SocketAddr,
    data: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl BenchGateway {
    async fn start(data: tempfile::TempDir, emulator: &str) -> Result<BenchGateway> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let policy_dir = write_starter_policies(data.path())?;
        std::fs::write(
            policy_dir.join("entities.json"),
            latchkey_policy::STARTER_ENTITIES,
        )?;
        let master = MasterKey::generate()?.to_base64();
        let toml = format!(
            "[server]\nlisten = \"{addr}\"\ndata_dir = {data:?}\n\
             [keys]\nmaster_key = {{ value = \"{master}\" }}\n\
             [dev_issuer]\nenabled = true\n\
             [tokens]\ndefault_lifetime = \"1h\"\n\
             [firestore]\nemulator = \"{emulator}\"\ndatabases = {{ \"{DATABASE}\" = \"dev\" }}\n",
            data = data.path().display().to_string(),
        );
        let config = latchkey_gateway::config::Config::parse(&toml)
            .with_context(|| format!("bench gateway config:\n{toml}"))?;
        let gw = latchkey_gateway::Gateway::start(
            config,
            latchkey_gateway::StartOptions { dev: true },
            clock(),
        )
        .await?;
        let app = latchkey_gateway::router(gw.clone());
        let server = tokio::spawn(async move {
            if let Err(e) =
                latchkey_gateway::serve(listener, app, None, std::future::pending()).await
            {
                eprintln!("bench gateway stopped serving: {e}");
            }
        });
        Ok(BenchGateway {
            gw,
            addr,
            data,
            server,
        })
    }

    /// A Latchkey token for audience `documents`, held by `alice` of
    /// `developers`, got the way a caller gets one: an ID token from the
    /// dev issuer exchanged at `/oauth2/token`.
    async fn token(&self) -> Result<String> {
        let id_token = dev_id_token(&self.gw)?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={id_token}\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&audience=documents"
        );
        let (status, body) = one_request(self.addr, "/oauth2/token", Some(form)).await?;
        ensure!(
            status == 200,
            "token exchange failed with status {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let v: Json = serde_json::from_slice(&body)?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token in the exchange response")
    }

    async fn target(&self, name: &'static str) -> Result<Target> {
        let token = self.token().await?;
        Ok(Target {
            name,
            addr: self.addr,
            authorization: HeaderValue::from_str(&format!("Bearer {token}"))?,
            audit_log: Some(self.data.path().join("audit").join("audit.log")),
        })
    }

    async fn stop(self) {
        self.gw.shutdown().await;
        self.server.abort();
        drop(self.data);
    }
}

/// Latency of one 512-byte append + fdatasync in `dir` (what one group
/// commit of the audit log waits for at least), p50 and p99 in µs.
fn fdatasync_latency(dir: &Path) -> Result<(f64, f64)> {
    use std::io::Write as _;
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let line = [b'x'; 512];
    let mut samples = Vec::with_capacity(300);
    for _ in 0..300 {
        let t0 = Instant::now();
        f.write_all(&line)?;
        f.sync_data()?;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    samples.sort_unstable();
    Ok((
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.99)),
    ))
}

/// Writes the read set (and the write set, so writes are updates of
/// existing documents) straight to the emulator.
async fn seed(direct: &Target) -> Result<()> {
    let mut sender = connect(direct.addr).await?;
    for collection in ["bench", "bench-writes"] {
        for chunk in (0..DOCS).collect::<Vec<_>>().chunks(256) {
            let req = proto::CommitRequest {
                database: database(),
                writes: chunk
                    .iter()
                    .map(|&i| proto::Write {
                        operation: Some(proto::write::Operation::Update(document(
                            doc_name(collection, i),
                            i,
                        ))),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let body = latchkey_documents::encode_frame(&req.encode_to_vec());
            let reply = call(&mut sender, direct, "Commit", body).await?;
            ensure!(
                reply.status == 0,
                "seeding {collection} failed with grpc-status {}: {}",
                reply.status,
                reply.message
            );
        }
    }
    Ok(())
}

/// Before timing anything: every target returns the same document, a
/// write through a gateway lands, each gateway call adds audit records, and
/// a call without a token is refused.
async fn check(direct: &Target, gateways: &[Target], ops: &[Arc<Op>]) -> Result<()> {
    let get = ops[0].bodies[7].clone();
    let want = proto::Document::decode(call_ok(direct, "GetDocument", get.clone()).await?)?;
    ensure!(
        want.name == doc_name("bench", 7),
        "the emulator returned `{}`",
        want.name
    );
    for g in gateways {
        let log = g
            .audit_log
            .as_ref()
            .context("gateway target without a log")?;
        let before = audit_records(log)?;
        let got = proto::Document::decode(call_ok(g, "GetDocument", get.clone()).await?)?;
        ensure!(
            got == want,
            "{} returned a different document than the emulator",
            g.name
        );
        // The decision is durable before the answer; a read's outcome is
        // appended right after, without holding the answer for its sync.
        let mut after = audit_records(log)?;
        for _ in 0..100 {
            if after >= before + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            after = audit_records(log)?;
        }
        ensure!(
            after >= before + 2,
            "{}: a read added {} audit records; expected a decision and an outcome",
            g.name,
            after - before
        );
        let resp =
            proto::CommitResponse::decode(call_ok(g, "Commit", ops[1].bodies[3].clone()).await?)?;
        ensure!(
            resp.write_results.len() == 1,
            "{}: a commit of one write returned {} results",
            g.name,
            resp.write_results.len()
        );
        let anonymous = Target {
            authorization: HeaderValue::from_static("Bearer not-a-token"),
            ..g.clone()
        };
        let mut sender = connect(g.addr).await?;
        let reply = call(&mut sender, &anonymous, "GetDocument", get.clone()).await?;
        ensure!(
            reply.status == 16,
            "{} let a call with a bogus token through (grpc-status {})",
            g.name,
            reply.status
        );
    }
    Ok(())
}

fn audit_records(log: &Path) -> Result<usize> {
    let dir = log.parent().context("audit log path")?;
    let mut n = 0;
    for r in latchkey_audit::read_records(dir, 0)? {
        r?;
        n += 1;
    }
    Ok(n)
}

/// A bare HTTP/2 relay to the emulator: no authentication, policy or
/// audit, one pooled HTTP/2 connection upstream (as Latchkey has). It
/// prices the extra hop alone on this machine; not Latchkey.
struct BareRelay {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl BareRelay {
    async fn start(upstream: SocketAddr) -> Result<BareRelay> {
        use hyper_util::client::legacy::Client;
        use hyper_util::client::legacy::connect::HttpConnector;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, hyper::body::Incoming> =
            Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build(connector);
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let client = client.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |mut req: hyper::Request<hyper::body::Incoming>| {
                            let client = client.clone();
                            async move {
                                let path = req
                                    .uri()
                                    .path_and_query()
                                    .map_or("/", |p| p.as_str())
                                    .to_owned();
                                *req.uri_mut() = format!("http://{upstream}{path}").parse()?;
                                client.request(req).await.map_err(anyhow::Error::from)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
                });
            }
        });
        Ok(BareRelay { addr, server })
    }
}

/// The measurements of one cell, in target order.
struct Cell {
    op: &'static str,
    method: &'static str,
    concurrency: usize,
    series: Vec<(Target, Series)>,
}

impl Cell {
    fn get(&self, name: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|(t, _)| t.name == name)
            .map(|(_, s)| s)
    }

    /// `name` against `direct`.
    fn comparison(&self, name: &str) -> Option<Json> {
        let (d, l) = (self.get("direct")?, self.get(name)?);
        let p99_ratio = l.p(0.99) / d.p(0.99).max(1e-9);
        let added = l.p(0.99) - d.p(0.99);
        let mut v = json!({
            "p99_ratio": round2(p99_ratio),
            "p99_added_us": round1(added),
            "p50_added_us": round1(l.p(0.5) - d.p(0.5)),
            "throughput_ratio": round2(l.ops_per_s() / d.ops_per_s().max(1e-9)),
            "added_cpu_us_per_call": round1(l.cpu_us_per_call() - d.cpu_us_per_call()),
        });
        if name == "latchkey" {
            v["meets_target"] =
                json!(p99_ratio <= TARGET_P99_RATIO && added <= TARGET_P99_ADDED_US);
        }
        Some(v)
    }
}

/// Runs the Firestore benchmark. `required`: the emulator's absence is an
/// error (when asked for by name) rather than a skip (under `all`).
pub(crate) async fn run(secs: u64, json_out: bool, required: bool) -> Result<()> {
    let settings = Settings::from_env(secs)?;
    let emulator = match FirestoreEmulator::start().await {
        Ok(e) => e,
        Err(e) if e.is_not_installed() && !required => {
            eprintln!("firestore: SKIPPED, the emulator is not installed: {e}");
            if json_out {
                println!(
                    "{}",
                    json!({"bench": "firestore_grpc", "skipped": e.to_string()})
                );
            }
            return Ok(());
        }
        Err(e) => return Err(e).context("starting the Firestore emulator"),
    };
    let result = measure(&settings, &emulator, json_out).await;
    emulator.stop().await;
    result
}

/// What a run started besides the emulator, stopped at the end.
struct Started {
    gateways: Vec<BenchGateway>,
    relay: Option<BareRelay>,
}

impl Started {
    async fn stop(self) {
        for g in self.gateways {
            g.stop().await;
        }
        if let Some(r) = self.relay {
            r.server.abort();
        }
    }
}

async fn measure(settings: &Settings, emulator: &FirestoreEmulator, json_out: bool) -> Result<()> {
    let disk_dir = tempfile::Builder::new()
        .prefix("latchkey-bench-fs")
        .tempdir_in(".")?;
    let fsync = fdatasync_latency(disk_dir.path())?;
    let upstream = SocketAddr::from(([127, 0, 0, 1], emulator.port()));
    let direct = Target {
        name: "direct",
        addr: upstream,
        authorization: HeaderValue::from_static("Bearer owner"),
        audit_log: None,
    };
    let mut started = Started {
        gateways: Vec::new(),
        relay: None,
    };
    let mut targets = vec![direct.clone()];
    let setup: Result<()> = async {
        let disk = BenchGateway::start(disk_dir, &emulator.host_port()).await?;
        targets.push(disk.target("latchkey").await?);
        started.gateways.push(disk);
        if settings.breakdown {
            let relay = BareRelay::start(upstream).await?;
            targets.push(Target {
                name: "bare_h2_relay",
                addr: relay.addr,
                ..direct.clone()
            });
            started.relay = Some(relay);
            let dir = tempfile::Builder::new()
                .prefix("latchkey-bench-fs")
                .tempdir_in("/dev/shm")
                .context(
                    "a data directory on /dev/shm (tmpfs); BENCH_FIRESTORE_BREAKDOWN=0 skips it",
                )?;
            let tmpfs = BenchGateway::start(dir, &emulator.host_port()).await?;
            targets.push(tmpfs.target("latchkey_audit_tmpfs").await?);
            started.gateways.push(tmpfs);
        }
        Ok(())
    }
    .await;
    let result = match setup {
        Ok(()) => measure_targets(settings, &targets, fsync, json_out).await,
        Err(e) => Err(e),
    };
    started.stop().await;
    result
}

async fn measure_targets(
    settings: &Settings,
    targets: &[Target],
    fsync: (f64, f64),
    json_out: bool,
) -> Result<()> {
    let direct = &targets[0];
    let gateways: Vec<Target> = targets
        .iter()
        .filter(|t| t.audit_log.is_some())
        .cloned()
        .collect();
    let ops: Vec<Arc<Op>> = ops().into_iter().map(Arc::new).collect();
    seed(direct).await?;
    check(direct, &gateways, &ops).await?;

    // Warm-up: the emulator's JIT and every connection pool.
    let top = settings.concurrency.iter().copied().max().unwrap_or(1);
    if !settings.warmup.is_zero() {
        for op in &ops {
            for t in targets {
                round(
                    t.clone(),
                    op.clone(),
                    top,
                    settings.connections,
                    settings.warmup,
                )
                .await?;
            }
        }
    }

    let mut cells = Vec::new();
    for op in &ops {
        for &concurrency in &settings.concurrency {
            let mut series: Vec<(Target, Series)> = targets
                .iter()
                .map(|t| (t.clone(), Series::default()))
                .collect();
            // A short warm-up of each target at this concurrency.
            for (t, _) in &series {
                round(
                    t.clone(),
                    op.clone(),
                    concurrency,
                    settings.connections,
                    Duration::from_secs(1),
                )
                .await?;
            }
            for r in 0..settings.rounds {
                // The order rotates each round.
                for k in 0..series.len() {
                    let idx = (k + r) % series.len();
                    let target = series[idx].0.clone();
                    let log_before = file_len(target.audit_log.as_ref());
                    let measured = round(
                        target.clone(),
                        op.clone(),
                        concurrency,
                        settings.connections,
                        settings.round,
                    )
                    .await?;
                    let grown = file_len(target.audit_log.as_ref()).saturating_sub(log_before);
                    series[idx].1.add(measured, grown);
                }
            }
            for (_, s) in &mut series {
                s.finish();
            }
            let cell = Cell {
                op: op.name,
                method: op.method,
                concurrency,
                series,
            };
            if json_out {
                println!("{}", cell_json(&cell, settings, fsync));
            }
            cells.push(cell);
        }
    }
    print_table(&cells, settings, fsync, json_out);
    Ok(())
}

fn cell_json(cell: &Cell, settings: &Settings, fsync: (f64, f64)) -> Json {
    let mut v = json!({
        "bench": "firestore_grpc",
        "op": cell.op,
        "method": cell.method,
        "concurrency": cell.concurrency,
        "connections": settings.connections.min(cell.concurrency),
        "rounds": settings.rounds,
        "round_seconds": settings.round.as_secs(),
        "target": format!("p99 ratio <= {TARGET_P99_RATIO} and p99 added <= {TARGET_P99_ADDED_US} us"),
        "disk_fdatasync_p50_us": fsync.0,
        "disk_fdatasync_p99_us": fsync.1,
    });
    for (t, s) in &cell.series {
        v[t.name] = s.json(t.audit_log.is_some());
        if t.name != "direct"
            && let Some(c) = cell.comparison(t.name)
        {
            v[format!("{}_vs_direct", t.name)] = c;
        }
    }
    v
}

/// The readable table: to stdout, or to stderr when stdout carries JSON.
fn print_table(cells: &[Cell], settings: &Settings, fsync: (f64, f64), json_out: bool) {
    let mut out = String::new();
    out.push_str(&format!(
        "\nFirestore gRPC, straight to the emulator vs through Latchkey \
         ({} interleaved rounds x {} s per target, {} HTTP/2 connection(s) per round)\n",
        settings.rounds,
        settings.round.as_secs(),
        settings.connections,
    ));
    out.push_str(&format!(
        "disk: one 512-byte append + fdatasync takes p50 {} us, p99 {} us here\n\n",
        fsync.0, fsync.1
    ));
    out.push_str(&format!(
        "{:<12} {:>4}  {:<21} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
        "method", "conc", "target", "ops/s", "p50 us", "p99 us", "CPU us/op", "audit B/op"
    ));
    for cell in cells {
        for (t, s) in &cell.series {
            let audit = if t.audit_log.is_some() && s.calls > 0 {
                format!("{:.0}", s.audit_bytes as f64 / s.calls as f64)
            } else {
                "-".to_owned()
            };
            out.push_str(&format!(
                "{:<12} {:>4}  {:<21} {:>8.0} {:>9.1} {:>9.1} {:>9.1} {:>9}\n",
                cell.method,
                cell.concurrency,
                t.name,
                s.ops_per_s(),
                s.p(0.5),
                s.p(0.99),
                s.cpu_us_per_call(),
                audit
            ));
        }
        for (t, _) in cell.series.iter().skip(1) {
            let Some(c) = cell.comparison(t.name) else {
                continue;
            };
            let verdict = match c["meets_target"].as_bool() {
                Some(true) => ": meets the target",
                Some(false) => ": MISSES the target",
                None => "",
            };
            out.push_str(&format!(
                "{:<18} {:<21} p99 x{} ({:+} us), p50 {:+} us, throughput x{}{verdict}\n",
                "",
                format!("{}/direct", t.name),
                c["p99_ratio"],
                c["p99_added_us"].as_f64().unwrap_or_default(),
                c["p50_added_us"].as_f64().unwrap_or_default(),
                c["throughput_ratio"],
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "target: Latchkey adds at most {:.0} % to p99 and at most {TARGET_P99_ADDED_US:.0} us.\n\
         CPU us/op: this whole process (load generator, gateways, relay) per call; the emulator is not counted.\n",
        (TARGET_P99_RATIO - 1.0) * 100.0
    ));
    if settings.breakdown {
        out.push_str(
            "breakdown: bare_h2_relay is the extra hop alone (no auth, policy or audit); \
             latchkey_audit_tmpfs is Latchkey with its audit log on tmpfs, where fsync is free.\n",
        );
    }
    if json_out {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
}
