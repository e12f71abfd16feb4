//! Loading, indexing and evaluating a policy set.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Entities, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint, Schema, ValidationMode,
    Validator,
};
use latchkey_core::{Action, Decision, Effect, Intent, Principal, PrincipalKind, ResourceKind};

use crate::SCHEMA;
use crate::error::{PolicyError, describe};
use crate::request::{self, Configured};

/// Name of the optional entities file in a policy directory.
pub const ENTITIES_FILE: &str = "entities.json";

/// Principal kinds in index order.
pub(crate) const PRINCIPAL_KINDS: [PrincipalKind; 4] = [
    PrincipalKind::User,
    PrincipalKind::Workload,
    PrincipalKind::Agent,
    PrincipalKind::Service,
];

/// Resource kinds in index order.
pub(crate) const RESOURCE_KINDS: [ResourceKind; 8] = [
    ResourceKind::Repository,
    ResourceKind::Ref,
    ResourceKind::Collection,
    ResourceKind::Document,
    ResourceKind::Environment,
    ResourceKind::App,
    ResourceKind::Audience,
    ResourceKind::Gateway,
];

pub(crate) fn principal_index(kind: PrincipalKind) -> usize {
    match kind {
        PrincipalKind::User => 0,
        PrincipalKind::Workload => 1,
        PrincipalKind::Agent => 2,
        PrincipalKind::Service => 3,
    }
}

pub(crate) fn resource_index(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::Repository => 0,
        ResourceKind::Ref => 1,
        ResourceKind::Collection => 2,
        ResourceKind::Document => 3,
        ResourceKind::Environment => 4,
        ResourceKind::App => 5,
        ResourceKind::Audience => 6,
        ResourceKind::Gateway => 7,
    }
}

pub(crate) fn action_index(action: Action) -> usize {
    // INVARIANT: `Action::ALL` lists every variant once, so this always finds it.
    Action::ALL
        .iter()
        .position(|a| *a == action)
        .unwrap_or_default()
}

fn slot(action: Action, principal: PrincipalKind, resource: ResourceKind) -> usize {
    (action_index(action) * RESOURCE_KINDS.len() + resource_index(resource)) * PRINCIPAL_KINDS.len()
        + principal_index(principal)
}

/// Names that never change: the schema, the validator, entity type names and
/// action uids. Built once per process.
pub(crate) struct Statics {
    pub(crate) schema: Schema,
    pub(crate) validator: Validator,
    pub(crate) principal_types: [EntityTypeName; 4],
    pub(crate) resource_types: [EntityTypeName; 8],
    pub(crate) group_type: EntityTypeName,
    pub(crate) action_uids: Vec<EntityUid>,
    /// Per action (in `Action::ALL` order): its action-group ancestors.
    pub(crate) action_ancestors: Vec<HashSet<EntityUid>>,
    /// Per action: the action entity to add to requests, when it has ancestors.
    pub(crate) action_entities: Vec<Option<cedar_policy::Entity>>,
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(&format!("Latchkey::{name}")).map_err(|e| PolicyError::Schema {
        message: format!("bad type name `{name}`: {e}"),
    })
}

