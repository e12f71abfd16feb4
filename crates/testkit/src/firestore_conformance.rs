//! The query conformance table: `testing/firestore-node/conformance.mjs`
//! run with Google's official Node client against one Firestore endpoint
//! ([`Conformance`]), and the query-by-query comparison of two runs
//! ([`differences`]).
//!
//! The table is differential: it holds no expected answers. A run against
//! Google's emulator is the reference, and a run through Latchkey (with
//! either document backend) must give the same documents in the same
//! order, the same aggregation values with the same types, and the same
//! error codes for the queries the emulator refuses (issue 15, item 8).

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::firestore::{FirestoreHarnessError, ensure_node_installed, node_scenario_dir};

/// The length of a run prefix: two runs order document paths alike only
/// when their prefixes are equally long (the script checks it too).
pub const PREFIX_LEN: usize = 10;

/// A fresh run prefix (`c` + 8 hex digits + `_`), so runs against one
/// emulator never see each other's documents.
pub fn fresh_prefix() -> String {
    let mut bytes = [0u8; 4];
    // A failure of the system's random source leaves zeros: the run still
    // works, it only collides with another such run.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("c{hex}_")
}

/// One run of the conformance script against one endpoint.
#[derive(Debug, Clone)]
pub struct Conformance {
    mode: String,
    target: String,
    project: String,
    prefix: String,
    token: Option<String>,
    count: Option<usize>,
    only: Vec<String>,
    query_timeout: Duration,
}

impl Conformance {
    /// A run in `mode` (`emulator`, `latchkey-grpc` or `latchkey-rest`)
    /// against `target` (`host:port`), project `latchkey-test`, with a
    /// fresh prefix.
    pub fn new(mode: &str, target: &str) -> Conformance {
        Conformance {
            mode: mode.to_owned(),
            target: target.to_owned(),
            project: "latchkey-test".to_owned(),
            prefix: fresh_prefix(),
            token: None,
            count: None,
            only: Vec::new(),
            query_timeout: Duration::from_secs(20),
        }
    }

    /// The project id.
    pub fn project(mut self, project: &str) -> Conformance {
        self.project = project.to_owned();
        self
    }

    /// The Latchkey bearer token (`latchkey-*` modes).
    pub fn token(mut self, token: &str) -> Conformance {
        self.token = Some(token.to_owned());
        self
    }

    /// How many queries to generate (the script's default is 240, plus
    /// its fixed cases).
    pub fn count(mut self, count: usize) -> Conformance {
        self.count = Some(count);
        self
    }

    /// Runs only the queries with these ids (`q017`), to replay a
    /// difference.
    pub fn only(mut self, ids: &[&str]) -> Conformance {
        self.only = ids.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// The time limit of one query (default 20 s).
    pub fn query_timeout(mut self, limit: Duration) -> Conformance {
        self.query_timeout = limit;
        self
    }

    /// The mode this run uses.
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// Installs the Node client if needed, runs the script and parses its
    /// JSON. A refused query is a normal outcome; an error here means the
    /// script itself broke.
    pub async fn run(&self) -> Result<ConformanceReport, FirestoreHarnessError> {
        tokio::task::spawn_blocking(ensure_node_installed)
            .await
            .unwrap_or_else(|e| {
                Err(FirestoreHarnessError::Io {
                    what: "the npm install task".into(),
                    source: std::io::Error::other(e),
                })
            })?;
        let dir: PathBuf = node_scenario_dir();
        let mut cmd = Command::new("node");
        cmd.arg("conformance.mjs")
            .args([
                "--mode",
                &self.mode,
                "--target",
                &self.target,
                "--project",
                &self.project,
                "--prefix",
                &self.prefix,
            ])
            .current_dir(&dir)
            .env_remove("FIRESTORE_EMULATOR_HOST")
            .env_remove("LATCHKEY_TOKEN")
            .env_remove("FIRESTORE_DATABASE")
            .env_remove("CONFORMANCE_ONLY")
            .env_remove("CONFORMANCE_COUNT")
            .env(
                "CONFORMANCE_QUERY_TIMEOUT_MS",
                self.query_timeout.as_millis().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(count) = self.count {
            cmd.args(["--count", &count.to_string()]);
        }
        if !self.only.is_empty() {
            cmd.args(["--only", &self.only.join(",")]);
        }
        if let Some(token) = &self.token {
            cmd.env("LATCHKEY_TOKEN", token);
        }
        let broke = |reason: String, stderr: String| FirestoreHarnessError::ScenarioBroke {
            client: "node (conformance)".to_owned(),
            reason,
            stderr,
        };
        let child = cmd
            .spawn()
            .map_err(|source| FirestoreHarnessError::ToolMissing {
                tool: "node".into(),
                source,
            })?;
        // Queries run 8 at a time; a few hundred of them, each bounded.
        let limit = self.query_timeout * 40 + Duration::from_secs(60);
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
            let head: String = stdout.chars().take(2000).collect();
            broke(
                format!(
                    "its stdout ({} bytes) is not one JSON object ({e}); it begins `{head}`",
                    stdout.len()
                ),
                stderr.clone(),
            )
        })?;
        ConformanceReport::from_json(json, stderr.clone()).map_err(|reason| broke(reason, stderr))
    }
}

