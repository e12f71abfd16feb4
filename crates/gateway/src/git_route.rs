//! `/git/{upstream}/{owner}/{repo}.git/...`: Git smart HTTP behind identity.
//! Authenticates here, lets `latchkey-git` classify and stream, and answers
//! its phase calls with Cedar decisions and audit records.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::{Intent, Principal};
use latchkey_git::{GitOutcome, GitPhases, GitRoute, OutcomeNotRecorded, Refusal};

use crate::app::Gateway;
use crate::auth::{AuthFailure, authenticate};
use crate::refusals::ClientAddr;
use crate::request_id::new_request_id;

fn plain(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        latchkey_core::bounded(&msg, 1024).into_owned() + "\n",
    )
        .into_response()
}

/// The handler for every Git route.
pub(crate) async fn git(State(gw): State<Arc<Gateway>>, mut req: Request) -> Response {
    let request_id = new_request_id();
    let client = ClientAddr::of(req.extensions());
    let path = req
        .uri()
        .path()
        .strip_prefix("/git/")
        .unwrap_or("")
        .to_owned();
    let route = match GitRoute::parse(&path, req.uri().query()) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(upstream) = gw.git_upstreams.get(&route.upstream) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "no Git upstream named `{}` is configured",
                latchkey_core::echo(&route.upstream)
            ),
        );
    };
    let principal = match authenticate(&gw, req.headers(), "git") {
        Ok((_, v)) => v.principal,
        Err(failure) => {
            if !matches!(failure, AuthFailure::Missing) {
                let event = crate::events::refusal(
                    request_id.clone(),
                    None,
                    "git.authenticate",
                    failure.code(),
                    &failure.message(),
                    gw.clock.unix_millis(),
                );
                if gw.record_unauthenticated(client, event).await.is_err() {
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the audit log cannot be written".into(),
                    );
                }
            }
            let mut resp = plain(StatusCode::UNAUTHORIZED, failure.message());
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"latchkey\""),
            );
            return resp;
        }
    };
    req.extensions_mut().insert(latchkey_git::GitCaller {
        remote_user: principal.id.clone(),
        remote_addr: client.0,
    });
    let phases = Arc::new(Phases {
        gw: gw.clone(),
        principal,
        request_id: request_id.clone(),
    });
    let mut resp = latchkey_git::serve(req, route, upstream, phases, &gw.git_limits)
        .await
        .map(Body::new);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The gateway's answers to the Git adapter's phase calls.
struct Phases {
    gw: Arc<Gateway>,
    principal: Principal,
    request_id: String,
}

#[async_trait::async_trait]
impl GitPhases for Phases {
    async fn authorize(&self, intents: &[Intent]) -> Result<(), Vec<Refusal>> {
        let mut refusals = Vec::new();
        for intent in intents {
            let reference = intent
                .resource
                .attributes
                .get("name")
                .cloned()
                .unwrap_or_default();
            match self
                .gw
                .decide(&self.request_id, &self.principal, intent)
                .await
            {
                Ok(d) if d.is_allowed() => {}
                Ok(d) => refusals.push(Refusal {
                    ref_name: reference.clone(),
                    message: d.reason,
                }),
                Err(e) => refusals.push(Refusal {
                    ref_name: reference.clone(),
                    message: e.description().to_owned(),
                }),
            }
        }
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(refusals)
        }
    }

    /// Fails closed (DESIGN 6): when an outcome record cannot be made
    /// durable, the response's held-back end is not sent, so the client
    /// never hears of a success nobody recorded.
    async fn outcome(&self, outcome: GitOutcome) -> Result<(), OutcomeNotRecorded> {
        let now = self.gw.clock.unix_millis();
        let mut recorded = Ok(());
        for event in crate::events::git_outcomes(&self.request_id, &self.principal, &outcome, now) {
            if let Err(e) = self.gw.audit.append(event).await {
                tracing::error!(error = %e, "audit log unavailable for git outcome");
                recorded = Err(OutcomeNotRecorded);
            }
        }
        recorded
    }
}
