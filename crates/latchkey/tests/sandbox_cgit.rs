//! `latchkey dev` serves cgit (Debian's, run as a plain CGI by the
//! sandbox) at `/apps/cgit/` over the sandbox's own repositories, behind
//! the `cgit` preset: a token that may read `local/acme/app` gets its
//! pages, one forbidden to read it gets 403, as `git clone` would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;

const MESSAGE: &str = "seen through cgit";

const POLICY: &str = r#"
@id("mint-cgit")
permit (
  principal is Latchkey::User,
  action == Latchkey::Action::"token.mint",
  resource == Latchkey::Audience::"app:cgit"
);

@id("bob-no-repos")
forbid (
  principal == Latchkey::User::"bob",
  action == Latchkey::Action::"git.read",
  resource is Latchkey::Repository
);
"#;

/// `GET path` with a Bearer token over HTTP/1.0: status and body.
fn get(url: &str, path: &str, token: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[test]
fn dev_serves_cgit_decided_like_a_clone() {
    if !Path::new("/usr/lib/cgit/cgit.cgi").is_file() {
        latchkey_testkit::skip_or_fail(
            latchkey_testkit::cgit::PEER,
            "`/usr/lib/cgit/cgit.cgi` is missing; install it with `apt-get install cgit`",
        );
        return;
    }
    let mut sb = Sandbox::start();
    assert!(sb.log().contains("/apps/cgit/ is cgit"), "{}", sb.log());
    std::fs::write(sb.data.join("policies").join("90-cgit.cedar"), POLICY).unwrap();
    sb.stop();
    sb.restart();

    // A commit on a branch of the sandbox's repository, straight into the
    // folder the Git route and cgit both read.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git(w, &["init", "--quiet", "-b", "cgit-page", "."]);
    std::fs::write(w.join("PAGE.md"), "page\n").unwrap();
    git(w, &["add", "PAGE.md"]);
    git(w, &["commit", "--quiet", "-m", MESSAGE]);
    let bare = sb.data.join("repos/acme/app.git");
    git(w, &["push", "--quiet", bare.to_str().unwrap(), "cgit-page"]);

    let alice = sb.token(&sb.id_token("alice", &["developers"]), "app:cgit");
    let bob = sb.token(&sb.id_token("bob", &["developers"]), "app:cgit");
    for who in [&alice, &bob] {
        let (status, body) = get(&sb.url, "/apps/cgit/", who);
        assert_eq!(status, 200, "{body}\n{}", sb.log());
        assert!(body.contains("acme/app"), "{body}");
    }
    for path in [
        "/apps/cgit/acme/app/",
        "/apps/cgit/acme/app/log/?h=cgit-page",
        "/apps/cgit/acme/app/tree/?h=cgit-page",
    ] {
        let (status, body) = get(&sb.url, path, &alice);
        assert_eq!(status, 200, "{path}: {body}\n{}", sb.log());
        let (status, denied) = get(&sb.url, path, &bob);
        assert_eq!(status, 403, "{path}: {denied}");
        assert!(denied.contains("bob-no-repos"), "{path}: {denied}");
        assert!(!denied.contains(MESSAGE), "{path}: {denied}");
    }
    let (_, log) = get(&sb.url, "/apps/cgit/acme/app/log/?h=cgit-page", &alice);
    assert!(log.contains(MESSAGE), "{log}");
    let (_, tree) = get(&sb.url, "/apps/cgit/acme/app/tree/?h=cgit-page", &alice);
    assert!(tree.contains("PAGE.md"), "{tree}");
    // cgit's own links and stylesheet live under the app's prefix.
    assert!(tree.contains("/apps/cgit/cgit-css/cgit.css"), "{tree}");
    let (status, css) = get(&sb.url, "/apps/cgit/cgit-css/cgit.css", &bob);
    assert_eq!(status, 200, "{css}");
}