/// What one query gave: its result, or its error.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    /// `q001`, stable across runs.
    pub id: String,
    /// What the query is (`items where v >= int 1 orderBy n desc limit 3`).
    pub desc: String,
    /// `{"docs": [{"path", "data"}]}` or `{"aggregate": {...}}`.
    pub result: Option<Value>,
    /// The gRPC status name, `CLIENT` for a refusal by the client itself,
    /// or `CONFORMANCE_TIMEOUT`.
    pub error_code: Option<String>,
    /// The error text (not compared: servers word refusals differently).
    pub error_message: Option<String>,
}

impl QueryOutcome {
    /// The outcome as compared: the result, or the error code alone.
    fn compared(&self) -> Result<&Value, &str> {
        match (&self.result, &self.error_code) {
            (Some(r), _) => Ok(r),
            (None, code) => Err(code.as_deref().unwrap_or("")),
        }
    }

    /// A short form for difference reports.
    fn brief(&self) -> String {
        match (&self.result, &self.error_code) {
            (Some(r), _) => brief_result(r),
            (None, code) => format!(
                "error {}: {}",
                code.as_deref().unwrap_or("?"),
                self.error_message.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// Document paths for a document result, the values for an aggregation;
/// the full JSON only when that is all the two sides differ in.
fn brief_result(r: &Value) -> String {
    if let Some(docs) = r.get("docs").and_then(Value::as_array) {
        let paths: Vec<&str> = docs
            .iter()
            .filter_map(|d| d.get("path").and_then(Value::as_str))
            .collect();
        return format!("{} docs {paths:?}", paths.len());
    }
    r.to_string()
}

/// One seeding step of a run (`items`, `double_one`, `names`, `snapshots`).
#[derive(Debug, Clone, PartialEq)]
pub struct SeedStep {
    /// Its name.
    pub step: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The gRPC status name when it failed.
    pub error_code: Option<String>,
    /// The error text when it failed.
    pub error_message: Option<String>,
}

/// What the script printed.
#[derive(Debug, Clone)]
pub struct ConformanceReport {
    /// The mode it ran in.
    pub mode: String,
    /// The seeding steps.
    pub seed: Vec<SeedStep>,
    /// Every query, in the generated order.
    pub queries: Vec<QueryOutcome>,
    /// The JSON object as printed.
    pub json: Value,
    /// The script's stderr.
    pub stderr: String,
}

impl ConformanceReport {
    fn from_json(json: Value, stderr: String) -> Result<ConformanceReport, String> {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let err = |v: &Value, key: &str| v.get("error").and_then(|e| text(e, key));
        let seed = json
            .get("seed")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("its JSON has no `seed` array: {json}"))?
            .iter()
            .map(|s| SeedStep {
                step: text(s, "step").unwrap_or_default(),
                ok: s.get("ok").and_then(Value::as_bool).unwrap_or(false),
                error_code: err(s, "code"),
                error_message: err(s, "message"),
            })
            .collect();
        let queries = json
            .get("queries")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("its JSON has no `queries` array: {json}"))?
            .iter()
            .map(|q| {
                let id = text(q, "id").ok_or_else(|| format!("a query has no id: {q}"))?;
                let result = q.get("result").cloned();
                let error_code = err(q, "code");
                if result.is_none() && error_code.is_none() {
                    return Err(format!("query {id} has neither a result nor an error: {q}"));
                }
                Ok(QueryOutcome {
                    desc: text(q, "desc").unwrap_or_default(),
                    id,
                    result,
                    error_code,
                    error_message: err(q, "message"),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ConformanceReport {
            mode: text(&json, "mode").unwrap_or_default(),
            seed,
            queries,
            json,
            stderr,
        })
    }

    /// The seeding steps that failed.
    pub fn failed_seed(&self) -> Vec<&SeedStep> {
        self.seed.iter().filter(|s| !s.ok).collect()
    }

    /// How many queries answered with documents or values (not refused).
    pub fn answered(&self) -> usize {
        self.queries.iter().filter(|q| q.result.is_some()).count()
    }
}

/// One query whose outcome differs between two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The query id.
    pub id: String,
    /// What the query is.
    pub desc: String,
    /// The reference run's outcome, briefly.
    pub reference: String,
    /// The other run's outcome, briefly.
    pub other: String,
    /// Both full results when both answered (for data differences).
    pub detail: Option<(Value, Value)>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.id, self.desc)?;
        writeln!(f, "    reference: {}", self.reference)?;
        write!(f, "    other:     {}", self.other)?;
        if let Some((a, b)) = &self.detail
            && let Some((at, x, y)) = first_difference(a, b, String::new())
        {
            write!(
                f,
                "\n    first difference at {at}:\n      reference: {x}\n      other:     {y}"
            )?;
        }
        Ok(())
    }
}

/// Where two JSON values first differ (a JSON-pointer-like path, with a
/// document's path in place of its index), and the two values there.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<(String, Value, Value)> {
    match (a, b) {
        _ if a == b => None,
        (Value::Array(xs), Value::Array(ys)) if xs.len() == ys.len() => {
            xs.iter().zip(ys).enumerate().find_map(|(i, (x, y))| {
                let step = match (x.get("path"), y.get("path")) {
                    (Some(Value::String(p)), Some(Value::String(q))) if p == q => p.clone(),
                    _ => i.to_string(),
                };
                first_difference(x, y, format!("{at}/{step}"))
            })
        }
        (Value::Object(xs), Value::Object(ys)) => {
            let keys: std::collections::BTreeSet<&String> = xs.keys().chain(ys.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (x, y) = (
                    xs.get(k)
                        .cloned()
                        .unwrap_or(Value::String("<absent>".into())),
                    ys.get(k)
                        .cloned()
                        .unwrap_or(Value::String("<absent>".into())),
                );
                first_difference(&x, &y, format!("{at}/{k}"))
            })
        }
        _ => Some((
            if at.is_empty() { "/".into() } else { at },
            a.clone(),
            b.clone(),
        )),
    }
}

