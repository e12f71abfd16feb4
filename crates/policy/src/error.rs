use std::path::PathBuf;

/// Why a policy set, an entities file or a policy test file could not be
/// loaded. Every variant names the file and says what to fix; a failed load
/// never replaces a working policy set.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The policy directory holds no `*.cedar` file.
    #[error("no `*.cedar` files in `{}`; add at least one policy file or point the policy directory elsewhere", dir.display())]
    NoPolicyFiles {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A policy file is not valid Cedar syntax.
    #[error("cannot parse policy file `{file}`: {message}")]
    Syntax {
        /// The file name.
        file: String,
        /// Cedar's message.
        message: String,
    },
    /// A policy file holds a template (a policy with `?principal` or `?resource`).
    #[error(
        "policy file `{file}` contains a template; latchkey loads only static policies, replace `?principal`/`?resource` with concrete entities"
    )]
    Template {
        /// The file name.
        file: String,
    },
    /// A policy has no `@id("...")` annotation.
    #[error(
        "policy #{index} in `{file}` has no `@id(\"...\")` annotation; add one so decisions and audit records can name it (starts with: `{excerpt}`)"
    )]
    MissingId {
        /// The file name.
        file: String,
        /// The policy's 1-based position in the file.
        index: usize,
        /// The first characters of the policy text.
        excerpt: String,
    },
    /// A policy's `@id` is empty or has characters audit records cannot carry.
    #[error(
        "policy #{index} in `{file}` has an unusable id `{id}`; use 1 to 128 letters, digits, `-`, `_`, `.`, `:` or `/`"
    )]
    InvalidId {
        /// The file name.
        file: String,
        /// The policy's 1-based position in the file.
        index: usize,
        /// The id given.
        id: String,
    },
    /// Two policies share an `@id`.
    #[error(
        "policy id `{id}` is used twice (in `{first_file}` and `{second_file}`); give every policy a unique `@id`"
    )]
    DuplicateId {
        /// The duplicated id.
        id: String,
        /// The file of the first policy with this id.
        first_file: String,
        /// The file of the second policy with this id.
        second_file: String,
    },
    /// A policy does not validate against the Latchkey schema.
    #[error("policy `{id}` in `{file}` does not match the latchkey schema: {message}")]
    Validation {
        /// The file name.
        file: String,
        /// The policy id.
        id: String,
        /// Cedar's messages, joined by `; `.
        message: String,
    },
    /// The entities file is malformed or does not match the schema.
    #[error("entities file `{file}` is invalid: {message}")]
    Entities {
        /// The file name.
        file: String,
        /// Cedar's message.
        message: String,
    },
    /// The built-in schema failed to load (a bug in latchkey, not in your files).
    #[error("the built-in latchkey schema is invalid (this is a bug): {message}")]
    Schema {
        /// Cedar's message.
        message: String,
    },
    /// A policy test file is malformed.
    #[error("cannot read policy test file: {message}")]
    TestFile {
        /// What is wrong, with the TOML location when known.
        message: String,
    },
}

/// Renders a Cedar diagnostic for an error message: its text, where it is in
/// `source` (line and column) when Cedar gives a span, its causes, and
/// Cedar's hint.
pub(crate) fn describe(diag: &dyn miette::Diagnostic, source: Option<&str>) -> String {
    let mut out = diag.to_string();
    let mut cause = std::error::Error::source(diag);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    if let (Some(text), Some(mut labels)) = (source, diag.labels())
        && let Some(label) = labels.next()
    {
        let (line, column) = line_col(text, label.offset());
        out.push_str(&format!(" (line {line}, column {column})"));
    }
    if let Some(help) = diag.help() {
        out.push_str(&format!("; hint: {help}"));
    }
    out
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
