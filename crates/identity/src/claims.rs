//! Pure claim checks and the mapping from verified claims to a `Principal`.

use latchkey_core::{CiClaims, Principal, UnixTime, glob_match};
use serde_json::{Map, Value};

use crate::{CiPreset, ClaimMatch, IdentityError, IssuerConfig};

/// The fixed clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Checks `exp` (required), `nbf` and `iat` against `now` with
/// [`CLOCK_SKEW_SECS`] of skew; returns `exp`.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    now: UnixTime,
) -> Result<UnixTime, IdentityError> {
    let exp = numeric(claims, "exp")?.ok_or_else(|| IdentityError::missing("exp"))?;
    if now >= exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(IdentityError::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(t) = numeric(claims, name)?
            && t > now.saturating_add(CLOCK_SKEW_SECS)
        {
            return Err(IdentityError::NotYetValid);
        }
    }
    Ok(exp)
}

/// A NumericDate claim; fractional values are truncated, negatives rejected.
fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<UnixTime>, IdentityError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && *f >= 0.0) {
                Ok(Some(f as u64))
            } else {
                Err(IdentityError::missing(name))
            }
        }
        Some(_) => Err(IdentityError::missing(name)),
    }
}

/// Checks that `aud` (a string or an array of strings) contains one of the
/// configured audiences.
pub(crate) fn check_audience(
    claims: &Map<String, Value>,
    accepted: &[String],
) -> Result<(), IdentityError> {
    let got: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(IdentityError::missing("aud")),
    };
    if got.iter().any(|g| accepted.iter().any(|a| a == g)) {
        Ok(())
    } else {
        Err(IdentityError::WrongAudience {
            got: got.join(", "),
        })
    }
}

/// The string forms of a claim, for matching: strings as-is, numbers and
/// booleans printed, arrays element by element. Objects never match.
fn claim_strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) => a
            .iter()
            .filter(|v| !v.is_array())
            .flat_map(claim_strings)
            .collect(),
        Value::Null | Value::Object(_) => Vec::new(),
    }
}

/// Whether claim `name` is present and (any element of it) matches one of
/// `m`'s patterns: the test behind bound claims and trust rules.
pub fn claim_matches(claims: &Map<String, Value>, name: &str, m: &ClaimMatch) -> bool {
    claims
        .get(name)
        .map(claim_strings)
        .unwrap_or_default()
        .iter()
        .any(|v| m.patterns().iter().any(|p| glob_match(p, v)))
}

/// Checks every bound claim: present, and (any element) matching one of its
/// patterns.
pub(crate) fn check_bound_claims(
    cfg: &IssuerConfig,
    claims: &Map<String, Value>,
) -> Result<(), IdentityError> {
    for (name, m) in &cfg.bound_claims {
        if !claim_matches(claims, name, m) {
            return Err(IdentityError::BoundClaimMismatch {
                claim: name.clone(),
            });
        }
    }
    Ok(())
}

