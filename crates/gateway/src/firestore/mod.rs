//! Firestore behind identity. Two front ends — gRPC
//! (`google.firestore.v1.Firestore`, what the server SDKs speak) and REST
//! v1 — share one decision path: `latchkey-documents` turns a call into
//! accesses, each access is one Cedar decision with its audit record, a
//! single denial refuses the whole call before anything reaches Firestore,
//! and the call goes upstream with Latchkey's Google credential instead of
//! the caller's token.

mod grpc;
mod rest;
mod transactions;
mod upstream;

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, HeaderValue, StatusCode};
use latchkey_audit::{AuditEvent, Outcome};
use latchkey_core::{Intent, Principal, glob_match};
use latchkey_documents::{Classified, DocPath, GrpcCode};
use serde_json::{Map, json};

pub(crate) use grpc::grpc;
pub(crate) use rest::rest;

use crate::app::Gateway;
use crate::auth::{AuthFailure, authenticate};
use crate::config::FirestoreConfig;
use transactions::TransactionBindings;
use upstream::FirestoreUpstream;

/// The token audience Firestore callers present.
pub(crate) const AUDIENCE: &str = "documents";

/// A call refused in Firestore's own terms, so official clients raise their
/// usual errors.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: GrpcCode,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: GrpcCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A trailers-only gRPC response.
    pub(crate) fn grpc_response(&self) -> Response {
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(self.code.as_i32()));
        if let Ok(v) =
            HeaderValue::from_str(&latchkey_documents::grpc_message_encode(&self.message))
        {
            h.insert("grpc-message", v);
        }
        resp
    }

    /// Google's REST error shape.
    pub(crate) fn rest_response(&self) -> Response {
        let status = self.code.http_status();
        let mut resp = (
            status,
            [(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            latchkey_documents::rest_error_body(self.code, &self.message),
        )
            .into_response();
        if self.code == GrpcCode::Unauthenticated {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"latchkey\""),
            );
        }
        resp
    }
}

fn audit_unavailable() -> Refusal {
    Refusal::new(GrpcCode::Unavailable, "the audit log cannot be written")
}

/// The Firestore front end's state.
pub(crate) struct FirestoreFront {
    config: FirestoreConfig,
    upstream: FirestoreUpstream,
    transactions: TransactionBindings,
}

/// What one authorized call carries to its outcome.
pub(crate) struct AuthorizedCall {
    pub(crate) intents: Vec<Intent>,
    /// Decision records of an allowed read that are not yet known durable
    /// (see [`Overlap`]); empty otherwise.
    pub(crate) pending: PendingRecords,
}

/// Whether an allowed read may overlap the sync of its decision records
/// with the upstream call. Writes never do: their records are durable
/// before anything is sent upstream. Nor do reads in a transaction, or any
/// call once the audit log is known to be failing. An overlapped read whose
/// records then fail to sync is refused: the caller sees nothing of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// Records are durable when `authorize` returns.
    Never,
    /// An allowed read returns its records unsynced in
    /// [`AuthorizedCall::pending`]; the caller holds the response until
    /// [`PendingRecords::durable`] succeeds.
    Reads,
}

/// Decision records appended after `authorize` returned.
#[derive(Default)]
pub(crate) struct PendingRecords(Vec<AuditEvent>);

impl PendingRecords {
    /// Appends the records and waits until they are durable. Nothing of the
    /// call's response may reach the caller before this succeeds: when the
    /// audit log cannot be written the read is refused (fail closed), even
    /// though Firestore already answered it.
    pub(crate) async fn durable(self, gw: &Gateway) -> Result<(), Refusal> {
        record_all(gw, self.0).await
    }

    /// Runs the upstream call while the records sync, and returns its result
    /// only once they are durable (see [`PendingRecords::durable`]).
    pub(crate) async fn alongside<T>(
        self,
        gw: &Gateway,
        upstream: impl Future<Output = T>,
    ) -> Result<T, Refusal> {
        let (durable, answer) = tokio::join!(self.durable(gw), upstream);
        durable.map(|()| answer)
    }
}

/// Appends events concurrently (one group commit) and waits for all.
async fn record_all(gw: &Gateway, events: Vec<AuditEvent>) -> Result<(), Refusal> {
    let results = join_all(events.into_iter().map(|e| gw.record(e))).await;
    if results.iter().any(Result::is_err) {
        return Err(audit_unavailable());
    }
    Ok(())
}

