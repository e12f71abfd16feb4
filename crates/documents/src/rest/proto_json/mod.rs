//! Firestore REST calls as the protobuf messages of the same RPCs, and
//! protobuf answers as Google's REST front end renders them.
//!
//! A backend that answers REST itself (the embedded document store) turns
//! each routed [`RestCall`] and its JSON body into the request message the
//! gRPC method takes ([`request_to_proto`]); the gateway then classifies
//! *that* message with [`crate::classify_grpc`] on
//! [`RequestMessage::encode_to_vec`], so the bytes decided on are exactly
//! the bytes executed. The answer goes back through [`ResponseMessage`]:
//! one JSON object, or for the server-streaming methods (`batchGet`,
//! `runQuery`, `runAggregationQuery`) a JSON array written element by
//! element with [`JsonArrayStream`].
//!
//! The reading follows Google's JSON front end (protobuf's `JsonFormat`,
//! which the emulator runs and which this module is tested against): both
//! key spellings, unknown keys refused, a key given twice refused, `null`
//! as absence. Path segments and query parameters fill the fields Google
//! binds to them (`name`, `parent`, `collectionId`, `database`,
//! `documentId`, `mask.fieldPaths`, `updateMask.fieldPaths`,
//! `currentDocument.*`, `transaction`, `readTime`, `pageSize`,
//! `pageToken`, `orderBy`, `showMissing`); a body naming another document
//! than its path is refused. See [`read`] for the few spellings that are
//! refused although Google would take them.
//!
//! What this module does not do: decide anything (that is the
//! classifier's), touch a store, or render errors (see
//! [`crate::rest_error_body`]).

#[doc(hidden)]
pub mod fuzz;
mod read;
mod render;
mod time;

use bytes::Bytes;
use prost::Message as _;
use serde_json::Value as Json;

use crate::error::ClassifyError;
use crate::grpc::Method;
use crate::names::DocPath;
use crate::proto;
use crate::rest::RestCall;
use crate::rest::json::{JsonObj, decode_base64, parse_strict};
use read::{Result, invalid};
pub use render::{document_json, fields_json, value_json};

/// A REST call as the protobuf request the same gRPC method takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtoRequest {
    /// The RPC.
    pub method: Method,
    /// Its request message.
    pub message: RequestMessage,
}

/// The request message of one RPC.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each variant is the request of the RPC it is named after
pub enum RequestMessage {
    Get(proto::GetDocumentRequest),
    List(proto::ListDocumentsRequest),
    Create(proto::CreateDocumentRequest),
    Update(proto::UpdateDocumentRequest),
    Delete(proto::DeleteDocumentRequest),
    BatchGet(proto::BatchGetDocumentsRequest),
    BeginTransaction(proto::BeginTransactionRequest),
    Commit(proto::CommitRequest),
    Rollback(proto::RollbackRequest),
    RunQuery(proto::RunQueryRequest),
    RunAggregationQuery(proto::RunAggregationQueryRequest),
    ListCollectionIds(proto::ListCollectionIdsRequest),
    BatchWrite(proto::BatchWriteRequest),
    PartitionQuery(proto::PartitionQueryRequest),
}

