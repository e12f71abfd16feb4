//! Firestore resource names and field paths.
//!
//! A document is named `projects/{p}/databases/{d}/documents/{path}` where
//! `{path}` alternates collection ids and document ids (`flags/checkout`,
//! `teams/a/members/bob`). Every id is checked here once, so the rest of the
//! crate can trust a [`DocPath`]: no empty ids, no `.`/`..`, no reserved
//! `__x__` ids, nothing over Firestore's size limits.
//!
//! The checks are Firestore's, no stricter: Latchkey decides what Firestore
//! would serve and refuses only what it refuses (Google's emulator is the
//! reference; `crates/gateway/tests/firestore_boundary.rs` compares them).
//! One reserved form is served: a *document* id `__id{n}__`, where `{n}` is
//! a nonzero 64-bit integer written canonically (`__id7__`, `__id-5__`, not
//! `__id0__`, `__id007__` or `__id+5__`). Firestore stores it as the numeric
//! id `n` of Datastore (whose ids these are) and the clients sort it so;
//! each such id has exactly one spelling, so a policy resource names one
//! document. A *collection* id never has this exception.

use std::fmt;

use latchkey_core::{ResourceKind, ResourceRef, echo};

/// Longest document or collection id Firestore accepts, in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 1500;
/// Most segments a document path may have (Firestore nests at most 100 deep).
pub const MAX_SEGMENTS: usize = 100;
/// Longest field name (one field path segment), in UTF-8 bytes.
pub const MAX_FIELD_BYTES: usize = 1500;
/// Most segments a field path may have.
pub const MAX_FIELD_SEGMENTS: usize = 100;

/// Why a resource name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name does not have the `projects/{p}/databases/{d}/documents` shape.
    #[error(
        "`{}` is not a Firestore name: expected `projects/{{project}}/databases/{{database}}/documents[/...]`",
        echo(.0)
    )]
    Shape(String),
    /// An id is empty (two slashes in a row, or a trailing slash).
    #[error("empty id in `{}` (two slashes in a row, or a trailing slash)", echo(.0))]
    EmptyId(String),
    /// An id is `.` or `..`.
    #[error("`{}` is not allowed as an id", echo(.0))]
    DotId(String),
    /// An id matches Firestore's reserved `__.+__` pattern (and, for a
    /// document id, is not a numeric `__id{n}__` id).
    #[error("`{}` is a reserved id (ids matching `__.+__` are reserved)", echo(.0))]
    Reserved(String),
    /// An id is longer than Firestore allows.
    #[error("an id is {0} bytes long; the limit is 1500")]
    TooLong(usize),
    /// The path is nested deeper than Firestore allows.
    #[error("a path has {0} segments; the limit is 100")]
    TooDeep(usize),
    /// An id contains a `/` (possible only when ids are given one by one).
    #[error("`{}` contains `/`; ids cannot", echo(.0))]
    Slash(String),
    /// A project or database id is not acceptable.
    #[error("`{}` is not a valid project or database id", echo(.0))]
    BadDatabase(String),
    /// The name is not valid UTF-8.
    #[error("a name is not valid UTF-8")]
    NotUtf8,
}

/// A Firestore database: `projects/{project}/databases/{database}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatabaseName {
    /// The Google Cloud project id.
    pub project: String,
    /// The database id, e.g. `(default)`.
    pub database: String,
}

impl DatabaseName {
    /// A database name from its parts, checked like [`DatabaseName::parse`].
    pub fn new(project: &str, database: &str) -> Result<Self, NameError> {
        check_db_part(project)?;
        check_db_part(database)?;
        Ok(Self {
            project: project.to_owned(),
            database: database.to_owned(),
        })
    }

    /// Parses `projects/{project}/databases/{database}`.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "databases", d] => Self::new(p, d),
            _ => Err(NameError::Shape(name.to_owned())),
        }
    }

    /// `projects/{p}/databases/{d}/documents`, the parent of top-level collections.
    pub fn documents_root(&self) -> String {
        format!("{self}/documents")
    }

    /// The full resource name of `path` in this database.
    pub fn resource_name(&self, path: &DocPath) -> String {
        if path.is_root() {
            self.documents_root()
        } else {
            format!("{}/{path}", self.documents_root())
        }
    }
}

