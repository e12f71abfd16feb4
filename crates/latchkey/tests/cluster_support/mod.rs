//! Three (or more) `latchkey serve` processes over one real PostgreSQL
//! (`DATABASE_URL` when set, else a throwaway `initdb` cluster on a free
//! loopback port), with what the cluster tests and the cluster benchmark
//! drive them with: tokens, revocations, signed webhooks, SIGKILL.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine as _;
use latchkey_testkit::postgres::PostgresServer;
use serde_json::Value;

use crate::common::{BIN, free_port, http_status};

/// The environment variable the node configs read the database URL from.
pub const DATABASE_ENV: &str = "LATCHKEY_TEST_DATABASE_URL";

/// One gateway node.
pub struct Node {
    pub name: String,
    pub addr: String,
    pub config: PathBuf,
    pub data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// The shared directory, the database and the nodes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub pg: PostgresServer,
    pub nodes: Vec<Node>,
    /// The URL every node issues tokens as (node 0's address: the dev
    /// identity provider runs there).
    pub public_url: String,
    pub http: reqwest::Client,
    /// The Gogs webhook secret.
    pub gogs_secret: String,
}

/// What the nodes share: policies, master key, repositories, the Gogs secret.
fn shared_files(dir: &Path) -> String {
    let init = dir.join("init");
    let out = Command::new(BIN)
        .arg("init")
        .arg(&init)
        .stdin(Stdio::null())
        .output()
        .expect("latchkey init");
    assert!(
        out.status.success(),
        "latchkey init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = dir.join("repos/acme/app.git");
    std::fs::create_dir_all(&repo).unwrap();
    let st = Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    let secret = "cluster-test-gogs-secret".to_owned();
    std::fs::write(dir.join("gogs.secret"), &secret).unwrap();
    secret
}

fn node_config(dir: &Path, i: usize, addr: &str, public_url: &str, extra: &str) -> String {
    let d = dir.display();
    let issuer = if i == 0 {
        "[dev_issuer]\nenabled = true\nallow_in_serve = true\n".to_owned()
    } else {
        format!(
            "[[issuers]]\nname = \"dev\"\nissuer = \"{public_url}/dev-idp\"\naudiences = [\"latchkey\"]\n\
             groups_claim = \"groups\"\ndev = true\n"
        )
    };
    format!(
        r#"[server]
listen = "{addr}"
public_url = "{public_url}"
data_dir = "{d}/node-{i}"

[store]
backend = "postgres"
url = {{ env = "{DATABASE_ENV}" }}
node = "gw-{i}"
{extra}

[keys]
master_key = {{ file = "{d}/init/data/master.key" }}

[tokens]
audiences = ["git", "documents", "latchkey"]

[policy]
dir = "{d}/init/data/policies"

[audit]
checkpoint_interval = "1s"

[git.upstreams.local]
local_root = "{d}/repos"

[documents]
backend = "embedded"
project = "demo"
databases = {{ "(default)" = "dev" }}

[webhooks.gogs]
secret = {{ file = "{d}/gogs.secret" }}

[[rules]]
name = "record-pushes"
on = "push"
[rules.write_document]
database = "(default)"
path = "pushes/{{commit}}"
fields = {{ repository = "{{repository}}", pusher = "{{pusher.login}}" }}

{issuer}"#
    )
}

impl Cluster {
    /// Starts PostgreSQL and `n` nodes, node 0 first (it serves the dev
    /// identity provider the others trust), with `store_extra` added to
    /// every node's `[store]` table.
    /// `None` when no PostgreSQL can run here (said as SKIPPED, or a
    /// failure when the peer is required).
    pub async fn start(n: usize, store_extra: &str) -> Option<Cluster> {
        let pg = PostgresServer::start().await.ok()?;
        let dir = tempfile::tempdir().unwrap();
        let gogs_secret = shared_files(dir.path());
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let public_url = format!("http://{}", addrs[0]);
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let config = dir.path().join(format!("node-{i}.toml"));
            std::fs::write(
                &config,
                node_config(dir.path(), i, addr, &public_url, store_extra),
            )
            .unwrap();
            nodes.push(Node {
                name: format!("gw-{i}"),
                addr: addr.clone(),
                config,
                data: dir.path().join(format!("node-{i}")),
                log: dir.path().join(format!("node-{i}.log")),
                child: None,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(16)
            .build()
            .unwrap();
        let mut cluster = Cluster {
            dir,
            pg,
            nodes,
            public_url,
            http,
            gogs_secret,
        };
        for i in 0..n {
            cluster.start_node(i);
        }
        Some(cluster)
    }

    /// `latchkey ARGS` with the database URL in the environment.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .env(DATABASE_ENV, self.pg.url())
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run latchkey")
    }

    /// Starts node `i` (again) and waits until it answers `/admin/health`.
    pub fn start_node(&mut self, i: usize) {
        let url = self.pg.url();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&node.config)
            .env(DATABASE_ENV, url)
            .env("LATCHKEY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn latchkey serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(&node.addr, "/admin/health") != Some(200) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("node {i} exited ({status}):\n{}", node.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "node {i} did not answer /admin/health within 30 s:\n{}",
                    node.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        node.child = Some(child);
    }

    /// SIGKILL: no shutdown, no final checkpoint.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and a clean exit (a final checkpoint).
    pub fn stop_node(&mut self, i: usize) {
        let Some(mut child) = self.nodes[i].child.take() else {
            return;
        };
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "node {i} exited with {status}:\n{}",
                    self.nodes[i].log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not stop within 15 s:\n{}",
                self.nodes[i].log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An ID token from node 0's dev identity provider (signed locally with
    /// its key, as `latchkey dev token` does).
    pub fn id_token(&self, user: &str, groups: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(["dev", "token", "--data"])
            .arg(&self.nodes[0].data)
            .args(["--url", &self.public_url, "--user", user])
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null());
        for g in groups {
            cmd.args(["--group", g]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "dev token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A Latchkey token for `audience`, exchanged at node `i`.
    pub async fn exchange(&self, i: usize, id_token: &str, audience: &str) -> String {
        let form = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", id_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", audience),
        ];
        let resp = self
            .http
            .post(format!("{}/oauth2/token", self.nodes[i].url()))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "exchange at node {i}: {status} {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `POST /admin/revocations` at node `i`; the status.
    pub async fn revoke(&self, i: usize, admin: &str, kind: &str, value: &str) -> u16 {
        self.http
            .post(format!("{}/admin/revocations", self.nodes[i].url()))
            .bearer_auth(admin)
            .json(&serde_json::json!({ "kind": kind, "value": value, "reason": "cluster test" }))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// `GET /admin/keys` at node `i` with `token`: 200 for a live admin
    /// token, 401 for a revoked one, 503 from a `strict` node that cannot
    /// follow revocations, 0 when nothing answers. Also the request id.
    pub async fn probe(&self, i: usize, token: &str) -> (u16, String) {
        match self
            .http
            .get(format!("{}/admin/keys", self.nodes[i].url()))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) => {
                let id = r
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                (r.status().as_u16(), id)
            }
            Err(_) => (0, String::new()),
        }
    }

    /// The `revocations` component of node `i`'s `/readyz`.
    pub async fn revocation_view(&self, i: usize) -> Value {
        let body: Value = self
            .http
            .get(format!("{}/readyz", self.nodes[i].url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == "revocations")
            .cloned()
            .unwrap_or_else(|| panic!("no revocations component in {body}"))
    }

    /// A signed Gogs push delivery to node `i`; the status and body.
    pub async fn gogs_push(&self, i: usize, delivery: &str, commit: &str) -> (u16, Value) {
        let body = serde_json::json!({
            "ref": "refs/heads/feature",
            "before": "0000000000000000000000000000000000000000",
            "after": commit,
            "repository": { "full_name": "acme/app" },
            "pusher": { "login": "alice" },
        })
        .to_string();
        let key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.gogs_secret.as_bytes());
        let sig = hex::encode(aws_lc_rs::hmac::sign(&key, body.as_bytes()).as_ref());
        let resp = self
            .http
            .post(format!("{}/hooks/gogs", self.nodes[i].url()))
            .header("X-Gogs-Event", "push")
            .header("X-Gogs-Delivery", delivery)
            .header("X-Gogs-Signature", sig)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `latchkey audit query --json` with `args`, through node `i`'s config.
    pub fn audit_query(&self, i: usize, args: &[&str]) -> Vec<Value> {
        let config = self.nodes[i].config.display().to_string();
        let mut all = vec!["audit", "query", "--config", &config, "--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "audit query: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `latchkey audit verify --config node-i.toml`: success and output.
    pub fn audit_verify(&self, i: usize) -> (bool, String) {
        let config = self.nodes[i].config.display().to_string();
        let out = self.cli(&["audit", "verify", "--config", &config]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The `jti` of a Latchkey token (its payload is not checked here).
pub fn jti(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// The `q`-quantile of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
