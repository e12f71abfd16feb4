//! A gateway on a loopback port, in front of the real OIDC provider harness.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_audit::AuditRecord;
use latchkey_core::{Clock, FakeClock, SharedClock, SystemClock};
use latchkey_gateway::config::Config;
use latchkey_gateway::{Gateway, StartOptions};
#[allow(unused_imports)] // each test binary uses a subset
pub use latchkey_testkit::forge::{b64, rsa_key, sign_rs256};
use latchkey_testkit::{OidcProvider, client_id};
use serde_json::{Value, json};

pub const ALGS: [&str; 5] = ["RS256", "PS256", "ES256", "ES384", "EdDSA"];
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TT_ID: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TT_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

pub fn now() -> u64 {
    SystemClock.unix()
}

/// Options for [`TestGateway::start`].
#[derive(Default)]
pub struct Opts {
    /// Extra TOML lines inside the `[[issuers]]` table.
    pub issuer_extra: String,
    /// Policy files to write instead of the starter set.
    pub policies: Option<Vec<(String, String)>>,
    /// Make the audit log unwritable: `audit/audit.log` is a symlink to
    /// `/dev/full`, so every write fails with ENOSPC (a real device, no fake).
    pub audit_on_full_device: bool,
    /// Extra TOML appended to the config (e.g. a `[firestore]` table).
    pub extra_toml: String,
    /// Serve HTTPS with this PEM certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Extra TOML lines inside the `[keys]` table (e.g. `publish_ahead`).
    pub keys_extra: String,
    /// Serve on this listener (bound beforehand, so a test can register
    /// the gateway's URL somewhere before it starts).
    pub listener: Option<tokio::net::TcpListener>,
}