fn build_statics() -> Result<Statics, PolicyError> {
    let (schema, warnings) =
        Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Schema {
            message: e.to_string(),
        })?;
    for w in warnings {
        tracing::debug!(warning = %w, "latchkey schema warning");
    }
    let principal_types = [
        type_name("User")?,
        type_name("Workload")?,
        type_name("Agent")?,
        type_name("Service")?,
    ];
    let resource_types = [
        type_name("Repository")?,
        type_name("Ref")?,
        type_name("Collection")?,
        type_name("Document")?,
        type_name("Environment")?,
        type_name("App")?,
        type_name("Audience")?,
        type_name("Gateway")?,
    ];
    let action_type = type_name("Action")?;
    let action_entities_all = schema.action_entities().map_err(|e| PolicyError::Schema {
        message: e.to_string(),
    })?;
    let mut action_uids = Vec::new();
    let mut action_ancestors = Vec::new();
    let mut action_entities = Vec::new();
    for action in Action::ALL {
        let uid = EntityUid::from_type_name_and_id(
            action_type.clone(),
            cedar_policy::EntityId::new(action.as_str()),
        );
        let ancestors: HashSet<EntityUid> = action_entities_all
            .ancestors(&uid)
            .map(|it| it.cloned().collect())
            .unwrap_or_default();
        if action_entities_all.get(&uid).is_none() {
            return Err(PolicyError::Schema {
                message: format!("action `{action}` is not declared"),
            });
        }
        action_entities.push(if ancestors.is_empty() {
            None
        } else {
            action_entities_all.get(&uid).cloned()
        });
        action_ancestors.push(ancestors);
        action_uids.push(uid);
    }
    Ok(Statics {
        validator: Validator::new(schema.clone()),
        schema,
        principal_types,
        resource_types,
        group_type: type_name("Group")?,
        action_uids,
        action_ancestors,
        action_entities,
    })
}

pub(crate) fn statics() -> Result<&'static Statics, PolicyError> {
    static STATICS: OnceLock<Result<Statics, String>> = OnceLock::new();
    match STATICS.get_or_init(|| build_statics().map_err(|e| e.to_string())) {
        Ok(s) => Ok(s),
        Err(message) => Err(PolicyError::Schema {
            message: message.clone(),
        }),
    }
}

/// One loaded, validated and indexed policy set with its entities.
pub(crate) struct Loaded {
    pub(crate) statics: &'static Statics,
    /// Every policy, under its `@id`.
    pub(crate) all: PolicySet,
    /// Policy id → file it came from.
    pub(crate) files: HashMap<String, String>,
    /// Sorted policy ids.
    pub(crate) ids: Vec<String>,
    /// Per (action, resource kind, principal kind): the policies whose scope can match.
    pub(crate) index: Vec<PolicySet>,
    /// Per index slot: each policy with its principal scope, so a request
    /// only evaluates the policies whose principal scope it can satisfy.
    pub(crate) scopes: Vec<Vec<(PrincipalScope, Policy)>>,
    /// Narrowed policy sets by (slot, positions of the policies that apply).
    /// Bounded; cleared when full.
    pub(crate) narrowed: RwLock<HashMap<NarrowedKey, Arc<PolicySet>>>,
    /// Configured entities (from entities.json), by uid, with closed ancestors.
    pub(crate) configured: HashMap<EntityUid, Configured>,
    pub(crate) authorizer: Authorizer,
}

fn excerpt(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = flat.chars().take(60).collect();
    if flat.chars().count() > 60 {
        out.push_str("...");
    }
    out
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
}

