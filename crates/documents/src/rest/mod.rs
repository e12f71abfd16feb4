//! The Firestore REST v1 surface: routes under
//! `/v1/projects/{p}/databases/{d}/documents`, their query parameters and
//! JSON bodies, classified into the same [`Classified`] as gRPC calls.
//!
//! Where Google's front end could read a request two ways, Latchkey
//! refuses it rather than guess: `%2F` inside an id, a `:verb` on a route
//! that has none, a parameter or JSON key given twice (in either spelling),
//! unknown parameters and fields, a `+` in a parameter Latchkey decides on.

pub(crate) mod json;
pub mod proto_json;
mod tap;

use serde_json::Value as Json;

use crate::classify::{
    Classified, ClassifyError, ClassifyOptions, Ctx, DocAction, FieldsIn, Target, WriteIn,
    WriteKind, list_collection,
};
use crate::grpc::Method;
use crate::names::{DatabaseName, DocPath, NameError};
use json::{JsonObj, decode_base64, parse_strict};
pub use tap::{RestTransactionTap, TAP_LIMIT};

type Result<T, E = ClassifyError> = std::result::Result<T, E>;

/// A routed REST request: which RPC it is and the names in its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCall {
    /// The RPC the route maps to.
    pub method: Method,
    /// The database in the path.
    pub database: DatabaseName,
    /// The path after `documents`: the document for get, update and
    /// delete; the collection for list and create; the parent (a document
    /// or the root) for `:runQuery`, `:runAggregationQuery`,
    /// `:partitionQuery` and `:listCollectionIds`; the root for the
    /// database-wide verbs (`:commit`, `:batchGet`, ...).
    pub path: DocPath,
    /// Query parameters, percent-decoded, names in lowerCamelCase
    /// (`update_mask.field_paths` becomes `updateMask.fieldPaths`), in order.
    pub params: Vec<(String, String)>,
}

/// Parameters Google's front end accepts on every call; Latchkey ignores them.
const SYSTEM_PARAMS: &[&str] = &[
    "alt",
    "$alt",
    "key",
    "prettyPrint",
    "$prettyPrint",
    "fields",
    "$fields",
    "$.xgafv",
    "quotaUser",
    "$quotaUser",
    "uploadType",
    "uploadProtocol",
    "accessToken",
    "oauthToken",
    "callback",
    "$callback",
];

/// Parameters whose value Latchkey decides on; these may not contain a
/// raw `+` (Google may read it as a space).
const DECIDING_PARAMS: &[&str] = &[
    "documentId",
    "updateMask.fieldPaths",
    "currentDocument.exists",
    "currentDocument.updateTime",
];

/// Parameters that may be given more than once.
const REPEATED_PARAMS: &[&str] = &["updateMask.fieldPaths", "mask.fieldPaths"];

fn allowed_params(method: Method) -> &'static [&'static str] {
    match method {
        Method::GetDocument => &["mask.fieldPaths", "transaction", "readTime"],
        Method::ListDocuments => &[
            "pageSize",
            "pageToken",
            "orderBy",
            "mask.fieldPaths",
            "transaction",
            "readTime",
            "showMissing",
        ],
        Method::CreateDocument => &["documentId", "mask.fieldPaths"],
        Method::UpdateDocument => &[
            "updateMask.fieldPaths",
            "mask.fieldPaths",
            "currentDocument.exists",
            "currentDocument.updateTime",
        ],
        Method::DeleteDocument => &["currentDocument.exists", "currentDocument.updateTime"],
        _ => &[],
    }
}

