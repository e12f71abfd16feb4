//! `GET /readyz`: readiness, one status per component (policies and their
//! last reload, the audit log, the store, each issuer's keys, each
//! upstream). Like `/admin/health` it is outside the pipeline and needs no
//! credential, for load balancers and orchestrators; so it says only
//! component names, statuses, times and a fixed short reason, never a path
//! or an error's detail (those go to the log). Upstream probes are cached
//! for [`PROBE_TTL`], so callers cannot make the gateway probe per request.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_identity::{IssuerSet, KeyStatus};
use serde_json::{Value, json};

use super::admin::AdminState;
use crate::probe::ProbeKind;

/// How long one probe result of the upstreams stands.
pub(crate) const PROBE_TTL: Duration = Duration::from_secs(10);
/// How long one upstream probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One upstream to probe, named as `/readyz` shows it.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) component: String,
    pub(crate) kind: ProbeKind,
}

/// The last policy reload that failed, while no later one succeeded.
#[derive(Debug, Clone)]
struct ReloadFailure {
    at_ms: u64,
}

/// What readiness reads beyond the pipeline and the store.
pub(crate) struct Readiness {
    issuers: Arc<IssuerSet>,
    probes: Vec<Probe>,
    http: reqwest::Client,
    /// The last probe of the upstreams: when, and each one's result.
    cache: tokio::sync::Mutex<Option<(u64, Vec<Value>)>>,
    reload_failure: std::sync::Mutex<Option<ReloadFailure>>,
}

impl Readiness {
    pub(crate) fn new(issuers: Arc<IssuerSet>, probes: Vec<Probe>, http: reqwest::Client) -> Self {
        Self {
            issuers,
            probes,
            http,
            cache: tokio::sync::Mutex::new(None),
            reload_failure: std::sync::Mutex::new(None),
        }
    }

    /// Notes a policy reload's outcome: a failure makes `policies`
    /// degraded until a reload succeeds.
    pub(crate) fn record_reload(&self, at_ms: u64, ok: bool) {
        let mut last = self
            .reload_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *last = (!ok).then_some(ReloadFailure { at_ms });
    }

    async fn upstreams(&self, now_ms: u64) -> Vec<Value> {
        let mut cache = self.cache.lock().await;
        if let Some((at, results)) = &*cache
            && now_ms.saturating_sub(*at) < PROBE_TTL.as_millis() as u64
            && now_ms >= *at
        {
            return results.clone();
        }
        let results =
            futures_util::future::join_all(self.probes.iter().map(|p| self.probe(p))).await;
        *cache = Some((now_ms, results.clone()));
        results
    }

    async fn probe(&self, p: &Probe) -> Value {
        let reachable = p.kind.run(&self.http, PROBE_TIMEOUT).await;
        match reachable {
            Ok(_) => json!({ "component": p.component, "status": "ok" }),
            Err(detail) => {
                tracing::warn!(component = %p.component, %detail, "readiness: upstream unreachable");
                json!({ "component": p.component, "status": "failing", "reason": "unreachable" })
            }
        }
    }
}

/// `GET /readyz`: 200 when every component is `ok` (a `warning` does not
/// take the gateway out of rotation), 503 otherwise.
pub(crate) async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    let r = &s.readiness;
    let now = s.pipe.clock.unix_millis();
    let mut components = Vec::new();

    let failure = r
        .reload_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    components.push(match failure {
        None => json!({
            "component": "policies",
            "status": "ok",
            "policies": s.pipe.policy.policy_count(),
        }),
        Some(f) => json!({
            "component": "policies",
            "status": "degraded",
            "since_ms": f.at_ms,
            "reason": "the last reload failed; the previous policies are in force",
        }),
    });
    components.push(match s.pipe.audit.failure() {
        None => json!({ "component": "audit log", "status": "ok" }),
        Some(why) => {
            tracing::error!(error = %why, "readiness: audit log unavailable");
            json!({ "component": "audit log", "status": "failing", "reason": "cannot be written" })
        }
    });
    components.push(match s.store.max_audit_seq().await {
        Ok(_) => json!({ "component": "store", "status": "ok" }),
        Err(e) => {
            tracing::error!(error = %e, "readiness: store unavailable");
            json!({ "component": "store", "status": "failing", "reason": "unreachable" })
        }
    });
    components.extend(s.pipe.revocation_view.readiness());

    r.issuers.refresh_stale().await;
    for (name, status) in r.issuers.key_status().await {
        let component = format!("issuer {name}");
        components.push(match status {
            KeyStatus::Fetched { at_ms } => {
                json!({ "component": component, "status": "ok", "keys_fetched_ms": at_ms })
            }
            KeyStatus::NotFetched => {
                json!({ "component": component, "status": "failing", "reason": "keys not fetched yet" })
            }
            KeyStatus::Failing {
                since_ms, cached, ..
            } => json!({
                "component": component,
                "status": "failing",
                "since_ms": since_ms,
                "reason": if cached {
                    "keys cannot be refreshed; cached keys still verify"
                } else {
                    "keys cannot be fetched; its tokens are refused"
                },
            }),
        });
    }
    components.extend(r.upstreams(now).await);
    for warning in &s.warnings {
        components
            .push(json!({ "component": "dev issuer", "status": "warning", "reason": warning }));
    }

    let ready = components
        .iter()
        .all(|c| matches!(c["status"].as_str(), Some("ok" | "warning")));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "components": components,
    });
    (status, Json(body)).into_response()
}