fn parse_policies(
    sources: &[(String, String)],
) -> Result<(PolicySet, HashMap<String, String>), PolicyError> {
    let mut all = PolicySet::new();
    let mut files: HashMap<String, String> = HashMap::new();
    for (file, text) in sources {
        let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Syntax {
            file: file.clone(),
            message: e
                .iter()
                .map(|e| describe(e, Some(text)))
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        if parsed.num_of_templates() > 0 {
            return Err(PolicyError::Template { file: file.clone() });
        }
        // Cedar names unannotated policies `policy0`, `policy1`, ... in file order.
        let mut policies: Vec<&Policy> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        for (i, policy) in policies.into_iter().enumerate() {
            let index = i + 1;
            let Some(id) = policy.annotation("id") else {
                return Err(PolicyError::MissingId {
                    file: file.clone(),
                    index,
                    excerpt: excerpt(&policy.to_string()),
                });
            };
            if !valid_id(id) {
                return Err(PolicyError::InvalidId {
                    file: file.clone(),
                    index,
                    id: id.to_owned(),
                });
            }
            if let Some(first) = files.get(id) {
                return Err(PolicyError::DuplicateId {
                    id: id.to_owned(),
                    first_file: first.clone(),
                    second_file: file.clone(),
                });
            }
            all.add(policy.new_id(PolicyId::new(id)))
                .map_err(|e| PolicyError::Syntax {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
            files.insert(id.to_owned(), file.clone());
        }
    }
    Ok((all, files))
}

fn validate(
    statics: &Statics,
    all: &PolicySet,
    files: &HashMap<String, String>,
    order: &[(String, String)],
) -> Result<(), PolicyError> {
    let result = statics.validator.validate(all, ValidationMode::Strict);
    for w in result.validation_warnings() {
        tracing::warn!(warning = %w, "policy validation warning");
    }
    if result.validation_passed() {
        return Ok(());
    }
    let text_of = |id: &str| {
        let file = files.get(id)?;
        order
            .iter()
            .find(|(n, _)| n == file)
            .map(|(_, t)| t.as_str())
    };
    let mut by_policy: HashMap<String, Vec<String>> = HashMap::new();
    for e in result.validation_errors() {
        let id = e.policy_id().to_string();
        let message = describe(e, text_of(&id));
        by_policy.entry(id).or_default().push(message);
    }
    // Report the first failing policy in file order, so the message is stable.
    let file_rank = |f: &str| order.iter().position(|(n, _)| n == f).unwrap_or(usize::MAX);
    let (id, messages) = by_policy
        .into_iter()
        .min_by_key(|(id, _)| {
            let f = files.get(id).map(String::as_str).unwrap_or_default();
            (file_rank(f), id.clone())
        })
        .unwrap_or_else(|| (String::new(), vec!["validation failed".to_owned()]));
    Err(PolicyError::Validation {
        file: files.get(&id).cloned().unwrap_or_default(),
        id,
        message: messages.join("; "),
    })
}

fn load_entities(
    statics: &Statics,
    entities: Option<(&str, &str)>,
) -> Result<HashMap<EntityUid, Configured>, PolicyError> {
    let Some((file, json)) = entities else {
        return Ok(HashMap::new());
    };
    let parsed = Entities::from_json_str(json, Some(&statics.schema)).map_err(|e| {
        PolicyError::Entities {
            file: file.to_owned(),
            message: describe(&e, None),
        }
    })?;
    let mut configured = HashMap::new();
    for entity in parsed.iter() {
        let uid = entity.uid();
        if statics
            .action_uids
            .first()
            .is_some_and(|a| a.type_name() == uid.type_name())
        {
            continue; // action entities come from the schema
        }
        let (uid, attrs, ancestors) = entity.clone().into_inner();
        configured.insert(uid, Configured { attrs, ancestors });
    }
    Ok(configured)
}

fn uid_may_be_ancestor(statics: &Statics, child: &EntityTypeName, uid: &EntityUid) -> bool {
    uid.type_name() == child
        || statics
            .schema
            .ancestors(child)
            .is_some_and(|mut it| it.any(|t| t == uid.type_name()))
}

fn principal_matches(statics: &Statics, policy: &Policy, ty: &EntityTypeName) -> bool {
    match policy.principal_constraint() {
        PrincipalConstraint::Any => true,
        PrincipalConstraint::Eq(uid) => uid.type_name() == ty,
        PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _) => &t == ty,
        PrincipalConstraint::In(uid) => uid_may_be_ancestor(statics, ty, &uid),
    }
}

fn resource_matches(statics: &Statics, policy: &Policy, ty: &EntityTypeName) -> bool {
    match policy.resource_constraint() {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(uid) => uid.type_name() == ty,
        ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => &t == ty,
        ResourceConstraint::In(uid) => uid_may_be_ancestor(statics, ty, &uid),
    }
}

fn action_matches(statics: &Statics, policy: &Policy, ai: usize) -> bool {
    let (Some(uid), Some(ancestors)) = (
        statics.action_uids.get(ai),
        statics.action_ancestors.get(ai),
    ) else {
        return false;
    };
    match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == uid,
        ActionConstraint::In(list) => list.iter().any(|a| a == uid || ancestors.contains(a)),
    }
}

fn build_index(statics: &Statics, all: &PolicySet) -> Result<Vec<PolicySet>, PolicyError> {
    let mut index =
        Vec::with_capacity(Action::ALL.len() * RESOURCE_KINDS.len() * PRINCIPAL_KINDS.len());
    for ai in 0..Action::ALL.len() {
        let for_action: Vec<&Policy> = all
            .policies()
            .filter(|p| action_matches(statics, p, ai))
            .collect();
        for rt in &statics.resource_types {
            let for_resource: Vec<&Policy> = for_action
                .iter()
                .copied()
                .filter(|p| resource_matches(statics, p, rt))
                .collect();
            for pt in &statics.principal_types {
                let mut set = PolicySet::new();
                for p in for_resource
                    .iter()
                    .filter(|p| principal_matches(statics, p, pt))
                {
                    set.add((*p).clone()).map_err(|e| PolicyError::Schema {
                        message: format!("cannot index policy `{}`: {e}", p.id()),
                    })?;
                }
                index.push(set);
            }
        }
    }
    Ok(index)
}

/// What a policy's principal scope requires of the principal.
#[derive(Debug, Clone)]
pub(crate) enum PrincipalScope {
    /// `principal` or `principal is T`: any principal of the slot's type.
    Any,
    /// `principal == E`: exactly that entity.
    Is(EntityUid),
    /// `principal in E` or `principal is T in E`: E itself or a descendant.
    In(EntityUid),
}

impl PrincipalScope {
    fn of(policy: &Policy) -> Self {
        match policy.principal_constraint() {
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => Self::Any,
            PrincipalConstraint::Eq(uid) => Self::Is(uid),
            PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => Self::In(uid),
        }
    }

    fn admits(&self, principal: &EntityUid, ancestors: &HashSet<&EntityUid>) -> bool {
        match self {
            Self::Any => true,
            Self::Is(uid) => uid == principal,
            Self::In(uid) => uid == principal || ancestors.contains(uid),
        }
    }
}

/// An index slot and the positions of the policies in it that apply.
pub(crate) type NarrowedKey = (usize, Vec<u16>);

/// Bound on cached narrowed policy sets (distinct group combinations).
const NARROWED_CAPACITY: usize = 4096;

impl Loaded {
    /// The policies of `slot` whose principal scope this principal satisfies.
    /// Excluding the others cannot change a decision: a policy whose scope
    /// does not match is never satisfied.
    fn narrowed(&self, slot: usize, built: &request::Built) -> Option<Arc<PolicySet>> {
        let scoped = self.scopes.get(slot)?;
        let ancestors: HashSet<&EntityUid> = built
            .entities
            .ancestors(&built.principal)
            .map(|it| it.collect())
            .unwrap_or_default();
        let positions: Vec<u16> = scoped
            .iter()
            .enumerate()
            .filter(|(_, (scope, _))| scope.admits(&built.principal, &ancestors))
            .map(|(i, _)| i as u16)
            .collect();
        let key = (slot, positions);
        if let Some(set) = self.narrowed.read().ok().and_then(|c| c.get(&key).cloned()) {
            return Some(set);
        }
        let mut set = PolicySet::new();
        for &i in &key.1 {
            let (_, policy) = scoped.get(usize::from(i))?;
            set.add(policy.clone()).ok()?;
        }
        let set = Arc::new(set);
        if let Ok(mut cache) = self.narrowed.write() {
            if cache.len() >= NARROWED_CAPACITY {
                cache.clear();
            }
            cache.insert(key, set.clone());
        }
        Some(set)
    }

    /// Decides with the index: the slot for (action, principal kind,
    /// resource kind), narrowed to the policies the principal's scope allows.
    pub(crate) fn authorize_indexed(&self, principal: &Principal, intent: &Intent) -> Decision {
        let slot = slot(intent.action, principal.kind, intent.resource.kind);
        let Some(full) = self.index.get(slot) else {
            return deny_internal("no policy index slot");
        };
        let built = match request::build(self, principal, intent) {
            Ok(b) => b,
            Err(message) => return deny_internal(&message),
        };
        match self.narrowed(slot, &built) {
            Some(set) => self.authorize_built(principal, intent, Ok(built), &set),
            None => self.authorize_built(principal, intent, Ok(built), full),
        }
    }

    pub(crate) fn from_sources(
        sources: &[(String, String)],
        entities: Option<(&str, &str)>,
    ) -> Result<Self, PolicyError> {
        let statics = statics()?;
        let (all, files) = parse_policies(sources)?;
        validate(statics, &all, &files, sources)?;
        let configured = load_entities(statics, entities)?;
        let index = build_index(statics, &all)?;
        let scopes = index
            .iter()
            .map(|set| {
                set.policies()
                    .map(|p| (PrincipalScope::of(p), p.clone()))
                    .collect()
            })
            .collect();
        let mut ids: Vec<String> = files.keys().cloned().collect();
        ids.sort();
        Ok(Self {
            statics,
            all,
            files,
            ids,
            index,
            scopes,
            narrowed: RwLock::new(HashMap::new()),
            configured,
            authorizer: Authorizer::new(),
        })
    }

    pub(crate) fn authorize_with(
        &self,
        principal: &Principal,
        intent: &Intent,
        policies: &PolicySet,
    ) -> Decision {
        self.authorize_built(
            principal,
            intent,
            request::build(self, principal, intent),
            policies,
        )
    }

    pub(crate) fn authorize_built(
        &self,
        principal: &Principal,
        intent: &Intent,
        built: Result<request::Built, String>,
        policies: &PolicySet,
    ) -> Decision {
        // INVARIANT: a scoped token never does more than its scopes cover,
        // whatever the loaded policies permit; checked before Cedar so no
        // policy set (starter or not) can forget it.
        if let Some(denied) = scope_denial(principal, intent) {
            return denied;
        }
        let built = match built {
            Ok(b) => b,
            Err(message) => return deny_internal(&message),
        };
        let request::Built {
            principal: p,
            resource: r,
            context,
            entities,
        } = built;
        let action = self
            .statics
            .action_uids
            .get(action_index(intent.action))
            .cloned();
        let Some(action_uid) = action else {
            return deny_internal("unknown action");
        };
        let req = match Request::new(p, action_uid, r, context, None) {
            Ok(r) => r,
            Err(e) => return deny_internal(&e.to_string()),
        };
        let response = self.authorizer.is_authorized(&req, policies, &entities);
        self.decide(principal, intent, &response)
    }

    fn decide(
        &self,
        principal: &Principal,
        intent: &Intent,
        response: &cedar_policy::Response,
    ) -> Decision {
        let mut errored_forbids = BTreeSet::new();
        let mut errored_permits = BTreeSet::new();
        for err in response.diagnostics().errors() {
            let AuthorizationError::PolicyEvaluationError(e) = err;
            let id = e.policy_id().to_string();
            tracing::warn!(
                policy = %id,
                error = %e.inner(),
                principal = %principal.display_id(),
                action = %intent.action,
                resource = %intent.resource.display(),
                "policy failed to evaluate; it does not allow"
            );
            let forbid = self
                .all
                .policy(e.policy_id())
                .is_none_or(|p| p.effect() == cedar_policy::Effect::Forbid);
            if forbid {
                errored_forbids.insert(id);
            } else {
                errored_permits.insert(id);
            }
        }
        let mut ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        // INVARIANT: a forbid that cannot be evaluated never lets a request
        // through; Cedar would skip it, latchkey fails closed instead.
        if !errored_forbids.is_empty() {
            let ids: Vec<String> = errored_forbids.into_iter().collect();
            return Decision {
                reason: format!(
                    "denied because {} could not be evaluated (fail closed; see the gateway log)",
                    name_policies(&ids)
                ),
                effect: Effect::Deny,
                policy_ids: ids,
            };
        }
        match response.decision() {
            cedar_policy::Decision::Allow => Decision {
                reason: format!("allowed by {}", name_policies(&ids)),
                effect: Effect::Allow,
                policy_ids: ids,
            },
            cedar_policy::Decision::Deny if !ids.is_empty() => Decision {
                reason: format!("denied by {}", name_policies(&ids)),
                effect: Effect::Deny,
                policy_ids: ids,
            },
            cedar_policy::Decision::Deny => {
                let mut reason = format!(
                    "no policy permits `{}` on {} (default deny)",
                    intent.action,
                    intent.resource.display()
                );
                if !errored_permits.is_empty() {
                    let ids: Vec<String> = errored_permits.into_iter().collect();
                    reason.push_str(&format!("; {} could not be evaluated", name_policies(&ids)));
                }
                Decision {
                    effect: Effect::Deny,
                    policy_ids: Vec::new(),
                    reason,
                }
            }
        }
    }
}

/// The refusal of an action the principal's token scopes do not cover, or
/// `None` when they do (or the principal is not narrowed by scope).
/// Decided before any policy, with no deciding policy id.
pub(crate) fn scope_denial(principal: &Principal, intent: &Intent) -> Option<Decision> {
    if principal.scopes_allow_intent(intent) {
        return None;
    }
    let needed = intent.required_scope()?;
    let granted: Vec<String> = principal
        .scopes
        .iter()
        .flatten()
        .take(4)
        .map(|g| format!("`{}`", g.chars().take(40).collect::<String>()))
        .collect();
    Some(Decision {
        effect: Effect::Deny,
        policy_ids: Vec::new(),
        reason: format!(
            "`{}` on {} needs scope `{needed}`; the token carries only {} \
             (request a token with `scope={needed}`)",
            intent.action,
            intent.resource.display(),
            granted.join(", ")
        ),
    })
}

fn deny_internal(message: &str) -> Decision {
    tracing::error!(error = %message, "cannot build the cedar request; denying");
    Decision {
        effect: Effect::Deny,
        policy_ids: Vec::new(),
        reason: format!("denied: the request could not be evaluated ({message})"),
    }
}

fn name_policies(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        1 => format!("policy {}", quoted.join("")),
        _ => format!("policies {}", quoted.join(", ")),
    }
}

