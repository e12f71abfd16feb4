//! Pure reading of a web app's request path: the canonical path policy
//! sees, and for Gogs and Gitea the repository a page names.
//!
//! INVARIANT (DESIGN 8): a path reaches the app as Latchkey read it, or
//! not at all. Spellings a server may read in more than one way — a bad
//! or encoded `/`, `\` or NUL, `.` and `..` segments, empty segments —
//! are refused rather than normalised, so the path forwarded is the path
//! decided. Gogs (macaron) and Gitea (chi) route on the percent-decoded
//! path, look owners and repositories up lower-cased, and strip one `.git`
//! (and a wiki's `.wiki`) suffix; the repository id decided here does the
//! same, so no spelling reaches a repository under another id.
//!
//! No I/O; fuzzed by `fuzz/fuzz_targets/app_path.rs`.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the path has a `%` that is not followed by two hex digits")]
    BadEscape,
    /// The decoded path is not UTF-8.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// An encoded `/`, `\`, NUL or control character.
    #[error(
        "the path encodes `{0}`, which servers read differently; send it unencoded or not at all"
    )]
    Ambiguous(&'static str),
    /// A `.`, `..` or empty segment.
    #[error(
        "the path has a `{0}` segment; send the path a browser would (without `.`, `..` or `//`)"
    )]
    DotOrEmpty(&'static str),
    /// A repository path whose owner or name no Git web app accepts.
    #[error(
        "`{0}` is not a repository name Gogs or Gitea accepts (letters, digits, `-`, `_` and `.`)"
    )]
    BadName(String),
    /// Git smart HTTP through the web app's route.
    #[error(
        "clone and push through Latchkey's Git route (`/git/<upstream>/<owner>/<repo>.git`), not through the web app"
    )]
    GitProtocol,
}

/// A repository a page names, as the app will look it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoName {
    /// Lower-cased owner (user or organisation).
    pub(crate) owner: String,
    /// Lower-cased repository name, without `.git`/`.wiki`.
    pub(crate) name: String,
}

/// Top-level names that are routes of Gogs or Gitea, never owners (no user
/// or organisation may be named so): Gogs' `reservedUsernames` and
/// Gitea's, lower-case, plus their top-level routes.
const RESERVED_OWNERS: &[&str] = &[
    // Gogs internal/db/user.go reservedUsernames.
    "-",
    "explore",
    "create",
    "assets",
    "css",
    "img",
    "js",
    "less",
    "plugins",
    "debug",
    "raw",
    "install",
    "api",
    "avatar",
    "user",
    "org",
    "help",
    "stars",
    "issues",
    "pulls",
    "commits",
    "repo",
    "template",
    "admin",
    "new",
    // Gitea models/user/user.go reservedUsernames.
    ".well-known",
    "attachments",
    "avatars",
    "captcha",
    "error",
    "favicon.ico",
    "ghost",
    "login",
    "manifest.json",
    "metrics",
    "milestones",
    "notifications",
    "repo-avatars",
    "robots.txt",
    "search",
    "serviceworker.js",
    "ssh_info",
    "swagger.v1.json",
    "v2",
    "gitea-actions",
    // Top-level routes of either.
    "healthcheck",
    "swagger",
    "devtest",
    "socket",
];

/// Suffixes Gogs and Gitea reserve for repository names (`*.git`,
/// `*.wiki`, Gitea's feeds `*.rss`, `*.atom`) and strip from a path.
const REPO_SUFFIXES: &[&str] = &[".git", ".wiki", ".rss", ".atom"];

/// Git smart-HTTP endpoints under a repository.
const GIT_ENDPOINTS: &[&str] = &[
    "info",
    "git-upload-pack",
    "git-receive-pack",
    "HEAD",
    "objects",
];

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The canonical, percent-decoded path (no query) the app and policy see:
/// what `context.path` carries. Refuses every spelling that could be read
/// two ways (see the module docs). A trailing `/` is kept.
pub(crate) fn canonical_path(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::DotOrEmpty("relative"));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let d = (h << 4) | l;
            match d {
                b'/' => return Err(PathError::Ambiguous("/")),
                b'\\' => return Err(PathError::Ambiguous("\\")),
                b'%' => return Err(PathError::Ambiguous("%")),
                0..=0x1f | 0x7f => return Err(PathError::Ambiguous("a control character")),
                _ => out.push(d),
            }
            i += 3;
        } else {
            if b == b'\\' {
                return Err(PathError::Ambiguous("\\"));
            }
            out.push(b);
            i += 1;
        }
    }
    let path = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    let inner = path.strip_prefix('/').unwrap_or(&path);
    if !inner.is_empty() {
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        for seg in inner.split('/') {
            match seg {
                "" => return Err(PathError::DotOrEmpty("//")),
                "." => return Err(PathError::DotOrEmpty(".")),
                ".." => return Err(PathError::DotOrEmpty("..")),
                _ => {}
            }
        }
    }
    Ok(path)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn repo_name(seg: &str) -> Result<String, PathError> {
    let lower = seg.to_ascii_lowercase();
    let stripped = REPO_SUFFIXES
        .iter()
        .find_map(|s| lower.strip_suffix(s))
        .unwrap_or(&lower);
    // A name that still ends in a reserved suffix cannot exist; refuse
    // rather than guess which strip the app applies.
    if !valid_name(stripped)
        || REPO_SUFFIXES.iter().any(|s| stripped.ends_with(s))
        || stripped == "."
        || stripped == ".."
    {
        return Err(PathError::BadName(latchkey_core::echo(seg).to_string()));
    }
    Ok(stripped.to_owned())
}

