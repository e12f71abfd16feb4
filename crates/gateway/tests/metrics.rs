//! `/metrics` over real HTTP, in front of a real OpenID Connect provider:
//! after an allowed, a denied and an upstream-failing request, the
//! exposition parses, counts them under the right labels, and names no one.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;

use common::{Opts, TestGateway, basic, bearer};
use latchkey_testkit::OidcProvider;

/// One sample line of the text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The parsed exposition: its samples and each family's `# TYPE`.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the OpenMetrics text format strictly enough to catch a
    /// malformed line: `# HELP`/`# TYPE`/`# EOF` comments (EOF last), and
    /// `name{label="value",...} number` samples with escaped values.
    fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF:\n{text}");
        for line in &lines[..lines.len() - 1] {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                out.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment `{line}`");
            out.samples.push(parse_sample(line));
        }
        out
    }

    /// The samples named `name` whose labels include every one of `want`.
    fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample named `name` with labels `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].value
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in `{line}`"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in `{line}`"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            let (i, c) = chars
                .next()
                .unwrap_or_else(|| panic!("unclosed labels `{line}`"));
            if c == '}' {
                break i;
            }
            if c == ',' {
                continue;
            }
            // A label: key="value".
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "`{line}`");
            let mut value = String::new();
            loop {
                let (_, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unclosed value `{line}`"));
                match c {
                    '"' => break,
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        other => panic!("bad escape {other:?} in `{line}`"),
                    },
                    c => value.push(c),
                }
            }
            assert!(
                labels.insert(key, value).is_none(),
                "duplicate label `{line}`"
            );
        };
        rest = &after[end + 1..];
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("bad value in `{line}`: {e}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

async fn scrape(tg: &TestGateway) -> (String, Exposition) {
    let resp = tg.http.get(tg.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    let parsed = Exposition::parse(&text);
    (text, parsed)
}

const REQUESTS: &str = "http_server_request_duration_seconds";

#[tokio::test]
async fn metrics_count_requests_by_fixed_labels_and_name_no_one() {
    let op = OidcProvider::start().await;
    // A second Git upstream that refuses connections: a port just freed.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_port = down.local_addr().unwrap().port();
    drop(down);
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: format!("[git.upstreams.down]\nurl = \"http://127.0.0.1:{down_port}\"\n"),
            ..Opts::default()
        },
    )
    .await;

    // Before anything: the families exist, upstream errors at 0.
    let (_, before) = scrape(&tg).await;
    for kind in ["git", "firestore", "app"] {
        assert_eq!(
            before.value("latchkey_upstream_errors_total", &[("upstream_kind", kind)]),
            0.0
        );
    }

    let alice = tg.token_for(&op, "alice", &["developers"], "git").await;
    let mallory = tg.token_for(&op, "mallory", &["visitors"], "git").await;
    // Allowed: alice reads the repository.
    assert_eq!(tg.git_info_refs(Some(&basic(&alice))).await.status(), 200);
    // Denied by policy: mallory is no developer. Git shows a refusal of
    // info/refs as an ERR packet, in a 200.
    let resp = tg.git_info_refs(Some(&bearer(&mallory))).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("ERR latchkey:"));
    // Allowed, and the upstream is down.
    let resp = tg
        .http
        .get(tg.url("/git/down/acme/app.git/info/refs?service=git-upload-pack"))
        .header("authorization", basic(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    // No credential at all: answered before any decision.
    assert_eq!(tg.git_info_refs(None).await.status(), 401);

    let (text, m) = scrape(&tg).await;

    assert_eq!(m.types[REQUESTS], "histogram");
    let git = |status: &'static str, decision: &'static str| {
        vec![
            ("http_request_method", "GET"),
            ("http_route", "git"),
            ("http_response_status_code", status),
            ("latchkey_decision", decision),
        ]
    };
    let count = format!("{REQUESTS}_count");
    assert_eq!(m.value(&count, &git("200", "allow")), 1.0, "{text}");
    assert_eq!(m.value(&count, &git("200", "deny")), 1.0, "{text}");
    assert_eq!(m.value(&count, &git("502", "allow")), 1.0, "{text}");
    assert_eq!(m.value(&count, &git("401", "none")), 1.0, "{text}");
    // The buckets end at +Inf with the count, and are cumulative.
    let mut inf = git("200", "deny");
    inf.push(("le", "+Inf"));
    assert_eq!(m.value(&format!("{REQUESTS}_bucket"), &inf), 1.0);
    let buckets = m.find(&format!("{REQUESTS}_bucket"), &git("200", "allow"));
    assert_eq!(buckets.len(), 15, "14 bounds and +Inf: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    assert!(m.value(&format!("{REQUESTS}_sum"), &git("200", "allow")) > 0.0);
    // The token exchanges: the token route, allowed.
    let mint = [
        ("http_request_method", "POST"),
        ("http_route", "token"),
        ("http_response_status_code", "200"),
        ("latchkey_decision", "allow"),
    ];
    assert_eq!(m.value(&count, &mint), 2.0, "{text}");
    // The first scrape is counted too, under admin.
    let scrapes = m.find(
        &count,
        &[("http_route", "admin"), ("latchkey_decision", "none")],
    );
    assert_eq!(scrapes.len(), 1, "{scrapes:?}");

    assert_eq!(
        m.value(
            "latchkey_upstream_errors_total",
            &[("upstream_kind", "git")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "latchkey_upstream_errors_total",
            &[("upstream_kind", "firestore")]
        ),
        0.0
    );

    // This scrape's own connection is open.
    assert_eq!(m.types["latchkey_connections_in_use"], "gauge");
    assert!(m.value("latchkey_connections_in_use", &[]) >= 1.0, "{text}");

    // Every request above made durable appends (decisions, refusals).
    assert_eq!(
        m.types["latchkey_audit_append_duration_seconds"],
        "histogram"
    );
    assert!(m.value("latchkey_audit_append_duration_seconds_count", &[]) >= 4.0);
    let lag = m.value("latchkey_audit_index_lag_records", &[]);
    assert!(lag >= 0.0, "{lag}");

    // The issuer's keys were fetched once for the exchanges.
    let refreshes = |result| {
        m.value(
            "latchkey_jwks_refreshes_total",
            &[("issuer_kind", "test-idp"), ("result", result)],
        )
    };
    assert!(refreshes("ok") >= 1.0, "{text}");
    assert_eq!(refreshes("error"), 0.0);

    // Defined for the revocation sync, at 0 until it runs.
    assert_eq!(m.value("latchkey_revocation_sync_lag_seconds", &[]), 0.0);
    assert_eq!(
        m.value("latchkey_revocation_listener_reconnects_total", &[]),
        0.0
    );
    assert_eq!(m.value("latchkey_revocation_applied_seq", &[]), 0.0);

    assert_eq!(
        m.value(
            "latchkey_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Nothing names anyone: every label value is from its fixed set, and
    // neither subjects nor tokens (nor their ids) appear anywhere.
    let fixed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "http_request_method",
            &[
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
                "_OTHER",
            ][..],
        ),
        (
            "http_route",
            &[
                "git",
                "documents_grpc",
                "documents_rest",
                "token",
                "hooks",
                "admin",
                "signin",
                "app",
                "discovery",
                "other",
            ][..],
        ),
        ("latchkey_decision", &["allow", "deny", "none"][..]),
        ("upstream_kind", &["git", "firestore", "app"][..]),
        ("result", &["ok", "error", "rate_limited"][..]),
        ("issuer_kind", &["test-idp"][..]),
    ]);
    let jti = |t: &str| common::jwt_part(t, 1)["jti"].as_str().unwrap().to_owned();
    let secrets = [
        "alice".to_owned(),
        "mallory".to_owned(),
        alice.clone(),
        mallory.clone(),
        jti(&alice),
        jti(&mallory),
    ];
    for s in &m.samples {
        for (k, v) in &s.labels {
            match k.as_str() {
                "le" => assert!(v == "+Inf" || v.parse::<f64>().is_ok(), "{k}={v}"),
                "http_response_status_code" => {
                    let code: u16 = v.parse().unwrap();
                    assert!((100..600).contains(&code), "{v}");
                }
                "version" => assert_eq!(v, env!("CARGO_PKG_VERSION")),
                other => {
                    let allowed = fixed
                        .get(other)
                        .unwrap_or_else(|| panic!("unexpected label `{other}` on {}", s.name));
                    assert!(allowed.contains(&v.as_str()), "{} {k}={v}", s.name);
                }
            }
        }
    }
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "`/metrics` shows `{secret}`"
        );
    }
}
