//! [`DocumentStore`]: one method per Firestore RPC over the state store's
//! [`DocumentRows`].
//!
//! Reads see the store's current state: Latchkey keeps no history, so a
//! `read_time` is honoured only when nothing changed after it (otherwise
//! `FAILED_PRECONDITION`, saying so). Commits evaluate preconditions and
//! transforms against rows they read, then hand the store one atomic
//! commit whose checks say "every row is still as read" — a commit that
//! lost a race is evaluated again (or, in a transaction, answers
//! `ABORTED`), so correctness rests on the store's transaction, not on
//! anything held in memory.
//!
//! Transactions are optimistic: a read-write transaction remembers the
//! version of every document it read and the rows every query of it read,
//! and its commit checks them all again inside the store's transaction (a
//! changed document or a phantom in a queried collection answers
//! `ABORTED`, which the clients retry). Writes outside transactions do not
//! wait for transactions that read the same documents; those transactions
//! abort instead, which is the same serial outcome the clients see from
//! Firestore's locks.
//!
//! Answers follow Google's emulator where it was asked (the tests say
//! which): wording of refusals, the shape of streamed responses (a
//! transaction a read began comes first, in a response of its own; the
//! last `RunQuery` response is `done`), and what is accepted.

mod convert;
mod export;
mod limits;
mod listen;
mod transactions;
mod transforms;
mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use latchkey_core::SharedClock;
use latchkey_documents::{DatabaseName, DocPath, GrpcCode};
use latchkey_store::{
    DocumentRows, RowCheck, RowCommitError, RowExpect, RowScan, RowSelection, RowWrite, ScanCheck,
    prefix_end,
};
use tokio::sync::broadcast;

use self::convert::{
    Mask, Stored, from_row, key, store_status, subtree, timestamp, to_proto, to_row,
};
use self::transactions::Transactions;
use crate::Status;
use crate::proto::{self, Document, TransactionOptions, WriteResult};
use crate::query::{self, Scan};

/// How many committed changes a slow `Listen` stream may fall behind
/// before it re-reads its targets instead.
const CHANGE_BUFFER: usize = 1024;
/// How often a commit that lost a race (outside a transaction) is
/// evaluated again before it answers `ABORTED`.
const COMMIT_ATTEMPTS: usize = 16;
/// Rows per page of an export and per transaction of an import.
const EXPORT_PAGE: u32 = 500;

/// Firestore's answer when a transaction's reads went stale.
const CONTENTION: &str = "Transaction was aborted: the documents it read were changed by \
                          another write. Please try again.";

/// What one commit changed, for `Listen` streams on this node. (Several
/// nodes will need the store's own notification, as revocations have;
/// until then each node sees its own commits.)
#[derive(Debug)]
pub(crate) struct Committed {
    /// `projects/{p}/databases/{d}`.
    pub(crate) database: String,
    /// The commit time, in microseconds.
    pub(crate) commit_time: i64,
    /// Each changed document and its new state (`None`: deleted).
    pub(crate) changes: Vec<(DocPath, Option<Stored>)>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    rows: Arc<dyn DocumentRows>,
    clock: SharedClock,
    /// The latest commit time handed out (microseconds); commit times only
    /// grow, and a read at a time before it may miss a change.
    last_commit: AtomicI64,
    transactions: Transactions,
    changes: broadcast::Sender<Arc<Committed>>,
}

/// The embedded document store. Cheap to clone; every clone is the same
/// store.
#[derive(Debug, Clone)]
pub struct DocumentStore {
    inner: Arc<Inner>,
}

/// How a read picks its snapshot.
#[derive(Debug, Clone)]
enum Consistency {
    /// The current state.
    Now,
    /// Inside this transaction.
    Transaction(Bytes),
    /// Begin a transaction with these options and read inside it.
    NewTransaction(TransactionOptions),
    /// At this time (microseconds).
    ReadTime(i64),
}

/// What a read resolved its consistency to.
#[derive(Debug)]
struct ReadCtx {
    /// The transaction the read records versions in, if any.
    transaction: Option<Bytes>,
    /// A transaction the read began, for its first response.
    began: Option<Bytes>,
    /// The time the read must not predate changes after (for `read_time`).
    read_time: Option<i64>,
}

