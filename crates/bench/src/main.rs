//! `latchkey-bench`: measures Latchkey's hot paths on this machine, each
//! beside a baseline run in the same process, and prints one JSON line per
//! measurement. Run through `bench/run` (see bench/README.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use latchkey_audit::{AuditConfig, AuditEvent, AuditLog, AuditSigner};
use latchkey_core::{
    Action, Intent, Principal, PrincipalKind, ResourceKind, ResourceRef, SharedClock, SystemClock,
};
use latchkey_policy::PolicyEngine;
use latchkey_store::{SharedStore, SqliteStore};
use latchkey_tokens::{
    KeySchedule, Lifetimes, MasterKey, MintRequest, RevocationSet, SigningKeyRing, TokenIssuer,
    TokenVerifier,
};
use tokio::time::Instant;

mod cluster;
mod firestore;

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let what = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if what == "all" || what == "decide" {
        verify_and_decide().await?;
    }
    if what == "all" || what == "audit" {
        audit_appends(secs).await?;
    }
    if what == "all" || what == "exchange" {
        exchanges(secs).await?;
    }
    if what == "all" || what == "firestore" {
        firestore::run(secs, json, what == "firestore").await?;
    }
    if what == "all" || what == "cluster" {
        cluster::run(secs).await?;
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// ~100 policies and ~1,000 entities, grants in group membership.
fn bench_policies() -> (Vec<(String, String)>, String) {
    let mut policies = Vec::new();
    let mut text = String::new();
    for i in 0..100 {
        let (action, rtype) = match i % 4 {
            0 => ("git.read", "Repository"),
            1 => ("git.push", "Ref"),
            2 => ("document.get", "Document"),
            _ => ("token.mint", "Audience"),
        };
        let _ = rtype;
        if i % 4 == 1 {
            text.push_str(&format!(
                "@id(\"p{i}\")\npermit (principal in Latchkey::Group::\"team-{i}\", action == Latchkey::Action::\"{action}\", resource) when {{ resource.kind == \"branch\" && resource.short != \"main\" }};\n"
            ));
        } else {
            text.push_str(&format!(
                "@id(\"p{i}\")\npermit (principal in Latchkey::Group::\"team-{i}\", action == Latchkey::Action::\"{action}\", resource);\n"
            ));
        }
    }
    text.push_str("@id(\"protect-main\")\nforbid (principal, action == Latchkey::Action::\"git.push\", resource) when { resource.name == \"refs/heads/main\" } unless { principal in Latchkey::Group::\"maintainers\" };\n");
    policies.push(("bench.cedar".to_owned(), text));
    let mut entities = Vec::new();
    for i in 0..100 {
        entities.push(serde_json::json!({"uid": {"type": "Latchkey::Group", "id": format!("team-{i}")}, "attrs": {}, "parents": [{"type": "Latchkey::Group", "id": "everyone"}]}));
    }
    entities.push(serde_json::json!({"uid": {"type": "Latchkey::Group", "id": "everyone"}, "attrs": {}, "parents": []}));
    entities.push(serde_json::json!({"uid": {"type": "Latchkey::Group", "id": "maintainers"}, "attrs": {}, "parents": []}));
    for i in 0..900 {
        entities.push(serde_json::json!({"uid": {"type": "Latchkey::Repository", "id": format!("local/acme/repo-{i}")},
            "attrs": {"upstream": "local", "owner": "acme", "name": format!("repo-{i}")}, "parents": []}));
    }
    (policies, serde_json::Value::Array(entities).to_string())
}

async fn token_stack(cache: usize) -> Result<(TokenIssuer, TokenVerifier)> {
    let store: SharedStore = Arc::new(SqliteStore::open_in_memory().await?);
    let ring = Arc::new(
        SigningKeyRing::load(
            store.clone(),
            MasterKey::generate()?,
            clock(),
            KeySchedule::default(),
        )
        .await?,
    );
    let revs = Arc::new(RevocationSet::load(store, clock()).await?);
    let url = "https://latchkey.bench".to_owned();
    let issuer = TokenIssuer::new(
        url.clone(),
        ring.clone(),
        revs.clone(),
        clock(),
        Lifetimes::default(),
    );
    let verifier = TokenVerifier::new(url, ring, revs, clock(), cache);
    Ok((issuer, verifier))
}

async fn verify_and_decide() -> Result<()> {
    let (policies, entities) = bench_policies();
    let engine =
        PolicyEngine::from_sources(&policies, Some(&entities)).context("bench policies")?;
    let mut alice = Principal::new(PrincipalKind::User, "alice", "bench");
    alice.groups = vec!["team-1".into(), "team-5".into(), "team-9".into()];
    let repo = ResourceRef::new(ResourceKind::Repository, "local/acme/repo-7")
        .with_attr("upstream", "local")
        .with_attr("owner", "acme")
        .with_attr("name", "repo-7");
    let intent = Intent::new(
        Action::GitPush,
        ResourceRef::new(ResourceKind::Ref, "local/acme/repo-7:refs/heads/feature")
            .with_parent(repo)
            .with_attr("name", "refs/heads/feature")
            .with_attr("kind", "branch")
            .with_attr("short", "feature"),
    )
    .with("operation", "update")
    .with("old", "1".repeat(40))
    .with("new", "2".repeat(40));

    for (label, cache) in [
        ("cache_hit", 100_000usize),
        ("cold_full_signature_check", 0),
    ] {
        let (issuer, verifier) = token_stack(cache).await?;
        let minted = issuer.mint(&MintRequest {
            principal: alice.clone(),
            audience: "git".into(),
            scope: vec![],
            lifetime: None,
            not_after: clock().unix() + 86_400,
        })?;
        // Warm up (and fill the cache).
        for _ in 0..2_000 {
            let v = verifier.verify(&minted.token, "git")?;
            assert!(engine.authorize(&v.principal, &intent).is_allowed());
        }
        let n = 50_000;
        let mut samples = Vec::with_capacity(n);
        let mut verify_only = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            let v = verifier.verify(&minted.token, "git")?;
            let t1 = Instant::now();
            let d = engine.authorize(&v.principal, &intent);
            let t2 = Instant::now();
            std::hint::black_box(d);
            samples.push((t2 - t0).as_nanos() as u64);
            verify_only.push((t1 - t0).as_nanos() as u64);
        }
        samples.sort_unstable();
        verify_only.sort_unstable();
        println!(
            "{}",
            serde_json::json!({
                "bench": "verify_and_decide", "path": label, "policies": engine.policy_count(), "entities": 1002,
                "iterations": n,
                "median_us": percentile(&samples, 0.5) as f64 / 1000.0,
                "p99_us": percentile(&samples, 0.99) as f64 / 1000.0,
                "verify_only_median_us": percentile(&verify_only, 0.5) as f64 / 1000.0,
            })
        );
    }
    Ok(())
}

