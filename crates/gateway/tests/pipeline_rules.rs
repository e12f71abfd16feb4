//! The request pipeline's rules (authenticate → classify → authorize → act
//! → record), target by target, written against behaviour only: an HTTP
//! request into `router()` (tower's `oneshot`, no listener in front of the
//! gateway), the HTTP answer, and the audit log. They pin the rules
//! issue 12's one pipeline holds on every route (before it, eight of them
//! failed: admin and Git refusals unaudited, rule freezes past Cedar, no
//! request id on most answers).
//!
//! The rules, per target (Git, Firestore gRPC, Firestore REST, token
//! exchange, revoke, introspect, admin, webhooks):
//! - a refusal at authenticate is answered in the target's protocol and
//!   audited (`refused:*` outcome); a request with no credential at all is
//!   challenged and not audited (git's first request never carries one);
//! - a refusal at classify (a malformed request) is answered in protocol and
//!   audited;
//! - a Cedar deny names the deciding policy in the answer and is audited as
//!   a decision with effect `deny`;
//! - with an unwritable audit log every route refuses and nothing is acted
//!   on;
//! - every answer carries an `x-request-id`, and it names the request's
//!   audit records.
//!
//! The one socket is the development identity provider's discovery and
//! JWKS, which the gateway fetches over HTTP to verify the identities it
//! exchanges (as `latchkey dev` serves them on its own port). A gateway
//! whose audit log is unwritable cannot exchange (the decision cannot be
//! recorded), so its tokens are minted with its own signing keys through
//! the library, as `latchkey keys` opens them.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use latchkey_audit::AuditEvent;
use latchkey_core::{Clock, FakeClock, Principal, PrincipalKind, SharedClock, SystemClock};
use latchkey_documents::proto;
use latchkey_events::{Source, signature_headers};
use latchkey_gateway::config::Config;
use latchkey_gateway::{Gateway, StartOptions, router};
use prost::Message as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const WEBHOOK_SECRET: &str = "pipeline-rules-webhook-secret";
const REPO: &str = "/git/local/acme/app.git";
const ZERO: &str = "0000000000000000000000000000000000000000";

/// Policies on top of the starter set, so every target has a Cedar forbid
/// with a name to look for.
const TEST_POLICIES: &str = r#"
// Contractors may mint admin-API tokens, so the admin routes can refuse them by name.
@id("test-contractors-mint-latchkey")
permit (
  principal in Latchkey::Group::"contractors",
  action == Latchkey::Action::"token.mint",
  resource == Latchkey::Audience::"latchkey"
);

@id("test-forbid-contractors-admin")
forbid (
  principal in Latchkey::Group::"contractors",
  action in [
    Latchkey::Action::"token.revoke",
    Latchkey::Action::"token.introspect",
    Latchkey::Action::"admin.read",
    Latchkey::Action::"admin.write"
  ],
  resource
);

@id("test-forbid-interns-mint")
forbid (
  principal in Latchkey::Group::"interns",
  action == Latchkey::Action::"token.mint",
  resource
);

// Rule-driven actions are Latchkey's own (`Service::"latchkey"`): refused here.
@id("test-forbid-service")
forbid (principal is Latchkey::Service, action, resource);
"#;

// ---------------------------------------------------------------------------
// The harness

/// A Firestore "emulator" address that accepts connections into the kernel
/// backlog and never answers: it can tell whether anything reached it.
struct SilentUpstream(std::net::TcpListener);

impl SilentUpstream {
    fn bind() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Self(l)
    }
    fn host_port(&self) -> String {
        self.0.local_addr().unwrap().to_string()
    }
    /// Whether any connection arrived since the last call.
    fn contacted(&self) -> bool {
        self.0.accept().is_ok()
    }
}

/// A gateway in a temp dir, driven without a socket.
struct Harness {
    gw: Arc<Gateway>,
    app: Router,
    dir: tempfile::TempDir,
    clock: Arc<FakeClock>,
    firestore: SilentUpstream,
    unwritable_audit: bool,
    idp: Option<tokio::task::JoinHandle<()>>,
    /// Held while the gateway's log is `/dev/full` (see `DevFull`).
    _dev_full: Option<latchkey_testkit::DevFull>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = self.idp.take() {
            t.abort();
        }
    }
}

/// What came back.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn request_id(&self) -> Option<String> {
        self.header("x-request-id").map(str::to_owned)
    }
    fn grpc_message(&self) -> String {
        let from = |h: &HeaderMap| {
            h.get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .map(latchkey_documents::status::grpc_message_decode)
        };
        from(&self.headers)
            .or_else(|| self.trailers.as_ref().and_then(from))
            .unwrap_or_default()
    }
}

