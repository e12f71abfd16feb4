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
//! cgit ([`cgit_repository`]) is read its own way: case-sensitive names
//! (like a local Git route), one `.git` stripped, and the query parameters
//! that would pick another repository refused.
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
        "`{0}` is not a repository name a Git web app accepts (letters, digits, `-`, `_` and `.`)"
    )]
    BadName(String),
    /// A cgit query parameter that would choose another repository.
    #[error(
        "the query parameter `{0}` would make cgit show another repository than the path names; open the repository by its path (`/<owner>/<repo>/`)"
    )]
    CgitQuery(String),
    /// A character cgit reads as a query separator inside the path.
    #[error(
        "the path holds `{0}`, which cgit would read as part of its query; leave it out of the path"
    )]
    CgitPath(char),
    /// A cgit path of one segment other than the index and stylesheets.
    #[error(
        "`{0}` is not a cgit page Latchkey serves; open `/` for the index or `/<owner>/<repo>/` for a repository"
    )]
    CgitLayout(String),
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

/// The first path segment cgit's pages never use for a repository: the
/// stylesheet and logo folder the web server (or Latchkey's dev runner)
/// serves itself, `{virtual-root}cgit-css/` as Debian's `cgitrc` names it.
pub(crate) const CGIT_STATIC: &str = "cgit-css";

/// Query parameters cgit reads as the repository to show (`r=`) or as a
/// whole page URL (`url=`), which would override the repository the path
/// names.
const CGIT_REPO_PARAMS: &[&str] = &["r", "url"];

/// Refuses a query cgit could read as another repository than the path
/// names. cgit (1.2.3, `http_parse_querystring` in `html.c`) splits the
/// query on a literal `&`, takes a name up to its first `=`, decodes `+`
/// and `%xx` in place, silently drops an invalid escape and stops a name
/// at a decoded NUL: so `u%zzrl=` is `url=`. Rather than mirror that, a
/// parameter name with any `%` is refused, and `r`/`url` are refused
/// outright (a repository is chosen by the path, nothing else).
fn cgit_query(query: &str) -> Result<(), PathError> {
    for pair in query.split('&') {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if name.contains('%') {
            return Err(PathError::CgitQuery(latchkey_core::echo(name).to_string()));
        }
        let name = name.replace('+', " ");
        if CGIT_REPO_PARAMS
            .iter()
            .any(|p| name.eq_ignore_ascii_case(p))
        {
            return Err(PathError::CgitQuery(latchkey_core::echo(&name).to_string()));
        }
    }
    Ok(())
}

