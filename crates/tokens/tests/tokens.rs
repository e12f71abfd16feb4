//! Minting, verifying, rotating and revoking Latchkey tokens against a real
//! (in-memory SQLite) store and a fake clock.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::{Actor, CiClaims, FakeClock, Principal, PrincipalKind, SharedClock};
use latchkey_store::{
    Revocation, RevocationKind, RevocationMode, SharedStore, SqliteStore, StoredSigningKey,
};
use latchkey_tokens::{
    KeySchedule, KeyState, Lifetimes, MasterKey, MintRequest, RevocationSet, RotationMode,
    SigningKeyRing, TokenClaims, TokenError, TokenIssuer, TokenVerifier,
};
use tokio::time::Instant;

const T0: u64 = 1_700_000_000;
const ISS: &str = "https://latchkey.example";
const HOUR: u64 = 3600;

struct Env {
    clock: Arc<FakeClock>,
    store: SharedStore,
    master: MasterKey,
    ring: Arc<SigningKeyRing>,
    revocations: Arc<RevocationSet>,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
}

impl Env {
    async fn new() -> Self {
        let store: SharedStore = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        Self::with(store, MasterKey::generate().unwrap(), Lifetimes::default()).await
    }

    async fn with(store: SharedStore, master: MasterKey, lifetimes: Lifetimes) -> Self {
        let clock = Arc::new(FakeClock::at(T0));
        let shared: SharedClock = clock.clone();
        let ring = Arc::new(
            SigningKeyRing::load(
                store.clone(),
                master.clone(),
                shared.clone(),
                KeySchedule::default(),
            )
            .await
            .unwrap(),
        );
        let revocations = Arc::new(
            RevocationSet::load(store.clone(), shared.clone())
                .await
                .unwrap(),
        );
        let issuer = TokenIssuer::new(
            ISS.into(),
            ring.clone(),
            revocations.clone(),
            shared.clone(),
            lifetimes,
        );
        let verifier = Self::verifier_for(&ring, &revocations, shared, ISS);
        Self {
            clock,
            store,
            master,
            ring,
            revocations,
            issuer,
            verifier,
        }
    }

    fn verifier_for(
        ring: &Arc<SigningKeyRing>,
        revocations: &Arc<RevocationSet>,
        clock: SharedClock,
        issuer: &str,
    ) -> TokenVerifier {
        TokenVerifier::new(
            issuer.into(),
            ring.clone(),
            revocations.clone(),
            clock,
            1000,
        )
    }

    fn fresh_verifier(&self) -> TokenVerifier {
        Self::verifier_for(&self.ring, &self.revocations, self.clock.clone(), ISS)
    }

    fn mint(&self, principal: Principal, audience: &str) -> latchkey_tokens::MintedToken {
        self.issuer.mint(&request(principal, audience)).unwrap()
    }
}

fn request(principal: Principal, audience: &str) -> MintRequest {
    MintRequest {
        principal,
        audience: audience.into(),
        scope: vec!["git:read".into(), "git:write".into()],
        lifetime: None,
        // An identity that outlives every test clock: the caps decide.
        not_after: u64::MAX,
    }
}

fn alice() -> Principal {
    let mut p = Principal::new(PrincipalKind::User, "alice", "okta");
    p.groups = vec!["eng".into(), "oncall".into()];
    p.email = Some("alice@example.com".into());
    p
}

fn ci_job() -> Principal {
    let mut p = Principal::new(
        PrincipalKind::Workload,
        "pipeline:deploy:job:42",
        "buildkite",
    );
    p.ci = CiClaims {
        system: Some("buildkite".into()),
        pipeline: Some("deploy".into()),
        job_id: Some("job-42".into()),
        commit: Some("abc123".into()),
        ..CiClaims::default()
    };
    p
}

fn revocation(kind: RevocationKind, value: &str, mode: RevocationMode, at: u64) -> Revocation {
    Revocation {
        kind,
        value: value.into(),
        mode,
        created_at: at,
        expires_at: None,
        reason: "test".into(),
    }
}

fn header_of(token: &str) -> serde_json::Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

fn payload_of(token: &str) -> serde_json::Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

fn with_payload(token: &str, payload: &serde_json::Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap());
    format!("{}.{}.{}", parts[0], body, parts[2])
}