/// The queries (and seeding steps) whose outcomes differ, in order. Two
/// runs of the same script version list the same queries; a query missing
/// from either side is a difference too.
pub fn differences(reference: &ConformanceReport, other: &ConformanceReport) -> Vec<Difference> {
    let mut out = Vec::new();
    let seed_brief = |s: &SeedStep| match &s.error_code {
        None if s.ok => "ok".to_owned(),
        code => format!(
            "error {}: {}",
            code.as_deref().unwrap_or("?"),
            s.error_message.as_deref().unwrap_or_default()
        ),
    };
    for (i, a) in reference.seed.iter().enumerate() {
        let b = other.seed.get(i);
        if b.is_none_or(|b| b.step != a.step || b.ok != a.ok || b.error_code != a.error_code) {
            out.push(Difference {
                id: format!("seed:{}", a.step),
                desc: format!("seeding step `{}`", a.step),
                reference: seed_brief(a),
                other: b.map_or_else(|| "missing".to_owned(), seed_brief),
                detail: None,
            });
        }
    }
    let others: std::collections::HashMap<&str, &QueryOutcome> =
        other.queries.iter().map(|q| (q.id.as_str(), q)).collect();
    for a in &reference.queries {
        let Some(b) = others.get(a.id.as_str()) else {
            out.push(Difference {
                id: a.id.clone(),
                desc: a.desc.clone(),
                reference: a.brief(),
                other: "missing".into(),
                detail: None,
            });
            continue;
        };
        if a.compared() != b.compared() || a.desc != b.desc {
            let detail = match (&a.result, &b.result) {
                (Some(x), Some(y)) => Some((x.clone(), y.clone())),
                _ => None,
            };
            out.push(Difference {
                id: a.id.clone(),
                desc: if a.desc == b.desc {
                    a.desc.clone()
                } else {
                    format!("{} (other: {})", a.desc, b.desc)
                },
                reference: a.brief(),
                other: b.brief(),
                detail,
            });
        }
    }
    let ids: std::collections::HashSet<&str> =
        reference.queries.iter().map(|q| q.id.as_str()).collect();
    for b in other
        .queries
        .iter()
        .filter(|q| !ids.contains(q.id.as_str()))
    {
        out.push(Difference {
            id: b.id.clone(),
            desc: b.desc.clone(),
            reference: "missing".into(),
            other: b.brief(),
            detail: None,
        });
    }
    out
}

