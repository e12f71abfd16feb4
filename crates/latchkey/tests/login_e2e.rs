//! `latchkey login` and `latchkey logout` end to end against the sign-in
//! page of a `latchkey dev` sandbox's identity provider: the loopback
//! redirect with PKCE, the private sign-in cache, `latchkey token` and
//! `git clone` through the credential helper with no token pasted, quiet
//! renewal with the refresh token, a revoked refresh token, a cache others
//! can read, and the dev provider's refusals over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// `latchkey ARGS` as the user of `home` (its cache directory).
fn as_user(home: &GitHome, args: &[&str]) -> Command {
    let mut cmd = latchkey_cmd(args);
    cmd.env("XDG_CACHE_HOME", home.cache())
        .env("HOME", home.path());
    cmd
}

/// The value of the hidden `form` field of the sign-in page.
fn form_token(html: &str) -> String {
    let marker = "name=\"form\" value=\"";
    let start = html.find(marker).expect("a form token in the page") + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

const VERIFIER: &str = "dBjftJeZ4CVP-mA3oePQ57-O1QWtoKCwk-m7NJqtBzk";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn login_file(home: &GitHome) -> PathBuf {
    let dir = home.cache().join("latchkey");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("login-")
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn cached(home: &GitHome) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(login_file(home)).unwrap()).unwrap()
}

