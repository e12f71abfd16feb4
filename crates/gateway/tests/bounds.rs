//! Unauthenticated work is bounded (DESIGN.md invariant 7): audit bytes per
//! refusal, refusal records per client address, connection time-outs and
//! caps, HTTP/2 limits, echoes of caller input, and admin endpoints that
//! authenticate before they read a body.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{GRANT, Opts, TT_ID, TestGateway, bearer, now, unsigned};
use latchkey_testkit::OidcProvider;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn limits(lines: &str) -> Opts {
    Opts {
        extra_toml: format!("[server.limits]\n{lines}\n"),
        ..Opts::default()
    }
}

fn audit_bytes(tg: &TestGateway) -> u64 {
    std::fs::metadata(tg.audit_dir().join("audit.log"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// An unsigned token whose `iss` is `iss_len` bytes: refused before any key
/// is looked at, as an attacker with no credential can send it.
fn huge_iss_token(iss_len: usize) -> String {
    let iss = format!("https://{}", "i".repeat(iss_len));
    unsigned(
        &json!({"alg": "RS256", "kid": "k"}),
        &json!({"iss": iss, "sub": "x", "aud": "a", "exp": now() + 300, "iat": now()}),
        b"junk",
    )
}

fn exchange_form(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", GRANT.to_owned()),
        ("subject_token", token.to_owned()),
        ("subject_token_type", TT_ID.to_owned()),
        ("audience", "git".to_owned()),
    ]
}

fn refusals(tg: &TestGateway, status: &str) -> Vec<latchkey_audit::AuditRecord> {
    tg.audit_records()
        .into_iter()
        .filter(|r| r.event.outcome.as_ref().is_some_and(|o| o.status == status))
        .collect()
}

#[tokio::test]
async fn huge_iss_tokens_add_bounded_audit_bytes_and_a_summary() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let before = audit_bytes(&tg);
    let token = huge_iss_token(11_500);
    let form = exchange_form(&token);
    for _ in 0..200 {
        let resp = tg
            .http
            .post(tg.url("/oauth2/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        // The refusal still reaches the caller, every time.
        assert_eq!(resp.status(), 400);
        let text = resp.text().await.unwrap();
        assert!(text.len() < 1024, "the refusal echoes too much: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("is not trusted"),
            "{body}"
        );
    }
    let grown = audit_bytes(&tg) - before;
    assert!(
        grown < 32 * 1024,
        "200 refusals added {grown} bytes to the audit log"
    );
    let recorded = refusals(&tg, "refused:unknown_issuer");
    assert!(
        !recorded.is_empty() && recorded.len() <= 20,
        "{} refusal records",
        recorded.len()
    );
    for r in &recorded {
        let detail = r.event.outcome.as_ref().unwrap().detail.clone().unwrap();
        assert!(detail.len() <= 512, "detail of {} bytes", detail.len());
        assert_eq!(r.event.context["client"], "127.0.0.1");
    }
    assert!(refusals(&tg, "suppressed").is_empty());

    // The next interval: the first refusal brings a summary of the last.
    tg.clock.advance(Duration::from_secs(61));
    let resp = tg
        .http
        .post(tg.url("/oauth2/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let summary = refusals(&tg, "suppressed");
    assert_eq!(summary.len(), 1, "one summary record");
    let e = &summary[0].event;
    assert_eq!(e.context["client"], "127.0.0.1");
    assert_eq!(
        e.context["suppressed"].as_u64().unwrap() as usize,
        200 - recorded.len()
    );
    assert_eq!(
        refusals(&tg, "refused:unknown_issuer").len(),
        recorded.len() + 1
    );
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn refusal_records_are_limited_per_client_address() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, limits("unauthenticated_refusals = 3")).await;
    let garbage = [("authorization", "Bearer not.a.token")];
    for (ip, n) in [("127.0.0.1", 6), ("127.0.0.2", 2)] {
        let c = client_from(ip);
        for _ in 0..n {
            let mut req =
                c.get(tg.url("/git/local/acme/app.git/info/refs?service=git-upload-pack"));
            for (k, v) in garbage {
                req = req.header(k, v);
            }
            assert_eq!(req.send().await.unwrap().status(), 401);
        }
    }
    let recorded = refusals(&tg, "refused:token_refused");
    let from = |ip: &str| {
        recorded
            .iter()
            .filter(|r| r.event.context["client"] == ip)
            .count()
    };
    assert_eq!(from("127.0.0.1"), 3, "the noisy client is capped");
    assert_eq!(from("127.0.0.2"), 2, "another client is not silenced by it");
}

async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + within, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

fn addr(tg: &TestGateway) -> String {
    tg.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn half_sent_headers_are_closed_after_the_header_read_timeout() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        limits("header_read_timeout = \"1s\"\nidle_timeout = \"30s\""),
    )
    .await;
    // Half a request head: the first line and one header, no blank line.
    let mut half = TcpStream::connect(addr(&tg)).await.unwrap();
    half.write_all(b"GET /admin/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Fewer bytes than the HTTP/2 preface: not even the protocol is known.
    let mut short = TcpStream::connect(addr(&tg)).await.unwrap();
    short.write_all(b"GET / HT").await.unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(addr(&tg)).await.unwrap();
    for (name, s) in [
        ("half", &mut half),
        ("short", &mut short),
        ("silent", &mut silent),
    ] {
        let closed = closed_within(s, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "{name}: the connection is still open after 5 s"
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        limits("header_read_timeout = \"1s\"\nidle_timeout = \"2s\""),
    )
    .await;
    let mut s = TcpStream::connect(addr(&tg)).await.unwrap();
    s.write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let closed = closed_within(&mut s, Duration::from_secs(6))
        .await
        .expect("the idle keep-alive connection is still open after 6 s");
    assert!(
        closed >= Duration::from_millis(1800),
        "closed after {closed:?}: the idle time-out is 2 s, not the header time-out"
    );
}

#[tokio::test]
async fn the_connection_cap_holds_and_waiting_connections_are_served_later() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        limits("max_connections = 2\nheader_read_timeout = \"30s\"\nidle_timeout = \"30s\""),
    )
    .await;
    let first = TcpStream::connect(addr(&tg)).await.unwrap();
    let _second = TcpStream::connect(addr(&tg)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr(&tg)).await.unwrap();
    third
        .write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served past the cap of 2"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the waiting connection is served once a slot frees")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

/// The server's HTTP/2 SETTINGS frame, as (identifier, value) pairs.
async fn h2_settings(tg: &TestGateway) -> Vec<(u16, u32)> {
    let mut s = TcpStream::connect(addr(tg)).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 4, "the server speaks first with SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

#[tokio::test]
async fn http2_limits_are_explicit() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(
        &op,
        limits("http2_max_concurrent_streams = 32\nhttp2_max_header_list_bytes = 8192"),
    )
    .await;
    let settings = h2_settings(&tg).await;
    assert!(
        settings.contains(&(0x3, 32)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 8192)),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );
}

#[tokio::test]
async fn limits_that_make_no_sense_are_refused_naming_the_key() {
    for (lines, key) in [
        ("max_connections = 0", "server.limits.max_connections"),
        (
            "header_read_timeout = \"0s\"",
            "server.limits.header_read_timeout",
        ),
        (
            "unauthenticated_interval = \"0s\"",
            "server.limits.unauthenticated_interval",
        ),
    ] {
        let toml = format!("[server.limits]\n{lines}\n");
        let err = latchkey_gateway::config::Config::parse(&toml).unwrap_err();
        assert!(err.to_string().contains(key), "{lines}: {err}");
    }
}

#[tokio::test]
async fn error_texts_echo_a_bounded_prefix_of_caller_input() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let long = "a".repeat(10_000);
    let check = |what: &str, text: String| {
        assert!(text.len() < 600, "{what}: {} bytes: {text}", text.len());
        assert!(
            text.contains("aaaa"),
            "{what}: the prefix is still shown: {text}"
        );
    };
    let resp = tg
        .http
        .get(tg.url(&format!(
            "/git/local/{long}/app.git/info/refs?service=git-upload-pack"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    check("git path", resp.text().await.unwrap());

    let resp = tg
        .http
        .get(tg.url(&format!(
            "/git/{long}/acme/app.git/info/refs?service=git-upload-pack"
        )))
        .send()
        .await
        .unwrap();
    check("git upstream", resp.text().await.unwrap());

    let resp = tg
        .http
        .get(tg.url(&format!("/git/local/acme/app.git/info/refs?service={long}")))
        .send()
        .await
        .unwrap();
    check("git service", resp.text().await.unwrap());

    let resp = tg
        .http
        .post(tg.url(&format!("/hooks/{long}")))
        .body("{}")
        .send()
        .await
        .unwrap();
    check("webhook source", resp.text().await.unwrap());

    for field in ["grant_type", "audience", "subject_token_type"] {
        let mut form = exchange_form("a.b.c");
        form.retain(|(k, _)| *k != field);
        form.push((field, long.clone()));
        let (_, body) = tg
            .token_form(
                &form
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect::<Vec<_>>(),
            )
            .await;
        check(
            field,
            body["error_description"].as_str().unwrap().to_owned(),
        );
    }
}

#[tokio::test]
async fn admin_endpoints_authenticate_before_reading_the_body() {
    let op = OidcProvider::start().await;
    let tg = TestGateway::start(&op, Opts::default()).await;
    let huge = "x".repeat(1024 * 1024);
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "huge revocation",
            tg.http
                .post(tg.url("/admin/revocations"))
                .header("content-type", "application/json")
                .body(huge.clone()),
        ),
        (
            "malformed revocation",
            tg.http
                .post(tg.url("/admin/revocations"))
                .header("content-type", "application/json")
                .body("{"),
        ),
        (
            "revocation without content type",
            tg.http.post(tg.url("/admin/revocations")).body("{}"),
        ),
        (
            "lift without query",
            tg.http.delete(tg.url("/admin/revocations")),
        ),
        (
            "audit with bad query",
            tg.http.get(tg.url("/admin/audit?limit=many")),
        ),
        (
            "huge RFC 7009 form",
            tg.http
                .post(tg.url("/oauth2/revoke"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(huge.clone()),
        ),
        (
            "huge RFC 7662 form",
            tg.http
                .post(tg.url("/oauth2/introspect"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(huge.clone()),
        ),
    ];
    for (what, req) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert!(resp.headers().contains_key("www-authenticate"), "{what}");
    }

    // Authenticated, the body is read and judged as before.
    let admin = tg.admin_token(&op).await;
    let post = |body: String, ct: &'static str| {
        tg.http
            .post(tg.url("/admin/revocations"))
            .header("authorization", bearer(&admin))
            .header("content-type", ct)
            .body(body)
    };
    let resp = post("{".into(), "application/json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error_description"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
    let resp = post(huge, "application/json").send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = post("{}".into(), "text/plain").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    let resp = post(
        json!({"kind": "subject", "value": "mallory"}).to_string(),
        "application/json",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
}
