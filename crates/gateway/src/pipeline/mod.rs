//! The request pipeline: authenticate → classify → authorize → act → record,
//! written once for every target.
//!
//! A target (Git, the document API, the token service, admin, webhooks)
//! implements [`Target`]: how its callers prove who they are, what a request
//! asks for (its intents), what doing it means, and how a denial looks in its
//! protocol. [`Pipeline::serve`] runs the steps in order and owns what must be
//! the same everywhere: every refusal is recorded (refusals before
//! authentication at a bounded rate per client), all intents of a request are
//! decided together and made durable in one batched append before anything is
//! acted on, an audit log that cannot be written refuses the request, and a
//! refusal is rendered once per [`Protocol`].
//!
//! What a target may not do: call Cedar or append to the audit log by other
//! means than [`Pipeline`]. What the pipeline does not do: parse any
//! protocol.

mod authenticate;
pub(crate) mod client_limit;
pub(crate) mod records;
mod refusal;
mod request_id;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use latchkey_audit::{AuditEvent, AuditLog};
use latchkey_core::{Decision, Intent, Principal, SharedClock};
use latchkey_policy::PolicyEngine;
use latchkey_tokens::{TokenVerifier, VerifiedToken};
use serde_json::{Map, Value};

pub(crate) use authenticate::Scheme;
pub(crate) use client_limit::{ClientAddr, RefusalLimiter};
pub(crate) use records::{AuditAction, TargetName};
pub(crate) use refusal::{Code, Protocol, Refusal, Stage, grpc_trailers, grpc_trailers_only};
pub(crate) use request_id::{RequestId, new_request_id};

/// What every request of one target is known by: its id (also in the
/// response's `x-request-id`) and the caller's address.
#[derive(Debug, Clone)]
pub(crate) struct RequestCx {
    /// The request id, the key that ties its records together.
    pub(crate) request_id: String,
    /// The caller's address, for the per-client refusal limit.
    pub(crate) client: ClientAddr,
    /// Where the decision is noted for the request-duration metric.
    pub(crate) mark: Option<Arc<crate::metrics::Mark>>,
}

impl RequestCx {
    /// The context of `req`: the id the server gave it (a fresh one when
    /// driven without the server's layer).
    pub(crate) fn of(req: &Request) -> Self {
        Self {
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map_or_else(new_request_id, |r| r.0.clone()),
            client: ClientAddr::of(req.extensions()),
            mark: crate::metrics::Mark::of(req.extensions()),
        }
    }
}

/// One intent to decide, with facts its decision record carries that
/// policy does not read (a write's field names, the environment).
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    pub(crate) intent: Intent,
    pub(crate) extra: Map<String, Value>,
}

impl From<Intent> for Ask {
    fn from(intent: Intent) -> Self {
        Self {
            intent,
            extra: Map::new(),
        }
    }
}

/// When the decision records of an allowed request must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Before [`Pipeline::authorize`] returns: every write, every denial.
    Now,
    /// An allowed read may overlap the sync with its upstream call; the
    /// records come back in [`Authorized::pending`] and the response waits
    /// for them ([`PendingRecords::alongside`]). Only when the log is
    /// healthy and every intent was allowed.
    OverlapReads,
}

/// Whether one denial refuses the whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllOrNothing {
    /// A push, a Firestore commit, a token: one denial refuses everything,
    /// and nothing is acted on.
    Yes,
    /// A webhook's rule actions: each is acted on as decided.
    No,
}

/// What a target's classify step found.
pub(crate) struct Classified<P> {
    /// Every intent of the request, decided together.
    pub(crate) asks: Vec<Ask>,
    /// Whatever the target needs to act (a route, a parsed call, a body).
    pub(crate) plan: P,
    /// When the decision records must be durable.
    pub(crate) durability: Durability,
    /// Whether one denial refuses all.
    pub(crate) all_or_nothing: AllOrNothing,
}

impl<P> Classified<P> {
    /// Intents decided all or nothing, recorded before acting.
    pub(crate) fn new(asks: Vec<Ask>, plan: P) -> Self {
        Self {
            asks,
            plan,
            durability: Durability::Now,
            all_or_nothing: AllOrNothing::Yes,
        }
    }
}

