//! What a Firestore call asks to do, as one [`Access`] per policy decision.
//!
//! Both front ends (gRPC here, REST in [`crate::rest`]) reduce a request to
//! the same [`Classified`] value; [`Access::intent`] turns each access into
//! the [`Intent`] the policy engine decides on.

use std::collections::HashMap;

use bytes::Bytes;
use googleapis_tonic_google_firestore_v1::google::firestore::v1 as pb;
use latchkey_core::{Action, Intent};
use pb::document_transform::FieldTransform;
use pb::document_transform::field_transform::TransformType;
use prost::Message;

use crate::grpc::Method;
use crate::names::{self, DatabaseName, DocPath, FieldPath, NameError, ResourceName, truncate};
use crate::values;

/// The kind of access, before it becomes a policy action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocAction {
    /// Read one document.
    Get,
    /// List a collection's documents, or collection ids.
    List,
    /// Run a query or aggregation.
    Query,
    /// Create a document that must not exist (or a server-named one).
    Create,
    /// Update, upsert (set) or transform a document.
    Update,
    /// Delete a document.
    Delete,
    /// Watch documents or a query.
    Listen,
}

impl DocAction {
    /// The policy action.
    pub fn action(self) -> Action {
        match self {
            Self::Get => Action::DocumentGet,
            Self::List => Action::DocumentList,
            Self::Query => Action::DocumentQuery,
            Self::Create => Action::DocumentCreate,
            Self::Update => Action::DocumentUpdate,
            Self::Delete => Action::DocumentDelete,
            Self::Listen => Action::DocumentListen,
        }
    }
}

/// What an access touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One document.
    Document(DocPath),
    /// One collection: listing or querying it, or creating a document in it
    /// whose id the server picks (`CreateDocument` without a document id).
    Collection(DocPath),
    /// Every collection named `collection_id` anywhere below `parent` (a
    /// document, or the database root when empty): an `allDescendants`
    /// (collection group) query or listen.
    Subtree {
        /// The document below which to look; empty is the database root.
        parent: DocPath,
        /// The collection id to match.
        collection_id: String,
    },
    /// Every collection, whatever its id, directly under `parent` (a
    /// document, or the database root when empty), or with
    /// `all_descendants` at any depth below it: a query or listen whose
    /// collection selector names no collection id (the "kindless" query
    /// the clients' `recursiveDelete` sends), or that has no selector at
    /// all, and a `ListDocuments` without a collection id (which Google's
    /// emulator answers with the documents of every collection directly
    /// under `parent`). Firestore serves these, so Latchkey decides them:
    /// the policy resource is `parent` itself, which covers everything
    /// below it.
    AnyCollection {
        /// The document below which to look; empty is the database root.
        parent: DocPath,
        /// Whether collections at any depth are read, not only the
        /// collections directly under `parent`.
        all_descendants: bool,
    },
    /// The ids of the collections directly under `parent` (a document, or
    /// the root when empty): `ListCollectionIds`.
    CollectionIds {
        /// The document whose subcollections are listed; empty is the root.
        parent: DocPath,
    },
}

/// Which write a write access is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteOp {
    /// Create; fails if the document exists (`current_document.exists = false`,
    /// or `CreateDocument`).
    Create,
    /// Change an existing document (`exists = true`, an `update_time`
    /// precondition, or an update mask).
    Update,
    /// Create or overwrite (an update with neither precondition nor mask).
    Set,
    /// Delete.
    Delete,
    /// A standalone (deprecated) field transform.
    Transform,
}

impl WriteOp {
    /// The `operation` context value: `create`, `update`, `set`, `delete`, `transform`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Set => "set",
            Self::Delete => "delete",
            Self::Transform => "transform",
        }
    }

    fn action(self) -> DocAction {
        match self {
            Self::Create => DocAction::Create,
            Self::Update | Self::Set | Self::Transform => DocAction::Update,
            Self::Delete => DocAction::Delete,
        }
    }
}

/// What one write changes, for the audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    /// Which write.
    pub operation: WriteOp,
    /// The update mask, as canonical field paths, if the write has one.
    pub update_mask: Option<Vec<String>>,
    /// Changed fields, canonical and sorted: the mask (or, without one,
    /// the document's top-level field names) plus transformed fields.
    pub fields: Vec<String>,
    /// One `field:kind` per field transform, e.g. `count:increment`.
    pub transforms: Vec<String>,
    /// The document's fields as plain JSON, only when
    /// [`ClassifyOptions::record_values`] asked for this path.
    pub values: Option<serde_json::Value>,
}

/// One thing a call does that policy must allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// The kind of access.
    pub action: DocAction,
    /// What it touches.
    pub target: Target,
    /// The `operation` context value: `get`, `list`, `collection_ids`,
    /// `query`, `aggregation`, `documents` (a listen on named documents),
    /// or the [`WriteOp`] of a write.
    pub operation: &'static str,
    /// For writes, what changes.
    pub write: Option<WriteSummary>,
    /// For `Listen`, the target id the client gave the added target.
    pub listen_target: Option<i32>,
}

