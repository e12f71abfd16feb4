use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every action a policy can allow. Exhaustive on purpose: a new action is a
/// schema change and must break the build wherever actions are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    /// Clone or fetch a repository.
    #[serde(rename = "git.read")]
    GitRead,
    /// Create, update or delete one ref.
    #[serde(rename = "git.push")]
    GitPush,
    /// Read one document.
    #[serde(rename = "document.get")]
    DocumentGet,
    /// List a collection's documents, or the collection ids under a
    /// document or a database root.
    #[serde(rename = "document.list")]
    DocumentList,
    /// Run a query (or an aggregation such as a count) over a collection,
    /// or over every collection of one id below a parent.
    #[serde(rename = "document.query")]
    DocumentQuery,
    /// Watch documents or a query for changes (Firestore `Listen`).
    #[serde(rename = "document.listen")]
    DocumentListen,
    /// Create a document.
    #[serde(rename = "document.create")]
    DocumentCreate,
    /// Update a document.
    #[serde(rename = "document.update")]
    DocumentUpdate,
    /// Delete a document.
    #[serde(rename = "document.delete")]
    DocumentDelete,
    /// Mint a Latchkey token for an audience.
    #[serde(rename = "token.mint")]
    TokenMint,
    /// Revoke tokens or freeze subjects.
    #[serde(rename = "token.revoke")]
    TokenRevoke,
    /// Introspect a token.
    #[serde(rename = "token.introspect")]
    TokenIntrospect,
    /// One HTTP request to a proxied web app (`App::"name"`), with its
    /// `method` and `path` in the context.
    #[serde(rename = "http.request")]
    HttpRequest,
    /// Read admin data (audit, keys, health).
    #[serde(rename = "admin.read")]
    AdminRead,
    /// Change admin state (rotate keys, lift freezes).
    #[serde(rename = "admin.write")]
    AdminWrite,
}

impl Action {
    /// Every action, in schema order.
    pub const ALL: [Action; 15] = [
        Self::GitRead,
        Self::GitPush,
        Self::DocumentGet,
        Self::DocumentList,
        Self::DocumentQuery,
        Self::DocumentListen,
        Self::DocumentCreate,
        Self::DocumentUpdate,
        Self::DocumentDelete,
        Self::TokenMint,
        Self::TokenRevoke,
        Self::TokenIntrospect,
        Self::HttpRequest,
        Self::AdminRead,
        Self::AdminWrite,
    ];

    /// The Cedar action id, e.g. `git.push`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitRead => "git.read",
            Self::GitPush => "git.push",
            Self::DocumentGet => "document.get",
            Self::DocumentList => "document.list",
            Self::DocumentQuery => "document.query",
            Self::DocumentListen => "document.listen",
            Self::DocumentCreate => "document.create",
            Self::DocumentUpdate => "document.update",
            Self::DocumentDelete => "document.delete",
            Self::TokenMint => "token.mint",
            Self::TokenRevoke => "token.revoke",
            Self::TokenIntrospect => "token.introspect",
            Self::HttpRequest => "http.request",
            Self::AdminRead => "admin.read",
            Self::AdminWrite => "admin.write",
        }
    }

    /// Parses a Cedar action id.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether the action changes state (and so must be durably audited
    /// before it is acknowledged).
    pub fn is_mutating(self) -> bool {
        !matches!(
            self,
            Self::GitRead
                | Self::DocumentGet
                | Self::DocumentList
                | Self::DocumentQuery
                | Self::DocumentListen
                | Self::TokenIntrospect
                | Self::AdminRead
        )
    }
}

/// What a token's scopes must include for an action (see
/// [`Action::required_scope`]). Scopes are what a Latchkey token's `scope`
/// claim names; a token that carries none is not narrowed by scope (policy
/// alone decides), one that carries any may do only what they cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads: clone and fetch, document reads, queries and listens, admin
    /// reads (audit, keys), introspection, web-app requests with a safe
    /// method (GET, HEAD, OPTIONS).
    Read,
    /// Changes: pushes, document writes, revocations, admin writes. Covers
    /// every read too (a push starts with a ref advertisement).
    Write,
}

impl Scope {
    /// Every scope Latchkey enforces, weakest first.
    pub const ALL: [Scope; 2] = [Self::Read, Self::Write];