/// What a successful [`PolicyEngine::reload`] changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Policies in the new set.
    pub policies: usize,
    /// Entities in the new entities file (0 without one).
    pub entities: usize,
    /// Policy ids new in this set.
    pub added: Vec<String>,
    /// Policy ids no longer present.
    pub removed: Vec<String>,
}

/// The authorize step: Latchkey's Cedar policies and entities, validated
/// against [`crate::SCHEMA`] and indexed by action, principal kind and
/// resource kind so that a request evaluates only the policies that can
/// apply to it.
///
/// Cheap to share behind an `Arc`; [`PolicyEngine::reload`] swaps the whole
/// set atomically and requests already in flight finish on the old one.
pub struct PolicyEngine {
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded = self.loaded();
        f.debug_struct("PolicyEngine")
            .field("policies", &loaded.ids.len())
            .field("entities", &loaded.configured.len())
            .finish()
    }
}

/// Reads every `*.cedar` file in `dir` (sorted by name) and the optional
/// entities file.
/// `(file name, text)` pairs: the policy files and the optional entities file.
type DirContents = (Vec<(String, String)>, Option<(String, String)>);

fn read_dir(dir: &Path) -> Result<DirContents, PolicyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PolicyError::Io { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "cedar") && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(PolicyError::NoPolicyFiles {
            dir: dir.to_path_buf(),
        });
    }
    paths.sort();
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        sources.push((path.display().to_string(), text));
    }
    let entities_path = dir.join(ENTITIES_FILE);
    let entities = if entities_path.is_file() {
        let text = std::fs::read_to_string(&entities_path).map_err(io(&entities_path))?;
        Some((entities_path.display().to_string(), text))
    } else {
        None
    };
    Ok((sources, entities))
}

