//! `Listen`: targets on one stream, their initial state, then the changes
//! later commits make to them.
//!
//! Changes come from this node's broadcast of committed writes (see
//! [`super::Committed`]); each affected target is evaluated again and the
//! difference sent. A stream that falls behind the broadcast re-reads every
//! target. Across several nodes this needs the store's own change feed
//! (the multi-node store's work); until then a node sees its own commits.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::{self, BoxStream};
use latchkey_documents::{DatabaseName, DocPath};
use tokio::sync::{broadcast, mpsc};

use super::convert::{self, timestamp, to_proto};
use super::{Committed, DocumentStore};
use crate::Status;
use crate::proto::listen_request::TargetChange as Request;
use crate::proto::listen_response::ResponseType;
use crate::proto::target::{TargetType, query_target::QueryType};
use crate::proto::target_change::TargetChangeType;
use crate::proto::{
    Document, DocumentChange, DocumentDelete, DocumentRemove, ListenRequest, ListenResponse,
    StructuredQuery, Target, TargetChange,
};
use crate::query::{self, Scan};

/// Responses buffered for a slow reader before the stream waits for it.
const OUT_BUFFER: usize = 256;

/// What a target watches.
#[derive(Debug, Clone)]
enum Watch {
    Documents(Vec<DocPath>),
    Query {
        parent: DocPath,
        query: Box<StructuredQuery>,
        scan: Scan,
    },
}

#[derive(Debug)]
struct Watched {
    watch: Watch,
    /// The documents in the target's result: name → (document, update time).
    docs: HashMap<String, (Document, i64)>,
}

type Out = mpsc::Sender<Result<ListenResponse, Status>>;

impl DocumentStore {
    /// `Listen`: requests in, responses out, until either side ends.
    pub fn listen(
        &self,
        requests: BoxStream<'static, ListenRequest>,
    ) -> BoxStream<'static, Result<ListenResponse, Status>> {
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let store = self.clone();
        tokio::spawn(async move {
            let mut session = Session {
                store,
                out: tx,
                database: None,
                targets: BTreeMap::new(),
            };
            session.run(requests).await;
        });
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }).boxed()
    }
}

struct Session {
    store: DocumentStore,
    out: Out,
    database: Option<DatabaseName>,
    targets: BTreeMap<i32, Watched>,
}

/// The reader is gone: stop.
struct Gone;

fn resume_token(micros: i64) -> Bytes {
    Bytes::copy_from_slice(&micros.to_be_bytes())
}

fn change(kind: TargetChangeType, ids: Vec<i32>) -> TargetChange {
    TargetChange {
        target_change_type: kind as i32,
        target_ids: ids,
        ..Default::default()
    }
}

impl Session {
    async fn send(&self, r: ResponseType) -> Result<(), Gone> {
        self.out
            .send(Ok(ListenResponse {
                response_type: Some(r),
            }))
            .await
            .map_err(|_| Gone)
    }

    async fn fail(&self, s: Status) {
        let _ = self.out.send(Err(s)).await;
    }

