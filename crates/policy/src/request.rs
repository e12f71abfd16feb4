//! Per-request entities and context.
//!
//! A request does not see every configured entity. It gets exactly two
//! entities (three when the action belongs to an action group):
//!
//! - the principal, typed by its kind, with the attributes the schema declares
//!   (`issuer`, `email`, CI facts) and, as parents, the `Group`s named by its
//!   groups claim plus every ancestor entities.json gives those groups;
//! - the resource, with its declared attributes and its parent chain.
//!
//! When entities.json configures an entity with the same uid, the two are
//! merged: parents are the union (so entities.json can put `User::"alice"` in
//! `Group::"admins"`), and for attributes the request's verified values win
//! while configured attributes the request does not carry are kept.
//!
//! Ancestor sets are transitively closed here, so ancestor entities need not
//! be materialized: the schema gives no entity-typed attributes, so a policy
//! can only reach them through `in`. (Attributes of entity *literals* in
//! policy conditions are not visible; write conditions on `principal`,
//! `resource` and `context`.)

use std::collections::{HashMap, HashSet};

use cedar_policy::{Context, Entities, Entity, EntityId, EntityUid, RestrictedExpression};
use latchkey_core::{
    Action, ContextValue, Intent, Principal, PrincipalKind, ResourceKind, ResourceRef,
};

use crate::engine::{Loaded, action_index, principal_index, resource_index};

/// A configured entity: its attributes and its transitively closed ancestors.
#[derive(Debug, Clone)]
pub(crate) struct Configured {
    pub(crate) attrs: HashMap<String, RestrictedExpression>,
    pub(crate) ancestors: HashSet<EntityUid>,
}

/// The parts of a Cedar request built from a principal and an intent.
pub(crate) struct Built {
    pub(crate) principal: EntityUid,
    pub(crate) resource: EntityUid,
    pub(crate) context: Context,
    pub(crate) entities: Entities,
}

/// The string attributes the schema declares for a resource kind.
pub(crate) fn resource_attrs(kind: ResourceKind) -> &'static [&'static str] {
    match kind {
        ResourceKind::Repository => &["upstream", "owner", "name"],
        ResourceKind::Ref => &["name", "kind", "short"],
        ResourceKind::Document | ResourceKind::Collection => {
            &["path", "collection_id", "database", "environment"]
        }
        ResourceKind::Environment
        | ResourceKind::App
        | ResourceKind::Audience
        | ResourceKind::Gateway => &[],
    }
}

/// The parent kinds the schema allows for a resource kind.
pub(crate) fn resource_parents(kind: ResourceKind) -> &'static [ResourceKind] {
    match kind {
        ResourceKind::Ref => &[ResourceKind::Repository],
        ResourceKind::Document => &[ResourceKind::Collection],
        ResourceKind::Collection => &[ResourceKind::Document, ResourceKind::Environment],
        ResourceKind::Repository
        | ResourceKind::Environment
        | ResourceKind::App
        | ResourceKind::Audience
        | ResourceKind::Gateway => &[],
    }
}

/// The type of a context key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtxType {
    String,
    Bool,
}