impl RequestMessage {
    /// The message's protobuf bytes, as a gRPC client would send them
    /// (without the gRPC frame header).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Self::Get(m) => m.encode_to_vec(),
            Self::List(m) => m.encode_to_vec(),
            Self::Create(m) => m.encode_to_vec(),
            Self::Update(m) => m.encode_to_vec(),
            Self::Delete(m) => m.encode_to_vec(),
            Self::BatchGet(m) => m.encode_to_vec(),
            Self::BeginTransaction(m) => m.encode_to_vec(),
            Self::Commit(m) => m.encode_to_vec(),
            Self::Rollback(m) => m.encode_to_vec(),
            Self::RunQuery(m) => m.encode_to_vec(),
            Self::RunAggregationQuery(m) => m.encode_to_vec(),
            Self::ListCollectionIds(m) => m.encode_to_vec(),
            Self::BatchWrite(m) => m.encode_to_vec(),
            Self::PartitionQuery(m) => m.encode_to_vec(),
        }
    }

    /// The RPC this message is the request of.
    pub fn method(&self) -> Method {
        match self {
            Self::Get(_) => Method::GetDocument,
            Self::List(_) => Method::ListDocuments,
            Self::Create(_) => Method::CreateDocument,
            Self::Update(_) => Method::UpdateDocument,
            Self::Delete(_) => Method::DeleteDocument,
            Self::BatchGet(_) => Method::BatchGetDocuments,
            Self::BeginTransaction(_) => Method::BeginTransaction,
            Self::Commit(_) => Method::Commit,
            Self::Rollback(_) => Method::Rollback,
            Self::RunQuery(_) => Method::RunQuery,
            Self::RunAggregationQuery(_) => Method::RunAggregationQuery,
            Self::ListCollectionIds(_) => Method::ListCollectionIds,
            Self::BatchWrite(_) => Method::BatchWrite,
            Self::PartitionQuery(_) => Method::PartitionQuery,
        }
    }
}

/// Reads a routed REST call and its (complete) JSON body as the request
/// message of the same RPC. The query parameters are those
/// [`RestCall::parse`] already checked and normalised.
pub fn request_to_proto(call: &RestCall, body: &[u8]) -> Result<ProtoRequest> {
    let message = match call.method {
        Method::GetDocument | Method::ListDocuments | Method::DeleteDocument => {
            if !body.iter().all(u8::is_ascii_whitespace) {
                return Err(invalid(
                    "request body".into(),
                    &format!("{} takes no body", call.method),
                ));
            }
            no_body(call)?
        }
        _ => with_body(call, &parse_strict(body)?)?,
    };
    Ok(ProtoRequest {
        method: call.method,
        message,
    })
}

/// A parameter Google reads as a message field of a scalar type.
fn param_json(call: &RestCall, name: &str) -> Option<Json> {
    call.param(name).map(|v| Json::from(v.to_owned()))
}

fn param_mask(call: &RestCall, name: &str) -> Option<proto::DocumentMask> {
    let paths: Vec<String> = call.param_all(name).map(str::to_owned).collect();
    (!paths.is_empty()).then_some(proto::DocumentMask { field_paths: paths })
}

/// `transaction` or `readTime`, the consistency of a read given as
/// parameters. An empty `transaction` is no transaction, as the REST
/// classifier reads it.
fn param_consistency(call: &RestCall) -> Result<Option<Consistency>> {
    let transaction = call.param("transaction").filter(|t| !t.is_empty());
    let read_time = call.param("readTime");
    match (transaction, read_time) {
        (Some(_), Some(_)) => Err(invalid(
            "transaction".into(),
            "give `transaction` or `readTime`, not both",
        )),
        (Some(t), None) => decode_base64(t)
            .map(|t| Some(Consistency::Transaction(t)))
            .ok_or_else(|| invalid("transaction".into(), "expected base64")),
        (None, Some(_)) => Ok(Some(Consistency::ReadTime(read::timestamp(
            &param_json(call, "readTime").unwrap_or_default(),
            || "readTime".into(),
        )?))),
        (None, None) => Ok(None),
    }
}

/// `currentDocument.exists` or `currentDocument.updateTime` as parameters.
fn param_precondition(call: &RestCall) -> Result<Option<proto::Precondition>> {
    use proto::precondition::ConditionType as C;
    let exists = call.param("currentDocument.exists");
    let update_time = call.param("currentDocument.updateTime");
    let condition = match (exists, update_time) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "currentDocument".into(),
                "give `exists` or `updateTime`, not both",
            ));
        }
        (Some("true"), None) => C::Exists(true),
        (Some("false"), None) => C::Exists(false),
        (Some(_), None) => {
            return Err(invalid(
                "currentDocument.exists".into(),
                "expected true or false",
            ));
        }
        (None, Some(t)) => C::UpdateTime(read::timestamp(&Json::from(t), || {
            "currentDocument.updateTime".into()
        })?),
        (None, None) => return Ok(None),
    };
    Ok(Some(proto::Precondition {
        condition_type: Some(condition),
    }))
}

