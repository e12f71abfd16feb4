//! Regression: 200 unsigned tokens with an 11.5 KB `iss` added 2.4 MB to
//! the audit log, because the refusal echoed the claim whole.
#![allow(clippy::unwrap_used)]

use latchkey_identity::IdentityError;

#[test]
fn token_claims_are_echoed_as_a_bounded_prefix() {
    let long = "i".repeat(11_500);
    for e in [
        IdentityError::UnknownIssuer { iss: long.clone() },
        IdentityError::WrongIssuer {
            iss: long.clone(),
            expected: "https://idp".into(),
        },
        IdentityError::UnknownKey { kid: long.clone() },
        IdentityError::AlgorithmNotAllowed { alg: long.clone() },
        IdentityError::AlgorithmKeyMismatch {
            alg: long.clone(),
            kty: "RSA".into(),
        },
        IdentityError::WrongAudience { got: long.clone() },
        IdentityError::Malformed {
            reason: long.clone(),
        },
    ] {
        let text = e.to_string();
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        assert!(text.contains("iiii"), "{text}");
        assert!(text.contains("(11500 bytes)"), "{text}");
    }
}
