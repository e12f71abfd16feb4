//! The audit records the pipeline and the targets write besides decisions
//! (refusals before a decision, minted tokens, revocations, Git outcomes,
//! system events), and the one vocabulary of their actions.

use std::borrow::Cow;

use latchkey_audit::{AuditEvent, EventKind, Outcome, PrincipalRef};
use latchkey_core::Principal;
use latchkey_store::{Revocation, RevocationKind, RevocationMode};
use serde_json::{Map, json};

use super::refusal::{Code, Stage};

/// The targets, as audit actions name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetName {
    /// Git smart HTTP.
    Git,
    /// The Firestore document API (gRPC and REST).
    Firestore,
    /// Token exchange, revocation and introspection.
    Token,
    /// The admin API.
    Admin,
    /// Webhook receivers.
    Webhook,
    /// Web apps behind Latchkey (`[[apps]]`).
    App,
}

impl TargetName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Git => "git",
            Self::Firestore => "firestore",
            Self::Token => "token",
            Self::Admin => "admin",
            Self::Webhook => "webhook",
            Self::App => "app",
        }
    }
}

/// What an audit record is about: its `action`. Decisions carry their
/// intent's action; everything else the gateway records is named here, so
/// a new kind of record is placed deliberately and queries can rely on the
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuditAction {
    /// An intent's own action (`git.push`, `token.mint`, ...).
    Intent(latchkey_core::Action),
    /// A request a target refused before any decision (`git.authenticate`,
    /// `firestore.classify`, ...).
    Refused(TargetName, Stage),
    /// A ref an upstream reported that no decision covered.
    GitIntegrity,
    /// A webhook delivery seen before (or its signed body, replayed).
    WebhookDelivery,
    /// A webhook event received, or a rule's action on it.
    WebhookEvent(latchkey_events::EventKind),
    /// Refusals before authentication counted but not recorded one by one.
    GatewayUnauthenticated,
    /// A freeze or revocation lifted.
    AdminLift,
    /// A crash's unvouched tail signed at start.
    AuditRecover,
    /// Policies reloaded (or a reload refused).
    PolicyReload,
    /// A signing-key rotation.
    KeysRotate,
    /// A browser session began (sign-in).
    SessionStart,
    /// A session's provider tokens were refreshed.
    SessionRefresh,
    /// A session ended: logout, expiry, idle, revocation, refresh failure.
    SessionEnd,
    /// A sign-in that did not complete (bad state, provider error, a
    /// token that does not verify, a frozen subject).
    SigninRefused,
}

impl AuditAction {
    /// The action as the trail spells it.
    pub(crate) fn as_str(self) -> Cow<'static, str> {
        match self {
            Self::Intent(a) => Cow::Borrowed(a.as_str()),
            Self::Refused(target, stage) => {
                Cow::Owned(format!("{}.{}", target.as_str(), stage.as_str()))
            }
            Self::GitIntegrity => Cow::Borrowed("git.integrity"),
            Self::WebhookDelivery => Cow::Borrowed("webhook.delivery"),
            Self::WebhookEvent(kind) => Cow::Owned(format!("webhook.{}", kind.as_str())),
            Self::GatewayUnauthenticated => Cow::Borrowed("gateway.unauthenticated"),
            Self::AdminLift => Cow::Borrowed("admin.lift"),
            Self::AuditRecover => Cow::Borrowed("audit.recover"),
            Self::PolicyReload => Cow::Borrowed("policy.reload"),
            Self::KeysRotate => Cow::Borrowed("keys.rotate"),
            Self::SessionStart => Cow::Borrowed("session.start"),
            Self::SessionRefresh => Cow::Borrowed("session.refresh"),
            Self::SessionEnd => Cow::Borrowed("session.end"),
            Self::SigninRefused => Cow::Borrowed("signin.refused"),
        }
    }
}

fn base(
    request_id: String,
    kind: EventKind,
    principal: Option<&Principal>,
    action: AuditAction,
    time_ms: u64,
) -> AuditEvent {
    AuditEvent {
        time_ms,
        request_id,
        kind,
        principal: principal.map(PrincipalRef::from),
        actor: principal.and_then(|p| p.actor.clone()),
        action: action.as_str().into_owned(),
        resource: None,
        context: Map::new(),
        decision: None,
        outcome: None,
        caused_by: None,
    }
}

/// An action taken on behalf of an earlier request (a webhook rule's
/// document write names the delivery's request as `caused_by` in the facts
/// it is decided and recorded with) carries the link at the top of the
/// record, where every other record's link is and where queries look.
pub(crate) fn link_cause(e: &mut AuditEvent) {
    if e.caused_by.is_none()
        && let Some(cause) = e.context.get("caused_by").and_then(|v| v.as_str())
    {
        e.caused_by = Some(cause.to_owned());
    }
}