impl DocumentStore {
    /// A store over `rows`, taking commit times from `clock`.
    pub fn new(rows: Arc<dyn DocumentRows>, clock: SharedClock) -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        // Commits before this process started are invisible to
        // `last_commit`; starting it at now refuses every older read time.
        let start = micros_of(&clock);
        Self {
            inner: Arc::new(Inner {
                rows,
                clock,
                last_commit: AtomicI64::new(start),
                transactions: Transactions::default(),
                changes,
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.unix_millis()
    }

    /// A time for a read's responses: at least every commit handed out.
    fn read_time(&self) -> i64 {
        micros_of(&self.inner.clock).max(self.inner.last_commit.load(Ordering::SeqCst))
    }

    /// The next commit time: the clock, but always after the previous one
    /// and after `after` (the newest update time the commit overwrites).
    fn next_commit_time(&self, after: i64) -> i64 {
        let now = micros_of(&self.inner.clock);
        let mut prev = self.inner.last_commit.load(Ordering::SeqCst);
        loop {
            let next = now.max(prev + 1).max(after.saturating_add(1));
            match self.inner.last_commit.compare_exchange(
                prev,
                next,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    // ---- reads ----------------------------------------------------------

    /// Resolves a read's consistency selector: begins a transaction for
    /// `new_transaction`, refuses a `read_time` Latchkey cannot honour.
    fn begin_read(&self, database: &DatabaseName, c: Consistency) -> Result<ReadCtx, Status> {
        match c {
            Consistency::Now => Ok(ReadCtx {
                transaction: None,
                began: None,
                read_time: None,
            }),
            Consistency::Transaction(id) => {
                // Touch it now: an unknown or expired one fails before reading.
                let read_time =
                    self.inner
                        .transactions
                        .touch(&id, &database.to_string(), self.now_ms())?;
                Ok(ReadCtx {
                    transaction: Some(id),
                    began: None,
                    read_time,
                })
            }
            Consistency::NewTransaction(options) => {
                let id = self.begin(database, &options)?;
                Ok(ReadCtx {
                    transaction: Some(id.clone()),
                    began: Some(id),
                    read_time: None,
                })
            }
            Consistency::ReadTime(t) => {
                self.check_read_time(t)?;
                Ok(ReadCtx {
                    transaction: None,
                    began: None,
                    read_time: Some(t),
                })
            }
        }
    }

    fn check_read_time(&self, t: i64) -> Result<(), Status> {
        if t < self.inner.last_commit.load(Ordering::SeqCst) {
            return Err(no_history());
        }
        Ok(())
    }

    /// Records the versions a read saw in its transaction, and refuses a
    /// `read_time` read that saw a document changed after it.
    fn finish_read(
        &self,
        database: &DatabaseName,
        ctx: &ReadCtx,
        seen: impl IntoIterator<Item = (Vec<u8>, Option<i64>)>,
        scan: Option<ScanCheck>,
    ) -> Result<(), Status> {
        let seen: Vec<(Vec<u8>, Option<i64>)> = seen.into_iter().collect();
        if let Some(t) = ctx.read_time {
            if seen.iter().any(|(_, v)| v.is_some_and(|u| u > t)) {
                return Err(no_history());
            }
            self.check_read_time(t)?;
        }
        if let Some(id) = &ctx.transaction {
            self.inner.transactions.record_reads(
                id,
                &database.to_string(),
                self.now_ms(),
                seen,
                scan,
            )?;
        }
        Ok(())
    }

    async fn get_stored(
        &self,
        database: &DatabaseName,
        paths: &[DocPath],
    ) -> Result<Vec<Option<Stored>>, Status> {
        let keys: Vec<Vec<u8>> = paths.iter().map(key).collect();
        let rows = self
            .inner
            .rows
            .get_rows(&database.to_string(), &keys)
            .await
            .map_err(store_status)?;
        rows.iter()
            .map(|r| r.as_ref().map(from_row).transpose())
            .collect()
    }

    /// `GetDocument`.
    pub async fn get_document(&self, req: proto::GetDocumentRequest) -> Result<Document, Status> {
        use proto::get_document_request::ConsistencySelector as C;
        let (database, path) = convert::named_document(&req.name)?;
        let mask = Mask::parse(req.mask.as_ref())?;
        let c = match req.consistency_selector {
            None => Consistency::Now,
            Some(C::Transaction(t)) => Consistency::Transaction(t),
            Some(C::ReadTime(t)) => Consistency::ReadTime(convert::micros(&t)?),
        };
        let ctx = self.begin_read(&database, c)?;
        let doc = self
            .get_stored(&database, std::slice::from_ref(&path))
            .await?
            .pop()
            .flatten();
        self.finish_read(
            &database,
            &ctx,
            [(key(&path), doc.as_ref().map(|d| d.update_time))],
            None,
        )?;
        match doc {
            Some(d) => Ok(to_proto(&database, &d, mask.as_ref())),
            // The emulator's wording (confirmed there).
            None => Err(Status::not_found(format!(
                "Document ({}) not found.",
                database.resource_name(&path)
            ))),
        }
    }

    /// `BatchGetDocuments`: one response per requested name (`found` or
    /// `missing`), in request order, after a response carrying the
    /// transaction the call began, if it began one.
    pub async fn batch_get_documents(
        &self,
        req: proto::BatchGetDocumentsRequest,
    ) -> Result<Vec<proto::BatchGetDocumentsResponse>, Status> {
        use proto::batch_get_documents_request::ConsistencySelector as C;
        use proto::batch_get_documents_response::Result as R;
        let database = convert::database(&req.database)?;
        let mask = Mask::parse(req.mask.as_ref())?;
        let paths: Vec<DocPath> = req
            .documents
            .iter()
            .map(|n| convert::document_path(&database, n))
            .collect::<Result<_, _>>()?;
        let c = match req.consistency_selector {
            None => Consistency::Now,
            Some(C::Transaction(t)) => Consistency::Transaction(t),
            Some(C::NewTransaction(o)) => Consistency::NewTransaction(o),
            Some(C::ReadTime(t)) => Consistency::ReadTime(convert::micros(&t)?),
        };
        let ctx = self.begin_read(&database, c)?;
        let docs = self.get_stored(&database, &paths).await?;
        self.finish_read(
            &database,
            &ctx,
            paths
                .iter()
                .zip(&docs)
                .map(|(p, d)| (key(p), d.as_ref().map(|d| d.update_time))),
            None,
        )?;
        let read_time = Some(timestamp(ctx.read_time.unwrap_or_else(|| self.read_time())));
        let mut out: Vec<proto::BatchGetDocumentsResponse> = paths
            .iter()
            .zip(docs)
            .map(|(p, d)| proto::BatchGetDocumentsResponse {
                transaction: Bytes::new(),
                read_time,
                result: Some(match d {
                    Some(d) => R::Found(to_proto(&database, &d, mask.as_ref())),
                    None => R::Missing(database.resource_name(p)),
                }),
            })
            .collect();
        if let Some(id) = ctx.began {
            // First, in a response of its own (as the emulator sends it).
            out.insert(
                0,
                proto::BatchGetDocumentsResponse {
                    transaction: id,
                    read_time: None,
                    result: None,
                },
            );
        }
        Ok(out)
    }

    /// The documents a query's scan selects, as full documents, and the
    /// rows it read (for a transaction's commit to check again).
    async fn candidates(
        &self,
        database: &DatabaseName,
        scan: &Scan,
    ) -> Result<(Vec<Stored>, ScanCheck), Status> {
        let selection = match scan {
            Scan::Collection { collection } => RowSelection::Children {
                parent: key(collection),
            },
            Scan::Descendants {
                under,
                collection_id: Some(id),
            } => RowSelection::Group {
                collection_id: id.clone(),
                range: subtree(under),
            },
            Scan::Descendants {
                under,
                collection_id: None,
            }
            | Scan::Children { under } => RowSelection::Range(subtree(under)),
        };
        let rows = self
            .inner
            .rows
            .scan_rows(
                &database.to_string(),
                &RowScan {
                    selection: selection.clone(),
                    after: None,
                    limit: None,
                },
            )
            .await
            .map_err(store_status)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = from_row(r)?;
            // A children scan reads the subtree; only one level down counts.
            if scan.contains(&d.path) {
                out.push(d);
            }
        }
        let read = ScanCheck {
            selection,
            rows: rows.into_iter().map(|r| (r.path, r.update_time)).collect(),
        };
        Ok((out, read))
    }

    /// Runs a structured query under `parent`: its documents, with the
    /// versions of every candidate (for a transaction's read set).
    pub(crate) async fn evaluate(
        &self,
        database: &DatabaseName,
        parent: &DocPath,
        q: &proto::StructuredQuery,
    ) -> Result<(Vec<Document>, Vec<(Vec<u8>, Option<i64>)>, ScanCheck), Status> {
        let scan = query::plan_in(database, parent, q)?;
        let (stored, read) = self.candidates(database, &scan).await?;
        let versions = stored
            .iter()
            .map(|d| (key(&d.path), Some(d.update_time)))
            .collect();
        let docs = stored.iter().map(|d| to_proto(database, d, None)).collect();
        Ok((query::run(q, docs)?, versions, read))
    }

    /// `RunQuery`: one response per document, each with the read time;
    /// an empty result still answers one response carrying the read time
    /// (and the transaction, if the query began one).
    pub async fn run_query(
        &self,
        req: proto::RunQueryRequest,
    ) -> Result<Vec<proto::RunQueryResponse>, Status> {
        use proto::run_query_request::{ConsistencySelector as C, QueryType};
        if req.explain_options.is_some() {
            return Err(Status::unimplemented(
                "query explain is not supported by Latchkey's embedded document store",
            ));
        }
        let (database, parent) = convert::parent_path(&req.parent)?;
        let Some(QueryType::StructuredQuery(q)) = req.query_type else {
            return Err(Status::invalid("a query is required"));
        };
        let c = match req.consistency_selector {
            None => Consistency::Now,
            Some(C::Transaction(t)) => Consistency::Transaction(t),
            Some(C::NewTransaction(o)) => Consistency::NewTransaction(o),
            Some(C::ReadTime(t)) => Consistency::ReadTime(convert::micros(&t)?),
        };
        let ctx = self.begin_read(&database, c)?;
        let (docs, versions, read) = self.evaluate(&database, &parent, &q).await?;
        self.finish_read(&database, &ctx, versions, Some(read))?;
        let read_time = Some(timestamp(ctx.read_time.unwrap_or_else(|| self.read_time())));
        let mut out: Vec<proto::RunQueryResponse> = docs
            .into_iter()
            .map(|d| proto::RunQueryResponse {
                document: Some(d),
                read_time,
                ..Default::default()
            })
            .collect();
        if out.is_empty() {
            out.push(proto::RunQueryResponse {
                read_time,
                ..Default::default()
            });
        }
        // The emulator marks the last response `done` (confirmed there).
        if let Some(last) = out.last_mut() {
            last.continuation_selector =
                Some(proto::run_query_response::ContinuationSelector::Done(true));
        }
        // A transaction the query began comes first, in a response of its
        // own (as the emulator sends it).
        if let Some(id) = ctx.began {
            out.insert(
                0,
                proto::RunQueryResponse {
                    transaction: id,
                    ..Default::default()
                },
            );
        }
        Ok(out)
    }

    /// `RunAggregationQuery`: one response with the aggregates (after one
    /// carrying the transaction the call began, if it began one).
    pub async fn run_aggregation_query(
        &self,
        req: proto::RunAggregationQueryRequest,
    ) -> Result<Vec<proto::RunAggregationQueryResponse>, Status> {
        use proto::run_aggregation_query_request::{ConsistencySelector as C, QueryType};
        use proto::structured_aggregation_query::QueryType as Inner;
        if req.explain_options.is_some() {
            return Err(Status::unimplemented(
                "query explain is not supported by Latchkey's embedded document store",
            ));
        }
        let (database, parent) = convert::parent_path(&req.parent)?;
        let Some(QueryType::StructuredAggregationQuery(agg)) = req.query_type else {
            return Err(Status::invalid("an aggregation query is required"));
        };
        let Some(Inner::StructuredQuery(q)) = &agg.query_type else {
            return Err(Status::invalid("an aggregation needs a structured query"));
        };
        let c = match req.consistency_selector {
            None => Consistency::Now,
            Some(C::Transaction(t)) => Consistency::Transaction(t),
            Some(C::NewTransaction(o)) => Consistency::NewTransaction(o),
            Some(C::ReadTime(t)) => Consistency::ReadTime(convert::micros(&t)?),
        };
        let ctx = self.begin_read(&database, c)?;
        let scan = query::plan_in(&database, &parent, q)?;
        let (stored, read) = self.candidates(&database, &scan).await?;
        self.finish_read(
            &database,
            &ctx,
            stored.iter().map(|d| (key(&d.path), Some(d.update_time))),
            Some(read),
        )?;
        let docs = stored
            .iter()
            .map(|d| to_proto(&database, d, None))
            .collect();
        let result = query::aggregate(&agg, docs)?;
        let read_time = Some(timestamp(ctx.read_time.unwrap_or_else(|| self.read_time())));
        let mut out = Vec::with_capacity(2);
        // A transaction the call began comes first, in a response of its
        // own (as the emulator sends it; confirmed there).
        if let Some(id) = ctx.began {
            out.push(proto::RunAggregationQueryResponse {
                transaction: id,
                ..Default::default()
            });
        }
        out.push(proto::RunAggregationQueryResponse {
            result: Some(result),
            transaction: Bytes::new(),
            read_time,
            explain_metrics: None,
        });
        Ok(out)
    }

    /// The distinct ids one level below `under` of every row in its
    /// subtree, ascending, after `after`: under a document (or the root)
    /// the ids of its collections that hold any document at any depth;
    /// under a collection the ids of its documents that exist or have
    /// descendants. A skip scan with one probe per id.
    async fn child_ids(
        &self,
        database: &DatabaseName,
        under: &DocPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Status> {
        let db = database.to_string();
        let depth = under.segments().len();
        let mut range = subtree(under);
        if let Some(after) = after {
            match skip_past(under, after)? {
                Some(start) => range.start = start,
                None => return Ok(Vec::new()),
            }
        }
        let mut ids = Vec::new();
        while ids.len() < limit {
            let Some(found) = self
                .inner
                .rows
                .first_path_in(&db, &range)
                .await
                .map_err(store_status)?
            else {
                break;
            };
            let segments = crate::encoding::decode_path(&found).map_err(|e| {
                tracing::warn!(error = %e, "unreadable document key");
                Status::internal("the document store holds an unreadable row")
            })?;
            let Some(id) = segments.get(depth).cloned() else {
                break;
            };
            let next = skip_past(under, &id)?;
            ids.push(id);
            match next {
                Some(start) => range.start = start,
                None => break,
            }
        }
        Ok(ids)
    }

    /// `ListCollectionIds`.
    pub async fn list_collection_ids(
        &self,
        req: proto::ListCollectionIdsRequest,
    ) -> Result<proto::ListCollectionIdsResponse, Status> {
        use proto::list_collection_ids_request::ConsistencySelector as C;
        let (database, parent) = convert::parent_path(&req.parent)?;
        if let Some(C::ReadTime(t)) = &req.consistency_selector {
            self.check_read_time(convert::micros(t)?)?;
        }
        let page = page_size(req.page_size)?;
        let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let mut ids = self
            .child_ids(&database, &parent, after, page.saturating_add(1))
            .await?;
        let next_page_token = if ids.len() > page {
            ids.truncate(page);
            ids.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        Ok(proto::ListCollectionIdsResponse {
            collection_ids: ids,
            next_page_token,
        })
    }

    /// `ListDocuments`: by name; with `show_missing`, documents that do not
    /// exist but have subcollections are listed too (name only, no times).
    pub async fn list_documents(
        &self,
        req: proto::ListDocumentsRequest,
    ) -> Result<proto::ListDocumentsResponse, Status> {
        use proto::list_documents_request::ConsistencySelector as C;
        let (database, parent) = convert::parent_path(&req.parent)?;
        if !(req.order_by.is_empty()
            || req.order_by == "__name__"
            || req.order_by == "__name__ asc")
        {
            return Err(Status::unimplemented(
                "Latchkey's embedded document store lists documents only by name (`order_by` \
                 `__name__`); use a query to order by a field",
            ));
        }
        let mask = Mask::parse(req.mask.as_ref())?;
        let c = match req.consistency_selector {
            None => Consistency::Now,
            Some(C::Transaction(t)) => Consistency::Transaction(t),
            Some(C::ReadTime(t)) => Consistency::ReadTime(convert::micros(&t)?),
        };
        let ctx = self.begin_read(&database, c)?;
        let page = page_size(req.page_size)?;
        if req.collection_id.is_empty() {
            // Every collection directly under the parent (as the emulator
            // lists them: by name). The page token is `collection/id`.
            if req.show_missing {
                return Err(Status::invalid(
                    "show_missing needs a collection id in Latchkey's embedded document store",
                ));
            }
            let after = match req.page_token.as_str() {
                "" => None,
                t => {
                    let p = DocPath::parse(t).map_err(bad_token)?;
                    let full = DocPath::from_segments(
                        parent
                            .segments()
                            .iter()
                            .chain(p.segments())
                            .cloned()
                            .collect(),
                    )
                    .map_err(bad_token)?;
                    Some(key(&full))
                }
            };
            let depth = parent.segments().len() + 2;
            let rows = self
                .inner
                .rows
                .scan_rows(
                    &database.to_string(),
                    &RowScan {
                        selection: RowSelection::Range(subtree(&parent)),
                        after,
                        limit: None,
                    },
                )
                .await
                .map_err(store_status)?;
            let mut listed = Vec::new();
            for r in &rows {
                let d = from_row(r)?;
                if d.path.segments().len() == depth {
                    listed.push(d);
                    if listed.len() > page {
                        break;
                    }
                }
            }
            let next_page_token = if listed.len() > page {
                listed.truncate(page);
                listed
                    .last()
                    .map(|d| d.path.segments()[depth - 2..].join("/"))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            self.finish_read(
                &database,
                &ctx,
                listed.iter().map(|d| (key(&d.path), Some(d.update_time))),
                None,
            )?;
            return Ok(proto::ListDocumentsResponse {
                documents: listed
                    .iter()
                    .map(|d| to_proto(&database, d, mask.as_ref()))
                    .collect(),
                next_page_token,
            });
        }
        let collection = parent
            .child(&req.collection_id)
            .map_err(|e| Status::invalid(e.to_string()))?;
        let token = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let mut listed: Vec<(DocPath, Option<Stored>)> = if req.show_missing {
            self.list_with_missing(&database, &collection, token, page.saturating_add(1))
                .await?
        } else {
            let after = match token {
                Some(t) => Some(key(&collection.child(t).map_err(bad_token)?)),
                None => None,
            };
            let rows = self
                .inner
                .rows
                .scan_rows(
                    &database.to_string(),
                    &RowScan {
                        selection: RowSelection::Children {
                            parent: key(&collection),
                        },
                        after,
                        limit: u32::try_from(page.saturating_add(1)).ok(),
                    },
                )
                .await
                .map_err(store_status)?;
            rows.iter()
                .map(|r| from_row(r).map(|d| (d.path.clone(), Some(d))))
                .collect::<Result<_, _>>()?
        };
        let next_page_token = if listed.len() > page {
            listed.truncate(page);
            listed
                .last()
                .and_then(|(p, _)| p.last())
                .map(str::to_owned)
                .unwrap_or_default()
        } else {
            String::new()
        };
        self.finish_read(
            &database,
            &ctx,
            listed
                .iter()
                .map(|(p, d)| (key(p), d.as_ref().map(|d| d.update_time))),
            None,
        )?;
        let documents = listed
            .into_iter()
            .map(|(p, d)| match d {
                Some(d) => to_proto(&database, &d, mask.as_ref()),
                None => Document {
                    name: database.resource_name(&p),
                    ..Default::default()
                },
            })
            .collect();
        Ok(proto::ListDocumentsResponse {
            documents,
            next_page_token,
        })
    }

    /// Every document in `collection` that exists or has descendants,
    /// after `after`, with its row if it exists.
    async fn list_with_missing(
        &self,
        database: &DatabaseName,
        collection: &DocPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(DocPath, Option<Stored>)>, Status> {
        let ids = self.child_ids(database, collection, after, limit).await?;
        let paths = ids
            .iter()
            .map(|id| {
                collection.child(id).map_err(|e| {
                    tracing::warn!(error = %e, "unreadable document key");
                    Status::internal("the document store holds an unreadable row")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let docs = self.get_stored(database, &paths).await?;
        Ok(paths.into_iter().zip(docs).collect())
    }

    // ---- writes ---------------------------------------------------------

    /// Applies `writes` atomically at one commit time. `tx` is the
    /// finished transaction whose reads must still hold.
    async fn commit_writes(
        &self,
        database: &DatabaseName,
        writes: &[proto::Write],
        tx: Option<&transactions::Finished>,
    ) -> Result<(i64, Vec<Applied>), Status> {
        if writes.len() > limits::MAX_WRITES {
            return Err(Status::invalid(format!(
                "maximum {} writes allowed per request",
                limits::MAX_WRITES
            )));
        }
        let parsed: Vec<writes::Parsed> = writes
            .iter()
            .map(|w| writes::parse(database, w))
            .collect::<Result<_, _>>()?;
        let (time, outcomes) = self.apply_parsed(database, &parsed, tx, false).await?;
        // Atomic mode answers the first failure as the call's error, so
        // every outcome here is a success.
        let applied = outcomes.into_iter().collect::<Result<_, _>>()?;
        Ok((time, applied))
    }

    /// Evaluates `parsed` in order against the documents' current rows and
    /// commits the result in one store commit whose checks say "every row
    /// is as read" (and, in a transaction, "as the transaction read it").
    /// Atomic (`independent` false): the first failing write fails the
    /// call. Independent (BatchWrite): a failing write gets its status and
    /// the others still apply. A commit that lost a race is evaluated
    /// again; in a transaction it answers ABORTED instead.
    async fn apply_parsed(
        &self,
        database: &DatabaseName,
        parsed: &[writes::Parsed],
        tx: Option<&transactions::Finished>,
        independent: bool,
    ) -> Result<(i64, Vec<Result<Applied, Status>>), Status> {
        let db = database.to_string();
        let mut seen = HashSet::new();
        let mut paths = Vec::new();
        for w in parsed {
            if seen.insert(w.key.clone()) {
                paths.push(w.path.clone());
            }
        }
        for _ in 0..COMMIT_ATTEMPTS {
            let current = self.get_stored(database, &paths).await?;
            let mut state: HashMap<Vec<u8>, Option<Stored>> = HashMap::new();
            let mut checks = Vec::new();
            let mut newest = i64::MIN;
            for (p, d) in paths.iter().zip(current) {
                let k = key(p);
                checks.push(RowCheck {
                    path: k.clone(),
                    expect: match &d {
                        None => RowExpect::Absent,
                        Some(d) => {
                            newest = newest.max(d.update_time);
                            RowExpect::UpdateTime(d.update_time)
                        }
                    },
                });
                state.insert(k, d);
            }
            if let Some(tx) = tx {
                for (k, version) in &tx.reads {
                    match state.get(k) {
                        Some(now) => {
                            if now.as_ref().map(|d| d.update_time) != *version {
                                return Err(Status::aborted(CONTENTION));
                            }
                        }
                        None => checks.push(RowCheck {
                            path: k.clone(),
                            expect: match version {
                                None => RowExpect::Absent,
                                Some(t) => RowExpect::UpdateTime(*t),
                            },
                        }),
                    }
                }
            }
            // INVARIANT: a document's update time only grows, even if the
            // clock stepped back (or another node's clock runs ahead).
            let commit_time = self.next_commit_time(newest);
            let mut outcomes = Vec::with_capacity(parsed.len());
            let mut changed: Vec<Vec<u8>> = Vec::new();
            let original = state.clone();
            for w in parsed {
                let cur = state.get(&w.key).and_then(Option::as_ref);
                let outcome = writes::check_precondition(database, w, cur)
                    .and_then(|()| writes::apply(database, w, cur, commit_time));
                match outcome {
                    Ok((next, result)) => {
                        if !changed.contains(&w.key) {
                            changed.push(w.key.clone());
                        }
                        outcomes.push(Ok(Applied {
                            result,
                            doc: next.clone(),
                        }));
                        state.insert(w.key.clone(), next);
                    }
                    Err(e) if independent => outcomes.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
            let mut row_writes = Vec::new();
            let mut events = Vec::new();
            for k in &changed {
                let after = state.get(k).cloned().flatten();
                let before = original.get(k).cloned().flatten();
                if after == before {
                    continue;
                }
                match &after {
                    Some(d) => {
                        row_writes.push(RowWrite::Put(to_row(database, d)));
                        events.push((d.path.clone(), after.clone()));
                    }
                    None => {
                        row_writes.push(RowWrite::Delete(k.clone()));
                        if let Some(b) = before {
                            events.push((b.path, None));
                        }
                    }
                }
            }
            let scans = tx.map_or(&[][..], |t| &t.scans[..]);
            match self
                .inner
                .rows
                .commit_rows(&db, &checks, scans, &row_writes)
                .await
            {
                Ok(()) => {
                    if !events.is_empty() {
                        // No receiver (no `Listen` stream) is not an error.
                        let _ = self.inner.changes.send(Arc::new(Committed {
                            database: db,
                            commit_time,
                            changes: events,
                        }));
                    }
                    return Ok((commit_time, outcomes));
                }
                Err(RowCommitError::Conflict { .. }) if tx.is_some() => {
                    return Err(Status::aborted(CONTENTION));
                }
                Err(RowCommitError::Conflict { .. }) => continue,
                Err(RowCommitError::Store(e)) => return Err(store_status(e)),
            }
        }
        Err(Status::aborted(
            "Too much contention on these documents. Please try again.",
        ))
    }

    /// `Commit`: every write at one commit time, or none.
    pub async fn commit(&self, req: proto::CommitRequest) -> Result<proto::CommitResponse, Status> {
        let database = convert::database(&req.database)?;
        let tx = if req.transaction.is_empty() {
            None
        } else {
            let finished =
                self.inner
                    .transactions
                    .finish(&req.transaction, &req.database, self.now_ms())?;
            if finished.read_only && !req.writes.is_empty() {
                return Err(Status::invalid(
                    "Cannot modify entities in a read-only transaction.",
                ));
            }
            Some(finished)
        };
        let (commit_time, applied) = self
            .commit_writes(&database, &req.writes, tx.as_ref())
            .await?;
        let write_results = applied.into_iter().map(|a| a.result).collect();
        Ok(proto::CommitResponse {
            write_results,
            commit_time: Some(timestamp(commit_time)),
        })
    }

    /// `BatchWrite`: each write applied on its own, with a status each.
    pub async fn batch_write(
        &self,
        req: proto::BatchWriteRequest,
    ) -> Result<proto::BatchWriteResponse, Status> {
        let database = convert::database(&req.database)?;
        if req.writes.len() > limits::MAX_WRITES {
            return Err(Status::invalid(format!(
                "maximum {} writes allowed per request",
                limits::MAX_WRITES
            )));
        }
        let mut seen = HashSet::new();
        for w in &req.writes {
            if let Ok(p) = writes::parse(&database, w)
                && !seen.insert(p.key)
            {
                // The emulator refuses the whole request (confirmed there).
                return Err(Status::invalid(
                    "the same document cannot be written more than once in a single request",
                ));
            }
        }
        // Each write on its own, all evaluated against one read and
        // committed together: one disk sync for the batch, not one each.
        let mut outcomes: Vec<Option<Result<WriteResult, Status>>> = Vec::new();
        let mut parsed = Vec::new();
        let mut slots = Vec::new();
        for w in &req.writes {
            match writes::parse(&database, w) {
                Ok(p) => {
                    slots.push(outcomes.len());
                    outcomes.push(None);
                    parsed.push(p);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let (_, applied) = self.apply_parsed(&database, &parsed, None, true).await?;
        for (slot, a) in slots.into_iter().zip(applied) {
            outcomes[slot] = Some(a.map(|a| a.result));
        }
        let mut write_results = Vec::with_capacity(outcomes.len());
        let mut status = Vec::with_capacity(outcomes.len());
        for outcome in outcomes.into_iter().flatten() {
            match outcome {
                Ok(r) => {
                    write_results.push(r);
                    status.push(rpc_status(GrpcCode::Ok, ""));
                }
                Err(e) => {
                    write_results.push(WriteResult::default());
                    status.push(rpc_status(e.code, &e.message));
                }
            }
        }
        Ok(proto::BatchWriteResponse {
            write_results,
            status,
        })
    }

    /// `CreateDocument` (REST `POST .../{collection}`): fails with
    /// ALREADY_EXISTS if the document exists; an empty id is chosen here.
    pub async fn create_document(
        &self,
        req: proto::CreateDocumentRequest,
    ) -> Result<Document, Status> {
        let (database, parent) = convert::parent_path(&req.parent)?;
        let id = if req.document_id.is_empty() {
            auto_id()?
        } else {
            req.document_id.clone()
        };
        let path = parent
            .child(&req.collection_id)
            .and_then(|c| c.child(&id))
            .map_err(|e| Status::invalid(e.to_string()))?;
        let mask = Mask::parse(req.mask.as_ref())?;
        let fields = req.document.map(|d| d.fields).unwrap_or_default();
        let write = proto::Write {
            operation: Some(proto::write::Operation::Update(Document {
                name: database.resource_name(&path),
                fields,
                ..Default::default()
            })),
            current_document: Some(proto::Precondition {
                condition_type: Some(proto::precondition::ConditionType::Exists(false)),
            }),
            ..Default::default()
        };
        let (_, applied) = self.commit_writes(&database, &[write], None).await?;
        written(&database, applied, mask.as_ref())
    }

    /// `UpdateDocument` (REST `PATCH`): an upsert, with the update mask
    /// and precondition as given.
    pub async fn update_document(
        &self,
        req: proto::UpdateDocumentRequest,
    ) -> Result<Document, Status> {
        let Some(doc) = req.document else {
            return Err(Status::invalid("a document is required"));
        };
        let (database, _) = convert::named_document(&doc.name)?;
        let mask = Mask::parse(req.mask.as_ref())?;
        let write = proto::Write {
            operation: Some(proto::write::Operation::Update(doc)),
            update_mask: req.update_mask,
            current_document: req.current_document,
            ..Default::default()
        };
        let (_, applied) = self.commit_writes(&database, &[write], None).await?;
        written(&database, applied, mask.as_ref())
    }

    /// `DeleteDocument` (REST `DELETE`).
    pub async fn delete_document(&self, req: proto::DeleteDocumentRequest) -> Result<(), Status> {
        let (database, _) = convert::named_document(&req.name)?;
        let write = proto::Write {
            operation: Some(proto::write::Operation::Delete(req.name)),
            current_document: req.current_document,
            ..Default::default()
        };
        self.commit_writes(&database, &[write], None).await?;
        Ok(())
    }

    // ---- transactions ---------------------------------------------------

    fn begin(
        &self,
        database: &DatabaseName,
        options: &TransactionOptions,
    ) -> Result<Bytes, Status> {
        use proto::transaction_options::Mode;
        let mut read_time = None;
        let read_only = match &options.mode {
            Some(Mode::ReadOnly(ro)) => {
                if let Some(proto::transaction_options::read_only::ConsistencySelector::ReadTime(
                    t,
                )) = &ro.consistency_selector
                {
                    let t = convert::micros(t)?;
                    self.check_read_time(t)?;
                    read_time = Some(t);
                }
                true
            }
            Some(Mode::ReadWrite(rw)) => {
                if !rw.retry_transaction.is_empty() {
                    self.inner.transactions.forget(&rw.retry_transaction);
                }
                false
            }
            None => false,
        };
        self.inner
            .transactions
            .begin(&database.to_string(), read_only, read_time, self.now_ms())
    }

    /// `BeginTransaction`: read-write by default, read-only when asked
    /// (a read-only one with a `read_time` only while nothing changed since).
    pub async fn begin_transaction(
        &self,
        req: proto::BeginTransactionRequest,
    ) -> Result<proto::BeginTransactionResponse, Status> {
        let database = convert::database(&req.database)?;
        let transaction = self.begin(&database, &req.options.unwrap_or_default())?;
        Ok(proto::BeginTransactionResponse { transaction })
    }

    /// `Rollback`.
    pub async fn rollback(&self, req: proto::RollbackRequest) -> Result<(), Status> {
        convert::database(&req.database)?;
        self.inner
            .transactions
            .rollback(&req.transaction, &req.database, self.now_ms())
    }

    // ---- not supported ----------------------------------------------------

    /// `PartitionQuery`: not supported.
    pub async fn partition_query(
        &self,
        _req: proto::PartitionQueryRequest,
    ) -> Result<proto::PartitionQueryResponse, Status> {
        Err(Status::unimplemented(
            "PartitionQuery is not supported by Latchkey's embedded document store; run the \
             query whole",
        ))
    }

    /// `Write` (the streaming write API): not supported.
    pub fn write_stream(&self) -> Status {
        Status::unimplemented(
            "the streaming Write call is not supported by Latchkey's embedded document store; \
             use Commit or BatchWrite",
        )
    }
}

/// A subscription to this node's commits, for `Listen`.
impl DocumentStore {
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.inner.changes.subscribe()
    }
}

/// One write's outcome: its result and the document it left.
#[derive(Debug)]
struct Applied {
    result: WriteResult,
    doc: Option<Stored>,
}

/// The document a single-write REST call answers with.
fn written(
    database: &DatabaseName,
    applied: Vec<Applied>,
    mask: Option<&Mask>,
) -> Result<Document, Status> {
    match applied.into_iter().next().and_then(|a| a.doc) {
        Some(d) => Ok(to_proto(database, &d, mask)),
        None => Err(Status::internal("a write left no document")),
    }
}

fn micros_of(clock: &SharedClock) -> i64 {
    clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn no_history() -> Status {
    Status::failed_precondition(
        "The requested 'read_time' is too old: Latchkey's embedded document store keeps no \
         history and reads only the current state, and documents changed after that time",
    )
}

fn bad_token(_: latchkey_documents::NameError) -> Status {
    Status::invalid("the page token is not valid")
}

/// The first key after `parent/id` and everything under it.
fn skip_past(parent: &DocPath, id: &str) -> Result<Option<Vec<u8>>, Status> {
    let child = parent.child(id).map_err(bad_token)?;
    Ok(prefix_end(&key(&child)))
}

/// A page size: 0 means every result.
fn page_size(n: i32) -> Result<usize, Status> {
    match n {
        0 => Ok(usize::MAX - 1),
        n if n < 0 => Err(Status::invalid("page_size must not be negative")),
        n => Ok(usize::try_from(n).unwrap_or(usize::MAX - 1)),
    }
}

/// A `google.rpc.Status` for a BatchWrite answer.
fn rpc_status(
    code: GrpcCode,
    message: &str,
) -> googleapis_tonic_google_firestore_v1::google::rpc::Status {
    googleapis_tonic_google_firestore_v1::google::rpc::Status {
        code: code.as_i32(),
        message: message.to_owned(),
        details: Vec::new(),
    }
}

/// A 20-character document id, as the clients make them.
fn auto_id() -> Result<String, Status> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Status::internal("could not make a document id"))?;
    // 248 = 4 * 62: values at or above it are dropped to keep the choice uniform.
    let mut id = String::with_capacity(20);
    while id.len() < 20 {
        for b in bytes {
            if b < 248 && id.len() < 20 {
                id.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| Status::internal("could not make a document id"))?;
    }
    Ok(id)
}
