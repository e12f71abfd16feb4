use std::collections::BTreeMap;

use latchkey_core::PrincipalKind;
use serde::Deserialize;

use crate::ConfigError;
use crate::keys::{DEFAULT_ALGORITHMS, SUPPORTED_ALGORITHMS, is_forbidden_alg};

/// The `CiClaims` fields a `ci_claims` entry may fill.
pub const CI_CLAIM_FIELDS: &[&str] = &[
    "system",
    "pipeline",
    "build",
    "job_id",
    "branch",
    "commit",
    "step",
    "environment",
];

/// One trusted external OIDC issuer: a `[[issuers]]` table in latchkey.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Short name used in principals, audit records and errors.
    pub name: String,
    /// The issuer URL; must equal the token's `iss` exactly.
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// What kind of principal this issuer's tokens become.
    #[serde(default = "default_kind")]
    pub kind: PrincipalKind,
    /// The claim that becomes the principal's id.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The claim holding group names (an array of strings or one string).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// The claim holding the e-mail address.
    #[serde(default = "default_email_claim")]
    pub email_claim: Option<String>,
    /// Claims that must match (exactly or by glob) for the token to be accepted.
    #[serde(default)]
    pub bound_claims: BTreeMap<String, ClaimMatch>,
    /// `CiClaims` field name to token claim name.
    #[serde(default)]
    pub ci_claims: BTreeMap<String, String>,
    /// Signature algorithms accepted from this issuer.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Where to fetch keys; when set, discovery is skipped.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Marks Latchkey's built-in development issuer (`latchkey dev`).
    #[serde(default)]
    pub dev: bool,
}

/// The patterns a bound claim must match: one, or any of several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ClaimMatch {
    /// A single exact value or glob.
    One(String),
    /// Any of these exact values or globs.
    Any(Vec<String>),
}

impl ClaimMatch {
    /// The patterns, in order.
    pub fn patterns(&self) -> &[String] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Any(v) => v,
        }
    }
}

