//! Property checks for the cargo-fuzz target `fuzz/fuzz_targets/app_path.rs`
//! and the stable test that replays its corpus: the web-app path reading
//! (`targets::apps::classify`). Panics only if an invariant breaks.

use crate::targets::apps::classify::{canonical_path, repository};

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

#[cfg(test)]
mod tests {
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