/// The most bytes of a refusal record's detail. The detail is a message
/// that may quote caller input (already bounded per value by
/// [`latchkey_core::echo`]); this bounds the whole, so one refusal costs the
/// audit log a few hundred bytes whatever the caller sent.
pub(crate) const MAX_REFUSAL_DETAIL_BYTES: usize = 512;

/// A request refused before policy was consulted (bad credential, unknown
/// issuer, issuer down). The detail is cut to [`MAX_REFUSAL_DETAIL_BYTES`].
pub(crate) fn refusal(
    request_id: String,
    principal: Option<&Principal>,
    action: AuditAction,
    code: Code,
    detail: &str,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(request_id, EventKind::Outcome, principal, action, time_ms);
    let detail = latchkey_core::bounded(detail, MAX_REFUSAL_DETAIL_BYTES);
    e.outcome =
        Some(Outcome::new(format!("refused:{}", code.as_str())).with_detail(detail.into_owned()));
    e
}

/// Refusals from one client that were counted but not recorded one by one
/// (see [`super::client_limit`]).
pub(crate) fn suppressed(
    request_id: String,
    s: &super::client_limit::Suppressed,
    limit: u32,
    interval_ms: u64,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(
        request_id,
        EventKind::Outcome,
        None,
        AuditAction::GatewayUnauthenticated,
        time_ms,
    );
    let client = s
        .client
        .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    e.context.insert("client".into(), json!(client));
    e.context.insert("suppressed".into(), json!(s.count));
    e.context.insert("since_ms".into(), json!(s.since_ms));
    e.context.insert("interval_ms".into(), json!(interval_ms));
    e.outcome = Some(Outcome::new("suppressed").with_detail(format!(
        "{} before authentication from `{client}` answered but not \
         recorded one by one (more than {limit} per {}s; `server.limits.unauthenticated_refusals`)",
        if s.count == 1 {
            "1 refusal was".to_owned()
        } else {
            format!("{} refusals were", s.count)
        },
        interval_ms / 1000
    )));
    e
}

/// A token was minted.
pub(crate) fn minted(
    request_id: String,
    principal: &Principal,
    audience: &str,
    jti: &str,
    exp: u64,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(
        request_id.clone(),
        EventKind::Outcome,
        Some(principal),
        AuditAction::Intent(latchkey_core::Action::TokenMint),
        time_ms,
    );
    e.resource = Some(format!("Audience::{audience:?}"));
    e.context.insert("jti".into(), json!(jti));
    e.context.insert("exp".into(), json!(exp));
    if let Some(job) = &principal.ci.job_id {
        e.context.insert("job_id".into(), json!(job));
    }
    if let Some(commit) = &principal.ci.commit {
        e.context.insert("commit".into(), json!(commit));
    }
    e.outcome = Some(Outcome::new("minted"));
    e.caused_by = Some(request_id);
    e
}

/// A session began, was refreshed or ended. `session` is a short,
/// non-secret handle (a prefix of the id's hash) that ties a session's
/// records together; `status` says what happened (`signed_in`,
/// `refreshed`, `logout`, `expired`, `idle`, `revoked`, `refresh_failed`).
pub(crate) fn session(
    request_id: String,
    principal: &Principal,
    action: AuditAction,
    session: &str,
    status: &str,
    detail: Option<String>,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(
        request_id,
        EventKind::Outcome,
        Some(principal),
        action,
        time_ms,
    );
    e.context.insert("session".into(), json!(session));
    e.context.insert("issuer".into(), json!(principal.issuer));
    let mut o = Outcome::new(status.to_owned());
    o.detail = detail;
    e.outcome = Some(o);
    e
}

/// Something Latchkey did on its own.
pub(crate) fn system(
    request_id: String,
    action: AuditAction,
    status: String,
    detail: Option<String>,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(request_id, EventKind::System, None, action, time_ms);
    let mut o = Outcome::new(status);
    o.detail = detail;
    e.outcome = Some(o);
    e
}

/// A signing-key rotation (by `latchkey keys rotate`, another node, this
/// gateway, or the regular schedule), recorded by the gateway that noticed
/// it in the store.
pub(crate) fn key_rotation(
    request_id: String,
    rotation: &latchkey_tokens::Rotation,
    time_ms: u64,
) -> AuditEvent {
    let mut e = system(
        request_id,
        AuditAction::KeysRotate,
        "rotated".to_owned(),
        None,
        time_ms,
    );
    e.context.insert("kid".into(), json!(rotation.kid));
    e.context
        .insert("mode".into(), json!(rotation.mode.as_str()));
    e.context
        .insert("generation".into(), json!(rotation.generation));
    e.context.insert("rotated_at".into(), json!(rotation.at));
    e.context
        .insert("signs_from".into(), json!(rotation.signs_from));
    e.context.insert("retired".into(), json!(rotation.retired));
    e.context.insert("removed".into(), json!(rotation.removed));
    e
}

