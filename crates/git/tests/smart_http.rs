//! End-to-end: the real `git` CLI against a hyper server that drives
//! `prepare` → decide → `refuse` or `forward` as the gateway does, with a
//! local `git http-backend` upstream.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use latchkey_core::{Action, Intent};
use latchkey_git::differential::EMPTY_PACK;
use latchkey_git::{
    BasicCredential, GitCaller, GitLimits, GitOutcome, GitRoute, RefDenial, Upstream, prepare,
};
use latchkey_relay::{HeldEnd, Hold, Release};

/// Test double for the gateway's pipeline (a fake: no Cedar, no audit log):
/// allows everything except pushes to the configured refs and reads of the
/// configured repositories, and keeps the outcomes it is given.
struct DenyListPhases {
    denied_refs: Vec<String>,
    denied_repos: Vec<String>,
    authorized: Mutex<Vec<Intent>>,
    outcomes: Mutex<Vec<GitOutcome>>,
    /// Plays an audit log that cannot record outcomes.
    fail_outcomes: std::sync::atomic::AtomicBool,
}

impl DenyListPhases {
    fn authorize(&self, intents: &[Intent]) -> Result<(), Vec<RefDenial>> {
        self.authorized
            .lock()
            .unwrap()
            .extend(intents.iter().cloned());
        let mut refusals = Vec::new();
        for i in intents {
            match i.action {
                Action::GitPush => {
                    let name = &i.resource.attributes["name"];
                    if self.denied_refs.contains(name) {
                        refusals.push(RefDenial::for_ref(
                            name.clone(),
                            "denied by policy protect-main",
                        ));
                    }
                }
                _ => {
                    if self.denied_repos.contains(&i.resource.id) {
                        refusals.push(RefDenial::whole("denied by policy private-repo"));
                    }
                }
            }
        }
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(refusals)
        }
    }

    /// Records an outcome; `false` plays an audit log that cannot.
    fn outcome(&self, outcome: GitOutcome) -> bool {
        self.outcomes.lock().unwrap().push(outcome);
        !self.fail_outcomes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, latchkey_relay::BoxError>;

/// The gateway's Git path in miniature: prepare, decide, refuse or forward,
/// and hold the response's end until its outcome is recorded.
async fn serve(
    req: hyper::Request<hyper::body::Incoming>,
    route: GitRoute,
    upstream: &Upstream,
    phases: Arc<DenyListPhases>,
    limits: &GitLimits,
) -> hyper::Response<Body> {
    let boxed = |r: hyper::Response<latchkey_git::GitBody>| {
        r.map(|b| b.map_err(latchkey_relay::BoxError::from).boxed_unsync())
    };
    let error = |e: latchkey_git::GitError| {
        boxed(latchkey_git::plain_response(
            e.status(),
            &e.public_message(),
        ))
    };
    let prepared = match prepare(req, route, upstream, GitCaller::default(), limits).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    if !prepared.intents().is_empty() {
        phases
            .authorized
            .lock()
            .unwrap()
            .extend(prepared.intents().iter().cloned());
        if let Err(denials) = phases.authorize(prepared.intents()) {
            return boxed(prepared.refuse(&denials, limits).await);
        }
    }
    let fwd = match prepared.forward(upstream, limits).await {
        Ok(f) => f,
        Err((e, outcome)) => {
            phases.outcome(outcome);
            return error(e);
        }
    };
    let (parts, body) = fwd.response.into_parts();
    let status = parts.status.as_u16();
    let pending = fwd.outcome;
    let held = HeldEnd::new(
        body,
        Hold::LastChunk,
        ReportTap(fwd.report_tap),
        Box::new(move |tap: ReportTap, ending| {
            let error = ending.error.map(|e| format!("{e:?}"));
            let report = tap.0.map(latchkey_git::ReportStatusTap::into_report);
            let recorded = phases.outcome(pending.finish(status, report, ending.bytes_out, error));
            Box::pin(async move {
                if recorded {
                    Release::Pass
                } else {
                    Release::Fail
                }
            })
        }),
    );
    hyper::Response::from_parts(parts, held.boxed_unsync())
}

/// The report-status tap as the relay's tap.
struct ReportTap(Option<latchkey_git::ReportStatusTap>);

impl latchkey_relay::Tap for ReportTap {
    fn feed(&mut self, chunk: &Bytes) -> latchkey_relay::TapSays {
        if let Some(t) = self.0.as_mut() {
            t.feed(chunk);
        }
        latchkey_relay::TapSays::Pass
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    work: PathBuf,
    base: String,
    phases: Arc<DenyListPhases>,
    /// `Authorization` headers the server next to http-backend received.
    seen_auth: Arc<Mutex<Vec<String>>>,
}

impl Env {
    fn bare(&self) -> PathBuf {
        self.root.join("acme/app.git")
    }

    async fn git(&self, dir: &Path, args: &[&str]) -> Output {
        tokio::process::Command::new("git")
            .args(["-c", "credential.helper=", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .await
            .unwrap()
    }

    async fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git(dir, args).await;
        assert!(
            out.status.success(),
            "git {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn upstream_ref(&self, name: &str) -> Option<String> {
        let bare = self.bare();
        let out = self
            .git(&bare, &["rev-parse", "--verify", "--quiet", name])
            .await;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    async fn commit(&self, dir: &Path, file: &str, content: &[u8]) {
        std::fs::write(dir.join(file), content).unwrap();
        self.ok(dir, &["add", file]).await;
        self.ok(dir, &["commit", "-q", "-m", file]).await;
    }
}

async fn start() -> Env {
    start_with(false).await
}

async fn start_with(via_http: bool) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repos");
    let home = tmp.path().join("home");
    let work = tmp.path().join("work");
    for d in [&root, &home, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let phases = Arc::new(DenyListPhases {
        denied_refs: vec!["refs/heads/main".into()],
        denied_repos: vec!["local/acme/secret".into()],
        authorized: Mutex::new(Vec::new()),
        outcomes: Mutex::new(Vec::new()),
        fail_outcomes: Default::default(),
    });

    let upstream = Upstream::Local { root: root.clone() };
    let seen_auth = Arc::new(Mutex::new(Vec::new()));
    let server_phases = phases.clone();
    let port = if via_http {
        // Latchkey -> (HTTP upstream) -> a second server that runs http-backend.
        let inner_phases = Arc::new(DenyListPhases {
            denied_refs: vec![],
            denied_repos: vec![],
            authorized: Mutex::new(Vec::new()),
            outcomes: Mutex::new(Vec::new()),
            fail_outcomes: Default::default(),
        });
        let inner = spawn_server(upstream, inner_phases, seen_auth.clone()).await;
        let http = Upstream::Http {
            base_url: format!("http://127.0.0.1:{inner}/git/local/"),
            credential: Some(BasicCredential {
                username: "latchkey".into(),
                password: "upstream-secret".into(),
            }),
            tls: None,
        };
        spawn_server(http, server_phases, Arc::new(Mutex::new(Vec::new()))).await
    } else {
        spawn_server(upstream, server_phases, seen_auth.clone()).await
    };

    let env = Env {
        base: format!("http://127.0.0.1:{port}/git/local/acme"),
        root,
        home,
        work,
        phases,
        seen_auth,
        _tmp: tmp,
    };
    // Seed the upstream: a bare repo with one commit on main.
    std::fs::create_dir_all(env.root.join("acme")).unwrap();
    env.ok(&env.root, &["init", "-q", "--bare", "acme/app.git"])
        .await;
    env.ok(&env.root, &["init", "-q", "--bare", "acme/secret.git"])
        .await;
    let seed = env.work.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    env.ok(&seed, &["init", "-q"]).await;
    env.commit(&seed, "README", b"hello\n").await;
    let bare = env.bare();
    env.ok(&seed, &["push", "-q", bare.to_str().unwrap(), "main"])
        .await;
    env
}

/// Serves `serve()` on 127.0.0.1:0, recording the `Authorization` headers it receives.
async fn spawn_server(
    upstream: Upstream,
    phases: Arc<DenyListPhases>,
    seen_auth: Arc<Mutex<Vec<String>>>,
) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = Arc::new(upstream);
    let limits = Arc::new(GitLimits::default());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (upstream, limits, phases, seen_auth) = (
                upstream.clone(),
                limits.clone(),
                phases.clone(),
                seen_auth.clone(),
            );
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (upstream, limits, phases) =
                        (upstream.clone(), limits.clone(), phases.clone());
                    if let Some(a) = req.headers().get("authorization") {
                        seen_auth
                            .lock()
                            .unwrap()
                            .push(a.to_str().unwrap().to_owned());
                    }
                    async move {
                        let path = req
                            .uri()
                            .path()
                            .strip_prefix("/git/")
                            .unwrap_or("")
                            .to_owned();
                        let query = req.uri().query().map(str::to_owned);
                        let resp = match GitRoute::parse(&path, query.as_deref()) {
                            Ok(route) => serve(req, route, &upstream, phases, &limits).await,
                            Err(e) => {
                                let mut r = hyper::Response::new(
                                    Full::new(Bytes::from(e.to_string()))
                                        .map_err(|never| match never {})
                                        .boxed_unsync(),
                                );
                                *r.status_mut() = e.status();
                                r
                            }
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upstream_gets_latchkeys_credential_not_the_callers() {
    let env = start_with(true).await;
    let url = format!("{}/app.git", env.base);
    // The caller's own credential in the URL must not reach the upstream.
    let with_user = url.replace("http://", "http://alice:caller-secret@");
    env.ok(&env.work, &["clone", "-q", &with_user, "app"]).await;
    let app = env.work.join("app");
    env.ok(&app, &["checkout", "-q", "-b", "via-http"]).await;
    env.commit(&app, "h.txt", b"h\n").await;
    env.ok(
        &app,
        &[
            "-c",
            "protocol.version=2",
            "push",
            "-q",
            "origin",
            "via-http",
        ],
    )
    .await;
    assert!(env.upstream_ref("refs/heads/via-http").await.is_some());
    env.ok(&app, &["checkout", "-q", "main"]).await;
    env.commit(&app, "m.txt", b"m\n").await;
    let out = env.git(&app, &["push", "origin", "main"]).await;
    assert!(
        stderr(&out).contains("main (denied by policy protect-main)"),
        "{}",
        stderr(&out)
    );

    // A caller's Authorization header is replaced, never forwarded.
    let (status, _) = raw_request(
        "GET",
        &env.base,
        "/git/local/acme/app.git/info/refs?service=git-upload-pack",
        &[
            ("Authorization", "Basic YWxpY2U6Y2FsbGVyLXNlY3JldA=="),
            ("X-WEBAUTH-USER", "root"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 200);

    let seen = env.seen_auth.lock().unwrap().clone();
    assert!(seen.len() >= 5, "{seen:?}");
    // base64("latchkey:upstream-secret")
    assert!(
        seen.iter()
            .all(|a| a == "Basic bGF0Y2hrZXk6dXBzdHJlYW0tc2VjcmV0"),
        "{seen:?}"
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_push_deny_tag_delete_fetch_v2_and_shallow() {
    let env = start().await;
    let url = format!("{}/app.git", env.base);
    env.ok(&env.work, &["clone", "-q", &url, "app"]).await;
    let app = env.work.join("app");
    assert!(app.join("README").exists());

    // A new branch is allowed and lands upstream; the outcome says so.
    env.ok(&app, &["checkout", "-q", "-b", "feature"]).await;
    env.commit(&app, "a.txt", b"a\n").await;
    env.ok(&app, &["push", "-q", "origin", "feature"]).await;
    let head = env.ok(&app, &["rev-parse", "HEAD"]).await;
    assert_eq!(
        env.upstream_ref("refs/heads/feature").await.as_deref(),
        Some(head.as_str())
    );
    {
        let outcomes = env.phases.outcomes.lock().unwrap();
        let push = outcomes
            .iter()
            .rev()
            .find(|o| !o.updates.is_empty())
            .expect("push outcome");
        assert_eq!(push.status, 200);
        let report = push.report.as_ref().expect("report");
        assert!(report.complete);
        assert_eq!(report.unpack.as_deref(), Some("ok"));
        assert_eq!(
            report.updated_refs().collect::<Vec<_>>(),
            ["refs/heads/feature"]
        );
        assert!(push.bytes_in > 0 && push.bytes_out > 0);
    }

    // Pushing main is refused by policy: git shows why, upstream main stays.
    let main_before = env.upstream_ref("refs/heads/main").await.unwrap();
    env.ok(&app, &["checkout", "-q", "main"]).await;
    env.commit(&app, "b.txt", b"b\n").await;
    let out = env.git(&app, &["push", "origin", "main"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("[remote rejected]"), "{err}");
    assert!(
        err.contains("main (denied by policy protect-main)"),
        "{err}"
    );
    assert!(
        err.contains("remote: latchkey: denied by policy protect-main"),
        "{err}"
    );
    assert_eq!(
        env.upstream_ref("refs/heads/main").await.unwrap(),
        main_before
    );

    // Pushing main together with another ref rejects both.
    env.ok(&app, &["branch", "other"]).await;
    let out = env.git(&app, &["push", "origin", "main", "other"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("other (other ref denied in the same push)"),
        "{err}"
    );
    assert_eq!(env.upstream_ref("refs/heads/other").await, None);

    // Tags and deletions.
    env.ok(&app, &["tag", "v1", "feature"]).await;
    env.ok(&app, &["push", "-q", "origin", "v1"]).await;
    assert!(env.upstream_ref("refs/tags/v1").await.is_some());
    env.ok(&app, &["push", "-q", "origin", ":feature"]).await;
    assert_eq!(env.upstream_ref("refs/heads/feature").await, None);
    let intents = env.phases.authorized.lock().unwrap().clone();
    let ops: Vec<_> = intents
        .iter()
        .filter(|i| i.action == Action::GitPush)
        .map(|i| {
            (
                i.resource.attributes["short"].clone(),
                i.context["operation"].clone(),
            )
        })
        .collect();
    assert!(ops.contains(&("v1".into(), "create".into())), "{ops:?}");
    assert!(
        ops.contains(&("feature".into(), "delete".into())),
        "{ops:?}"
    );

    // Protocol v2 fetch and a shallow clone.
    env.ok(&app, &["-c", "protocol.version=2", "fetch", "-q", "origin"])
        .await;
    // The v2 command is read before the decision and is part of it.
    let commands: Vec<String> = env
        .phases
        .authorized
        .lock()
        .unwrap()
        .iter()
        .filter_map(|i| match i.context.get("command") {
            Some(latchkey_core::ContextValue::String(c)) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert!(commands.iter().any(|c| c == "ls-refs"), "{commands:?}");
    env.ok(&app, &["-c", "protocol.version=0", "fetch", "-q", "origin"])
        .await;
    env.ok(&env.work, &["clone", "-q", "--depth", "1", &url, "shallow"])
        .await;
    let count = env
        .ok(&env.work.join("shallow"), &["rev-list", "--count", "HEAD"])
        .await;
    assert_eq!(count, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_push_streams_through() {
    let env = start().await;
    let url = format!("{}/app.git", env.base);
    env.ok(&env.work, &["clone", "-q", &url, "app"]).await;
    let app = env.work.join("app");
    env.ok(&app, &["checkout", "-q", "-b", "big"]).await;
    // Incompressible, larger than http.postBuffer: git probes, then streams chunked.
    let mut data = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9E3779B97F4A7C15;
    while data.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    env.commit(&app, "big.bin", &data).await;
    env.ok(
        &app,
        &["-c", "http.postBuffer=65536", "push", "-q", "origin", "big"],
    )
    .await;
    let head = env.ok(&app, &["rev-parse", "HEAD"]).await;
    assert_eq!(
        env.upstream_ref("refs/heads/big").await.as_deref(),
        Some(head.as_str())
    );
    let bare = env.bare();
    env.ok(&bare, &["fsck", "--no-progress"]).await;

    // The same kind of push to main is refused and nothing reaches upstream.
    let before = env.upstream_ref("refs/heads/main").await;
    env.ok(&app, &["checkout", "-q", "main"]).await;
    data.reverse();
    env.commit(&app, "big2.bin", &data).await;
    let out = env
        .git(
            &app,
            &["-c", "http.postBuffer=65536", "push", "origin", "main"],
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("denied by policy protect-main"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.upstream_ref("refs/heads/main").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_read_shows_the_policy() {
    let env = start().await;
    for v in ["0", "2"] {
        let out = env
            .git(
                &env.work,
                &[
                    "-c",
                    &format!("protocol.version={v}"),
                    "clone",
                    &format!("{}/secret.git", env.base),
                    &format!("s{v}"),
                ],
            )
            .await;
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("remote error: latchkey: denied by policy private-repo"),
            "{err}"
        );
    }
    // Dumb HTTP is refused with a hint.
    let (status, body) = raw_request(
        "GET",
        &env.base,
        "/git/local/acme/app.git/info/refs",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body)
            .contains("dumb HTTP is not supported; use a git client that speaks smart HTTP"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

async fn raw_post(base: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    raw_request("POST", base, path, headers, body).await
}

/// Sends a raw HTTP/1.1 request and returns (status, body).
async fn raw_request(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = resp[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    (status, body)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_request_bodies_are_classified_and_forwarded() {
    let env = start().await;
    let main = env.upstream_ref("refs/heads/main").await.unwrap();
    let bare = env.bare();
    env.ok(&bare, &["update-ref", "refs/heads/tmp", &main])
        .await;
    let path = "/git/local/acme/app.git/git-receive-pack";
    let headers = [
        ("Content-Type", "application/x-git-receive-pack-request"),
        ("Content-Encoding", "gzip"),
        ("Authorization", "Basic c2VjcmV0"),
    ];
    let zero = "0".repeat(40);

    // A gzipped deletion is parsed, allowed and applied by http-backend.
    let mut body = latchkey_git::pktline::pkt_line(
        format!("{main} {zero} refs/heads/tmp\0report-status delete-refs").as_bytes(),
    );
    body.extend_from_slice(b"0000");
    let (status, resp) = raw_post(&env.base, path, &headers, &gzip(&body)).await;
    assert_eq!(status, 200);
    let report = latchkey_git::parse_report_status(&resp, false);
    assert_eq!(
        report.updated_refs().collect::<Vec<_>>(),
        ["refs/heads/tmp"],
        "{report:?}"
    );
    assert_eq!(env.upstream_ref("refs/heads/tmp").await, None);

    // A gzipped deletion of main is refused before anything reaches upstream.
    let mut body = latchkey_git::pktline::pkt_line(
        format!("{main} {zero} refs/heads/main\0report-status side-band-64k").as_bytes(),
    );
    body.extend_from_slice(b"0000");
    let (status, resp) = raw_post(&env.base, path, &headers, &gzip(&body)).await;
    assert_eq!(status, 200);
    let report = latchkey_git::parse_report_status(&resp, true);
    assert_eq!(
        report.refs[0].reason.as_deref(),
        Some("denied by policy protect-main")
    );
    assert_eq!(
        env.upstream_ref("refs/heads/main").await.as_deref(),
        Some(main.as_str())
    );

    // Two Content-Encoding headers could be read two ways: refused.
    let twice = [
        ("Content-Type", "application/x-git-receive-pack-request"),
        ("Content-Encoding", "identity"),
        ("Content-Encoding", "gzip"),
    ];
    let (status, resp) = raw_post(&env.base, path, &twice, &gzip(&body)).await;
    assert_eq!(status, 415, "{}", String::from_utf8_lossy(&resp));

    // Garbage is a 400 with a safe message.
    let (status, resp) = raw_post(&env.base, path, &headers[..1], b"zzzz").await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&resp).starts_with("git protocol error:"));
}

fn pkts(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        if l.is_empty() {
            out.extend_from_slice(b"0000");
        } else {
            out.extend_from_slice(&latchkey_git::pktline::pkt_line(l));
        }
    }
    out
}

/// Regression (issue 11.1): a push certificate whose line carries a NUL, or
/// a second signature armor line, made Latchkey and git disagree about where
/// the certificate's commands are. Latchkey saw none and forwarded the body
/// without a decision; git moved protected `main` and created a branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_certificate_tricks_cannot_move_a_ref_without_a_decision() {
    let env = start().await;
    let main = env.upstream_ref("refs/heads/main").await.unwrap();
    // A second commit upstream, so a push can move main with an empty pack.
    let side_dir = env.work.join("side");
    env.ok(
        &env.work,
        &["clone", "-q", env.bare().to_str().unwrap(), "side"],
    )
    .await;
    env.commit(&side_dir, "s.txt", b"s\n").await;
    env.ok(&side_dir, &["push", "-q", "origin", "HEAD:refs/heads/side"])
        .await;
    let side = env.upstream_ref("refs/heads/side").await.unwrap();
    let zero = "0".repeat(40);
    let move_main = format!("{main} {side} refs/heads/main\n");
    let new_branch = format!("{zero} {side} refs/heads/sneaky\n");
    let path = "/git/local/acme/app.git/git-receive-pack";
    let headers = [("Content-Type", "application/x-git-receive-pack-request")];

    let nul_trick = pkts(&[
        b"push-cert\0report-status",
        b"certificate version 0.1\n\0\n\n-----BEGIN PGP SIGNATURE-----\n",
        b"pusher T <t@example.com> 1700000000 +0000\n",
        b"\n",
        move_main.as_bytes(),
        new_branch.as_bytes(),
        b"-----BEGIN PGP SIGNATURE-----\n",
        b"x\n",
        b"-----END PGP SIGNATURE-----\n",
        b"push-cert-end\n",
        b"",
    ]);
    let stray_armor = pkts(&[
        b"push-cert\0report-status",
        b"certificate version 0.1\n",
        b"pusher T <t@example.com> 1700000000 +0000\n",
        b"\n",
        b"-----BEGIN PGP SIGNATURE-----\n",
        move_main.as_bytes(),
        new_branch.as_bytes(),
        b"-----BEGIN PGP SIGNATURE-----\n",
        b"x\n",
        b"-----END PGP SIGNATURE-----\n",
        b"push-cert-end\n",
        b"",
    ]);
    let end_marker_after_nul = pkts(&[
        b"push-cert\0report-status",
        b"certificate version 0.1\n",
        b"\n",
        move_main.as_bytes(),
        b"push-cert-end\n\0-----BEGIN PGP SIGNATURE-----\n",
        b"-----BEGIN PGP SIGNATURE-----\n",
        b"push-cert-end\n",
        b"",
    ]);
    for (name, prelude) in [
        ("nul in a certificate line", nul_trick),
        ("stray armor line", stray_armor),
        ("end marker before a nul", end_marker_after_nul),
    ] {
        let mut body = prelude;
        body.extend_from_slice(EMPTY_PACK);
        let authorized_before = env.phases.authorized.lock().unwrap().len();
        let (status, resp) = raw_post(&env.base, path, &headers, &body).await;
        assert_eq!(
            env.upstream_ref("refs/heads/main").await.as_deref(),
            Some(main.as_str()),
            "{name}: main moved ({status}: {})",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(
            env.upstream_ref("refs/heads/sneaky").await,
            None,
            "{name}: a branch was created"
        );
        assert_eq!(
            env.phases.authorized.lock().unwrap().len(),
            authorized_before,
            "{name}: a refused prelude reached the decision step"
        );
        assert_eq!(status, 400, "{name}: {}", String::from_utf8_lossy(&resp));
    }
}

/// A body with no command is forwarded only when it is exactly a flush-pkt
/// (git's probe); anything else with no command is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_commands_must_be_a_bare_flush() {
    let env = start().await;
    let path = "/git/local/acme/app.git/git-receive-pack";
    let headers = [("Content-Type", "application/x-git-receive-pack-request")];
    let (status, _) = raw_post(&env.base, path, &headers, b"0000").await;
    assert_eq!(status, 200);
    let mut trailing = b"0000".to_vec();
    trailing.extend_from_slice(EMPTY_PACK);
    let shallow_only = pkts(&[format!("shallow {}", "1".repeat(40)).as_bytes(), b""]);
    for (name, body) in [
        ("flush then a pack", trailing),
        ("only a shallow line", shallow_only),
    ] {
        let (status, resp) = raw_post(&env.base, path, &headers, &body).await;
        assert_eq!(status, 400, "{name}: {}", String::from_utf8_lossy(&resp));
        assert!(
            String::from_utf8_lossy(&resp).contains("no ref update"),
            "{name}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
}

/// Signed pushes are refused unless `push_certificates` is configured, with a
/// message that says what to do; nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_pushes_are_refused_by_default() {
    let env = start().await;
    let main = env.upstream_ref("refs/heads/main").await.unwrap();
    let zero = "0".repeat(40);
    let create = format!("{zero} {main} refs/heads/signed\n");
    let mut body = pkts(&[
        b"push-cert\0report-status",
        b"certificate version 0.1\n",
        b"pusher T <t@example.com> 1700000000 +0000\n",
        b"\n",
        create.as_bytes(),
        b"-----BEGIN SSH SIGNATURE-----\n",
        b"x\n",
        b"-----END SSH SIGNATURE-----\n",
        b"push-cert-end\n",
        b"",
    ]);
    body.extend_from_slice(EMPTY_PACK);
    let headers = [("Content-Type", "application/x-git-receive-pack-request")];
    let (status, resp) = raw_post(
        &env.base,
        "/git/local/acme/app.git/git-receive-pack",
        &headers,
        &body,
    )
    .await;
    assert_eq!(status, 403);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.contains("git.push_certificates = true"), "{text}");
    assert_eq!(env.upstream_ref("refs/heads/signed").await, None);
}

/// Regression: Gogs and Gitea find `acme/SECRET` when asked for
/// `acme/secret`, so through an HTTP upstream the policy on the lowercase
/// name decides every spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_names_on_http_upstreams_are_decided_in_lowercase() {
    let env = start_with(true).await;
    let out = env
        .git(
            &env.work,
            &["clone", &format!("{}/SeCrEt.git", env.base), "mixed"],
        )
        .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("remote error: latchkey: denied by policy private-repo"),
        "{err}"
    );
}

/// Regression (DESIGN 6, issue 12's drift list): when the outcome of a push
/// cannot be recorded, the client must not hear of success; the git outcome
/// was only logged before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_outcome_cannot_be_recorded_is_not_reported_successful() {
    let env = start().await;
    let url = format!("{}/app.git", env.base);
    env.ok(&env.work, &["clone", "-q", &url, "app"]).await;
    let app = env.work.join("app");
    env.ok(&app, &["checkout", "-q", "-b", "unrecorded"]).await;
    env.commit(&app, "u.txt", b"u\n").await;
    env.phases
        .fail_outcomes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let out = env.git(&app, &["push", "origin", "unrecorded"]).await;
    assert!(
        !out.status.success(),
        "git reported success: {}",
        stderr(&out)
    );
    env.phases
        .fail_outcomes
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The same push with a working log succeeds.
    env.ok(&app, &["push", "-q", "origin", "unrecorded"]).await;
}