impl RestCall {
    /// Routes a request. `path` is the request path (starting `/v1/`),
    /// still percent-encoded; `query` the raw query string.
    pub fn parse(method: &http::Method, path: &str, query: Option<&str>) -> Result<RestCall> {
        let no_route = || ClassifyError::NoRoute {
            method: method.to_string(),
            path: crate::names::truncate(path),
        };
        let rest = path.strip_prefix("/v1/").ok_or_else(no_route)?;
        let mut raw: Vec<&str> = rest.split('/').collect();
        // A custom verb (`:commit`) ends the last segment. A literal `:`
        // there always starts a verb; an id with a colon must encode it.
        let mut verb = None;
        if let Some(last) = raw.last_mut()
            && let Some((seg, v)) = last.split_once(':')
        {
            if v.contains(':') {
                return Err(no_route());
            }
            *last = seg;
            verb = Some(v);
        }
        let mut segments = Vec::with_capacity(raw.len());
        for s in &raw {
            segments.push(decode_segment(s, path)?);
        }
        let (Some("projects"), Some(p), Some("databases"), Some(d), Some("documents")) = (
            segments.first().map(String::as_str),
            segments.get(1),
            segments.get(2).map(String::as_str),
            segments.get(3),
            segments.get(4).map(String::as_str),
        ) else {
            return Err(no_route());
        };
        let name_err = |source| ClassifyError::Name {
            field: "path".into(),
            source,
        };
        let database = DatabaseName::new(p, d).map_err(name_err)?;
        let doc_path = DocPath::from_segments(segments[5..].to_vec()).map_err(name_err)?;

        let call = match (method.as_str(), verb) {
            ("GET", None) if doc_path.is_document() => Method::GetDocument,
            ("GET", None) if doc_path.is_collection() => Method::ListDocuments,
            ("POST", None) if doc_path.is_collection() => Method::CreateDocument,
            ("PATCH", None) if doc_path.is_document() => Method::UpdateDocument,
            ("DELETE", None) if doc_path.is_document() => Method::DeleteDocument,
            ("POST", Some(v)) if doc_path.is_root() && database_verb(v).is_some() => {
                database_verb(v).ok_or_else(no_route)?
            }
            ("POST", Some(v)) if !doc_path.is_collection() && parent_verb(v).is_some() => {
                parent_verb(v).ok_or_else(no_route)?
            }
            (_, Some("listen" | "write")) => {
                return Err(ClassifyError::Unsupported(
                    "Listen and Write streams are only available over gRPC".into(),
                ));
            }
            _ => return Err(no_route()),
        };
        let params = parse_query(call, query.unwrap_or(""))?;
        Ok(RestCall {
            method: call,
            database,
            path: doc_path,
            params,
        })
    }