/// The decisions of one request, recorded (or pending, see [`Durability`]).
pub(crate) struct Authorized {
    /// The intents, in the order classify gave them.
    pub(crate) intents: Vec<Intent>,
    /// Their decisions, in the same order.
    pub(crate) decisions: Vec<Decision>,
    /// Records not yet durable ([`Durability::OverlapReads`]); empty
    /// otherwise.
    pub(crate) pending: PendingRecords,
}

impl Authorized {
    /// Whether every intent was allowed.
    pub(crate) fn all_allowed(&self) -> bool {
        self.decisions.iter().all(Decision::is_allowed)
    }

    /// The denials: (intent, decision) for each intent not allowed.
    pub(crate) fn denials(&self) -> impl Iterator<Item = (&Intent, &Decision)> {
        self.intents
            .iter()
            .zip(&self.decisions)
            .filter(|(_, d)| !d.is_allowed())
    }

    /// The default refusal for a denial: the first denied intent's reason.
    pub(crate) fn refusal(&self) -> Refusal {
        let reason = self
            .denials()
            .next()
            .map_or_else(|| "denied by policy".to_owned(), |(_, d)| d.reason.clone());
        Refusal::new(Stage::Authorize, Code::Denied, reason)
    }
}

/// Decision records appended after [`Pipeline::authorize`] returned.
#[derive(Default)]
pub(crate) struct PendingRecords(Vec<AuditEvent>);

impl PendingRecords {
    /// Makes the records durable. Nothing of the request's response may
    /// reach the caller before this succeeds.
    pub(crate) async fn durable(self, pipe: &Pipeline) -> Result<(), Refusal> {
        pipe.record_all(self.0).await
    }

    /// Runs `upstream` while the records sync, and returns its result only
    /// once they are durable.
    pub(crate) async fn alongside<T>(
        self,
        pipe: &Pipeline,
        upstream: impl Future<Output = T>,
    ) -> Result<T, Refusal> {
        let (durable, answer) = tokio::join!(self.durable(pipe), upstream);
        durable.map(|()| answer)
    }
}

/// A protected target: one module, on this pipeline.
///
/// The steps are called in order by [`Pipeline::serve`]; a target never
/// records a refusal or a decision itself. Its outcome records (what the
/// upstream did) go through [`Pipeline::record_all`], before the caller can
/// learn of a success (for streamed responses, with `latchkey_relay`).
pub(crate) trait Target: Send + Sync + 'static {
    /// What authenticate hands to classify (usually the request).
    type Input: Send;
    /// What classify hands to act.
    type Plan: Send;

    /// The target's name in audit actions.
    fn name(&self) -> TargetName;
    /// How its callers read refusals.
    const PROTOCOL: Protocol;

    /// The pipeline this target runs on.
    fn pipeline(&self) -> &Pipeline;

    /// The action a refusal at `stage` is recorded under: by default
    /// `<target>.<stage>`.
    fn refusal_action(&self, stage: Stage) -> AuditAction {
        AuditAction::Refused(self.name(), stage)
    }

    /// Who is asking. Refusals are recorded by the pipeline (before
    /// authentication at a bounded rate per client; a request with no
    /// credential at all is answered but not recorded, as git and
    /// browsers first ask without one).
    fn authenticate<'a>(
        &'a self,
        cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, Self::Input), Refusal>>;

    /// What the request asks for: its intents (bounded reading of the
    /// request, then pure parsing, in the protocol crates).
    fn classify<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: &'a Principal,
        input: Self::Input,
    ) -> BoxFuture<'a, Result<Classified<Self::Plan>, Refusal>>;

    /// The answer to a request policy refused (all or nothing): by default
    /// the first denial's reason in [`Self::PROTOCOL`].
    fn deny<'a>(
        &'a self,
        _cx: &'a RequestCx,
        _plan: Self::Plan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Response> {
        Box::pin(async move { authorized.refusal().render(Self::PROTOCOL) })
    }

    /// Does the work, once the decisions are recorded.
    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: Principal,
        plan: Self::Plan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>>;
}

