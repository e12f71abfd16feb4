//! Every signature scheme: good, bad, missing, malformed, tampered, wrong
//! secret, and Buildkite's timestamp window in both directions.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use latchkey_events::{
    DEFAULT_TIMESTAMP_WINDOW, Proof, Source, WebhookError, delivery_id, event_type,
    parse_buildkite_signature, parse_github_signature, signature_headers, verify_signature,
};

const SECRET: &[u8] = b"s3cr3t-webhook-key";
const BODY: &[u8] = br#"{"ref":"refs/heads/main"}"#;
const NOW: u64 = 1_741_000_000;

fn verify(
    source: Source,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Proof, WebhookError> {
    verify_signature(source, SECRET, headers, body, NOW, DEFAULT_TIMESTAMP_WINDOW)
}

fn hmac_hex(secret: &[u8], msg: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    hex::encode(aws_lc_rs::hmac::sign(&key, msg).as_ref())
}

#[test]
fn signed_deliveries_verify_for_every_source() {
    for source in Source::ALL {
        let headers = signature_headers(source, SECRET, BODY, NOW);
        let proof = verify(source, &headers, BODY).unwrap();
        let want = if source == Source::Buildkite {
            Proof::TimestampedHmac { timestamp: NOW }
        } else {
            Proof::BodyHmac
        };
        assert_eq!(proof, want, "{source}");
    }
}

/// The header formats match the vendors' documents byte for byte, computed
/// here independently of `signature_headers`.
#[test]
fn header_formats_match_vendor_documents() {
    let mac = hmac_hex(SECRET, BODY);
    let gogs = vec![("X-Gogs-Signature".to_owned(), mac.clone())];
    assert_eq!(verify(Source::Gogs, &gogs, BODY), Ok(Proof::BodyHmac));
    let gitea = vec![("x-gitea-signature".to_owned(), mac.clone())];
    assert_eq!(verify(Source::Gitea, &gitea, BODY), Ok(Proof::BodyHmac));
    let github = vec![("X-Hub-Signature-256".to_owned(), format!("sha256={mac}"))];
    assert_eq!(verify(Source::GitHub, &github, BODY), Ok(Proof::BodyHmac));
    let mut signed = format!("{NOW}.").into_bytes();
    signed.extend_from_slice(BODY);
    let bk = vec![(
        "X-Buildkite-Signature".to_owned(),
        format!("timestamp={NOW},signature={}", hmac_hex(SECRET, &signed)),
    )];
    assert_eq!(
        verify(Source::Buildkite, &bk, BODY),
        Ok(Proof::TimestampedHmac { timestamp: NOW })
    );
    // Uppercase hex is still the same MAC.
    let upper = vec![("X-Gogs-Signature".to_owned(), mac.to_uppercase())];
    assert_eq!(verify(Source::Gogs, &upper, BODY), Ok(Proof::BodyHmac));
}

#[test]
fn tampered_body_is_refused() {
    for source in Source::ALL {
        let headers = signature_headers(source, SECRET, BODY, NOW);
        let err = verify(source, &headers, br#"{"ref":"refs/heads/evil"}"#).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature { .. }),
            "{source}: {err}"
        );
        assert_eq!(err.status(), 401);
    }
}

#[test]
fn wrong_secret_is_refused() {
    for source in Source::ALL {
        let headers = signature_headers(source, b"another-secret", BODY, NOW);
        let err = verify(source, &headers, BODY).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature { .. }),
            "{source}: {err}"
        );
    }
}

#[test]
fn missing_signature_names_the_header() {
    let none: Vec<(String, String)> = vec![("Content-Type".into(), "application/json".into())];
    for (source, header) in [
        (Source::Gogs, "X-Gogs-Signature"),
        (Source::Gitea, "X-Gitea-Signature"),
        (Source::GitHub, "X-Hub-Signature-256"),
        (Source::Buildkite, "X-Buildkite-Signature"),
    ] {
        let err = verify(source, &none, BODY).unwrap_err();
        assert_eq!(
            err,
            WebhookError::MissingSignature {
                header,
                source_name: source.as_str()
            }
        );
        assert_eq!(err.status(), 401);
        assert!(err.to_string().contains(header));
    }
    // A Gitea signature does not satisfy the Gogs endpoint, nor vice versa.
    let gitea = signature_headers(Source::Gitea, SECRET, BODY, NOW);
    assert!(matches!(
        verify(Source::Gogs, &gitea, BODY),
        Err(WebhookError::MissingSignature { .. })
    ));
    // An empty header counts as missing.
    let empty = vec![("X-Gogs-Signature".to_owned(), "  ".to_owned())];
    assert!(matches!(
        verify(Source::Gogs, &empty, BODY),
        Err(WebhookError::MissingSignature { .. })
    ));
}