fn git(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    out.stdout
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A gateway whose `audit/audit.log` is `/dev/full` (every write fails
    /// with ENOSPC), or `None` on a machine without `/dev/full`.
    async fn start_unwritable() -> Option<Self> {
        let dev_full = latchkey_testkit::DevFull::acquire()?;
        let mut h = Self::start_with(true).await;
        h._dev_full = Some(dev_full);
        Some(h)
    }

    async fn start_with(unwritable_audit: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let policies = data.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for (name, text) in latchkey_policy::starter_policy_files() {
            std::fs::write(policies.join(name), text).unwrap();
        }
        std::fs::write(policies.join("90-pipeline-rules.cedar"), TEST_POLICIES).unwrap();
        std::fs::write(
            policies.join(latchkey_policy::ENTITIES_FILE),
            latchkey_policy::STARTER_ENTITIES,
        )
        .unwrap();
        let repo = data.join("repos/acme/app.git");
        std::fs::create_dir_all(&repo).unwrap();
        git(
            &[
                "init",
                "--bare",
                "--quiet",
                "--initial-branch=main",
                repo.to_str().unwrap(),
            ],
            data,
        );
        if unwritable_audit {
            std::fs::create_dir_all(data.join("audit")).unwrap();
            std::os::unix::fs::symlink("/dev/full", data.join("audit/audit.log")).unwrap();
        }
        // The dev identity provider's documents are served here; the
        // gateway's issuer URL (and so its public URL) is this address.
        let idp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = idp.local_addr().unwrap();
        let firestore = SilentUpstream::bind();
        let master = STANDARD.encode([9u8; 32]);
        let toml = format!(
            r#"
[server]
listen = "{listen}"
data_dir = {data:?}

[server.limits]
unauthenticated_refusals = 100000

[keys]
master_key = {{ value = "{master}" }}

[dev_issuer]
enabled = true

[git.upstreams.local]
local_root = "repos"

[firestore]
emulator = "{emulator}"
databases = {{ "(default)" = "dev", "prod" = "prod" }}

[webhooks.gitea]
secret = {{ value = "{WEBHOOK_SECRET}" }}

[webhooks.buildkite]
secret = {{ value = "{WEBHOOK_SECRET}" }}

[[rules]]
name = "freeze-failed-builds"
on = "build_finished"
state = "failed"
freeze_pipeline = true
"#,
            data = data.display().to_string(),
            emulator = firestore.host_port(),
        );
        let config = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let clock = Arc::new(FakeClock::at(SystemClock.unix()));
        let shared: SharedClock = clock.clone();
        let gw = start_gateway(config, shared).await;
        let dev = gw.dev_issuer().unwrap();
        let (discovery, jwks) = (dev.discovery_document(), dev.jwks());
        let idp_app = Router::new()
            .route(
                "/dev-idp/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/dev-idp/jwks.json",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
        let idp = tokio::spawn(async move {
            axum::serve(idp, idp_app).await.unwrap();
        });
        Self {
            app: router(gw.clone()),
            gw,
            dir,
            clock,
            firestore,
            unwritable_audit,
            idp: Some(idp),
            _dev_full: None,
        }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    fn repo(&self) -> PathBuf {
        self.data().join("repos/acme/app.git")
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        Answer {
            status: parts.status,
            headers: parts.headers,
            trailers,
            body: collected.to_bytes(),
        }
    }

    /// Every audit record on disk (none for the unwritable log).
    fn audit(&self) -> Vec<AuditEvent> {
        if self.unwritable_audit {
            return Vec::new();
        }
        latchkey_audit::read_records(&self.data().join("audit"), 0)
            .unwrap()
            .filter_map(Result::ok)
            .map(|r| r.event)
            .collect()
    }

    /// The records written after the first `since`.
    fn audit_since(&self, since: usize) -> Vec<AuditEvent> {
        self.audit().into_iter().skip(since).collect()
    }

    /// The revocations and freezes in force, read from the store.
    async fn revocations(&self) -> Vec<latchkey_store::Revocation> {
        use latchkey_store::Store as _;
        latchkey_store::SqliteStore::open(&self.data().join("latchkey.db"))
            .await
            .unwrap()
            .list_revocations(self.clock.unix())
            .await
            .unwrap()
    }

    /// An identity token of the dev issuer.
    fn identity(&self, sub: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        self.gw
            .dev_issuer()
            .unwrap()
            .mint_id_token(
                sub,
                &groups,
                Some(&format!("{sub}@example.com")),
                "latchkey",
                std::time::Duration::from_secs(300),
                serde_json::Map::new(),
                self.clock.unix(),
            )
            .unwrap()
    }

    /// A Latchkey token for `sub` in `groups` for `audience`: exchanged at
    /// `/oauth2/token` through the router, or, when the audit log is
    /// unwritable (no exchange can be recorded), minted with the gateway's
    /// own keys.
    async fn token(&self, sub: &str, groups: &[&str], audience: &str) -> String {
        if self.unwritable_audit {
            return self.mint_directly(sub, groups, audience).await;
        }
        let id = self.identity(sub, groups);
        let a = self.exchange(&id, audience).await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn exchange(&self, subject_token: &str, audience: &str) -> Answer {
        self.send(form_post(
            "/oauth2/token",
            &[],
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", subject_token),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
                ("audience", audience),
            ],
        ))
        .await
    }

    async fn mint_directly(&self, sub: &str, groups: &[&str], audience: &str) -> String {
        let config = self.gw.config();
        let clock: SharedClock = self.clock.clone();
        let keyring = latchkey_gateway::open_keyring(config, clock.clone())
            .await
            .unwrap();
        let store: latchkey_store::SharedStore = Arc::new(
            latchkey_store::SqliteStore::open(&self.data().join("latchkey.db"))
                .await
                .unwrap(),
        );
        let revocations = latchkey_tokens::RevocationSet::load(store, clock.clone())
            .await
            .unwrap();
        let issuer = latchkey_tokens::TokenIssuer::new(
            self.gw.public_url().to_owned(),
            Arc::new(keyring),
            Arc::new(revocations),
            clock,
            latchkey_tokens::Lifetimes {
                default: config.tokens.default_lifetime,
                max: config.tokens.max_lifetime,
            },
        );
        let mut principal = Principal::new(PrincipalKind::User, sub, "dev");
        principal.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        issuer
            .mint(&latchkey_tokens::MintRequest {
                principal,
                audience: audience.to_owned(),
                scope: Vec::new(),
                lifetime: None,
                not_after: self.clock.unix() + 300,
            })
            .unwrap()
            .token
    }
}

/// Starts the gateway. Under `cargo test` (threads, not processes) the
/// previous `/dev/full` gateway's audit writer may still be closing when
/// `DevFull` is released: a `Locked` log is retried for a few seconds.
async fn start_gateway(config: Config, clock: SharedClock) -> Arc<Gateway> {
    let mut tries = 0;
    loop {
        match Gateway::start(config.clone(), StartOptions { dev: true }, clock.clone()).await {
            Ok(gw) => return gw,
            Err(latchkey_gateway::GatewayError::Audit(latchkey_audit::AuditError::Locked {
                ..
            })) if tries < 250 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn request<K: AsRef<str>>(
    method: &str,
    uri: &str,
    headers: &[(K, String)],
    body: impl Into<Body>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(k.as_ref(), v);
    }
    b.body(body.into()).unwrap()
}

fn form_post(uri: &str, headers: &[(&str, String)], form: &[(&str, &str)]) -> Request<Body> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut h = headers.to_vec();
    h.push((
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    ));
    request("POST", uri, &h, body)
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn basic(token: &str) -> (&'static str, String) {
    (
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("x-token:{token}"))),
    )
}

/// A credential that is not a Latchkey token.
const BAD_TOKEN: &str = "not-a-latchkey-token";

/// The refusal records among `events`.
fn refusals(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events
        .iter()
        .filter(|e| {
            e.outcome
                .as_ref()
                .is_some_and(|o| o.status.starts_with("refused:"))
        })
        .collect()
}

/// Asserts one `refused:*` record among `events` and returns it.
fn assert_refusal_audited<'a>(events: &'a [AuditEvent], what: &str) -> &'a AuditEvent {
    let r = refusals(events);
    assert!(
        !r.is_empty(),
        "{what}: no `refused:` record was audited; new records: {events:#?}"
    );
    r[0]
}

/// Asserts a deny decision by `policy` among `events`.
fn assert_deny_audited(events: &[AuditEvent], policy: &str, what: &str) {
    assert!(
        events
            .iter()
            .any(|e| e.decision.as_ref().is_some_and(|d| {
                d.effect == "deny" && d.policy_ids.iter().any(|p| p == policy)
            })),
        "{what}: no deny decision by `{policy}` was audited; new records: {events:#?}"
    );
}

// --- protocol shapes ---------------------------------------------------------

fn assert_oauth_error(a: &Answer, status: u16, what: &str) -> Value {
    assert_eq!(a.status.as_u16(), status, "{what}: {}", a.text());
    let body = a.json();
    assert!(body["error"].is_string(), "{what}: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{what}: {body}"
    );
    body
}

fn assert_google_error(a: &Answer, status: u16, grpc_status: &str, what: &str) -> String {
    assert_eq!(a.status.as_u16(), status, "{what}: {}", a.text());
    let body = a.json();
    let err = &body["error"];
    assert_eq!(err["code"], status, "{what}: {body}");
    assert_eq!(err["status"], grpc_status, "{what}: {body}");
    let message = err["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{what}: {body}");
    message
}

/// A trailers-only gRPC answer (HTTP 200, the status in the head).
fn assert_grpc_refusal(a: &Answer, code: i32, what: &str) -> String {
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{what}: gRPC answers are HTTP 200"
    );
    assert_eq!(
        a.header("content-type"),
        Some("application/grpc"),
        "{what}: {:?}",
        a.headers
    );
    let head: Option<i32> = a
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    assert_eq!(
        head,
        Some(code),
        "{what}: trailers-only grpc-status {code}; message {:?}",
        a.grpc_message()
    );
    assert!(a.body.is_empty(), "{what}: trailers-only has no body");
    a.grpc_message()
}

