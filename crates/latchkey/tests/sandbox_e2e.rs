//! End to end against a running `latchkey dev` sandbox: the README quick start
//! with real `git`, audit tampering detection, the git credential helper and
//! key rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;

/// Events from `latchkey audit query ... --json`.
fn query_json(sb: &Sandbox, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "query", "--json"];
    all.extend_from_slice(args);
    let o = ok(sb.cli(&all));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn readme_quick_start_with_real_git() {
    let sb = Sandbox::start();
    let home = GitHome::new();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    let id = sb.id_token("alice", &["developers"]);
    let token = sb.token(&id, "git");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let header = format!("http.extraHeader=Authorization: Bearer {token}");
    let git = |cwd: &Path, args: &[&str]| {
        let mut cmd = home.git(cwd, ["-c", "credential.helper=", "-c", &header]);
        cmd.args(args).output().unwrap()
    };

    ok(git(&work, &["clone", &sb.repo_url(), "app"]));
    let app = work.join("app");
    ok(home
        .git(&app, ["commit", "--allow-empty", "-m", "hello"])
        .output()
        .unwrap());
    let commit = stdout(&ok(home.git(&app, ["rev-parse", "HEAD"]).output().unwrap()))
        .trim()
        .to_owned();

    ok(git(&app, &["push", "origin", "HEAD:refs/heads/feature"]));
    let denied = git(&app, &["push", "origin", "HEAD:refs/heads/main"]);
    assert!(!denied.status.success(), "push to main must be refused");
    let err = stderr(&denied);
    assert!(err.contains("[remote rejected]"), "{err}");
    assert!(err.contains("protect-main"), "{err}");
    // The refused push did not reach the upstream.
    let heads = stdout(&ok(git(&work, &["ls-remote", "--heads", &sb.repo_url()])));
    assert!(
        heads.contains("refs/heads/feature") && !heads.contains("refs/heads/main"),
        "{heads}"
    );

    // `audit tail --no-follow`: the mint, the denied push naming protect-main, the allowed push.
    let tail = eventually("the pushes in `audit tail`", || {
        let o = ok(sb.cli(&["audit", "tail", "--no-follow", "-n", "1000"]));
        let t = stdout(&o);
        t.lines()
            .any(|l| l.contains("git.push") && l.contains("refs/heads/feature"))
            .then_some(t)
    });
    assert!(
        tail.lines()
            .any(|l| l.contains("token.mint") && l.contains("ALLOW")),
        "{tail}"
    );
    assert!(
        tail.lines().any(|l| l.contains("DENY")
            && l.contains("git.push")
            && l.contains("refs/heads/main")
            && l.contains("protect-main")),
        "{tail}"
    );
    assert!(
        tail.lines().any(|l| l.contains("ALLOW")
            && l.contains("git.push")
            && l.contains("refs/heads/feature")),
        "{tail}"
    );

    // `audit query --repo acme/app --json`: the push events carry the commit id.
    let events = query_json(&sb, &["--repo", "acme/app"]);
    let pushes: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "git.push")
        .collect();
    assert!(pushes.len() >= 2, "{events:#?}");
    for p in &pushes {
        assert_eq!(p["context"]["commit"], commit.as_str(), "{p}");
        assert_eq!(p["principal"]["id"], "alice", "{p}");
    }
    assert!(pushes.iter().any(|p| p["decision"]["effect"] == "deny"));
    assert!(pushes.iter().any(|p| p["decision"]["effect"] == "allow"));
    assert!(
        events
            .iter()
            .all(|e| e["resource"].as_str().unwrap_or("").contains("acme/app"))
    );

    // `audit query --principal alice --decision deny`: only the refused push.
    let denied = query_json(&sb, &["--principal", "alice", "--decision", "deny"]);
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["action"], "git.push");
    assert!(
        denied[0]["resource"]
            .as_str()
            .unwrap()
            .contains("refs/heads/main")
    );
    assert_eq!(denied[0]["decision"]["policy_ids"][0], "protect-main");
    // The table form names the policy too.
    let table = stdout(&ok(sb.cli(&[
        "audit",
        "query",
        "--principal",
        "alice",
        "--decision",
        "deny",
    ])));
    assert!(
        table.contains("protect-main") && table.contains("DENY"),
        "{table}"
    );
    // Tokens never land in the audit log.
    let log = std::fs::read_to_string(sb.data.join("audit/audit.log")).unwrap();
    assert!(!log.contains(&token) && !log.contains(&id));
}