impl Access {
    /// The policy intent for this access. `environment` is the environment
    /// `database` maps to (the gateway's configuration knows it).
    ///
    /// A query or listen says which collections it reads in its context:
    /// `collection_id` and `all_descendants`. One over
    /// [`Target::AnyCollection`] has no `collection_id` (a policy that
    /// tests it cannot evaluate, so a permit does not apply and a forbid
    /// denies: fail closed) and `collections = "any"`, which the audit
    /// record keeps, so the record says that every collection below the
    /// resource was read.
    pub fn intent(&self, database: &DatabaseName, environment: &str) -> Intent {
        let db = database.database.as_str();
        let (resource, group) = match &self.target {
            Target::Document(p) | Target::CollectionIds { parent: p } => {
                (p.to_resource(db, environment), None)
            }
            Target::Collection(p) => (
                p.to_resource(db, environment),
                p.last().map(|id| (Some(id.to_owned()), false)),
            ),
            Target::Subtree {
                parent,
                collection_id,
            } => (
                parent.to_resource(db, environment),
                Some((Some(collection_id.clone()), true)),
            ),
            Target::AnyCollection {
                parent,
                all_descendants,
            } => (
                parent.to_resource(db, environment),
                Some((None, *all_descendants)),
            ),
        };
        let mut intent =
            Intent::new(self.action.action(), resource).with("operation", self.operation);
        let query_like = matches!(self.action, DocAction::Query | DocAction::Listen);
        match group {
            Some((Some(id), all)) if query_like => {
                intent = intent
                    .with("collection_id", id)
                    .with("all_descendants", all);
            }
            // A listing of every collection (`ListDocuments` without a
            // collection id) says so too, for its audit record.
            Some((None, all)) => {
                intent = intent
                    .with("collections", "any")
                    .with("all_descendants", all);
            }
            _ => {}
        }
        intent
    }
}

/// A classified call (or one message of a `Write`/`Listen` stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// The RPC (for REST, the RPC the route maps to).
    pub method: Method,
    /// The database every name in the call belongs to.
    pub database: DatabaseName,
    /// One entry per policy decision; a commit of ten writes has ten.
    /// May be empty (`BeginTransaction`, `Rollback`, a stream handshake).
    pub accesses: Vec<Access>,
    /// An existing transaction the call uses: a read's `transaction`
    /// selector, `Commit`/`Rollback`'s transaction, or the
    /// `retry_transaction` of new read-write transaction options.
    pub transaction: Option<Bytes>,
    /// Whether the response will carry a new transaction id
    /// (`BeginTransaction`, or `new_transaction` read options).
    pub begins_transaction: bool,
    /// `Listen`: target ids the client removes.
    pub listen_remove_targets: Vec<i32>,
}

impl Classified {
    /// The intents of every access, in order.
    pub fn intents(&self, environment: &str) -> Vec<Intent> {
        self.accesses
            .iter()
            .map(|a| a.intent(&self.database, environment))
            .collect()
    }
}

/// Choices the caller makes about classification.
#[derive(Clone, Copy)]
pub struct ClassifyOptions<'a> {
    /// Whether to copy a written document's fields into
    /// [`WriteSummary::values`] (config documents and flags, say, but not
    /// user data). Called with the written document's path (the
    /// collection's, for a server-named create).
    pub record_values: &'a dyn Fn(&DocPath) -> bool,
}

fn never(_: &DocPath) -> bool {
    false
}

impl ClassifyOptions<'static> {
    /// Records no values.
    pub const NONE: ClassifyOptions<'static> = ClassifyOptions {
        record_values: &never,
    };
}

impl Default for ClassifyOptions<'static> {
    fn default() -> Self {
        Self::NONE
    }
}

impl std::fmt::Debug for ClassifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifyOptions").finish_non_exhaustive()
    }
}

pub use crate::error::ClassifyError;

type Result<T, E = ClassifyError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Shared core: both front ends describe a request with these and the
// helpers below, so the rules (what is a create, which names are allowed)
// live in one place.

/// The fields of a document being written, from either front end.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldsIn<'a> {
    Proto(&'a HashMap<String, pb::Value>),
    Json(Option<&'a serde_json::Map<String, serde_json::Value>>),
}

impl FieldsIn<'_> {
    fn keys(&self) -> Vec<&str> {
        match self {
            Self::Proto(m) => m.keys().map(String::as_str).collect(),
            Self::Json(m) => m
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default(),
        }
    }

    fn to_plain(self, label: &str) -> Result<serde_json::Value> {
        match self {
            Self::Proto(m) => values::proto_fields(m, label),
            Self::Json(Some(m)) => values::rest_fields(m, label),
            Self::Json(None) => Ok(serde_json::Value::Object(serde_json::Map::new())),
        }
    }
}

