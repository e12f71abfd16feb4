//! The Firestore document API behind identity, as two targets on the
//! pipeline — gRPC (`google.firestore.v1.Firestore`, what the server SDKs
//! speak) and REST v1 — that share one classify step: `latchkey-documents`
//! turns a call into accesses, each access is one intent, all of a call's
//! intents are decided together (one denial refuses the whole call before
//! anything reaches the backend). The backend is Google Firestore (or its
//! emulator), reached with Latchkey's Google credential instead of the
//! caller's token, or Latchkey's embedded store (`latchkey-docstore`),
//! called in-process with the very message that was decided.

mod embedded;
mod grpc;
mod rest;
mod transactions;
mod upstream;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use latchkey_audit::{AuditEvent, Outcome};
use latchkey_core::{Intent, Principal, glob_match};
use latchkey_documents::{Classified as DocCall, DocPath, GrpcCode};
use serde_json::{Map, json};

pub(crate) use grpc::DocumentsGrpc;
pub(crate) use rest::DocumentsRest;

use crate::config::{DocumentsConfig, FirestoreConfig};
use crate::pipeline::{
    Ask, Authorized, Code, Durability, Pipeline, Refusal, RequestCx, Stage, TargetName,
};
use transactions::TransactionBindings;
use upstream::FirestoreUpstream;

/// The token audience Firestore callers present.
pub(crate) const AUDIENCE: &str = "documents";

/// The document targets' shared state: the pipeline, and the document
/// front end when `[documents]` is configured.
pub(crate) struct Documents {
    pub(crate) pipe: Arc<Pipeline>,
    front: Option<DocumentsFront>,
}

/// What answers the calls Latchkey lets through.
pub(crate) enum Backend {
    /// Google Firestore or its emulator, over the network (boxed: its
    /// clients are large, and the front end is built once).
    Firestore(Box<FirestoreUpstream>),
    /// Latchkey's own store, in-process.
    Embedded(Arc<latchkey_docstore::DocumentStore>),
}

/// The document front end's state.
pub(crate) struct DocumentsFront {
    config: DocumentsConfig,
    backend: Backend,
    transactions: TransactionBindings,
}

impl std::fmt::Debug for DocumentsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentsFront")
            .field("backend", &self.config.backend)
            .field("databases", &self.config.databases)
            .finish_non_exhaustive()
    }
}

impl DocumentsFront {
    /// The front end over Google Firestore (or its emulator), built from
    /// `[documents]` and `[firestore]` without contacting anyone.
    pub(crate) fn firestore(
        config: DocumentsConfig,
        upstream: &FirestoreConfig,
        clock: latchkey_core::SharedClock,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        let upstream = FirestoreUpstream::new(upstream, clock, timeout)?;
        Ok(Self {
            config,
            backend: Backend::Firestore(Box::new(upstream)),
            transactions: TransactionBindings::default(),
        })
    }

    /// The front end over the embedded store.
    pub(crate) fn embedded(
        config: DocumentsConfig,
        store: Arc<latchkey_docstore::DocumentStore>,
    ) -> Self {
        Self {
            config,
            backend: Backend::Embedded(store),
            transactions: TransactionBindings::default(),
        }
    }

    /// Keeps transaction bindings in `store` too, which the other nodes
    /// sharing it read.
    pub(crate) fn share_transactions(mut self, store: latchkey_store::SharedStore) -> Self {
        self.transactions = TransactionBindings::shared(store);
        self
    }

    /// The Firestore upstream; only called on the Firestore backend's paths.
    fn upstream(&self) -> Result<&FirestoreUpstream, Refusal> {
        match &self.backend {
            Backend::Firestore(u) => Ok(u),
            Backend::Embedded(_) => Err(Refusal::new(
                Stage::Act,
                Code::NotConfigured,
                "internal: a Firestore upstream call on the embedded backend",
            )),
        }
    }
}