#[tokio::test]
async fn mint_verify_round_trip() {
    let env = Env::new().await;
    let mut p = alice();
    p.actor = Some(Actor {
        kind: PrincipalKind::Agent,
        sub: "review-bot".into(),
        iss: Some("latchkey".into()),
    });
    p.attributes.insert("client_id".into(), "cli".into());
    let minted = env.mint(p.clone(), "git");
    assert_eq!(minted.expires_in, 15 * 60);

    let header = header_of(&minted.token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], env.ring.keys()[0].kid.as_str());

    let payload = payload_of(&minted.token);
    assert_eq!(payload["iss"], ISS);
    assert_eq!(payload["aud"], "git");
    assert_eq!(payload["scope"], "git:read git:write");
    assert_eq!(payload["lk_kind"], "user");
    assert_eq!(payload["lk_src"], "okta");
    assert_eq!(payload["client_id"], "cli");
    assert_eq!(
        payload["act"],
        serde_json::json!({"kind": "agent", "sub": "review-bot", "iss": "latchkey"})
    );
    assert_eq!(payload["exp"], T0 + 900);
    assert_eq!(payload["iat"], T0);
    assert_eq!(payload["nbf"], T0);
    assert!(payload.get("lk_ci").is_none(), "empty ci omitted");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(payload["jti"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );

    let verified = env.verifier.verify(&minted.token, "git").unwrap();
    assert_eq!(*verified.claims, minted.claims);
    p.attributes.clear(); // attributes are not carried in tokens
    // The granted scopes narrow the principal the token stands for.
    p.scopes = Some(vec!["git:read".into(), "git:write".into()]);
    assert_eq!(verified.principal, p);

    // Two tokens never share a jti.
    assert_ne!(env.mint(alice(), "git").claims.jti, minted.claims.jti);
}

#[tokio::test]
async fn workload_claims_round_trip() {
    let env = Env::new().await;
    let minted = env.mint(ci_job(), "docs");
    assert_eq!(payload_of(&minted.token)["lk_ci"]["job_id"], "job-42");
    let verified = env.verifier.verify(&minted.token, "docs").unwrap();
    let mut expected = ci_job();
    expected.scopes = Some(vec!["git:read".into(), "git:write".into()]);
    assert_eq!(verified.principal, expected);
}

#[tokio::test]
async fn wrong_audience_and_issuer() {
    let env = Env::new().await;
    let minted = env.mint(alice(), "git");
    let err = env.verifier.verify(&minted.token, "docs").unwrap_err();
    assert!(
        matches!(&err, TokenError::WrongAudience { expected, got } if expected == "docs" && got == "git")
    );
    assert_eq!(
        err.to_string(),
        "token is for audience `git`, not `docs`; request a token for `docs`"
    );
    assert_eq!(err.oauth_error_code(), "invalid_grant");
    // Introspection accepts any audience.
    assert_eq!(
        env.verifier
            .verify_any_audience(&minted.token)
            .unwrap()
            .claims
            .aud,
        "git"
    );

    let other = Env::verifier_for(
        &env.ring,
        &env.revocations,
        env.clock.clone(),
        "https://other.example",
    );
    let err = other.verify(&minted.token, "git").unwrap_err();
    assert!(
        matches!(&err, TokenError::WrongIssuer { got, .. } if got == ISS),
        "{err}"
    );
}

#[tokio::test]
async fn expiry_has_no_skew() {
    let env = Env::new().await;
    let minted = env.mint(alice(), "git");
    env.clock.advance(Duration::from_secs(899));
    env.fresh_verifier().verify(&minted.token, "git").unwrap();
    env.verifier.verify(&minted.token, "git").unwrap(); // now cached
    env.clock.advance(Duration::from_secs(1));
    // Both the full path and the cache-hit path refuse at exp.
    for v in [&env.verifier, &env.fresh_verifier()] {
        let err = v.verify(&minted.token, "git").unwrap_err();
        assert!(
            matches!(err, TokenError::Expired { at } if at == T0 + 900),
            "{err}"
        );
    }
    assert_eq!(
        env.verifier.cached(),
        0,
        "expired entry dropped from the cache"
    );
}

#[tokio::test]
async fn nbf_allows_sixty_seconds_of_skew() {
    let env = Env::new().await;
    let minted = env.mint(alice(), "git");
    let behind = |secs: u64| {
        let clock: SharedClock = Arc::new(FakeClock::at(T0 - secs));
        Env::verifier_for(&env.ring, &env.revocations, clock, ISS)
    };
    behind(60).verify(&minted.token, "git").unwrap();
    let err = behind(61).verify(&minted.token, "git").unwrap_err();
    assert!(
        matches!(err, TokenError::NotYetValid { nbf } if nbf == T0),
        "{err}"
    );
}