    /// The scope's name in the `scope` claim and the token request.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// The granted scope names that satisfy this scope (`write` covers reads).
    pub fn satisfied_by(self) -> &'static [&'static str] {
        match self {
            Self::Read => &["read", "write"],
            Self::Write => &["write"],
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Action {
    /// The scope a scoped token needs for this action, or `None` when scopes
    /// do not apply: `token.mint` is decided on the external identity being
    /// exchanged, never on a Latchkey token.
    ///
    /// INVARIANT: exhaustive, so a new action must say whether it reads or
    /// writes before it builds; scopes cannot be bypassed by an action
    /// nobody classified.
    pub fn required_scope(self) -> Option<Scope> {
        match self {
            Self::GitRead
            | Self::DocumentGet
            | Self::DocumentList
            | Self::DocumentQuery
            | Self::DocumentListen
            | Self::TokenIntrospect
            | Self::AdminRead => Some(Scope::Read),
            // A web request may change anything; the intent's method can
            // narrow this to `read` (see [`Intent::required_scope`]).
            Self::HttpRequest
            | Self::GitPush
            | Self::DocumentCreate
            | Self::DocumentUpdate
            | Self::DocumentDelete
            | Self::TokenRevoke
            | Self::AdminWrite => Some(Scope::Write),
            Self::TokenMint => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of protected resource; each is a Cedar entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    /// A Git repository, id `upstream/owner/name`.
    Repository,
    /// A ref in a repository, id `upstream/owner/name:refs/heads/main`.
    Ref,
    /// A document collection.
    Collection,
    /// A document in a collection.
    Document,
    /// A deployment environment.
    Environment,
    /// A proxied web app.
    App,
    /// A token audience (the resource of `token.mint`).
    Audience,
    /// Latchkey itself (the resource of admin and token-management actions).
    Gateway,
}

impl ResourceKind {
    /// The Cedar entity type name (without namespace).
    pub fn entity_type(self) -> &'static str {
        match self {
            Self::Repository => "Repository",
            Self::Ref => "Ref",
            Self::Collection => "Collection",
            Self::Document => "Document",
            Self::Environment => "Environment",
            Self::App => "App",
            Self::Audience => "Audience",
            Self::Gateway => "Gateway",
        }
    }

    /// Parses a Cedar entity type name (without namespace).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Repository" => Self::Repository,
            "Ref" => Self::Ref,
            "Collection" => Self::Collection,
            "Document" => Self::Document,
            "Environment" => Self::Environment,
            "App" => Self::App,
            "Audience" => Self::Audience,
            "Gateway" => Self::Gateway,
            _ => return None,
        })
    }
}

/// A resource named by kind and id, with the parent it lives in (a ref's
/// repository, a document's collection) and attributes policies may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The resource's id within its kind.
    pub id: String,
    /// The resource it lives in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<ResourceRef>>,
    /// String attributes (a ref's `name` and `kind`, a repository's `owner`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl ResourceRef {
    /// A resource with no parent or attributes.
    pub fn new(kind: ResourceKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            parent: None,
            attributes: BTreeMap::new(),
        }
    }

    /// Sets the parent.
    pub fn with_parent(mut self, parent: ResourceRef) -> Self {
        self.parent = Some(Box::new(parent));
        self
    }

    /// Adds a string attribute.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// `Kind::"id"`, the form used in audit tables and error messages.
    pub fn display(&self) -> String {
        format!("{}::{:?}", self.kind.entity_type(), self.id)
    }
}

/// A value in an intent's context. Kept small so it maps onto Cedar and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContextValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Long(i64),
    /// A string.
    String(String),
}

impl From<&str> for ContextValue {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}
impl From<String> for ContextValue {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}
impl From<bool> for ContextValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}
impl From<i64> for ContextValue {
    fn from(n: i64) -> Self {
        Self::Long(n)
    }
}

/// What one request asks to do: the output of the classify step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The action.
    pub action: Action,
    /// The resource acted on.
    pub resource: ResourceRef,
    /// Facts about the request (old and new object ids, operation, ...).
    #[serde(default)]
    pub context: BTreeMap<String, ContextValue>,
}

impl Intent {
    /// An intent with an empty context.
    pub fn new(action: Action, resource: ResourceRef) -> Self {
        Self {
            action,
            resource,
            context: BTreeMap::new(),
        }
    }

    /// The scope a scoped token needs for this intent: the action's
    /// ([`Action::required_scope`]), except that an `http.request` whose
    /// context `method` is GET, HEAD or OPTIONS (safe by RFC 9110, and
    /// what a browser sends cross-site without asking) needs only `read`.
    /// Anything else, and an `http.request` without a method, needs `write`.
    pub fn required_scope(&self) -> Option<Scope> {
        match self.action {
            Action::HttpRequest => match self.context.get("method") {
                Some(ContextValue::String(m)) if is_safe_method(m) => Some(Scope::Read),
                _ => Some(Scope::Write),
            },
            // The web UI's repository intents (`git.read`/`git.push` with
            // a `method`) follow their action.
            other => other.required_scope(),
        }
    }

    /// Adds a context entry.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<ContextValue>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// What policy said about one intent: the output of the authorize step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// The ids of the policies that decided it (empty for a default deny).
    pub policy_ids: Vec<String>,
    /// A sentence a person can read.
    pub reason: String,
}

impl Decision {
    /// Whether the decision allows the intent.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// Whether `method` is safe (RFC 9110 §9.2.1) for scopes and CSRF: GET,
/// HEAD or OPTIONS, exactly (methods are case-sensitive).
pub fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}
