//! CI issuer presets: the known shape of Buildkite's and GitHub Actions' OIDC
//! tokens, so an operator writes `preset = "buildkite"` instead of a claim
//! mapping, and so the settings that keep one organisation's jobs out of
//! another's are checked rather than remembered.
//!
//! Claim sets as verified against the vendors' documentation:
//!
//! - **Buildkite** (<https://buildkite.com/docs/agent/v3/cli-oidc>,
//!   <https://buildkite.com/docs/pipelines/security/oidc>): tokens from
//!   `buildkite-agent oidc request-token` have `iss = https://agent.buildkite.com`,
//!   `sub = organization:ORG:pipeline:PIPELINE:ref:REF:commit:SHA:step:STEP`
//!   and the claims `organization_slug`, `pipeline_slug`, `build_number`
//!   (a number), `build_branch`, `build_tag`, `build_commit`, `step_key`
//!   (may be `null`), `job_id` and `agent_id` (UUIDs); `organization_id` and
//!   `pipeline_id` are optional claims requested with `--claim`.
//!   Buildkite's own workload-identity docs
//!   (<https://buildkite.com/docs/apis/workload-identity-federation/buildkite-agents>)
//!   say that agents of every organisation share the one issuer and require an
//!   `organization_id` or `organization_slug` condition — so does this preset.
//! - **GitHub Actions** (<https://docs.github.com/en/actions/reference/security/oidc>):
//!   `iss = https://token.actions.githubusercontent.com`, custom claims
//!   `repository`, `repository_id`, `repository_owner`, `repository_owner_id`,
//!   `ref` (e.g. `refs/heads/main`), `ref_type`, `sha`, `run_id`,
//!   `run_number`, `run_attempt`, `workflow`, `workflow_ref`,
//!   `job_workflow_ref`, `environment`, `event_name`, `actor`,
//!   `runner_environment`, and `check_run_id` ("the check run ID of the
//!   current job", added in November 2025; older GitHub Enterprise Server
//!   versions lack it). Tokens are fetched from `ACTIONS_ID_TOKEN_REQUEST_URL`
//!   with `&audience=` and `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A CI system whose OIDC tokens Latchkey knows the shape of
/// (`preset = "buildkite" | "github-actions"` on an issuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CiPreset {
    /// Buildkite Pipelines (`buildkite-agent oidc request-token`).
    Buildkite,
    /// GitHub Actions (`ACTIONS_ID_TOKEN_REQUEST_URL`).
    GithubActions,
}

impl CiPreset {
    /// The name used in config and as `CiClaims::system`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buildkite => "buildkite",
            Self::GithubActions => "github-actions",
        }
    }

    /// The vendor's issuer URL (overridable with `issuer`).
    pub fn issuer_url(self) -> &'static str {
        match self {
            Self::Buildkite => "https://agent.buildkite.com",
            Self::GithubActions => "https://token.actions.githubusercontent.com",
        }
    }

    /// The default `ci_claims` mapping (`CiClaims` field → token claim).
    ///
    /// GitHub Actions' `job_id` is not a plain mapping: it is `check_run_id`
    /// when the token has one, else `RUN_ID-RUN_ATTEMPT` (see
    /// [`crate::IssuerConfig`] mapping); `branch` comes from `ref` with
    /// `refs/heads/` stripped.
    pub fn ci_claims(self) -> BTreeMap<String, String> {
        let pairs: &[(&str, &str)] = match self {
            Self::Buildkite => &[
                ("pipeline", "pipeline_slug"),
                ("build", "build_number"),
                ("branch", "build_branch"),
                ("commit", "build_commit"),
                ("step", "step_key"),
                ("job_id", "job_id"),
            ],
            Self::GithubActions => &[
                ("pipeline", "repository"),
                ("build", "run_id"),
                ("branch", "ref"),
                ("commit", "sha"),
                ("environment", "environment"),
            ],
        };
        pairs
            .iter()
            .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
            .collect()
    }

    /// Claims copied into `Principal::attributes` for audit and context.
    pub fn attribute_claims(self) -> &'static [&'static str] {
        match self {
            Self::Buildkite => &[
                "organization_slug",
                "organization_id",
                "pipeline_id",
                "agent_id",
                "build_tag",
                "build_source",
                "runner_environment",
            ],
            Self::GithubActions => &[
                "repository_owner",
                "repository_owner_id",
                "repository_id",
                "workflow",
                "workflow_ref",
                "job_workflow_ref",
                "run_number",
                "run_attempt",
                "check_run_id",
                "event_name",
                "ref_type",
                "actor",
                "runner_environment",
            ],
        }
    }

    /// The claims one of which must be pinned in `bound_claims`, because the
    /// issuer is shared by every customer of the CI service.
    pub fn required_pins(self) -> &'static [&'static str] {
        match self {
            Self::Buildkite => &["organization_slug", "organization_id"],
            Self::GithubActions => &["repository_owner", "repository_owner_id", "repository"],
        }
    }

    /// Whether bound claims and trust rules may match the whole `sub`.
    /// Buildkite's `sub` embeds the commit, so a pattern on it is either
    /// useless or a wildcard that matches more than intended.
    pub fn allows_sub_match(self) -> bool {
        match self {
            Self::Buildkite => false,
            Self::GithubActions => true,
        }
    }
}

impl std::fmt::Display for CiPreset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks that the patterns pinning an organisation are literal where it
/// matters: no wildcard at all for owner/org claims, and a literal owner
/// before the `/` of a `repository` pattern. Returns the reason when not.
pub(crate) fn check_pin(claim: &str, pattern: &str) -> Result<(), String> {
    let wild = |s: &str| s.contains(['*', '?']);
    if claim == "repository" {
        match pattern.split_once('/') {
            Some((owner, _)) if !owner.is_empty() && !wild(owner) => Ok(()),
            _ => Err(format!(
                "`repository` pattern `{pattern}` must name its owner literally, e.g. `acme/*`"
            )),
        }
    } else if wild(pattern) || pattern.is_empty() {
        Err(format!(
            "`{claim}` pattern `{pattern}` must be an exact value, without `*` or `?`"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [CiPreset::Buildkite, CiPreset::GithubActions] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<CiPreset>(&json).unwrap(), p);
        }
    }

    #[test]
    fn pins() {
        assert!(check_pin("organization_slug", "acme").is_ok());
        assert!(check_pin("organization_slug", "ac*").is_err());
        assert!(check_pin("repository", "acme/*").is_ok());
        assert!(check_pin("repository", "*/app").is_err());
        assert!(check_pin("repository", "acme").is_err());
        assert!(check_pin("repository_owner", "?cme").is_err());
    }

    #[test]
    fn mappings_use_known_fields() {
        for p in [CiPreset::Buildkite, CiPreset::GithubActions] {
            for field in p.ci_claims().keys() {
                assert!(crate::CI_CLAIM_FIELDS.contains(&field.as_str()), "{field}");
            }
        }
    }
}
