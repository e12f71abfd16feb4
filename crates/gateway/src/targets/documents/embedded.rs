//! The embedded backend's side of the document targets: a decided call's
//! request message handed to [`DocumentStore`], and its answer, as gRPC
//! messages or as Google's REST JSON.
//!
//! The message executed is the message classified: gRPC callers' bytes
//! are decoded once here, after the classifier read the same bytes; REST
//! bodies were turned into the protobuf request before classification
//! (`latchkey_documents::rest::proto_json`), so both front ends decide on
//! exactly what the store then runs.

use bytes::Bytes;
use latchkey_docstore::{DocumentStore, Status, proto};
use latchkey_documents::Method;
use prost::Message;

/// A call's answer, typed.
pub(crate) enum Answer {
    /// GetDocument, CreateDocument, UpdateDocument.
    Document(proto::Document),
    /// DeleteDocument, Rollback.
    Empty,
    /// ListDocuments.
    List(proto::ListDocumentsResponse),
    /// BatchGetDocuments (a stream).
    BatchGet(Vec<proto::BatchGetDocumentsResponse>),
    /// BeginTransaction.
    Begin(proto::BeginTransactionResponse),
    /// Commit.
    Commit(proto::CommitResponse),
    /// RunQuery (a stream).
    Query(Vec<proto::RunQueryResponse>),
    /// RunAggregationQuery (a stream).
    Aggregation(Vec<proto::RunAggregationQueryResponse>),
    /// ListCollectionIds.
    CollectionIds(proto::ListCollectionIdsResponse),
    /// BatchWrite.
    BatchWrite(proto::BatchWriteResponse),
}

fn decode<M: Message + Default>(method: Method, message: &[u8]) -> Result<M, Status> {
    M::decode(message).map_err(|e| {
        Status::invalid(format!(
            "the {} request message does not decode: {e}",
            method.as_str()
        ))
    })
}

/// Runs one unary or server-streaming call on the store.
pub(crate) async fn call(
    store: &DocumentStore,
    method: Method,
    message: &[u8],
) -> Result<Answer, Status> {
    Ok(match method {
        Method::GetDocument => {
            Answer::Document(store.get_document(decode(method, message)?).await?)
        }
        Method::ListDocuments => {
            Answer::List(store.list_documents(decode(method, message)?).await?)
        }
        Method::CreateDocument => {
            Answer::Document(store.create_document(decode(method, message)?).await?)
        }
        Method::UpdateDocument => {
            Answer::Document(store.update_document(decode(method, message)?).await?)
        }
        Method::DeleteDocument => {
            store.delete_document(decode(method, message)?).await?;
            Answer::Empty
        }
        Method::BatchGetDocuments => {
            Answer::BatchGet(store.batch_get_documents(decode(method, message)?).await?)
        }
        Method::BeginTransaction => {
            Answer::Begin(store.begin_transaction(decode(method, message)?).await?)
        }
        Method::Commit => Answer::Commit(store.commit(decode(method, message)?).await?),
        Method::Rollback => {
            store.rollback(decode(method, message)?).await?;
            Answer::Empty
        }
        Method::RunQuery => Answer::Query(store.run_query(decode(method, message)?).await?),
        Method::RunAggregationQuery => Answer::Aggregation(
            store
                .run_aggregation_query(decode(method, message)?)
                .await?,
        ),
        Method::ListCollectionIds => {
            Answer::CollectionIds(store.list_collection_ids(decode(method, message)?).await?)
        }
        Method::BatchWrite => {
            Answer::BatchWrite(store.batch_write(decode(method, message)?).await?)
        }
        Method::PartitionQuery => {
            return Err(Status::unimplemented(
                "PartitionQuery is not served by Latchkey's embedded document store \
                 (it splits a query for parallel reads; run the query whole instead)",
            ));
        }
        Method::Write => {
            return Err(Status::unimplemented(
                "the Write stream is not served by Latchkey's embedded document store; \
                 the clients use Commit, which is",
            ));
        }
        Method::Listen => {
            return Err(Status::internal("Listen is a stream, not a unary call"));
        }
    })
}

impl Answer {
    /// The response messages, protobuf-encoded, in order.
    pub(crate) fn grpc_messages(&self) -> Vec<Vec<u8>> {
        match self {
            Self::Document(d) => vec![d.encode_to_vec()],
            Self::Empty => vec![().encode_to_vec()],
            Self::List(r) => vec![r.encode_to_vec()],
            Self::BatchGet(rs) => rs.iter().map(Message::encode_to_vec).collect(),
            Self::Begin(r) => vec![r.encode_to_vec()],
            Self::Commit(r) => vec![r.encode_to_vec()],
            Self::Query(rs) => rs.iter().map(Message::encode_to_vec).collect(),
            Self::Aggregation(rs) => rs.iter().map(Message::encode_to_vec).collect(),
            Self::CollectionIds(r) => vec![r.encode_to_vec()],
            Self::BatchWrite(r) => vec![r.encode_to_vec()],
        }
    }