/// The one answer of every document route when `[firestore]` is not set.
fn not_configured() -> Refusal {
    Refusal::new(
        Stage::Classify,
        Code::NotConfigured,
        "no document store is configured: add a [documents] table to latchkey.toml \
         (`backend = \"embedded\"` needs nothing else)",
    )
}

impl Documents {
    pub(crate) fn new(pipe: Arc<Pipeline>, front: Option<DocumentsFront>) -> Self {
        Self { pipe, front }
    }

    fn front(&self) -> Result<&DocumentsFront, Refusal> {
        self.front.as_ref().ok_or_else(not_configured)
    }

    /// Authenticate: a Latchkey token for audience `documents`.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        self.front()?;
        let (_, verified) = self.pipe.authenticate_token(headers, AUDIENCE, None)?;
        Ok(verified.principal)
    }

    fn max_request(&self) -> usize {
        self.front
            .as_ref()
            .map_or(0, |f| f.config.max_request_bytes)
    }

    /// Whether values written to this document (or, for a server-named
    /// create, collection) are copied into the audit log: its collection's
    /// path matches `firestore.record_values`.
    fn records_values(&self, written: &DocPath) -> bool {
        let Some(front) = &self.front else {
            return false;
        };
        if front.config.record_values.is_empty() {
            return false;
        }
        let collection = if written.is_document() {
            written.parent().unwrap_or_default()
        } else {
            written.clone()
        };
        let path = collection.segments().join("/");
        front
            .config
            .record_values
            .iter()
            .any(|g| glob_match(g, &path))
    }

    /// The identity a transaction is bound to.
    fn owner(principal: &Principal) -> String {
        format!("{}|{}|{}", principal.kind, principal.issuer, principal.id)
    }

    /// The intents of a classified call, with the facts their records
    /// carry (`base`: a rule's name and the delivery that fired it), after
    /// the checks that need no policy: the project and database are served
    /// here, a transaction is the caller's own.
    async fn asks(
        &self,
        cx: &RequestCx,
        principal: &Principal,
        call: &DocCall,
        base: &Map<String, serde_json::Value>,
    ) -> Result<Vec<Ask>, Refusal> {
        let front = self.front()?;
        let db = &call.database;
        if let Some(project) = &front.config.project
            && &db.project != project
        {
            return Err(Refusal::new(
                Stage::Classify,
                Code::UnknownProject,
                format!(
                    "project `{}` is not served by this Latchkey (it serves `{project}`)",
                    latchkey_core::echo(&db.project)
                ),
            ));
        }
        let Some(environment) = front.config.databases.get(&db.database) else {
            return Err(Refusal::new(
                Stage::Classify,
                Code::UnknownDatabase,
                format!(
                    "database `{}` is not served by this Latchkey; map it to an environment in `documents.databases`",
                    latchkey_core::echo(&db.database)
                ),
            ));
        };
        if let Some(tx) = &call.transaction
            && let Err(why) = front
                .transactions
                .check(tx, &Self::owner(principal), self.pipe.clock.unix_millis())
                .await
        {
            return Err(Refusal::new(
                Stage::Classify,
                Code::ForeignTransaction,
                why.message(),
            ));
        }
        let mut asks = Vec::with_capacity(call.accesses.len());
        for access in &call.accesses {
            let intent = access
                .intent(db, environment)
                .with("request_id", cx.request_id.as_str());
            let mut extra = base.clone();
            extra.insert("environment".into(), json!(environment));
            extra.insert("database".into(), json!(db.database));
            extra.insert("method".into(), json!(call.method.as_str()));
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
            asks.push(Ask { intent, extra });
        }
        Ok(asks)
    }

    /// Whether an allowed call may overlap its decision records' sync with
    /// the upstream call: reads outside a transaction only (a read in a
    /// transaction takes locks, so it waits like a write).
    fn durability(call: &DocCall) -> Durability {
        if call.method.reads_only() && call.transaction.is_none() && !call.begins_transaction {
            Durability::OverlapReads
        } else {
            Durability::Now
        }
    }

    /// The refusal of a call policy denied: names the access and the
    /// policy, and says that nothing of the call was applied.
    fn denial(authorized: &Authorized) -> Refusal {
        let mut message = match authorized.denials().next() {
            Some((intent, d)) => {
                let resource = intent.resource.display();
                if d.reason.contains(&resource) {
                    d.reason.clone()
                } else {
                    format!("{} on {resource} {}", intent.action, d.reason)
                }
            }
            None => "denied by policy".to_owned(),
        };
        let n = authorized.intents.len();
        if n > 1 {
            message = format!(
                "{message} (the whole call of {n} accesses was refused; nothing was applied)"
            );
        }
        Refusal::new(Stage::Authorize, Code::Denied, message)
    }

    /// Records the outcome of every intent of a call. A write's outcome is
    /// durable before the caller learns it succeeded (one batched append);
    /// a read's is a buffered append, synced with the next record or within
    /// a few milliseconds: the read changed nothing, and its decision is
    /// already durable.
    // One outcome per intent needs all of these; a struct would only name
    // them twice.
    #[allow(clippy::too_many_arguments)]
    async fn record_outcome(
        &self,
        method: latchkey_documents::Method,
        request_id: &str,
        principal: &Principal,
        intents: &[Intent],
        status: &str,
        detail: Option<&str>,
        base: Option<&Map<String, serde_json::Value>>,
    ) -> Result<(), Refusal> {
        let now = self.pipe.clock.unix_millis();
        let events: Vec<AuditEvent> = intents
            .iter()
            .map(|intent| {
                let mut outcome = Outcome::new(status);
                if let Some(d) = detail {
                    outcome = outcome.with_detail(d);
                }
                let mut e = AuditEvent::outcome(
                    request_id.to_owned(),
                    Some(principal),
                    intent,
                    outcome,
                    now,
                );
                // A rule's write: its outcome carries the rule and the
                // delivery it follows from, as its decision does.
                for (k, v) in base.into_iter().flatten() {
                    e.context.entry(k.clone()).or_insert_with(|| v.clone());
                }
                crate::pipeline::records::link_cause(&mut e);
                e
            })
            .collect();
        if method.reads_only() {
            self.pipe.record_buffered(events).await;
            return Ok(());
        }
        self.pipe.record_all(events).await
    }

    fn bind_transaction(&self, tx: Bytes, principal: &Principal, now_ms: u64) {
        let Some(front) = &self.front else {
            return;
        };
        if !front.transactions.bind(tx, &Self::owner(principal), now_ms) {
            tracing::warn!(
                "transaction table full; the new transaction cannot be used through Latchkey"
            );
        }
    }

    fn end_transaction(&self, tx: &[u8]) {
        if let Some(front) = &self.front {
            front.transactions.end(tx, self.pipe.clock.unix_millis());
        }
    }

    /// A document write a webhook rule asks for, made through the same path
    /// as a caller's: classified from the REST request it would send,
    /// decided by Cedar for `principal` (the `Service`), recorded with
    /// `base` facts, then sent upstream with Latchkey's credential. Returns
    /// the upstream status.
    pub(crate) async fn write_document(
        &self,
        cx: &RequestCx,
        principal: &Principal,
        database: &str,
        path: &str,
        fields: &std::collections::BTreeMap<String, String>,
        base: &Map<String, serde_json::Value>,
    ) -> Result<u16, Refusal> {
        let front = self.front()?;
        let project = front.config.project.clone().ok_or_else(|| {
            Refusal::new(
                Stage::Classify,
                Code::NotConfigured,
                "set `documents.project` so rules know where to write",
            )
            .with_grpc(GrpcCode::FailedPrecondition)
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
            .map_err(|e| Refusal::new(Stage::Classify, Code::Malformed, e.to_string()))?;
        let call =
            latchkey_documents::RestCall::parse(&http::Method::PATCH, &uri, None).map_err(|e| {
                Refusal::new(
                    Stage::Classify,
                    Code::Malformed,
                    format!("rule document path `{path}`: {e}"),
                )
                .with_grpc(e.code())
            })?;
        let classified = {
            let record_values = |p: &DocPath| self.records_values(p);
            let opts = latchkey_documents::ClassifyOptions {
                record_values: &record_values,
            };
            latchkey_documents::classify_rest(&call, &body, &opts)
        }
        .map_err(|e| {
            Refusal::new(
                Stage::Classify,
                Code::Malformed,
                format!("rule document `{path}`: {e}"),
            )
            .with_grpc(e.code())
        })?;
        let asks = match self.asks(cx, principal, &classified, base).await {
            Ok(a) => a,
            Err(r) => {
                let action = crate::pipeline::AuditAction::Refused(TargetName::Firestore, r.stage);
                return Err(self.pipe.refused(cx, Some(principal), action, r).await);
            }
        };
        let authorized = self
            .pipe
            .authorize(cx, principal, asks, Durability::Now)
            .await?;
        if !authorized.all_allowed() {
            return Err(Self::denial(&authorized));
        }
        let result = match &front.backend {
            Backend::Firestore(upstream) => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                match upstream
                    .rest(
                        http::Method::PATCH,
                        &uri,
                        &headers,
                        axum::body::Body::from(body),
                    )
                    .await
                {
                    Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                    Ok(r) => Err((
                        r.status().as_str().to_owned(),
                        format!("Firestore answered HTTP {}", r.status()),
                    )),
                    Err(e) => {
                        self.pipe
                            .metrics
                            .upstream_error(crate::metrics::UpstreamKind::Firestore);
                        Err(("unavailable".to_owned(), e.to_string()))
                    }
                }
            }
            Backend::Embedded(store) => {
                // The same write the REST PATCH above says: a set of the
                // whole document (no mask, no precondition).
                let name = classified
                    .database
                    .resource_name(&DocPath::parse(path).map_err(|e| {
                        Refusal::new(
                            Stage::Classify,
                            Code::Malformed,
                            format!("rule document path `{path}`: {e}"),
                        )
                    })?);
                let request = latchkey_docstore::proto::UpdateDocumentRequest {
                    document: Some(latchkey_docstore::proto::Document {
                        name,
                        fields: fields
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    latchkey_docstore::proto::Value {
                                        value_type: Some(
                                            latchkey_docstore::proto::value::ValueType::StringValue(
                                                v.clone(),
                                            ),
                                        ),
                                    },
                                )
                            })
                            .collect(),
                        create_time: None,
                        update_time: None,
                    }),
                    ..Default::default()
                };
                match store.update_document(request).await {
                    Ok(_) => Ok(200),
                    Err(status) => Err((status.code.name().to_owned(), status.message)),
                }
            }
        };
        let (status, detail) = match &result {
            Ok(code) => (code.to_string(), None),
            Err((status, detail)) => (status.clone(), Some(detail.clone())),
        };
        self.record_outcome(
            classified.method,
            &cx.request_id,
            principal,
            &authorized.intents,
            &status,
            detail.as_deref(),
            Some(base),
        )
        .await?;
        result.map_err(|(_, detail)| Refusal::new(Stage::Act, Code::UpstreamUnavailable, detail))
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
    let malformed = |m: String| Refusal::new(Stage::Classify, Code::Malformed, m);
    for value in headers.get_all("x-goog-request-params") {
        let Ok(value) = value.to_str() else {
            return Err(malformed("x-goog-request-params is not ASCII".into()));
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
                return Err(malformed(format!(
                    "x-goog-request-params `{key}` names another database than the request (`{root}`)"
                )));
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
            Stage::Classify,
            Code::TooLarge,
            format!("the request is larger than {limit} bytes (firestore.max_request_bytes)"),
        )
        .with_grpc(GrpcCode::InvalidArgument)),
        Err(e) => Err(Refusal::new(
            Stage::Classify,
            Code::Malformed,
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