impl fmt::Display for DatabaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/databases/{}", self.project, self.database)
    }
}

fn check_db_part(part: &str) -> Result<(), NameError> {
    // Project ids may be domain-scoped (`example.com:proj`); database ids are
    // `(default)` or lowercase words. Anything printable without `/` is let
    // through: Firestore refuses what does not exist.
    let ok = !part.is_empty()
        && part.len() <= 128
        && part != "."
        && part != ".."
        && part.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(NameError::BadDatabase(part.to_owned()))
    }
}

/// A path inside a database: collection and document ids, alternating.
/// Empty is the database root. An odd number of segments names a
/// collection, an even (non-zero) number a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocPath {
    // INVARIANT: every segment passed `check_id`, and there are at most
    // MAX_SEGMENTS of them.
    segments: Vec<String>,
}

impl DocPath {
    /// The database root.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a `/`-separated path (`flags/checkout`); `""` is the root.
    pub fn parse(path: &str) -> Result<Self, NameError> {
        if path.is_empty() {
            return Ok(Self::root());
        }
        Self::from_segments(path.split('/').map(str::to_owned).collect())
    }

    /// A path from ids given one by one (each checked, none may contain `/`).
    pub fn from_segments(segments: Vec<String>) -> Result<Self, NameError> {
        if segments.len() > MAX_SEGMENTS {
            return Err(NameError::TooDeep(segments.len()));
        }
        for (i, s) in segments.iter().enumerate() {
            if s.contains('/') {
                return Err(NameError::Slash(s.clone()));
            }
            // Collection ids and document ids alternate, collection first.
            if i % 2 == 0 {
                check_collection_id(s)?;
            } else {
                check_document_id(s)?;
            }
        }
        Ok(Self { segments })
    }

    /// The ids, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether this is the database root (no segments).
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether this names a document: an even, non-zero number of segments.
    pub fn is_document(&self) -> bool {
        !self.segments.is_empty() && self.segments.len().is_multiple_of(2)
    }

    /// Whether this names a collection: an odd number of segments.
    pub fn is_collection(&self) -> bool {
        self.segments.len() % 2 == 1
    }