fn assert_git_plain(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status.as_u16(), status, "{what}: {}", a.text());
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{what}: {:?}",
        a.headers
    );
    assert!(!a.text().trim().is_empty(), "{what}: an empty refusal");
}

fn assert_webhook_json(a: &Answer, status: u16, what: &str) -> Value {
    assert_eq!(a.status.as_u16(), status, "{what}: {}", a.text());
    let body = a.json();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {body}"
    );
    body
}

// --- requests per target -------------------------------------------------------

fn info_refs(auth: Option<(&'static str, String)>) -> Request<Body> {
    let headers: Vec<_> = auth.into_iter().collect();
    request(
        "GET",
        &format!("{REPO}/info/refs?service=git-upload-pack"),
        &headers,
        Body::empty(),
    )
}

fn pkt(payload: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    out
}

/// A push of one new commit to `reference`: the command section and a real
/// pack made by git.
fn push_body(work: &Path, reference: &str) -> Vec<u8> {
    git(&["init", "--quiet", "--initial-branch=main"], work);
    git(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "pipeline rules",
        ],
        work,
    );
    let head = String::from_utf8(git(&["rev-parse", "HEAD"], work)).unwrap();
    let head = head.trim();
    let mut child = std::process::Command::new("git")
        .args(["pack-objects", "--stdout", "--revs", "--quiet"])
        .current_dir(work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{head}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut body = pkt(&format!(
        "{ZERO} {head} {reference}\0report-status side-band-64k agent=git/2\n"
    ));
    body.extend_from_slice(b"0000");
    body.extend_from_slice(&out.stdout);
    body
}

fn receive_pack(auth: (&'static str, String), body: Vec<u8>) -> Request<Body> {
    request(
        "POST",
        &format!("{REPO}/git-receive-pack"),
        &[
            auth,
            (
                "content-type",
                "application/x-git-receive-pack-request".to_owned(),
            ),
        ],
        body,
    )
}

fn refs_of(repo: &Path) -> String {
    String::from_utf8(git(&["for-each-ref"], repo)).unwrap()
}

fn grpc(
    method: &str,
    auth: Option<(&'static str, String)>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut headers: Vec<_> = auth.into_iter().collect();
    headers.push(("content-type", "application/grpc".to_owned()));
    headers.push(("te", "trailers".to_owned()));
    request(
        "POST",
        &format!("/google.firestore.v1.Firestore/{method}"),
        &headers,
        body,
    )
}

const PROJECT: &str = "p";

fn doc_name(database: &str) -> String {
    format!("projects/{PROJECT}/databases/{database}/documents/c/d")
}

fn get_document_frame(database: &str) -> Bytes {
    let req = proto::GetDocumentRequest {
        name: doc_name(database),
        ..Default::default()
    };
    latchkey_documents::encode_frame(&req.encode_to_vec())
}

fn update_document_frame(database: &str) -> Bytes {
    let req = proto::UpdateDocumentRequest {
        document: Some(proto::Document {
            name: doc_name(database),
            ..Default::default()
        }),
        ..Default::default()
    };
    latchkey_documents::encode_frame(&req.encode_to_vec())
}

fn rest(
    method: &str,
    database: &str,
    auth: Option<(&'static str, String)>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut headers: Vec<_> = auth.into_iter().collect();
    headers.push(("content-type", "application/json".to_owned()));
    request(
        method,
        &format!("/v1/{}", doc_name(database)),
        &headers,
        body,
    )
}

fn hook(source: Source, event: &str, delivery: &str, body: &[u8], signed: bool) -> Request<Body> {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (source.event_header().to_owned(), event.to_owned()),
    ];
    if let Some(h) = source.delivery_header() {
        headers.push((h.to_owned(), delivery.to_owned()));
    }
    let secret: &[u8] = if signed {
        WEBHOOK_SECRET.as_bytes()
    } else {
        b"the wrong secret"
    };
    headers.extend(signature_headers(source, secret, body, SystemClock.unix()));
    request(
        "POST",
        &format!("/hooks/{}", source.as_str()),
        &headers,
        body.to_vec(),
    )
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../events/tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn failed_build() -> Vec<u8> {
    let mut build: Value = serde_json::from_slice(&fixture("buildkite_build_finished")).unwrap();
    build["build"]["state"] = json!("failed");
    build["pipeline"]["slug"] = json!("payments");
    serde_json::to_vec(&build).unwrap()
}

// ===========================================================================
// a. refusals at authenticate: in protocol, audited

#[tokio::test]
async fn git_bad_credential_is_refused_with_a_basic_challenge_and_audited() {
    let h = Harness::start().await;
    for auth in [bearer(BAD_TOKEN), basic(BAD_TOKEN)] {
        let before = h.audit().len();
        let a = h.send(info_refs(Some(auth.clone()))).await;
        assert_git_plain(&a, 401, "git, bad credential");
        assert_eq!(
            a.header("www-authenticate"),
            Some("Basic realm=\"latchkey\"")
        );
        assert!(a.text().contains("token refused"), "{}", a.text());
        assert_refusal_audited(&h.audit_since(before), "git, bad credential");
    }
}

#[tokio::test]
async fn firestore_grpc_bad_credential_is_unauthenticated_and_audited() {
    let h = Harness::start().await;
    let before = h.audit().len();
    let a = h
        .send(grpc(
            "GetDocument",
            Some(bearer(BAD_TOKEN)),
            get_document_frame("(default)"),
        ))
        .await;
    assert_grpc_refusal(&a, 16, "gRPC, bad credential");
    assert_refusal_audited(&h.audit_since(before), "gRPC, bad credential");
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn firestore_rest_bad_credential_is_a_google_401_and_audited() {
    let h = Harness::start().await;
    let before = h.audit().len();
    let a = h
        .send(rest(
            "GET",
            "(default)",
            Some(bearer(BAD_TOKEN)),
            Body::empty(),
        ))
        .await;
    assert_google_error(&a, 401, "UNAUTHENTICATED", "REST, bad credential");
    assert_refusal_audited(&h.audit_since(before), "REST, bad credential");
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn token_exchange_bad_subject_token_is_invalid_grant_and_audited() {
    let h = Harness::start().await;
    let before = h.audit().len();
    let a = h.exchange(BAD_TOKEN, "git").await;
    let body = assert_oauth_error(&a, 400, "exchange, bad subject token");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_refusal_audited(&h.audit_since(before), "exchange, bad subject token");
}

#[tokio::test]
async fn webhook_bad_signature_is_json_401_and_audited() {
    let h = Harness::start().await;
    let body = fixture("gitea_push");
    let before = h.audit().len();
    let a = h
        .send(hook(Source::Gitea, "push", "d-bad-sig", &body, false))
        .await;
    assert_webhook_json(&a, 401, "gitea, bad signature");
    let after = h.audit_since(before);
    let r = assert_refusal_audited(&after, "gitea, bad signature");
    assert_eq!(r.context["source"], "gitea", "{r:?}");
}

/// The admin-API routes: token revocation, introspection, the audit query
/// and revocations, each with the request it takes.
fn admin_requests(auth: Option<(&'static str, String)>) -> Vec<(&'static str, Request<Body>)> {
    let headers: Vec<_> = auth.into_iter().collect();
    vec![
        (
            "/oauth2/revoke",
            form_post("/oauth2/revoke", &headers, &[("token", "x.y.z")]),
        ),
        (
            "/oauth2/introspect",
            form_post("/oauth2/introspect", &headers, &[("token", "x.y.z")]),
        ),
        (
            "/admin/audit",
            request("GET", "/admin/audit?limit=1", &headers, Body::empty()),
        ),
        ("/admin/revocations", {
            let mut h = headers.clone();
            h.push(("content-type", "application/json".to_owned()));
            request(
                "POST",
                "/admin/revocations",
                &h,
                r#"{"kind":"subject","value":"mallory"}"#,
            )
        }),
    ]
}

#[tokio::test]
async fn admin_routes_answer_a_bad_credential_with_oauth_invalid_token() {
    let h = Harness::start().await;
    for (route, req) in admin_requests(Some(bearer(BAD_TOKEN))) {
        let a = h.send(req).await;
        let body = assert_oauth_error(&a, 401, route);
        assert_eq!(body["error"], "invalid_token", "{route}: {body}");
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"latchkey\""),
            "{route}"
        );
    }
}

#[tokio::test]
async fn admin_routes_audit_a_bad_credential() {
    let h = Harness::start().await;
    for (route, req) in admin_requests(Some(bearer(BAD_TOKEN))) {
        let before = h.audit().len();
        let a = h.send(req).await;
        assert_oauth_error(&a, 401, route);
        assert_refusal_audited(&h.audit_since(before), route);
    }
}

/// A request with no credential at all is challenged in protocol and not
/// audited, on every route that takes a Latchkey token: git asks without
/// one first on every clone, and recording that would be noise bought by
/// anyone. (Webhooks have no such case: a missing signature is a bad one.)
#[tokio::test]
async fn a_missing_credential_is_challenged_in_protocol_and_not_audited() {
    let h = Harness::start().await;
    let before = h.audit().len();

    let a = h.send(info_refs(None)).await;
    assert_git_plain(&a, 401, "git, no credential");
    assert_eq!(
        a.header("www-authenticate"),
        Some("Basic realm=\"latchkey\"")
    );

    let a = h
        .send(grpc("GetDocument", None, get_document_frame("(default)")))
        .await;
    assert_grpc_refusal(&a, 16, "gRPC, no credential");

    let a = h.send(rest("GET", "(default)", None, Body::empty())).await;
    assert_google_error(&a, 401, "UNAUTHENTICATED", "REST, no credential");

    for (route, req) in admin_requests(None) {
        let a = h.send(req).await;
        let body = assert_oauth_error(&a, 401, route);
        assert_eq!(body["error"], "invalid_token", "{route}: {body}");
    }

    let after = h.audit_since(before);
    assert!(
        refusals(&after).is_empty(),
        "a missing credential is not audited: {after:#?}"
    );
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn webhook_without_a_signature_is_refused_and_audited() {
    let h = Harness::start().await;
    let body = fixture("gitea_push");
    let before = h.audit().len();
    let req = request(
        "POST",
        "/hooks/gitea",
        &[
            ("content-type", "application/json".to_owned()),
            ("x-gitea-event", "push".to_owned()),
            ("x-gitea-delivery", "d-unsigned".to_owned()),
        ],
        body,
    );
    let a = h.send(req).await;
    assert_webhook_json(&a, 401, "gitea, no signature");
    assert_refusal_audited(&h.audit_since(before), "gitea, no signature");
}

// ===========================================================================
// b. refusals at classify: in protocol, audited

#[tokio::test]
async fn firestore_grpc_malformed_message_is_invalid_argument_and_audited() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "documents").await;
    let cases: [(&str, Bytes); 3] = [
        ("a truncated frame", Bytes::from_static(b"\x00\x00\x00")),
        (
            "a message that is not protobuf",
            latchkey_documents::encode_frame(&[0x0a, 0x7f, b'p']),
        ),
        ("a name that is no document", {
            let req = proto::GetDocumentRequest {
                name: "projects/p/nonsense".to_owned(),
                ..Default::default()
            };
            latchkey_documents::encode_frame(&req.encode_to_vec())
        }),
    ];
    for (what, frame) in cases {
        let before = h.audit().len();
        let a = h
            .send(grpc("GetDocument", Some(bearer(&token)), frame))
            .await;
        assert_grpc_refusal(&a, 3, what);
        assert_refusal_audited(&h.audit_since(before), what);
    }
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn firestore_grpc_unknown_method_is_audited() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "documents").await;
    let before = h.audit().len();
    let a = h
        .send(grpc(
            "NoSuchMethod",
            Some(bearer(&token)),
            get_document_frame("(default)"),
        ))
        .await;
    assert_grpc_refusal(&a, 12, "gRPC, unknown method");
    assert_refusal_audited(&h.audit_since(before), "gRPC, unknown method");
}

#[tokio::test]
async fn firestore_rest_malformed_body_is_a_google_400_and_audited() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "documents").await;
    for (what, body) in [
        ("a body that is not JSON", "{not json"),
        ("fields that are not a map", r#"{"fields": 7}"#),
    ] {
        let before = h.audit().len();
        let a = h
            .send(rest("PATCH", "(default)", Some(bearer(&token)), body))
            .await;
        assert_google_error(&a, 400, "INVALID_ARGUMENT", what);
        assert_refusal_audited(&h.audit_since(before), what);
    }
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn token_exchange_malformed_requests_are_oauth_errors_and_audited() {
    let h = Harness::start().await;
    let id = h.identity("alice", &["developers"]);
    let cases = [
        (
            "an unknown grant type",
            form_post(
                "/oauth2/token",
                &[],
                &[("grant_type", "password"), ("subject_token", &id)],
            ),
            400,
            "unsupported_grant_type",
        ),
        (
            "no subject token",
            form_post(
                "/oauth2/token",
                &[],
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("audience", "git"),
                ],
            ),
            400,
            "invalid_request",
        ),
        (
            "a body that is not a form",
            request(
                "POST",
                "/oauth2/token",
                &[("content-type", "application/json".to_owned())],
                "{}",
            ),
            415,
            "invalid_request",
        ),
    ];
    for (what, req, status, code) in cases {
        let before = h.audit().len();
        let a = h.send(req).await;
        let body = assert_oauth_error(&a, status, what);
        assert_eq!(body["error"], code, "{what}: {body}");
        assert_refusal_audited(&h.audit_since(before), what);
    }
}

#[tokio::test]
async fn git_malformed_requests_are_audited() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "git").await;
    let cases = [
        (
            "an unknown Git path",
            request(
                "GET",
                &format!("{REPO}/no-such-endpoint"),
                &[bearer(&token)],
                Body::empty(),
            ),
        ),
        (
            "a push with the wrong content type",
            request(
                "POST",
                &format!("{REPO}/git-receive-pack"),
                &[bearer(&token), ("content-type", "text/plain".to_owned())],
                "0000",
            ),
        ),
        (
            "push commands that are not pkt-lines",
            receive_pack(bearer(&token), b"zzzz not a pkt-line".to_vec()),
        ),
    ];
    for (what, req) in cases {
        let before = h.audit().len();
        let a = h.send(req).await;
        assert!(a.status.is_client_error(), "{what}: {}", a.status);
        assert_refusal_audited(&h.audit_since(before), what);
    }
}

