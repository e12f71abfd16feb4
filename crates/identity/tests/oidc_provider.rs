//! External token verification against a real OpenID Connect provider
//! (`oidc-provider`, started by `latchkey-testkit` from testing/oidc).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{clock, http, rsa_key, sign_rs256, unsigned};
use latchkey_core::{FakeClock, PrincipalKind};
use latchkey_identity::{ClaimMatch, IdentityError, IssuerConfig, IssuerSet};
use latchkey_testkit::{OidcProvider, client_id};
use serde_json::json;
use std::sync::Arc;

const ALGS: [&str; 5] = ["RS256", "PS256", "ES256", "ES384", "EdDSA"];

fn config(op: &OidcProvider) -> IssuerConfig {
    let mut c = IssuerConfig::new("test-idp", op.issuer(), vec![client_id("RS256")]);
    c.groups_claim = Some("groups".into());
    c
}

fn set_with(cfg: IssuerConfig) -> (Arc<FakeClock>, IssuerSet) {
    let (fake, shared) = clock();
    (fake, IssuerSet::new(vec![cfg], http(), shared).unwrap())
}

#[tokio::test]
async fn every_algorithm_verifies_and_maps() {
    let op = OidcProvider::start().await;
    let mut cfg = config(&op);
    cfg.audiences = ALGS.iter().map(|a| client_id(a)).collect();
    cfg.kind = PrincipalKind::Workload;
    cfg.ci_claims
        .insert("pipeline".into(), "pipeline_slug".into());
    cfg.ci_claims.insert("commit".into(), "sha".into());
    let (_, set) = set_with(cfg);
    for alg in ALGS {
        let token = op
            .mint(
                alg,
                "alice",
                None,
                json!({"groups": ["dev", "ops"], "email": "alice@example.com",
                       "pipeline_slug": "deploy", "sha": "abc123"}),
                300,
            )
            .await;
        let id = set
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(id.principal.id, "alice", "{alg}");
        assert_eq!(id.principal.kind, PrincipalKind::Workload);
        assert_eq!(id.principal.issuer, "test-idp");
        assert_eq!(id.principal.groups, ["dev", "ops"]);
        assert_eq!(id.principal.email.as_deref(), Some("alice@example.com"));
        assert_eq!(id.principal.ci.pipeline.as_deref(), Some("deploy"));
        assert_eq!(id.principal.ci.commit.as_deref(), Some("abc123"));
        assert_eq!(id.issuer_name, "test-idp");
        assert_eq!(id.claims["aud"], client_id(alg));
        assert!(id.expires_at > common::now());
    }
    // One discovery + JWKS fetch served all five tokens.
    assert_eq!(set.refresh_count("test-idp"), Some(1));
}

#[tokio::test]
async fn rejects_alg_none_hs256_and_mismatched_alg() {
    let op = OidcProvider::start().await;
    let (_, set) = set_with(config(&op));
    let claims = json!({"iss": op.issuer(), "sub": "x", "aud": client_id("RS256"),
                        "exp": common::now() + 300});

    let none = unsigned(&json!({"alg": "none"}), &claims);
    assert_eq!(
        set.verify(&none).await,
        Err(IdentityError::AlgorithmNotAllowed { alg: "none".into() })
    );

    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"some shared secret"),
    )
    .unwrap();
    assert_eq!(
        set.verify(&hs).await,
        Err(IdentityError::AlgorithmNotAllowed {
            alg: "HS256".into()
        })
    );

    // The header says ES256 but names the RSA key.
    let (rsa_kid, key) = rsa_key(&op.private_jwks().await);
    let forged = sign_rs256(&key, &json!({"alg": "ES256", "kid": rsa_kid}), &claims);
    assert_eq!(
        set.verify(&forged).await,
        Err(IdentityError::AlgorithmKeyMismatch {
            alg: "ES256".into(),
            kty: "RSA".into()
        })
    );

    // An allowed, fitting algorithm the issuer config does not list.
    let mut only_es = config(&op);
    only_es.algorithms = vec!["ES256".into()];
    let (_, es_set) = set_with(only_es);
    let rs = op.mint("RS256", "x", None, json!({}), 300).await;
    assert_eq!(
        es_set.verify(&rs).await,
        Err(IdentityError::AlgorithmNotAllowed {
            alg: "RS256".into()
        })
    );

    // Sanity: the same key with the right header is accepted.
    let good = sign_rs256(&key, &json!({"alg": "RS256", "kid": rsa_kid}), &claims);
    assert_eq!(set.verify(&good).await.unwrap().principal.id, "x");
    // ...and a flipped signature byte is not.
    let mut bad = good.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(set.verify(&bad).await, Err(IdentityError::BadSignature));
}