/// What a write does, before classification.
#[derive(Debug)]
pub(crate) enum WriteKind<'a> {
    Update { name: &'a str, fields: FieldsIn<'a> },
    Delete { name: &'a str },
    Transform { name: &'a str },
}

/// One write from either front end. `label` names it in errors
/// (`writes[3]`); `kind_label` is the field holding the name.
#[derive(Debug)]
pub(crate) struct WriteIn<'a> {
    pub(crate) label: String,
    pub(crate) kind: WriteKind<'a>,
    pub(crate) kind_label: &'static str,
    pub(crate) mask: Option<Vec<&'a str>>,
    pub(crate) mask_label: &'static str,
    /// (field path, transform kind) pairs.
    pub(crate) transforms: Vec<(&'a str, &'static str)>,
    pub(crate) transforms_label: &'static str,
    pub(crate) exists: Option<bool>,
    pub(crate) update_time: bool,
}

/// The transform kind of a protobuf field transform.
pub(crate) fn transform_kind(t: &FieldTransform) -> Option<&'static str> {
    Some(match t.transform_type.as_ref()? {
        TransformType::SetToServerValue(_) => "server_value",
        TransformType::Increment(_) => "increment",
        TransformType::Maximum(_) => "maximum",
        TransformType::Minimum(_) => "minimum",
        TransformType::AppendMissingElements(_) => "append_missing_elements",
        TransformType::RemoveAllFromArray(_) => "remove_all_from_array",
    })
}

/// Classification state for one call: its database and the options.
pub(crate) struct Ctx<'o> {
    pub(crate) database: DatabaseName,
    pub(crate) opts: &'o ClassifyOptions<'o>,
    pub(crate) out: Classified,
}

impl<'o> Ctx<'o> {
    pub(crate) fn new(
        method: Method,
        database: DatabaseName,
        opts: &'o ClassifyOptions<'o>,
    ) -> Self {
        Self {
            out: Classified {
                method,
                database: database.clone(),
                accesses: Vec::new(),
                transaction: None,
                begins_transaction: false,
                listen_remove_targets: Vec::new(),
            },
            database,
            opts,
        }
    }

    pub(crate) fn finish(self) -> Classified {
        self.out
    }

    /// A name inside this call's database.
    pub(crate) fn path(&self, field: &str, name: &str) -> Result<DocPath> {
        let (db, path) = parse_name(field, name)?;
        if db != self.database {
            return Err(ClassifyError::OtherDatabase {
                name: truncate(name),
                database: self.database.to_string(),
            });
        }
        Ok(path)
    }

    /// A document name inside this call's database.
    pub(crate) fn document(&self, field: &str, name: &str) -> Result<DocPath> {
        let path = self.path(field, name)?;
        require_document(field, name, path)
    }

    /// A parent (a document, or the root) inside this call's database.
    pub(crate) fn parent(&self, field: &str, name: &str) -> Result<DocPath> {
        let path = self.path(field, name)?;
        require_parent(field, name, path)
    }

    pub(crate) fn set_transaction(&mut self, t: Option<Bytes>) {
        if let Some(t) = t.filter(|t| !t.is_empty()) {
            self.out.transaction = Some(t);
        }
    }

    /// New transaction options: the response will carry an id; a retried
    /// read-write transaction names the one it replaces.
    pub(crate) fn begin_transaction(&mut self, retry: Option<Bytes>) {
        self.out.begins_transaction = true;
        self.set_transaction(retry);
    }

    pub(crate) fn push(&mut self, action: DocAction, target: Target, operation: &'static str) {
        self.out.accesses.push(Access {
            action,
            target,
            operation,
            write: None,
            listen_target: None,
        });
    }

    /// One access per `from` selector of a structured query over `parent`.
    ///
    /// A selector without a collection id reads every collection under
    /// `parent` (directly under it, or at any depth with
    /// `all_descendants`), and so does a query with no selector at all
    /// (Google's emulator answers both with those documents); both are
    /// [`Target::AnyCollection`]. Firestore refuses more than one
    /// selector; each is classified all the same, so nothing it might
    /// read goes undecided.
    pub(crate) fn query(
        &mut self,
        action: DocAction,
        operation: &'static str,
        parent: &DocPath,
        from: &[(&str, bool)],
        from_label: &str,
        listen_target: Option<i32>,
    ) -> Result<()> {
        if from.is_empty() {
            self.out.accesses.push(Access {
                action,
                target: Target::AnyCollection {
                    parent: parent.clone(),
                    all_descendants: false,
                },
                operation,
                write: None,
                listen_target,
            });
            return Ok(());
        }
        for (i, (collection_id, all_descendants)) in from.iter().enumerate() {
            let field = format!("{from_label}[{i}].collection_id");
            let target = if collection_id.is_empty() {
                Target::AnyCollection {
                    parent: parent.clone(),
                    all_descendants: *all_descendants,
                }
            } else if *all_descendants {
                check_collection_id(&field, collection_id)?;
                Target::Subtree {
                    parent: parent.clone(),
                    collection_id: (*collection_id).to_owned(),
                }
            } else {
                Target::Collection(child(&field, parent, collection_id)?)
            };
            self.out.accesses.push(Access {
                action,
                target,
                operation,
                write: None,
                listen_target,
            });
        }
        Ok(())
    }

