//! `latchkey login` against the real `oidc-provider` (testing/oidc), signed
//! in through its own pages by real headless Chromium: the device
//! authorization grant (RFC 8628) it offers, and the loopback redirect with
//! PKCE when asked for (`--loopback`); then quiet renewal with its refresh
//! token, and `latchkey logout` revoking it there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::*;
use latchkey_testkit::browser::{Browser, Step, device_steps, sign_in_steps};
use latchkey_testkit::{OidcOptions, OidcProvider};

/// No gateway listens here: `latchkey login --issuer` does not ask one, and
/// renewal happens before the exchange that then fails to connect.
const NO_GATEWAY: &str = "http://127.0.0.1:9";

fn as_user(home: &GitHome, args: &[&str]) -> std::process::Command {
    let mut cmd = latchkey_cmd(args);
    cmd.env("XDG_CACHE_HOME", home.cache())
        .env("HOME", home.path());
    cmd
}

/// Starts `latchkey login ARGS` and returns it with its stderr lines.
fn start_login(home: &GitHome, issuer: &str, extra: &[&str]) -> (Child, Receiver<String>) {
    let mut args = vec![
        "login",
        "--gateway",
        NO_GATEWAY,
        "--issuer",
        issuer,
        "--client-id",
        "latchkey-cli",
        "--no-browser",
    ];
    args.extend_from_slice(extra);
    let mut child = as_user(home, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    (child, rx)
}

fn next_line_with(rx: &Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            panic!(
                "`latchkey login` printed no line with `{needle}`; it printed:\n{}",
                seen.join("\n")
            );
        };
        if line.contains(needle) {
            return line;
        }
        seen.push(line);
    }
}

fn finish(child: Child, rx: &Receiver<String>) -> String {
    let out = child.wait_with_output().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        out.status.success(),
        "login failed: {}\n{}",
        stdout(&out),
        rest.join("\n")
    );
    stdout(&out)
}

fn cache_file(home: &GitHome) -> std::path::PathBuf {
    let dir = home.cache().join("latchkey");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("login-")
        })
        .expect("a sign-in file")
}