#[tokio::test]
async fn rejects_wrong_issuer_audience_and_times() {
    let op = OidcProvider::start().await;
    let (fake, set) = set_with(config(&op));
    let (kid, key) = rsa_key(&op.private_jwks().await);
    let header = json!({"alg": "RS256", "kid": kid});
    let now = common::now();

    let other = sign_rs256(
        &key,
        &header,
        &json!({"iss": "https://evil.example", "sub": "x",
        "aud": client_id("RS256"), "exp": now + 300}),
    );
    assert_eq!(
        set.verify(&other).await,
        Err(IdentityError::UnknownIssuer {
            iss: "https://evil.example".into()
        })
    );
    let slash = sign_rs256(
        &key,
        &header,
        &json!({"iss": format!("{}/", op.issuer()), "sub": "x",
        "aud": client_id("RS256"), "exp": now + 300}),
    );
    assert_eq!(set.verify(&slash).await.unwrap_err().code(), "wrong_issuer");

    // A real token for another client of the same provider.
    let es = op.mint("ES256", "x", None, json!({}), 300).await;
    assert_eq!(
        set.verify(&es).await,
        Err(IdentityError::WrongAudience {
            got: client_id("ES256")
        })
    );

    let expired = op.mint("RS256", "x", None, json!({}), -120).await;
    assert_eq!(set.verify(&expired).await, Err(IdentityError::Expired));

    // Within the 60 s skew an just-expired token still passes.
    let fresh = op.mint("RS256", "x", None, json!({}), 30).await;
    fake.advance(Duration::from_secs(60));
    assert!(set.verify(&fresh).await.is_ok());
    fake.advance(Duration::from_secs(40));
    assert_eq!(set.verify(&fresh).await, Err(IdentityError::Expired));
    fake.set(now);

    let nbf = op
        .mint("RS256", "x", None, json!({"nbf": now + 600}), 1200)
        .await;
    assert_eq!(set.verify(&nbf).await, Err(IdentityError::NotYetValid));
    // The Latchkey clock behind the issuer's: `iat` is in the future.
    let token = op.mint("RS256", "x", None, json!({}), 3600).await;
    fake.set(now - 600);
    assert_eq!(set.verify(&token).await, Err(IdentityError::NotYetValid));
    fake.set(now);
    assert!(set.verify(&token).await.is_ok());

    let no_exp = sign_rs256(
        &key,
        &header,
        &json!({"iss": op.issuer(), "sub": "x",
        "aud": client_id("RS256")}),
    );
    assert_eq!(
        set.verify(&no_exp).await,
        Err(IdentityError::MissingClaim {
            claim: "exp".into()
        })
    );
}

#[tokio::test]
async fn oversize_and_malformed() {
    let op = OidcProvider::start().await;
    let (_, set) = set_with(config(&op));
    let big = op
        .mint(
            "RS256",
            "x",
            None,
            json!({"padding": "p".repeat(20_000)}),
            300,
        )
        .await;
    assert!(matches!(
        set.verify(&big).await,
        Err(IdentityError::TokenTooLarge { .. })
    ));
    assert_eq!(
        set.verify("not.a-token").await.unwrap_err().code(),
        "malformed"
    );
    // Nothing was fetched for tokens rejected before the issuer is known.
    assert_eq!(set.refresh_count("test-idp"), Some(0));
}

#[tokio::test]
async fn unknown_kid_refreshes_at_most_once_per_interval() {
    let op = OidcProvider::start().await;
    let (fake, set) = set_with(config(&op));
    let good = op.mint("RS256", "x", None, json!({}), 300).await;
    set.verify(&good).await.unwrap();
    assert_eq!(set.refresh_count("test-idp"), Some(1));

    let (_, key) = rsa_key(&op.private_jwks().await);
    let claims = json!({"iss": op.issuer(), "sub": "x", "aud": client_id("RS256"),
                        "exp": common::now() + 300});
    let forge = |kid: &str| sign_rs256(&key, &json!({"alg": "RS256", "kid": kid}), &claims);

    // Within 5 s of the first fetch: no refresh at all.
    assert_eq!(
        set.verify(&forge("rotated-1")).await,
        Err(IdentityError::UnknownKey {
            kid: "rotated-1".into()
        })
    );
    assert_eq!(set.refresh_count("test-idp"), Some(1));

    fake.advance(Duration::from_secs(6));
    assert_eq!(
        set.verify(&forge("rotated-2")).await.unwrap_err().code(),
        "unknown_key"
    );
    assert_eq!(set.refresh_count("test-idp"), Some(2));
    // A second unknown kid right after: rate limited, no fetch.
    assert_eq!(
        set.verify(&forge("rotated-3")).await.unwrap_err().code(),
        "unknown_key"
    );
    assert_eq!(set.refresh_count("test-idp"), Some(2));
    // Known keys keep working meanwhile.
    set.verify(&good).await.unwrap();
    assert_eq!(set.refresh_count("test-idp"), Some(2));
}