fn revocation_context(e: &mut AuditEvent, kind: RevocationKind, value: &str, mode: RevocationMode) {
    e.context
        .insert("revocation_kind".into(), json!(kind.as_str()));
    e.context.insert("value".into(), json!(value));
    e.context.insert("mode".into(), json!(mode.as_str()));
    if kind == RevocationKind::Job {
        e.context.insert("job_id".into(), json!(value));
    }
}

/// A revocation or freeze was stored.
pub(crate) fn revocation(
    request_id: &str,
    by: &Principal,
    r: &Revocation,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(
        request_id.to_owned(),
        EventKind::Outcome,
        Some(by),
        AuditAction::Intent(latchkey_core::Action::TokenRevoke),
        time_ms,
    );
    revocation_context(&mut e, r.kind, &r.value, r.mode);
    e.outcome = Some(Outcome::new(r.mode.as_str()).with_detail(r.reason.clone()));
    e
}

/// A freeze or revocation was lifted.
pub(crate) fn lift(
    request_id: &str,
    by: &Principal,
    kind: RevocationKind,
    value: &str,
    mode: RevocationMode,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(
        request_id.to_owned(),
        EventKind::Outcome,
        Some(by),
        AuditAction::AdminLift,
        time_ms,
    );
    revocation_context(&mut e, kind, value, mode);
    e.outcome = Some(Outcome::new("lifted"));
    e
}

/// What the Git upstream did with an allowed request: for a push, one
/// event per ref update with what the upstream's report-status said; for a
/// fetch or clone, one event for the repository. The advertisement step
/// (`info/refs`) is only recorded when it failed.
pub(crate) fn git_outcomes(
    request_id: &str,
    principal: &Principal,
    outcome: &latchkey_git::GitOutcome,
    time_ms: u64,
) -> Vec<AuditEvent> {
    use latchkey_git::Endpoint;
    let repo = outcome.route.repository_resource().display();
    let new_event = |action: AuditAction| {
        let mut e = base(
            request_id.to_owned(),
            EventKind::Outcome,
            Some(principal),
            action,
            time_ms,
        );
        e.caused_by = Some(request_id.to_owned());
        e.context.insert("bytes_in".into(), json!(outcome.bytes_in));
        e.context
            .insert("bytes_out".into(), json!(outcome.bytes_out));
        e.context
            .insert("http_status".into(), json!(outcome.status));
        e
    };
    let failed = outcome.status >= 400 || outcome.error.is_some();
    match outcome.route.endpoint {
        Endpoint::InfoRefs(_) if !failed => Vec::new(),
        Endpoint::InfoRefs(_) | Endpoint::UploadPack => {
            let mut e = new_event(AuditAction::Intent(latchkey_core::Action::GitRead));
            e.resource = Some(repo);
            let status = if failed { "failed" } else { "served" };
            let mut o = Outcome::new(status);
            o.detail = outcome.error.clone();
            e.outcome = Some(o);
            vec![e]
        }
        Endpoint::ReceivePack => {
            if outcome.updates.is_empty() {
                let mut e = new_event(AuditAction::Intent(latchkey_core::Action::GitPush));
                e.resource = Some(repo);
                e.outcome = Some(Outcome::new(if failed { "failed" } else { "no-op" }));
                return vec![e];
            }
            // The backstop: a ref the upstream reports that no decision
            // covered means the upstream read the push differently from
            // Latchkey. Each is an integrity alarm, and the push failed.
            let ref_resource = |name: &str| {
                format!(
                    "Ref::{:?}",
                    format!("{}:{}", outcome.route.repository_id(), name)
                )
            };
            let undecided = outcome.undecided_refs();
            let alarm = (!undecided.is_empty()).then(|| {
                format!(
                    "integrity alarm: the upstream reported {} no decision covered",
                    if undecided.len() == 1 {
                        "1 ref".to_owned()
                    } else {
                        format!("{} refs", undecided.len())
                    }
                )
            });
            let alarms: Vec<AuditEvent> = undecided
                .iter()
                .map(|name| {
                    tracing::error!(
                        request_id,
                        repository = %repo,
                        git_ref = %name,
                        "INTEGRITY ALARM: the git upstream reported a ref update that no policy decision covered; investigate the push and the upstream now"
                    );
                    let mut e = base(
                        request_id.to_owned(),
                        EventKind::System,
                        Some(principal),
                        AuditAction::GitIntegrity,
                        time_ms,
                    );
                    e.caused_by = Some(request_id.to_owned());
                    e.resource = Some(ref_resource(name));
                    e.context.insert("ref".into(), json!(name));
                    e.outcome = Some(
                        Outcome::new("alarm")
                            .with_detail("the upstream reported this ref, and no decision covered it"),
                    );
                    e
                })
                .collect();
            let mut events: Vec<AuditEvent> = outcome
                .updates
                .iter()
                .map(|u| {
                    let mut e = new_event(AuditAction::Intent(latchkey_core::Action::GitPush));
                    e.resource = Some(ref_resource(&u.name));
                    e.context.insert("ref".into(), json!(u.name));
                    e.context.insert("old".into(), json!(u.old));
                    e.context.insert("new".into(), json!(u.new));
                    if !u.new.bytes().all(|b| b == b'0') {
                        e.context.insert("commit".into(), json!(u.new));
                    }
                    let reported = outcome
                        .report
                        .as_ref()
                        .and_then(|r| r.refs.iter().find(|s| s.name == u.name));
                    let o = match (reported, &outcome.error) {
                        (Some(s), _) if s.ok => Outcome::new("updated"),
                        (Some(s), _) => Outcome::new("rejected_upstream")
                            .with_detail(s.reason.clone().unwrap_or_default()),
                        (None, Some(err)) => Outcome::new("failed").with_detail(err.clone()),
                        (None, None) if failed => Outcome::new("failed"),
                        (None, None) => Outcome::new("unreported"),
                    };
                    e.outcome = Some(match &alarm {
                        Some(why) => Outcome::new("failed").with_detail(why.clone()),
                        None => o,
                    });
                    e
                })
                .collect();
            events.extend(alarms);
            events
        }
    }
}