/// Copies the data directory, changes the audit log with `f`, and runs
/// `audit verify` on the copy.
fn verify_tampered(
    sb: &Sandbox,
    name: &str,
    f: impl FnOnce(Vec<String>) -> Vec<String>,
) -> std::process::Output {
    let copy = sb.dir.path().join(name);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&sb.data)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let path = copy.join("audit/audit.log");
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut text = f(lines).join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    latchkey_cmd(["audit", "verify", "--data"])
        .arg(&copy)
        .output()
        .unwrap()
}

#[track_caller]
fn assert_tampered(o: &std::process::Output, names: &str) {
    assert!(!o.status.success(), "verify must fail:\n{}", stdout(o));
    let all = format!("{}{}", stdout(o), stderr(o));
    assert!(all.contains(names), "expected `{names}` in:\n{all}");
}

#[test]
fn audit_verify_detects_tampering() {
    let mut sb = Sandbox::start();
    let id = sb.id_token("alice", &["developers"]);
    for _ in 0..4 {
        sb.token(&id, "git");
    }
    let ok_live = ok(sb.cli(&["audit", "verify"]));
    assert!(stdout(&ok_live).contains("intact"), "{}", stdout(&ok_live));

    sb.stop();
    let after = stdout(&ok(sb.cli(&["audit", "verify"])));
    assert!(
        after.contains("intact") && !after.contains(" 0 signed checkpoint"),
        "{after}"
    );
    let lines: Vec<String> = std::fs::read_to_string(sb.data.join("audit/audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let n = lines.len();
    assert!(n >= 8, "{n} records");
    let seq = |i: usize| -> u64 {
        serde_json::from_str::<serde_json::Value>(&lines[i]).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(seq(2), 3);

    // (a) one byte inside record 3.
    let o = verify_tampered(&sb, "byte", |mut l| {
        let at = l[2].find("\"request_id\":\"").unwrap() + 14;
        let old = l[2].as_bytes()[at];
        let new = if old == b'a' { "b" } else { "a" };
        l[2].replace_range(at..at + 1, new);
        l
    });
    assert_tampered(&o, "record 3");

    // (b) record 3 removed: record 4 is the first that does not follow.
    let o = verify_tampered(&sb, "removed", |mut l| {
        l.remove(2);
        l
    });
    assert_tampered(&o, "record 4");

    // (c) records 3 and 4 swapped.
    let o = verify_tampered(&sb, "swapped", |mut l| {
        l.swap(2, 3);
        l
    });
    assert_tampered(&o, "record 4");

    // (d) the tail after the shutdown checkpoint cut off.
    let o = verify_tampered(&sb, "truncated", |mut l| {
        l.truncate(n - 2);
        l
    });
    assert_tampered(&o, &format!("record {}", seq(n - 3)));
    assert_tampered(&o, "checkpoint");
}

#[test]
fn git_credential_helper_end_to_end() {
    let sb = Sandbox::start();
    let home = GitHome::new();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // As the README configures it; the identity command finds the gateway's
    // URL in `LATCHKEY_URL`, which the helper sets.
    let helper = format!("credential.helper=!{} git-credential", sh_quote(BIN));
    let id_command = format!(
        "{} dev token --data {} --user alice --group developers",
        sh_quote(BIN),
        sh_quote(&sb.data.display().to_string())
    );
    let git = |cwd: &Path, id_cmd: &str, args: &[&str]| {
        let mut cmd = home.git(cwd, ["-c", "credential.helper=", "-c", &helper]);
        cmd.env("LATCHKEY_ID_TOKEN_COMMAND", id_cmd)
            .args(args)
            .output()
            .unwrap()
    };

    ok(git(&work, &id_command, &["clone", &sb.repo_url(), "app"]));
    let app = work.join("app");
    ok(home
        .git(&app, ["commit", "--allow-empty", "-m", "via helper"])
        .output()
        .unwrap());
    ok(git(
        &app,
        &id_command,
        &["push", "origin", "HEAD:refs/heads/helper-feature"],
    ));
    let refused = git(
        &app,
        &id_command,
        &["push", "origin", "HEAD:refs/heads/main"],
    );
    assert!(
        stderr(&refused).contains("protect-main"),
        "{}",
        stderr(&refused)
    );

    // One private cache file for this gateway, holding a Latchkey token.
    let cache_dir = home.cache().join("latchkey");
    let files: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let cache_file = &files[0];
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache_dir), 0o700);
        assert_eq!(mode(cache_file), 0o600);
    }
    let cached = std::fs::read_to_string(cache_file).unwrap();
    let entry: serde_json::Value = serde_json::from_str(&cached).unwrap();
    assert_eq!(entry["url"], sb.url.as_str());
    let token = entry["token"].as_str().unwrap().to_owned();

    // A second fetch reuses the cached token: no identity is available now.
    ok(git(&app, "false", &["fetch", "origin"]));
    assert_eq!(
        std::fs::read_to_string(cache_file).unwrap(),
        cached,
        "the cache was not rewritten"
    );

    // `get` by hand prints it; `store` is a no-op; `erase` drops it.
    let helper_io = |op: &str, id_cmd: &str| {
        let mut cmd = latchkey_cmd(["git-credential", op]);
        cmd.env("XDG_CACHE_HOME", home.cache())
            .env("LATCHKEY_ID_TOKEN_COMMAND", id_cmd);
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let host = sb.url.trim_start_matches("http://");
        let input = format!(
            "protocol=http\nhost={host}\npath=git/local/acme/app.git\nusername=latchkey\n\n"
        );
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let got = ok(helper_io("get", "false"));
    let out = stdout(&got);
    assert!(
        out.starts_with(&format!("username=latchkey\npassword={token}\n")),
        "{out}"
    );
    ok(helper_io("store", "false"));
    assert!(cache_file.exists());
    ok(helper_io("erase", "false"));
    assert!(!cache_file.exists(), "erase removes the cached token");

    // Without a cached token a failing identity command is an error that names
    // the command and shows no token.
    let failed = helper_io("get", "false");
    assert!(!failed.status.success());
    assert!(stdout(&failed).is_empty());
    assert!(
        stderr(&failed).contains("LATCHKEY_ID_TOKEN_COMMAND"),
        "{}",
        stderr(&failed)
    );
    // With no identity source at all: a clear message, nothing for git, exit 0.
    let none = helper_io("get", "");
    assert!(none.status.success());
    assert!(stdout(&none).is_empty());
    assert!(
        stderr(&none).contains("LATCHKEY_ID_TOKEN"),
        "{}",
        stderr(&none)
    );

    // A token the gateway refuses (401): git erases it, and the next fetch
    // exchanges a new one.
    let bogus_payload = "eyJleHAiOjQxMDI0NDQ4MDB9"; // {"exp":4102444800}
    let bogus = format!("eyJhbGciOiJub25lIn0.{bogus_payload}.c2ln");
    let mut forged = entry.clone();
    forged["token"] = bogus.clone().into();
    std::fs::write(cache_file, forged.to_string()).unwrap();
    let rejected = git(&app, "false", &["fetch", "origin"]);
    assert!(!rejected.status.success());
    assert!(!stderr(&rejected).contains(&bogus), "{}", stderr(&rejected));
    assert!(!cache_file.exists(), "git called `erase` after the 401");
    ok(git(&app, &id_command, &["fetch", "origin"]));
    assert!(cache_file.exists());
    let renewed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cache_file).unwrap()).unwrap();
    assert_ne!(renewed["token"].as_str().unwrap(), bogus);

    // The pushes are alice's in the audit log.
    let q = stdout(&ok(sb.cli(&[
        "audit",
        "query",
        "--json",
        "--action",
        "git.push",
        "--decision",
        "allow",
    ])));
    assert!(
        q.contains("refs/heads/helper-feature") && q.contains("\"alice\""),
        "{q}"
    );
}