    /// The last id (a document's id or a collection's id); `None` at the root.
    pub fn last(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// The enclosing path (a document's collection, a collection's parent
    /// document or the root); `None` at the root.
    pub fn parent(&self) -> Option<DocPath> {
        let (_, rest) = self.segments.split_last()?;
        Some(Self {
            segments: rest.to_vec(),
        })
    }

    /// This path with one more id appended.
    pub fn child(&self, id: &str) -> Result<DocPath, NameError> {
        let mut segments = self.segments.clone();
        segments.push(id.to_owned());
        Self::from_segments(segments)
    }

    /// The collection id a document or collection belongs to: a
    /// collection's own id, a document's collection's id.
    pub fn collection_id(&self) -> Option<&str> {
        let n = self.segments.len();
        if n == 0 {
            None
        } else if n % 2 == 1 {
            self.segments.last().map(String::as_str)
        } else {
            self.segments.get(n - 2).map(String::as_str)
        }
    }

    /// The policy resource for this path: a `Document` or `Collection` whose
    /// id is `{database}/{path}`, with its whole parent chain up to the
    /// `Environment`; the root is the `Environment` itself.
    pub fn to_resource(&self, database: &str, environment: &str) -> ResourceRef {
        let mut resource = ResourceRef::new(ResourceKind::Environment, environment);
        // Build outermost first so each level wraps the one above it.
        for n in 1..=self.segments.len() {
            let kind = if n % 2 == 1 {
                ResourceKind::Collection
            } else {
                ResourceKind::Document
            };
            let path = self.segments[..n].join("/");
            let collection_id = if n % 2 == 1 {
                &self.segments[n - 1]
            } else {
                &self.segments[n - 2]
            };
            resource = ResourceRef::new(kind, format!("{database}/{path}"))
                .with_attr("path", path)
                .with_attr("collection_id", collection_id.as_str())
                .with_attr("database", database)
                .with_attr("environment", environment)
                .with_parent(resource);
        }
        resource
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

/// Checks one id whose place (collection or document) is not known yet:
/// what either place may hold passes, so the numeric `__id{n}__` form
/// does. A REST path checks each segment so before it knows its shape;
/// [`DocPath::from_segments`] then checks each by its place.
pub(crate) fn check_id(id: &str) -> Result<(), NameError> {
    check_document_id(id)
}

/// Checks a document id: `__.+__` is reserved except the numeric
/// `__id{n}__` form (see the module docs).
pub(crate) fn check_document_id(id: &str) -> Result<(), NameError> {
    check_common(id)?;
    if is_reserved(id) && !is_numeric_id(id) {
        return Err(NameError::Reserved(id.to_owned()));
    }
    Ok(())
}

/// Checks a collection id: every `__.+__` id is reserved.
pub(crate) fn check_collection_id(id: &str) -> Result<(), NameError> {
    check_common(id)?;
    if is_reserved(id) {
        return Err(NameError::Reserved(id.to_owned()));
    }
    Ok(())
}

fn check_common(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::EmptyId(id.to_owned()));
    }
    if id == "." || id == ".." {
        return Err(NameError::DotId(id.to_owned()));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(NameError::TooLong(id.len()));
    }
    Ok(())
}

/// Whether `id` matches `__.+__`: Google's emulator serves `__`, `___`
/// and `____` (the pairs may not overlap, and something must lie between
/// them) and refuses `_____`.
fn is_reserved(id: &str) -> bool {
    id.len() >= 5 && id.starts_with("__") && id.ends_with("__")
}

/// Whether `id` is `__id{n}__` with `{n}` a nonzero `i64` in canonical
/// decimal: an optional `-`, then digits without a leading zero. This is
/// exactly what Google's emulator serves (`__id-9223372036854775808__`
/// and `__id9223372036854775807__` yes; `__id0__`, `__id-0__`, `__id007__`,
/// `__id+5__`, `__id9223372036854775808__`, non-ASCII digits no).
pub fn is_numeric_id(id: &str) -> bool {
    let Some(n) = id.strip_prefix("__id").and_then(|s| s.strip_suffix("__")) else {
        return false;
    };
    let digits = n.strip_prefix('-').unwrap_or(n);
    let canonical = digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(digits.as_bytes().first(), Some(b'1'..=b'9'));
    // `parse` also takes a leading `+`; `canonical` has refused it already.
    canonical && n.parse::<i64>().is_ok_and(|v| v != 0)
}

/// Full resource names: `projects/{p}/databases/{d}/documents[/{path}]`.
#[derive(Debug)]
pub struct ResourceName;

impl ResourceName {
    /// Splits a full name into its database and the path inside it (empty
    /// for the `.../documents` root).
    pub fn parse(name: &str) -> Result<(DatabaseName, DocPath), NameError> {
        let mut parts = name.splitn(6, '/');
        let (Some("projects"), Some(p), Some("databases"), Some(d), Some("documents")) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(NameError::Shape(truncate(name)));
        };
        let database = DatabaseName::new(p, d)?;
        let path = match parts.next() {
            None => DocPath::root(),
            // `.../documents/` has an empty first id.
            Some(rest) => {
                let segments: Vec<String> = rest.split('/').map(str::to_owned).collect();
                if segments.len() > MAX_SEGMENTS {
                    return Err(NameError::TooDeep(segments.len()));
                }
                for s in &segments {
                    if s.is_empty() {
                        return Err(NameError::EmptyId(truncate(name)));
                    }
                }
                DocPath::from_segments(segments)?
            }
        };
        Ok((database, path))
    }

    /// Like [`ResourceName::parse`], for bytes that may not be UTF-8.
    pub fn parse_bytes(name: &[u8]) -> Result<(DatabaseName, DocPath), NameError> {
        std::str::from_utf8(name)
            .map_err(|_| NameError::NotUtf8)
            .and_then(Self::parse)
    }
}

