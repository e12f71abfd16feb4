//! `latchkey keys rotate` against a running `latchkey dev`: the gateway
//! learns of the rotation within a second, publishes the new key before it
//! signs, `--now` retires the old key's tokens, and every rotation is in the
//! gateway's audit log (issue 11.7).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Sandbox, ok, stdout};
use serde_json::Value;
use tokio::time::Instant;

/// `GET path` with an optional bearer token over HTTP/1.0: status and body.
fn get(sb: &Sandbox, path: &str, bearer: Option<&str>) -> (u16, String) {
    let addr = sb.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn published_kids(sb: &Sandbox) -> Vec<String> {
    let (status, body) = get(sb, "/.well-known/jwks.json", None);
    assert_eq!(status, 200, "{body}");
    let jwks: Value = serde_json::from_str(&body).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// The kid `keys rotate` printed first in backticks.
fn rotated_kid(out: &std::process::Output) -> String {
    let text = stdout(out);
    let start = text
        .find('`')
        .unwrap_or_else(|| panic!("no kid in: {text}"))
        + 1;
    let end = start + text[start..].find('`').unwrap();
    text[start..end].to_owned()
}

fn info_refs(sb: &Sandbox, token: &str) -> u16 {
    get(
        sb,
        "/git/local/acme/app.git/info/refs?service=git-upload-pack",
        Some(token),
    )
    .0
}

/// Waits at most `limit` for `f`; returns how long it took.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `keys.rotate` events in the audit log, as JSON.
fn rotation_records(sb: &Sandbox) -> Vec<Value> {
    let dir = sb.data.join("audit");
    if !dir.join("audit.log").exists() {
        return Vec::new();
    }
    latchkey_audit::read_records(&dir, 0)
        .unwrap()
        .map(Result::unwrap)
        .filter(|r| r.event.action == "keys.rotate")
        .map(|r| serde_json::to_value(&r.event).unwrap())
        .collect()
}

#[test]
fn keys_rotate_on_a_running_gateway_publishes_before_signing_and_now_retires() {
    let mut sb = Sandbox::start();
    let id = sb.id_token("alice", &["developers"]);
    let first = sb.token(&id, "git");
    let first_kid = kid_of(&first);
    assert_eq!(published_kids(&sb), vec![first_kid.clone()]);

    // Scheduled: published within a second, but the old key still signs.
    let out = ok(sb.cli(&["keys", "rotate"]));
    let next_kid = rotated_kid(&out);
    assert_ne!(next_kid, first_kid);
    within(Duration::from_secs(1), "the new key in JWKS", || {
        published_kids(&sb).contains(&next_kid)
    });
    assert!(published_kids(&sb).contains(&first_kid));
    let second = sb.token(&id, "git");
    assert_eq!(
        kid_of(&second),
        first_kid,
        "the new key must not sign before `publish_ahead`"
    );
    assert_eq!(info_refs(&sb, &first), 200);

    // --now: the new key signs at once; the old key's tokens are dead.
    let out = ok(sb.cli(&["keys", "rotate", "--now"]));
    let now_kid = rotated_kid(&out);
    within(
        Duration::from_secs(1),
        "the old key's tokens refused",
        || info_refs(&sb, &first) == 401,
    );
    assert_eq!(info_refs(&sb, &second), 401);
    assert_eq!(published_kids(&sb), vec![now_kid.clone()]);
    let third = sb.token(&id, "git");
    assert_eq!(kid_of(&third), now_kid);
    assert_eq!(info_refs(&sb, &third), 200);

    // Both rotations are in the gateway's audit log, and it verifies.
    within(Duration::from_secs(1), "two rotation records", || {
        rotation_records(&sb).len() == 2
    });
    let text = rotation_records(&sb)
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains(&next_kid) && text.contains("\"scheduled\""),
        "{text}"
    );
    assert!(
        text.contains(&now_kid) && text.contains("\"now\""),
        "{text}"
    );
    sb.stop();
    ok(sb.cli(&["audit", "verify"]));
}

#[test]
fn keys_rotate_on_a_stopped_gateway_is_audited_at_the_next_start() {
    let mut sb = Sandbox::start();
    sb.stop();
    let out = ok(sb.cli(&["keys", "rotate", "--now"]));
    let kid = rotated_kid(&out);
    assert!(rotation_records(&sb).is_empty());
    sb.restart();
    let records = rotation_records(&sb);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].to_string().contains(&kid), "{records:?}");
    // Audited once, not at every start.
    sb.stop();
    sb.restart();
    assert_eq!(rotation_records(&sb).len(), 1);
}
