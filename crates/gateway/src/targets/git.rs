//! `/git/{upstream}/{owner}/{repo}.git/...`: Git smart HTTP behind identity.
//!
//! Classify is `latchkey_git::prepare` (bounded reading of the push's
//! command section, pure parsing); act is `Prepared::forward`, with the
//! response's end held by `latchkey_relay` until the outcome — one record
//! per ref update, in one batched append — is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use latchkey_core::Principal;
use latchkey_git::{
    GitCaller, GitLimits, GitRoute, Prepared, RefDenial, ReportStatusTap, Upstream, prepare,
};
use latchkey_relay::{HeldEnd, Hold, Release, Tap, TapSays};

use crate::pipeline::{
    Authorized, Classified, Code, Pipeline, Protocol, Refusal, RequestCx, Stage, Target,
    TargetName, records,
};

/// The token audience Git callers present.
const AUDIENCE: &str = "git";

/// The Git target: its upstreams and limits.
pub(crate) struct GitTarget {
    pub(crate) pipe: Arc<Pipeline>,
    pub(crate) upstreams: BTreeMap<String, Upstream>,
    pub(crate) limits: GitLimits,
}

/// What classify hands to act.
pub(crate) struct GitPlan {
    prepared: Prepared,
    upstream: Upstream,
}

impl GitTarget {
    fn route(&self, req: &Request) -> Result<(GitRoute, Upstream), Refusal> {
        let path = req.uri().path().strip_prefix("/git/").unwrap_or("");
        // Any path that is not a Git route is a bad request, whatever
        // `GitError` would answer once a route is known.
        let route = GitRoute::parse(path, req.uri().query())
            .map_err(|e| Refusal::from(e).with_status(http::StatusCode::BAD_REQUEST))?;
        let upstream = self.upstreams.get(&route.upstream).ok_or_else(|| {
            Refusal::new(
                Stage::Classify,
                Code::NotFound,
                format!(
                    "no Git upstream named `{}` is configured",
                    latchkey_core::echo(&route.upstream)
                ),
            )
        })?;
        Ok((route, upstream.clone()))
    }
}

impl Target for GitTarget {
    type Input = (Request, GitRoute, Upstream);
    type Plan = GitPlan;
    fn name(&self) -> TargetName {
        TargetName::Git
    }
    const PROTOCOL: Protocol = Protocol::Git;

    fn pipeline(&self) -> &Pipeline {
        &self.pipe
    }

    fn authenticate<'a>(
        &'a self,
        _cx: &'a RequestCx,
        req: Request,
    ) -> BoxFuture<'a, Result<(Principal, Self::Input), Refusal>> {
        Box::pin(async move {
            // The route is read first: an unknown upstream is a 404 whoever
            // asks, and says nothing about anyone's credentials.
            let (route, upstream) = self.route(&req)?;
            let (_, verified) = self
                .pipe
                .authenticate_token(req.headers(), AUDIENCE, None)?;
            Ok((verified.principal, (req, route, upstream)))
        })
    }

    fn classify<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: &'a Principal,
        (req, route, upstream): Self::Input,
    ) -> BoxFuture<'a, Result<Classified<GitPlan>, Refusal>> {
        Box::pin(async move {
            let caller = GitCaller {
                remote_user: principal.id.clone(),
                remote_addr: cx.client.0,
            };
            let prepared = prepare(req, route, &upstream, caller, &self.limits)
                .await
                .map_err(|e| {
                    tracing::warn!(error = ?e, "git request refused before a decision");
                    Refusal::from(e)
                })?;
            let asks = prepared.intents().iter().cloned().map(Into::into).collect();
            Ok(Classified::new(asks, GitPlan { prepared, upstream }))
        })
    }

    fn deny<'a>(
        &'a self,
        _cx: &'a RequestCx,
        plan: GitPlan,
        authorized: Authorized,
    ) -> BoxFuture<'a, Response> {
        Box::pin(async move {
            let denials: Vec<RefDenial> = authorized
                .denials()
                .map(|(intent, d)| match intent.resource.attributes.get("name") {
                    Some(name) => RefDenial::for_ref(name.clone(), d.reason.clone()),
                    None => RefDenial::whole(d.reason.clone()),
                })
                .collect();
            plan.prepared
                .refuse(&denials, &self.limits)
                .await
                .map(Body::new)
        })
    }

    fn act<'a>(
        &'a self,
        cx: &'a RequestCx,
        principal: Principal,
        plan: GitPlan,
        _authorized: Authorized,
    ) -> BoxFuture<'a, Result<Response, Refusal>> {
        Box::pin(async move {
            let forwarded = match plan.prepared.forward(&plan.upstream, &self.limits).await {
                Ok(f) => f,
                Err((e, outcome)) => {
                    tracing::warn!(error = ?e, "git upstream failed");
                    if matches!(
                        e,
                        latchkey_git::GitError::Upstream(_)
                            | latchkey_git::GitError::UpstreamTimeout
                    ) {
                        self.pipe
                            .metrics
                            .upstream_error(crate::metrics::UpstreamKind::Git);
                    }
                    let events = records::git_outcomes(
                        &cx.request_id,
                        &principal,
                        &outcome,
                        self.pipe.clock.unix_millis(),
                    );
                    // The outcome is the record of this refusal; the
                    // client gets an error either way.
                    return Err(match self.pipe.record_all(events).await {
                        Ok(()) => Refusal::from(e).already_recorded(),
                        Err(unavailable) => unavailable,
                    });
                }
            };
            let (parts, body) = forwarded.response.into_parts();
            let status = parts.status.as_u16();
            let pending = forwarded.outcome;
            let pipe = self.pipe.clone();
            let request_id = cx.request_id.clone();
            let finish: latchkey_relay::Finish<ReportTap> = Box::new(move |tap, ending| {
                Box::pin(async move {
                    let report = tap.0.map(ReportStatusTap::into_report);
                    let error = ending.error.map(|e| match e {
                        latchkey_relay::EndError::Upstream(why) => {
                            pipe.metrics
                                .upstream_error(crate::metrics::UpstreamKind::Git);
                            format!("upstream response failed: {why}")
                        }
                        latchkey_relay::EndError::CallerGone => {
                            "client disconnected before the response ended".to_owned()
                        }
                        latchkey_relay::EndError::NoTrailers => "no trailers".to_owned(),
                    });
                    let outcome = pending.finish(status, report, ending.bytes_out, error);
                    let events = records::git_outcomes(
                        &request_id,
                        &principal,
                        &outcome,
                        pipe.clock.unix_millis(),
                    );
                    // INVARIANT (DESIGN 6): a push is not reported successful
                    // before its outcome is durable; one append for all refs.
                    match pipe.record_all(events).await {
                        Ok(()) => Release::Pass,
                        Err(_) => {
                            tracing::error!(
                                "the outcome of a git request could not be recorded; failing the response"
                            );
                            Release::Fail
                        }
                    }
                })
            });
            let held = HeldEnd::new(
                body,
                Hold::LastChunk,
                ReportTap(forwarded.report_tap),
                finish,
            );
            Ok(Response::from_parts(parts, Body::new(held)))
        })
    }
}

/// The report-status tap as the relay's [`Tap`].
struct ReportTap(Option<ReportStatusTap>);

impl Tap for ReportTap {
    fn feed(&mut self, chunk: &Bytes) -> TapSays {
        if let Some(t) = self.0.as_mut() {
            t.feed(chunk);
        }
        TapSays::Pass
    }
}