/// What Git answers a malformed request today: plain text, a 4xx, and a
/// message git prints.
#[tokio::test]
async fn git_malformed_requests_are_refused_in_plain_text() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "git").await;
    let a = h
        .send(request(
            "GET",
            &format!("{REPO}/no-such-endpoint"),
            &[bearer(&token)],
            Body::empty(),
        ))
        .await;
    assert_git_plain(&a, 400, "an unknown Git path");
    let a = h
        .send(receive_pack(
            bearer(&token),
            b"zzzz not a pkt-line".to_vec(),
        ))
        .await;
    assert!(a.status.is_client_error(), "{}", a.status);
    assert_git_plain(&a, a.status.as_u16(), "bad push commands");
    assert_eq!(refs_of(&h.repo()), "", "nothing was pushed");
}

#[tokio::test]
async fn admin_malformed_requests_are_audited() {
    let h = Harness::start().await;
    let admin = h.token("root", &["admins"], "latchkey").await;
    let auth = vec![bearer(&admin)];
    let cases = [
        (
            "/oauth2/revoke without a token",
            form_post("/oauth2/revoke", &auth, &[]),
        ),
        (
            "/oauth2/introspect without a token",
            form_post("/oauth2/introspect", &auth, &[]),
        ),
        (
            "/admin/audit with a bad limit",
            request("GET", "/admin/audit?limit=many", &auth, Body::empty()),
        ),
        ("/admin/revocations with a bad body", {
            let mut hd = auth.clone();
            hd.push(("content-type", "application/json".to_owned()));
            request("POST", "/admin/revocations", &hd, "{not json")
        }),
    ];
    for (what, req) in cases {
        let before = h.audit().len();
        let a = h.send(req).await;
        assert_oauth_error(&a, 400, what);
        assert_refusal_audited(&h.audit_since(before), what);
    }
}

