//! The audit event vocabulary: what one line of the trail says.

use latchkey_core::{Actor, ContextValue, Decision, Intent, Principal};
use latchkey_store::AuditIndexRow;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// What policy decided about one intent (allowed or denied).
    Decision,
    /// What happened when an allowed intent was acted on.
    Outcome,
    /// Something Latchkey did on its own (start, key rotation, a rule firing).
    System,
}

/// The principal as the audit trail names it: enough to find them again,
/// without groups or claims that change over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRef {
    /// `user`, `workload`, `agent` or `service`.
    pub kind: String,
    /// The principal's id within its issuer.
    pub id: String,
    /// The issuer that vouched for the principal.
    pub issuer: String,
}

impl From<&Principal> for PrincipalRef {
    fn from(p: &Principal) -> Self {
        Self {
            kind: p.kind.as_str().to_owned(),
            id: p.id.clone(),
            issuer: p.issuer.clone(),
        }
    }
}

/// A policy decision as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// `allow` or `deny`.
    pub effect: String,
    /// The ids of the deciding policies (empty for a default deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_ids: Vec<String>,
    /// The reason a person can read.
    pub reason: String,
}

impl From<&Decision> for DecisionRecord {
    fn from(d: &Decision) -> Self {
        Self {
            effect: d.effect.to_string(),
            policy_ids: d.policy_ids.clone(),
            reason: d.reason.clone(),
        }
    }
}

/// What acting on an intent produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// A short status: an upstream HTTP status (`200`), `ok`, `error`, ...
    pub status: String,
    /// More detail for people (ref updates applied, an upstream error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Outcome {
    /// An outcome with just a status.
    pub fn new(status: impl Into<String>) -> Self {
        Self {
            status: status.into(),
            detail: None,
        }
    }

    /// Adds detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// One audit event: a decision, an outcome or a system action. The unit the
/// log chains, signs and indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The request it belongs to.
    pub request_id: String,
    /// Decision, outcome or system.
    pub kind: EventKind,
    /// Who asked, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalRef>,
    /// Who acted for the principal, if delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The action name (`git.push`, `token.mint`, `system.start`, ...).
    pub action: String,
    /// The resource in display form (`Ref::"gitea/acme/app:refs/heads/main"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Facts: `commit`, `job_id`, `ref`, `old`, `new`, `audience`, ...
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
    /// What policy decided, for decision events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRecord>,
    /// What happened, for outcome events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The request id or event seq this event follows from (a rule firing on
    /// a webhook, an outcome of a decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<String>,
}

impl AuditEvent {
    /// A decision event for one intent. The intent's context is copied, and
    /// the principal's CI `job_id` and `commit` are added when the intent
    /// does not name them, so one query ties the job, the commit and the write.
    pub fn decision(
        request_id: impl Into<String>,
        principal: &Principal,
        intent: &Intent,
        decision: &Decision,
        time_ms: u64,
    ) -> Self {
        let mut event = Self::for_intent(
            request_id,
            EventKind::Decision,
            Some(principal),
            intent,
            time_ms,
        );
        event.decision = Some(DecisionRecord::from(decision));
        event
    }

    /// An outcome event for an intent that was acted on.
    pub fn outcome(
        request_id: impl Into<String>,
        principal: Option<&Principal>,
        intent: &Intent,
        outcome: Outcome,
        time_ms: u64,
    ) -> Self {
        let mut event =
            Self::for_intent(request_id, EventKind::Outcome, principal, intent, time_ms);
        event.outcome = Some(outcome);
        event
    }

    /// A system event with no principal, resource or context yet.
    pub fn system(request_id: impl Into<String>, action: impl Into<String>, time_ms: u64) -> Self {
        Self {
            time_ms,
            request_id: request_id.into(),
            kind: EventKind::System,
            principal: None,
            actor: None,
            action: action.into(),
            resource: None,
            context: Map::new(),
            decision: None,
            outcome: None,
            caused_by: None,
        }
    }

    fn for_intent(
        request_id: impl Into<String>,
        kind: EventKind,
        principal: Option<&Principal>,
        intent: &Intent,
        time_ms: u64,
    ) -> Self {
        let mut context: Map<String, Value> = intent
            .context
            .iter()
            .map(|(k, v)| (k.clone(), context_value(v)))
            .collect();
        if let Some(p) = principal {
            if let Some(job) = &p.ci.job_id {
                context
                    .entry("job_id")
                    .or_insert_with(|| Value::String(job.clone()));
            }
            if let Some(commit) = &p.ci.commit {
                context
                    .entry("commit")
                    .or_insert_with(|| Value::String(commit.clone()));
            }
        }
        Self {
            time_ms,
            request_id: request_id.into(),
            kind,
            principal: principal.map(PrincipalRef::from),
            actor: principal.and_then(|p| p.actor.clone()),
            action: intent.action.as_str().to_owned(),
            resource: Some(intent.resource.display()),
            context,
            decision: None,
            outcome: None,
            caused_by: None,
        }
    }

