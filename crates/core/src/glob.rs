/// Matches `text` against a glob `pattern` where `*` matches any run of
/// characters (including `/`) and `?` matches exactly one character.
///
/// Used for bound claims and trust rules; deliberately smaller than shell
/// globbing (no classes, no escapes) so that a pattern means one thing.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<usize> = None;
    let mut mark = 0usize;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn exact_and_wildcards() {
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "mainx"));
        assert!(glob_match("release/*", "release/1.2"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match(
            "repo:acme/*:ref:refs/heads/*",
            "repo:acme/x:ref:refs/heads/main"
        ));
        assert!(!glob_match("acme-*", "other-acme"));
    }
}
