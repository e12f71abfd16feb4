//! `/metrics`: what the gateway measures, in the OpenMetrics text format.
//!
//! One [`Metrics`] holds one `prometheus_client` registry. The gateway makes
//! it at start, before the pipeline, and shares it (`Arc`) with the pipeline
//! (request durations, upstream errors, audit appends), the listener (open
//! connections) and the `/metrics` route. Two sources are read at scrape
//! time instead of being pushed: the identity crate's JWKS refresh counters
//! and the audit log's index position, so neither crate depends on this one.
//!
//! The route is unauthenticated, like `/readyz`, so nothing in it may be
//! secret or name anyone: every label value comes from a small fixed set
//! (methods, route classes, status codes, decisions, upstream kinds), or
//! from configuration an operator wrote (issuer names). No subject, token
//! id, path or query reaches a label.
//!
//! Served as OpenMetrics 1.0.0 (`application/openmetrics-text`), the
//! crate's native format: it keeps counters' `_total` and the info type
//! exact and ends with `# EOF`, so a scraper knows a truncated answer;
//! Prometheus asks for it first and parses it natively.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use latchkey_audit::AuditLog;
use latchkey_core::Decision;
use latchkey_identity::IssuerSet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics`.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request-duration buckets (seconds): OpenTelemetry's advice for
/// `http.server.request.duration`.
const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The labels of `http_server_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    http_request_method: &'static str,
    http_route: &'static str,
    http_response_status_code: u16,
    latchkey_decision: &'static str,
}

/// The label of `latchkey_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream_kind: &'static str,
}

/// Which kind of upstream failed, for `latchkey_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamKind {
    /// A Git server (or the local `git http-backend`).
    Git,
    /// Google Firestore or its emulator.
    Firestore,
    /// A web app behind `[[apps]]`.
    App,
}

impl UpstreamKind {
    const ALL: [Self; 3] = [Self::Git, Self::Firestore, Self::App];

    fn as_str(self) -> &'static str {
        match self {
            Self::Git => "git",
            Self::Firestore => "firestore",
            Self::App => "app",
        }
    }
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// Every metric the gateway exports, and the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    audit_append: Histogram,
    connections: Gauge,
    /// `latchkey_revocation_sync_lag_seconds`: how far this node's
    /// revocation set trails the store's change log (now minus the time of
    /// the newest change not yet applied; 0 when caught up). Set by the
    /// revocation sync; 0 until it runs.
    pub(crate) revocation_sync_lag_seconds: Gauge<f64, AtomicU64>,
    /// `latchkey_revocation_listener_reconnects_total`: how often the
    /// revocation change listener (PostgreSQL LISTEN) had to reconnect.
    /// Incremented by the revocation sync; 0 until it runs.
    pub(crate) revocation_listener_reconnects: Counter,
    /// `latchkey_revocation_applied_seq`: the seq of the last revocation
    /// change this node applied. Set by the revocation sync; 0 until it runs.
    pub(crate) revocation_applied_seq: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric. `issuers` and `audit` are read at each
    /// scrape (JWKS refresh counts, audit index lag).
    pub(crate) fn new(issuers: Arc<IssuerSet>, audit: AuditLog) -> Self {
        let mut registry = Registry::default();
        let http_duration =
            Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                http_histogram,
            );
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, to the response head (a streamed body, such as \
             a git fetch, is not waited for)",
            http_duration.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        for kind in UpstreamKind::ALL {
            // Every kind shows from the start, at 0.
            drop(upstream_errors.get_or_create(&UpstreamLabels {
                upstream_kind: kind.as_str(),
            }));
        }
        registry.register(
            "latchkey_upstream_errors",
            "Upstream calls that failed (unreachable, timed out, or broken mid-response)",
            upstream_errors.clone(),
        );
        // 0.5 ms to about 1 s: one fsync on a fast disk to a very slow one.
        let audit_append = Histogram::new(exponential_buckets(0.0005, 2.0, 12));
        registry.register(
            "latchkey_audit_append_duration_seconds",
            "Time for a durable audit append made by a request (written and synced)",
            audit_append.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "latchkey_connections_in_use",
            "Client connections open on the listener",
            connections.clone(),
        );
        let revocation_sync_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "latchkey_revocation_sync_lag_seconds",
            "How far this node's revocations trail the store's change log, in seconds",
            revocation_sync_lag_seconds.clone(),
        );
        let revocation_listener_reconnects = Counter::default();
        registry.register(
            "latchkey_revocation_listener_reconnects",
            "Reconnections of the revocation change listener",
            revocation_listener_reconnects.clone(),
        );
        let revocation_applied_seq = Gauge::default();
        registry.register(
            "latchkey_revocation_applied_seq",
            "The seq of the last revocation change this node applied",
            revocation_applied_seq.clone(),
        );
        registry.register(
            "latchkey_build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(ScrapeTime { issuers, audit }));
        Self {
            registry,
            http_duration,
            upstream_errors,
            audit_append,
            connections,
            revocation_sync_lag_seconds,
            revocation_listener_reconnects,
            revocation_applied_seq,
        }
    }

    /// The exposition, as `/metrics` answers it.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Counts a failed call to an upstream of `kind`.
    pub(crate) fn upstream_error(&self, kind: UpstreamKind) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream_kind: kind.as_str(),
            })
            .inc();
    }

    /// Records how long one durable audit append took.
    pub(crate) fn audit_appended(&self, took: std::time::Duration) {
        self.audit_append.observe(took.as_secs_f64());
    }

    /// Counts a client connection as open until the returned guard drops.
    pub(crate) fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection(self.connections.clone())
    }
}