    /// The first value of a parameter (names in lowerCamelCase).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter.
    pub fn param_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn database_verb(v: &str) -> Option<Method> {
    Some(match v {
        "batchGet" => Method::BatchGetDocuments,
        "beginTransaction" => Method::BeginTransaction,
        "commit" => Method::Commit,
        "rollback" => Method::Rollback,
        "batchWrite" => Method::BatchWrite,
        _ => return None,
    })
}

fn parent_verb(v: &str) -> Option<Method> {
    Some(match v {
        "runQuery" => Method::RunQuery,
        "runAggregationQuery" => Method::RunAggregationQuery,
        "partitionQuery" => Method::PartitionQuery,
        "listCollectionIds" => Method::ListCollectionIds,
        _ => return None,
    })
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Percent-decodes; `None` for a malformed escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One path segment, percent-decoded and checked. `%2F` is refused:
/// Google leaves it encoded inside multi-segment names, so it would name a
/// different id than it seems to.
fn decode_segment(s: &str, path: &str) -> Result<String> {
    let invalid = |reason: String| ClassifyError::Invalid {
        field: "path".into(),
        reason,
    };
    if s.contains("%2F") || s.contains("%2f") {
        return Err(invalid(
            "an encoded `/` (%2F) is not allowed in an id".into(),
        ));
    }
    if s.is_empty() {
        return Err(ClassifyError::Name {
            field: "path".into(),
            source: NameError::EmptyId(crate::names::truncate(path)),
        });
    }
    let decoded = percent_decode(s)
        .ok_or_else(|| invalid("malformed percent-encoding or not UTF-8".into()))?;
    crate::names::check_id(&decoded).map_err(|source| ClassifyError::Name {
        field: "path".into(),
        source,
    })?;
    Ok(decoded)
}

fn normalise_param(name: &str) -> String {
    name.split('.')
        .map(json::to_camel)
        .collect::<Vec<_>>()
        .join(".")
}

fn parse_query(method: Method, query: &str) -> Result<Vec<(String, String)>> {
    let allowed = allowed_params(method);
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_k, raw_v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |reason: &str| ClassifyError::Invalid {
            field: crate::names::truncate(raw_k),
            reason: format!("query parameter {reason}"),
        };
        let k = percent_decode(raw_k).ok_or_else(|| bad("has malformed percent-encoding"))?;
        let k = normalise_param(&k);
        if SYSTEM_PARAMS.contains(&k.as_str()) {
            continue;
        }
        if !allowed.contains(&k.as_str()) {
            return Err(bad(&format!("not accepted by {method}")));
        }
        if DECIDING_PARAMS.contains(&k.as_str()) && raw_v.contains('+') {
            return Err(bad("values must encode `+` as %2B (or a space as %20)"));
        }
        if !REPEATED_PARAMS.contains(&k.as_str()) && out.iter().any(|(o, _)| *o == k) {
            return Err(bad("given more than once"));
        }
        let v = percent_decode(raw_v).ok_or_else(|| bad("has malformed percent-encoding"))?;
        out.push((k, v));
    }
    Ok(out)
}

/// Fields of the JSON messages Latchkey reads (lowerCamelCase).
const DOCUMENT: &[&str] = &["name", "fields", "createTime", "updateTime"];
const WRITE: &[&str] = &[
    "update",
    "delete",
    "transform",
    "updateMask",
    "updateTransforms",
    "currentDocument",
];
const MASK: &[&str] = &["fieldPaths"];
const PRECONDITION: &[&str] = &["exists", "updateTime"];
const DOCUMENT_TRANSFORM: &[&str] = &["document", "fieldTransforms"];
const FIELD_TRANSFORM: &[&str] = &[
    "fieldPath",
    "setToServerValue",
    "increment",
    "maximum",
    "minimum",
    "appendMissingElements",
    "removeAllFromArray",
];
const TRANSACTION_OPTIONS: &[&str] = &["readOnly", "readWrite"];
const READ_ONLY: &[&str] = &["readTime"];
const READ_WRITE: &[&str] = &["retryTransaction"];
const STRUCTURED_QUERY: &[&str] = &[
    "select",
    "from",
    "where",
    "orderBy",
    "startAt",
    "endAt",
    "offset",
    "limit",
    "findNearest",
];
const COLLECTION_SELECTOR: &[&str] = &["collectionId", "allDescendants"];
const AGGREGATION_QUERY: &[&str] = &["structuredQuery", "aggregations"];

/// Classifies a routed REST request with its (complete) JSON body.
pub fn classify_rest(
    call: &RestCall,
    body: &[u8],
    opts: &ClassifyOptions<'_>,
) -> Result<Classified> {
    let method = call.method;
    let mut cx = Ctx::new(method, call.database.clone(), opts);
    let body_json = match method {
        Method::GetDocument | Method::ListDocuments | Method::DeleteDocument => {
            if !body.iter().all(u8::is_ascii_whitespace) {
                return Err(ClassifyError::Invalid {
                    field: "request body".into(),
                    reason: format!("{method} takes no body"),
                });
            }
            Json::Object(serde_json::Map::new())
        }
        _ => parse_strict(body)?,
    };
    match method {
        Method::GetDocument => {
            consistency_params(&mut cx, call)?;
            cx.push(DocAction::Get, Target::Document(call.path.clone()), "get");
        }
        Method::ListDocuments => {
            consistency_params(&mut cx, call)?;
            let parent = call.path.parent().unwrap_or_default();
            let id = call.path.last().unwrap_or("");
            let collection = list_collection(&parent, id, "collectionId")?;
            cx.push(DocAction::List, Target::Collection(collection), "list");
        }
        Method::CreateDocument => {
            let doc = JsonObj::new(&body_json, "", DOCUMENT)?;
            if doc.str("name")?.is_some_and(|n| !n.is_empty()) {
                return Err(ClassifyError::Invalid {
                    field: "name".into(),
                    reason: "must be empty; name the document with `documentId`".into(),
                });
            }
            let id = call.param("documentId").unwrap_or("");
            cx.create(
                call.path.clone(),
                id,
                "documentId",
                FieldsIn::Json(doc.map("fields")?),
            )?;
        }
        Method::UpdateDocument => {
            let doc = JsonObj::new(&body_json, "", DOCUMENT)?;
            let name = call.database.resource_name(&call.path);
            if let Some(n) = doc.str("name")?
                && !n.is_empty()
                && n != name
            {
                return Err(ClassifyError::Invalid {
                    field: "name".into(),
                    reason: "differs from the document named in the path".into(),
                });
            }
            let (exists, update_time) = precondition_params(call)?;
            let mask: Vec<&str> = call.param_all("updateMask.fieldPaths").collect();
            cx.write(WriteIn {
                label: String::new(),
                kind: WriteKind::Update {
                    name: &name,
                    fields: FieldsIn::Json(doc.map("fields")?),
                },
                kind_label: "name",
                mask: (!mask.is_empty()).then_some(mask),
                mask_label: "updateMask.fieldPaths",
                transforms: Vec::new(),
                transforms_label: "",
                exists,
                update_time,
            })?;
        }
        Method::DeleteDocument => {
            let name = call.database.resource_name(&call.path);
            let (exists, update_time) = precondition_params(call)?;
            cx.write(WriteIn {
                label: String::new(),
                kind: WriteKind::Delete { name: &name },
                kind_label: "name",
                mask: None,
                mask_label: "",
                transforms: Vec::new(),
                transforms_label: "",
                exists,
                update_time,
            })?;
        }
        Method::BatchGetDocuments => {
            let b = JsonObj::new(
                &body_json,
                "",
                &[
                    "documents",
                    "mask",
                    "transaction",
                    "newTransaction",
                    "readTime",
                ],
            )?;
            consistency_body(&mut cx, &b)?;
            for (i, name) in b.strings("documents")?.into_iter().enumerate() {
                let path = cx.document(&format!("documents[{i}]"), name)?;
                cx.push(DocAction::Get, Target::Document(path), "get");
            }
        }
        Method::BeginTransaction => {
            let b = JsonObj::new(&body_json, "", &["options"])?;
            let retry = match b.obj("options", TRANSACTION_OPTIONS)? {
                Some(o) => retry_of(&o)?,
                None => None,
            };
            cx.begin_transaction(retry);
        }
        Method::Commit => {
            let b = JsonObj::new(&body_json, "", &["writes", "transaction"])?;
            cx.set_transaction(b.bytes("transaction")?);
            json_writes(&mut cx, &b)?;
        }
        Method::BatchWrite => {
            let b = JsonObj::new(&body_json, "", &["writes", "labels"])?;
            json_writes(&mut cx, &b)?;
        }
        Method::Rollback => {
            let b = JsonObj::new(&body_json, "", &["transaction"])?;
            let t = b
                .bytes("transaction")?
                .ok_or_else(|| ClassifyError::Missing("transaction".into()))?;
            cx.set_transaction(Some(t));
        }
        Method::RunQuery | Method::PartitionQuery => {
            let known: &[&str] = if method == Method::RunQuery {
                &[
                    "structuredQuery",
                    "transaction",
                    "newTransaction",
                    "readTime",
                    "explainOptions",
                ]
            } else {
                &[
                    "structuredQuery",
                    "partitionCount",
                    "pageToken",
                    "pageSize",
                    "readTime",
                ]
            };
            let b = JsonObj::new(&body_json, "", known)?;
            consistency_body(&mut cx, &b)?;
            let q = b
                .obj("structuredQuery", STRUCTURED_QUERY)?
                .ok_or_else(|| ClassifyError::Missing("structuredQuery".into()))?;
            let from = selectors(&q)?;
            cx.query(
                DocAction::Query,
                "query",
                &call.path,
                &from,
                "structuredQuery.from",
                None,
            )?;
        }
        Method::RunAggregationQuery => {
            let b = JsonObj::new(
                &body_json,
                "",
                &[
                    "structuredAggregationQuery",
                    "transaction",
                    "newTransaction",
                    "readTime",
                    "explainOptions",
                ],
            )?;
            consistency_body(&mut cx, &b)?;
            let a = b
                .obj("structuredAggregationQuery", AGGREGATION_QUERY)?
                .ok_or_else(|| ClassifyError::Missing("structuredAggregationQuery".into()))?;
            let q = a.obj("structuredQuery", STRUCTURED_QUERY)?.ok_or_else(|| {
                ClassifyError::Missing("structuredAggregationQuery.structuredQuery".into())
            })?;
            let from = selectors(&q)?;
            cx.query(
                DocAction::Query,
                "aggregation",
                &call.path,
                &from,
                "structuredAggregationQuery.structuredQuery.from",
                None,
            )?;
        }
        Method::ListCollectionIds => {
            JsonObj::new(&body_json, "", &["pageSize", "pageToken", "readTime"])?;
            cx.push(
                DocAction::List,
                Target::CollectionIds {
                    parent: call.path.clone(),
                },
                "collection_ids",
            );
        }
        Method::Write | Method::Listen => {
            return Err(ClassifyError::Unsupported(
                "Listen and Write streams are only available over gRPC".into(),
            ));
        }
    }
    Ok(cx.finish())
}

fn consistency_params(cx: &mut Ctx<'_>, call: &RestCall) -> Result<()> {
    if call.param("transaction").is_some() && call.param("readTime").is_some() {
        return Err(ClassifyError::Invalid {
            field: "transaction".into(),
            reason: "give `transaction` or `readTime`, not both".into(),
        });
    }
    if let Some(t) = call.param("transaction").filter(|t| !t.is_empty()) {
        let t = decode_base64(t).ok_or_else(|| ClassifyError::Invalid {
            field: "transaction".into(),
            reason: "expected base64".into(),
        })?;
        cx.set_transaction(Some(t));
    }
    Ok(())
}

fn consistency_body(cx: &mut Ctx<'_>, b: &JsonObj<'_>) -> Result<()> {
    let given: Vec<&str> = ["transaction", "newTransaction", "readTime"]
        .into_iter()
        .filter(|k| b.get(k).is_some())
        .collect();
    if given.len() > 1 {
        return Err(ClassifyError::Invalid {
            field: given.join(", "),
            reason: "give at most one of `transaction`, `newTransaction` and `readTime`".into(),
        });
    }
    cx.set_transaction(b.bytes("transaction")?);
    if let Some(o) = b.obj("newTransaction", TRANSACTION_OPTIONS)? {
        let retry = retry_of(&o)?;
        cx.begin_transaction(retry);
    }
    Ok(())
}

fn retry_of(o: &JsonObj<'_>) -> Result<Option<bytes::Bytes>> {
    if o.get("readOnly").is_some() && o.get("readWrite").is_some() {
        return Err(ClassifyError::Invalid {
            field: o.field("readWrite"),
            reason: "give `readOnly` or `readWrite`, not both".into(),
        });
    }
    o.obj("readOnly", READ_ONLY)?;
    match o.obj("readWrite", READ_WRITE)? {
        Some(rw) => rw.bytes("retryTransaction"),
        None => Ok(None),
    }
}

fn precondition_params(call: &RestCall) -> Result<(Option<bool>, bool)> {
    let exists = call.param("currentDocument.exists");
    let update_time = call.param("currentDocument.updateTime");
    if exists.is_some() && update_time.is_some() {
        return Err(ClassifyError::Invalid {
            field: "currentDocument".into(),
            reason: "give `exists` or `updateTime`, not both".into(),
        });
    }
    let exists = match exists {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ClassifyError::Invalid {
                field: "currentDocument.exists".into(),
                reason: "expected true or false".into(),
            });
        }
    };
    Ok((exists, update_time.is_some()))
}

