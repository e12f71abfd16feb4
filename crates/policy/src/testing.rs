//! `latchkey policy test FILE`: table-driven policy tests.
//!
//! A test file is TOML with one `[[case]]` table per row:
//!
//! ```toml
//! [[case]]
//! name = "alice may push feature branches"
//! # kind: user | workload | agent | service. issuer defaults to "test".
//! # Optional: email, groups, ci = { system, pipeline, build, job_id, branch,
//! # commit, step, environment }, actor = { kind = "agent", sub = "bot" }.
//! principal = { kind = "user", id = "alice", groups = ["developers"] }
//! action = "git.push"
//! # kind is a Cedar entity type without namespace (Repository, Ref, ...);
//! # parent and attributes are optional. A ref's name/kind/short and its
//! # repository are derived from the id when left out.
//! resource = { kind = "Ref", id = "local/acme/app:refs/heads/feature" }
//! context = { operation = "update" }        # optional; strings, booleans, integers
//! expect = "allow"                          # or "deny"
//! expect_policies = ["developers-push"]     # optional; compared as a set
//! ```
//!
//! Unknown keys are rejected so that a typo cannot silently weaken a test.

use std::collections::BTreeMap;
use std::fmt;

use latchkey_core::{
    Action, Actor, CiClaims, ContextValue, Decision, Effect, Intent, Principal, PrincipalKind,
    ResourceRef,
};
use serde::Deserialize;

use crate::engine::PolicyEngine;
use crate::error::PolicyError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    case: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    principal: TestPrincipal,
    action: Action,
    resource: ResourceRef,
    #[serde(default)]
    context: BTreeMap<String, ContextValue>,
    expect: Effect,
    #[serde(default)]
    expect_policies: Option<Vec<String>>,
}

fn default_issuer() -> String {
    "test".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPrincipal {
    kind: PrincipalKind,
    id: String,
    #[serde(default = "default_issuer")]
    issuer: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    ci: CiClaims,
    #[serde(default)]
    actor: Option<Actor>,
    /// The scopes of the token the principal presents; absent means a
    /// token without scopes.
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

impl From<TestPrincipal> for Principal {
    fn from(t: TestPrincipal) -> Self {
        let mut p = Principal::new(t.kind, t.id, t.issuer);
        p.groups = t.groups;
        p.email = t.email;
        p.ci = t.ci;
        p.actor = t.actor;
        p.scopes = t.scopes;
        p
    }
}

/// The result of one `[[case]]` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    /// 1-based position of the row in the file.
    pub index: usize,
    /// The row's `name`.
    pub name: String,
    /// The expected effect.
    pub expected: Effect,
    /// The expected deciding policies, when the row names them (sorted).
    pub expected_policies: Option<Vec<String>>,
    /// What the engine decided.
    pub decision: Decision,
}

impl CaseOutcome {
    /// Whether the decision matches the expectation.
    pub fn passed(&self) -> bool {
        self.decision.effect == self.expected
            && self
                .expected_policies
                .as_ref()
                .is_none_or(|want| *want == sorted(&self.decision.policy_ids))
    }
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v.dedup();
    v
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for CaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return write!(f, "ok    #{} {}", self.index, self.name);
        }
        write!(
            f,
            "FAIL  #{} {}: expected {}",
            self.index, self.name, self.expected
        )?;
        if let Some(want) = &self.expected_policies {
            write!(f, " by {}", list(want))?;
        }
        write!(
            f,
            ", got {} by {} ({})",
            self.decision.effect,
            list(&self.decision.policy_ids),
            self.decision.reason
        )
    }
}

/// What `latchkey policy test` prints: every row's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReport {
    /// One outcome per `[[case]]`, in file order.
    pub cases: Vec<CaseOutcome>,
}

impl TestReport {
    /// Rows that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    /// Rows that failed.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// True when every row passed.
    pub fn all_passed(&self) -> bool {
        self.failed() == 0
    }

    /// The failing rows.
    pub fn failures(&self) -> impl Iterator<Item = &CaseOutcome> {
        self.cases.iter().filter(|c| !c.passed())
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cases {
            writeln!(f, "{c}")?;
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs a policy test file (format in the module docs) against `engine`.
/// A malformed file is an error; failing rows are in the report.
pub fn run_policy_tests(engine: &PolicyEngine, file_text: &str) -> Result<TestReport, PolicyError> {
    let file: TestFile = toml::from_str(file_text).map_err(|e| PolicyError::TestFile {
        message: e.to_string().trim_end().to_owned(),
    })?;
    if file.case.is_empty() {
        return Err(PolicyError::TestFile {
            message: "no `[[case]]` tables; add at least one test case".to_owned(),
        });
    }
    let cases = file
        .case
        .into_iter()
        .enumerate()
        .map(|(i, case)| {
            let principal: Principal = case.principal.into();
            let intent = Intent {
                action: case.action,
                resource: case.resource,
                context: case.context,
            };
            CaseOutcome {
                index: i + 1,
                name: case.name,
                expected: case.expect,
                expected_policies: case.expect_policies.as_deref().map(sorted),
                decision: engine.authorize(&principal, &intent),
            }
        })
        .collect();
    Ok(TestReport { cases })
}
