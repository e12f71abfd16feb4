//! End to end for the operator commands that need no running gateway:
//! `serve --check`, `policy validate|test` and every `--help`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

/// 32 bytes, base64.
const MASTER_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const MASTER_ENV: &str = "LATCHKEY_E2E_MASTER_KEY";

fn good_config(dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:1"
public_url = "http://127.0.0.1:1"
data_dir = "{data}"

[keys]
master_key = {{ env = "{MASTER_ENV}" }}

[tokens]
max_lifetime = "1h"

[policy]
dir = "{policies}"

[git.upstreams.local]
local_root = "repos"
"#,
        data = dir.join("data").display(),
        policies = starter_dir().display(),
    )
}

/// `latchkey serve --config <file with text> [extra]` with the master key set.
fn serve(dir: &Path, name: &str, text: &str, extra: &[&str], key: bool) -> std::process::Output {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let mut cmd = latchkey_cmd(["serve", "--config"]);
    cmd.arg(&path).args(extra);
    if key {
        cmd.env(MASTER_ENV, MASTER_KEY);
    } else {
        cmd.env_remove(MASTER_ENV);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A config that should be refused must never start serving; don't hang if it does.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn refused(o: &std::process::Output, names: &[&str]) {
    assert!(
        !o.status.success(),
        "must be refused:\n{}\n{}",
        stdout(o),
        stderr(o)
    );
    // `serve --check` prints one line per component on stdout (the failed
    // ones as `FAIL`); other refusals are on stderr.
    let err = format!("{}{}", stdout(o), stderr(o));
    for n in names {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
}

#[test]
fn serve_check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = good_config(d);
    // `local_root = "repos"` is next to the config file, and must exist.
    std::fs::create_dir(d.join("repos")).unwrap();

    let o = serve(d, "good.toml", &good, &["--check"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("is valid"), "{}", stdout(&o));

    let typo = good.replace(
        "max_lifetime = \"1h\"",
        "max_lifetime = \"1h\"\nmax_lifetme = \"2h\"",
    );
    refused(
        &serve(d, "unknown.toml", &typo, &["--check"], true),
        &["max_lifetme"],
    );

    let long = good.replace("max_lifetime = \"1h\"", "max_lifetime = \"13h\"");
    refused(
        &serve(d, "long.toml", &long, &["--check"], true),
        &["tokens.max_lifetime", "12h"],
    );

    refused(
        &serve(d, "good.toml", &good, &["--check"], false),
        &["keys.master_key", MASTER_ENV],
    );

    let dev = format!("{good}\n[dev_issuer]\nenabled = true\n");
    refused(
        &serve(d, "dev.toml", &dev, &[], true),
        &["dev_issuer", "allow_in_serve"],
    );
    refused(
        &serve(d, "dev.toml", &dev, &["--check"], true),
        &["dev_issuer", "allow_in_serve"],
    );
    let allowed = format!("{good}\n[dev_issuer]\nenabled = true\nallow_in_serve = true\n");
    let o = serve(d, "dev-allowed.toml", &allowed, &["--check"], true);
    assert!(o.status.success(), "{}", stderr(&o));

    // A Firestore service-account key is read and checked without going to
    // Google: a missing or malformed key fails the check, not the first call.
    let key = d.join("sa.json");
    let firestore = format!(
        "{good}\n[firestore]\nservice_account_file = \"{}\"\n[firestore.databases]\n\"(default)\" = \"dev\"\n",
        key.display()
    );
    refused(
        &serve(d, "fs-missing.toml", &firestore, &["--check"], true),
        &["firestore", "sa.json", "cannot read it"],
    );
    std::fs::write(
        &key,
        r#"{"type": "service_account", "client_email": "x@y"}"#,
    )
    .unwrap();
    refused(
        &serve(d, "fs-bad.toml", &firestore, &["--check"], true),
        &["firestore", "sa.json", "private_key"],
    );
    let emulator = format!(
        "{good}\n[firestore]\nemulator = \"127.0.0.1:1\"\n[firestore.databases]\n\"(default)\" = \"dev\"\n"
    );
    let o = serve(d, "fs-emulator.toml", &emulator, &["--check"], true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("firestore"), "{}", stdout(&o));
}

/// A data directory holding the starter policies as `latchkey dev` writes them.
fn dev_data() -> Sandbox {
    let mut sb = Sandbox::start();
    sb.stop();
    sb
}

#[test]
fn policy_validate_and_test() {
    let sb = dev_data();
    let o = ok(sb.cli(&["policy", "validate"]));
    assert!(stdout(&o).contains("protect-main"), "{}", stdout(&o));
    // Proper plurals, not `13 polic(ies)`.
    assert!(
        stdout(&o).contains(" policies in `") && !stdout(&o).contains("(ies)"),
        "{}",
        stdout(&o)
    );

    // `latchkey dev` writes the starter tests next to the policies.
    let tests = sb.data.join("policies").join("tests.toml");
    assert_eq!(
        std::fs::read_to_string(&tests).unwrap(),
        std::fs::read_to_string(starter_dir().join("tests.toml")).unwrap()
    );
    let o = sb.cli(&["policy", "test", tests.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "starter tests must pass on the sandbox's policies:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    // The report ends its last line.
    assert!(stdout(&o).ends_with(" 0 failed\n"), "{:?}", stdout(&o));

    // A wrong expectation fails naming the row.
    let text = std::fs::read_to_string(&tests).unwrap();
    let first = text.find("expect = \"allow\"").unwrap();
    let mut wrong = text.clone();
    wrong.replace_range(
        first..first + "expect = \"allow\"".len(),
        "expect = \"deny\"",
    );
    let wrong_file = sb.dir.path().join("wrong.toml");
    std::fs::write(&wrong_file, wrong).unwrap();
    let o = sb.cli(&["policy", "test", wrong_file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        fail.contains("#1") && fail.contains("admins may rotate keys"),
        "{fail}"
    );

    // Broken policy files are refused naming the file.
    for (i, broken) in [
        "permit (principal, action, resource", // syntax
        "@id(\"pull\") permit (principal, action == Latchkey::Action::\"git.pull\", resource);", // schema
    ]
    .iter()
    .enumerate()
    {
        let dir = sb.dir.path().join(format!("broken-{i}"));
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for e in std::fs::read_dir(sb.data.join("policies")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), policies.join(e.file_name())).unwrap();
        }
        std::fs::write(policies.join("50-broken.cedar"), broken).unwrap();
        let o = latchkey_cmd(["policy", "validate", "--data"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{}", stdout(&o));
        assert!(stderr(&o).contains("50-broken.cedar"), "{}", stderr(&o));
    }
}

#[test]
fn every_subcommand_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["dev"],
        &["dev", "token"],
        &["dev", "repo", "create"],
        &["token"],
        &["login"],
        &["logout"],
        &["audit", "verify"],
        &["audit", "query"],
        &["audit", "tail"],
        &["policy", "validate"],
        &["policy", "test"],
        &["policy", "schema"],
        &["keys", "list"],
        &["keys", "rotate"],
        &["git-credential"],
        &["ci", "token"],
        &["init"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let o = latchkey(&args);
        assert!(
            o.status.success(),
            "`latchkey {}` failed: {}",
            args.join(" "),
            stderr(&o)
        );
        assert!(
            stdout(&o).contains("Usage:"),
            "`latchkey {}`: {}",
            args.join(" "),
            stdout(&o)
        );
    }
}

/// `audit query` reads the index; when the index trails the log and no
/// gateway runs to catch it up, the answer says so instead of silently
/// missing records (it waits a moment first, for a running gateway).
#[test]
fn audit_query_says_when_the_index_is_behind_the_log() {
    let sb = dev_data();
    let o = ok(sb.cli(&["audit", "query", "--json"]));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
    let indexed = stdout(&o).lines().count();

    // A record logged with no index attached (as if the gateway stopped
    // before indexing it).
    let audit_dir = sb.data.join("audit");
    let logged = tokio::runtime::Runtime::new().unwrap().block_on(async {
        // The gateway's own checkpoint key: the log refuses to be extended
        // by any other.
        let master = latchkey_tokens::MasterKey::from_base64(
            std::fs::read_to_string(sb.data.join("master.key"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        let store = latchkey_store::SqliteStore::open(&sb.data.join("latchkey.db"))
            .await
            .unwrap();
        let signer = latchkey_gateway::load_audit_signer(&store, &master)
            .await
            .unwrap();
        store.close().await;
        let log = latchkey_audit::AuditLog::open(
            &audit_dir,
            signer,
            None,
            std::sync::Arc::new(latchkey_core::SystemClock),
            latchkey_audit::AuditConfig::default(),
        )
        .await
        .unwrap();
        let principal =
            latchkey_core::Principal::new(latchkey_core::PrincipalKind::User, "alice", "dev");
        let intent = latchkey_core::Intent::new(
            latchkey_core::Action::GitPush,
            latchkey_core::ResourceRef::new(
                latchkey_core::ResourceKind::Ref,
                "local/app:refs/heads/main",
            ),
        );
        let decision = latchkey_core::Decision {
            effect: latchkey_core::Effect::Allow,
            policy_ids: vec!["read-repos".into()],
            reason: "test".into(),
        };
        let seq = log
            .append(latchkey_audit::AuditEvent::decision(
                "req-unindexed",
                &principal,
                &intent,
                &decision,
                1,
            ))
            .await
            .unwrap();
        log.close().await.unwrap();
        seq
    });

    let o = ok(sb.cli(&["audit", "query", "--json"]));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("the log goes to {logged}")) && err.contains("latchkey audit tail"),
        "{err}"
    );
    // The index's answer is given all the same, unchanged.
    assert_eq!(stdout(&o).lines().count(), indexed, "{}", stdout(&o));
}

/// `latchkey init DIR`, run from DIR (relative paths in the generated config
/// are relative to DIR, the config file's directory).
fn init(dir: &Path) -> std::process::Output {
    latchkey_cmd(["init"]).arg(dir).output().unwrap()
}

/// Issue 13, item 4: `latchkey init` writes what `serve` needs (a config
/// that checks, policies whose tests pass, a private master key) and never
/// overwrites a file.
#[test]
fn init_writes_what_serve_needs_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gateway");
    let o = ok(init(&dir));
    assert!(
        stdout(&o).contains("latchkey serve --check"),
        "{}",
        stdout(&o)
    );
    let config = dir.join("latchkey.toml");

    let o = ok(latchkey_cmd(["serve", "--check", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .output()
        .unwrap());
    assert!(stdout(&o).contains("is valid"), "{}", stdout(&o));
    let o = ok(latchkey_cmd(["policy", "test"])
        .arg(dir.join("data/policies/tests.toml"))
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .output()
        .unwrap());
    // Every starter test passes, and the report ends its last line.
    assert!(
        stdout(&o).ends_with(" passed, 0 failed\n"),
        "{}",
        stdout(&o)
    );

    let key = dir.join("data/master.key");
    let text = std::fs::read_to_string(&key).unwrap();
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim()).unwrap();
    assert_eq!(bytes.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir.join("data")), 0o700);
    }

    // A second init refuses, naming the file, and changes nothing.
    let before = std::fs::read(&config).unwrap();
    let o = init(&dir);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("latchkey.toml") && stderr(&o).contains("exists"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&config).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);

    // One existing file anywhere in the set: refused before anything is written.
    let partial = tmp.path().join("partial");
    std::fs::create_dir_all(partial.join("data/policies")).unwrap();
    std::fs::write(partial.join("data/policies/20-git.cedar"), "// mine").unwrap();
    let o = init(&partial);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("20-git.cedar"), "{}", stderr(&o));
    assert!(!partial.join("latchkey.toml").exists());
    assert!(!partial.join("data/master.key").exists());
}

/// A config from `latchkey init` that listens on a free port.
fn init_on_free_port(dir: &Path) -> (std::path::PathBuf, String) {
    ok(init(dir));
    let config = dir.join("latchkey.toml");
    let addr = format!("127.0.0.1:{}", free_port());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:8080\""), "{text}");
    std::fs::write(&config, text.replace("127.0.0.1:8080", &addr)).unwrap();
    (config, addr)
}