/// What the admin routes answer a malformed request today.
#[tokio::test]
async fn admin_malformed_requests_are_oauth_invalid_request() {
    let h = Harness::start().await;
    let admin = h.token("root", &["admins"], "latchkey").await;
    let auth = vec![bearer(&admin)];
    let a = h.send(form_post("/oauth2/revoke", &auth, &[])).await;
    let body = assert_oauth_error(&a, 400, "revoke without a token");
    assert_eq!(body["error"], "invalid_request");
    let a = h
        .send(request(
            "GET",
            "/admin/audit?limit=many",
            &auth,
            Body::empty(),
        ))
        .await;
    let body = assert_oauth_error(&a, 400, "audit with a bad limit");
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn webhook_malformed_deliveries_are_audited() {
    let h = Harness::start().await;
    let cases = [
        (
            "a signed push that is not JSON",
            hook(Source::Gitea, "push", "d-bad-json", b"{not json", true),
        ),
        ("a signed push without a delivery id", {
            let body = fixture("gitea_push");
            let mut req = hook(Source::Gitea, "push", "", &body, true);
            req.headers_mut().remove("x-gitea-delivery");
            req
        }),
    ];
    for (what, req) in cases {
        let before = h.audit().len();
        let a = h.send(req).await;
        assert_webhook_json(&a, 400, what);
        assert_refusal_audited(&h.audit_since(before), what);
    }
}

/// What a webhook answers a malformed signed delivery today.
#[tokio::test]
async fn webhook_malformed_delivery_is_a_json_400() {
    let h = Harness::start().await;
    let a = h
        .send(hook(
            Source::Gitea,
            "push",
            "d-bad-json-2",
            b"{not json",
            true,
        ))
        .await;
    assert_webhook_json(&a, 400, "a signed push that is not JSON");
}

// ===========================================================================
// c. refusals at authorize: the deciding policy is named and audited

#[tokio::test]
async fn git_push_denied_by_policy_names_it_and_is_audited() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "git").await;
    let work = tempfile::tempdir().unwrap();
    let body = push_body(work.path(), "refs/heads/main");
    let before = h.audit().len();
    let a = h.send(receive_pack(basic(&token), body)).await;
    // report-status: git shows `! [remote rejected] main (... protect-main ...)`.
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.text().contains("ng refs/heads/main"), "{}", a.text());
    assert!(a.text().contains("protect-main"), "{}", a.text());
    assert_deny_audited(&h.audit_since(before), "protect-main", "git push to main");
    assert_eq!(refs_of(&h.repo()), "", "nothing was pushed");
}