#[tokio::test]
async fn tampered_and_forged_tokens_fail() {
    let env = Env::new().await;
    let minted = env.mint(alice(), "git");

    // Tampered payload, original signature.
    let mut payload = payload_of(&minted.token);
    payload["sub"] = "mallory".into();
    let tampered = with_payload(&minted.token, &payload);
    assert!(matches!(
        env.verifier.verify(&tampered, "git"),
        Err(TokenError::BadSignature)
    ));

    // Altered signature.
    let mut sig_changed = minted.token.clone();
    let last = sig_changed.pop().unwrap();
    sig_changed.push(if last == 'A' { 'B' } else { 'A' });
    assert!(matches!(
        env.fresh_verifier().verify(&sig_changed, "git"),
        Err(TokenError::BadSignature | TokenError::Malformed(_))
    ));

    // Forged: signed by another ring's key but claiming this ring's kid.
    let other = Env::new().await;
    let forged = other.mint(alice(), "git").token;
    let kid = env.ring.keys()[0].kid.clone();
    let mut header = header_of(&forged);
    header["kid"] = kid.into();
    let parts: Vec<&str> = forged.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        parts[1],
        parts[2]
    );
    assert!(matches!(
        env.verifier.verify(&forged, "git"),
        Err(TokenError::BadSignature)
    ));

    // A real token from another Latchkey is refused as not issued here,
    // not as if its key had been rotated out (issue 13).
    let err = env
        .verifier
        .verify(&other.mint(alice(), "git").token, "git")
        .unwrap_err();
    assert!(matches!(err, TokenError::NotIssuedHere { .. }), "{err}");
    assert!(
        err.to_string().contains("not issued by this gateway")
            && !err.to_string().contains("rotated"),
        "{err}"
    );
}

#[tokio::test]
async fn only_eddsa_is_accepted() {
    let env = Env::new().await;
    let minted = env.mint(alice(), "git");
    let parts: Vec<&str> = minted.token.split('.').collect();
    let kid = env.ring.keys()[0].kid.clone();
    for alg in ["HS256", "none", "RS256", "ES256"] {
        let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            parts[1],
            if alg == "none" { "" } else { parts[2] }
        );
        let err = env.verifier.verify(&token, "git").unwrap_err();
        assert!(
            matches!(&err, TokenError::UnsupportedAlgorithm { alg: a } if a == alg),
            "{err}"
        );
    }
    // Also: an ID token type is refused even with the right key.
    let header = serde_json::json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"});
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        parts[1],
        parts[2]
    );
    assert!(matches!(
        env.verifier.verify(&token, "git"),
        Err(TokenError::Malformed(_))
    ));
}

#[tokio::test]
async fn malformed_and_oversized_input() {
    let env = Env::new().await;
    for junk in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
        let err = env.verifier.verify(junk, "git").unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{junk}: {err}");
        assert_eq!(err.oauth_error_code(), "invalid_request");
    }
    let big = "a".repeat(9000);
    assert!(matches!(
        env.verifier.verify(&big, "git"),
        Err(TokenError::TooLarge {
            len: 9000,
            max: 8192
        })
    ));
}