#[test]
fn keys_list_and_rotate() {
    let mut sb = Sandbox::start();
    sb.stop();
    let rows = |o: &std::process::Output| -> Vec<(String, String)> {
        stdout(o)
            .lines()
            .skip_while(|l| !l.starts_with("KID"))
            .skip(1)
            .map(|l| {
                let mut w = l.split_whitespace();
                (w.next().unwrap().to_owned(), w.next().unwrap().to_owned())
            })
            .collect()
    };
    let before = rows(&ok(sb.cli(&["keys", "list"])));
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, "active");
    let rotated = ok(sb.cli(&["keys", "rotate"]));
    assert!(stdout(&rotated).contains("rotated"), "{}", stdout(&rotated));
    let after = rows(&ok(sb.cli(&["keys", "list"])));
    assert_eq!(after.len(), 2, "{after:?}");
    let old = after
        .iter()
        .find(|(kid, _)| *kid == before[0].0)
        .expect("the old key is still listed");
    assert_eq!(old.1, "active", "the old key signs until `publish_ahead`");
    let new: Vec<_> = after
        .iter()
        .filter(|(kid, _)| *kid != before[0].0)
        .collect();
    assert_eq!(new[0].1, "pending", "published, not yet signing");

    let now = ok(sb.cli(&["keys", "rotate", "--now"]));
    assert!(
        stdout(&now).contains("tokens they signed no longer verify"),
        "{}",
        stdout(&now)
    );
    let last = rows(&ok(sb.cli(&["keys", "list"])));
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].1, "active");
    assert!(!after.iter().any(|(kid, _)| *kid == last[0].0));
}