impl std::fmt::Debug for FirestoreFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirestoreFront")
            .field("emulator", &self.config.emulator)
            .field("databases", &self.config.databases)
            .finish_non_exhaustive()
    }
}

impl FirestoreFront {
    /// Builds the front end from `[firestore]`.
    pub(crate) fn new(
        config: FirestoreConfig,
        clock: latchkey_core::SharedClock,
        timeout: std::time::Duration,
    ) -> Result<Arc<Self>, String> {
        let upstream = FirestoreUpstream::new(&config, clock, timeout)?;
        Ok(Arc::new(Self {
            config,
            upstream,
            transactions: TransactionBindings::default(),
        }))
    }

    fn max_request(&self) -> usize {
        self.config.max_request_bytes
    }

    /// Whether values written to this document (or, for a server-named
    /// create, collection) are copied into the audit log: its collection's
    /// path matches `firestore.record_values`.
    fn records_values(&self, written: &DocPath) -> bool {
        if self.config.record_values.is_empty() {
            return false;
        }
        let collection = if written.is_document() {
            written.parent().unwrap_or_default()
        } else {
            written.clone()
        };
        let path = collection.segments().join("/");
        self.config
            .record_values
            .iter()
            .any(|g| glob_match(g, &path))
    }

    /// Authenticate: a Latchkey token for audience `documents`. Refusals
    /// other than "no credential" are audited.
    async fn authenticate(
        &self,
        gw: &Gateway,
        request_id: &str,
        headers: &HeaderMap,
        client: crate::refusals::ClientAddr,
    ) -> Result<Principal, Refusal> {
        match authenticate(gw, headers, AUDIENCE) {
            Ok((_, v)) => Ok(v.principal),
            Err(failure) => {
                if !matches!(failure, AuthFailure::Missing) {
                    let event = crate::events::refusal(
                        request_id.to_owned(),
                        None,
                        "firestore.authenticate",
                        failure.code(),
                        &failure.message(),
                        gw.clock.unix_millis(),
                    );
                    gw.record_unauthenticated(client, event)
                        .await
                        .map_err(|_| audit_unavailable())?;
                }
                Err(Refusal::new(GrpcCode::Unauthenticated, failure.message()))
            }
        }
    }

    /// Records a request refused before policy (malformed, unknown
    /// database) and returns the refusal.
    async fn refuse(
        &self,
        gw: &Gateway,
        request_id: &str,
        principal: &Principal,
        code: &str,
        refusal: Refusal,
    ) -> Refusal {
        let event = crate::events::refusal(
            request_id.to_owned(),
            Some(principal),
            "firestore.classify",
            code,
            &refusal.message,
            gw.clock.unix_millis(),
        );
        match gw.record(event).await {
            Ok(()) => refusal,
            Err(_) => audit_unavailable(),
        }
    }

    /// The identity a transaction is bound to.
    fn owner(principal: &Principal) -> String {
        format!("{}|{}|{}", principal.kind, principal.issuer, principal.id)
    }

    /// Authorize: one Cedar decision per access, each recorded durably; the
    /// first denial refuses the call (after every decision is recorded).
    async fn authorize(
        &self,
        gw: &Gateway,
        request_id: &str,
        principal: &Principal,
        classified: &Classified,
        overlap: Overlap,
    ) -> Result<AuthorizedCall, Refusal> {
        self.authorize_with(gw, request_id, principal, classified, &Map::new(), overlap)
            .await
    }

