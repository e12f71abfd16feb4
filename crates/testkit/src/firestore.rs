//! Google's real Firestore software for integration tests: the Firestore
//! emulator ([`FirestoreEmulator`]), one scenario run by each of Google's
//! official clients ([`Scenario`], scripts in `testing/firestore-node` and
//! `testing/firestore-py`). The scenarios' `latchkey-*` modes run against
//! the real gateway (see `crates/gateway/tests/firestore_*.rs`).
//!
//! Everything here runs on loopback and kills what it started: the emulator
//! (gcloud plus its Java child) runs in its own process group, which is
//! signalled as a whole on drop, and which also dies by itself when the test
//! process goes away (a watchdog in the group waits for its stdin to close).

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use crate::{free_port, repo_root};

/// The peer name of the emulator in `LATCHKEY_REQUIRE_PEERS`.
pub const PEER: &str = "firestore-emulator";

/// How long the emulator may take to answer after gcloud starts (Java start-up
/// on a loaded 2-core machine, several emulators at once).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// The line the emulator prints once it serves requests.
const READY_LINE: &str = "Dev App Server is now running";
/// How many output lines are kept for error messages.
const LOG_LINES: usize = 200;

/// `testing/firestore-node`: the Node.js client scenario.
pub fn node_scenario_dir() -> PathBuf {
    repo_root().join("testing").join("firestore-node")
}

/// `testing/firestore-py`: the Python client scenario and its virtualenv.
pub fn python_scenario_dir() -> PathBuf {
    repo_root().join("testing").join("firestore-py")
}

/// What went wrong starting or driving the Firestore test harness. Messages
/// say what to install or run by hand.
#[derive(Debug)]
#[non_exhaustive]
pub enum FirestoreHarnessError {
    /// `gcloud` is not on `PATH`.
    GcloudMissing,
    /// gcloud runs, but its Firestore emulator component (or Java) is missing.
    EmulatorNotInstalled {
        /// What gcloud printed.
        output: String,
    },
    /// The emulator did not come up.
    EmulatorDidNotStart {
        /// Why we gave up.
        reason: String,
        /// The last lines gcloud and the emulator printed.
        output: String,
    },
    /// A program the harness runs (`node`, `npm`, `python3`, `setsid`) could not be started.
    ToolMissing {
        /// The program.
        tool: String,
        /// The error from spawning it.
        source: std::io::Error,
    },
    /// Installing a scenario's dependencies failed.
    InstallFailed {
        /// The command that failed.
        command: String,
        /// The folder it ran in.
        dir: PathBuf,
        /// Its stdout and stderr.
        output: String,
    },
    /// An HTTP call to the emulator failed or was refused.
    Http {
        /// What the call was for.
        what: String,
        /// The transport error or the refusing status and body.
        detail: String,
    },
    /// A scenario script broke (non-zero exit, no JSON, or timed out).
    ScenarioBroke {
        /// `node` or `python`.
        client: String,
        /// What happened.
        reason: String,
        /// The script's stderr.
        stderr: String,
    },
    /// A local file operation failed.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl FirestoreHarnessError {
    /// True when the machine lacks the emulator (gcloud, its emulator
    /// component or Java), as opposed to the emulator misbehaving. Tests may
    /// skip on this, saying so loudly.
    pub fn is_not_installed(&self) -> bool {
        matches!(
            self,
            FirestoreHarnessError::GcloudMissing
                | FirestoreHarnessError::EmulatorNotInstalled { .. }
        )
    }
}