/// The pipeline's own state: what authenticate, authorize and record need.
pub(crate) struct Pipeline {
    /// This node's view of revocations: a `strict` node whose view is too
    /// old refuses every request before reading it.
    pub(crate) revocation_view: crate::cluster::RevocationView,
    pub(crate) clock: SharedClock,
    pub(crate) audit: AuditLog,
    pub(crate) policy: PolicyEngine,
    pub(crate) verifier: TokenVerifier,
    pub(crate) limiter: RefusalLimiter,
    /// What `/metrics` exports; the pipeline times audit appends, and the
    /// targets count upstream errors, into it.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Runs one request of `target` through every step.
    pub(crate) async fn serve<T: Target>(target: &T, req: Request) -> Response {
        let pipe = target.pipeline();
        let cx = RequestCx::of(&req);
        if let Some(age) = pipe.revocation_view.refusing() {
            // INVARIANT: a node that cannot know whether a token was revoked
            // elsewhere does not decide on it (fail closed).
            let refusal = Refusal::new(
                Stage::Authenticate,
                Code::RevocationsStale,
                format!(
                    "this node's view of revocations is {}s old (the state store cannot be reached); \
                     it refuses requests until it catches up",
                    age.as_secs()
                ),
            );
            let action = target.refusal_action(refusal.stage);
            return pipe
                .refused(&cx, None, action, refusal)
                .await
                .render(T::PROTOCOL);
        }
        let (principal, input) = match target.authenticate(&cx, req).await {
            Ok(ok) => ok,
            Err(refusal) => {
                let refusal = if refusal.code == Code::MissingCredential || refusal.is_recorded() {
                    refusal
                } else {
                    let action = target.refusal_action(refusal.stage);
                    pipe.refused(&cx, None, action, refusal).await
                };
                return refusal.render(T::PROTOCOL);
            }
        };
        let classified = match target.classify(&cx, &principal, input).await {
            Ok(c) => c,
            Err(refusal) if refusal.is_recorded() => return refusal.render(T::PROTOCOL),
            Err(refusal) => {
                let action = target.refusal_action(refusal.stage);
                return pipe
                    .refused(&cx, Some(&principal), action, refusal)
                    .await
                    .render(T::PROTOCOL);
            }
        };
        let Classified {
            asks,
            plan,
            durability,
            all_or_nothing,
        } = classified;
        let authorized = match pipe.authorize(&cx, &principal, asks, durability).await {
            Ok(a) => a,
            Err(refusal) => return refusal.render(T::PROTOCOL),
        };
        if all_or_nothing == AllOrNothing::Yes && !authorized.all_allowed() {
            return target.deny(&cx, plan, authorized).await;
        }
        match target.act(&cx, principal.clone(), plan, authorized).await {
            Ok(resp) => resp,
            Err(refusal) if refusal.is_recorded() => refusal.render(T::PROTOCOL),
            Err(refusal) => {
                let action = target.refusal_action(refusal.stage);
                pipe.refused(&cx, Some(&principal), action, refusal)
                    .await
                    .render(T::PROTOCOL)
            }
        }
    }

    /// Verifies a Latchkey token for `audience` (no record: the caller of
    /// this, [`Self::serve`], records the refusal). `hint` says what the
    /// route needs, for the refusal's message.
    pub(crate) fn authenticate_token(
        &self,
        headers: &HeaderMap,
        audience: &str,
        hint: Option<&str>,
    ) -> Result<(Scheme, VerifiedToken), Refusal> {
        authenticate::authenticate(&self.verifier, headers, audience).map_err(|f| f.refusal(hint))
    }