    /// One write (`Commit`, `BatchWrite`, `Write`, `UpdateDocument`, `DeleteDocument`).
    pub(crate) fn write(&mut self, w: WriteIn<'_>) -> Result<()> {
        let name_field = format!("{}{}", w.label, w.kind_label);
        let (op, name, fields) = match w.kind {
            WriteKind::Update { name, fields } => {
                let op = if w.exists == Some(false) {
                    WriteOp::Create
                } else if w.exists == Some(true) || w.update_time || w.mask.is_some() {
                    WriteOp::Update
                } else {
                    WriteOp::Set
                };
                (op, name, Some(fields))
            }
            WriteKind::Delete { name } => (WriteOp::Delete, name, None),
            WriteKind::Transform { name } => (WriteOp::Transform, name, None),
        };
        if name.is_empty() {
            return Err(ClassifyError::Missing(name_field));
        }
        let path = self.document(&name_field, name)?;
        let summary = if op == WriteOp::Delete {
            WriteSummary {
                operation: op,
                update_mask: None,
                fields: Vec::new(),
                transforms: Vec::new(),
                values: None,
            }
        } else {
            self.summary(
                op,
                &path,
                &w.label,
                w.mask.as_deref(),
                w.mask_label,
                &w.transforms,
                w.transforms_label,
                fields,
            )?
        };
        self.out.accesses.push(Access {
            action: op.action(),
            target: Target::Document(path),
            operation: op.as_str(),
            write: Some(summary),
            listen_target: None,
        });
        Ok(())
    }

