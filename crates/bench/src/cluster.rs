//! `latchkey-bench cluster`: several `latchkey serve` processes over one
//! PostgreSQL, measured side by side with a single node on SQLite.
//!
//! - `cluster_revocation_propagation`: three nodes; each revocation is made
//!   on node k%3 and, once it answered 201, the two other nodes are polled
//!   (every ~2 ms) until they refuse the revoked token. The node that made it
//!   is polled the same way: it is the baseline (it enforces before it
//!   answers, so its figure is one probe's round trip).
//! - `cluster_token_exchanges`: audited RFC 8693 exchanges per second over a
//!   fixed number of keep-alive connections, for (a) one node on SQLite,
//!   (b) one node on PostgreSQL, (c) three nodes on PostgreSQL with the
//!   connections spread round robin; the order rotates over rounds and the
//!   medians are printed. The CPU time of every gateway process and of the
//!   whole PostgreSQL server (postmaster and backends) is read from `/proc`
//!   around each timed run, and the rows each exchange leaves in PostgreSQL
//!   are counted, to support the scaling model in bench/README.md.
//!
//! The harness is the bench's own (the facts come from
//! `crates/latchkey/tests/cluster_support`); the binary is `LATCHKEY_BIN`,
//! which `bench/run` points at the release build.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use latchkey_testkit::postgres::PostgresServer;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The environment variable the PostgreSQL nodes read their database URL from.
const DATABASE_ENV: &str = "LATCHKEY_BENCH_DATABASE_URL";