/// Context keys the schema declares for an action, besides `delegated`
/// (always set), `actor` (set from the principal's actor) and `scopes` (set
/// from the principal's token scopes, when it has any).
pub(crate) fn context_keys(action: Action) -> &'static [(&'static str, CtxType)] {
    const COMMON: &[(&str, CtxType)] = &[("request_id", CtxType::String)];
    match action {
        Action::GitPush => &[
            ("request_id", CtxType::String),
            ("operation", CtxType::String),
            ("old", CtxType::String),
            ("new", CtxType::String),
            ("method", CtxType::String),
            ("path", CtxType::String),
            ("web", CtxType::Bool),
        ],
        Action::TokenMint => &[
            ("request_id", CtxType::String),
            ("scope", CtxType::String),
            ("subject_kind", CtxType::String),
        ],
        Action::DocumentGet
        | Action::DocumentList
        | Action::DocumentCreate
        | Action::DocumentUpdate
        | Action::DocumentDelete => &[
            ("request_id", CtxType::String),
            ("operation", CtxType::String),
        ],
        Action::DocumentQuery | Action::DocumentListen => &[
            ("request_id", CtxType::String),
            ("operation", CtxType::String),
            ("collection_id", CtxType::String),
            ("all_descendants", CtxType::Bool),
        ],
        Action::GitRead => &[
            ("request_id", CtxType::String),
            ("command", CtxType::String),
            ("method", CtxType::String),
            ("path", CtxType::String),
            ("web", CtxType::Bool),
        ],
        Action::HttpRequest => &[
            ("request_id", CtxType::String),
            ("method", CtxType::String),
            ("path", CtxType::String),
        ],
        // A webhook rule's freeze or revocation says what it revokes.
        Action::TokenRevoke => &[
            ("request_id", CtxType::String),
            ("revocation_kind", CtxType::String),
            ("value", CtxType::String),
            ("mode", CtxType::String),
            ("rule", CtxType::String),
        ],
        Action::TokenIntrospect | Action::AdminRead | Action::AdminWrite => COMMON,
    }
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

/// Fills attributes a classifier left out but that follow from the id:
/// a ref's `name`/`kind`/`short`, a repository's `upstream`/`owner`/`name`,
/// a document's `path`.
fn derived_attrs(r: &ResourceRef) -> Vec<(&'static str, String)> {
    match r.kind {
        ResourceKind::Ref => {
            let name = r.id.rsplit_once(':').map_or(r.id.as_str(), |(_, n)| n);
            let (kind, short) = if let Some(b) = name.strip_prefix("refs/heads/") {
                ("branch", b)
            } else if let Some(t) = name.strip_prefix("refs/tags/") {
                ("tag", t)
            } else {
                ("other", name)
            };
            vec![
                ("name", name.to_owned()),
                ("kind", kind.to_owned()),
                ("short", short.to_owned()),
            ]
        }
        ResourceKind::Repository => {
            let (upstream, rest) = r.id.split_once('/').unwrap_or(("", r.id.as_str()));
            let (owner, name) = rest.rsplit_once('/').unwrap_or(("", rest));
            vec![
                ("upstream", upstream.to_owned()),
                ("owner", owner.to_owned()),
                ("name", name.to_owned()),
            ]
        }
        // Documents and collections are `{database}/{path}`; the classifier
        // sets `environment`, which the id cannot give.
        ResourceKind::Document | ResourceKind::Collection => {
            let (database, path) = r.id.split_once('/').unwrap_or(("", r.id.as_str()));
            let segments: Vec<&str> = path.split('/').collect();
            let collection_id = if r.kind == ResourceKind::Document && segments.len() >= 2 {
                segments[segments.len() - 2]
            } else {
                segments.last().copied().unwrap_or("")
            };
            vec![
                ("path", path.to_owned()),
                ("collection_id", collection_id.to_owned()),
                ("database", database.to_owned()),
                ("environment", String::new()),
            ]
        }
        ResourceKind::Environment
        | ResourceKind::App
        | ResourceKind::Audience
        | ResourceKind::Gateway => Vec::new(),
    }
}

impl Loaded {
    fn resource_uid(&self, kind: ResourceKind, id: &str) -> Option<EntityUid> {
        let ty = self.statics.resource_types.get(resource_index(kind))?;
        Some(EntityUid::from_type_name_and_id(
            ty.clone(),
            EntityId::new(id),
        ))
    }

    /// Adds `uid` and its configured (closed) ancestors to `set`.
    fn add_closed(&self, set: &mut HashSet<EntityUid>, uid: EntityUid) {
        if let Some(c) = self.configured.get(&uid) {
            set.extend(c.ancestors.iter().cloned());
        }
        set.insert(uid);
    }

    fn entity(
        &self,
        uid: EntityUid,
        mut attrs: HashMap<String, RestrictedExpression>,
        mut ancestors: HashSet<EntityUid>,
    ) -> Result<Entity, String> {
        if let Some(c) = self.configured.get(&uid) {
            ancestors.extend(c.ancestors.iter().cloned());
            for (k, v) in &c.attrs {
                attrs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Entity::new(uid, attrs, ancestors).map_err(|e| e.to_string())
    }

    pub(crate) fn principal_entity(&self, p: &Principal) -> Result<Entity, String> {
        let ty = self
            .statics
            .principal_types
            .get(principal_index(p.kind))
            .ok_or("unknown principal kind")?;
        let uid = EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(&p.id));
        let mut attrs = HashMap::new();
        let mut ancestors = HashSet::new();
        if p.kind != PrincipalKind::Service {
            attrs.insert("issuer".to_owned(), s(&p.issuer));
            for g in &p.groups {
                let g = EntityUid::from_type_name_and_id(
                    self.statics.group_type.clone(),
                    EntityId::new(g),
                );
                self.add_closed(&mut ancestors, g);
            }
        } else if !p.groups.is_empty() {
            tracing::debug!(principal = %p.display_id(), "service principals have no groups; ignoring groups claim");
        }
        match p.kind {
            PrincipalKind::User => {
                if let Some(email) = &p.email {
                    attrs.insert("email".to_owned(), s(email));
                }
            }
            PrincipalKind::Workload => {
                let ci = &p.ci;
                for (k, v) in [
                    ("ci_system", &ci.system),
                    ("pipeline", &ci.pipeline),
                    ("build", &ci.build),
                    ("job_id", &ci.job_id),
                    ("branch", &ci.branch),
                    ("commit", &ci.commit),
                    ("step", &ci.step),
                    ("environment", &ci.environment),
                ] {
                    if let Some(v) = v {
                        attrs.insert(k.to_owned(), s(v));
                    }
                }
            }
            PrincipalKind::Agent | PrincipalKind::Service => {}
        }
        self.entity(uid, attrs, ancestors)
    }

    pub(crate) fn resource_entity(&self, r: &ResourceRef) -> Result<Entity, String> {
        let uid = self
            .resource_uid(r.kind, &r.id)
            .ok_or("unknown resource kind")?;
        let declared = resource_attrs(r.kind);
        let mut attrs = HashMap::new();
        for (k, v) in &r.attributes {
            if declared.contains(&k.as_str()) {
                attrs.insert(k.clone(), s(v));
            } else {
                tracing::trace!(attribute = %k, resource = %r.display(), "attribute not in schema; dropped");
            }
        }
        for (k, v) in derived_attrs(r) {
            if !attrs.contains_key(k) && !self.configured_has_attr(&uid, k) {
                attrs.insert(k.to_owned(), s(&v));
            }
        }
        let mut ancestors = HashSet::new();
        let mut current = r;
        let mut expected = resource_parents(r.kind);
        while !expected.is_empty() {
            match current.parent.as_deref() {
                Some(parent) if expected.contains(&parent.kind) => {
                    if let Some(puid) = self.resource_uid(parent.kind, &parent.id) {
                        self.add_closed(&mut ancestors, puid);
                    }
                    current = parent;
                    expected = resource_parents(parent.kind);
                }
                Some(parent) => {
                    tracing::warn!(
                        resource = %r.display(),
                        parent = %parent.display(),
                        "parent kind not allowed by the schema; ignored"
                    );
                    break;
                }
                None => {
                    // A ref id names its repository: `upstream/owner/name:refs/...`.
                    if current.kind == ResourceKind::Ref
                        && let Some((repo, _)) = current.id.rsplit_once(':')
                        && let Some(puid) = self.resource_uid(ResourceKind::Repository, repo)
                    {
                        self.add_closed(&mut ancestors, puid);
                    }
                    break;
                }
            }
        }
        self.entity(uid, attrs, ancestors)
    }

    fn configured_has_attr(&self, uid: &EntityUid, attr: &str) -> bool {
        self.configured
            .get(uid)
            .is_some_and(|c| c.attrs.contains_key(attr))
    }
}

pub(crate) fn context(principal: &Principal, intent: &Intent) -> Result<Context, String> {
    let declared = context_keys(intent.action);
    let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(declared.len() + 2);
    pairs.push((
        "delegated".to_owned(),
        RestrictedExpression::new_bool(principal.actor.is_some()),
    ));
    if let Some(actor) = &principal.actor {
        pairs.push((
            "actor".to_owned(),
            s(&format!("{}:{}", actor.kind, actor.sub)),
        ));
    }
    if let Some(scopes) = &principal.scopes {
        pairs.push((
            "scopes".to_owned(),
            RestrictedExpression::new_set(scopes.iter().map(|v| s(v))),
        ));
    }
    for (k, v) in &intent.context {
        if k == "delegated" || k == "actor" || k == "scopes" {
            tracing::debug!(key = %k, "context key is set from the principal; intent value ignored");
            continue;
        }
        match (declared.iter().find(|(name, _)| name == k), v) {
            (Some((_, CtxType::String)), ContextValue::String(v)) => pairs.push((k.clone(), s(v))),
            (Some((_, CtxType::Bool)), ContextValue::Bool(b)) => {
                pairs.push((k.clone(), RestrictedExpression::new_bool(*b)));
            }
            (Some(_), _) => {
                tracing::warn!(key = %k, action = %intent.action, "context value has the wrong type; dropped");
            }
            (None, _) => {
                tracing::trace!(key = %k, action = %intent.action, "context key not in schema; dropped");
            }
        }
    }
    Context::from_pairs(pairs).map_err(|e| e.to_string())
}

/// Builds the Cedar principal, resource, context and entities for a request.
pub(crate) fn build(
    loaded: &Loaded,
    principal: &Principal,
    intent: &Intent,
) -> Result<Built, String> {
    let p = loaded.principal_entity(principal)?;
    let r = loaded.resource_entity(&intent.resource)?;
    let (p_uid, r_uid) = (p.uid(), r.uid());
    let mut list = vec![p, r];
    if let Some(Some(a)) = loaded
        .statics
        .action_entities
        .get(action_index(intent.action))
    {
        list.push(a.clone());
    }
    let entities = Entities::from_entities(list, None).map_err(|e| e.to_string())?;
    Ok(Built {
        principal: p_uid,
        resource: r_uid,
        context: context(principal, intent)?,
        entities,
    })
}

/// Like [`build`], but with every configured entity too (and the request's
/// entities validated against the schema). Used by tests to check that the
/// small per-request entity set decides exactly like the full one.
#[cfg(test)]
pub(crate) fn build_full(
    loaded: &Loaded,
    principal: &Principal,
    intent: &Intent,
) -> Result<Built, String> {
    let mut built = build(loaded, principal, intent)?;
    let mut seen: HashSet<EntityUid> = built.entities.iter().map(|e| e.uid()).collect();
    let mut list: Vec<Entity> = built.entities.iter().cloned().collect();
    for (uid, c) in &loaded.configured {
        if seen.insert(uid.clone()) {
            list.push(
                Entity::new(uid.clone(), c.attrs.clone(), c.ancestors.clone())
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    built.entities = Entities::from_entities(list, None).map_err(|e| e.to_string())?;
    Ok(built)
}