    /// Records `refusal` under `action` and returns it, or the audit
    /// refusal when it cannot be recorded. One with no principal is a
    /// refusal before authentication, recorded at a bounded rate per client.
    pub(crate) async fn refused(
        &self,
        cx: &RequestCx,
        principal: Option<&Principal>,
        action: AuditAction,
        refusal: Refusal,
    ) -> Refusal {
        tracing::info!(
            request_id = %cx.request_id,
            action = %action.as_str(),
            code = refusal.code.as_str(),
            stage = refusal.stage.as_str(),
            fault = ?refusal.code.fault(),
            retry_may_help = refusal.code.retry_may_help(),
            "refused"
        );
        let mut event = records::refusal(
            cx.request_id.clone(),
            principal,
            action,
            refusal.code,
            &refusal.message,
            self.clock.unix_millis(),
        );
        for (k, v) in refusal.context().into_iter().flatten() {
            event.context.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let recorded = if principal.is_none() {
            self.record_unauthenticated(cx.client, event).await
        } else {
            self.record(event).await
        };
        match recorded {
            Ok(()) => refusal,
            Err(unavailable) => unavailable,
        }
    }

    /// Decides one intent, without recording it: the decision and its
    /// record (the caller appends it; see [`Self::authorize`]).
    pub(crate) fn decide(
        &self,
        request_id: &str,
        principal: &Principal,
        ask: Ask,
    ) -> (Intent, Decision, AuditEvent) {
        let Ask { intent, extra } = ask;
        let decision = self.policy.authorize(principal, &intent);
        let mut event = AuditEvent::decision(
            request_id.to_owned(),
            principal,
            &intent,
            &decision,
            self.clock.unix_millis(),
        );
        for (k, v) in extra {
            event.context.entry(k).or_insert(v);
        }
        records::link_cause(&mut event);
        // The token's scopes narrowed this decision; the record says so.
        if let Some(scopes) = &principal.scopes {
            event
                .context
                .insert("scopes".to_owned(), serde_json::json!(scopes));
        }
        (intent, decision, event)
    }

    /// Authorize: every intent decided by Cedar, the decisions recorded in
    /// one batched append (or, for an allowed read, returned pending; see
    /// [`Durability`]). An audit log that cannot be written refuses the
    /// request (fail closed).
    pub(crate) async fn authorize(
        &self,
        cx: &RequestCx,
        principal: &Principal,
        asks: Vec<Ask>,
        durability: Durability,
    ) -> Result<Authorized, Refusal> {
        let mut intents = Vec::with_capacity(asks.len());
        let mut decisions = Vec::with_capacity(asks.len());
        let mut events = Vec::with_capacity(asks.len());
        for ask in asks {
            let (intent, decision, event) = self.decide(&cx.request_id, principal, ask);
            intents.push(intent);
            decisions.push(decision);
            events.push(event);
        }
        if let Some(mark) = &cx.mark {
            mark.decided(&decisions);
        }
        let overlap = durability == Durability::OverlapReads
            && self.audit.failure().is_none()
            && decisions.iter().all(Decision::is_allowed);
        let pending = if overlap {
            PendingRecords(events)
        } else {
            self.record_all(events).await?;
            PendingRecords::default()
        };
        Ok(Authorized {
            intents,
            decisions,
            pending,
        })
    }

    /// Records a refusal made before authentication, at most
    /// `server.limits.unauthenticated_refusals` per client address and
    /// interval (see [`client_limit`]). The caller is refused either way;
    /// an error means the log cannot be written.
    pub(crate) async fn record_unauthenticated(
        &self,
        client: ClientAddr,
        mut event: AuditEvent,
    ) -> Result<(), Refusal> {
        let now = self.clock.unix_millis();
        let admission = self.limiter.admit(client.0, now);
        if let Some(s) = &admission.summary {
            let summary = records::suppressed(
                event.request_id.clone(),
                s,
                self.limiter.limit(),
                self.limiter.interval_ms(),
                now,
            );
            self.record(summary).await?;
        }
        if !admission.record {
            return Ok(());
        }
        if let Some(ip) = client.0 {
            event
                .context
                .insert("client".into(), serde_json::json!(ip.to_string()));
        }
        self.record(event).await
    }

    /// Appends one record durably.
    pub(crate) async fn record(&self, event: AuditEvent) -> Result<(), Refusal> {
        self.record_all(vec![event]).await
    }

    /// Appends records durably, in one batch (one sync). When the log cannot
    /// take them the request is refused (fail closed) with the one
    /// audit-unavailable refusal.
    pub(crate) async fn record_all(&self, events: Vec<AuditEvent>) -> Result<(), Refusal> {
        if events.is_empty() {
            return Ok(());
        }
        let start = tokio::time::Instant::now();
        self.audit
            .append_all(events)
            .await
            .map(|_| self.metrics.audit_appended(start.elapsed()))
            .map_err(|e| {
                tracing::error!(error = %e, "audit log unavailable; refusing request");
                Refusal::audit_unavailable()
            })
    }

    /// Queues records that need not be durable before answering (the
    /// outcome of a read whose decision is durable already).
    pub(crate) async fn record_buffered(&self, events: Vec<AuditEvent>) {
        for event in events {
            if let Err(e) = self.audit.append_buffered(event).await {
                tracing::error!(error = %e, "audit log unavailable for a read's outcome");
            }
        }
    }
}

/// Serves `req` through the pipeline for the target in `state`: the axum
/// handler every route but discovery uses.
pub(crate) async fn handle<T: Target>(
    axum::extract::State(target): axum::extract::State<Arc<T>>,
    req: Request,
) -> Response {
    Pipeline::serve(target.as_ref(), req).await
}