/// How long after a timed run the CPU and row counters are read: the audit
/// index rows are written to PostgreSQL asynchronously, and their cost
/// belongs to the exchanges that caused them.
const SETTLE: Duration = Duration::from_millis(1500);

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `latchkey` binary: `LATCHKEY_BIN`, else the one beside this binary.
fn latchkey_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("LATCHKEY_BIN") {
        return Ok(bin.into());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("latchkey");
    anyhow::ensure!(
        bin.is_file(),
        "no LATCHKEY_BIN and no `{}`: run through bench/run",
        bin.display()
    );
    Ok(bin)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(ppid, utime + stime, cutime + cstime)` of a process, in ticks.
fn proc_stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on: ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some((
        u32::try_from(num(4)?).ok()?,
        num(14)? + num(15)?,
        num(16)? + num(17)?,
    ))
}

/// The PostgreSQL server's postmaster: the process started with `-p PORT`
/// and `-D DIR` (backends rename themselves, so only it matches).
fn find_postmaster(port: u16) -> Option<u32> {
    let port = port.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let has_d = args.iter().any(|a| *a == b"-D");
        let has_port = args
            .windows(2)
            .any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        let is_postgres = args
            .first()
            .is_some_and(|a| a.ends_with(b"postgres") && !a.ends_with(b"pg_ctl"));
        if has_d && has_port && is_postgres {
            return Some(pid);
        }
    }
    None
}

/// CPU seconds of the postmaster, every live child (backends, WAL writer,
/// checkpointer, ...) and the children it already reaped.
fn postgres_cpu_ticks(postmaster: u32) -> u64 {
    let Some((_, own, reaped)) = proc_stat(postmaster) else {
        return 0;
    };
    let mut total = own + reaped;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, t, _)) = proc_stat(pid)
                && ppid == postmaster
            {
                total += t;
            }
        }
    }
    total
}

/// PostgreSQL for one setup, and what is needed to measure it.
struct Pg {
    server: PostgresServer,
    /// `None` for a database in `DATABASE_URL`'s server (not ours to measure).
    postmaster: Option<u32>,
}

impl Pg {
    async fn start() -> Result<Option<Pg>> {
        let Ok(server) = PostgresServer::start().await else {
            return Ok(None);
        };
        let port = url_port(server.url());
        let postmaster = if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
            None
        } else {
            port.and_then(find_postmaster)
        };
        Ok(Some(Pg { server, postmaster }))
    }

    /// Rows in each table of the database (exact `count(*)`: the statistics
    /// views lag by seconds).
    async fn row_counts(&self) -> Result<BTreeMap<String, i64>> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(self.server.url()).await?;
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT schemaname::text, relname::text FROM pg_stat_user_tables ORDER BY 1, 2",
        )
        .fetch_all(&mut conn)
        .await?;
        let mut out = BTreeMap::new();
        for (schema, table) in tables {
            let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let sql = format!("SELECT count(*) FROM {}.{}", quote(&schema), quote(&table));
            let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await?;
            out.insert(table, n);
        }
        let _ = conn.close().await;
        Ok(out)
    }
}

fn url_port(url: &str) -> Option<u16> {
    let after_at = url.rsplit('@').next()?;
    let host_port = after_at.split('/').next()?;
    host_port.rsplit(':').next()?.parse().ok()
}

/// One `latchkey serve` process.
struct Node {
    addr: SocketAddr,
    data: PathBuf,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A named set of nodes, with their database if they have one.
struct Setup {
    label: &'static str,
    nodes: Vec<Node>,
    pg: Option<Pg>,
    /// The `urn:ietf:...:token-exchange` form every load connection posts.
    exchange_form: String,
}

/// The directory the setups share: `latchkey init` output (master key,
/// starter policies).
struct Shared {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Shared {
    fn new() -> Result<Shared> {
        let bin = latchkey_bin()?;
        // On the disk the bench runs from (bench/results), not a tmpfs: the
        // audit fsync is part of what an exchange costs.
        let dir = tempfile::Builder::new()
            .prefix("latchkey-bench-cluster")
            .tempdir_in(".")?;
        let out = Command::new(&bin)
            .arg("init")
            .arg(dir.path().join("init"))
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", bin.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "latchkey init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Shared { dir, bin })
    }

    fn config(
        &self,
        label: &str,
        i: usize,
        addr: SocketAddr,
        public_url: &str,
        pg: bool,
    ) -> String {
        let d = self.dir.path().display();
        let store = if pg {
            format!(
                "[store]\nbackend = \"postgres\"\nurl = {{ env = \"{DATABASE_ENV}\" }}\nnode = \"{label}-{i}\"\n"
            )
        } else {
            String::new()
        };
        let issuer = if i == 0 {
            "[dev_issuer]\nenabled = true\nallow_in_serve = true\n".to_owned()
        } else {
            format!(
                "[[issuers]]\nname = \"dev\"\nissuer = \"{public_url}/dev-idp\"\naudiences = [\"latchkey\"]\n\
                 groups_claim = \"groups\"\ndev = true\n"
            )
        };
        format!(
            "[server]\nlisten = \"{addr}\"\npublic_url = \"{public_url}\"\ndata_dir = \"{d}/{label}-node-{i}\"\n\n\
             {store}\n[keys]\nmaster_key = {{ file = \"{d}/init/data/master.key\" }}\n\n\
             [tokens]\naudiences = [\"git\", \"documents\", \"latchkey\"]\n\n\
             [policy]\ndir = \"{d}/init/data/policies\"\n\n{issuer}"
        )
    }

    /// Starts `n` nodes (node 0 first: it serves the dev identity provider
    /// the others trust), on `pg` when given, else each on its own SQLite.
    async fn start(&self, label: &'static str, n: usize, pg: Option<Pg>) -> Result<Setup> {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| {
                format!("127.0.0.1:{}", latchkey_testkit::free_port())
                    .parse()
                    .context("loopback address")
            })
            .collect::<Result<_>>()?;
        let public_url = format!("http://{}", addrs[0]);
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let config = self.dir.path().join(format!("{label}-node-{i}.toml"));
            std::fs::write(
                &config,
                self.config(label, i, *addr, &public_url, pg.is_some()),
            )?;
            let log = self.dir.path().join(format!("{label}-node-{i}.log"));
            let logf = std::fs::File::create(&log)?;
            let mut cmd = Command::new(&self.bin);
            cmd.args(["serve", "--config"])
                .arg(&config)
                .env("LATCHKEY_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(logf.try_clone()?)
                .stderr(logf);
            if let Some(pg) = &pg {
                cmd.env(DATABASE_ENV, pg.server.url());
            }
            let child = cmd.spawn().context("spawn latchkey serve")?;
            let mut node = Node {
                addr: *addr,
                data: self.dir.path().join(format!("{label}-node-{i}")),
                child,
            };
            wait_healthy(&mut node, &log).await?;
            nodes.push(node);
        }
        let id_token = self.id_token(&nodes[0], &public_url, "alice", "developers")?;
        Ok(Setup {
            label,
            nodes,
            pg,
            exchange_form: exchange_form(&id_token, "git"),
        })
    }

    /// An ID token from node 0's dev identity provider (`latchkey dev token`).
    fn id_token(&self, node0: &Node, public_url: &str, user: &str, group: &str) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(["dev", "token", "--data"])
            .arg(&node0.data)
            .args(["--url", public_url, "--user", user, "--group", group])
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "latchkey dev token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }
}

async fn wait_healthy(node: &mut Node, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(conn) = Conn::open(node.addr).await
            && let Ok((200, _)) = conn.get("/admin/health", None).await
        {
            return Ok(());
        }
        if let Some(status) = node.child.try_wait()? {
            bail!(
                "node {} exited ({status}):\n{}",
                node.addr,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "node {} did not answer /admin/health within 30 s:\n{}",
                node.addr,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn exchange_form(id_token: &str, audience: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={id_token}\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&audience={audience}"
    )
}

/// One keep-alive HTTP/1.1 connection: the load generator holds exactly as
/// many of these as it says it does.
struct Conn {
    addr: SocketAddr,
    send: tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            addr,
            send: tokio::sync::Mutex::new(send),
        })
    }

    async fn send(&self, req: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
        let mut send = self.send.lock().await;
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> Result<(u16, Bytes)> {
        let mut req = hyper::Request::get(path).header("host", self.addr.to_string());
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.send(req.body(Full::new(Bytes::new()))?).await
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: String,
        bearer: Option<&str>,
    ) -> Result<(u16, Bytes)> {
        let mut req = hyper::Request::post(path)
            .header("host", self.addr.to_string())
            .header("content-type", content_type);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.send(req.body(Full::new(Bytes::from(body)))?).await
    }

    /// A Latchkey token from `form`, exchanged on this connection.
    async fn exchange(&self, form: &str) -> Result<String> {
        let (status, body) = self
            .post(
                "/oauth2/token",
                "application/x-www-form-urlencoded",
                form.to_owned(),
                None,
            )
            .await?;
        anyhow::ensure!(
            status == 200,
            "exchange at {}: {status} {}",
            self.addr,
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body)?;
        Ok(v["access_token"]
            .as_str()
            .context("no access_token")?
            .to_owned())
    }
}

/// The `jti` claim of a Latchkey token.
fn jti(token: &str) -> Result<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    Ok(claims["jti"].as_str().context("no jti")?.to_owned())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs both cluster measurements; prints one JSON line each (and one per
/// setup for the exchanges).
pub(crate) async fn run(secs: u64) -> Result<()> {
    let Some(pg_b) = Pg::start().await? else {
        println!(
            "{}",
            json!({"bench": "cluster", "status": "SKIPPED", "why": "no PostgreSQL (no initdb on PATH or under /usr/lib/postgresql, no DATABASE_URL)"})
        );
        return Ok(());
    };
    let Some(pg_c) = Pg::start().await? else {
        bail!("a second PostgreSQL did not start");
    };
    let shared = Shared::new()?;
    // Each PostgreSQL setup has a server of its own, so its CPU is its own.
    let setups = [
        shared.start("sqlite1", 1, None).await?,
        shared.start("pg1", 1, Some(pg_b)).await?,
        shared.start("pg3", 3, Some(pg_c)).await?,
    ];
    revocation_propagation(&shared, &setups[2]).await?;
    token_exchanges(&setups, secs).await?;
    Ok(())
}

/// Polls `path` on `conn` with `token` every ~2 ms until it answers 401; the
/// time from `since`.
async fn until_refused(conn: &Conn, token: &str, since: Instant) -> Result<u64> {
    loop {
        let (status, _) = conn.get("/admin/keys", Some(token)).await?;
        if status == 401 {
            return Ok(since.elapsed().as_micros() as u64);
        }
        anyhow::ensure!(
            status == 200,
            "{} answered {status} to a token being revoked",
            conn.addr
        );
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(10),
            "{} still accepts a token 10 s after its revocation",
            conn.addr
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn revocation_propagation(shared: &Shared, setup: &Setup) -> Result<()> {
    let n = env_num("BENCH_CLUSTER_REVOCATIONS", 200);
    let public_url = format!("http://{}", setup.nodes[0].addr);
    let nodes = setup.nodes.len();
    let mut conns = Vec::new();
    for node in &setup.nodes {
        conns.push(Conn::open(node.addr).await?);
    }
    // One admin ID token exchanged N+1 times: N+1 distinct tokens (jti).
    let admin_id = shared.id_token(&setup.nodes[0], &public_url, "bench-admin", "admins")?;
    let form = exchange_form(&admin_id, "latchkey");
    let revoker = conns[0].exchange(&form).await?;
    let mut victims = Vec::with_capacity(n);
    for k in 0..n {
        victims.push(conns[k % nodes].exchange(&form).await?);
    }
    // Every victim live on every node first (and in each node's verified
    // token cache, which a revocation must reach too).
    for t in &victims {
        for c in &conns {
            let (status, _) = c.get("/admin/keys", Some(t)).await?;
            anyhow::ensure!(
                status == 200,
                "{} refused a live admin token: {status}",
                c.addr
            );
        }
    }
    let mut others = Vec::with_capacity(2 * n);
    let mut origin_us = Vec::with_capacity(n);
    for (k, t) in victims.iter().enumerate() {
        let origin = k % nodes;
        let body =
            json!({"kind": "token", "value": jti(t)?, "reason": "cluster bench"}).to_string();
        let (status, resp) = conns[origin]
            .post(
                "/admin/revocations",
                "application/json",
                body,
                Some(&revoker),
            )
            .await?;
        anyhow::ensure!(
            status == 201,
            "revocation {k} at node {origin}: {status} {}",
            String::from_utf8_lossy(&resp)
        );
        let acked = Instant::now();
        let rest: Vec<&Conn> = (0..nodes)
            .filter(|i| *i != origin)
            .map(|i| &conns[i])
            .collect();
        let (o, a, b) = tokio::join!(
            until_refused(&conns[origin], t, acked),
            until_refused(rest[0], t, acked),
            until_refused(rest[1], t, acked),
        );
        origin_us.push(o?);
        others.push(a?);
        others.push(b?);
    }
    others.sort_unstable();
    origin_us.sort_unstable();
    let mut reconnects = Vec::new();
    for c in &conns {
        let (status, body) = c.get("/readyz", None).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let view = v["components"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["component"] == "revocations"))
            .cloned()
            .unwrap_or(Value::Null);
        anyhow::ensure!(
            !view.is_null(),
            "no revocations component in {}'s /readyz ({status})",
            c.addr
        );
        reconnects.push(view["listener_reconnects"].clone());
    }
    println!(
        "{}",
        json!({
            "bench": "cluster_revocation_propagation", "nodes": nodes, "revocations": n,
            "measurements": others.len(), "poll_interval_ms": 2,
            "other_nodes_p50_ms": ms(percentile(&others, 0.5)),
            "other_nodes_p99_ms": ms(percentile(&others, 0.99)),
            "other_nodes_max_ms": ms(*others.last().unwrap_or(&0)),
            "baseline_origin_node_p50_ms": ms(percentile(&origin_us, 0.5)),
            "baseline_origin_node_p99_ms": ms(percentile(&origin_us, 0.99)),
            "baseline_origin_node_max_ms": ms(*origin_us.last().unwrap_or(&0)),
            "listener_reconnects": reconnects,
            "note": "time from the 201 to the first 401 from GET /admin/keys (includes one probe round trip); the origin node is the baseline",
        })
    );
    Ok(())
}

/// One timed run of one setup.
struct RunResult {
    per_s: f64,
    p50_us: u64,
    p99_us: u64,
    failures: u64,
    node_cpu_ms_per_exchange: f64,
    pg_cpu_ms_per_exchange: Option<f64>,
    bench_cpu_ms_per_exchange: f64,
    pg_rows_per_exchange: Option<f64>,
    pg_rows_by_table: BTreeMap<String, i64>,
}

fn node_ticks(setup: &Setup) -> u64 {
    setup
        .nodes
        .iter()
        .filter_map(|n| proc_stat(n.child.id()).map(|(_, t, _)| t))
        .sum()
}

fn self_ticks() -> u64 {
    proc_stat(std::process::id()).map_or(0, |(_, t, _)| t)
}

async fn timed_run(setup: &Setup, connections: usize, secs: u64, ticks: f64) -> Result<RunResult> {
    let mut conns = Vec::with_capacity(connections);
    for c in 0..connections {
        conns.push(Conn::open(setup.nodes[c % setup.nodes.len()].addr).await?);
    }
    let rows_before = match &setup.pg {
        Some(pg) => Some(pg.row_counts().await?),
        None => None,
    };
    let pg_ticks = |s: &Setup| {
        s.pg.as_ref()
            .and_then(|p| p.postmaster)
            .map(postgres_cpu_ticks)
    };
    let (node0, pg0, self0) = (node_ticks(setup), pg_ticks(setup), self_ticks());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let form = Arc::new(setup.exchange_form.clone());
    let mut tasks = Vec::new();
    for conn in conns {
        let form = form.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match conn
                    .post(
                        "/oauth2/token",
                        "application/x-www-form-urlencoded",
                        (*form).clone(),
                        None,
                    )
                    .await
                {
                    Ok((200, _)) => lat.push(t0.elapsed().as_micros() as u64),
                    Ok(_) => failures += 1,
                    Err(_) => {
                        failures += 1;
                        break;
                    }
                }
            }
            (lat, failures)
        }));
    }
    let mut lat = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failures += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let (node1, pg1, self1) = (node_ticks(setup), pg_ticks(setup), self_ticks());
    let mut rows_by_table = BTreeMap::new();
    let mut rows_total = None;
    if let (Some(pg), Some(before)) = (&setup.pg, rows_before) {
        let after = pg.row_counts().await?;
        let mut total = 0;
        for (table, n) in after {
            let d = n - before.get(&table).copied().unwrap_or(0);
            if d != 0 {
                rows_by_table.insert(table, d);
            }
            total += d;
        }
        rows_total = Some(total);
    }
    lat.sort_unstable();
    let n = lat.len().max(1) as f64;
    let per_ex = |d: u64| round3(d as f64 / ticks * 1000.0 / n);
    Ok(RunResult {
        per_s: lat.len() as f64 / elapsed,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        failures,
        node_cpu_ms_per_exchange: per_ex(node1.saturating_sub(node0)),
        pg_cpu_ms_per_exchange: match (pg0, pg1) {
            (Some(a), Some(b)) => Some(per_ex(b.saturating_sub(a))),
            _ => None,
        },
        bench_cpu_ms_per_exchange: per_ex(self1.saturating_sub(self0)),
        pg_rows_per_exchange: rows_total.map(|r| round3(r as f64 / n)),
        pg_rows_by_table: rows_by_table,
    })
}

async fn token_exchanges(setups: &[Setup; 3], secs: u64) -> Result<()> {
    let connections = env_num("BENCH_CLUSTER_CONNECTIONS", 16).max(1);
    let rounds = env_num("BENCH_CLUSTER_ROUNDS", 3).max(1);
    let ticks = clock_ticks();
    // Correctness first, and a short warm-up (JWKS fetched, caches filled).
    for s in setups {
        for node in &s.nodes {
            let conn = Conn::open(node.addr).await?;
            for _ in 0..50 {
                conn.exchange(&s.exchange_form).await?;
            }
        }
    }
    let mut results: Vec<Vec<RunResult>> = (0..3).map(|_| Vec::new()).collect();
    let mut orders = Vec::new();
    for r in 0..rounds {
        let order: Vec<usize> = (0..3).map(|i| (i + r) % 3).collect();
        orders.push(order.iter().map(|i| setups[*i].label).collect::<Vec<_>>());
        for i in order {
            results[i].push(timed_run(&setups[i], connections, secs, ticks).await?);
        }
    }
    let base_rate = median(results[0].iter().map(|r| r.per_s).collect());
    let base_p50 = median(results[0].iter().map(|r| r.p50_us as f64).collect());
    for (s, runs) in setups.iter().zip(&results) {
        let rate = median(runs.iter().map(|r| r.per_s).collect());
        let p50 = median(runs.iter().map(|r| r.p50_us as f64).collect());
        let p99 = median(runs.iter().map(|r| r.p99_us as f64).collect());
        let opt_median = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let last_rows = runs
            .last()
            .map(|r| r.pg_rows_by_table.clone())
            .unwrap_or_default();
        println!(
            "{}",
            json!({
                "bench": "cluster_token_exchanges", "setup": s.label,
                "nodes": s.nodes.len(), "store": if s.pg.is_some() { "postgres" } else { "sqlite" },
                "connections": connections, "seconds": secs, "rounds": rounds,
                "exchanges_per_s": rate.round(),
                "p50_ms": ms(p50 as u64), "p99_ms": ms(p99 as u64),
                "ratio_vs_sqlite1_per_s": round2(rate / base_rate),
                "ratio_vs_sqlite1_p50": round2(p50 / base_p50),
                "failures": runs.iter().map(|r| r.failures).sum::<u64>(),
                "node_cpu_ms_per_exchange": median(runs.iter().map(|r| r.node_cpu_ms_per_exchange).collect()),
                "postgres_cpu_ms_per_exchange": opt_median(&|r| r.pg_cpu_ms_per_exchange),
                "loadgen_cpu_ms_per_exchange": median(runs.iter().map(|r| r.bench_cpu_ms_per_exchange).collect()),
                "postgres_rows_per_exchange": opt_median(&|r| r.pg_rows_per_exchange),
                "postgres_rows_last_round": last_rows,
                "per_round_per_s": runs.iter().map(|r| r.per_s.round()).collect::<Vec<_>>(),
                "orders": orders,
                "note": "CPU from /proc (utime+stime) over the timed run plus 1.5 s for the asynchronous index writes; postgres = postmaster + backends; rows = net new rows (count(*)) per exchange",
            })
        );
    }
    Ok(())
}