/// Names echoed in errors are cut short so an error cannot be made huge.
pub fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Why a field path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    /// The path is empty, or has an empty segment (`a..b`, a trailing `.`).
    #[error("empty segment in field path {}", quote(.0))]
    Empty(String),
    /// A backtick-quoted segment is not closed.
    #[error("unclosed backtick in field path {}", quote(.0))]
    Unclosed(String),
    /// A backslash inside backticks is followed by something other than `\` or a backtick.
    #[error("bad escape in field path {}: only \\\\ and \\` may follow a backslash", quote(.0))]
    BadEscape(String),
    /// A character that needs backticks appears outside them.
    #[error("unexpected {} in field path {}; quote the segment with backticks", quote(&ch.to_string()), quote(path))]
    Unexpected {
        /// The field path.
        path: String,
        /// The character.
        ch: char,
    },
    /// A segment is longer than Firestore allows.
    #[error("a field name is {0} bytes long; the limit is 1500")]
    TooLong(usize),
    /// The path is nested deeper than allowed.
    #[error("a field path has more than 100 segments")]
    TooDeep,
}

/// User input in backticks; input holding a backtick in double backticks.
fn quote(s: &str) -> String {
    let s = echo(s);
    if s.to_string().contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// A Firestore field path such as `` address.`zip-code` ``: field names
/// separated by dots, each either simple (`[A-Za-z_][A-Za-z_0-9]*`) or
/// quoted in backticks with `\\` and `` \` `` escapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    // INVARIANT: non-empty; no segment is empty or over MAX_FIELD_BYTES.
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses the dotted, backtick-quoting syntax.
    pub fn parse(path: &str) -> Result<Self, FieldPathError> {
        let err_path = || truncate(path);
        let mut segments = Vec::new();
        let mut chars = path.chars().peekable();
        loop {
            if segments.len() >= MAX_FIELD_SEGMENTS {
                return Err(FieldPathError::TooDeep);
            }
            let mut seg = String::new();
            match chars.peek() {
                None | Some('.') => return Err(FieldPathError::Empty(err_path())),
                Some('`') => {
                    chars.next();
                    loop {
                        match chars.next() {
                            None => return Err(FieldPathError::Unclosed(err_path())),
                            Some('`') => break,
                            Some('\\') => match chars.next() {
                                Some(c @ ('\\' | '`')) => seg.push(c),
                                _ => return Err(FieldPathError::BadEscape(err_path())),
                            },
                            Some(c) => seg.push(c),
                        }
                        if seg.len() > MAX_FIELD_BYTES {
                            return Err(FieldPathError::TooLong(seg.len()));
                        }
                    }
                    if seg.is_empty() {
                        return Err(FieldPathError::Empty(err_path()));
                    }
                }
                Some(_) => {
                    while let Some(&c) = chars.peek() {
                        if c == '.' {
                            break;
                        }
                        let ok = c == '_'
                            || c.is_ascii_alphabetic()
                            || (c.is_ascii_digit() && !seg.is_empty());
                        if !ok {
                            return Err(FieldPathError::Unexpected {
                                path: err_path(),
                                ch: c,
                            });
                        }
                        seg.push(c);
                        chars.next();
                        if seg.len() > MAX_FIELD_BYTES {
                            return Err(FieldPathError::TooLong(seg.len()));
                        }
                    }
                }
            }
            segments.push(seg);
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(ch) => {
                    return Err(FieldPathError::Unexpected {
                        path: err_path(),
                        ch,
                    });
                }
            }
        }
        Ok(Self { segments })
    }

    /// A path from field names given one by one (a map key is one segment
    /// whatever characters it holds).
    pub fn from_segments(segments: Vec<String>) -> Result<Self, FieldPathError> {
        if segments.is_empty() || segments.iter().any(String::is_empty) {
            return Err(FieldPathError::Empty(segments.join(".")));
        }
        if segments.len() > MAX_FIELD_SEGMENTS {
            return Err(FieldPathError::TooDeep);
        }
        if let Some(s) = segments.iter().find(|s| s.len() > MAX_FIELD_BYTES) {
            return Err(FieldPathError::TooLong(s.len()));
        }
        Ok(Self { segments })
    }

    /// The field names, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