/// The consistency selector of a read, before it becomes the oneof of
/// one request type.
enum Consistency {
    Transaction(Bytes),
    NewTransaction(proto::TransactionOptions),
    ReadTime(prost_types::Timestamp),
}

/// The parent and collection id of a collection path (`teams/a/members`).
fn split_collection(call: &RestCall) -> (String, String) {
    let parent = call.path.parent().unwrap_or_else(DocPath::root);
    (
        call.database.resource_name(&parent),
        call.path.last().unwrap_or("").to_owned(),
    )
}

fn no_body(call: &RestCall) -> Result<RequestMessage> {
    let name = call.database.resource_name(&call.path);
    Ok(match call.method {
        Method::GetDocument => {
            use proto::get_document_request::ConsistencySelector as S;
            RequestMessage::Get(proto::GetDocumentRequest {
                name,
                mask: param_mask(call, "mask.fieldPaths"),
                consistency_selector: match param_consistency(call)? {
                    Some(Consistency::Transaction(t)) => Some(S::Transaction(t)),
                    Some(Consistency::ReadTime(t)) => Some(S::ReadTime(t)),
                    Some(Consistency::NewTransaction(_)) | None => None,
                },
            })
        }
        Method::ListDocuments => {
            use proto::list_documents_request::ConsistencySelector as S;
            let (parent, collection_id) = split_collection(call);
            let page_size = match param_json(call, "pageSize") {
                Some(v) => read::int32(&v, || "pageSize".into())?,
                None => 0,
            };
            let show_missing = match call.param("showMissing") {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err(invalid("showMissing".into(), "expected true or false")),
            };
            RequestMessage::List(proto::ListDocumentsRequest {
                parent,
                collection_id,
                page_size,
                page_token: call.param("pageToken").unwrap_or("").to_owned(),
                order_by: call.param("orderBy").unwrap_or("").to_owned(),
                mask: param_mask(call, "mask.fieldPaths"),
                show_missing,
                consistency_selector: match param_consistency(call)? {
                    Some(Consistency::Transaction(t)) => Some(S::Transaction(t)),
                    Some(Consistency::ReadTime(t)) => Some(S::ReadTime(t)),
                    Some(Consistency::NewTransaction(_)) | None => None,
                },
            })
        }
        _ => RequestMessage::Delete(proto::DeleteDocumentRequest {
            name,
            current_document: param_precondition(call)?,
        }),
    })
}

/// `transaction`, `newTransaction` or `readTime` in a body.
fn body_consistency(b: &JsonObj<'_>, members: &[&str]) -> Result<Option<Consistency>> {
    Ok(match read::oneof(b, members)? {
        Some("transaction") => Some(Consistency::Transaction(read::opt_bytes(b, "transaction")?)),
        Some("newTransaction") => read::message(b, "newTransaction", read::transaction_options)?
            .map(Consistency::NewTransaction),
        Some(_) => read::opt_timestamp(b, "readTime")?.map(Consistency::ReadTime),
        None => None,
    })
}

const READ_CONSISTENCY: &[&str] = &["transaction", "newTransaction", "readTime"];