    async fn run(&mut self, mut requests: BoxStream<'static, ListenRequest>) {
        // Subscribe before the first read, so no commit falls between.
        let mut changes = self.store.subscribe();
        loop {
            let step = tokio::select! {
                req = requests.next() => match req {
                    // The client ended its side: end ours cleanly.
                    None => return,
                    Some(req) => self.request(req).await,
                },
                ev = changes.recv() => match ev {
                    Ok(c) => self.committed(&c).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.refresh_all().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = self.out.closed() => return,
            };
            match step {
                Ok(()) => {}
                Err(Step::Gone) => return,
                Err(Step::Fail(s)) => {
                    self.fail(s).await;
                    return;
                }
            }
        }
    }

    async fn request(&mut self, req: ListenRequest) -> Result<(), Step> {
        let database = convert::database(&req.database).map_err(Step::Fail)?;
        match &self.database {
            None => self.database = Some(database.clone()),
            Some(d) if *d == database => {}
            Some(_) => {
                return Err(Step::Fail(Status::invalid(
                    "every request of a Listen stream must name the same database",
                )));
            }
        }
        match req.target_change {
            None => Ok(()),
            Some(Request::AddTarget(t)) => self.add(&database, t).await,
            Some(Request::RemoveTarget(id)) => {
                if self.targets.remove(&id).is_some() {
                    self.send(ResponseType::TargetChange(change(
                        TargetChangeType::Remove,
                        vec![id],
                    )))
                    .await?;
                }
                Ok(())
            }
        }
    }

    fn parse_target(database: &DatabaseName, t: &Target) -> Result<Watch, Status> {
        match &t.target_type {
            None => Err(Status::invalid("a target needs documents or a query")),
            Some(TargetType::Documents(d)) => Ok(Watch::Documents(
                d.documents
                    .iter()
                    .map(|n| convert::document_path(database, n))
                    .collect::<Result<_, _>>()?,
            )),
            Some(TargetType::Query(q)) => {
                let (db, parent) = convert::parent_path(&q.parent)?;
                if db != *database {
                    return Err(Status::invalid(format!(
                        "`{}` is not in database `{database}`",
                        convert::short(&q.parent)
                    )));
                }
                let Some(QueryType::StructuredQuery(query)) = &q.query_type else {
                    return Err(Status::invalid("a query target needs a structured query"));
                };
                let scan = query::plan_in(database, &parent, query)?;
                Ok(Watch::Query {
                    parent,
                    query: Box::new(query.clone()),
                    scan,
                })
            }
        }
    }

    async fn evaluate(
        &self,
        database: &DatabaseName,
        watch: &Watch,
    ) -> Result<HashMap<String, (Document, i64)>, Status> {
        let docs: Vec<Document> = match watch {
            Watch::Documents(paths) => self
                .store
                .get_stored(database, paths)
                .await?
                .into_iter()
                .flatten()
                .map(|d| to_proto(database, &d, None))
                .collect(),
            Watch::Query { parent, query, .. } => {
                self.store.evaluate(database, parent, query).await?.0
            }
        };
        Ok(docs
            .into_iter()
            .map(|d| {
                let t = d
                    .update_time
                    .as_ref()
                    .and_then(|t| convert::micros(t).ok())
                    .unwrap_or(0);
                (d.name.clone(), (d, t))
            })
            .collect())
    }

    async fn add(&mut self, database: &DatabaseName, t: Target) -> Result<(), Step> {
        let id = if t.target_id == 0 {
            // Firestore assigns an id when the client leaves it 0.
            self.targets
                .keys()
                .next_back()
                .map_or(1, |k| k.saturating_add(1))
        } else {
            t.target_id
        };
        if self.targets.contains_key(&id) {
            return Err(Step::Fail(Status::invalid(format!(
                "target id {id} is already in use on this stream"
            ))));
        }
        let watch = match Self::parse_target(database, &t) {
            Ok(w) => w,
            Err(s) => return self.refuse(id, s).await,
        };
        let docs = match self.evaluate(database, &watch).await {
            Ok(d) => d,
            Err(s) => return self.refuse(id, s).await,
        };
        let read_time = self.store.read_time();
        self.send(ResponseType::TargetChange(change(
            TargetChangeType::Add,
            vec![id],
        )))
        .await?;
        if t.resume_type.is_some() {
            // No history to replay: the full state again, after a RESET.
            self.send(ResponseType::TargetChange(TargetChange {
                target_change_type: TargetChangeType::Reset as i32,
                target_ids: vec![id],
                cause: None,
                resume_token: resume_token(read_time),
                read_time: Some(timestamp(read_time)),
            }))
            .await?;
        }
        let mut sorted: Vec<&(Document, i64)> = docs.values().collect();
        sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (d, _) in sorted {
            self.send(ResponseType::DocumentChange(DocumentChange {
                document: Some(d.clone()),
                target_ids: vec![id],
                removed_target_ids: Vec::new(),
            }))
            .await?;
        }
        self.send(ResponseType::TargetChange(TargetChange {
            target_change_type: TargetChangeType::Current as i32,
            target_ids: vec![id],
            cause: None,
            resume_token: resume_token(read_time),
            read_time: Some(timestamp(read_time)),
        }))
        .await?;
        if t.once {
            self.send(ResponseType::TargetChange(change(
                TargetChangeType::Remove,
                vec![id],
            )))
            .await?;
        } else {
            self.targets.insert(id, Watched { watch, docs });
        }
        self.snapshot(read_time).await?;
        Ok(())
    }

    /// A target Firestore would refuse: removed with its cause.
    async fn refuse(&self, id: i32, s: Status) -> Result<(), Step> {
        self.send(ResponseType::TargetChange(TargetChange {
            target_change_type: TargetChangeType::Remove as i32,
            target_ids: vec![id],
            cause: Some(googleapis_tonic_google_firestore_v1::google::rpc::Status {
                code: s.code.as_i32(),
                message: s.message,
                details: Vec::new(),
            }),
            ..Default::default()
        }))
        .await?;
        Ok(())
    }

    /// The global "everything is consistent at this time" message.
    async fn snapshot(&self, read_time: i64) -> Result<(), Gone> {
        self.send(ResponseType::TargetChange(TargetChange {
            target_change_type: TargetChangeType::NoChange as i32,
            target_ids: Vec::new(),
            cause: None,
            resume_token: resume_token(read_time),
            read_time: Some(timestamp(read_time)),
        }))
        .await
    }

    fn affects(watch: &Watch, path: &DocPath) -> bool {
        match watch {
            Watch::Documents(paths) => paths.contains(path),
            Watch::Query { scan, .. } => scan.contains(path),
        }
    }

    /// Whether a change to the document at `path` (now `after`) can change
    /// a target's result: it is in the result, or it is a candidate now.
    /// Anything else (a document that neither was in the result nor passes
    /// the filters) leaves the result as it was, limits and cursors
    /// included, so the target is not evaluated again.
    fn concerns(
        database: &DatabaseName,
        w: &Watched,
        path: &DocPath,
        after: Option<&super::Stored>,
    ) -> bool {
        if !Self::affects(&w.watch, path) {
            return false;
        }
        let Watch::Query { query, .. } = &w.watch else {
            return true;
        };
        if w.docs.contains_key(&database.resource_name(path)) {
            return true;
        }
        match after {
            None => false,
            // An unreadable query would have been refused when added; if it
            // errs now, evaluating again reports it.
            Some(d) => query::matches(query, &to_proto(database, d, None)).unwrap_or(true),
        }
    }

    async fn committed(&mut self, c: &Committed) -> Result<(), Step> {
        let Some(database) = self.database.clone() else {
            return Ok(());
        };
        if c.database != database.to_string() {
            return Ok(());
        }
        let ids: Vec<i32> = self
            .targets
            .iter()
            .filter(|(_, w)| {
                c.changes
                    .iter()
                    .any(|(p, after)| Self::concerns(&database, w, p, after.as_ref()))
            })
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut sent = false;
        for id in ids {
            sent |= self.refresh(&database, id).await?;
        }
        if sent {
            self.snapshot(self.store.read_time().max(c.commit_time))
                .await?;
        }
        Ok(())
    }

    async fn refresh_all(&mut self) -> Result<(), Step> {
        let Some(database) = self.database.clone() else {
            return Ok(());
        };
        let ids: Vec<i32> = self.targets.keys().copied().collect();
        let mut sent = false;
        for id in ids {
            sent |= self.refresh(&database, id).await?;
        }
        if sent {
            self.snapshot(self.store.read_time()).await?;
        }
        Ok(())
    }

    /// Evaluates target `id` again and sends what changed; whether anything did.
    async fn refresh(&mut self, database: &DatabaseName, id: i32) -> Result<bool, Step> {
        let Some(watch) = self.targets.get(&id).map(|w| w.watch.clone()) else {
            return Ok(false);
        };
        let now = match self.evaluate(database, &watch).await {
            Ok(d) => d,
            Err(s) => {
                self.targets.remove(&id);
                self.refuse(id, s).await?;
                return Ok(true);
            }
        };
        let read_time = Some(timestamp(self.store.read_time()));
        let old = self
            .targets
            .get_mut(&id)
            .map(|w| std::mem::take(&mut w.docs))
            .unwrap_or_default();
        let mut sent = false;
        let mut names: Vec<&String> = now.keys().collect();
        names.sort();
        for name in names {
            let (doc, t) = &now[name];
            if old.get(name).map(|(_, o)| o) != Some(t) {
                self.send(ResponseType::DocumentChange(DocumentChange {
                    document: Some(doc.clone()),
                    target_ids: vec![id],
                    removed_target_ids: Vec::new(),
                }))
                .await?;
                sent = true;
            }
        }
        let mut gone: Vec<&String> = old.keys().filter(|n| !now.contains_key(*n)).collect();
        gone.sort();
        if !gone.is_empty() {
            let paths: Vec<DocPath> = gone
                .iter()
                .filter_map(|n| {
                    latchkey_documents::ResourceName::parse(n)
                        .ok()
                        .map(|(_, p)| p)
                })
                .collect();
            let exists = self
                .store
                .get_stored(database, &paths)
                .await
                .map_err(Step::Fail)?;
            for (name, still) in gone.iter().zip(exists) {
                let r = if still.is_some() {
                    ResponseType::DocumentRemove(DocumentRemove {
                        document: (*name).clone(),
                        removed_target_ids: vec![id],
                        read_time,
                    })
                } else {
                    ResponseType::DocumentDelete(DocumentDelete {
                        document: (*name).clone(),
                        removed_target_ids: vec![id],
                        read_time,
                    })
                };
                self.send(r).await?;
                sent = true;
            }
        }
        if let Some(w) = self.targets.get_mut(&id) {
            w.docs = now;
        }
        Ok(sent)
    }
}

/// Why a step of the stream ended it.
enum Step {
    /// The reader is gone.
    Gone,
    /// The stream ends with this error.
    Fail(Status),
}

impl From<Gone> for Step {
    fn from(_: Gone) -> Self {
        Step::Gone
    }
}