#[tokio::test]
async fn firestore_grpc_write_denied_by_policy_names_it_and_is_audited() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "documents").await;
    let before = h.audit().len();
    let a = h
        .send(grpc(
            "UpdateDocument",
            Some(bearer(&token)),
            update_document_frame("prod"),
        ))
        .await;
    let message = assert_grpc_refusal(&a, 7, "gRPC write in prod");
    assert!(message.contains("protect-prod-documents"), "{message}");
    assert_deny_audited(
        &h.audit_since(before),
        "protect-prod-documents",
        "gRPC write in prod",
    );
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn firestore_rest_write_denied_by_policy_names_it_and_is_audited() {
    let h = Harness::start().await;
    let token = h.token("alice", &["developers"], "documents").await;
    let before = h.audit().len();
    let a = h
        .send(rest(
            "PATCH",
            "prod",
            Some(bearer(&token)),
            r#"{"fields": {"a": {"stringValue": "b"}}}"#,
        ))
        .await;
    let message = assert_google_error(&a, 403, "PERMISSION_DENIED", "REST write in prod");
    assert!(message.contains("protect-prod-documents"), "{message}");
    assert_deny_audited(
        &h.audit_since(before),
        "protect-prod-documents",
        "REST write in prod",
    );
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn token_exchange_denied_by_policy_names_it_and_is_audited() {
    let h = Harness::start().await;
    let id = h.identity("ivan", &["developers", "interns"]);
    let before = h.audit().len();
    let a = h.exchange(&id, "git").await;
    let body = assert_oauth_error(&a, 400, "an intern's exchange");
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("test-forbid-interns-mint"),
        "{body}"
    );
    assert_deny_audited(
        &h.audit_since(before),
        "test-forbid-interns-mint",
        "an intern's exchange",
    );
}