#[tokio::test]
async fn revoked_by_jti_subject_job_and_pipeline() {
    let env = Env::new().await;
    let user = env.mint(alice(), "git");
    let job = env.mint(ci_job(), "git");
    let job2 = env.mint(ci_job(), "git");

    // By jti: only that token.
    env.revocations
        .revoke(revocation(
            RevocationKind::Token,
            &job2.claims.jti,
            RevocationMode::Revoke,
            T0,
        ))
        .await
        .unwrap();
    let err = env.verifier.verify(&job2.token, "git").unwrap_err();
    assert!(matches!(&err, TokenError::Revoked { .. }));
    assert_eq!(err.oauth_error_code(), "invalid_grant");
    env.verifier.verify(&job.token, "git").unwrap();

    // By subject, named `kind:sub`.
    env.revocations
        .revoke(revocation(
            RevocationKind::Subject,
            "user:alice",
            RevocationMode::Revoke,
            T0,
        ))
        .await
        .unwrap();
    let err = env.verifier.verify(&user.token, "git").unwrap_err();
    assert_eq!(
        err.to_string(),
        "token was revoked: subject `user:alice` (test)"
    );

    // A token issued after the revocation lives.
    env.clock.advance(Duration::from_secs(1));
    let later = env.mint(alice(), "git");
    env.verifier.verify(&later.token, "git").unwrap();

    // By job id, then by pipeline.
    let env2 = Env::new().await;
    let job = env2.mint(ci_job(), "git");
    env2.verifier.verify(&job.token, "git").unwrap();
    env2.revocations
        .revoke(revocation(
            RevocationKind::Job,
            "job-42",
            RevocationMode::Revoke,
            T0,
        ))
        .await
        .unwrap();
    assert!(matches!(
        env2.verifier.verify(&job.token, "git"),
        Err(TokenError::Revoked { .. })
    ));
    env2.revocations
        .lift(RevocationKind::Job, "job-42", RevocationMode::Revoke)
        .await
        .unwrap();
    env2.verifier.verify(&job.token, "git").unwrap();
    env2.revocations
        .revoke(revocation(
            RevocationKind::Pipeline,
            "deploy",
            RevocationMode::Revoke,
            T0,
        ))
        .await
        .unwrap();
    assert!(matches!(
        env2.verifier.verify(&job.token, "git"),
        Err(TokenError::Revoked { .. })
    ));

    // Revocations survive a reload from the store.
    let reloaded = RevocationSet::load(env2.store.clone(), env2.clock.clone())
        .await
        .unwrap();
    assert!(reloaded.check(&job.claims).is_err());
    assert_eq!(reloaded.list().len(), 1);
}

#[tokio::test]
async fn revoking_an_actor_kills_what_it_holds() {
    let env = Env::new().await;
    let mut p = alice();
    p.actor = Some(Actor {
        kind: PrincipalKind::Agent,
        sub: "bot".into(),
        iss: None,
    });
    let minted = env.mint(p.clone(), "git");
    env.revocations
        .revoke(revocation(
            RevocationKind::Subject,
            "bot",
            RevocationMode::Freeze,
            T0,
        ))
        .await
        .unwrap();
    assert!(matches!(
        env.verifier.verify(&minted.token, "git"),
        Err(TokenError::Revoked { .. })
    ));
    assert!(matches!(
        env.issuer.mint(&request(p, "git")),
        Err(TokenError::Frozen { .. })
    ));
    env.mint(alice(), "git"); // alice alone is fine
}

#[tokio::test]
async fn freeze_blocks_minting_and_lift_restores() {
    let env = Env::new().await;
    let live = env.mint(ci_job(), "git");
    for (kind, value) in [
        (RevocationKind::Subject, "pipeline:deploy:job:42"),
        (RevocationKind::Job, "job-42"),
        (RevocationKind::Pipeline, "deploy"),
    ] {
        env.revocations
            .revoke(revocation(kind, value, RevocationMode::Freeze, T0))
            .await
            .unwrap();
        let err = env.issuer.mint(&request(ci_job(), "git")).unwrap_err();
        assert!(
            matches!(&err, TokenError::Frozen { what } if what.contains(value)),
            "{err}"
        );
        assert_eq!(err.oauth_error_code(), "invalid_grant");
        // A freeze also stops live tokens, whenever they were issued.
        assert!(matches!(
            env.verifier.verify(&live.token, "git"),
            Err(TokenError::Revoked { .. })
        ));
        assert!(
            env.revocations
                .lift(kind, value, RevocationMode::Freeze)
                .await
                .unwrap()
        );
        env.clock.advance(Duration::from_secs(5));
        env.issuer.mint(&request(ci_job(), "git")).unwrap();
        env.verifier.verify(&live.token, "git").unwrap();
    }
    assert!(
        !env.revocations
            .lift(RevocationKind::Job, "job-42", RevocationMode::Freeze)
            .await
            .unwrap()
    );

    let err = TokenError::Frozen {
        what: "ci job `job-42`".into(),
    };
    assert_eq!(
        err.to_string(),
        "ci job `job-42` is frozen; no tokens are issued until an administrator lifts the freeze"
    );
}