fn owner_repo(segs: &[&str]) -> Result<Option<RepoName>, PathError> {
    let (Some(owner), Some(repo)) = (segs.first(), segs.get(1)) else {
        return Ok(None);
    };
    if repo.is_empty() {
        return Ok(None);
    }
    let owner_l = owner.to_ascii_lowercase();
    if RESERVED_OWNERS.contains(&owner_l.as_str()) {
        return Ok(None);
    }
    if !valid_name(owner) {
        return Err(PathError::BadName(latchkey_core::echo(owner).to_string()));
    }
    Ok(Some(RepoName {
        owner: owner_l,
        name: repo_name(repo)?,
    }))
}

/// The repository a Gogs or Gitea path names, from the canonical path
/// ([`canonical_path`]): `/{owner}/{repo}` and below (unless the owner is
/// a reserved route such as `explore` or `user`), and
/// `/api/v1/repos/{owner}/{repo}` and below. Git smart HTTP under a
/// repository is refused: it belongs on the Git route, where each ref a
/// push changes is decided.
pub(crate) fn repository(canonical: &str) -> Result<Option<RepoName>, PathError> {
    let inner = canonical.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let segs: Vec<&str> = inner.split('/').collect();
    if let ["api", "v1", "repos", rest @ ..] = segs.as_slice() {
        return owner_repo(rest);
    }
    if segs.first().is_some_and(|s| s.eq_ignore_ascii_case("api")) {
        return Ok(None);
    }
    let found = owner_repo(&segs)?;
    if found.is_some() {
        let repo_seg = segs.get(1).copied().unwrap_or("");
        let git_suffix = repo_seg.to_ascii_lowercase().ends_with(".git");
        let endpoint = segs.get(2).copied().unwrap_or("");
        // `/{owner}/{repo}.git/...` and `/{owner}/{repo}/info/refs`,
        // `git-upload-pack`, `git-receive-pack`: Git over HTTP.
        if segs.len() > 2 && (git_suffix || GIT_ENDPOINTS.contains(&endpoint)) {
            return Err(PathError::GitProtocol);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(p: &str) -> Option<(String, String)> {
        repository(&canonical_path(p).unwrap())
            .unwrap()
            .map(|r| (r.owner, r.name))
    }

    fn pair(o: &str, n: &str) -> Option<(String, String)> {
        Some((o.to_owned(), n.to_owned()))
    }

    #[test]
    fn every_spelling_of_a_repository_has_one_id() {
        for p in [
            "/acme/app",
            "/acme/app/",
            "/Acme/App",
            "/ACME/app.git",
            "/acme/App.wiki",
            "/acme/app/src/main/README.md",
            "/%61cme/%61pp",
            "/acme/app/issues/1",
            "/api/v1/repos/acme/app",
            "/api/v1/repos/ACME/app/contents/x",
            "/acme/app.rss",
        ] {
            assert_eq!(repo(p), pair("acme", "app"), "{p}");
        }
    }

    #[test]
    fn reserved_top_levels_name_no_repository() {
        for p in [
            "/",
            "/acme",
            "/explore/repos",
            "/user/settings",
            "/User/login",
            "/api/v1/user/repos",
            "/api/v1/repos/search",
            "/api/v1/repos/issues/search",
            "/-/admin",
            "/assets/js/app.js",
            "/repo/create",
            "/org/create",
            "/admin/users",
            "/avatars/1",
            "/attachments/x",
            "/install",
            "/healthcheck",
            "/swagger.v1.json",
            "/api/swagger",
        ] {
            assert_eq!(repo(p), None, "{p}");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (p, e) in [
            ("/acme%2fapp", PathError::Ambiguous("/")),
            ("/acme%2Fapp", PathError::Ambiguous("/")),
            ("/acme%5capp", PathError::Ambiguous("\\")),
            ("/acme\\app", PathError::Ambiguous("\\")),
            ("/acme/app%00", PathError::Ambiguous("a control character")),
            ("/acme/%2561pp", PathError::Ambiguous("%")),
            ("/acme/%zz", PathError::BadEscape),
            ("/acme/%4", PathError::BadEscape),
            ("/acme/%", PathError::BadEscape),
            ("//acme/app", PathError::DotOrEmpty("//")),
            ("/acme//app", PathError::DotOrEmpty("//")),
            ("/./acme/app", PathError::DotOrEmpty(".")),
            ("/x/../acme/app", PathError::DotOrEmpty("..")),
            ("/acme/app/%2e%2e/other", PathError::DotOrEmpty("..")),
            ("/acme/%ff", PathError::NotUtf8),
            ("acme/app", PathError::DotOrEmpty("relative")),
        ] {
            assert_eq!(canonical_path(p), Err(e), "{p}");
        }
    }

    #[test]
    fn odd_names_and_git_protocol_are_refused() {
        for p in [
            "/acme/app.git.git",
            "/acme/app.wiki.git",
            "/acme/.git",
            "/ac%20me/app",
            "/acme/ap%C3%A9",
        ] {
            let c = canonical_path(p).unwrap();
            assert!(
                matches!(repository(&c), Err(PathError::BadName(_))),
                "{p}: {:?}",
                repository(&c)
            );
        }
        for p in [
            "/acme/app.git/info/refs",
            "/acme/app/info/refs",
            "/acme/app/git-receive-pack",
            "/acme/app.git/git-upload-pack",
            "/acme/app/objects/info/packs",
        ] {
            let c = canonical_path(p).unwrap();
            assert_eq!(repository(&c), Err(PathError::GitProtocol), "{p}");
        }
    }
}
