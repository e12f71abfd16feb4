//! Property checks for the cargo-fuzz targets `fuzz/fuzz_targets/app_path.rs`
//! (the web-app path reading, `targets::apps::classify`: Gogs/Gitea's and
//! cgit's) and
//! `fuzz/fuzz_targets/return_to.rs` (where a browser may be sent after
//! signing in, `sessions::return_to`), and the stable tests that replay
//! their corpora. Panics only if an invariant breaks.

use crate::targets::apps::classify::{CGIT_STATIC, canonical_path, cgit_repository, repository};

/// Arbitrary bytes as a request path: a canonical path is a fixed point
/// (reading it again gives it back), has no `.`, `..` or empty segment, and
/// a repository it names is lower-case with a valid owner and name; every
/// spelling that differs only in case or a `.git` suffix names the same
/// repository.
pub fn app_path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = canonical_path(raw) else {
        return;
    };
    if path.contains('%') {
        // A decoded `%` is refused (it would be read twice), so none is left.
        panic!("a canonical path kept a `%`: {path:?}");
    }
    assert_eq!(
        canonical_path(&path).as_deref(),
        Ok(path.as_str()),
        "not a fixed point"
    );
    for seg in path.trim_matches('/').split('/') {
        assert!(
            path == "/" || !matches!(seg, "" | "." | ".."),
            "segment {seg:?} in {path:?}"
        );
    }
    cgit(&path, raw);
    let Ok(Some(repo)) = repository(&path) else {
        return;
    };
    for s in [&repo.owner, &repo.name] {
        assert!(!s.is_empty() && *s == s.to_ascii_lowercase(), "{repo:?}");
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "{repo:?}"
        );
    }
    let upper = path.to_ascii_uppercase();
    if let Ok(Some(again)) = repository(&upper) {
        assert_eq!(again, repo, "case changed the repository of {path:?}");
    }
}

/// The cgit reading of a canonical path (`raw` also serves as a query):
/// a repository it names has a valid owner and name without `.git`, the
/// path it came from holds nothing cgit would read as a query (`&`, `=`,
/// `+`), its first two segments are that owner and repository, and a
/// query that passes names no other repository (`r`, `url`).
fn cgit(path: &str, raw: &str) {
    let query = raw.split_once('?').map(|(_, q)| q);
    let Ok(found) = cgit_repository(path, query) else {
        return;
    };
    assert!(
        !path.contains(['&', '=', '+']),
        "cgit would read a query in {path:?}"
    );
    if let Some(q) = query {
        for pair in q.split('&') {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            assert!(!name.contains('%'), "encoded name {name:?} passed");
            assert!(
                !matches!(name.to_ascii_lowercase().as_str(), "r" | "url"),
                "`{name}` passed"
            );
        }
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let Some(repo) = found else {
        assert!(
            path == "/" || segs.first() == Some(&CGIT_STATIC),
            "{path:?} named no repository"
        );
        return;
    };
    for s in [&repo.owner, &repo.name] {
        assert!(
            !s.is_empty()
                && !s.ends_with(".git")
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            "{repo:?}"
        );
    }
    assert_eq!(segs.first().copied(), Some(repo.owner.as_str()), "{path:?}");
    let second = segs.get(1).copied().unwrap_or_default();
    assert_eq!(
        second.strip_suffix(".git").unwrap_or(second),
        repo.name,
        "{path:?}"
    );
}

/// Arbitrary bytes as a return address: whatever is accepted, a browser
/// (the WHATWG URL parser, which drops tabs and newlines and reads `\` as
/// `/`) resolves to the gateway's origin or an allowed one.
pub fn return_to(data: &[u8]) {
    use crate::sessions::return_to::ReturnOrigins;
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let origins = ReturnOrigins::new(["https://gw.example.com", "https://gogs.example.com:8443"]);
    let Ok(accepted) = origins.check(raw) else {
        return;
    };
    assert_eq!(accepted, raw, "the address was changed");
    let Ok(base) = url::Url::parse("https://gw.example.com/apps/x/page") else {
        return;
    };
    // An address the URL parser cannot read goes nowhere.
    let Ok(resolved) = base.join(accepted) else {
        return;
    };
    let origin = resolved.origin().ascii_serialization();
    assert!(
        origin == "https://gw.example.com" || origin == "https://gogs.example.com:8443",
        "{raw:?} leads to {resolved}"
    );
    assert!(
        resolved.username().is_empty() && resolved.password().is_none(),
        "{raw:?} carries credentials: {resolved}"
    );
}

#[cfg(test)]
mod tests {
    /// Replays the return-address corpus on stable.
    #[test]
    fn return_to_corpus_holds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/return_to");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            super::return_to(&bytes);
            n += 1;
        }
        assert!(n > 10, "the corpus is missing");
    }

    /// Replays the fuzz corpus on stable.
    #[test]
    fn corpus_holds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/app_path");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            super::app_path(&bytes);
            n += 1;
        }
        assert!(n > 0);
    }
}
