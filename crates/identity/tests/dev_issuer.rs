//! The development issuer round trip, and JWKS caching / bounds against a
//! tiny local HTTP server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{TinyServer, clock, http};
use latchkey_core::Clock as _;
use latchkey_identity::{DevIssuer, IdentityError, IssuerConfig, IssuerSet};
use serde_json::{Map, json};

async fn served_dev_issuer(dir: &std::path::Path, cache_control: &str) -> (TinyServer, DevIssuer) {
    let server = TinyServer::start().await;
    let dev = DevIssuer::load_or_create(
        &dir.join("keys/dev-idp.pem"),
        format!("{}/dev-idp", server.base),
    )
    .unwrap();
    server.route(
        "/dev-idp/.well-known/openid-configuration",
        "",
        dev.discovery_document().to_string(),
    );
    server.route("/dev-idp/jwks.json", cache_control, dev.jwks().to_string());
    (server, dev)
}

fn dev_config(dev: &DevIssuer) -> IssuerConfig {
    let mut c = IssuerConfig::new("dev", dev.issuer(), vec!["latchkey".into()]);
    c.groups_claim = Some("groups".into());
    c.dev = true;
    c
}

#[tokio::test]
async fn key_file_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dev.pem");
    let a = DevIssuer::load_or_create(&path, "http://127.0.0.1:1/dev-idp".into()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let b = DevIssuer::load_or_create(&path, "http://127.0.0.1:1/dev-idp".into()).unwrap();
    assert_eq!(a.kid(), b.kid());
    assert_eq!(a.jwks(), b.jwks());
    assert_eq!(
        a.discovery_document()["jwks_uri"],
        "http://127.0.0.1:1/dev-idp/jwks.json"
    );

    std::fs::write(&path, "garbage").unwrap();
    let e = DevIssuer::load_or_create(&path, "http://x".into()).unwrap_err();
    assert_eq!(e.code(), "dev_issuer");
    assert!(e.to_string().contains("delete it"), "{e}");
}

#[tokio::test]
async fn dev_token_round_trip_and_cache_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let (server, dev) =
        served_dev_issuer(dir.path(), "cache-control: public, max-age=120\r\n").await;
    let (fake, shared) = clock();
    let set = IssuerSet::new(vec![dev_config(&dev)], http(), shared).unwrap();

    let mut extra = Map::new();
    extra.insert("iss".into(), json!("https://spoofed.example")); // cannot override
    extra.insert("team".into(), json!("platform"));
    let token = dev
        .mint_id_token(
            "alice",
            &["admins".to_string()],
            Some("alice@example.com"),
            "latchkey",
            Duration::from_secs(900),
            extra,
            common::now(),
        )
        .unwrap();
    let id = set.verify(&token).await.unwrap();
    assert_eq!(id.principal.id, "alice");
    assert_eq!(id.principal.issuer, "dev");
    assert_eq!(id.principal.groups, ["admins"]);
    assert_eq!(id.principal.email.as_deref(), Some("alice@example.com"));
    assert_eq!(id.claims["team"], "platform");
    assert!((common::now() + 890..=common::now() + 910).contains(&id.expires_at));
    assert_eq!(server.hits(), 2); // discovery + JWKS

    fake.advance(Duration::from_secs(100));
    set.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2, "still within max-age=120");
    fake.advance(Duration::from_secs(30));
    set.verify(&token).await.unwrap();
    assert_eq!(
        server.hits(),
        4,
        "max-age passed: rediscovered and refetched"
    );

    let other_aud = dev
        .mint_id_token(
            "alice",
            &[],
            None,
            "someone-else",
            Duration::from_secs(60),
            Map::new(),
            fake.unix(),
        )
        .unwrap();
    assert_eq!(
        set.verify(&other_aud).await,
        Err(IdentityError::WrongAudience {
            got: "someone-else".into()
        })
    );
}

#[tokio::test]
async fn configured_jwks_uri_skips_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let (server, dev) = served_dev_issuer(dir.path(), "").await;
    let mut cfg = dev_config(&dev);
    cfg.jwks_uri = Some(format!("{}/dev-idp/jwks.json", server.base));
    let (_, shared) = clock();
    let set = IssuerSet::new(vec![cfg], http(), shared).unwrap();
    let token = dev
        .mint_id_token(
            "bob",
            &[],
            None,
            "latchkey",
            Duration::from_secs(60),
            Map::new(),
            common::now(),
        )
        .unwrap();
    set.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn bad_key_sources_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, dev) = served_dev_issuer(dir.path(), "").await;
    let token = dev
        .mint_id_token(
            "bob",
            &[],
            None,
            "latchkey",
            Duration::from_secs(60),
            Map::new(),
            common::now(),
        )
        .unwrap();

    // A JWKS over the 1 MiB cap.
    let huge =
        json!({"keys": [], "pad": "x".repeat(latchkey_identity::MAX_BODY_BYTES)}).to_string();
    server.route("/dev-idp/jwks.json", "", huge);
    let (_, shared) = clock();
    let set = IssuerSet::new(vec![dev_config(&dev)], http(), shared).unwrap();
    match set.verify(&token).await {
        Err(IdentityError::IssuerUnavailable { reason, .. }) => {
            assert!(reason.contains("larger than"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // A discovery document that names another issuer.
    let mut doc = dev.discovery_document();
    doc["issuer"] = json!("https://elsewhere.example");
    server.route(
        "/dev-idp/.well-known/openid-configuration",
        "",
        doc.to_string(),
    );
    let (_, shared) = clock();
    let set = IssuerSet::new(vec![dev_config(&dev)], http(), shared).unwrap();
    match set.verify(&token).await {
        Err(IdentityError::IssuerUnavailable { reason, .. }) => {
            assert!(reason.contains("names issuer"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn duplicate_issuers_are_rejected() {
    let a = IssuerConfig::new("a", "https://idp.example", vec!["x".into()]);
    let mut b = a.clone();
    b.name = "b".into();
    let (_, shared) = clock();
    let e = IssuerSet::new(vec![a.clone(), b], http(), shared.clone()).unwrap_err();
    assert_eq!(e.code(), "config");
    let mut c = a.clone();
    c.issuer = "https://other.example".into();
    let e = IssuerSet::new(vec![a, c], http(), shared).unwrap_err();
    assert!(e.to_string().contains("`name`"), "{e}");
}
