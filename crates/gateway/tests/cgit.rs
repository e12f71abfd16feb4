//! cgit, the real Git web UI (Debian's `cgit` behind nginx and fcgiwrap,
//! `latchkey_testkit::cgit`), behind Latchkey's `preset = "cgit"`, serving
//! the same repositories folder as the gateway's Git route: one policy
//! decides `git clone` of a repository and its cgit pages alike.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Opts, TestGateway, bearer};
use latchkey_testkit::OidcProvider;
use latchkey_testkit::cgit::Cgit;
use tokio::sync::OnceCell;

const POLICIES: &str = r#"
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

/// The commit message the pages must show.
const MESSAGE: &str = "cgit behind latchkey";

/// A loopback TCP relay to a port known only later: the gateway's config
/// names the app's address before cgit (which needs the gateway's
/// repositories folder) has started. Bytes pass unchanged.
async fn relay() -> (std::net::SocketAddr, Arc<OnceCell<u16>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target: Arc<OnceCell<u16>> = Arc::new(OnceCell::new());
    let t = target.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Some(port) = t.get().copied() else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (addr, target)
}

fn run(dir: &Path, args: &[&str]) {
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

/// Puts one commit (`README.md`, on `main`) into the bare repository.
fn commit_into(bare: &Path) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    run(w, &["init", "--quiet", "-b", "main", "."]);
    std::fs::write(w.join("README.md"), "# app\n").unwrap();
    run(w, &["add", "README.md"]);
    run(w, &["commit", "--quiet", "-m", MESSAGE]);
    run(w, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
    run(bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
}

async fn git_clone(home: &Path, token: &str, url: &str) -> std::process::Output {
    tokio::process::Command::new("git")
        .arg("-c")
        .arg(format!("http.extraHeader=Authorization: Bearer {token}"))
        .args(["clone", "--quiet", url])
        .arg(home.join("clone"))
        .stdin(std::process::Stdio::null())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_policy_decides_clone_and_cgit_pages() {
    let (app_addr, target) = relay().await;
    let op = OidcProvider::start().await;
    let mut policies: Vec<(String, String)> = latchkey_policy::starter_policy_files()
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    policies.push(("90-cgit.cedar".into(), POLICIES.into()));
    let tg = TestGateway::start(
        &op,
        Opts {
            extra_toml: format!(
                "[[apps]]\nname = \"cgit\"\npath_prefix = \"/apps/cgit\"\n\
                 upstream = \"http://{app_addr}\"\npreset = \"cgit\"\ngit_upstream = \"local\"\n"
            ),
            policies: Some(policies),
            ..Opts::default()
        },
    )
    .await;
    let repos = tg.data().join("repos");
    commit_into(&repos.join("acme").join("app.git"));
    let Ok(cgit) = Cgit::start(&repos).await else {
        return;
    };
    target.set(cgit.port()).unwrap();

    let alice = tg
        .token_for(&op, "alice", &["developers"], "app:cgit")
        .await;
    let bob = tg.token_for(&op, "bob", &["developers"], "app:cgit").await;
    let get = |path: &str, token: &str| {
        let req = tg
            .http
            .get(tg.url(path))
            .header("authorization", bearer(token));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };

    // The index works for both (it lists repository names).
    for who in [&alice, &bob] {
        let (status, body) = get("/apps/cgit/", who).await;
        assert_eq!(status, 200, "{body}\n{}", cgit.error_log());
        assert!(body.contains("acme/app"), "{body}");
    }

    let pages = [
        ("/apps/cgit/acme/app/", MESSAGE),
        ("/apps/cgit/acme/app/tree/", "README.md"),
        ("/apps/cgit/acme/app/commit/", MESSAGE),
        ("/apps/cgit/acme/app/log/", MESSAGE),
        ("/apps/cgit/acme/app/tree/README.md", "# app"),
    ];
    for (path, needle) in pages {
        let (status, body) = get(path, &alice).await;
        assert_eq!(status, 200, "{path}: {body}\n{}", cgit.error_log());
        assert!(body.contains(needle), "{path}: {body}");
    }
    let spellings = [
        "/apps/cgit/acme/%61pp/",
        "/apps/cgit/%61cme/app/commit/",
        "/apps/cgit/acme/app.git/",
        "/apps/cgit/acme/app.git/tree/",
        "/apps/cgit/ACME/APP/",
        "/apps/cgit/acme/App/log/",
    ];
    for path in pages.iter().map(|(p, _)| *p).chain(spellings) {
        let (status, body) = get(path, &bob).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("bob-no-repos"), "{path}: {body}");
        assert!(!body.contains(MESSAGE), "{path}: {body}");
    }
    // Spellings Latchkey cannot read one way, and query parameters that
    // make cgit show another repository than the path names: refused
    // before any decision, for everyone.
    for path in [
        "/apps/cgit//acme/app/",
        "/apps/cgit/acme//app/",
        "/apps/cgit/?r=acme/app",
        "/apps/cgit/?url=acme/app/commit/",
        "/apps/cgit/?%72=acme/app",
        "/apps/cgit/acme/app/tree/x%26r=acme/app",
        "/apps/cgit/acme/",
    ] {
        for who in [&alice, &bob] {
            let (status, body) = get(path, who).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(!body.contains(MESSAGE), "{path}: {body}");
        }
    }

    // The same policy decides a clone through the Git route.
    let home = tempfile::tempdir().unwrap();
    let url = tg.url("/git/local/acme/app.git");
    let bob_git = tg.token_for(&op, "bob", &["developers"], "git").await;
    let out = git_clone(home.path(), &bob_git, &url).await;
    assert!(!out.status.success(), "bob cloned: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied by policy `bob-no-repos`"),
        "{out:?}"
    );
    let alice_git = tg.token_for(&op, "alice", &["developers"], "git").await;
    let out = git_clone(home.path(), &alice_git, &url).await;
    assert!(out.status.success(), "alice could not clone: {out:?}");
    assert!(home.path().join("clone").join("README.md").is_file());

    // Every cgit decision is in the audit log, on the repository's id.
    let records = tg.audit_records();
    let text = format!("{records:?}");
    assert!(text.contains("local/acme/app"), "{text}");
}