    /// `CreateDocument`: a named document, or (empty `document_id`) a
    /// server-named one, whose target is then the collection.
    pub(crate) fn create(
        &mut self,
        collection: DocPath,
        document_id: &str,
        document_id_field: &str,
        fields: FieldsIn<'_>,
    ) -> Result<()> {
        let target = if document_id.is_empty() {
            Target::Collection(collection)
        } else {
            Target::Document(child(document_id_field, &collection, document_id)?)
        };
        let path = match &target {
            Target::Document(p) | Target::Collection(p) => p.clone(),
            _ => DocPath::root(),
        };
        let summary = self.summary(WriteOp::Create, &path, "", None, "", &[], "", Some(fields))?;
        self.out.accesses.push(Access {
            action: DocAction::Create,
            target,
            operation: WriteOp::Create.as_str(),
            write: Some(summary),
            listen_target: None,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn summary(
        &self,
        op: WriteOp,
        path: &DocPath,
        label: &str,
        mask: Option<&[&str]>,
        mask_label: &str,
        transforms: &[(&str, &'static str)],
        transforms_label: &str,
        fields: Option<FieldsIn<'_>>,
    ) -> Result<WriteSummary> {
        let update_mask = mask
            .map(|m| {
                m.iter()
                    .enumerate()
                    .map(|(i, p)| canonical(&format!("{label}{mask_label}[{i}]"), p))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        let mut changed = match (&update_mask, fields) {
            (Some(m), _) => m.clone(),
            (None, Some(f)) => f
                .keys()
                .into_iter()
                .map(|k| {
                    FieldPath::from_segments(vec![k.to_owned()])
                        .map(|p| p.to_string())
                        .map_err(|source| ClassifyError::FieldPath {
                            field: format!("{label}fields"),
                            source,
                        })
                })
                .collect::<Result<Vec<_>>>()?,
            (None, None) => Vec::new(),
        };
        let mut summaries = Vec::with_capacity(transforms.len());
        for (i, (field_path, kind)) in transforms.iter().enumerate() {
            let p = canonical(
                &format!("{label}{transforms_label}[{i}].field_path"),
                field_path,
            )?;
            summaries.push(format!("{p}:{kind}"));
            changed.push(p);
        }
        changed.sort();
        changed.dedup();
        let values = match fields {
            Some(f) if (self.opts.record_values)(path) => {
                Some(f.to_plain(&format!("{label}fields"))?)
            }
            _ => None,
        };
        Ok(WriteSummary {
            operation: op,
            update_mask,
            fields: changed,
            transforms: summaries,
            values,
        })
    }
}

fn canonical(field: &str, path: &str) -> Result<String> {
    FieldPath::parse(path)
        .map(|p| p.to_string())
        .map_err(|source| ClassifyError::FieldPath {
            field: field.to_owned(),
            source,
        })
}

pub(crate) fn parse_name(field: &str, name: &str) -> Result<(DatabaseName, DocPath)> {
    if name.is_empty() {
        return Err(ClassifyError::Missing(field.to_owned()));
    }
    ResourceName::parse(name).map_err(|source| ClassifyError::Name {
        field: field.to_owned(),
        source,
    })
}

fn require_document(field: &str, name: &str, path: DocPath) -> Result<DocPath> {
    if path.is_document() {
        Ok(path)
    } else {
        Err(ClassifyError::Invalid {
            field: field.to_owned(),
            reason: format!("`{}` is not a document name", truncate(name)),
        })
    }
}

fn require_parent(field: &str, name: &str, path: DocPath) -> Result<DocPath> {
    if path.is_collection() {
        Err(ClassifyError::Invalid {
            field: field.to_owned(),
            reason: format!(
                "`{}` is a collection; a parent is a document or the `documents` root",
                truncate(name)
            ),
        })
    } else {
        Ok(path)
    }
}

/// A collection id given on its own (a collection group's): no `/`, and
/// not reserved.
fn check_collection_id(field: &str, id: &str) -> Result<()> {
    if id.contains('/') {
        return Err(ClassifyError::Name {
            field: field.to_owned(),
            source: NameError::Slash(truncate(id)),
        });
    }
    names::check_collection_id(id).map_err(|source| ClassifyError::Name {
        field: field.to_owned(),
        source,
    })
}

/// `parent` + one id, the id checked as what its place makes it: a
/// collection id under a document or the root, a document id under a
/// collection (`CreateDocument`'s `document_id`, which may be numeric).
pub(crate) fn child(field: &str, parent: &DocPath, id: &str) -> Result<DocPath> {
    parent.child(id).map_err(|source| ClassifyError::Name {
        field: field.to_owned(),
        source: match source {
            NameError::Slash(s) => NameError::Slash(truncate(&s)),
            other => other,
        },
    })
}

/// The database and parent of a call named by its parent (`RunQuery`,
/// `ListDocuments`, ...): the call's database is the parent's.
pub(crate) fn parent_of_call(field: &str, name: &str) -> Result<(DatabaseName, DocPath)> {
    let (db, path) = parse_name(field, name)?;
    Ok((db, require_parent(field, name, path)?))
}

/// The database and document of a call named by one document.
pub(crate) fn document_of_call(field: &str, name: &str) -> Result<(DatabaseName, DocPath)> {
    let (db, path) = parse_name(field, name)?;
    Ok((db, require_document(field, name, path)?))
}

pub(crate) fn database_of_call(field: &str, name: &str) -> Result<DatabaseName> {
    if name.is_empty() {
        return Err(ClassifyError::Missing(field.to_owned()));
    }
    DatabaseName::parse(name).map_err(|source| ClassifyError::Name {
        field: field.to_owned(),
        source,
    })
}

// ---------------------------------------------------------------------------
// gRPC front end.

fn decode<M: Message + Default>(message: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| ClassifyError::Decode {
        message,
        detail: e.to_string(),
    })
}

/// Classifies one request message of `method`: a unary or server-streaming
/// call's only message, or any one message of a `Write` or `Listen` stream.
///
/// A `Write` stream's later messages may leave `database` empty; classify
/// those with [`StreamClassifier`], which remembers the stream's database.
pub fn classify_grpc(
    method: Method,
    message: &[u8],
    opts: &ClassifyOptions<'_>,
) -> Result<Classified> {
    classify_grpc_in(method, message, opts, None)
}

/// Classifies the messages of one gRPC call in order, holding a stream to
/// one database: a `Write` stream names its database in the first message
/// only, and no later message may name another.
#[derive(Debug, Clone)]
pub struct StreamClassifier {
    method: Method,
    database: Option<DatabaseName>,
}

impl StreamClassifier {
    /// A classifier for one call of `method`.
    pub fn new(method: Method) -> Self {
        Self {
            method,
            database: None,
        }
    }

    /// The stream's database, once a message has named it.
    pub fn database(&self) -> Option<&DatabaseName> {
        self.database.as_ref()
    }

    /// Classifies the stream's next message.
    pub fn classify(&mut self, message: &[u8], opts: &ClassifyOptions<'_>) -> Result<Classified> {
        let c = classify_grpc_in(self.method, message, opts, self.database.as_ref())?;
        match &self.database {
            Some(db) if *db != c.database => {
                return Err(ClassifyError::OtherDatabase {
                    name: c.database.to_string(),
                    database: db.to_string(),
                });
            }
            Some(_) => {}
            None => self.database = Some(c.database.clone()),
        }
        Ok(c)
    }
}

fn classify_grpc_in(
    method: Method,
    message: &[u8],
    opts: &ClassifyOptions<'_>,
    stream_db: Option<&DatabaseName>,
) -> Result<Classified> {
    use pb::{
        BatchGetDocumentsRequest, BatchWriteRequest, BeginTransactionRequest, CommitRequest,
        CreateDocumentRequest, DeleteDocumentRequest, GetDocumentRequest, ListCollectionIdsRequest,
        ListDocumentsRequest, ListenRequest, PartitionQueryRequest, RollbackRequest,
        RunAggregationQueryRequest, RunQueryRequest, UpdateDocumentRequest, WriteRequest,
        batch_get_documents_request, get_document_request, list_documents_request, listen_request,
        partition_query_request, run_aggregation_query_request, run_query_request,
        structured_aggregation_query, target,
    };
    match method {
        Method::GetDocument => {
            let r: GetDocumentRequest = decode("GetDocumentRequest", message)?;
            let (db, path) = document_of_call("name", &r.name)?;
            let mut cx = Ctx::new(method, db, opts);
            if let Some(get_document_request::ConsistencySelector::Transaction(t)) =
                r.consistency_selector
            {
                cx.set_transaction(Some(t));
            }
            cx.push(DocAction::Get, Target::Document(path), "get");
            Ok(cx.finish())
        }
        Method::ListDocuments => {
            let r: ListDocumentsRequest = decode("ListDocumentsRequest", message)?;
            let (db, parent) = parent_of_call("parent", &r.parent)?;
            // Without a collection id: the documents of every collection
            // directly under the parent.
            let target = if r.collection_id.is_empty() {
                Target::AnyCollection {
                    parent,
                    all_descendants: false,
                }
            } else {
                Target::Collection(list_collection(&parent, &r.collection_id, "collection_id")?)
            };
            let mut cx = Ctx::new(method, db, opts);
            if let Some(list_documents_request::ConsistencySelector::Transaction(t)) =
                r.consistency_selector
            {
                cx.set_transaction(Some(t));
            }
            cx.push(DocAction::List, target, "list");
            Ok(cx.finish())
        }
        Method::CreateDocument => {
            let r: CreateDocumentRequest = decode("CreateDocumentRequest", message)?;
            let (db, parent) = parent_of_call("parent", &r.parent)?;
            if r.collection_id.is_empty() {
                return Err(ClassifyError::Missing("collection_id".into()));
            }
            let collection = child("collection_id", &parent, &r.collection_id)?;
            let doc = r
                .document
                .as_ref()
                .ok_or_else(|| ClassifyError::Missing("document".into()))?;
            if !doc.name.is_empty() {
                return Err(ClassifyError::Invalid {
                    field: "document.name".into(),
                    reason: "must be empty; name the document with `document_id`".into(),
                });
            }
            let mut cx = Ctx::new(method, db, opts);
            cx.create(
                collection,
                &r.document_id,
                "document_id",
                FieldsIn::Proto(&doc.fields),
            )?;
            Ok(cx.finish())
        }
        Method::UpdateDocument => {
            let r: UpdateDocumentRequest = decode("UpdateDocumentRequest", message)?;
            let doc = r
                .document
                .as_ref()
                .ok_or_else(|| ClassifyError::Missing("document".into()))?;
            let (db, _) = document_of_call("document.name", &doc.name)?;
            let (exists, update_time) = precondition(r.current_document.as_ref());
            let mut cx = Ctx::new(method, db, opts);
            cx.write(WriteIn {
                label: String::new(),
                kind: WriteKind::Update {
                    name: &doc.name,
                    fields: FieldsIn::Proto(&doc.fields),
                },
                kind_label: "document.name",
                mask: r
                    .update_mask
                    .as_ref()
                    .map(|m| m.field_paths.iter().map(String::as_str).collect()),
                mask_label: "update_mask.field_paths",
                transforms: Vec::new(),
                transforms_label: "",
                exists,
                update_time,
            })?;
            Ok(cx.finish())
        }
        Method::DeleteDocument => {
            let r: DeleteDocumentRequest = decode("DeleteDocumentRequest", message)?;
            let (db, _) = document_of_call("name", &r.name)?;
            let (exists, update_time) = precondition(r.current_document.as_ref());
            let mut cx = Ctx::new(method, db, opts);
            cx.write(WriteIn {
                label: String::new(),
                kind: WriteKind::Delete { name: &r.name },
                kind_label: "name",
                mask: None,
                mask_label: "",
                transforms: Vec::new(),
                transforms_label: "",
                exists,
                update_time,
            })?;
            Ok(cx.finish())
        }
        Method::BatchGetDocuments => {
            let r: BatchGetDocumentsRequest = decode("BatchGetDocumentsRequest", message)?;
            let db = database_of_call("database", &r.database)?;
            let mut cx = Ctx::new(method, db, opts);
            use batch_get_documents_request::ConsistencySelector as C;
            match r.consistency_selector {
                Some(C::Transaction(t)) => cx.set_transaction(Some(t)),
                Some(C::NewTransaction(o)) => cx.begin_transaction(retry_of(&o)),
                Some(C::ReadTime(_)) | None => {}
            }
            for (i, name) in r.documents.iter().enumerate() {
                let path = cx.document(&format!("documents[{i}]"), name)?;
                cx.push(DocAction::Get, Target::Document(path), "get");
            }
            Ok(cx.finish())
        }
        Method::BeginTransaction => {
            let r: BeginTransactionRequest = decode("BeginTransactionRequest", message)?;
            let db = database_of_call("database", &r.database)?;
            let mut cx = Ctx::new(method, db, opts);
            cx.begin_transaction(r.options.as_ref().and_then(retry_of));
            Ok(cx.finish())
        }
        Method::Commit => {
            let r: CommitRequest = decode("CommitRequest", message)?;
            let db = database_of_call("database", &r.database)?;
            let mut cx = Ctx::new(method, db, opts);
            cx.set_transaction(Some(r.transaction));
            proto_writes(&mut cx, &r.writes)?;
            Ok(cx.finish())
        }
        Method::BatchWrite => {
            let r: BatchWriteRequest = decode("BatchWriteRequest", message)?;
            let db = database_of_call("database", &r.database)?;
            let mut cx = Ctx::new(method, db, opts);
            proto_writes(&mut cx, &r.writes)?;
            Ok(cx.finish())
        }
        Method::Rollback => {
            let r: RollbackRequest = decode("RollbackRequest", message)?;
            let db = database_of_call("database", &r.database)?;
            if r.transaction.is_empty() {
                return Err(ClassifyError::Missing("transaction".into()));
            }
            let mut cx = Ctx::new(method, db, opts);
            cx.set_transaction(Some(r.transaction));
            Ok(cx.finish())
        }
        Method::RunQuery => {
            let r: RunQueryRequest = decode("RunQueryRequest", message)?;
            let (db, parent) = parent_of_call("parent", &r.parent)?;
            let mut cx = Ctx::new(method, db, opts);
            use run_query_request::ConsistencySelector as C;
            match r.consistency_selector {
                Some(C::Transaction(t)) => cx.set_transaction(Some(t)),
                Some(C::NewTransaction(o)) => cx.begin_transaction(retry_of(&o)),
                Some(C::ReadTime(_)) | None => {}
            }
            let Some(run_query_request::QueryType::StructuredQuery(q)) = &r.query_type else {
                return Err(ClassifyError::Missing("structured_query".into()));
            };
            let from = selectors(q);
            cx.query(
                DocAction::Query,
                "query",
                &parent,
                &from,
                "structured_query.from",
                None,
            )?;
            Ok(cx.finish())
        }
        Method::RunAggregationQuery => {
            let r: RunAggregationQueryRequest = decode("RunAggregationQueryRequest", message)?;
            let (db, parent) = parent_of_call("parent", &r.parent)?;
            let mut cx = Ctx::new(method, db, opts);
            use run_aggregation_query_request::ConsistencySelector as C;
            match r.consistency_selector {
                Some(C::Transaction(t)) => cx.set_transaction(Some(t)),
                Some(C::NewTransaction(o)) => cx.begin_transaction(retry_of(&o)),
                Some(C::ReadTime(_)) | None => {}
            }
            let Some(run_aggregation_query_request::QueryType::StructuredAggregationQuery(a)) =
                &r.query_type
            else {
                return Err(ClassifyError::Missing(
                    "structured_aggregation_query".into(),
                ));
            };
            let Some(structured_aggregation_query::QueryType::StructuredQuery(q)) = &a.query_type
            else {
                return Err(ClassifyError::Missing(
                    "structured_aggregation_query.structured_query".into(),
                ));
            };
            let from = selectors(q);
            cx.query(
                DocAction::Query,
                "aggregation",
                &parent,
                &from,
                "structured_aggregation_query.structured_query.from",
                None,
            )?;
            Ok(cx.finish())
        }
        Method::PartitionQuery => {
            let r: PartitionQueryRequest = decode("PartitionQueryRequest", message)?;
            let (db, parent) = parent_of_call("parent", &r.parent)?;
            let mut cx = Ctx::new(method, db, opts);
            let Some(partition_query_request::QueryType::StructuredQuery(q)) = &r.query_type else {
                return Err(ClassifyError::Missing("structured_query".into()));
            };
            let from = selectors(q);
            cx.query(
                DocAction::Query,
                "query",
                &parent,
                &from,
                "structured_query.from",
                None,
            )?;
            Ok(cx.finish())
        }
        Method::ListCollectionIds => {
            let r: ListCollectionIdsRequest = decode("ListCollectionIdsRequest", message)?;
            let (db, parent) = parent_of_call("parent", &r.parent)?;
            let mut cx = Ctx::new(method, db, opts);
            cx.push(
                DocAction::List,
                Target::CollectionIds { parent },
                "collection_ids",
            );
            Ok(cx.finish())
        }
        Method::Write => {
            let r: WriteRequest = decode("WriteRequest", message)?;
            let db = stream_database(&r.database, stream_db)?;
            let mut cx = Ctx::new(method, db, opts);
            proto_writes(&mut cx, &r.writes)?;
            Ok(cx.finish())
        }
        Method::Listen => {
            let r: ListenRequest = decode("ListenRequest", message)?;
            let db = stream_database(&r.database, stream_db)?;
            let mut cx = Ctx::new(method, db, opts);
            match &r.target_change {
                None => {}
                Some(listen_request::TargetChange::RemoveTarget(id)) => {
                    cx.out.listen_remove_targets.push(*id);
                }
                Some(listen_request::TargetChange::AddTarget(t)) => {
                    let id = Some(t.target_id);
                    match &t.target_type {
                        None => {
                            return Err(ClassifyError::Missing(
                                "add_target.query or add_target.documents".into(),
                            ));
                        }
                        Some(target::TargetType::Documents(d)) => {
                            for (i, name) in d.documents.iter().enumerate() {
                                let path = cx.document(
                                    &format!("add_target.documents.documents[{i}]"),
                                    name,
                                )?;
                                cx.out.accesses.push(Access {
                                    action: DocAction::Listen,
                                    target: Target::Document(path),
                                    operation: "documents",
                                    write: None,
                                    listen_target: id,
                                });
                            }
                        }
                        Some(target::TargetType::Query(q)) => {
                            let parent = cx.parent("add_target.query.parent", &q.parent)?;
                            let Some(target::query_target::QueryType::StructuredQuery(sq)) =
                                &q.query_type
                            else {
                                return Err(ClassifyError::Missing(
                                    "add_target.query.structured_query".into(),
                                ));
                            };
                            let from = selectors(sq);
                            cx.query(
                                DocAction::Listen,
                                "query",
                                &parent,
                                &from,
                                "add_target.query.structured_query.from",
                                id,
                            )?;
                        }
                    }
                }
            }
            Ok(cx.finish())
        }
    }
}

/// The collection `ListDocuments` lists. An empty collection id (list
/// every collection's documents) is refused here: a REST path always
/// names its collection, and the gRPC front end makes that case a
/// [`Target::AnyCollection`] before asking.
pub(crate) fn list_collection(
    parent: &DocPath,
    collection_id: &str,
    field: &str,
) -> Result<DocPath> {
    if collection_id.is_empty() {
        return Err(ClassifyError::Unsupported(format!(
            "`{field}` is required: listing the documents of every collection at once is not supported"
        )));
    }
    child(field, parent, collection_id)
}

fn stream_database(name: &str, stream_db: Option<&DatabaseName>) -> Result<DatabaseName> {
    match (name.is_empty(), stream_db) {
        (true, Some(db)) => Ok(db.clone()),
        _ => database_of_call("database", name),
    }
}

fn selectors(q: &pb::StructuredQuery) -> Vec<(&str, bool)> {
    q.from
        .iter()
        .map(|s| (s.collection_id.as_str(), s.all_descendants))
        .collect()
}

fn retry_of(o: &pb::TransactionOptions) -> Option<Bytes> {
    match &o.mode {
        Some(pb::transaction_options::Mode::ReadWrite(rw)) => Some(rw.retry_transaction.clone()),
        _ => None,
    }
}

fn precondition(p: Option<&pb::Precondition>) -> (Option<bool>, bool) {
    use pb::precondition::ConditionType;
    match p.and_then(|p| p.condition_type) {
        Some(ConditionType::Exists(e)) => (Some(e), false),
        Some(ConditionType::UpdateTime(_)) => (None, true),
        None => (None, false),
    }
}

fn proto_writes(cx: &mut Ctx<'_>, writes: &[pb::Write]) -> Result<()> {
    use pb::write::Operation;
    for (i, w) in writes.iter().enumerate() {
        let label = format!("writes[{i}].");
        let (kind, kind_label) = match &w.operation {
            None => {
                return Err(ClassifyError::Missing(format!(
                    "{label}update, {label}delete or {label}transform"
                )));
            }
            Some(Operation::Update(doc)) => (
                WriteKind::Update {
                    name: &doc.name,
                    fields: FieldsIn::Proto(&doc.fields),
                },
                "update.name",
            ),
            Some(Operation::Delete(name)) => (WriteKind::Delete { name }, "delete"),
            Some(Operation::Transform(t)) => (
                WriteKind::Transform { name: &t.document },
                "transform.document",
            ),
        };
        let (transforms, transforms_label) = match &w.operation {
            Some(Operation::Transform(t)) => (&t.field_transforms, "transform.field_transforms"),
            _ => (&w.update_transforms, "update_transforms"),
        };
        let mut pairs = Vec::with_capacity(transforms.len());
        for (j, t) in transforms.iter().enumerate() {
            let kind = transform_kind(t).ok_or_else(|| {
                ClassifyError::Missing(format!("{label}{transforms_label}[{j}] transform type"))
            })?;
            pairs.push((t.field_path.as_str(), kind));
        }
        let (exists, update_time) = precondition(w.current_document.as_ref());
        cx.write(WriteIn {
            label,
            kind,
            kind_label,
            mask: w
                .update_mask
                .as_ref()
                .map(|m| m.field_paths.iter().map(String::as_str).collect()),
            mask_label: "update_mask.field_paths",
            transforms: pairs,
            transforms_label,
            exists,
            update_time,
        })?;
    }
    Ok(())
}

/// The transaction id a response message carries, if any: from
/// `BeginTransaction`, or the first response of a `BatchGetDocuments`,
/// `RunQuery` or `RunAggregationQuery` that began one. `None` for other
/// methods, messages that do not decode, and empty ids.
pub fn transaction_in_response(method: Method, message: &[u8]) -> Option<Bytes> {
    let t = match method {
        Method::BeginTransaction => {
            pb::BeginTransactionResponse::decode(message)
                .ok()?
                .transaction
        }
        Method::BatchGetDocuments => {
            pb::BatchGetDocumentsResponse::decode(message)
                .ok()?
                .transaction
        }
        Method::RunQuery => pb::RunQueryResponse::decode(message).ok()?.transaction,
        Method::RunAggregationQuery => {
            pb::RunAggregationQueryResponse::decode(message)
                .ok()?
                .transaction
        }
        _ => return None,
    };
    (!t.is_empty()).then_some(t)
}