fn default_kind() -> PrincipalKind {
    PrincipalKind::User
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_email_claim() -> Option<String> {
    Some("email".into())
}
fn default_algorithms() -> Vec<String> {
    DEFAULT_ALGORITHMS.iter().map(|s| (*s).to_owned()).collect()
}

impl IssuerConfig {
    /// A config with the defaults for everything but name, issuer and audiences.
    pub fn new(name: impl Into<String>, issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        Self {
            name: name.into(),
            issuer: issuer.into(),
            audiences,
            kind: default_kind(),
            subject_claim: default_subject_claim(),
            groups_claim: None,
            email_claim: default_email_claim(),
            bound_claims: BTreeMap::new(),
            ci_claims: BTreeMap::new(),
            algorithms: default_algorithms(),
            jwks_uri: None,
            dev: false,
        }
    }

    /// Checks the configuration, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::new(&self.name, field, reason);
        if self.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        check_url(&self.issuer).map_err(|r| err("issuer", r))?;
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(err(
                "audiences",
                "list at least one non-empty audience (usually your client id)".into(),
            ));
        }
        if self.subject_claim.is_empty() {
            return Err(err("subject_claim", "must not be empty".into()));
        }
        if self.groups_claim.as_deref() == Some("") {
            return Err(err(
                "groups_claim",
                "must not be empty; omit it instead".into(),
            ));
        }
        if self.email_claim.as_deref() == Some("") {
            return Err(err("email_claim", "must not be empty".into()));
        }
        for (claim, m) in &self.bound_claims {
            if claim.is_empty()
                || m.patterns().is_empty()
                || m.patterns().iter().any(String::is_empty)
            {
                return Err(err(
                    "bound_claims",
                    format!("claim `{claim}` needs at least one non-empty pattern"),
                ));
            }
        }
        for (field, claim) in &self.ci_claims {
            if !CI_CLAIM_FIELDS.contains(&field.as_str()) {
                return Err(err(
                    "ci_claims",
                    format!(
                        "unknown field `{field}`; use one of {}",
                        CI_CLAIM_FIELDS.join(", ")
                    ),
                ));
            }
            if claim.is_empty() {
                return Err(err(
                    "ci_claims",
                    format!("`{field}` maps to an empty claim name"),
                ));
            }
        }
        if self.algorithms.is_empty() {
            return Err(err("algorithms", "list at least one algorithm".into()));
        }
        for alg in &self.algorithms {
            if is_forbidden_alg(alg) {
                return Err(err(
                    "algorithms",
                    format!(
                        "`{alg}` is never accepted from external issuers; use asymmetric algorithms such as RS256 or ES256"
                    ),
                ));
            }
            if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                return Err(err(
                    "algorithms",
                    format!(
                        "`{alg}` is not supported; use some of {}",
                        SUPPORTED_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if let Some(uri) = &self.jwks_uri {
            check_url(uri).map_err(|r| err("jwks_uri", r))?;
        }
        Ok(())
    }
}

/// Checks that `s` is an absolute http(s) URL.
pub(crate) fn check_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
    match u.scheme() {
        "https" | "http" => {}
        other => return Err(format!("scheme `{other}` is not allowed; use https")),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}` has no host"));
    }
    Ok(u)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base() -> IssuerConfig {
        IssuerConfig::new("okta", "https://acme.okta.com", vec!["latchkey".into()])
    }

    #[test]
    fn defaults_from_toml() {
        let c: IssuerConfig = toml_like(
            r#"{"name":"gh","issuer":"https://token.actions.githubusercontent.com","audiences":["latchkey"],
                "kind":"workload","bound_claims":{"repository":"acme/*","ref":["refs/heads/main","refs/tags/*"]},
                "ci_claims":{"commit":"sha"}}"#,
        );
        assert_eq!(c.subject_claim, "sub");
        assert_eq!(c.email_claim.as_deref(), Some("email"));
        assert_eq!(c.kind, PrincipalKind::Workload);
        assert_eq!(c.algorithms, default_algorithms());
        assert_eq!(c.bound_claims["ref"].patterns().len(), 2);
        assert_eq!(c.bound_claims["repository"].patterns(), ["acme/*"]);
        c.validate().unwrap();
    }

    fn toml_like(json: &str) -> IssuerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn validation_names_the_field() {
        type Mutate = Box<dyn Fn(&mut IssuerConfig)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (Box::new(|c| c.name.clear()), "name"),
            (Box::new(|c| c.issuer = "ftp://x".into()), "issuer"),
            (Box::new(|c| c.issuer = "not a url".into()), "issuer"),
            (Box::new(|c| c.audiences.clear()), "audiences"),
            (
                Box::new(|c| c.algorithms = vec!["HS256".into()]),
                "algorithms",
            ),
            (
                Box::new(|c| c.algorithms = vec!["none".into()]),
                "algorithms",
            ),
            (
                Box::new(|c| c.algorithms = vec!["ES512".into()]),
                "algorithms",
            ),
            (Box::new(|c| c.algorithms.clear()), "algorithms"),
            (
                Box::new(|c| {
                    c.ci_claims.insert("sha".into(), "x".into());
                }),
                "ci_claims",
            ),
            (
                Box::new(|c| {
                    c.bound_claims.insert("r".into(), ClaimMatch::Any(vec![]));
                }),
                "bound_claims",
            ),
            (
                Box::new(|c| c.jwks_uri = Some("file:///etc/passwd".into())),
                "jwks_uri",
            ),
            (Box::new(|c| c.subject_claim.clear()), "subject_claim"),
        ];
        for (mutate, field) in cases {
            let mut c = base();
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        }
    }

    #[test]
    fn hs_rejected_message() {
        let mut c = base();
        c.algorithms = vec!["HS256".into()];
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "issuer `okta`: invalid `algorithms`: `HS256` is never accepted from external issuers; use asymmetric algorithms such as RS256 or ES256"
        );
    }
}