/// `latchkey serve` on `config` until `/admin/health` answers, then SIGTERM;
/// what it wrote on stderr.
fn serve_briefly(config: &Path, addr: &str, extra_env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = config.parent().unwrap();
    let log = dir.join("stderr.log");
    let mut cmd = latchkey_cmd(args);
    cmd.args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("LATCHKEY_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while http_status(addr, "/admin/health") != Some(200) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "latchkey serve exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(tokio::time::Instant::now() < deadline, "no health answer");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&log).unwrap()
}

/// Issue 13, items 4 and 9: the config `init` writes serves as is; logs are
/// JSON lines with `--log-format json`, and plain text without escape codes
/// when stderr is not a terminal.
#[test]
fn init_config_serves_and_logs_for_machines_and_people() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, addr) = init_on_free_port(&tmp.path().join("json"));
    let err = serve_briefly(&config, &addr, &[], &["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == "latchkey listening"),
        "{err}"
    );

    let (config, addr) = init_on_free_port(&tmp.path().join("text"));
    let err = serve_briefly(&config, &addr, &[("LATCHKEY_LOG_FORMAT", "text")], &[]);
    assert!(err.contains("latchkey listening"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in a file: {err:?}");
}

/// Issue 13, item 9: colour on a terminal (a pseudo-terminal from
/// `script`), none with `NO_COLOR` set.
#[test]
fn logs_are_coloured_on_a_terminal_unless_no_color() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        latchkey_testkit::skip_or_fail("script", "no `script` (util-linux) for a pseudo-terminal");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // `keys list` on a fresh data directory logs the store's creation at info.
    let run = |name: &str, no_color: bool| {
        let dir = tmp.path().join(name);
        ok(init(&dir));
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec"])
            .arg(format!(
                "{} --log info keys list --config latchkey.toml",
                sh_quote(BIN)
            ))
            .arg("/dev/null")
            .current_dir(&dir)
            .env_remove("NO_COLOR")
            .env_remove("LATCHKEY_LOG_FORMAT");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let o = ok(cmd.output().unwrap());
        stdout(&o)
    };
    let coloured = run("tty", false);
    assert!(coloured.contains("store migration"), "{coloured}");
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = run("no-color", true);
    assert!(plain.contains("store migration"), "{plain}");
    assert!(
        !plain.contains("\u{1b}["),
        "colour despite NO_COLOR: {plain:?}"
    );
}

/// Issue 13, item 7: every duration flag takes the config's syntax and
/// every enumerated flag refuses unknown values, listing the valid ones.
#[test]
fn duration_and_enumerated_flags_are_validated() {
    let refused: &[(&[&str], &[&str])] = &[
        (
            &[
                "token",
                "--subject-token",
                "x",
                "--audience",
                "git",
                "--lifetime",
                "15x",
            ],
            &["--lifetime", "15x", "unknown unit"],
        ),
        (
            &[
                "ci",
                "token",
                "--audience",
                "git",
                "--url",
                "http://127.0.0.1:1",
                "--lifetime",
                "soon",
            ],
            &["--lifetime", "soon"],
        ),
        (
            &["dev", "token", "--user", "a", "--ttl", "1y"],
            &["--ttl", "1y"],
        ),
        (
            &["dev", "token", "--user", "a", "--ttl", "0"],
            &["--ttl", "zero"],
        ),
        (
            &["audit", "query", "--decision", "denied"],
            &["--decision", "denied", "[possible values: allow, deny]"],
        ),
        (
            &["audit", "query", "--since", "yesterday"],
            &["--since", "yesterday", "RFC 3339"],
        ),
        (
            &["ci", "token", "--audience", "git", "--from", "jenkins"],
            &[
                "--from",
                "jenkins",
                "possible values: buildkite, github-actions, file, stdin",
            ],
        ),
        (
            &["--log-format", "yaml", "policy", "schema"],
            &["--log-format", "yaml", "[possible values: text, json]"],
        ),
    ];
    for (args, names) in refused {
        let o = latchkey(*args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "`{}`: {}",
            args.join(" "),
            stderr(&o)
        );
        for n in *names {
            assert!(
                stderr(&o).contains(n),
                "`{}`: expected `{n}` in:\n{}",
                args.join(" "),
                stderr(&o)
            );
        }
    }
    // (Bare seconds still work: the sandbox test mints with `--ttl 600`.)
}