    /// [`Self::authorize`], with facts every decision record carries (a
    /// rule's name and the webhook delivery that fired it).
    async fn authorize_with(
        &self,
        gw: &Gateway,
        request_id: &str,
        principal: &Principal,
        classified: &Classified,
        base: &Map<String, serde_json::Value>,
        overlap: Overlap,
    ) -> Result<AuthorizedCall, Refusal> {
        let db = &classified.database;
        if let Some(project) = &self.config.project
            && &db.project != project
        {
            let r = Refusal::new(
                GrpcCode::PermissionDenied,
                format!(
                    "project `{}` is not served by this Latchkey (it serves `{project}`)",
                    latchkey_core::echo(&db.project)
                ),
            );
            return Err(self
                .refuse(gw, request_id, principal, "unknown_project", r)
                .await);
        }
        let Some(environment) = self.config.databases.get(&db.database) else {
            let r = Refusal::new(
                GrpcCode::PermissionDenied,
                format!(
                    "database `{}` is not served by this Latchkey; map it to an environment in [firestore.databases]",
                    latchkey_core::echo(&db.database)
                ),
            );
            return Err(self
                .refuse(gw, request_id, principal, "unknown_database", r)
                .await);
        };
        if let Some(tx) = &classified.transaction
            && let Err(why) =
                self.transactions
                    .check(tx, &Self::owner(principal), gw.clock.unix_millis())
        {
            let r = Refusal::new(GrpcCode::PermissionDenied, why.message());
            return Err(self
                .refuse(gw, request_id, principal, "foreign_transaction", r)
                .await);
        }
        let mut intents = Vec::with_capacity(classified.accesses.len());
        let mut extras = Vec::with_capacity(classified.accesses.len());
        for access in &classified.accesses {
            let intent = access
                .intent(db, environment)
                .with("request_id", request_id);
            let mut extra = base.clone();
            extra.insert("environment".into(), json!(environment));
            extra.insert("database".into(), json!(db.database));
            extra.insert("method".into(), json!(classified.method.as_str()));
            if let Some(w) = &access.write {
                if let Some(mask) = &w.update_mask {
                    extra.insert("update_mask".into(), json!(mask));
                }
                extra.insert("fields".into(), json!(w.fields));
                if !w.transforms.is_empty() {
                    extra.insert("transforms".into(), json!(w.transforms));
                }
                if let Some(values) = &w.values {
                    extra.insert("values".into(), values.clone());
                }
            }
            intents.push(intent);
            extras.push(extra);
        }
        let (decisions, events): (Vec<_>, Vec<_>) = intents
            .iter()
            .zip(extras)
            .map(|(intent, extra)| gw.decide_unrecorded(request_id, principal, intent, extra))
            .unzip();
        // A read inside a transaction takes locks, so it waits like a write;
        // so does every call once the log is known to be failing.
        let defer = overlap == Overlap::Reads
            && classified.method.reads_only()
            && classified.transaction.is_none()
            && !classified.begins_transaction
            && gw.audit.failure().is_none()
            && decisions.iter().all(|d| d.is_allowed());
        let pending = if defer {
            PendingRecords(events)
        } else {
            record_all(gw, events).await?;
            PendingRecords::default()
        };
        let mut denied: Option<String> = None;
        for (intent, d) in intents.iter().zip(decisions) {
            if !d.is_allowed() && denied.is_none() {
                let resource = intent.resource.display();
                denied = Some(if d.reason.contains(&resource) {
                    d.reason.clone()
                } else {
                    format!("{} on {resource} {}", intent.action, d.reason)
                });
            }
        }
        if let Some(message) = denied {
            let n = intents.len();
            let message = if n > 1 {
                format!(
                    "{message} (the whole call of {n} accesses was refused; nothing was applied)"
                )
            } else {
                message
            };
            return Err(Refusal::new(GrpcCode::PermissionDenied, message));
        }
        Ok(AuthorizedCall { intents, pending })
    }

    /// Records the outcome of every intent of a call. A write's outcome is
    /// durable before the caller learns it succeeded; a read's is a buffered
    /// append, synced with the next record or within a few milliseconds,
    /// and the response does not wait for it: the read changed nothing, and
    /// its decision is already durable.
    #[allow(clippy::too_many_arguments)]
    async fn record_outcome(
        &self,
        gw: &Gateway,
        method: latchkey_documents::Method,
        request_id: &str,
        principal: &Principal,
        intents: &[Intent],
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), Refusal> {
        let now = gw.clock.unix_millis();
        let events: Vec<AuditEvent> = intents
            .iter()
            .map(|intent| {
                let mut outcome = Outcome::new(status);
                if let Some(d) = detail {
                    outcome = outcome.with_detail(d);
                }
                AuditEvent::outcome(request_id.to_owned(), Some(principal), intent, outcome, now)
            })
            .collect();
        if method.reads_only() {
            for event in events {
                if let Err(e) = gw.audit.append_buffered(event).await {
                    tracing::error!(error = %e, "audit log unavailable for a read's outcome");
                }
            }
            return Ok(());
        }
        record_all(gw, events).await
    }

    fn bind_transaction(&self, tx: Bytes, principal: &Principal, now_ms: u64) {
        if !self.transactions.bind(tx, &Self::owner(principal), now_ms) {
            tracing::warn!(
                "transaction table full; the new transaction cannot be used through Latchkey"
            );
        }
    }

    fn end_transaction(&self, tx: &[u8]) {
        self.transactions.end(tx);
    }
}