    /// Sets the principal (and its actor).
    pub fn with_principal(mut self, principal: &Principal) -> Self {
        self.principal = Some(PrincipalRef::from(principal));
        self.actor = principal.actor.clone();
        self
    }

    /// Sets the resource display form.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Adds or replaces a context entry.
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// Links the event to the request id or event seq it follows from.
    pub fn with_caused_by(mut self, cause: impl Into<String>) -> Self {
        self.caused_by = Some(cause.into());
        self
    }

    /// A context entry as a string, if it is one.
    pub fn context_str(&self, key: &str) -> Option<&str> {
        self.context.get(key).and_then(Value::as_str)
    }
}

fn context_value(v: &ContextValue) -> Value {
    match v {
        ContextValue::Bool(b) => Value::Bool(*b),
        ContextValue::Long(n) => Value::from(*n),
        ContextValue::String(s) => Value::String(s.clone()),
    }
}

/// One record of the chain: an event with its position and hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Lowercase hex hash of the previous record (64 zeros for the first).
    pub prev: String,
    /// Lowercase hex SHA-256 over `seq` (8 bytes big-endian), `prev` (raw)
    /// and the event JSON exactly as written.
    pub hash: String,
    /// The event.
    pub event: AuditEvent,
}

impl From<&AuditRecord> for AuditIndexRow {
    fn from(record: &AuditRecord) -> Self {
        let json = serde_json::to_string(&record.event).unwrap_or_default();
        index_row(record, json)
    }
}

/// The index row for a record whose event JSON is already at hand.
pub(crate) fn index_row(record: &AuditRecord, event_json: String) -> AuditIndexRow {
    let e = &record.event;
    AuditIndexRow {
        node: String::new(),
        seq: record.seq,
        time_ms: e.time_ms,
        request_id: e.request_id.clone(),
        principal: e.principal.as_ref().map(|p| format!("{}:{}", p.kind, p.id)),
        action: e.action.clone(),
        resource: e.resource.clone(),
        decision: e.decision.as_ref().map(|d| d.effect.clone()),
        commit: e.context_str("commit").map(str::to_owned),
        job_id: e.context_str("job_id").map(str::to_owned),
        event_json,
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::{Action, Effect, PrincipalKind, ResourceKind, ResourceRef};

    use super::*;

    fn sample() -> AuditEvent {
        let mut p = Principal::new(PrincipalKind::Workload, "pipeline/deploy", "buildkite");
        p.ci.job_id = Some("job-7".into());
        p.ci.commit = Some("abc123".into());
        let intent = Intent::new(
            Action::GitPush,
            ResourceRef::new(ResourceKind::Ref, "gitea/acme/app:refs/heads/main"),
        )
        .with("old", "000")
        .with("new", "def456");
        let d = Decision {
            effect: Effect::Allow,
            policy_ids: vec!["ci-push".into()],
            reason: "ci may push".into(),
        };
        AuditEvent::decision("req-1", &p, &intent, &d, 1_700_000_000_000)
    }

    #[test]
    fn decision_event_shape() {
        let e = sample();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "decision");
        assert_eq!(json["action"], "git.push");
        assert_eq!(json["principal"]["kind"], "workload");
        assert_eq!(json["context"]["job_id"], "job-7");
        assert_eq!(json["context"]["commit"], "abc123");
        assert_eq!(json["context"]["new"], "def456");
        assert_eq!(json["decision"]["effect"], "allow");
        assert!(json.get("outcome").is_none());
        assert!(json.get("actor").is_none());
        assert!(json.get("caused_by").is_none());
        let back: AuditEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn system_event_skips_empties() {
        let e = AuditEvent::system("boot", "system.start", 5);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"time_ms":5,"request_id":"boot","kind":"system","action":"system.start"}"#
        );
    }

    #[test]
    fn index_row_from_record() {
        let record = AuditRecord {
            seq: 9,
            prev: "0".repeat(64),
            hash: "1".repeat(64),
            event: sample(),
        };
        let row = AuditIndexRow::from(&record);
        assert_eq!(row.seq, 9);
        assert_eq!(row.principal.as_deref(), Some("workload:pipeline/deploy"));
        assert_eq!(row.decision.as_deref(), Some("allow"));
        assert_eq!(row.commit.as_deref(), Some("abc123"));
        assert_eq!(row.job_id.as_deref(), Some("job-7"));
        assert_eq!(
            row.resource.as_deref(),
            Some(r#"Ref::"gitea/acme/app:refs/heads/main""#)
        );
        let back: AuditEvent = serde_json::from_str(&row.event_json).unwrap();
        assert_eq!(back, record.event);
    }
}