impl PolicyEngine {
    /// Loads every `*.cedar` file in `dir` (sorted by name) and, when
    /// present, `dir/entities.json`; validates all of it against the schema.
    /// An existing directory without policy files is an error.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let loaded = Self::load_dir(dir)?;
        Ok(Self::from_loaded(loaded))
    }

    /// Like [`PolicyEngine::load`], from memory: `(file name, text)` pairs
    /// and the entities JSON. For tests, benchmarks and the dev sandbox.
    pub fn from_sources(
        policies: &[(String, String)],
        entities_json: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let loaded = Loaded::from_sources(policies, entities_json.map(|j| (ENTITIES_FILE, j)))?;
        Ok(Self::from_loaded(loaded))
    }

    fn load_dir(dir: &Path) -> Result<Loaded, PolicyError> {
        let (sources, entities) = read_dir(dir)?;
        Loaded::from_sources(
            &sources,
            entities.as_ref().map(|(f, t)| (f.as_str(), t.as_str())),
        )
    }

    fn from_loaded(loaded: Loaded) -> Self {
        Self {
            current: RwLock::new(Arc::new(loaded)),
        }
    }

    pub(crate) fn loaded(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a complete `Arc`: writers only swap it.
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads `dir` again and swaps the new set in. On any error the engine
    /// keeps the set it had and the error is returned.
    pub fn reload(&self, dir: &Path) -> Result<ReloadSummary, PolicyError> {
        let new = Self::load_dir(dir)?;
        Ok(self.swap(new))
    }

    /// Like [`PolicyEngine::reload`], from memory.
    pub fn reload_from_sources(
        &self,
        policies: &[(String, String)],
        entities_json: Option<&str>,
    ) -> Result<ReloadSummary, PolicyError> {
        let new = Loaded::from_sources(policies, entities_json.map(|j| (ENTITIES_FILE, j)))?;
        Ok(self.swap(new))
    }

    fn swap(&self, new: Loaded) -> ReloadSummary {
        let new = Arc::new(new);
        let old = {
            let mut guard = match self.current.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::replace(&mut *guard, Arc::clone(&new))
        };
        let old_ids: BTreeSet<&String> = old.ids.iter().collect();
        let new_ids: BTreeSet<&String> = new.ids.iter().collect();
        ReloadSummary {
            policies: new.ids.len(),
            entities: new.configured.len(),
            added: new_ids.difference(&old_ids).map(|s| (*s).clone()).collect(),
            removed: old_ids.difference(&new_ids).map(|s| (*s).clone()).collect(),
        }
    }

    /// Decides one intent. Default deny; a policy that fails to evaluate
    /// never allows, and a forbid that fails to evaluate denies.
    pub fn authorize(&self, principal: &Principal, intent: &Intent) -> Decision {
        self.loaded().authorize_indexed(principal, intent)
    }

    /// Decides one intent against every loaded policy, bypassing the index.
    /// Slower; exists so tests and benchmarks can check the index.
    pub fn authorize_unindexed(&self, principal: &Principal, intent: &Intent) -> Decision {
        let loaded = self.loaded();
        loaded.authorize_with(principal, intent, &loaded.all)
    }

    /// The ids of every loaded policy, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        self.loaded().ids.clone()
    }

    /// How many policies are loaded.
    pub fn policy_count(&self) -> usize {
        self.loaded().ids.len()
    }

    /// How many entities the entities file configured.
    pub fn entity_count(&self) -> usize {
        self.loaded().configured.len()
    }

    /// The file a policy came from, for error reports and `policy test`.
    pub fn policy_file(&self, id: &str) -> Option<String> {
        self.loaded().files.get(id).cloned()
    }
}
