use latchkey_core::{Actor, CiClaims, Principal, PrincipalKind, UnixTime};
use serde::{Deserialize, Serialize};

/// The claims of a Latchkey token: the wire format (RFC 9068 plus Latchkey
/// claims). Field names are the JSON names; changing one breaks every token
/// in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// This Latchkey's issuer URL.
    pub iss: String,
    /// The principal's id.
    pub sub: String,
    /// The one audience (target) the token is for.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: UnixTime,
    /// Issue time, unix seconds.
    pub iat: UnixTime,
    /// Not-before, unix seconds (equal to `iat`).
    pub nbf: UnixTime,
    /// Random 128-bit id, base64url; what a token revocation names.
    pub jti: String,
    /// Granted scopes, space-separated (RFC 8693 / RFC 9068).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The OAuth client the token was issued to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The party acting for the subject (RFC 8693 `act`): `{sub, kind, iss?}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The principal's kind.
    pub lk_kind: PrincipalKind,
    /// The external issuer the identity came from (the principal's issuer).
    pub lk_src: String,
    /// The principal's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The principal's e-mail, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// CI facts, for workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lk_ci: Option<CiClaims>,
}

impl TokenClaims {
    /// The granted scopes, one by one.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// The principal the token stands for. `issuer` is `lk_src` (where the
    /// identity came from), so policies see the same principal whether it
    /// arrives by SSO, CI OIDC or a Latchkey token. Attributes are not carried
    /// in tokens and come back empty. A token that names scopes gives a
    /// principal narrowed to them (`scopes` is `Some`), so every decision on
    /// it enforces them; a token without any is narrowed by policy alone.
    pub fn to_principal(&self) -> Principal {
        let mut principal = Principal::new(self.lk_kind, self.sub.clone(), self.lk_src.clone());
        principal.groups = self.groups.clone();
        principal.email = self.email.clone();
        principal.ci = self.lk_ci.clone().unwrap_or_default();
        principal.actor = self.act.clone();
        let scopes: Vec<String> = self.scopes().map(str::to_owned).collect();
        principal.scopes = (!scopes.is_empty()).then_some(scopes);
        principal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_omits_empty_optionals() {
        let claims = TokenClaims {
            iss: "https://lk.example".into(),
            sub: "alice".into(),
            aud: "git".into(),
            exp: 200,
            iat: 100,
            nbf: 100,
            jti: "abc".into(),
            scope: String::new(),
            client_id: None,
            act: None,
            lk_kind: PrincipalKind::User,
            lk_src: "okta".into(),
            groups: vec![],
            email: None,
            lk_ci: None,
        };
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "iss": "https://lk.example", "sub": "alice", "aud": "git", "exp": 200,
                "iat": 100, "nbf": 100, "jti": "abc", "lk_kind": "user", "lk_src": "okta"
            })
        );
        let back: TokenClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims);
    }

    #[test]
    fn actor_and_ci_are_carried() {
        let json = serde_json::json!({
            "iss": "i", "sub": "job-1", "aud": "git", "exp": 2, "iat": 1, "nbf": 1, "jti": "j",
            "scope": "read write", "lk_kind": "workload", "lk_src": "buildkite",
            "act": {"sub": "bot", "kind": "agent"},
            "lk_ci": {"pipeline": "deploy", "job_id": "42"}
        });
        let claims: TokenClaims = serde_json::from_value(json).unwrap();
        assert!(claims.has_scope("write"));
        assert!(!claims.has_scope("admin"));
        let p = claims.to_principal();
        assert_eq!(p.kind, PrincipalKind::Workload);
        assert_eq!(p.issuer, "buildkite");
        assert_eq!(p.ci.job_id.as_deref(), Some("42"));
        assert_eq!(p.actor.unwrap().sub, "bot");
        assert_eq!(
            p.scopes.as_deref(),
            Some(&["read".to_owned(), "write".to_owned()][..])
        );
    }

    #[test]
    fn a_token_without_scopes_is_not_narrowed_by_scope() {
        let json = serde_json::json!({
            "iss": "i", "sub": "alice", "aud": "git", "exp": 2, "iat": 1, "nbf": 1, "jti": "j",
            "lk_kind": "user", "lk_src": "okta"
        });
        let claims: TokenClaims = serde_json::from_value(json).unwrap();
        assert_eq!(claims.to_principal().scopes, None);
    }
}