/// A SIGTERM as soon as the port opens stops the gateway cleanly (exit 0,
/// final checkpoint), never by the signal's default action: the handlers
/// are installed before the listener is bound. Before that fix the first
/// connection could win the accept loop's first poll, leaving SIGTERM
/// unhandled for a moment (seen in CI, on a loaded machine, as "exited with
/// signal: 15"). The window was under a millisecond, so on an idle machine
/// this test passes against the old build too: it guards the behaviour, it
/// does not reproduce the race.
#[test]
fn a_sigterm_right_after_start_is_a_clean_shutdown() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", latchkey_testkit::free_port());
        let mut child = latchkey_cmd(["dev", "--data"])
            .arg(dir.path().join("data"))
            .args(["--listen", &addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        // The instant the port accepts: a connection waits in the backlog,
        // as a health check's would.
        let _conn = loop {
            if let Ok(c) = std::net::TcpStream::connect(&addr) {
                break c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "round {round}: exited with {status}");
    }
}

/// The lines `latchkey dev` prints under "In another terminal:", without
/// their indent.
fn banner_commands(log: &str) -> Vec<String> {
    log.lines()
        .skip_while(|l| !l.starts_with("In another terminal:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Issue 13, item 1: on a port and data directory that are not the
/// defaults, the banner's commands work as pasted (they find the sandbox's
/// URL in `DATA/url`), with the real `git`.
#[test]
fn banner_commands_work_as_pasted_on_any_port_and_data_dir() {
    let sb = Sandbox::start();
    assert!(!sb.url.ends_with(":8080"), "{}", sb.url);
    let recorded = std::fs::read_to_string(sb.data.join("url")).unwrap();
    assert_eq!(recorded.trim(), sb.url);

    let commands = banner_commands(&sb.log());
    assert!(
        commands
            .iter()
            .any(|c| c.contains("clone") && c.contains(&sb.url)),
        "{commands:#?}"
    );
    let (tail, script): (Vec<String>, Vec<String>) = commands
        .into_iter()
        .partition(|c| c.starts_with("latchkey audit tail"));
    let home = GitHome::new();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let o = home.sh(&work, &script.join("\n")).output().unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(work.join("app/.git").exists(), "the clone failed:\n{out}");
    assert!(out.contains("protect-main"), "{out}");
    let upstream = sb.data.join("repos/acme/app.git");
    let feature = home
        .git(&work, ["--git-dir"])
        .arg(&upstream)
        .args(["rev-parse", "--verify", "refs/heads/feature"])
        .output()
        .unwrap();
    assert!(feature.status.success(), "the feature push failed:\n{out}");
    let main = home
        .git(&work, ["--git-dir"])
        .arg(&upstream)
        .args(["rev-parse", "--verify", "refs/heads/main"])
        .output()
        .unwrap();
    assert!(!main.status.success(), "main must stay unpushed:\n{out}");

    // `audit tail --no-follow` (run from where the clone was made) shows the denial.
    let [tail] = tail.as_slice() else {
        panic!("one `latchkey audit tail` line expected: {tail:?}")
    };
    assert!(tail.contains("--no-follow"), "{tail}");
    let o = ok(home.sh(&work, tail).output().unwrap());
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.contains("DENY") && l.contains("protect-main")),
        "{}",
        stdout(&o)
    );

    // Values the CLI validates: `--decision` as the log stores it, and
    // durations in the config's syntax.
    let denied = query_json(&sb, &["--decision", "deny"]);
    assert!(!denied.is_empty());
    assert!(
        denied.iter().all(|e| e["decision"]["effect"] == "deny"),
        "{denied:#?}"
    );
    let id = stdout(&ok(
        sb.cli(&["dev", "token", "--user", "alice", "--ttl", "600"])
    ))
    .trim()
    .to_owned();
    let o = ok(latchkey_cmd(["token", "--data"])
        .arg(&sb.data)
        .args(["--subject-token", &id, "--audience", "git"])
        .args(["--lifetime", "5m", "--json"])
        .output()
        .unwrap());
    let answer: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(answer["expires_in"], 300, "{answer}");

    // A new repository's clone URL is this sandbox's.
    let o = ok(sb.cli(&["dev", "repo", "create", "acme/new"]));
    assert!(
        stdout(&o).contains(&format!("clone URL: {}/git/local/acme/new.git", sb.url)),
        "{}",
        stdout(&o)
    );
}

/// Issue 13, item 1: a dev token minted for another URL is refused as a
/// dev token from another sandbox, not with advice to add `[[issuers]]`.
#[test]
fn a_dev_token_from_another_sandbox_is_refused_saying_so() {
    let sb = Sandbox::start();
    let foreign = stdout(&ok(sb.cli(&[
        "dev",
        "token",
        "--user",
        "alice",
        "--url",
        "http://127.0.0.1:1",
    ])))
    .trim()
    .to_owned();
    let o = latchkey_cmd(["token", "--data"])
        .arg(&sb.data)
        .args(["--subject-token", &foreign, "--audience", "git"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("dev token from another sandbox")
            && err.contains("http://127.0.0.1:1/dev-idp")
            && err.contains(&format!("latchkey dev token --url {}", sb.url)),
        "{err}"
    );
    assert!(!err.contains("[[issuers]]"), "{err}");
}

/// Issue 13, item 3: with an emulator the sandbox maps a `prod` database
/// too, so the README's allowed write (dev) and refused write (prod,
/// `protect-prod-documents`) both happen, against Google's real emulator.
#[test]
fn the_sandbox_maps_prod_so_the_documented_denial_happens() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(emu) = rt.block_on(latchkey_testkit::firestore::FirestoreEmulator::start_or_skip())
    else {
        return;
    };
    let sb = Sandbox::start_with(&["--firestore-emulator", &emu.host_port()]);
    let id = sb.id_token("alice", &["developers"]);
    let token = sb.token(&id, "documents");
    let write = |database: &str| {
        let url = format!(
            "{}/v1/projects/demo/databases/{database}/documents/notes/hello",
            sb.url
        );
        rt.block_on(async {
            let resp = reqwest::Client::new()
                .patch(&url)
                .bearer_auth(&token)
                .json(&serde_json::json!({"fields": {"text": {"stringValue": "hi"}}}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    };
    let (status, body) = write("(default)");
    assert_eq!(status, 200, "{body}");
    let (status, body) = write("prod");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("protect-prod-documents"), "{body}");
    let prod = rt.block_on(emu.documents("demo", "prod")).unwrap();
    assert!(prod.is_empty(), "{prod:?}");
    drop(sb);
    rt.block_on(emu.stop());
}

/// Issue 15: with nothing but `latchkey dev`, the sandbox serves documents
/// from its embedded store: a developer's write to `(default)` lands, the
/// same write to `prod` is refused by name and leaves nothing behind, and
/// `latchkey documents export` / `import` carry the documents (times
/// included) into another sandbox.
#[test]
fn the_sandbox_serves_documents_from_its_embedded_store() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sb = Sandbox::start();
    let id = sb.id_token("alice", &["developers"]);
    let token = sb.token(&id, "documents");
    let call = |method: reqwest::Method, url: &str, body: Option<serde_json::Value>| {
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(method, url)
                .bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    };
    let doc = |database: &str| {
        format!(
            "{}/v1/projects/demo/databases/{database}/documents/notes/hello",
            sb.url
        )
    };
    let body =
        serde_json::json!({"fields": {"text": {"stringValue": "hi"}, "n": {"integerValue": "7"}}});
    let (status, text) = call(
        reqwest::Method::PATCH,
        &doc("(default)"),
        Some(body.clone()),
    );
    assert_eq!(status, 200, "{text}");
    let (status, text) = call(reqwest::Method::PATCH, &doc("prod"), Some(body));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("protect-prod-documents"), "{text}");
    let (status, _) = call(reqwest::Method::GET, &doc("prod"), None);
    assert_eq!(status, 404);
    let (status, before) = call(reqwest::Method::GET, &doc("(default)"), None);
    assert_eq!(status, 200, "{before}");

    // Export beside the running gateway: one line, the document's full
    // name, its fields in REST JSON form and its times.
    let out = sb.dir.path().join("documents.jsonl");
    ok(sb.cli(&["documents", "export", "--out", out.to_str().unwrap()]));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0]["name"],
        "projects/demo/databases/(default)/documents/notes/hello"
    );
    assert_eq!(
        lines[0]["fields"]["n"],
        serde_json::json!({"integerValue": "7"})
    );
    assert!(lines[0]["createTime"].is_string() && lines[0]["updateTime"].is_string());
    sb.stop();

    // Into a new sandbox, stopped, twice (idempotent); a bad file changes nothing.
    let mut other = Sandbox::start();
    other.stop();
    let bad = sb.dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"name\": \"projects/demo/databases/(default)/documents/x\", \"fields\": {{\"a\": {{\"nope\": 1}}}}}}\n",
            serde_json::to_string(&lines[0]).unwrap()
        ),
    )
    .unwrap();
    let o = other.cli(&["documents", "import", bad.to_str().unwrap()]);
    assert!(!o.status.success(), "a bad line is refused");
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    for _ in 0..2 {
        ok(other.cli(&["documents", "import", out.to_str().unwrap()]));
    }
    other.restart();
    let id = other.id_token("alice", &["developers"]);
    let token = other.token(&id, "documents");
    let after = rt.block_on(async {
        reqwest::Client::new()
            .get(format!(
                "{}/v1/projects/demo/databases/(default)/documents/notes/hello",
                other.url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let (before, after): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&before).unwrap(),
        serde_json::from_str(&after).unwrap(),
    );
    assert_eq!(before, after, "the same document, times included");
}