fn jwks_kids(ring: &SigningKeyRing) -> Vec<String> {
    ring.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn scheduled_rotation_publishes_before_it_signs_and_keeps_old_tokens() {
    let env = Env::new().await;
    let old_kid = env.ring.keys()[0].kid.clone();
    let mut req = request(alice(), "git");
    req.lifetime = Some(Duration::from_secs(HOUR));
    let old = env.issuer.mint(&req).unwrap();
    env.verifier.verify(&old.token, "git").unwrap(); // cached

    env.clock.advance(Duration::from_secs(60));
    let rotation = env.ring.rotate(RotationMode::Scheduled).await.unwrap();
    assert_ne!(rotation.kid, old_kid);
    assert_eq!(rotation.mode, RotationMode::Scheduled);
    assert_eq!(rotation.signs_from, T0 + 60 + HOUR, "after `publish_ahead`");
    assert_eq!(rotation.retired, vec![old_kid.clone()]);
    assert!(rotation.removed.is_empty());
    // Published at once, next to the old key...
    assert_eq!(
        jwks_kids(&env.ring),
        vec![old_kid.clone(), rotation.kid.clone()]
    );
    let new_info = env
        .ring
        .keys()
        .into_iter()
        .find(|k| k.kid == rotation.kid)
        .unwrap();
    assert_eq!(new_info.state, KeyState::Pending);
    // ...but the old key signs until `publish_ahead` has passed.
    env.clock.advance(Duration::from_secs(HOUR - 1));
    let mut req = request(alice(), "git");
    req.lifetime = Some(Duration::from_secs(HOUR));
    let last_old = env.issuer.mint(&req).unwrap();
    assert_eq!(header_of(&last_old.token)["kid"], old_kid.as_str());
    env.clock.advance(Duration::from_secs(1));
    let new = env.mint(alice(), "git");
    assert_eq!(header_of(&new.token)["kid"], rotation.kid.as_str());

    let keys = env.ring.keys();
    assert_eq!(keys.len(), 2);
    let retired = keys.iter().find(|k| k.kid == old_kid).unwrap();
    assert_eq!(retired.state, KeyState::Retired);
    assert_eq!(retired.signs_until, T0 + 60 + HOUR);
    assert_eq!(retired.published_until, T0 + 60 + HOUR + 12 * HOUR);

    // The old key's tokens still verify, cached or not.
    env.verifier.verify(&last_old.token, "git").unwrap();
    env.fresh_verifier().verify(&last_old.token, "git").unwrap();

    // Half a day after the handover the retired key is removed.
    env.clock.advance(Duration::from_secs(12 * HOUR));
    let report = env.ring.maintain().await.unwrap();
    assert_eq!(report.removed, vec![old_kid.clone()]);
    assert_eq!(report.active.as_deref(), Some(rotation.kid.as_str()));
    assert_eq!(jwks_kids(&env.ring), vec![rotation.kid.clone()]);
    for v in [&env.verifier, &env.fresh_verifier()] {
        let err = v.verify(&old.token, "git").unwrap_err();
        assert!(
            matches!(&err, TokenError::UnknownKey { kid } if *kid == old_kid),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "token was signed by a key that is no longer published (`{old_kid}`; it was rotated out); get a new token"
            )
        );
    }
}

