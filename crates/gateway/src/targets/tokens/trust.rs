//! CI trust rules, next to the token minting they narrow: which workload
//! may mint a token for which audience, with which scopes and lifetime
//! (`[[trust]]`; pure, no I/O).

use std::time::Duration;

use latchkey_identity::claim_matches;
use serde_json::{Map, Value};

use crate::config::TrustRule;

/// What a matching trust rule grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustGrant {
    /// The index of the rule in `[[trust]]`.
    pub(crate) rule: usize,
    /// The scopes to mint with.
    pub(crate) scope: Vec<String>,
    /// The rule's lifetime cap.
    pub(crate) max_lifetime: Option<Duration>,
}

/// Why no trust rule lets a workload mint; the message names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TrustRefusal {
    /// No rule names the issuer at all.
    #[error(
        "no trust rule names issuer `{issuer}`; add a `[[trust]]` rule for it to let its CI jobs mint tokens"
    )]
    NoRuleForIssuer {
        /// The issuer's name.
        issuer: String,
    },
    /// Rules name the issuer, but the token's claims match none of them.
    #[error(
        "no trust rule for issuer `{issuer}` matches this token: {claims} did not match; check the job's pipeline and branch against `[[trust]]`"
    )]
    ClaimsMismatch {
        /// The issuer's name.
        issuer: String,
        /// The claims that failed, backticked and comma-separated.
        claims: String,
    },
    /// The claims match, but no such rule lists the audience.
    #[error("no trust rule lets issuer `{issuer}` claims mint for audience `{audience}`")]
    AudienceNotAllowed {
        /// The issuer's name.
        issuer: String,
        /// The requested audience.
        audience: String,
    },
    /// A rule fits claims and audience, but not the requested scopes.
    #[error(
        "scope `{scope}` is not allowed by the trust rules for issuer `{issuer}` and audience `{audience}`; ask for a subset of: {allowed}"
    )]
    ScopeNotAllowed {
        /// The issuer's name.
        issuer: String,
        /// The requested audience.
        audience: String,
        /// The first refused scope.
        scope: String,
        /// What the fitting rules allow.
        allowed: String,
    },
}

impl TrustRefusal {
    /// The OAuth error code (RFC 6749 §5.2, RFC 8693 §2.2.2).
    pub(crate) fn oauth_error_code(&self) -> &'static str {
        match self {
            Self::NoRuleForIssuer { .. } | Self::ClaimsMismatch { .. } => "invalid_grant",
            Self::AudienceNotAllowed { .. } => "invalid_target",
            Self::ScopeNotAllowed { .. } => "invalid_scope",
        }
    }
}

/// Finds the first rule that lets a token of `issuer` with `claims` mint for
/// `audience` with the requested `scope` (pure; no I/O).
pub(crate) fn match_trust(
    rules: &[TrustRule],
    issuer: &str,
    claims: &Map<String, Value>,
    audience: &str,
    scope: &[String],
) -> Result<TrustGrant, TrustRefusal> {
    let for_issuer: Vec<(usize, &TrustRule)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.issuer == issuer)
        .collect();
    if for_issuer.is_empty() {
        return Err(TrustRefusal::NoRuleForIssuer {
            issuer: issuer.to_owned(),
        });
    }
    let mut failed: Vec<String> = Vec::new();
    let matching: Vec<(usize, &TrustRule)> = for_issuer
        .into_iter()
        .filter(|(_, r)| {
            match r
                .claims
                .iter()
                .find(|(name, m)| !claim_matches(claims, name, m))
            {
                Some((name, _)) => {
                    let shown = format!("`{name}`");
                    if !failed.contains(&shown) {
                        failed.push(shown);
                    }
                    false
                }
                None => true,
            }
        })
        .collect();
    if matching.is_empty() {
        return Err(TrustRefusal::ClaimsMismatch {
            issuer: issuer.to_owned(),
            claims: failed.join(", "),
        });
    }
    let for_audience: Vec<(usize, &TrustRule)> = matching
        .into_iter()
        .filter(|(_, r)| r.audiences.iter().any(|a| a == audience))
        .collect();
    if for_audience.is_empty() {
        return Err(TrustRefusal::AudienceNotAllowed {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        });
    }
    for (i, r) in &for_audience {
        if r.scopes.is_empty() {
            return Ok(TrustGrant {
                rule: *i,
                scope: scope.to_vec(),
                max_lifetime: r.max_lifetime,
            });
        }
        if scope.iter().all(|s| r.scopes.contains(s)) {
            return Ok(TrustGrant {
                rule: *i,
                scope: if scope.is_empty() {
                    r.scopes.clone()
                } else {
                    scope.to_vec()
                },
                max_lifetime: r.max_lifetime,
            });
        }
    }
    let mut allowed: Vec<String> = Vec::new();
    for (_, r) in &for_audience {
        for s in &r.scopes {
            if !allowed.contains(s) {
                allowed.push(s.clone());
            }
        }
    }
    let refused = scope
        .iter()
        .find(|s| !allowed.contains(s))
        .or_else(|| scope.first())
        .cloned()
        .unwrap_or_default();
    Err(TrustRefusal::ScopeNotAllowed {
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        scope: refused,
        allowed: allowed.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_identity::ClaimMatch;

    #[test]
    fn trust_rules_match_in_order() {
        let rule =
            |claims: &[(&str, ClaimMatch)], aud: &[&str], scopes: &[&str], max: u64| TrustRule {
                issuer: "bk".into(),
                claims: claims
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                audiences: aud.iter().map(|s| (*s).to_owned()).collect(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                max_lifetime: Some(Duration::from_secs(max)),
            };
        let rules = vec![
            rule(
                &[("pipeline_slug", ClaimMatch::One("pay*".into()))],
                &["git"],
                &["read"],
                60,
            ),
            rule(
                &[(
                    "build_branch",
                    ClaimMatch::Any(vec!["main".into(), "rel/*".into()]),
                )],
                &["git", "documents"],
                &[],
                120,
            ),
        ];
        let claims = |p: &str, b: &str| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({"pipeline_slug": p, "build_branch": b}))
                .unwrap()
        };
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let g = match_trust(&rules, "bk", &claims("payments", "x"), "git", &[]).unwrap();
        assert_eq!((g.rule, g.scope.clone()), (0, s(&["read"])));
        // The first rule refuses `write`; the second (no scope limit) takes it.
        let g = match_trust(
            &rules,
            "bk",
            &claims("payments", "main"),
            "git",
            &s(&["write"]),
        )
        .unwrap();
        assert_eq!((g.rule, g.scope), (1, s(&["write"])));
        assert_eq!(g.max_lifetime, Some(Duration::from_secs(120)));
        let e = match_trust(
            &rules,
            "bk",
            &claims("payments", "x"),
            "git",
            &s(&["write"]),
        )
        .unwrap_err();
        assert_eq!(e.oauth_error_code(), "invalid_scope");
        let e = match_trust(&rules, "bk", &claims("web", "dev"), "git", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no trust rule for issuer `bk` matches this token: `pipeline_slug`, `build_branch` did not match; \
             check the job's pipeline and branch against `[[trust]]`"
        );
        let e = match_trust(&rules, "bk", &claims("payments", "x"), "documents", &[]).unwrap_err();
        assert_eq!(e.oauth_error_code(), "invalid_target");
        let e = match_trust(&rules, "gha", &claims("payments", "main"), "git", &[]).unwrap_err();
        assert_eq!(e.oauth_error_code(), "invalid_grant");
        assert!(e.to_string().contains("no trust rule names issuer `gha`"));
    }
}