fn with_body(call: &RestCall, body: &Json) -> Result<RequestMessage> {
    let database = call.database.to_string();
    let parent = call.database.resource_name(&call.path);
    Ok(match call.method {
        Method::CreateDocument => {
            let doc = JsonObj::new(body, "", read::DOCUMENT)?;
            let document = read::document_of(&doc)?;
            if !document.name.is_empty() {
                return Err(invalid(
                    "name".into(),
                    "must be empty; name the document with `documentId`",
                ));
            }
            let (parent, collection_id) = split_collection(call);
            RequestMessage::Create(proto::CreateDocumentRequest {
                parent,
                collection_id,
                document_id: call.param("documentId").unwrap_or("").to_owned(),
                document: Some(document),
                mask: param_mask(call, "mask.fieldPaths"),
            })
        }
        Method::UpdateDocument => {
            let doc = JsonObj::new(body, "", read::DOCUMENT)?;
            let mut document = read::document_of(&doc)?;
            let name = call.database.resource_name(&call.path);
            if !document.name.is_empty() && document.name != name {
                return Err(invalid(
                    "name".into(),
                    "differs from the document named in the path",
                ));
            }
            document.name = name;
            RequestMessage::Update(proto::UpdateDocumentRequest {
                document: Some(document),
                update_mask: param_mask(call, "updateMask.fieldPaths"),
                mask: param_mask(call, "mask.fieldPaths"),
                current_document: param_precondition(call)?,
            })
        }
        Method::BatchGetDocuments => {
            use proto::batch_get_documents_request::ConsistencySelector as S;
            let b = JsonObj::new(
                body,
                "",
                &[
                    "documents",
                    "mask",
                    "transaction",
                    "newTransaction",
                    "readTime",
                ],
            )?;
            RequestMessage::BatchGet(proto::BatchGetDocumentsRequest {
                database,
                documents: read::strings(&b, "documents")?,
                mask: read::message(&b, "mask", read::mask)?,
                consistency_selector: body_consistency(&b, READ_CONSISTENCY)?.map(|c| match c {
                    Consistency::Transaction(t) => S::Transaction(t),
                    Consistency::NewTransaction(o) => S::NewTransaction(o),
                    Consistency::ReadTime(t) => S::ReadTime(t),
                }),
            })
        }
        Method::BeginTransaction => {
            let b = JsonObj::new(body, "", &["options"])?;
            RequestMessage::BeginTransaction(proto::BeginTransactionRequest {
                database,
                options: read::message(&b, "options", read::transaction_options)?,
            })
        }
        Method::Commit => {
            let b = JsonObj::new(body, "", &["writes", "transaction"])?;
            RequestMessage::Commit(proto::CommitRequest {
                database,
                writes: read::messages(&b, "writes", read::write)?,
                transaction: read::opt_bytes(&b, "transaction")?,
            })
        }
        Method::BatchWrite => {
            let b = JsonObj::new(body, "", &["writes", "labels"])?;
            let labels = match b.map("labels")? {
                None => Default::default(),
                Some(m) => m
                    .iter()
                    .map(|(k, v)| match v {
                        Json::String(s) => Ok((k.clone(), s.clone())),
                        _ => Err(invalid(format!("labels.{k}"), "expected a string")),
                    })
                    .collect::<Result<_>>()?,
            };
            RequestMessage::BatchWrite(proto::BatchWriteRequest {
                database,
                writes: read::messages(&b, "writes", read::write)?,
                labels,
            })
        }
        Method::Rollback => {
            let b = JsonObj::new(body, "", &["transaction"])?;
            RequestMessage::Rollback(proto::RollbackRequest {
                database,
                transaction: read::opt_bytes(&b, "transaction")?,
            })
        }
        Method::RunQuery => {
            use proto::run_query_request::{ConsistencySelector as S, QueryType};
            let b = JsonObj::new(
                body,
                "",
                &[
                    "structuredQuery",
                    "transaction",
                    "newTransaction",
                    "readTime",
                    "explainOptions",
                ],
            )?;
            RequestMessage::RunQuery(proto::RunQueryRequest {
                parent,
                explain_options: read::message(&b, "explainOptions", read::explain_options)?,
                query_type: read::message(&b, "structuredQuery", read::structured_query)?
                    .map(QueryType::StructuredQuery),
                consistency_selector: body_consistency(&b, READ_CONSISTENCY)?.map(|c| match c {
                    Consistency::Transaction(t) => S::Transaction(t),
                    Consistency::NewTransaction(o) => S::NewTransaction(o),
                    Consistency::ReadTime(t) => S::ReadTime(t),
                }),
            })
        }
        Method::RunAggregationQuery => {
            use proto::run_aggregation_query_request::{ConsistencySelector as S, QueryType};
            let b = JsonObj::new(
                body,
                "",
                &[
                    "structuredAggregationQuery",
                    "transaction",
                    "newTransaction",
                    "readTime",
                    "explainOptions",
                ],
            )?;
            RequestMessage::RunAggregationQuery(proto::RunAggregationQueryRequest {
                parent,
                explain_options: read::message(&b, "explainOptions", read::explain_options)?,
                query_type: read::message(
                    &b,
                    "structuredAggregationQuery",
                    read::aggregation_query,
                )?
                .map(QueryType::StructuredAggregationQuery),
                consistency_selector: body_consistency(&b, READ_CONSISTENCY)?.map(|c| match c {
                    Consistency::Transaction(t) => S::Transaction(t),
                    Consistency::NewTransaction(o) => S::NewTransaction(o),
                    Consistency::ReadTime(t) => S::ReadTime(t),
                }),
            })
        }
        Method::PartitionQuery => {
            use proto::partition_query_request::{ConsistencySelector as S, QueryType};
            let b = JsonObj::new(
                body,
                "",
                &[
                    "structuredQuery",
                    "partitionCount",
                    "pageToken",
                    "pageSize",
                    "readTime",
                ],
            )?;
            RequestMessage::PartitionQuery(proto::PartitionQueryRequest {
                parent,
                partition_count: read::opt_int64(&b, "partitionCount")?.unwrap_or(0),
                page_token: read::string(&b, "pageToken")?,
                page_size: read::opt_int32(&b, "pageSize")?.unwrap_or(0),
                query_type: read::message(&b, "structuredQuery", read::structured_query)?
                    .map(QueryType::StructuredQuery),
                consistency_selector: read::opt_timestamp(&b, "readTime")?.map(S::ReadTime),
            })
        }
        Method::ListCollectionIds => {
            use proto::list_collection_ids_request::ConsistencySelector as S;
            let b = JsonObj::new(body, "", &["pageSize", "pageToken", "readTime"])?;
            RequestMessage::ListCollectionIds(proto::ListCollectionIdsRequest {
                parent,
                page_size: read::opt_int32(&b, "pageSize")?.unwrap_or(0),
                page_token: read::string(&b, "pageToken")?,
                consistency_selector: read::opt_timestamp(&b, "readTime")?.map(S::ReadTime),
            })
        }
        Method::GetDocument
        | Method::ListDocuments
        | Method::DeleteDocument
        | Method::Write
        | Method::Listen => {
            return Err(ClassifyError::Unsupported(format!(
                "{} has no JSON body mapping",
                call.method
            )));
        }
    })
}