async fn audit_appends(secs: u64) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("latchkey-bench-audit")
        .tempdir_in(".")?;
    let signer = AuditSigner::from_pkcs8("bench", &AuditSigner::generate_pkcs8()?)?;
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("index.db")).await?);
    let log = AuditLog::open(
        dir.path(),
        signer,
        Some(store),
        clock(),
        AuditConfig::default(),
    )
    .await?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..512 {
        let log = log.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let ev = AuditEvent::system(format!("bench-{t}-{i}"), "bench.append", 0)
                    .with_context("commit", "0123456789abcdef0123456789abcdef01234567");
                if log.append(ev).await.is_err() {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let n = done.load(Ordering::Relaxed);
    log.shutdown().await?;

    // Baseline: one write + fdatasync per event, no grouping.
    let path = dir.path().join("baseline.log");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let line = vec![b'x'; 400];
    let start = Instant::now();
    let mut base = 0u64;
    while start.elapsed() < Duration::from_secs(secs.min(2)) {
        use std::io::Write;
        f.write_all(&line)?;
        f.sync_data()?;
        base += 1;
    }
    let base_rate = base as f64 / start.elapsed().as_secs_f64();
    let rate = n as f64 / secs as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "durable_audit_appends", "appenders": 512, "seconds": secs,
            "events_per_s": rate.round(),
            "baseline_one_fsync_per_event_per_s": base_rate.round(),
            "ratio_vs_baseline": (rate / base_rate * 100.0).round() / 100.0,
        })
    );
    Ok(())
}