/// One open client connection in `latchkey_connections_in_use`.
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What is read at each scrape: the identity crate's JWKS refresh counters
/// and the audit index lag.
#[derive(Debug)]
struct ScrapeTime {
    issuers: Arc<IssuerSet>,
    audit: AuditLog,
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "latchkey_jwks_refreshes",
                "JWKS refreshes of each configured issuer, by result (ok, error, or held back by \
                 the refresh rate limit)",
                None,
                <ConstCounter as TypedMetric>::TYPE,
            )?;
            for counts in self.issuers.refresh_counts() {
                for (result, n) in [
                    ("ok", counts.ok),
                    ("error", counts.error),
                    ("rate_limited", counts.rate_limited),
                ] {
                    let labels = [("issuer_kind", counts.issuer.as_str()), ("result", result)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        if let Some(indexed) = self.audit.indexed_seq() {
            let lag = self.audit.last_seq().saturating_sub(indexed);
            let gauge = ConstGauge::new(i64::try_from(lag).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(
                "latchkey_audit_index_lag_records",
                "Audit records durable in the log and not yet in the store's audit index",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// `GET /metrics`: the exposition (unauthenticated, nothing secret in it).
pub(crate) async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            text,
        )
            .into_response(),
        Err(_) => {
            tracing::error!("cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// What a request's handlers tell the metrics layer: the decision and
/// whether an app served it. Put in the request's extensions by [`layer`];
/// read back once the response head is there.
#[derive(Debug, Default)]
pub(crate) struct Mark {
    /// 0 none, 1 allow, 2 deny.
    decision: AtomicU8,
    app: AtomicBool,
}

impl Mark {
    /// The mark of a request, when it came through [`layer`].
    pub(crate) fn of(extensions: &http::Extensions) -> Option<Arc<Self>> {
        extensions.get::<Arc<Self>>().cloned()
    }

    /// Records the request's decisions: `deny` when policy denied any
    /// intent, `allow` when it allowed all (and there was at least one).
    pub(crate) fn decided(&self, decisions: &[Decision]) {
        if decisions.is_empty() {
            return;
        }
        let value = if decisions.iter().all(Decision::is_allowed) {
            1
        } else {
            2
        };
        self.decision.store(value, Ordering::Relaxed);
    }

    /// The request went to a web app (`[[apps]]`), whatever its path.
    pub(crate) fn app(extensions: &http::Extensions) {
        if let Some(mark) = extensions.get::<Arc<Self>>() {
            mark.app.store(true, Ordering::Relaxed);
        }
    }

    fn decision(&self) -> &'static str {
        match self.decision.load(Ordering::Relaxed) {
            1 => "allow",
            2 => "deny",
            _ => "none",
        }
    }
}

/// The layer around the whole router: times every request to its
/// response head and records it in `http_server_request_duration_seconds`.
pub(crate) async fn layer(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = tokio::time::Instant::now();
    let method = method_label(req.method());
    let route = route_class(req.uri().path());
    let mark = Arc::new(Mark::default());
    req.extensions_mut().insert(mark.clone());
    let resp = next.run(req).await;
    let labels = HttpLabels {
        http_request_method: method,
        http_route: if mark.app.load(Ordering::Relaxed) {
            "app"
        } else {
            route
        },
        http_response_status_code: resp.status().as_u16(),
        latchkey_decision: mark.decision(),
    };
    metrics
        .http_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// The method as OpenTelemetry names it: one of the standard methods, or
/// `_OTHER` (so a caller cannot grow the label set).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// The route class of a path (`app` is set by the app dispatch instead,
/// since apps are routed by host and prefix).
fn route_class(path: &str) -> &'static str {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/git") {
        "git"
    } else if under("/google.firestore.v1.Firestore") {
        "documents_grpc"
    } else if under("/v1") {
        "documents_rest"
    } else if matches!(
        path,
        "/oauth2/token" | "/oauth2/revoke" | "/oauth2/introspect"
    ) {
        "token"
    } else if under("/hooks") {
        "hooks"
    } else if under("/admin") || matches!(path, "/readyz" | "/metrics") {
        "admin"
    } else if matches!(
        path,
        "/login" | "/callback" | "/logout" | "/logout/done" | "/oauth2/login-providers"
    ) {
        "signin"
    } else if under("/.well-known") || under("/dev-idp") {
        "discovery"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes_are_fixed() {
        for (path, class) in [
            ("/git/local/acme/app.git/info/refs", "git"),
            ("/gitx", "other"),
            ("/google.firestore.v1.Firestore/Commit", "documents_grpc"),
            (
                "/v1/projects/p/databases/(default)/documents/a/b",
                "documents_rest",
            ),
            ("/oauth2/token", "token"),
            ("/oauth2/revoke", "token"),
            ("/hooks/gitea", "hooks"),
            ("/admin/audit", "admin"),
            ("/readyz", "admin"),
            ("/metrics", "admin"),
            ("/login", "signin"),
            ("/oauth2/login-providers", "signin"),
            ("/.well-known/jwks.json", "discovery"),
            ("/dev-idp/authorize", "discovery"),
            ("/", "other"),
            ("/alice-secret-path", "other"),
        ] {
            assert_eq!(route_class(path), class, "{path}");
        }
    }

    #[test]
    fn unknown_methods_are_other() {
        let m = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&m), "_OTHER");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
