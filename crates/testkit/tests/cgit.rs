//! Debian's real cgit, behind a throwaway nginx and fcgiwrap
//! ([`latchkey_testkit::cgit::Cgit`]) and run directly as a plain CGI the
//! way Latchkey runs `git http-backend` ([`latchkey_testkit::cgit::cgi_env`]):
//! a bare repository with a commit is listed, and its summary, tree and
//! commit pages render.

// A test fails with the expectation's message: that is its report.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use latchkey_testkit::cgit::{CGIT_CGI, Cgit, cgi_env, cgitrc};
use reqwest::StatusCode;

/// Runs git with no user or system config, so the machine's settings cannot
/// change what the test sees.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Alice Example")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice Example")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `repos/demo.git` and `repos/team/app.git`, each with one commit on
/// `main`; returns demo's commit id.
fn make_repos(root: &Path) -> String {
    let repos = root.join("repos");
    let work = root.join("work");
    std::fs::create_dir_all(repos.join("team")).expect("create repos folder");
    std::fs::create_dir_all(&work).expect("create work folder");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README.md"), "# Demo\n\nServed by cgit.\n").expect("write README");
    git(&work, &["add", "README.md"]);
    git(&work, &["commit", "-q", "-m", "Add the demo readme"]);
    let id = git(&work, &["rev-parse", "HEAD"]);
    for bare in ["demo.git", "team/app.git"] {
        let dest = repos.join(bare);
        git(
            root,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().expect("utf-8 path"),
                dest.to_str().expect("utf-8 path"),
            ],
        );
    }
    id
}

async fn page(http: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let resp = http.get(url).send().await.expect("request to cgit");
    let status = resp.status();
    (status, resp.text().await.expect("cgit page body"))
}

#[tokio::test]
async fn cgit_behind_nginx_lists_a_repository_and_renders_its_pages() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let id = make_repos(tmp.path());
    let Ok(cgit) = Cgit::start(&tmp.path().join("repos")).await else {
        return;
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build a reqwest client");
    let base = cgit.url();

    let (status, index) = page(&http, &format!("{base}/")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "index: {index}\n{}",
        cgit.error_log()
    );
    assert!(
        index.contains("href='/demo/'"),
        "index lists demo:\n{index}"
    );
    assert!(
        index.contains("href='/team/app/'"),
        "index lists team/app:\n{index}"
    );

    let (status, summary) = page(&http, &format!("{base}/demo/")).await;
    assert_eq!(status, StatusCode::OK, "summary: {summary}");
    assert!(
        summary.contains("Add the demo readme"),
        "summary shows the commit:\n{summary}"
    );

    let (status, tree) = page(&http, &format!("{base}/demo/tree/")).await;
    assert_eq!(status, StatusCode::OK, "tree: {tree}");
    assert!(tree.contains("README.md"), "tree lists README.md:\n{tree}");

    let (status, blob) = page(&http, &format!("{base}/demo/tree/README.md")).await;
    assert_eq!(status, StatusCode::OK, "blob: {blob}");
    assert!(
        blob.contains("Served by cgit."),
        "blob shows the file:\n{blob}"
    );

    let (status, commit) = page(&http, &format!("{base}/demo/commit/?id={id}")).await;
    assert_eq!(status, StatusCode::OK, "commit: {commit}");
    assert!(commit.contains(&id), "commit page names the id:\n{commit}");
    assert!(
        commit.contains("Alice Example"),
        "commit page names the author:\n{commit}"
    );

    let (status, _) = page(&http, &format!("{base}/team/app/log/")).await;
    assert_eq!(status, StatusCode::OK, "a nested repository's log");

    let (status, css) = page(&http, &format!("{base}/cgit-css/cgit.css")).await;
    assert_eq!(status, StatusCode::OK, "stylesheet: {css}");

    let (status, body) = page(&http, &format!("{base}/no-such-repo/")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an unknown repository: {body}"
    );
}

/// What a `cgi:` app upstream in Latchkey would do: run cgit.cgi directly,
/// with the CGI variables as environment and nothing else.
fn run_cgi(cgitrc_path: &Path, path_info: &str, query: &str) -> (String, String) {
    let mut cmd = Command::new(CGIT_CGI);
    cmd.env_clear();
    for (k, v) in cgi_env(cgitrc_path, "GET", "", path_info, query, 8080) {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{CGIT_CGI}`: {e}"));
    assert!(out.status.success(), "cgit.cgi exited with {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\n\n")
        .or_else(|| text.split_once("\r\n\r\n"))
        .unwrap_or_else(|| panic!("cgit.cgi printed no CGI head:\n{text}"));
    (head.to_owned(), body.to_owned())
}

#[test]
fn cgit_runs_as_a_plain_cgi_without_a_web_server() {
    if !Path::new(CGIT_CGI).is_file() {
        latchkey_testkit::skip_or_fail(
            latchkey_testkit::cgit::PEER,
            "no `/usr/lib/cgit/cgit.cgi`; install it with `apt-get install cgit`",
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary folder");
    let id = make_repos(tmp.path());
    let rc = tmp.path().join("cgitrc");
    std::fs::write(&rc, cgitrc(&tmp.path().join("repos"), "/git/")).expect("write cgitrc");

    let (head, body) = run_cgi(&rc, "/", "");
    assert!(
        head.contains("Content-Type: text/html"),
        "index head:\n{head}"
    );
    assert!(
        body.contains("href='/git/demo/'"),
        "links under the virtual root:\n{body}"
    );

    let (head, body) = run_cgi(&rc, "/demo/commit/", &format!("id={id}"));
    assert!(
        head.contains("Content-Type: text/html"),
        "commit head:\n{head}"
    );
    assert!(body.contains("Add the demo readme"), "commit page:\n{body}");

    let (head, _) = run_cgi(&rc, "/no-such-repo/", "");
    assert!(
        head.contains("Status: 404"),
        "an unknown repository:\n{head}"
    );

    // `enable-http-clone=0`: cgit serves no dumb-HTTP clone, so cloning
    // goes only through Latchkey's Git route (and is audited as a clone).
    for dumb in ["/demo/info/refs", "/demo/HEAD", "/demo/objects/info/packs"] {
        let (head, _) = run_cgi(&rc, dumb, "");
        assert!(
            head.contains("Status: 404"),
            "`{dumb}` is not served:\n{head}"
        );
    }
}