async fn exchanges(secs: u64) -> Result<()> {
    let data = tempfile::Builder::new()
        .prefix("latchkey-bench-gw")
        .tempdir_in(".")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    write_starter_policies(data.path())?;
    let master = MasterKey::generate()?.to_base64();
    let config = latchkey_gateway::config::Config::parse(&format!(
        "[server]\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n[keys]\nmaster_key = {{ value = \"{master}\" }}\n[dev_issuer]\nenabled = true\n",
        data.path().display()
    ))?;
    let gw = latchkey_gateway::Gateway::start(
        config,
        latchkey_gateway::StartOptions { dev: true },
        clock(),
    )
    .await?;
    let id_token = dev_id_token(&gw)?;
    let app = latchkey_gateway::router(gw.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={id_token}\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&audience=git"
    );
    // Correctness first.
    let (status, _) = one_request(addr, "/oauth2/token", Some(form.clone())).await?;
    anyhow::ensure!(status == 200, "exchange failed with status {status}");

    let baseline = load(addr, "/admin/health", None, secs).await?;
    let exchange = load(addr, "/oauth2/token", Some(form), secs).await?;
    gw.shutdown().await;
    println!(
        "{}",
        serde_json::json!({
            "bench": "token_exchange_http", "connections": 32, "seconds": secs,
            "exchanges_per_s": exchange.round(),
            "baseline_health_route_per_s": baseline.round(),
            "ratio_vs_baseline": (exchange / baseline * 100.0).round() / 100.0,
            "note": "external RS256 ID token in, Ed25519 Latchkey token out, decision and mint durably audited",
        })
    );
    Ok(())
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// Writes the starter policies into `{data}/policies`, as a gateway on
/// default config loads them; returns that directory.
fn write_starter_policies(data: &std::path::Path) -> Result<std::path::PathBuf> {
    let policy_dir = data.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    for (name, text) in latchkey_policy::starter_policy_files() {
        std::fs::write(policy_dir.join(name), text)?;
    }
    Ok(policy_dir)
}

/// An hour-long ID token from the gateway's dev issuer for `alice` of
/// `developers`, the subject token both HTTP benches exchange.
fn dev_id_token(gw: &latchkey_gateway::Gateway) -> Result<String> {
    let dev = gw.dev_issuer().context("dev issuer")?;
    Ok(dev.mint_id_token(
        "alice",
        &["developers".to_owned()],
        Some("alice@example.com"),
        "latchkey",
        Duration::from_secs(3600),
        serde_json::Map::new(),
        latchkey_core::Clock::unix(&SystemClock),
    )?)
}

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

fn request(
    addr: std::net::SocketAddr,
    path: &str,
    body: Option<&String>,
) -> Result<hyper::Request<Full<Bytes>>> {
    let uri = format!("http://{addr}{path}");
    Ok(match body {
        Some(b) => hyper::Request::post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(b.clone())))?,
        None => hyper::Request::get(uri).body(Full::new(Bytes::new()))?,
    })
}

async fn one_request(
    addr: std::net::SocketAddr,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Bytes)> {
    let resp = client()
        .request(request(addr, path, body.as_ref())?)
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

async fn load(
    addr: std::net::SocketAddr,
    path: &str,
    body: Option<String>,
    secs: u64,
) -> Result<f64> {
    let client = client();
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, ok, body, path) = (client.clone(), ok.clone(), body.clone(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let Ok(req) = request(addr, &path, body.as_ref()) else {
                    break;
                };
                match client.request(req).await {
                    Ok(resp) => {
                        let good = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if good {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}