#[tokio::test]
async fn bound_claims_subject_and_groups() {
    let op = OidcProvider::start().await;
    let mut cfg = config(&op);
    cfg.bound_claims
        .insert("repository".into(), ClaimMatch::One("acme/*".into()));
    cfg.bound_claims.insert(
        "ref".into(),
        ClaimMatch::Any(vec!["refs/heads/main".into(), "refs/tags/v*".into()]),
    );
    let (_, set) = set_with(cfg.clone());

    let ok = op
        .mint(
            "RS256",
            "x",
            None,
            json!({"repository": "acme/web", "ref": "refs/tags/v1.2", "groups": "solo"}),
            300,
        )
        .await;
    let id = set.verify(&ok).await.unwrap();
    assert_eq!(id.principal.groups, ["solo"]);

    let wrong_repo = op
        .mint(
            "RS256",
            "x",
            None,
            json!({"repository": "evil/web", "ref": "refs/heads/main"}),
            300,
        )
        .await;
    assert_eq!(
        set.verify(&wrong_repo).await,
        Err(IdentityError::BoundClaimMismatch {
            claim: "repository".into()
        })
    );
    let missing = op
        .mint("RS256", "x", None, json!({"repository": "acme/web"}), 300)
        .await;
    assert_eq!(
        set.verify(&missing).await,
        Err(IdentityError::BoundClaimMismatch {
            claim: "ref".into()
        })
    );

    cfg.bound_claims.clear();
    cfg.subject_claim = "preferred_username".into();
    let (_, by_username) = set_with(cfg);
    let no_user = op.mint("RS256", "x", None, json!({}), 300).await;
    assert_eq!(
        by_username.verify(&no_user).await,
        Err(IdentityError::MissingClaim {
            claim: "preferred_username".into()
        })
    );
    let user = op
        .mint(
            "RS256",
            "x",
            None,
            json!({"preferred_username": "bob", "groups": ["a", 1, "b"]}),
            300,
        )
        .await;
    let id = by_username.verify(&user).await.unwrap();
    assert_eq!(id.principal.id, "bob");
    assert_eq!(id.principal.groups, ["a", "b"]);
    assert_eq!(id.principal.email, None);
}

#[tokio::test]
async fn issuer_down_fails_closed() {
    let mut op = OidcProvider::start().await;
    let token = op.mint("RS256", "x", None, json!({}), 300).await;
    let (_, set) = set_with(config(&op));
    op.stop().await;
    match set.verify(&token).await {
        Err(IdentityError::IssuerUnavailable { issuer, reason }) => {
            assert_eq!(issuer, "test-idp");
            assert!(reason.contains("could not connect"), "{reason}");
        }
        other => panic!("expected IssuerUnavailable, got {other:?}"),
    }
    // Immediately again: rate limited, still refused, no new fetch.
    assert_eq!(
        set.verify(&token).await.unwrap_err().code(),
        "issuer_unavailable"
    );
    assert_eq!(set.refresh_count("test-idp"), Some(1));
}

#[tokio::test]
async fn cached_keys_survive_a_short_outage_but_not_the_hard_maximum() {
    let mut op = OidcProvider::start().await;
    let (fake, set) = set_with(config(&op));
    let token = op.mint("RS256", "x", None, json!({}), 3600).await;
    set.verify(&token).await.unwrap();
    op.stop().await;
    // Past the 5 min default cache lifetime: refresh fails, stale keys used.
    fake.advance(Duration::from_secs(301));
    set.verify(&token).await.unwrap();
    assert_eq!(set.refresh_count("test-idp"), Some(2));
    // Past the hard maximum: refused.
    fake.advance(latchkey_identity::HARD_MAX_KEY_AGE);
    let e = set.verify(&token).await.unwrap_err();
    assert_eq!(e.code(), "issuer_unavailable", "{e}");
}