fn is_simple(seg: &str) -> bool {
    let mut bytes = seg.bytes();
    matches!(bytes.next(), Some(b) if b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// The canonical form: simple segments bare, others in backticks.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            if is_simple(seg) {
                f.write_str(seg)?;
            } else {
                f.write_str("`")?;
                for c in seg.chars() {
                    if c == '`' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("`")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        let db = DatabaseName::parse("projects/p/databases/(default)").unwrap();
        assert_eq!(db.project, "p");
        assert_eq!(db.database, "(default)");
        assert_eq!(
            db.documents_root(),
            "projects/p/databases/(default)/documents"
        );
        for bad in [
            "",
            "projects/p",
            "projects/p/databases/",
            "projects//databases/d",
            "projects/p/databases/d/documents",
            "project/p/databases/d",
            "projects/p/databases/d e",
        ] {
            assert!(DatabaseName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_names() {
        let (db, path) = ResourceName::parse("projects/p/databases/prod/documents").unwrap();
        assert_eq!(db.database, "prod");
        assert!(path.is_root());
        let (_, path) =
            ResourceName::parse("projects/p/databases/prod/documents/teams/a/members").unwrap();
        assert!(path.is_collection());
        assert_eq!(path.segments(), ["teams", "a", "members"]);
        assert_eq!(path.collection_id(), Some("members"));
        let (_, path) = ResourceName::parse("projects/p/databases/prod/documents/flags/x").unwrap();
        assert!(path.is_document());
        assert_eq!(path.collection_id(), Some("flags"));
        assert_eq!(path.to_string(), "flags/x");

        let deep = format!(
            "projects/p/databases/d/documents/{}",
            vec!["a"; 101].join("/")
        );
        let long = format!("projects/p/databases/d/documents/c/{}", "x".repeat(1501));
        let ok_long = format!("projects/p/databases/d/documents/c/{}", "x".repeat(1500));
        assert!(ResourceName::parse(&ok_long).is_ok());
        for bad in [
            "projects/p/databases/d/documents/",
            "projects/p/databases/d/documents//x",
            "projects/p/databases/d/documents/a/",
            "projects/p/databases/d/documents/a/./b",
            "projects/p/databases/d/documents/a/..",
            "projects/p/databases/d/documents/__a__",
            "projects/p/databases/d/documents/c/_____",
            "projects/p/databases/d/documentsX/a",
            "projects/p/databases/d/docs/a",
            "projects/p/databases/d",
            deep.as_str(),
            long.as_str(),
        ] {
            assert!(ResourceName::parse(bad).is_err(), "{bad}");
        }
        // `__`, `___` and `____` are not reserved.
        assert!(ResourceName::parse("projects/p/databases/d/documents/__/___").is_ok());
        assert!(ResourceName::parse("projects/p/databases/d/documents/____/____").is_ok());
        // Numeric document ids, at any depth; never as collection ids.
        for ok in [
            "c/__id7__",
            "c/__id-5__",
            "c/__id7__/s/__id-9223372036854775808__",
        ] {
            let name = format!("projects/p/databases/d/documents/{ok}");
            assert!(ResourceName::parse(&name).is_ok(), "{ok}");
        }
        for bad in ["__id7__", "c/__id7__/__id8__", "c/__id0__", "c/__id007__"] {
            let name = format!("projects/p/databases/d/documents/{bad}");
            assert!(
                matches!(ResourceName::parse(&name), Err(NameError::Reserved(_))),
                "{bad}"
            );
        }
        assert_eq!(
            ResourceName::parse_bytes(b"projects/p/databases/d/documents/\xff"),
            Err(NameError::NotUtf8)
        );
    }

    /// The forms Google's emulator serves as document ids, probed one by
    /// one (`firestore_boundary.rs` keeps checking them against it).
    #[test]
    fn numeric_document_ids() {
        for ok in [
            "__id1__",
            "__id7__",
            "__id-5__",
            "__id10__",
            "__id1000000000000000000__",
            "__id9223372036854775807__",
            "__id-9223372036854775808__",
        ] {
            assert!(is_numeric_id(ok), "{ok}");
            assert_eq!(check_document_id(ok), Ok(()), "{ok}");
            assert_eq!(check_id(ok), Ok(()), "{ok}");
            assert_eq!(
                check_collection_id(ok),
                Err(NameError::Reserved(ok.into())),
                "{ok}"
            );
        }
        for bad in [
            "__id__",
            "__id0__",
            "__id-0__",
            "__id00__",
            "__id007__",
            "__id-01__",
            "__id+5__",
            "__id-__",
            "__id--5__",
            "__id 1__",
            "__id1a__",
            "__idx__",
            "__ID1__",
            "__id\u{663}__",
            "__id\u{ff11}__",
            "__id9223372036854775808__",
            "__id-9223372036854775809__",
            "__id99999999999999999999__",
            "__a__",
            "_____",
            "__.__",
        ] {
            assert!(!is_numeric_id(bad), "{bad}");
            assert_eq!(
                check_document_id(bad),
                Err(NameError::Reserved(bad.into())),
                "{bad}"
            );
        }
        // Not reserved at all, so not special.
        for plain in [
            "__", "___", "____", "__._", "__id1__x", "x__id1__", "_id1__",
        ] {
            assert!(!is_numeric_id(plain), "{plain}");
            assert_eq!(check_collection_id(plain), Ok(()), "{plain}");
            assert_eq!(check_document_id(plain), Ok(()), "{plain}");
        }
    }

    #[test]
    fn resource_chain() {
        let path = DocPath::parse("teams/a/members/bob").unwrap();
        let r = path.to_resource("prod", "production");
        assert_eq!(r.kind, ResourceKind::Document);
        assert_eq!(r.id, "prod/teams/a/members/bob");
        assert_eq!(r.attributes["path"], "teams/a/members/bob");
        assert_eq!(r.attributes["collection_id"], "members");
        assert_eq!(r.attributes["database"], "prod");
        assert_eq!(r.attributes["environment"], "production");
        let c = r.parent.as_deref().unwrap();
        assert_eq!(
            (c.kind, c.id.as_str()),
            (ResourceKind::Collection, "prod/teams/a/members")
        );
        assert_eq!(c.attributes["collection_id"], "members");
        let d = c.parent.as_deref().unwrap();
        assert_eq!(
            (d.kind, d.id.as_str()),
            (ResourceKind::Document, "prod/teams/a")
        );
        assert_eq!(d.attributes["collection_id"], "teams");
        let c2 = d.parent.as_deref().unwrap();
        assert_eq!(
            (c2.kind, c2.id.as_str()),
            (ResourceKind::Collection, "prod/teams")
        );
        let env = c2.parent.as_deref().unwrap();
        assert_eq!(
            (env.kind, env.id.as_str()),
            (ResourceKind::Environment, "production")
        );
        assert!(env.parent.is_none());
        assert!(env.attributes.is_empty());
        let root = DocPath::root().to_resource("prod", "production");
        assert_eq!(root.kind, ResourceKind::Environment);
    }

    #[test]
    fn field_paths() {
        let cases = [
            ("a", vec!["a"], "a"),
            ("a.b_c.D9", vec!["a", "b_c", "D9"], "a.b_c.D9"),
            ("_x", vec!["_x"], "_x"),
            ("`a.b`", vec!["a.b"], "`a.b`"),
            ("`a`", vec!["a"], "a"),
            ("x.`y&z`.w", vec!["x", "y&z", "w"], "x.`y&z`.w"),
            ("`bak\\`tik`", vec!["bak`tik"], "`bak\\`tik`"),
            ("`back\\\\slash`", vec!["back\\slash"], "`back\\\\slash`"),
            ("`9lives`", vec!["9lives"], "`9lives`"),
            ("`ünï`", vec!["ünï"], "`ünï`"),
            ("__name__", vec!["__name__"], "__name__"),
        ];
        for (input, segs, canonical) in cases {
            let fp = FieldPath::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(fp.segments(), segs.as_slice(), "{input}");
            assert_eq!(fp.to_string(), canonical, "{input}");
            assert_eq!(FieldPath::parse(canonical).unwrap(), fp);
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "9a", "a-b", "a b", "`a", "`a\\x`", "``", "a`b`", "`a`b",
            "`a`.", "ü",
        ] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(FieldPath::parse(&"a".repeat(1501)).is_err());
        assert!(FieldPath::parse(&vec!["a"; 101].join(".")).is_err());
        assert!(FieldPath::parse(&vec!["a"; 100].join(".")).is_ok());
        assert_eq!(
            FieldPath::from_segments(vec!["a.b".into()])
                .unwrap()
                .to_string(),
            "`a.b`"
        );
    }
}