fn cached(home: &GitHome) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(cache_file(home)).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn device_grant_then_quiet_renewal_and_logout_revokes_at_oidc_provider() {
    let Some(browser) = tokio::task::spawn_blocking(Browser::available)
        .await
        .unwrap()
    else {
        return;
    };
    let op = OidcProvider::start_with(OidcOptions {
        id_token_ttl: Some(Duration::from_secs(30)),
    })
    .await;
    let home = GitHome::new();
    let (child, rx) = start_login(&home, op.issuer(), &[]);
    // "To sign in, open URI and enter the code CODE"
    let line = next_line_with(&rx, "enter the code");
    let words: Vec<&str> = line.split_whitespace().collect();
    let uri = words[words.iter().position(|w| *w == "open").unwrap() + 1];
    let code = *words.last().unwrap();
    browser.run(&device_steps(uri, code, "alice")).await;
    let said = finish(child, &rx);
    assert!(said.contains("as `alice`"), "{said}");
    let first = cached(&home);
    assert_eq!(first["issuer"], op.issuer());
    assert!(first["refresh_token"].is_string(), "{first}");

    // 30 s ID tokens are always due: `latchkey token` renews with the
    // provider's refresh token before it tries the (absent) gateway.
    std::thread::sleep(Duration::from_millis(1100));
    let o = as_user(&home, &["token", "--url", NO_GATEWAY, "--audience", "git"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    let renewed = cached(&home);
    assert_ne!(renewed["id_token"], first["id_token"]);

    // Logout revokes the refresh token at the provider; a copy kept aside
    // is then refused there: "run `latchkey login`".
    let file = cache_file(&home);
    let saved = std::fs::read_to_string(&file).unwrap();
    let out = ok(as_user(&home, &["logout", "--gateway", NO_GATEWAY])
        .output()
        .unwrap());
    assert!(
        stdout(&out).contains(&format!("revoked the refresh token at {}", op.issuer())),
        "{}",
        stdout(&out)
    );
    std::fs::write(&file, saved).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let o = as_user(&home, &["token", "--url", NO_GATEWAY, "--audience", "git"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("run `latchkey login`"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_redirect_with_pkce_at_oidc_provider() {
    let Some(browser) = tokio::task::spawn_blocking(Browser::available)
        .await
        .unwrap()
    else {
        return;
    };
    let op = OidcProvider::start().await;
    let home = GitHome::new();
    let (child, rx) = start_login(&home, op.issuer(), &["--loopback"]);
    let url = next_line_with(&rx, "/auth?").trim().to_owned();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let mut steps = vec![Step::goto(&url)];
    steps.extend(sign_in_steps("bob"));
    steps.push(Step::expect_text("you may close this tab"));
    browser.run(&steps).await;
    let said = finish(child, &rx);
    assert!(said.contains("as `bob`"), "{said}");
    assert_eq!(cached(&home)["client_id"], "latchkey-cli");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_sign_in_aborted_in_the_browser_is_a_clear_refusal() {
    let Some(browser) = tokio::task::spawn_blocking(Browser::available)
        .await
        .unwrap()
    else {
        return;
    };
    let op = OidcProvider::start().await;
    let home = GitHome::new();
    let (child, rx) = start_login(&home, op.issuer(), &[]);
    let line = next_line_with(&rx, "enter the code");
    let words: Vec<&str> = line.split_whitespace().collect();
    let uri = words[words.iter().position(|w| *w == "open").unwrap() + 1];
    let code = *words.last().unwrap();
    // oidc-provider's confirm page has "[ Abort ]": access_denied.
    browser
        .run(&[
            Step::goto(uri),
            Step::fill(latchkey_testkit::browser::selectors::USER_CODE, code),
            Step::click(latchkey_testkit::browser::selectors::USER_CODE_SUBMIT),
            Step::click("button[name=abort]"),
        ])
        .await;
    let out = child.wait_with_output().unwrap();
    let err: Vec<String> = rx.try_iter().collect();
    assert!(!out.status.success());
    let err = err.join("\n");
    assert!(err.contains("sign-in was denied"), "{err}");
    assert!(
        std::fs::read_dir(home.cache().join("latchkey")).is_err(),
        "nothing cached"
    );
}

/// The sandbox's own sign-in page in real Chromium: the form posts
/// same-origin with the page's own `Origin` (which the cross-site check
/// needs), and the redirect reaches `latchkey login`'s loopback listener.
#[tokio::test(flavor = "multi_thread")]
async fn the_dev_sign_in_page_works_in_chromium() {
    let Some(browser) = tokio::task::spawn_blocking(Browser::available)
        .await
        .unwrap()
    else {
        return;
    };
    let sb = Sandbox::start();
    let home = GitHome::new();
    let mut child = as_user(
        &home,
        &["login", "--gateway", &sb.url, "--loopback", "--no-browser"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let url = next_line_with(&rx, "/dev-idp/authorize?").trim().to_owned();
    browser
        .run(&[
            Step::goto(&url),
            Step::expect_text("DEV ONLY"),
            Step::fill("input[name=user]", "dora"),
            Step::fill("input[name=groups]", "developers"),
            Step::click("button[type=submit]"),
            Step::expect_text("you may close this tab"),
        ])
        .await;
    let said = finish(child, &rx);
    assert!(said.contains("as `dora` with `dev`"), "{said}");
    ok(
        as_user(&home, &["token", "--url", &sb.url, "--audience", "git"])
            .output()
            .unwrap(),
    );
}

/// The quick start's browser part: in `latchkey dev`, the example app asks
/// for a sign-in, the dev provider's page signs anyone in, the app shows
/// the identity it received (with a signed assertion that verifies), its
/// admin page is denied naming the policy, and sign-out asks again.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_example_app_signs_in_in_chromium_and_denies_its_admin_page() {
    let Some(browser) = tokio::task::spawn_blocking(Browser::available)
        .await
        .unwrap()
    else {
        return;
    };
    let sb = Sandbox::start();
    let app = format!("{}/apps/whoami/", sb.url);
    let out = browser
        .run(&[
            Step::goto(&app),
            Step::expect_text("DEV ONLY"),
            Step::fill("input[name=user]", "alice"),
            Step::fill("input[name=groups]", "developers"),
            Step::click("button[type=submit]"),
            Step::wait_for_url(&app),
            Step::expect_text("Hello from the example app"),
            Step::expect_text("verified against the gateway's JWKS"),
            Step::goto(&format!("{}/apps/whoami/admin/", sb.url)),
            Step::expect_status(403),
            Step::expect_text("app-admin-pages"),
            Step::expect_text("alice"),
            Step::goto(&format!("{}/logout?rd=/apps/whoami/", sb.url)),
            Step::expect_text("DEV ONLY"),
        ])
        .await;
    let shown = &out[6].text;
    assert!(
        shown.contains("x-user") && shown.contains("alice") && shown.contains("developers"),
        "{shown}"
    );
    let audit = stdout(&sb.cli(&["audit", "query", "--action", "session.start"]));
    assert!(audit.contains("alice"), "{audit}");
}