/// A Firestore `Value` from its REST JSON, e.g. `{"integerValue": "5"}`.
/// `at` names it in errors.
pub fn value_from_json(v: &Json, at: &str) -> Result<proto::Value> {
    read::value(v, at)
}

/// A `Document` from its REST JSON.
pub fn document_from_json(v: &Json) -> Result<proto::Document> {
    read::document(v, "")
}

// ---------------------------------------------------------------------------
// Responses

/// The response message of one RPC, to render as REST JSON.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each variant is the response of the RPC it is named after
pub enum ResponseMessage {
    /// GetDocument, CreateDocument and UpdateDocument answer a document.
    Document(proto::Document),
    /// DeleteDocument and Rollback answer `google.protobuf.Empty`.
    Empty,
    List(proto::ListDocumentsResponse),
    BatchGet(proto::BatchGetDocumentsResponse),
    BeginTransaction(proto::BeginTransactionResponse),
    Commit(proto::CommitResponse),
    RunQuery(proto::RunQueryResponse),
    RunAggregationQuery(proto::RunAggregationQueryResponse),
    ListCollectionIds(proto::ListCollectionIdsResponse),
    BatchWrite(proto::BatchWriteResponse),
    PartitionQuery(proto::PartitionQueryResponse),
}

impl ResponseMessage {
    /// Decodes one response message of `method` from its protobuf bytes
    /// (one gRPC frame's payload).
    pub fn decode(method: Method, bytes: &[u8]) -> Result<ResponseMessage> {
        fn d<M: prost::Message + Default>(bytes: &[u8], message: &'static str) -> Result<M> {
            M::decode(bytes).map_err(|e| ClassifyError::Decode {
                message,
                detail: e.to_string(),
            })
        }
        Ok(match method {
            Method::GetDocument | Method::CreateDocument | Method::UpdateDocument => {
                Self::Document(d(bytes, "Document")?)
            }
            Method::DeleteDocument | Method::Rollback => Self::Empty,
            Method::ListDocuments => Self::List(d(bytes, "ListDocumentsResponse")?),
            Method::BatchGetDocuments => Self::BatchGet(d(bytes, "BatchGetDocumentsResponse")?),
            Method::BeginTransaction => {
                Self::BeginTransaction(d(bytes, "BeginTransactionResponse")?)
            }
            Method::Commit => Self::Commit(d(bytes, "CommitResponse")?),
            Method::RunQuery => Self::RunQuery(d(bytes, "RunQueryResponse")?),
            Method::RunAggregationQuery => {
                Self::RunAggregationQuery(d(bytes, "RunAggregationQueryResponse")?)
            }
            Method::ListCollectionIds => {
                Self::ListCollectionIds(d(bytes, "ListCollectionIdsResponse")?)
            }
            Method::BatchWrite => Self::BatchWrite(d(bytes, "BatchWriteResponse")?),
            Method::PartitionQuery => Self::PartitionQuery(d(bytes, "PartitionQueryResponse")?),
            Method::Write | Method::Listen => {
                return Err(ClassifyError::Unsupported(
                    "Listen and Write streams are only available over gRPC".into(),
                ));
            }
        })
    }