/// The repository a cgit page names, from the canonical path
/// ([`canonical_path`]) and the raw query: `/{owner}/{repo}` and
/// everything below it, read as cgit reads it over the repositories of a
/// Git route's `local_root` (`<owner>/<name>.git`, listed by `scan-path`).
///
/// cgit looks a repository up by exact, case-sensitive name (so does a
/// local Git route), with `remove-suffix=1` listing `app.git` as `app`:
/// the id keeps the case and strips one `.git`, the Git route's reading
/// of `/git/<upstream>/<owner>/<repo>.git`. cgit builds its query as
/// `url=<PATH_INFO>&<QUERY_STRING>`, so a decoded `&`, `=` or `+` in the
/// path could smuggle `r=` or a second `url=` in: refused, as are the
/// query's own `r`/`url` ([`cgit_query`]). The index `/` and the
/// stylesheet folder ([`CGIT_STATIC`]) name no repository; any other
/// single segment is refused, since cgit would read it as a repository
/// outside the `<owner>/<name>` layout.
pub(crate) fn cgit_repository(
    canonical: &str,
    query: Option<&str>,
) -> Result<Option<RepoName>, PathError> {
    if let Some(q) = query {
        cgit_query(q)?;
    }
    if let Some(c) = canonical.chars().find(|c| matches!(c, '&' | '=' | '+')) {
        return Err(PathError::CgitPath(c));
    }
    let inner = canonical.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Ok(None);
    }
    let segs: Vec<&str> = inner.split('/').collect();
    if segs.first() == Some(&CGIT_STATIC) {
        return Ok(None);
    }
    let (Some(owner), Some(repo)) = (segs.first(), segs.get(1)) else {
        return Err(PathError::CgitLayout(
            latchkey_core::echo(inner).to_string(),
        ));
    };
    let name = repo.strip_suffix(".git").unwrap_or(repo);
    for s in [*owner, name] {
        if !valid_name(s) || s.starts_with('.') || s.ends_with(".git") {
            return Err(PathError::BadName(latchkey_core::echo(s).to_string()));
        }
    }
    Ok(Some(RepoName {
        owner: (*owner).to_owned(),
        name: name.to_owned(),
    }))
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

    fn cgit(p: &str, q: Option<&str>) -> Result<Option<(String, String)>, PathError> {
        cgit_repository(&canonical_path(p)?, q).map(|r| r.map(|r| (r.owner, r.name)))
    }

    #[test]
    fn cgit_pages_name_the_repository_as_cgit_and_the_git_route_do() {
        for p in [
            "/acme/app",
            "/acme/app/",
            "/acme/app.git/",
            "/acme/app/tree/",
            "/acme/app/tree/src/main.rs",
            "/acme/app/commit/",
            "/acme/app/log/",
            "/acme/app/snapshot/app-main.tar.gz",
            "/acme/app/objects/info/packs",
            "/%61cme/%61pp/summary",
        ] {
            assert_eq!(cgit(p, None), Ok(pair("acme", "app")), "{p}");
        }
        assert_eq!(
            cgit("/acme/app/commit/", Some("id=abc&h=main&ofs=50")),
            Ok(pair("acme", "app"))
        );
        // Case is kept: cgit and a local Git route both look names up exactly.
        assert_eq!(cgit("/ACME/App/", None), Ok(pair("ACME", "App")));
        for p in ["/", "/cgit-css/cgit.css", "/cgit-css/cgit.png"] {
            assert_eq!(cgit(p, Some("q=x")), Ok(None), "{p}");
        }
    }

    #[test]
    fn cgit_spellings_that_could_pick_another_repository_are_refused() {
        for q in [
            "r=acme/secret",
            "url=acme/secret/tree",
            "id=1&r=acme/secret",
            "R=acme/secret",
            "%72=acme/secret",
            "u%zzrl=acme/secret",
            "r%00x=acme/secret",
            "url",
        ] {
            assert!(
                matches!(cgit("/acme/app/", Some(q)), Err(PathError::CgitQuery(_))),
                "{q}"
            );
            assert!(
                matches!(cgit("/", Some(q)), Err(PathError::CgitQuery(_))),
                "{q}"
            );
        }
        for p in [
            "/acme/app/tree/x&r=acme/secret",
            "/acme/app/tree/x%26r=acme/secret",
            "/acme/app/tree/x=acme/secret/tree",
            "/acme/app/tree/a+b",
        ] {
            assert!(matches!(cgit(p, None), Err(PathError::CgitPath(_))), "{p}");
        }
        for p in ["/acme", "/acme/", "/favicon.ico"] {
            assert!(
                matches!(cgit(p, None), Err(PathError::CgitLayout(_))),
                "{p}"
            );
        }
        for p in [
            "/acme/app.git.git/",
            "/acme/.git/",
            "/ac%20me/app/",
            "/.x/app/",
        ] {
            assert!(
                matches!(cgit(p, None), Err(PathError::BadName(_))),
                "{p}: {:?}",
                cgit(p, None)
            );
        }
        for p in [
            "//acme/app",
            "/acme//app",
            "/acme/%2e%2e/x",
            "/acme%2fapp/x",
        ] {
            assert!(cgit(p, None).is_err(), "{p}");
        }
    }
}