#[test]
fn malformed_signature_headers_are_refused() {
    let cases: Vec<(Source, &str, &str)> = vec![
        (Source::Gogs, "X-Gogs-Signature", "not-hex"),
        (Source::Gogs, "X-Gogs-Signature", "abcd"),
        (Source::Gitea, "X-Gitea-Signature", "zz"),
        (Source::GitHub, "X-Hub-Signature-256", "deadbeef"),
        (
            Source::GitHub,
            "X-Hub-Signature-256",
            "sha1=0123456789abcdef0123456789abcdef01234567",
        ),
        (Source::GitHub, "X-Hub-Signature-256", "sha256=xyz"),
        (Source::Buildkite, "X-Buildkite-Signature", "garbage"),
        (Source::Buildkite, "X-Buildkite-Signature", "timestamp=1"),
        (Source::Buildkite, "X-Buildkite-Signature", "signature=ab"),
        (
            Source::Buildkite,
            "X-Buildkite-Signature",
            "timestamp=-5,signature=00",
        ),
        (
            Source::Buildkite,
            "X-Buildkite-Signature",
            "timestamp=1,timestamp=2,signature=00",
        ),
        (
            Source::Buildkite,
            "X-Buildkite-Signature",
            "timestamp=99999999999999999999,signature=00",
        ),
    ];
    for (source, header, value) in cases {
        let headers = vec![(header.to_owned(), value.to_owned())];
        let err = verify(source, &headers, BODY).unwrap_err();
        assert!(
            matches!(err, WebhookError::MalformedSignatureHeader { .. }),
            "{source} {value}: {err}"
        );
        assert_eq!(err.status(), 401);
        assert!(
            !err.to_string().contains(value) || value.len() < 4,
            "value echoed: {err}"
        );
    }
}

#[test]
fn repeated_signature_header_is_refused() {
    let mut headers = signature_headers(Source::GitHub, SECRET, BODY, NOW);
    headers.push(("x-hub-signature-256".into(), "sha256=00".into()));
    assert_eq!(
        verify(Source::GitHub, &headers, BODY),
        Err(WebhookError::DuplicateHeader {
            header: "X-Hub-Signature-256"
        })
    );
}

#[test]
fn empty_secret_fails_closed() {
    let headers = signature_headers(Source::Gogs, b"", BODY, NOW);
    let err = verify_signature(
        Source::Gogs,
        b"",
        &headers,
        BODY,
        NOW,
        DEFAULT_TIMESTAMP_WINDOW,
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::SecretNotConfigured { .. }));
    assert_eq!(err.status(), 500);
}

#[test]
fn buildkite_timestamp_window_both_directions() {
    let window = Duration::from_secs(300);
    let at = |ts: u64| signature_headers(Source::Buildkite, SECRET, BODY, ts);
    let check = |ts: u64| verify_signature(Source::Buildkite, SECRET, &at(ts), BODY, NOW, window);
    assert!(check(NOW - 300).is_ok(), "exactly at the edge (past)");
    assert!(check(NOW + 300).is_ok(), "exactly at the edge (future)");
    assert_eq!(
        check(NOW - 301),
        Err(WebhookError::StaleTimestamp {
            timestamp: NOW - 301,
            age_secs: 301,
            window_secs: 300
        })
    );
    assert_eq!(
        check(NOW + 301),
        Err(WebhookError::FutureTimestamp {
            timestamp: NOW + 301,
            ahead_secs: 301,
            window_secs: 300
        })
    );
    assert_eq!(check(0).unwrap_err().status(), 401);
    // A narrower window is honoured.
    let narrow = verify_signature(
        Source::Buildkite,
        SECRET,
        &at(NOW - 31),
        BODY,
        NOW,
        Duration::from_secs(30),
    );
    assert!(matches!(narrow, Err(WebhookError::StaleTimestamp { .. })));
}

#[test]
fn buildkite_timestamp_is_covered_by_the_signature() {
    // Moving a valid signature to a fresh timestamp breaks it.
    let old = signature_headers(Source::Buildkite, SECRET, BODY, NOW - 3600);
    let sig = parse_buildkite_signature(&old[0].1).unwrap();
    let forged = vec![(
        "X-Buildkite-Signature".to_owned(),
        format!("timestamp={NOW},signature={}", hex::encode(sig.signature)),
    )];
    assert!(matches!(
        verify(Source::Buildkite, &forged, BODY),
        Err(WebhookError::BadSignature { .. })
    ));
}