/// Routing headers are kept for the upstream, so they must not name
/// another database than the one the call was decided for: Google routes
/// by them.
fn check_routing(
    headers: &HeaderMap,
    database: &latchkey_documents::DatabaseName,
) -> Result<(), Refusal> {
    let root = format!(
        "projects/{}/databases/{}",
        database.project, database.database
    );
    for value in headers.get_all("x-goog-request-params") {
        let Ok(value) = value.to_str() else {
            return Err(Refusal::new(
                GrpcCode::InvalidArgument,
                "x-goog-request-params is not ASCII",
            ));
        };
        for pair in value.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let v = latchkey_documents::status::grpc_message_decode(&raw.replace('+', " "));
            let consistent = match key {
                "project_id" => v == database.project,
                "database_id" => v == database.database,
                _ if v.starts_with("projects/") => v == root || v.starts_with(&format!("{root}/")),
                _ => true,
            };
            if !consistent {
                return Err(Refusal::new(
                    GrpcCode::InvalidArgument,
                    format!(
                        "x-goog-request-params `{key}` names another database than the request (`{root}`)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reads a buffered request body up to `limit` bytes.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, Refusal> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::new(
            GrpcCode::InvalidArgument,
            format!("the request is larger than {limit} bytes (firestore.max_request_bytes)"),
        )),
        Err(e) => Err(Refusal::new(
            GrpcCode::InvalidArgument,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// Percent-encodes one document id for a REST path: everything but
/// unreserved characters, so an id is always exactly one segment.
fn encode_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A document write a webhook rule asks for, made through the same path as
/// a caller's: classified from the REST request it would send, decided by
/// Cedar for `principal` (the `Service`), audited with `base` facts, then
/// sent upstream with Latchkey's credential. Returns the upstream status.
pub(crate) async fn write_document(
    gw: &Gateway,
    request_id: &str,
    principal: &Principal,
    database: &str,
    path: &str,
    fields: &std::collections::BTreeMap<String, String>,
    base: &Map<String, serde_json::Value>,
) -> Result<u16, Refusal> {
    let front = gw.firestore.clone().ok_or_else(|| {
        Refusal::new(
            GrpcCode::Unimplemented,
            "no Firestore upstream is configured: add a [firestore] table to latchkey.toml",
        )
    })?;
    let project = front.config.project.clone().ok_or_else(|| {
        Refusal::new(
            GrpcCode::FailedPrecondition,
            "set `firestore.project` so rules know where to write",
        )
    })?;
    let encoded: Vec<String> = path.split('/').map(encode_segment).collect();
    let uri = format!(
        "/v1/projects/{}/databases/{}/documents/{}",
        encode_segment(&project),
        encode_segment(database),
        encoded.join("/")
    );
    let body: Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.clone(), json!({ "stringValue": v })))
        .collect();
    let body = serde_json::to_vec(&json!({ "fields": body }))
        .map_err(|e| Refusal::new(GrpcCode::Internal, e.to_string()))?;
    let call = latchkey_documents::RestCall::parse(&http::Method::PATCH, &uri, None)
        .map_err(|e| Refusal::new(e.code(), format!("rule document path `{path}`: {e}")))?;
    let classified = {
        let record_values = |p: &DocPath| front.records_values(p);
        let opts = latchkey_documents::ClassifyOptions {
            record_values: &record_values,
        };
        latchkey_documents::classify_rest(&call, &body, &opts)
    }
    .map_err(|e| Refusal::new(e.code(), format!("rule document `{path}`: {e}")))?;
    let authorized = front
        .authorize_with(gw, request_id, principal, &classified, base, Overlap::Never)
        .await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let result = front
        .upstream
        .rest(
            http::Method::PATCH,
            &uri,
            &headers,
            axum::body::Body::from(body),
        )
        .await;
    let (status, detail) = match &result {
        Ok(r) => (r.status().as_str().to_owned(), None),
        Err(e) => ("unavailable".to_owned(), Some(e.to_string())),
    };
    front
        .record_outcome(
            gw,
            classified.method,
            request_id,
            principal,
            &authorized.intents,
            &status,
            detail.as_deref(),
        )
        .await?;
    match result {
        Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
        Ok(r) => Err(Refusal::new(
            GrpcCode::Unavailable,
            format!("Firestore answered HTTP {}", r.status()),
        )),
        Err(e) => Err(Refusal::new(GrpcCode::Unavailable, e.to_string())),
    }
}