#[tokio::test]
async fn admin_routes_denied_by_policy_name_it_and_are_audited() {
    let h = Harness::start().await;
    let token = h.token("carol", &["contractors"], "latchkey").await;
    for (route, req) in admin_requests(Some(bearer(&token))) {
        let before = h.audit().len();
        let a = h.send(req).await;
        let body = assert_oauth_error(&a, 403, route);
        assert_eq!(body["error"], "access_denied", "{route}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("test-forbid-contractors-admin"),
            "{route}: {body}"
        );
        assert_deny_audited(
            &h.audit_since(before),
            "test-forbid-contractors-admin",
            route,
        );
    }
}

#[tokio::test]
async fn webhook_rule_actions_are_decided_by_cedar() {
    let h = Harness::start().await;
    let before = h.audit().len();
    let a = h
        .send(hook(
            Source::Buildkite,
            "build.finished",
            "",
            &failed_build(),
            true,
        ))
        .await;
    let after = h.audit_since(before);
    assert_deny_audited(&after, "test-forbid-service", "a rule-driven freeze");
    assert!(
        a.text().contains("test-forbid-service"),
        "the answer names the deciding policy: {}",
        a.text()
    );
    let revocations = h.revocations().await;
    assert!(
        revocations.is_empty(),
        "nothing was frozen: {revocations:?}"
    );
}

// ===========================================================================
// d. an unwritable audit log refuses on every route, and nothing is acted on