/// A report of the first `max` differences, for an assertion message.
pub fn describe_differences(row: &str, diffs: &[Difference], total: usize, max: usize) -> String {
    let mut s = format!(
        "{row}: {} of {total} queries differ from the emulator's answers; the first {}:\n",
        diffs.len(),
        diffs.len().min(max)
    );
    for d in diffs.iter().take(max) {
        s.push_str(&format!("  {d}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(queries: Value) -> ConformanceReport {
        ConformanceReport::from_json(
            json!({"mode": "m", "seed": [{"step": "items", "ok": true}], "queries": queries}),
            String::new(),
        )
        .unwrap()
    }

    #[test]
    fn equal_runs_have_no_differences_and_error_text_is_not_compared() {
        let a = report(json!([
            {"id": "q001", "desc": "d", "result": {"docs": [{"path": "items/d01", "data": {}}]}},
            {"id": "q002", "desc": "e", "error": {"code": "INVALID_ARGUMENT", "message": "one wording"}},
        ]));
        let b = report(json!([
            {"id": "q001", "desc": "d", "result": {"docs": [{"path": "items/d01", "data": {}}]}},
            {"id": "q002", "desc": "e", "error": {"code": "INVALID_ARGUMENT", "message": "another"}},
        ]));
        assert_eq!(differences(&a, &b), vec![]);
    }

    #[test]
    fn order_types_codes_and_missing_queries_are_differences() {
        let a = report(json!([
            {"id": "q001", "desc": "d", "result": {"docs": [{"path": "a", "data": {}}, {"path": "b", "data": {}}]}},
            {"id": "q002", "desc": "e", "result": {"aggregate": {"s": {"int": "1"}}}},
            {"id": "q003", "desc": "f", "error": {"code": "INVALID_ARGUMENT", "message": "x"}},
            {"id": "q004", "desc": "g", "result": {"docs": []}},
        ]));
        let b = report(json!([
            {"id": "q001", "desc": "d", "result": {"docs": [{"path": "b", "data": {}}, {"path": "a", "data": {}}]}},
            {"id": "q002", "desc": "e", "result": {"aggregate": {"s": {"double": "1"}}}},
            {"id": "q003", "desc": "f", "error": {"code": "FAILED_PRECONDITION", "message": "x"}},
        ]));
        let d = differences(&a, &b);
        let ids: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["q001", "q002", "q003", "q004"]);
        assert_eq!(d[0].reference, r#"2 docs ["a", "b"]"#);
        assert_eq!(d[0].other, r#"2 docs ["b", "a"]"#);
        assert_eq!(d[3].other, "missing");
        let text = describe_differences("row", &d, 4, 2);
        assert!(text.starts_with("row: 4 of 4 queries differ"), "{text}");
        assert!(text.contains("q002 e") && !text.contains("q003"), "{text}");
    }

    #[test]
    fn prefixes_have_the_length_the_script_requires() {
        let p = fresh_prefix();
        assert_eq!(p.len(), PREFIX_LEN);
        assert!(p.starts_with('c') && p.ends_with('_'), "{p}");
    }
}
