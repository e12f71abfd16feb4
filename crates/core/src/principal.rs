use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What kind of caller a [`Principal`] is; each kind is a Cedar entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A human who signed in through an OIDC provider.
    User,
    /// A CI job proven by its CI's OIDC token.
    Workload,
    /// Registered automation, usually acting for a user.
    Agent,
    /// Latchkey itself, acting on an event.
    Service,
}

impl PrincipalKind {
    /// The lowercase name used in tokens, config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Workload => "workload",
            Self::Agent => "agent",
            Self::Service => "service",
        }
    }

    /// The Cedar entity type name (without namespace).
    pub fn entity_type(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Workload => "Workload",
            Self::Agent => "Agent",
            Self::Service => "Service",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "workload" => Some(Self::Workload),
            "agent" => Some(Self::Agent),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

impl std::fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Typed facts about a CI job, taken from its CI's OIDC token.
///
/// Policies match these fields instead of string-parsing `sub`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiClaims {
    /// CI system name, e.g. `buildkite` or `github-actions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Pipeline (Buildkite) or repository workflow (GitHub) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Build number or run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// The job's id; tokens minted for a job die with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Branch being built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit being built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Step key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Deployment environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl CiClaims {
    /// True when no CI fact is known.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The party acting on behalf of the principal (RFC 8693 `act`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The actor's kind.
    pub kind: PrincipalKind,
    /// The actor's subject id.
    pub sub: String,
    /// Who vouched for the actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Who is asking: the output of the authenticate step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// User, workload, agent or service.
    pub kind: PrincipalKind,
    /// Stable id within its issuer (the mapped subject claim).
    pub id: String,
    /// The name of the external issuer that vouched for this principal. A
    /// Latchkey token carries it along (`lk_src`), so policies see the same
    /// issuer whether the caller presented the original identity or a token.
    pub issuer: String,
    /// Group names, from the issuer's groups claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// E-mail, when the issuer supplies one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// CI facts for workloads.
    #[serde(default, skip_serializing_if = "CiClaims::is_empty")]
    pub ci: CiClaims,
    /// Who acts for this principal, if delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// Other mapped claims, kept for policy context and audit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The scopes of the Latchkey token the caller presented, when it
    /// carries any. `None` means not narrowed by scope (an external identity
    /// at the token endpoint, Latchkey's own service principal, or a token
    /// minted without scopes); `Some` limits every action to what the
    /// scopes cover (see [`crate::Action::required_scope`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

impl Principal {
    /// A principal with no groups, claims or actor.
    pub fn new(kind: PrincipalKind, id: impl Into<String>, issuer: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            issuer: issuer.into(),
            groups: Vec::new(),
            email: None,
            ci: CiClaims::default(),
            actor: None,
            attributes: BTreeMap::new(),
            scopes: None,
        }
    }

    /// Whether this principal's token lets it do `action`: always when it
    /// carries no scopes or the action needs none, otherwise when one of its
    /// scopes covers the action's [`crate::Scope`].
    pub fn scopes_allow(&self, action: crate::Action) -> bool {
        self.scopes_cover(action.required_scope())
    }

    /// Whether this principal's token lets it do `intent` (whose method can
    /// narrow what it needs; see [`crate::Intent::required_scope`]).
    pub fn scopes_allow_intent(&self, intent: &crate::Intent) -> bool {
        self.scopes_cover(intent.required_scope())
    }

    fn scopes_cover(&self, needed: Option<crate::Scope>) -> bool {
        match (&self.scopes, needed) {
            (None, _) | (_, None) => true,
            (Some(granted), Some(needed)) => granted
                .iter()
                .any(|g| needed.satisfied_by().contains(&g.as_str())),
        }
    }

    /// `kind:id`, the short form used in logs and audit tables.
    pub fn display_id(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }
}