    /// The message as Google's REST front end renders it.
    pub fn to_json(&self) -> Json {
        match self {
            Self::Document(d) => render::document_json(d),
            Self::Empty => Json::Object(serde_json::Map::new()),
            Self::List(r) => render::list_documents_json(r),
            Self::BatchGet(r) => render::batch_get_json(r),
            Self::BeginTransaction(r) => render::begin_transaction_json(r),
            Self::Commit(r) => render::commit_json(r),
            Self::RunQuery(r) => render::run_query_json(r),
            Self::RunAggregationQuery(r) => render::run_aggregation_query_json(r),
            Self::ListCollectionIds(r) => render::list_collection_ids_json(r),
            Self::BatchWrite(r) => render::batch_write_json(r),
            Self::PartitionQuery(r) => render::partition_query_json(r),
        }
    }
}

/// The body of a server-streaming answer over REST: a JSON array whose
/// elements are written as they come, so the gateway can stream them.
/// Google writes `[`, the elements separated by `,` and a newline, and
/// `]`; clients (google-gax's REST fallback) parse the array
/// incrementally and accept any JSON whitespace between elements.
///
/// ```
/// # use latchkey_documents::rest::proto_json::JsonArrayStream;
/// let mut s = JsonArrayStream::new();
/// let mut body = s.open().to_vec();
/// body.extend(s.element(&serde_json::json!({"done": true})));
/// body.extend(s.close());
/// assert_eq!(body, b"[{\"done\":true}\n]");
/// ```
#[derive(Debug, Default)]
pub struct JsonArrayStream {
    started: bool,
}

impl JsonArrayStream {
    /// A stream that has written nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes that open the array.
    pub fn open(&self) -> &'static [u8] {
        b"["
    }

    /// One element, with the separator it needs before it.
    pub fn element(&mut self, v: &Json) -> Vec<u8> {
        let mut out = if self.started {
            b",\n".to_vec()
        } else {
            Vec::new()
        };
        self.started = true;
        // Serialising a `serde_json::Value` cannot fail: its keys are strings.
        out.extend(serde_json::to_vec(v).unwrap_or_default());
        out
    }

    /// The bytes that close the array.
    pub fn close(&self) -> &'static [u8] {
        if self.started { b"\n]" } else { b"]" }
    }
}

#[cfg(test)]
mod tests;