fn selectors<'a>(q: &JsonObj<'a>) -> Result<Vec<(&'a str, bool)>> {
    let mut out = Vec::new();
    for (i, s) in q.array("from")?.iter().enumerate() {
        let s = JsonObj::new(s, &format!("{}[{i}]", q.field("from")), COLLECTION_SELECTOR)?;
        out.push((
            s.str("collectionId")?.unwrap_or(""),
            s.bool("allDescendants")?.unwrap_or(false),
        ));
    }
    Ok(out)
}

fn json_writes(cx: &mut Ctx<'_>, b: &JsonObj<'_>) -> Result<()> {
    for (i, w) in b.array("writes")?.iter().enumerate() {
        let label = format!("writes[{i}]");
        let w = JsonObj::new(w, &label, WRITE)?;
        let ops: Vec<&str> = ["update", "delete", "transform"]
            .into_iter()
            .filter(|k| w.get(k).is_some())
            .collect();
        let (kind, kind_label, transforms_json, transforms_label) = match ops.as_slice() {
            ["update"] => {
                let doc = w
                    .obj("update", DOCUMENT)?
                    .ok_or_else(|| ClassifyError::Missing(w.field("update")))?;
                let name = doc.str("name")?.unwrap_or("");
                (
                    WriteKind::Update {
                        name,
                        fields: FieldsIn::Json(doc.map("fields")?),
                    },
                    "update.name",
                    w.array("updateTransforms")?,
                    "updateTransforms",
                )
            }
            ["delete"] => (
                WriteKind::Delete {
                    name: w.str("delete")?.unwrap_or(""),
                },
                "delete",
                w.array("updateTransforms")?,
                "updateTransforms",
            ),
            ["transform"] => {
                let t = w
                    .obj("transform", DOCUMENT_TRANSFORM)?
                    .ok_or_else(|| ClassifyError::Missing(w.field("transform")))?;
                (
                    WriteKind::Transform {
                        name: t.str("document")?.unwrap_or(""),
                    },
                    "transform.document",
                    t.array("fieldTransforms")?,
                    "transform.fieldTransforms",
                )
            }
            [] => {
                return Err(ClassifyError::Missing(format!(
                    "{label}.update, {label}.delete or {label}.transform"
                )));
            }
            _ => {
                return Err(ClassifyError::Invalid {
                    field: label,
                    reason: "give one of `update`, `delete` and `transform`".into(),
                });
            }
        };
        let mut transforms = Vec::with_capacity(transforms_json.len());
        for (j, t) in transforms_json.iter().enumerate() {
            let t_label = format!("{label}.{transforms_label}[{j}]");
            let t = JsonObj::new(t, &t_label, FIELD_TRANSFORM)?;
            let kinds: Vec<&str> = FIELD_TRANSFORM[1..]
                .iter()
                .copied()
                .filter(|k| t.get(k).is_some())
                .collect();
            let [kind] = kinds.as_slice() else {
                return Err(ClassifyError::Invalid {
                    field: t_label,
                    reason: "give exactly one transform, such as `increment`".into(),
                });
            };
            let kind = match *kind {
                "setToServerValue" => "server_value",
                "increment" => "increment",
                "maximum" => "maximum",
                "minimum" => "minimum",
                "appendMissingElements" => "append_missing_elements",
                _ => "remove_all_from_array",
            };
            transforms.push((t.str("fieldPath")?.unwrap_or(""), kind));
        }
        let mask = w
            .obj("updateMask", MASK)?
            .map(|m| m.strings("fieldPaths"))
            .transpose()?;
        let (exists, update_time) = match w.obj("currentDocument", PRECONDITION)? {
            None => (None, false),
            Some(p) => {
                if p.get("exists").is_some() && p.get("updateTime").is_some() {
                    return Err(ClassifyError::Invalid {
                        field: p.field("exists"),
                        reason: "give `exists` or `updateTime`, not both".into(),
                    });
                }
                (p.bool("exists")?, p.get("updateTime").is_some())
            }
        };
        cx.write(WriteIn {
            label: format!("{label}."),
            kind,
            kind_label,
            mask,
            mask_label: "updateMask.fieldPaths",
            transforms,
            transforms_label,
            exists,
            update_time,
        })?;
    }
    Ok(())
}