#[tokio::test]
async fn an_unwritable_audit_log_refuses_git_and_nothing_is_pushed() {
    let Some(h) = Harness::start_unwritable().await else {
        return;
    };
    let token = h.token("alice", &["developers"], "git").await;

    let a = h.send(info_refs(Some(bearer(BAD_TOKEN)))).await;
    assert_git_plain(&a, 503, "git, bad credential");

    // A fetch: the decision cannot be recorded, git shows the error.
    let a = h.send(info_refs(Some(basic(&token)))).await;
    assert!(
        a.status == StatusCode::SERVICE_UNAVAILABLE
            || (a.status == StatusCode::OK && a.text().contains("ERR ")),
        "{} {}",
        a.status,
        a.text()
    );
    assert!(a.text().contains("audit log"), "{}", a.text());

    // A push the policy allows is refused, and the ref is not created.
    let work = tempfile::tempdir().unwrap();
    let a = h
        .send(receive_pack(
            basic(&token),
            push_body(work.path(), "refs/heads/feature"),
        ))
        .await;
    assert!(
        a.status == StatusCode::SERVICE_UNAVAILABLE
            || (a.status == StatusCode::OK && a.text().contains("ng refs/heads/feature")),
        "{} {}",
        a.status,
        a.text()
    );
    assert!(a.text().contains("audit log"), "{}", a.text());
    assert_eq!(refs_of(&h.repo()), "", "nothing was pushed");
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_firestore_grpc_and_rest() {
    let Some(h) = Harness::start_unwritable().await else {
        return;
    };
    let token = h.token("alice", &["developers"], "documents").await;
    for auth in [bearer(BAD_TOKEN), bearer(&token)] {
        let a = h
            .send(grpc(
                "GetDocument",
                Some(auth.clone()),
                get_document_frame("(default)"),
            ))
            .await;
        let message = assert_grpc_refusal(&a, 14, "gRPC read");
        assert!(message.contains("audit log"), "{message}");

        let a = h
            .send(rest("GET", "(default)", Some(auth.clone()), Body::empty()))
            .await;
        let message = assert_google_error(&a, 503, "UNAVAILABLE", "REST read");
        assert!(message.contains("audit log"), "{message}");

        let a = h
            .send(rest(
                "PATCH",
                "(default)",
                Some(auth),
                r#"{"fields": {"a": {"stringValue": "b"}}}"#,
            ))
            .await;
        assert_google_error(&a, 503, "UNAVAILABLE", "REST write");
    }
    assert!(!h.firestore.contacted(), "nothing reached Firestore");
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_token_exchange() {
    let Some(h) = Harness::start_unwritable().await else {
        return;
    };
    // The subject is valid: the refusal is the audit log's, not the token's.
    let id = h.identity("alice", &["developers"]);
    let a = h.exchange(&id, "git").await;
    let body = assert_oauth_error(&a, 503, "exchange");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(body.get("access_token").is_none(), "{body}");

    let a = h.exchange(BAD_TOKEN, "git").await;
    assert_oauth_error(&a, 503, "exchange, bad subject token");
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_revoke_introspect_and_admin() {
    let Some(h) = Harness::start_unwritable().await else {
        return;
    };
    let admin = h.token("root", &["admins"], "latchkey").await;
    for (route, req) in admin_requests(Some(bearer(&admin))) {
        let a = h.send(req).await;
        let body = assert_oauth_error(&a, 503, route);
        assert_eq!(body["error"], "temporarily_unavailable", "{route}: {body}");
    }
    // Nothing was revoked: the subject's tokens still verify.
    let revocations = h.revocations().await;
    assert!(revocations.is_empty(), "{revocations:?}");
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_admin_bad_credentials_as_unavailable() {
    let Some(h) = Harness::start_unwritable().await else {
        return;
    };
    for (route, req) in admin_requests(Some(bearer(BAD_TOKEN))) {
        let a = h.send(req).await;
        assert_oauth_error(&a, 503, route);
    }
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_webhooks_and_nothing_is_frozen() {
    let Some(h) = Harness::start_unwritable().await else {
        return;
    };
    let a = h
        .send(hook(
            Source::Gitea,
            "push",
            "d-full-1",
            &fixture("gitea_push"),
            true,
        ))
        .await;
    let body = assert_webhook_json(&a, 503, "gitea, signed");
    assert!(body["error"].as_str().unwrap().contains("audit log"));

    let a = h
        .send(hook(
            Source::Gitea,
            "push",
            "d-full-2",
            &fixture("gitea_push"),
            false,
        ))
        .await;
    assert_webhook_json(&a, 503, "gitea, bad signature");

    let a = h
        .send(hook(
            Source::Buildkite,
            "build.finished",
            "",
            &failed_build(),
            true,
        ))
        .await;
    assert_webhook_json(&a, 503, "buildkite, failed build");
    let revocations = h.revocations().await;
    assert!(
        revocations.is_empty(),
        "nothing was frozen: {revocations:?}"
    );
}

// ===========================================================================
// e. x-request-id, where today's code sets one, names the audit records

#[tokio::test]
async fn git_and_firestore_answers_carry_the_request_id_of_their_records() {
    let h = Harness::start().await;
    let git_token = h.token("alice", &["developers"], "git").await;
    let docs_token = h.token("alice", &["developers"], "documents").await;

    let before = h.audit().len();
    let a = h.send(info_refs(Some(basic(&git_token)))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let id = a.request_id().expect("git answers carry x-request-id");
    assert!(
        h.audit_since(before).iter().any(|e| e.request_id == id),
        "git: the request id names its decision record"
    );

    let cases = [
        (
            "gRPC, bad credential",
            grpc(
                "GetDocument",
                Some(bearer(BAD_TOKEN)),
                get_document_frame("(default)"),
            ),
        ),
        (
            "gRPC, denied",
            grpc(
                "UpdateDocument",
                Some(bearer(&docs_token)),
                update_document_frame("prod"),
            ),
        ),
        (
            "REST, bad credential",
            rest("GET", "(default)", Some(bearer(BAD_TOKEN)), Body::empty()),
        ),
        (
            "REST, malformed",
            rest("PATCH", "(default)", Some(bearer(&docs_token)), "{not json"),
        ),
    ];
    for (what, req) in cases {
        let before = h.audit().len();
        let a = h.send(req).await;
        let id = a
            .request_id()
            .unwrap_or_else(|| panic!("{what}: no x-request-id"));
        assert!(
            h.audit_since(before).iter().any(|e| e.request_id == id),
            "{what}: the request id names its record"
        );
    }
    // A refusal before any record still carries one.
    let a = h.send(rest("GET", "(default)", None, Body::empty())).await;
    assert!(a.request_id().is_some(), "REST, no credential");
}

/// Where today's code sets no `x-request-id`: the token service, the admin
/// API, webhooks, and Git's refusals before the Git adapter. Pinned so the
/// refactor (request ids in the server layer) notices when it adds them.
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let h = Harness::start().await;
    let answers = [
        ("git 401", h.send(info_refs(Some(bearer(BAD_TOKEN)))).await),
        ("exchange", h.exchange(BAD_TOKEN, "git").await),
        (
            "admin",
            h.send(request::<&str>("GET", "/admin/audit", &[], Body::empty()))
                .await,
        ),
        (
            "webhook",
            h.send(hook(Source::Gitea, "push", "d-id", b"{}", false))
                .await,
        ),
    ];
    for (what, a) in answers {
        assert!(a.request_id().is_some(), "{what}: no x-request-id");
    }
}