    /// The new transaction the answer carries (BeginTransaction, or the
    /// first response of a read that began one), to bind to the caller.
    pub(crate) fn transaction(&self) -> Option<Bytes> {
        let tx = match self {
            Self::Begin(r) => Some(&r.transaction),
            Self::BatchGet(rs) => rs.iter().map(|r| &r.transaction).find(|t| !t.is_empty()),
            Self::Query(rs) => rs.iter().map(|r| &r.transaction).find(|t| !t.is_empty()),
            Self::Aggregation(rs) => rs.iter().map(|r| &r.transaction).find(|t| !t.is_empty()),
            _ => None,
        }?;
        (!tx.is_empty()).then(|| tx.clone())
    }
}

/// A decided call's result on the embedded store, ready to render.
pub(crate) struct Reply(pub(crate) Result<Answer, Status>);

impl Reply {
    /// The gRPC response: the messages, then `OK` trailers; or a
    /// trailers-only answer with the store's status.
    pub(crate) fn into_grpc(self) -> axum::response::Response {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        match self.0 {
            Err(status) => crate::pipeline::grpc_trailers_only(status.code, &status.message),
            Ok(answer) => {
                let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = answer
                    .grpc_messages()
                    .iter()
                    .map(|m| Ok(Frame::data(latchkey_documents::encode_frame(m))))
                    .collect();
                frames.push(Ok(Frame::trailers(crate::pipeline::grpc_trailers(
                    latchkey_documents::GrpcCode::Ok,
                    "",
                ))));
                let body =
                    axum::body::Body::new(StreamBody::new(futures_util::stream::iter(frames)));
                let mut resp = axum::response::Response::new(body);
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/grpc"),
                );
                resp
            }
        }
    }
}

impl super::Documents {
    /// Runs a decided unary (or server-streaming) call on the embedded
    /// store. A read runs while its decision records sync; the outcome is
    /// recorded (durably, for a write) before the answer is returned; a
    /// new transaction is bound to the caller before the caller can learn
    /// its id.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn embedded_unary(
        &self,
        store: &DocumentStore,
        cx: &crate::pipeline::RequestCx,
        principal: &latchkey_core::Principal,
        method: Method,
        message: &[u8],
        classified: &latchkey_documents::Classified,
        authorized: crate::pipeline::Authorized,
        rest: bool,
    ) -> Result<Reply, crate::pipeline::Refusal> {
        let intents = authorized.intents;
        let result = authorized
            .pending
            .alongside(&self.pipe, call(store, method, message))
            .await?;
        let (status, detail) = match &result {
            Ok(_) if rest => ("200".to_owned(), None),
            Ok(_) => ("OK".to_owned(), None),
            Err(s) if rest => (
                s.code.http_status().as_str().to_owned(),
                Some(s.message.as_str()),
            ),
            Err(s) => (s.code.name().to_owned(), Some(s.message.as_str())),
        };
        self.record_outcome(
            method,
            &cx.request_id,
            principal,
            &intents,
            &status,
            detail,
            None,
        )
        .await?;
        if let Ok(answer) = &result {
            if let Some(tx) = answer.transaction() {
                self.bind_transaction(tx, principal, self.pipe.clock.unix_millis());
            }
            if matches!(method, Method::Commit | Method::Rollback)
                && let Some(tx) = &classified.transaction
            {
                self.end_transaction(tx);
            }
        }
        Ok(Reply(result))
    }
}

impl Answer {
    /// The answer as Google's REST front end writes it: one JSON object,
    /// or for the streaming verbs (`:batchGet`, `:runQuery`,
    /// `:runAggregationQuery`) a JSON array of them.
    fn rest_json(self) -> Vec<u8> {
        use latchkey_documents::rest::proto_json::{JsonArrayStream, ResponseMessage as R};
        let array = |items: Vec<R>| {
            let mut stream = JsonArrayStream::new();
            let mut out = stream.open().to_vec();
            for item in &items {
                out.extend(stream.element(&item.to_json()));
            }
            out.extend(stream.close());
            out
        };
        let one = |r: R| serde_json::to_vec(&r.to_json()).unwrap_or_default();
        match self {
            Self::Document(d) => one(R::Document(d)),
            Self::Empty => one(R::Empty),
            Self::List(r) => one(R::List(r)),
            Self::BatchGet(rs) => array(rs.into_iter().map(R::BatchGet).collect()),
            Self::Begin(r) => one(R::BeginTransaction(r)),
            Self::Commit(r) => one(R::Commit(r)),
            Self::Query(rs) => array(rs.into_iter().map(R::RunQuery).collect()),
            Self::Aggregation(rs) => array(rs.into_iter().map(R::RunAggregationQuery).collect()),
            Self::CollectionIds(r) => one(R::ListCollectionIds(r)),
            Self::BatchWrite(r) => one(R::BatchWrite(r)),
        }
    }
}

impl Reply {
    /// The REST response: the answer's JSON, or Google's error JSON with
    /// the HTTP status of the store's gRPC code.
    pub(crate) fn into_rest(self) -> axum::response::Response {
        let (status, body) = match self.0 {
            Ok(answer) => (http::StatusCode::OK, answer.rest_json()),
            Err(s) => (
                s.code.http_status(),
                latchkey_documents::rest_error_body(s.code, &s.message),
            ),
        };
        let mut resp = axum::response::Response::new(axum::body::Body::from(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        resp
    }
}