/// Something a webhook delivery caused or that happened to it (received,
/// duplicate, rule_failed), recorded as `principal` (the `latchkey` service).
pub(crate) fn webhook(
    request_id: &str,
    principal: &Principal,
    action: AuditAction,
    context: Map<String, serde_json::Value>,
    outcome: Outcome,
    time_ms: u64,
) -> AuditEvent {
    let mut e = base(
        request_id.to_owned(),
        EventKind::Outcome,
        Some(principal),
        action,
        time_ms,
    );
    e.context = context;
    e.outcome = Some(outcome);
    e
}

#[cfg(test)]
mod git_outcome_tests {
    use super::*;
    use latchkey_core::PrincipalKind;
    use latchkey_git::{GitOutcome, GitRoute, PushReport, RefKind, RefOp, RefStatus, RefUpdate};

    fn ok(name: &str) -> RefStatus {
        RefStatus {
            name: name.into(),
            ok: true,
            reason: None,
        }
    }

    /// Regression (issue 11.1, the backstop): a ref the upstream reports
    /// that no decision covered is an audited integrity alarm, and the push's
    /// outcome is a failure.
    #[test]
    fn an_undecided_ref_in_the_report_is_an_integrity_alarm() {
        let route = GitRoute::parse("local/acme/app.git/git-receive-pack", None).unwrap();
        let main = RefUpdate {
            old: "1".repeat(40),
            new: "2".repeat(40),
            name: "refs/heads/feature".into(),
            op: RefOp::Update,
            kind: RefKind::Branch,
        };
        let mut outcome = GitOutcome {
            route,
            status: 200,
            updates: vec![main],
            report: Some(PushReport {
                unpack: Some("ok".into()),
                refs: vec![ok("refs/heads/feature")],
                fatal: None,
                complete: true,
            }),
            bytes_in: 10,
            bytes_out: 10,
            error: None,
        };
        let who = Principal::new(PrincipalKind::User, "alice", "dev");
        let healthy = git_outcomes("r1", &who, &outcome, 1);
        assert_eq!(healthy.len(), 1);
        assert_eq!(healthy[0].outcome.as_ref().unwrap().status, "updated");

        if let Some(r) = outcome.report.as_mut() {
            r.refs.push(ok("refs/heads/main"));
        }
        let events = git_outcomes("r1", &who, &outcome, 1);
        assert_eq!(events.len(), 2, "{events:?}");
        let push = &events[0];
        assert_eq!(push.action, "git.push");
        let o = push.outcome.as_ref().unwrap();
        assert_eq!(o.status, "failed");
        assert!(o.detail.as_deref().unwrap().contains("integrity alarm"));
        let alarm = &events[1];
        assert_eq!(alarm.action, "git.integrity");
        assert_eq!(alarm.kind, EventKind::System);
        assert_eq!(alarm.context["ref"], "refs/heads/main");
        assert_eq!(alarm.outcome.as_ref().unwrap().status, "alarm");
    }
}