#[test]
fn buildkite_plain_token() {
    let good = vec![(
        "X-Buildkite-Token".to_owned(),
        String::from_utf8(SECRET.to_vec()).unwrap(),
    )];
    assert_eq!(
        verify(Source::Buildkite, &good, BODY),
        Ok(Proof::PlainToken)
    );
    for wrong in [
        "s3cr3t-webhook-ke",
        "s3cr3t-webhook-keyX",
        "S3CR3T-WEBHOOK-KEY",
    ] {
        let bad = vec![("X-Buildkite-Token".to_owned(), wrong.to_owned())];
        assert!(matches!(
            verify(Source::Buildkite, &bad, BODY),
            Err(WebhookError::BadSignature { .. })
        ));
    }
    // When both are sent, the signature decides.
    let mut both = signature_headers(Source::Buildkite, SECRET, BODY, NOW);
    both.push(("X-Buildkite-Token".into(), "wrong".into()));
    assert_eq!(
        verify(Source::Buildkite, &both, BODY),
        Ok(Proof::TimestampedHmac { timestamp: NOW })
    );
}

#[test]
fn buildkite_header_parser_tolerates_order_and_spaces() {
    let sig = "ab".repeat(32);
    let a = parse_buildkite_signature(&format!("signature={sig}, timestamp=42")).unwrap();
    assert_eq!(a.timestamp, 42);
    let b = parse_buildkite_signature(&format!("timestamp=42,signature={sig},v2=x")).unwrap();
    assert_eq!(a, b);
    assert!(parse_github_signature(&format!("sha256={sig}")).is_ok());
}

#[test]
fn delivery_ids() {
    let h = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let uuid = "f6266f16-1bf3-46a5-9ea4-602e06ead473";
    assert_eq!(
        delivery_id(Source::Gogs, &h("X-Gogs-Delivery", uuid), BODY).unwrap(),
        format!("gogs:{uuid}")
    );
    assert_eq!(
        delivery_id(Source::Gitea, &h("X-Gitea-Delivery", uuid), BODY).unwrap(),
        format!("gitea:{uuid}")
    );
    assert_eq!(
        delivery_id(Source::GitHub, &h("x-github-delivery", uuid), BODY).unwrap(),
        format!("github:{uuid}")
    );
    // Gitea also sends X-Gogs-Delivery; the Gitea endpoint reads its own.
    assert_eq!(
        delivery_id(Source::Gitea, &h("X-Gogs-Delivery", uuid), BODY),
        Err(WebhookError::MissingDeliveryId {
            header: "X-Gitea-Delivery"
        })
    );
    assert!(matches!(
        delivery_id(Source::GitHub, &h("X-GitHub-Delivery", "has space"), BODY),
        Err(WebhookError::MalformedDeliveryId { .. })
    ));
    assert!(matches!(
        delivery_id(
            Source::GitHub,
            &h("X-GitHub-Delivery", &"a".repeat(129)),
            BODY
        ),
        Err(WebhookError::MalformedDeliveryId { .. })
    ));

    // Buildkite: derived from the signature, stable for a replay.
    let signed = signature_headers(Source::Buildkite, SECRET, BODY, NOW);
    let id = delivery_id(Source::Buildkite, &signed, BODY).unwrap();
    assert!(id.starts_with(&format!("buildkite:sig:{NOW}:")), "{id}");
    assert_eq!(id, delivery_id(Source::Buildkite, &signed, BODY).unwrap());
    let later = signature_headers(Source::Buildkite, SECRET, BODY, NOW + 1);
    assert_ne!(id, delivery_id(Source::Buildkite, &later, BODY).unwrap());
    // Token mode: derived from the body.
    let token = h("X-Buildkite-Token", "t");
    let a = delivery_id(Source::Buildkite, &token, BODY).unwrap();
    assert!(a.starts_with("buildkite:body:"));
    assert_eq!(a.len(), "buildkite:body:".len() + 64);
    assert_ne!(a, delivery_id(Source::Buildkite, &token, b"{}").unwrap());
}

#[test]
fn event_type_headers() {
    let h = vec![("X-Buildkite-Event".to_owned(), "build.finished".to_owned())];
    assert_eq!(event_type(Source::Buildkite, &h).unwrap(), "build.finished");
    assert_eq!(
        event_type(Source::GitHub, &h),
        Err(WebhookError::MissingEventType {
            header: "X-GitHub-Event"
        })
    );
    let arr = [("X-Gitea-Event", "push")];
    assert_eq!(event_type(Source::Gitea, &arr).unwrap(), "push");
}

#[test]
fn source_names() {
    for s in Source::ALL {
        assert_eq!(Source::parse(s.as_str()), Ok(s));
    }
    let err = Source::parse("gitlab").unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.to_string(),
        "webhook source `gitlab` is unknown; use gogs, gitea, github or buildkite"
    );
}