/// Runs `latchkey login --loopback --no-browser` and signs in as `user`
/// through the sign-in page the way a browser would: fetch the printed URL,
/// post the form, follow the redirect to the loopback listener.
///
/// `explicit` names the provider with `--issuer`/`--client-id`; otherwise
/// `latchkey login` asks the gateway (`/oauth2/login-providers`).
async fn sign_in(sb: &Sandbox, home: &GitHome, user: &str, groups: &str, explicit: bool) -> String {
    let issuer = format!("{}/dev-idp", sb.url);
    let mut args = vec!["login", "--gateway", &sb.url, "--loopback", "--no-browser"];
    if explicit {
        args.extend(["--issuer", &issuer, "--client-id", "latchkey-cli"]);
    }
    let mut child = as_user(home, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let url = loop {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(20)) else {
            panic!(
                "`latchkey login` printed no sign-in URL; it printed:\n{}",
                seen.join("\n")
            );
        };
        if let Some(u) = line.trim().strip_prefix("http") {
            break format!("http{u}");
        }
        seen.push(line);
    };
    assert!(url.starts_with(&format!("{issuer}/authorize?")), "{url}");
    assert!(url.contains("code_challenge_method=S256"), "{url}");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("DEV ONLY"), "{html}");
    let done = http
        .post(format!("{issuer}/authorize"))
        .form(&[
            ("form", form_token(&html).as_str()),
            ("user", user),
            ("groups", groups),
            ("email", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "the loopback listener answered");
    assert!(done.url().as_str().starts_with("http://127.0.0.1:"));
    let text = done.text().await.unwrap();
    assert!(text.contains("Signed in"), "{text}");

    let out = child.wait_with_output().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(out.status.success(), "login failed: {}", rest.join("\n"));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn login_then_token_and_git_without_pasting_renewal_revocation_and_logout() {
    // ID tokens of 30 s: always within the renewal minute, so every use
    // renews with the refresh token.
    let sb = Sandbox::start_with(&["--id-token-lifetime", "30s"]);
    let home = GitHome::new();
    let said = sign_in(&sb, &home, "alice", "developers", false).await;
    assert!(said.contains("as `alice` with `dev`"), "{said}");
    assert!(said.contains("renew it quietly"), "{said}");

    // The sign-in is private: directory 0700, file 0600.
    let file = login_file(&home);
    assert_eq!(mode(&home.cache().join("latchkey")), 0o700);
    assert_eq!(mode(&file), 0o600);
    let first = cached(&home);
    assert_eq!(first["gateway"], sb.url.as_str());
    assert!(first["refresh_token"].is_string());

    // `latchkey token` works from the cache, renewing the ID token quietly.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let token = ok(
        as_user(&home, &["token", "--url", &sb.url, "--audience", "git"])
            .output()
            .unwrap(),
    );
    assert_eq!(stdout(&token).trim().split('.').count(), 3);
    let renewed = cached(&home);
    assert_ne!(renewed["id_token"], first["id_token"], "renewed");
    assert_eq!(renewed["refresh_token"], first["refresh_token"]);
    assert_eq!(mode(&file), 0o600);

    // Git through the credential helper, with no identity token given.
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let helper = format!("credential.helper=!{} git-credential", sh_quote(BIN));
    ok(home
        .git(&work, ["-c", "credential.helper=", "-c", &helper])
        .args(["clone", &sb.repo_url(), "app"])
        .output()
        .unwrap());
    assert!(work.join("app/.git").exists());

    // Logout revokes the refresh token and deletes the sign-in and the
    // Git token cached for the gateway. Keep a copy to replay.
    let saved = std::fs::read_to_string(&file).unwrap();
    let out = ok(as_user(&home, &["logout", "--gateway", &sb.url])
        .output()
        .unwrap());
    let said = stdout(&out);
    assert!(said.contains("revoked the refresh token"), "{said}");
    assert!(said.contains("cached for Git"), "{said}");
    assert!(!file.exists());
    let left: Vec<_> = std::fs::read_dir(home.cache().join("latchkey"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The copy's refresh token is revoked: "run `latchkey login`".
    std::fs::write(&file, &saved).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = as_user(&home, &["token", "--url", &sb.url, "--audience", "git"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("run `latchkey login`"),
        "{}",
        stderr(&refused)
    );
    // git-credential says the same on stderr and gives Git nothing.
    let mut helper = as_user(&home, &["git-credential", "get"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let host = sb.url.trim_start_matches("http://");
    std::io::Write::write_all(
        helper.stdin.as_mut().unwrap(),
        format!("protocol=http\nhost={host}\n\n").as_bytes(),
    )
    .unwrap();
    drop(helper.stdin.take());
    let got = helper.wait_with_output().unwrap();
    assert!(stdout(&got).is_empty(), "{}", stdout(&got));
    assert!(
        stderr(&got).contains("run `latchkey login`"),
        "{}",
        stderr(&got)
    );

    // A sign-in others can read is refused, saying how to fix it.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = as_user(&home, &["token", "--url", &sb.url, "--audience", "git"])
        .output()
        .unwrap();
    assert!(!open.status.success());
    assert!(
        stderr(&open).contains("can be read by others"),
        "{}",
        stderr(&open)
    );
    assert!(stderr(&open).contains("chmod 600"), "{}", stderr(&open));
    // Logout removes it even so.
    ok(as_user(&home, &["logout", "--gateway", &sb.url])
        .output()
        .unwrap());
    assert!(!file.exists());
    let again = ok(as_user(&home, &["logout", "--gateway", &sb.url])
        .output()
        .unwrap());
    assert!(
        stdout(&again).contains("not signed in"),
        "{}",
        stdout(&again)
    );

    // Owned by someone else, a sign-in is refused too (we may be root here;
    // otherwise chown is not allowed and this part is not checked).
    std::fs::write(&file, &saved).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    if std::os::unix::fs::chown(&file, Some(65534), None).is_ok() {
        let theirs = as_user(&home, &["token", "--url", &sb.url, "--audience", "git"])
            .output()
            .unwrap();
        assert!(!theirs.status.success());
        assert!(
            stderr(&theirs).contains("belongs to another user"),
            "{}",
            stderr(&theirs)
        );
    }
    std::fs::remove_file(&file).unwrap();

    // `--issuer`/`--client-id` name the provider without asking the gateway.
    let said = sign_in(&sb, &home, "carol", "", true).await;
    assert!(said.contains("as `carol`"), "{said}");
    ok(
        as_user(&home, &["token", "--url", &sb.url, "--audience", "git"])
            .output()
            .unwrap(),
    );

    // The audit log has alice's exchanges of the dev provider's ID tokens.
    let q = stdout(&ok(sb.cli(&[
        "audit",
        "query",
        "--json",
        "--action",
        "token.mint",
    ])));
    assert!(q.contains("\"alice\""), "{q}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_sign_in_page_refuses_what_it_must_and_escapes_what_it_echoes() {
    let sb = Sandbox::start();
    let idp = format!("{}/dev-idp", sb.url);
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The S256 challenge of `VERIFIER` (Python's hashlib and base64).
    let challenge = "xZnoVV0-qD2t6e3H5_zveFWY0EiiQTNPuYUeb0f-Rx0";
    let authorize = |client: &str, redirect: &str, method: &str| {
        let mut url = reqwest::Url::parse(&format!("{idp}/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client)
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", "openid")
            .append_pair("state", "s1")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", method);
        url
    };

    // The discovery document names the endpoints and S256.
    let doc: serde_json::Value = http
        .get(format!("{idp}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["end_session_endpoint"], format!("{idp}/logout"));
    assert_eq!(doc["token_endpoint"], format!("{idp}/token"));

    // An unknown client, echoed escaped, is a page, not a redirect.
    let r = http
        .get(authorize(
            "<script>x</script>",
            "http://127.0.0.1:1/cb",
            "S256",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    // latchkey-cli may not redirect off the loopback interface.
    let r = http
        .get(authorize("latchkey-cli", "https://evil.example/cb", "S256"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not a loopback redirect"));
    // Without S256: back to the client with `invalid_request`.
    let r = http
        .get(authorize("latchkey-cli", "http://127.0.0.1:1/cb", "plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        loc.starts_with("http://127.0.0.1:1/cb?error=invalid_request"),
        "{loc}"
    );

    // A form posted from another site is refused.
    let page = http
        .get(authorize("latchkey-cli", "http://127.0.0.1:1/cb", "S256"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = form_token(&page);
    let r = http
        .post(format!("{idp}/authorize"))
        .header("origin", "https://evil.example")
        .form(&[
            ("form", token.as_str()),
            ("user", "mallory"),
            ("groups", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A bad user name is shown back escaped; the form still works after.
    let r = http
        .post(format!("{idp}/authorize"))
        .form(&[
            ("form", token.as_str()),
            ("user", "\"><b>x"),
            ("groups", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("&quot;&gt;&lt;b&gt;x") && !html.contains("<b>x"),
        "{html}"
    );
    let r = http
        .post(format!("{idp}/authorize"))
        .header("origin", sb.url.as_str())
        .form(&[("form", token.as_str()), ("user", "bob"), ("groups", "ops")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("http://127.0.0.1:1/cb?code="), "{loc}");
    let code = reqwest::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    // The code with a wrong verifier: refused, and used up.
    let redeem = |verifier: &str| {
        http.post(format!("{idp}/token")).form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("client_id", "latchkey-cli"),
            ("code_verifier", verifier),
        ])
    };
    let r = redeem(&"x".repeat(43)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");
    // The right verifier comes too late: the code is spent.
    let r = redeem(VERIFIER).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Logout returns only to the gateway's own origin.
    let r = http
        .get(format!(
            "{idp}/logout?post_logout_redirect_uri={}",
            url::form_urlencoded::byte_serialize(format!("{}/", sb.url).as_bytes())
                .collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .get(format!(
            "{idp}/logout?post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// The `name=value` of the cookie `name` a response sets.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")) && kv.len() > name.len() + 1)
        .map(str::to_owned)
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_owned()
}

/// The gateway's own browser sign-in (`/login`, client `latchkey-web`)
/// through the sandbox's sign-in page, and its RP-initiated logout through
/// `/dev-idp/logout` back to the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn browser_sign_in_and_logout_through_the_dev_provider() {
    let sb = Sandbox::start();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(format!("{}/login", sb.url)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to_idp = location(&r);
    assert!(
        to_idp.starts_with(&format!("{}/dev-idp/authorize?", sb.url)),
        "{to_idp}"
    );
    assert!(to_idp.contains("client_id=latchkey-web"), "{to_idp}");
    let signin_cookie = set_cookie(&r, "latchkey-signin").expect("the sign-in cookie");

    let html = http
        .get(&to_idp)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = http
        .post(format!("{}/dev-idp/authorize", sb.url))
        .header("origin", sb.url.as_str())
        .form(&[
            ("form", form_token(&html).as_str()),
            ("user", "alice"),
            ("groups", "developers"),
            ("email", "alice@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(
        back.starts_with(&format!("{}/callback?code=", sb.url)),
        "{back}"
    );

    let r = http
        .get(&back)
        .header("cookie", &signin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    let session = set_cookie(&r, "latchkey").expect("a session cookie");

    let r = http
        .get(format!("{}/logout", sb.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let to_logout = location(&r);
    assert!(
        to_logout.starts_with(&format!("{}/dev-idp/logout?", sb.url)),
        "{to_logout}"
    );
    let r = http.get(&to_logout).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(&sb.url), "{}", location(&r));
}