/// A claim as a single string (numbers printed), if it is one.
fn scalar(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Builds the principal from claims that have passed every check.
pub(crate) fn map_principal(
    cfg: &IssuerConfig,
    claims: &Map<String, Value>,
) -> Result<Principal, IdentityError> {
    let id = scalar(claims, &cfg.subject_claim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IdentityError::missing(cfg.subject_claim.clone()))?;
    let mut p = Principal::new(cfg.kind, id, cfg.name.clone());
    if let Some(g) = &cfg.groups_claim {
        p.groups = match claims.get(g) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
    }
    if let Some(e) = &cfg.email_claim {
        p.email = claims.get(e).and_then(Value::as_str).map(str::to_owned);
    }
    let mut ci = CiClaims::default();
    for (field, claim) in &cfg.ci_claims {
        let v = scalar(claims, claim);
        match field.as_str() {
            "system" => ci.system = v,
            "pipeline" => ci.pipeline = v,
            "build" => ci.build = v,
            "job_id" => ci.job_id = v,
            "branch" => ci.branch = v,
            "commit" => ci.commit = v,
            "step" => ci.step = v,
            "environment" => ci.environment = v,
            // Unknown fields are rejected by `IssuerConfig::validate`.
            _ => {}
        }
    }
    if ci.system.is_none() {
        ci.system = cfg.ci_system.clone();
    }
    if cfg.preset == Some(CiPreset::GithubActions) {
        // `ref` is `refs/heads/NAME` for branches; tags and pull requests
        // keep their full ref so a branch policy never matches them.
        if let Some(b) = ci.branch.take() {
            ci.branch = Some(
                b.strip_prefix("refs/heads/")
                    .map(str::to_owned)
                    .unwrap_or(b),
            );
        }
        // GitHub names the job by its check run; without that claim (older
        // GitHub Enterprise Server) the run attempt is the finest unit.
        if !cfg.ci_claims.contains_key("job_id") {
            ci.job_id = scalar(claims, "check_run_id").or_else(|| {
                let run = scalar(claims, "run_id")?;
                let attempt = scalar(claims, "run_attempt")?;
                Some(format!("{run}-{attempt}"))
            });
        }
    }
    p.ci = ci;
    for name in &cfg.attribute_claims {
        if let Some(v) = scalar(claims, name) {
            p.attributes.insert(name.clone(), v);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn times() {
        let c = obj(json!({"exp": 1000, "iat": 900}));
        assert_eq!(check_times(&c, 950).unwrap(), 1000);
        assert_eq!(check_times(&c, 1059).unwrap(), 1000);
        assert_eq!(check_times(&c, 1060), Err(IdentityError::Expired));
        assert_eq!(check_times(&c, 839), Err(IdentityError::NotYetValid));
        let nbf = obj(json!({"exp": 5000, "nbf": 2000}));
        assert_eq!(check_times(&nbf, 1900), Err(IdentityError::NotYetValid));
        assert!(check_times(&nbf, 1950).is_ok());
        assert_eq!(
            check_times(&obj(json!({})), 1).unwrap_err().code(),
            "missing_claim"
        );
        assert_eq!(
            check_times(&obj(json!({"exp": "x"})), 1)
                .unwrap_err()
                .code(),
            "missing_claim"
        );
        assert_eq!(
            check_times(&obj(json!({"exp": -5})), 1).unwrap_err().code(),
            "missing_claim"
        );
        assert_eq!(check_times(&obj(json!({"exp": 1000.7})), 10).unwrap(), 1000);
    }

    #[test]
    fn audience() {
        let accepted = vec!["a".to_string(), "b".to_string()];
        assert!(check_audience(&obj(json!({"aud": "b"})), &accepted).is_ok());
        assert!(check_audience(&obj(json!({"aud": ["x", "a"]})), &accepted).is_ok());
        assert_eq!(
            check_audience(&obj(json!({"aud": ["x", "y"]})), &accepted),
            Err(IdentityError::WrongAudience { got: "x, y".into() })
        );
        assert_eq!(
            check_audience(&obj(json!({})), &accepted)
                .unwrap_err()
                .code(),
            "missing_claim"
        );
    }

    #[test]
    fn bound_claims_and_mapping() {
        let mut cfg = IssuerConfig::new("bk", "https://agent.buildkite.com", vec!["x".into()]);
        cfg.bound_claims
            .insert("organization_slug".into(), ClaimMatch::One("acme".into()));
        cfg.bound_claims.insert(
            "pipeline_slug".into(),
            ClaimMatch::Any(vec!["deploy-*".into(), "release".into()]),
        );
        cfg.groups_claim = Some("groups".into());
        cfg.ci_claims
            .insert("pipeline".into(), "pipeline_slug".into());
        cfg.ci_claims.insert("build".into(), "build_number".into());
        cfg.ci_claims.insert("job_id".into(), "job_id".into());
        let good = obj(json!({
            "sub": "organization:acme:pipeline:deploy-web",
            "organization_slug": "acme", "pipeline_slug": "deploy-web",
            "build_number": 42, "job_id": "j-1", "groups": "ops", "email": "a@b"
        }));
        check_bound_claims(&cfg, &good).unwrap();
        let p = map_principal(&cfg, &good).unwrap();
        assert_eq!(p.id, "organization:acme:pipeline:deploy-web");
        assert_eq!(p.issuer, "bk");
        assert_eq!(p.groups, ["ops"]);
        assert_eq!(p.email.as_deref(), Some("a@b"));
        assert_eq!(p.ci.pipeline.as_deref(), Some("deploy-web"));
        assert_eq!(p.ci.build.as_deref(), Some("42"));
        assert_eq!(p.ci.job_id.as_deref(), Some("j-1"));

        let mut bad = good.clone();
        bad.insert("pipeline_slug".into(), json!("other"));
        assert_eq!(
            check_bound_claims(&cfg, &bad),
            Err(IdentityError::BoundClaimMismatch {
                claim: "pipeline_slug".into()
            })
        );
        let mut missing = good.clone();
        missing.remove("organization_slug");
        assert_eq!(
            check_bound_claims(&cfg, &missing).unwrap_err().code(),
            "bound_claim_mismatch"
        );
        let mut nosub = good;
        nosub.remove("sub");
        assert_eq!(
            map_principal(&cfg, &nosub),
            Err(IdentityError::MissingClaim {
                claim: "sub".into()
            })
        );
    }
}