/// A running gateway: its data directory, clock and base URL.
pub struct TestGateway {
    pub gw: Arc<Gateway>,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub clock: Arc<FakeClock>,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    key_watch: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.server.abort();
        self.key_watch.abort();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

impl TestGateway {
    pub async fn start(op: &OidcProvider, opts: Opts) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let policy_dir = data.join("policies");
        std::fs::create_dir_all(&policy_dir).unwrap();
        let policies = opts.policies.unwrap_or_else(|| {
            latchkey_policy::starter_policy_files()
                .into_iter()
                .map(|(n, t)| (n.to_owned(), t.to_owned()))
                .collect()
        });
        for (name, text) in policies {
            std::fs::write(policy_dir.join(name), text).unwrap();
        }
        std::fs::write(
            policy_dir.join("entities.json"),
            latchkey_policy::STARTER_ENTITIES,
        )
        .unwrap();
        let repo = data.join("repos").join("acme").join("app.git");
        std::fs::create_dir_all(&repo).unwrap();
        let out = std::process::Command::new("git")
            .args(["init", "--bare", "--quiet"])
            .arg(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git init --bare failed: {out:?}");

        if opts.audit_on_full_device {
            std::fs::create_dir_all(data.join("audit")).unwrap();
            std::os::unix::fs::symlink("/dev/full", data.join("audit").join("audit.log")).unwrap();
        }
        let listener = match opts.listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let master = STANDARD.encode([7u8; 32]);
        let audiences: Vec<String> = ALGS.iter().map(|a| format!("{:?}", client_id(a))).collect();
        let toml = format!(
            r#"
[server]
listen = "{addr}"
public_url = "{base}"
data_dir = {data:?}

[keys]
master_key = {{ value = "{master}" }}
{keys_extra}

[[issuers]]
name = "test-idp"
issuer = "{issuer}"
audiences = [{audiences}]
groups_claim = "groups"
{extra}

[git.upstreams.local]
local_root = "repos"

{extra_toml}
"#,
            extra_toml = opts.extra_toml,
            keys_extra = opts.keys_extra,
            data = data.display().to_string(),
            issuer = op.issuer(),
            audiences = audiences.join(", "),
            extra = opts.issuer_extra,
        );
        let config = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let clock = Arc::new(FakeClock::at(now()));
        let shared: SharedClock = clock.clone();
        let gw = Gateway::start(config, StartOptions::default(), shared)
            .await
            .unwrap();
        // As `latchkey serve` does: rotations made in the store are picked up.
        let key_watch = latchkey_gateway::spawn_key_watch(gw.clone());
        let tls = opts.tls.as_ref().map(|(cert, key)| {
            latchkey_gateway::tls_server_config(&latchkey_gateway::config::TlsConfig {
                cert_file: cert.clone(),
                key_file: key.clone(),
            })
            .unwrap()
        });
        // As `latchkey serve` does: the gateway's router and limits, and
        // its connections counted in `/metrics`.
        let served = gw.clone();
        let server = tokio::spawn(async move {
            latchkey_gateway::serve_gateway(listener, served, tls, std::future::pending())
                .await
                .unwrap();
        });
        TestGateway {
            gw,
            base,
            dir,
            clock,
            http: http(),
            server,
            key_watch,
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.data().join("audit")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a form to the token endpoint; returns status and JSON body.
    pub async fn token_form(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/oauth2/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let cache = resp
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            cache.as_deref(),
            Some("no-store"),
            "token responses are no-store"
        );
        (status, resp.json().await.unwrap())
    }

    /// Exchanges `id_token` for a Latchkey token for `audience`.
    pub async fn exchange(&self, id_token: &str, audience: &str) -> (u16, Value) {
        self.token_form(&[
            ("grant_type", GRANT),
            ("subject_token", id_token),
            ("subject_token_type", TT_ID),
            ("audience", audience),
        ])
        .await
    }

    /// Exchanges and insists on success; returns the access token.
    pub async fn exchange_ok(&self, id_token: &str, audience: &str) -> String {
        let (status, body) = self.exchange(id_token, audience).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A Latchkey token for `sub` in `groups`, for `audience`.
    pub async fn token_for(
        &self,
        op: &OidcProvider,
        sub: &str,
        groups: &[&str],
        audience: &str,
    ) -> String {
        let id = op
            .mint("RS256", sub, None, json!({ "groups": groups }), 300)
            .await;
        self.exchange_ok(&id, audience).await
    }

    /// A token for audience `latchkey` held by an administrator.
    pub async fn admin_token(&self, op: &OidcProvider) -> String {
        self.token_for(op, "root", &["admins"], "latchkey").await
    }

    /// Every audit record written so far (read from the log file).
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        latchkey_audit::read_records(&self.audit_dir(), 0)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The number of audit records written so far.
    pub fn audit_len(&self) -> usize {
        self.audit_records().len()
    }

    pub async fn git_info_refs(&self, auth: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.url("/git/local/acme/app.git/info/refs?service=git-upload-pack"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap()
    }
}

pub fn basic(token: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("x-token:{token}")))
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Decodes a JWT part without verifying anything.
pub fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A compact JWS with any header and claims and a junk (or empty) signature.
pub fn unsigned(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

/// The JWKS the gateway publishes.
pub async fn jwks(tg: &TestGateway) -> Value {
    tg.http
        .get(tg.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies a Latchkey token's signature and standard claims against the
/// published JWKS, independently of the gateway's own verifier.
pub fn verify_with_jwks(token: &str, jwks: &Value, iss: &str, aud: &str) -> Value {
    let kid = jwt_part(token, 0)["kid"].as_str().unwrap().to_owned();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid `{kid}` is not in the JWKS {jwks}"));
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[aud]);
    v.set_issuer(&[iss]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("token does not verify against the JWKS: {e}"))
        .claims
}

/// A Firestore client scenario's report, failing the test (with the
/// client's stderr) if any step failed.
pub fn run_ok(
    report: Result<latchkey_testkit::firestore::ScenarioReport, impl std::fmt::Display>,
) -> latchkey_testkit::firestore::ScenarioReport {
    let report = report.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.failed().is_empty(),
        "{} scenario in mode {} had failing steps:\n{}\nstderr:\n{}",
        report.client,
        report.mode,
        report.summary(),
        report.stderr
    );
    report
}

/// Same steps, in the same order, with the same normalized results.
pub fn assert_same_steps(
    reference: &latchkey_testkit::firestore::ScenarioReport,
    other: &latchkey_testkit::firestore::ScenarioReport,
) {
    use latchkey_testkit::firestore::ScenarioReport;
    let names = |r: &ScenarioReport| r.steps.iter().map(|s| s.step.clone()).collect::<Vec<_>>();
    assert_eq!(names(reference), names(other));
    for (a, b) in reference.steps.iter().zip(&other.steps) {
        assert_eq!(
            a.result, b.result,
            "step `{}`: {} ({}) and {} ({}) disagree",
            a.step, reference.client, reference.mode, other.client, other.mode
        );
    }
}

/// A Latchkey token for audience `documents` for alice (a developer),
/// exchanged over HTTPS at `https://{tls_target}` trusting only `ca`.
pub async fn documents_token_over_tls(op: &OidcProvider, tls_target: &str, ca: &Path) -> String {
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap()])
        .build()
        .unwrap();
    let id = op
        .mint(
            "RS256",
            "alice",
            None,
            json!({"groups": ["developers"]}),
            300,
        )
        .await;
    let resp = https
        .post(format!("https://{tls_target}/oauth2/token"))
        .form(&[
            ("grant_type", GRANT),
            ("subject_token", id.as_str()),
            ("subject_token_type", TT_ID),
            ("audience", "documents"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}