impl fmt::Display for FirestoreHarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirestoreHarnessError::GcloudMissing => write!(
                f,
                "`gcloud` is not on PATH; the Firestore emulator tests need the Google Cloud CLI with its \
                 Firestore emulator and Java 17+ (Debian: `apt-get install google-cloud-cli-firestore-emulator \
                 default-jre-headless` from Google's apt repository)"
            ),
            FirestoreHarnessError::EmulatorNotInstalled { output } => write!(
                f,
                "gcloud could not run the Firestore emulator; install the component \
                 (`apt-get install google-cloud-cli-firestore-emulator`, or `gcloud components install \
                 cloud-firestore-emulator`) and Java 17+; gcloud said:\n{output}"
            ),
            FirestoreHarnessError::EmulatorDidNotStart { reason, output } => write!(
                f,
                "the Firestore emulator did not start: {reason}; try \
                 `gcloud emulators firestore start --host-port=127.0.0.1:8080` by hand; its output:\n{output}"
            ),
            FirestoreHarnessError::ToolMissing { tool, source } => write!(
                f,
                "could not run `{tool}` ({source}); the Firestore client tests need Node.js 20+ with npm, \
                 and Python 3.9+ with venv, on PATH"
            ),
            FirestoreHarnessError::InstallFailed {
                command,
                dir,
                output,
            } => write!(
                f,
                "`{command}` in `{}` failed; run it there by hand (scripts/test does); output:\n{output}",
                dir.display()
            ),
            FirestoreHarnessError::Http { what, detail } => write!(f, "{what} failed: {detail}"),
            FirestoreHarnessError::ScenarioBroke {
                client,
                reason,
                stderr,
            } => write!(
                f,
                "the {client} Firestore scenario script broke: {reason}; its stderr:\n{stderr}"
            ),
            FirestoreHarnessError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for FirestoreHarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FirestoreHarnessError::ToolMissing { source, .. }
            | FirestoreHarnessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn tool_missing(tool: &str) -> impl FnOnce(std::io::Error) -> FirestoreHarnessError + '_ {
    move |source| FirestoreHarnessError::ToolMissing {
        tool: tool.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------
// The emulator

/// A running Firestore emulator (`gcloud emulators firestore start`) on its
/// own 127.0.0.1 port, in native mode, holding no data at start. Every
/// project and database id is accepted. Dropping it kills gcloud and the
/// emulator's Java process and waits (up to 10 s) until they are gone.
#[derive(Debug)]
pub struct FirestoreEmulator {
    group: Option<ProcessGroup>,
    port: u16,
    http: reqwest::Client,
    log: SharedLog,
}

impl FirestoreEmulator {
    /// Starts the emulator on a free port and waits until it serves requests
    /// (2–5 s when the machine is idle). Safe to call from tests running in
    /// parallel: each gets its own emulator and port.
    pub async fn start() -> Result<FirestoreEmulator, FirestoreHarnessError> {
        if find_on_path("gcloud").is_none() {
            return Err(FirestoreHarnessError::GcloudMissing);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| FirestoreHarnessError::Http {
                what: "building an HTTP client".into(),
                detail: e.to_string(),
            })?;
        // The port is free when picked, but another process may take it
        // before Java binds it: then the emulator exits and we try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            match Self::start_on(port, http.clone()).await {
                Err(FirestoreHarnessError::EmulatorDidNotStart { output, .. })
                    if attempt < 4 && output.contains("BindException") => {}
                other => return other,
            }
        }
    }

    async fn start_on(
        port: u16,
        http: reqwest::Client,
    ) -> Result<FirestoreEmulator, FirestoreHarnessError> {
        // gcloud moves itself into a process group of its own unless it leads
        // its session (see googlecloudsdk/command_lib/emulators/util.py), and
        // its Java child stays in that group. So `setsid` opens a new session
        // whose leader, `sh`, becomes gcloud by `exec`: one process group then
        // holds gcloud, Java and a watchdog that kills the group when our end
        // of its stdin closes, i.e. when this test process dies unannounced.
        // INVARIANT: the spawned child leads no process group, so `setsid`
        // execs instead of forking and the child's pid is the group id.
        let script = r#"exec 3<&0
{ cat <&3 >/dev/null; kill -TERM 0; } &
exec gcloud emulators firestore start --host-port="$1" </dev/null 3<&-"#;
        let mut child = Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(format!("127.0.0.1:{port}"))
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "1")
            .env_remove("FIRESTORE_EMULATOR_HOST")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(tool_missing("setsid"))?;
        let log = SharedLog::default();
        let pgid = child.id();
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            log.drain(out);
        }
        if let Some(err) = child.stderr.take() {
            log.drain(err);
        }
        let group = pgid.map(|pgid| ProcessGroup {
            pgid,
            child,
            _stdin: stdin,
        });
        let emulator = FirestoreEmulator {
            group,
            port,
            http,
            log,
        };
        // On error, dropping `emulator` kills whatever is left of the group.
        emulator.wait_ready().await?;
        Ok(emulator)
    }

    async fn wait_ready(&self) -> Result<(), FirestoreHarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/", self.base_url());
        loop {
            let text = self.log.text();
            if self.group.as_ref().is_none_or(|g| !g.leader_alive()) {
                // gcloud refuses before launching the emulator when its
                // component or Java is missing; it prints `Executing:` first
                // otherwise.
                return Err(if text.contains("Executing:") {
                    FirestoreHarnessError::EmulatorDidNotStart {
                        reason: "gcloud exited".into(),
                        output: text,
                    }
                } else {
                    FirestoreHarnessError::EmulatorNotInstalled { output: text }
                });
            }
            if text.contains(READY_LINE)
                && let Ok(resp) = self.http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(FirestoreHarnessError::EmulatorDidNotStart {
                    reason: format!(
                        "it did not answer on port {} within {START_TIMEOUT:?}",
                        self.port
                    ),
                    output: text,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `127.0.0.1:PORT`, as FIRESTORE_EMULATOR_HOST and the scenarios take it.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on (gRPC and REST share it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the base of its REST API (`/v1/projects/...`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines gcloud and the emulator printed (for failure messages).
    pub fn output(&self) -> String {
        self.log.text()
    }

    /// Deletes every document of `project`'s `(default)` database, through
    /// the emulator's own endpoint for that.
    pub async fn reset(&self, project: &str) -> Result<(), FirestoreHarnessError> {
        self.reset_database(project, "(default)").await
    }

    /// Deletes every document of one database of `project`.
    pub async fn reset_database(
        &self,
        project: &str,
        database: &str,
    ) -> Result<(), FirestoreHarnessError> {
        let url = format!(
            "{}/emulator/v1/projects/{project}/databases/{database}/documents",
            self.base_url()
        );
        let what = format!("DELETE {url}");
        let resp =
            self.http
                .delete(&url)
                .send()
                .await
                .map_err(|e| FirestoreHarnessError::Http {
                    what: what.clone(),
                    detail: e.to_string(),
                })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(FirestoreHarnessError::Http {
            what,
            detail: format!("status {status}: {body}"),
        })
    }

    /// Starts the emulator; on a machine without one (gcloud, its Firestore
    /// component or Java) prints `SKIPPED: ...` to stderr and returns
    /// `None`, unless the emulator is required: `LATCHKEY_REQUIRE_PEERS`
    /// names `firestore-emulator` (see [`crate::skip_or_fail`]) or
    /// `LATCHKEY_REQUIRE_FIRESTORE_EMULATOR` is set. Panics on any other
    /// failure: a test cannot go on without its emulator.
    pub async fn start_or_skip() -> Option<FirestoreEmulator> {
        match FirestoreEmulator::start().await {
            Ok(e) => Some(e),
            Err(e) if e.is_not_installed() => {
                if std::env::var_os("LATCHKEY_REQUIRE_FIRESTORE_EMULATOR").is_some() {
                    panic!("LATCHKEY_REQUIRE_FIRESTORE_EMULATOR is set: {e}");
                }
                crate::skip_or_fail(PEER, &format!("no Firestore emulator on this machine: {e}"));
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn documents_url(&self, project: &str, database: &str) -> String {
        format!(
            "{}/v1/projects/{project}/databases/{database}/documents",
            self.base_url()
        )
    }

    /// Sends one call to the emulator's REST API as its administrator
    /// (`Bearer owner`) and returns the JSON answer, or an error for any
    /// status but 2xx.
    async fn admin_call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, FirestoreHarnessError> {
        let what = format!("{method} {url}");
        let http_err = |detail: String| FirestoreHarnessError::Http {
            what: what.clone(),
            detail,
        };
        let mut req = self.http.request(method.clone(), url).bearer_auth("owner");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| http_err(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| http_err(e.to_string()))?;
        if !status.is_success() {
            return Err(http_err(format!("status {status}: {text}")));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| http_err(format!("answer is not JSON ({e}): {text}")))
    }

    /// Writes (creates or overwrites) the document at `path` (e.g.
    /// `cities/sf`) straight into the emulator, bypassing everything else.
    /// `fields` is Firestore's REST value map, e.g.
    /// `{"name": {"stringValue": "x"}}`.
    pub async fn put_document(
        &self,
        project: &str,
        database: &str,
        path: &str,
        fields: Value,
    ) -> Result<(), FirestoreHarnessError> {
        let url = format!("{}/{path}", self.documents_url(project, database));
        self.admin_call(
            reqwest::Method::PATCH,
            &url,
            Some(&serde_json::json!({ "fields": fields })),
        )
        .await
        .map(|_| ())
    }

    /// Every document of one database, read straight from the emulator:
    /// path (`cities/sf/landmarks/ggb`) → its `fields` (REST value map,
    /// `{}` for a document without fields). Walks every collection id
    /// level by level, through documents that only hold subcollections.
    pub async fn documents(
        &self,
        project: &str,
        database: &str,
    ) -> Result<std::collections::BTreeMap<String, Value>, FirestoreHarnessError> {
        let root = self.documents_url(project, database);
        let prefix = format!("projects/{project}/databases/{database}/documents/");
        let mut found = std::collections::BTreeMap::new();
        // Document paths whose subcollections are still to be listed ("" is the root).
        let mut parents = vec![String::new()];
        while let Some(parent) = parents.pop() {
            let parent_url = if parent.is_empty() {
                root.clone()
            } else {
                format!("{root}/{parent}")
            };
            let mut collections = Vec::new();
            let mut page: Option<String> = None;
            loop {
                let mut body = serde_json::json!({ "pageSize": 300 });
                if let Some(token) = &page {
                    body["pageToken"] = Value::from(token.as_str());
                }
                let v = self
                    .admin_call(
                        reqwest::Method::POST,
                        &format!("{parent_url}:listCollectionIds"),
                        Some(&body),
                    )
                    .await?;
                collections.extend(
                    v["collectionIds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
                page = next_page(&v);
                if page.is_none() {
                    break;
                }
            }
            for collection in collections {
                let mut page: Option<String> = None;
                loop {
                    let list = format!("{parent_url}/{collection}");
                    let mut url =
                        reqwest::Url::parse(&list).map_err(|e| FirestoreHarnessError::Http {
                            what: format!("GET {list}"),
                            detail: e.to_string(),
                        })?;
                    url.query_pairs_mut()
                        .append_pair("showMissing", "true")
                        .append_pair("pageSize", "300");
                    if let Some(token) = &page {
                        url.query_pairs_mut().append_pair("pageToken", token);
                    }
                    let v = self
                        .admin_call(reqwest::Method::GET, url.as_str(), None)
                        .await?;
                    for doc in v["documents"].as_array().into_iter().flatten() {
                        let Some(path) = doc["name"]
                            .as_str()
                            .and_then(|n| n.strip_prefix(prefix.as_str()))
                        else {
                            continue;
                        };
                        // A "missing" document (only subcollections) has no createTime.
                        if doc.get("createTime").is_some() {
                            let fields = doc
                                .get("fields")
                                .cloned()
                                .unwrap_or_else(|| serde_json::json!({}));
                            found.insert(path.to_owned(), fields);
                        }
                        parents.push(path.to_owned());
                    }
                    page = next_page(&v);
                    if page.is_none() {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Stops the emulator and waits until its processes are gone (what drop
    /// does, without blocking the async runtime).
    pub async fn stop(mut self) {
        if let Some(group) = self.group.take() {
            let _ = tokio::task::spawn_blocking(move || drop(group)).await;
        }
    }
}

/// The `nextPageToken` of a list answer, when there is another page.
fn next_page(v: &Value) -> Option<String> {
    v["nextPageToken"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Output lines of a child, kept for error messages.
#[derive(Debug, Clone, Default)]
struct SharedLog(Arc<Mutex<VecDeque<String>>>);

impl SharedLog {
    fn drain(&self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut l) = log.0.lock() {
                    if l.len() == LOG_LINES {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            }
        });
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// A child leading its own process group; dropping it kills the group.
#[derive(Debug)]
struct ProcessGroup {
    pgid: u32,
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl ProcessGroup {
    /// Processes of the group that are still running (zombies do not count).
    /// Reads /proc; elsewhere it reports 0, so waits end at once.
    fn live_members(&self) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .filter_map(proc_state)
            .filter(|&(state, pgrp)| state != 'Z' && pgrp == self.pgid)
            .count()
    }

    /// Whether the group's leader (gcloud) still runs.
    fn leader_alive(&self) -> bool {
        proc_state(self.pgid).is_some_and(|(state, _)| state != 'Z')
    }

    fn signal(&self, sig: &str) {
        let kill = ["/usr/bin/kill", "/bin/kill"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("kill"));
        let _ = std::process::Command::new(kill)
            // The leader too, in case it has not made its group yet.
            .args([
                "-s",
                sig,
                "--",
                &format!("-{}", self.pgid),
                &self.pgid.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.live_members() > 0 && Instant::now() < deadline {
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.live_members() > 0 {
            self.signal("KILL");
        }
        let _ = self.child.try_wait();
    }
}

/// A process's state letter and process group, from `/proc/PID/stat`
/// (`pid (comm) state ppid pgrp ...`; comm may hold spaces and `)`).
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// Installing the client scenarios

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `install` in `dir` unless `stamp` holds the SHA-256 of `input`
/// (the lock or requirements file), under a lock file shared by parallel
/// test processes; writes the stamp after. scripts/test writes the same
/// stamps, so either side skips work the other did.
fn ensure_stamped(
    dir: &Path,
    input: &str,
    stamp: &Path,
    install: &dyn Fn() -> Result<(), FirestoreHarnessError>,
) -> Result<(), FirestoreHarnessError> {
    let io = |what: String| move |source| FirestoreHarnessError::Io { what, source };
    let input_path = dir.join(input);
    let bytes =
        std::fs::read(&input_path).map_err(io(format!("reading `{}`", input_path.display())))?;
    let want = sha256_hex(&bytes);
    let current = || std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == want);
    if current() {
        return Ok(());
    }
    let lock_path = dir.join(".install.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening `{}`", lock_path.display())))?;
    lock.lock()
        .map_err(io(format!("locking `{}`", lock_path.display())))?;
    let result = if current() {
        Ok(())
    } else {
        install().and_then(|()| {
            std::fs::write(stamp, format!("{want}\n"))
                .map_err(io(format!("writing `{}`", stamp.display())))
        })
    };
    let _ = lock.unlock();
    result
}

fn run_install(dir: &Path, program: &str, args: &[&str]) -> Result<(), FirestoreHarnessError> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(tool_missing(program))?;
    if out.status.success() {
        return Ok(());
    }
    Err(FirestoreHarnessError::InstallFailed {
        command: format!("{program} {}", args.join(" ")),
        dir: dir.to_path_buf(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// Installs `testing/firestore-node`'s npm packages (`npm ci`) unless they
/// match `package-lock.json` already. Blocking; call it from
/// `spawn_blocking` in async code (the scenario does).
pub fn ensure_node_installed() -> Result<(), FirestoreHarnessError> {
    let dir = node_scenario_dir();
    let stamp = dir
        .join("node_modules")
        .join(".latchkey-package-lock.sha256");
    ensure_stamped(&dir, "package-lock.json", &stamp, &|| {
        run_install(
            &dir,
            "npm",
            &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
        )
    })
}

/// Creates `testing/firestore-py/.venv` and installs `requirements.txt`
/// into it unless that is done already. Blocking, like
/// [`ensure_node_installed`].
pub fn ensure_python_installed() -> Result<(), FirestoreHarnessError> {
    let dir = python_scenario_dir();
    let stamp = dir.join(".venv").join(".latchkey-requirements.sha256");
    ensure_stamped(&dir, "requirements.txt", &stamp, &|| {
        run_install(&dir, "python3", &["-m", "venv", ".venv"])?;
        run_install(
            &dir,
            ".venv/bin/python",
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                "requirements.txt",
            ],
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FirestoreHarnessError> + Send + 'static,
) -> Result<T, FirestoreHarnessError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(FirestoreHarnessError::Io {
            what: "an install task".into(),
            source: std::io::Error::other(e),
        })
    })
}

// ---------------------------------------------------------------------------
// Running a client scenario

/// Which official client runs the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioClient {
    /// `@google-cloud/firestore` 8, `testing/firestore-node/scenario.mjs`.
    Node,
    /// `google-cloud-firestore` 2, `testing/firestore-py/scenario.py`.
    Python,
}

impl ScenarioClient {
    fn name(self) -> &'static str {
        match self {
            ScenarioClient::Node => "node",
            ScenarioClient::Python => "python",
        }
    }
}

/// One run of a client scenario script. Modes: `emulator` (both clients),
/// `latchkey-grpc`, `latchkey-rest`, `latchkey-rest-tls` (Node only) and
/// `latchkey-grpc-tls` (both); see the top of each script.
#[derive(Debug, Clone)]
pub struct Scenario {
    client: ScenarioClient,
    mode: String,
    target: String,
    project: String,
    prefix: Option<String>,
    database: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    step_timeout: Option<Duration>,
}

impl Scenario {
    /// A scenario for `client` in `mode` against `target` (`host:port`), in
    /// project `latchkey-test`.
    pub fn new(client: ScenarioClient, mode: &str, target: &str) -> Scenario {
        Scenario {
            client,
            mode: mode.to_owned(),
            target: target.to_owned(),
            project: "latchkey-test".to_owned(),
            prefix: None,
            database: None,
            token: None,
            ca_file: None,
            step_timeout: None,
        }
    }

    /// The project id.
    pub fn project(mut self, project: &str) -> Scenario {
        self.project = project.to_owned();
        self
    }

    /// The prefix of every collection id (default: a fresh one per run).
    pub fn prefix(mut self, prefix: &str) -> Scenario {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// A database other than `(default)`.
    pub fn database(mut self, database: &str) -> Scenario {
        self.database = Some(database.to_owned());
        self
    }

    /// The Latchkey bearer token (`latchkey-*` modes).
    pub fn token(mut self, token: &str) -> Scenario {
        self.token = Some(token.to_owned());
        self
    }

    /// The PEM file of the CA that signed the server's certificate (`*-tls` modes).
    pub fn ca_file(mut self, path: &Path) -> Scenario {
        self.ca_file = Some(path.to_path_buf());
        self
    }

    /// The per-step time limit (default 20 s). Keep it short in tests that
    /// expect refusals: the clients retry some codes (UNAUTHENTICATED on
    /// Listen, forever) until the limit.
    pub fn step_timeout(mut self, limit: Duration) -> Scenario {
        self.step_timeout = Some(limit);
        self
    }

    /// Installs the client if needed, runs the script and parses its JSON.
    /// A failing step is a normal outcome ([`StepOutcome::ok`] false); an
    /// error here means the script itself broke.
    pub async fn run(&self) -> Result<ScenarioReport, FirestoreHarnessError> {
        let (dir, program, script) = match self.client {
            ScenarioClient::Node => {
                blocking(ensure_node_installed).await?;
                (node_scenario_dir(), PathBuf::from("node"), "scenario.mjs")
            }
            ScenarioClient::Python => {
                blocking(ensure_python_installed).await?;
                let dir = python_scenario_dir();
                let python = dir.join(".venv").join("bin").join("python");
                (dir, python, "scenario.py")
            }
        };
        let mut cmd = Command::new(&program);
        cmd.arg(script)
            .args([
                "--mode",
                &self.mode,
                "--target",
                &self.target,
                "--project",
                &self.project,
            ])
            .current_dir(&dir)
            .env_remove("FIRESTORE_EMULATOR_HOST")
            .env_remove("LATCHKEY_TOKEN")
            .env_remove("LATCHKEY_CA_FILE")
            .env_remove("FIRESTORE_DATABASE")
            .env_remove("SCENARIO_PREFIX")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(prefix) = &self.prefix {
            cmd.args(["--prefix", prefix]);
        }
        if let Some(db) = &self.database {
            cmd.env("FIRESTORE_DATABASE", db);
        }
        if let Some(token) = &self.token {
            cmd.env("LATCHKEY_TOKEN", token);
        }
        if let Some(ca) = &self.ca_file {
            cmd.env("LATCHKEY_CA_FILE", ca);
        }
        let step_timeout = self.step_timeout.unwrap_or(Duration::from_secs(20));
        cmd.env(
            "SCENARIO_STEP_TIMEOUT_MS",
            step_timeout.as_millis().to_string(),
        );
        let client = self.client.name();
        let broke = |reason: String, stderr: String| FirestoreHarnessError::ScenarioBroke {
            client: client.to_owned(),
            reason,
            stderr,
        };
        let child = cmd
            .spawn()
            .map_err(tool_missing(&program.display().to_string()))?;
        // 13 steps at most, plus client start-up.
        let limit = step_timeout * 14 + Duration::from_secs(30);
        let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(broke(format!("waiting for it failed: {e}"), String::new())),
            Err(_) => {
                return Err(broke(
                    format!("it ran longer than {limit:?}"),
                    String::new(),
                ));
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(broke(format!("it exited with {}", out.status), stderr));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: Value = serde_json::from_str(stdout.trim()).map_err(|e| {
            broke(
                format!("its stdout is not one JSON object ({e}): `{stdout}`"),
                stderr.clone(),
            )
        })?;
        ScenarioReport::from_json(json, stderr.clone()).map_err(|reason| broke(reason, stderr))
    }
}

/// The outcome of one scenario step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// The step name, shared by both clients (`set`, `get`, `listen`, ...).
    pub step: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its normalized result when it succeeded (no times, prefixes or ids
    /// chosen by the server, so runs compare equal).
    pub result: Option<Value>,
    /// The gRPC status name (`PERMISSION_DENIED`, ...; `SCENARIO_TIMEOUT` when
    /// the step ran out of time) when it failed.
    pub error_code: Option<String>,
    /// The error text when it failed.
    pub error_message: Option<String>,
}

/// What a scenario script printed.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// `node` or `python`.
    pub client: String,
    /// The mode it ran in.
    pub mode: String,
    /// Every step, in order.
    pub steps: Vec<StepOutcome>,
    /// The JSON object as printed.
    pub json: Value,
    /// The script's stderr (client logs, stack traces of failed steps).
    pub stderr: String,
}

impl ScenarioReport {
    fn from_json(json: Value, stderr: String) -> Result<ScenarioReport, String> {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let steps = json
            .get("steps")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("its JSON has no `steps` array: {json}"))?
            .iter()
            .map(|s| {
                Ok(StepOutcome {
                    step: text(s, "step").ok_or_else(|| format!("a step has no name: {s}"))?,
                    ok: s
                        .get("ok")
                        .and_then(Value::as_bool)
                        .ok_or_else(|| format!("a step has no `ok`: {s}"))?,
                    result: s.get("result").cloned(),
                    error_code: s.get("error").and_then(|e| text(e, "code")),
                    error_message: s.get("error").and_then(|e| text(e, "message")),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ScenarioReport {
            client: text(&json, "client").unwrap_or_default(),
            mode: text(&json, "mode").unwrap_or_default(),
            steps,
            json,
            stderr,
        })
    }

    /// The step named `name`, if the script has it.
    pub fn step(&self, name: &str) -> Option<&StepOutcome> {
        self.steps.iter().find(|s| s.step == name)
    }

    /// The steps that failed.
    pub fn failed(&self) -> Vec<&StepOutcome> {
        self.steps.iter().filter(|s| !s.ok).collect()
    }

    /// A one-line-per-step summary for assertion messages.
    pub fn summary(&self) -> String {
        self.steps
            .iter()
            .map(|s| match (&s.error_code, &s.error_message) {
                (Some(code), msg) => format!(
                    "  {} FAILED {code}: {}",
                    s.step,
                    msg.as_deref().unwrap_or_default()
                ),
                _ => format!("  {} ok", s.step),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