#[tokio::test]
async fn rotation_now_signs_at_once_and_retires_every_older_key() {
    let env = Env::new().await;
    let first = env.ring.keys()[0].kid.clone();
    // A scheduled rotation first: one active key and one pending.
    let pending = env.ring.rotate(RotationMode::Scheduled).await.unwrap().kid;
    let mut req = request(alice(), "git");
    req.lifetime = Some(Duration::from_secs(HOUR));
    let old = env.issuer.mint(&req).unwrap();
    env.verifier.verify(&old.token, "git").unwrap(); // cached

    env.clock.advance(Duration::from_secs(10));
    let rotation = env.ring.rotate(RotationMode::Now).await.unwrap();
    assert_eq!(rotation.signs_from, T0 + 10);
    assert_eq!(rotation.retired, vec![first.clone()]);
    let mut removed = rotation.removed.clone();
    removed.sort();
    let mut expected = vec![first.clone(), pending.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(jwks_kids(&env.ring), vec![rotation.kid.clone()]);
    let new = env.mint(alice(), "git");
    assert_eq!(header_of(&new.token)["kid"], rotation.kid.as_str());
    for v in [&env.verifier, &env.fresh_verifier()] {
        let err = v.verify(&old.token, "git").unwrap_err();
        assert!(
            matches!(&err, TokenError::UnknownKey { kid } if *kid == first),
            "{err}"
        );
        v.verify(&new.token, "git").unwrap();
    }
    assert_eq!(env.store.list_signing_keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn scheduled_rotation_replaces_a_pending_successor_without_a_gap() {
    let env = Env::new().await;
    let first = env.ring.keys()[0].kid.clone();
    // The regular successor is published an hour before the handover.
    env.clock.set(T0 + 23 * HOUR);
    let successor = env.ring.maintain().await.unwrap().created[0].clone();
    // An operator rotates 30 minutes before the handover: the successor
    // (which never signed) goes; the first key signs until the new one.
    env.clock.set(T0 + 23 * HOUR + 1800);
    let rotation = env.ring.rotate(RotationMode::Scheduled).await.unwrap();
    assert_eq!(rotation.removed, vec![successor.clone()]);
    assert_eq!(rotation.signs_from, T0 + 24 * HOUR + 1800);
    for t in [T0 + 24 * HOUR - 1, T0 + 24 * HOUR, T0 + 24 * HOUR + 1799] {
        env.clock.set(t);
        let minted = env.mint(alice(), "git");
        assert_eq!(header_of(&minted.token)["kid"], first.as_str(), "at {t}");
    }
    env.clock.set(T0 + 24 * HOUR + 1800);
    let minted = env.mint(alice(), "git");
    assert_eq!(header_of(&minted.token)["kid"], rotation.kid.as_str());
}

#[tokio::test]
async fn every_rotation_bumps_the_generation_and_is_recorded() {
    let env = Env::new().await;
    assert_eq!(env.ring.generation().await.unwrap(), 0);
    let a = env.ring.rotate(RotationMode::Scheduled).await.unwrap();
    let b = env.ring.rotate(RotationMode::Now).await.unwrap();
    assert_eq!((a.generation, b.generation), (1, 2));
    // The regular successor is a scheduled rotation too.
    env.clock.set(T0 + 23 * HOUR + 1);
    let created = env.ring.maintain().await.unwrap().created;
    assert_eq!(created.len(), 1);
    assert_eq!(env.ring.generation().await.unwrap(), 3);
    let all = env.ring.rotations_between(0, 3).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], a);
    assert_eq!(all[1], b);
    assert_eq!(all[2].kid, created[0]);
    assert_eq!(all[2].mode, RotationMode::Scheduled);
    assert_eq!(all[2].retired, vec![b.kid.clone()]);
    assert_eq!(env.ring.rotations_between(2, 3).await.unwrap().len(), 1);
    // A record altered by hand is an error, not a silent skip.
    env.store.put_meta("keys_rotation/2", b"{").await.unwrap();
    let err = env.ring.rotations_between(1, 3).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the store's key-rotation record `keys_rotation/2` is unreadable: "),
        "{err}"
    );
}

#[tokio::test]
async fn jwks_publishes_the_successor_before_it_signs() {
    let env = Env::new().await;
    let first = env.ring.keys()[0].clone();
    assert_eq!(first.signs_from, T0);
    assert_eq!(first.signs_until, T0 + 24 * HOUR);

    // Not yet due.
    env.clock.set(T0 + 22 * HOUR);
    assert!(env.ring.maintain().await.unwrap().created.is_empty());

    env.clock.set(T0 + 23 * HOUR);
    let report = env.ring.maintain().await.unwrap();
    assert_eq!(report.created.len(), 1);
    let next = report.created[0].clone();
    assert_eq!(report.active.as_deref(), Some(first.kid.as_str()));
    let jwks = env.ring.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![first.kid.as_str(), next.as_str()]);
    let jwk = &jwks["keys"][1];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(env.ring.keys()[1].state, KeyState::Pending);

    // Maintenance is idempotent: no second successor.
    assert!(env.ring.maintain().await.unwrap().created.is_empty());

    // Still signing with the first key until the handover.
    env.clock.set(T0 + 23 * HOUR + 1800);
    let mut req = request(alice(), "git");
    req.lifetime = Some(Duration::from_secs(HOUR));
    let before = env.issuer.mint(&req).unwrap();
    assert_eq!(header_of(&before.token)["kid"], first.kid.as_str());
    env.clock.set(T0 + 24 * HOUR);
    let after = env.mint(alice(), "git");
    assert_eq!(header_of(&after.token)["kid"], next.as_str());
    env.verifier.verify(&before.token, "git").unwrap();
    env.verifier.verify(&after.token, "git").unwrap();
}

#[tokio::test]
async fn idle_ring_gets_an_immediate_key() {
    let env = Env::new().await;
    // Nobody ran maintenance for two days: nothing signs any more.
    env.clock.set(T0 + 30 * HOUR);
    assert!(matches!(
        env.issuer.mint(&request(alice(), "git")),
        Err(TokenError::NoSigningKey)
    ));
    let report = env.ring.maintain().await.unwrap();
    assert_eq!(report.created.len(), 1);
    assert_eq!(
        report.removed.len(),
        0,
        "the old key is still published until +36h"
    );
    let minted = env.mint(alice(), "git");
    assert_eq!(header_of(&minted.token)["kid"], report.created[0].as_str());
    env.clock.set(T0 + 36 * HOUR);
    assert_eq!(env.ring.maintain().await.unwrap().removed.len(), 1);
}

#[tokio::test]
async fn other_nodes_pick_up_rotation_on_maintain() {
    let a = Env::new().await;
    let clock: SharedClock = a.clock.clone();
    let ring_b = Arc::new(
        SigningKeyRing::load(
            a.store.clone(),
            a.master.clone(),
            clock.clone(),
            KeySchedule::default(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(ring_b.keys().len(), 1, "loading reuses the stored key");
    let verifier_b = Env::verifier_for(&ring_b, &a.revocations, clock, ISS);
    a.ring.rotate(RotationMode::Now).await.unwrap();
    let token = a.mint(alice(), "git").token;
    // Node B has not seen the new key yet (its key watch reloads within
    // 250 ms); until then the token reads as another gateway's.
    assert!(matches!(
        verifier_b.verify(&token, "git"),
        Err(TokenError::NotIssuedHere { .. })
    ));
    ring_b.maintain().await.unwrap();
    verifier_b.verify(&token, "git").unwrap();
}

#[tokio::test]
async fn no_token_outlives_not_after() {
    let env = Env::new().await;
    // Every principal kind, not only workloads.
    for principal in [alice(), ci_job()] {
        let mut req = request(principal, "git");
        req.lifetime = Some(Duration::from_secs(HOUR));
        req.not_after = T0 + 100;
        let minted = env.issuer.mint(&req).unwrap();
        assert_eq!(minted.expires_in, 100);
        assert_eq!(minted.claims.exp, T0 + 100);

        req.not_after = T0;
        let err = env.issuer.mint(&req).unwrap_err();
        assert!(matches!(err, TokenError::LifetimeExhausted));
        req.not_after = T0 - 10;
        assert!(matches!(
            env.issuer.mint(&req),
            Err(TokenError::LifetimeExhausted)
        ));
        req.not_after = T0 + 86_400;
        req.lifetime = Some(Duration::ZERO);
        assert!(matches!(
            env.issuer.mint(&req),
            Err(TokenError::LifetimeExhausted)
        ));
    }
}

#[tokio::test]
async fn lifetime_is_clamped_to_twelve_hours() {
    let store: SharedStore = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let lifetimes = Lifetimes {
        default: Duration::from_secs(100 * HOUR),
        max: Duration::from_secs(48 * HOUR),
    };
    let env = Env::with(store, MasterKey::generate().unwrap(), lifetimes).await;
    assert_eq!(env.issuer.lifetimes().max, Duration::from_secs(12 * HOUR));
    assert_eq!(
        env.issuer.lifetimes().default,
        Duration::from_secs(12 * HOUR)
    );
    let mut req = request(alice(), "git");
    req.lifetime = Some(Duration::from_secs(1000 * HOUR));
    let minted = env.issuer.mint(&req).unwrap();
    assert_eq!(minted.expires_in, 12 * HOUR);
    env.verifier.verify(&minted.token, "git").unwrap();

    // The key schedule's own maximum is clamped too.
    let schedule = KeySchedule {
        max_token_lifetime: Duration::from_secs(100 * HOUR),
        ..KeySchedule::default()
    };
    let ring = SigningKeyRing::load(
        env.store.clone(),
        env.master.clone(),
        env.clock.clone(),
        schedule,
    )
    .await
    .unwrap();
    assert_eq!(
        ring.schedule().max_token_lifetime,
        Duration::from_secs(12 * HOUR)
    );
}

#[tokio::test]
async fn empty_audience_is_refused() {
    let env = Env::new().await;
    let err = env.issuer.mint(&request(alice(), " ")).unwrap_err();
    assert!(matches!(err, TokenError::EmptyAudience));
    assert_eq!(err.oauth_error_code(), "invalid_target");
}

#[tokio::test]
async fn master_key_mismatch_on_reload() {
    let env = Env::new().await;
    let clock: SharedClock = env.clock.clone();
    let err = SigningKeyRing::load(
        env.store.clone(),
        MasterKey::generate().unwrap(),
        clock.clone(),
        KeySchedule::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TokenError::MasterKeyMismatch { .. }), "{err}");
    assert!(
        err.to_string().starts_with(
            "the master key does not match the one the signing keys were encrypted with"
        )
    );
    assert_eq!(err.oauth_error_code(), "server_error");
    // The same key from its base64 form works.
    let again = MasterKey::from_base64(&env.master.to_base64()).unwrap();
    SigningKeyRing::load(env.store.clone(), again, clock, KeySchedule::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn private_keys_are_encrypted_at_rest() {
    let env = Env::new().await;
    let stored: Vec<StoredSigningKey> = env.store.list_signing_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].algorithm, "EdDSA");
    assert_eq!(stored[0].public_key.len(), 32);
    // The stored private half is ciphertext, not a usable PKCS#8 document.
    let blob = &stored[0].encrypted_private_key;
    assert!(aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(blob).is_err());
    assert!(aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&blob[12..]).is_err());
    assert!(env.master.decrypt(blob, b"wrong").is_err());
}

#[tokio::test]
async fn cache_hit_matches_and_honours_later_revocation() {
    let env = Env::new().await;
    let minted = env.mint(alice(), "git");
    let first = env.verifier.verify(&minted.token, "git").unwrap();
    assert_eq!(env.verifier.cached(), 1);
    let second = env.verifier.verify(&minted.token, "git").unwrap();
    assert_eq!(first, second);
    assert!(
        Arc::ptr_eq(&first.claims, &second.claims),
        "second came from the cache"
    );
    assert!(matches!(
        env.verifier.verify(&minted.token, "docs"),
        Err(TokenError::WrongAudience { .. })
    ));

    // Rough timing of the hit path (debug build; release is far faster).
    let start = Instant::now();
    for _ in 0..1000 {
        env.verifier.verify(&minted.token, "git").unwrap();
    }
    let per_hit = start.elapsed() / 1000;
    eprintln!("cache-hit verify: {per_hit:?}");
    assert!(per_hit < Duration::from_micros(200), "{per_hit:?}");

    env.revocations
        .revoke(revocation(
            RevocationKind::Token,
            &minted.claims.jti,
            RevocationMode::Revoke,
            T0,
        ))
        .await
        .unwrap();
    assert!(matches!(
        env.verifier.verify(&minted.token, "git"),
        Err(TokenError::Revoked { .. })
    ));
}

#[tokio::test]
async fn cache_is_bounded() {
    let env = Env::new().await;
    let verifier = TokenVerifier::new(
        ISS.into(),
        env.ring.clone(),
        env.revocations.clone(),
        env.clock.clone(),
        3,
    );
    let tokens: Vec<String> = (0..5).map(|_| env.mint(alice(), "git").token).collect();
    for t in &tokens {
        verifier.verify(t, "git").unwrap();
    }
    assert_eq!(verifier.cached(), 3);
    for t in &tokens {
        verifier.verify(t, "git").unwrap();
    }
    assert!(verifier.cached() <= 3);
    let off = TokenVerifier::new(
        ISS.into(),
        env.ring.clone(),
        env.revocations.clone(),
        env.clock.clone(),
        0,
    );
    off.verify(&tokens[0], "git").unwrap();
    assert_eq!(off.cached(), 0);
}

#[test]
fn claims_type_is_the_wire_format() {
    // Deserializing a foreign JSON shape fails rather than defaulting.
    assert!(serde_json::from_str::<TokenClaims>(r#"{"sub":"x"}"#).is_err());
}

/// Issue 13: a token whose key was removed (`rotate --now`) is told apart
/// from a token another gateway signed, also by a ring loaded afterwards
/// (a restarted gateway), because the store remembers every kid it held.
#[tokio::test]
async fn a_removed_key_is_remembered_across_restarts() {
    let env = Env::new().await;
    let old = env.mint(alice(), "git").token;
    env.ring.rotate(RotationMode::Now).await.unwrap();
    let clock: SharedClock = env.clock.clone();
    let restarted = Arc::new(
        SigningKeyRing::load(
            env.store.clone(),
            env.master.clone(),
            clock.clone(),
            KeySchedule::default(),
        )
        .await
        .unwrap(),
    );
    let verifier = Env::verifier_for(&restarted, &env.revocations, clock, ISS);
    let err = verifier.verify(&old, "git").unwrap_err();
    assert!(matches!(err, TokenError::UnknownKey { .. }), "{err}");
    assert!(err.to_string().contains("rotated out"), "{err}");
}
