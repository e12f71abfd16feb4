//! An audit log rewritten or cut by someone with the disk but not the key
//! does not verify, and `latchkey dev` refuses to start on it (issue 11,
//! point 2). Each test tampers a real `latchkey dev` sandbox's log the way
//! an attacker would.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// A stopped sandbox whose log holds a few token exchanges.
fn used_sandbox() -> Sandbox {
    let mut sb = Sandbox::start();
    for user in ["alice", "bob", "carol"] {
        let id = sb.id_token(user, &["developers"]);
        sb.token(&id, "git");
    }
    // The index trails the log by a few milliseconds.
    std::thread::sleep(Duration::from_millis(300));
    sb.stop();
    sb
}

fn audit_dir(sb: &Sandbox) -> std::path::PathBuf {
    sb.data.join("audit")
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Recomputes every record's `prev` and `hash` from the first on, as
/// someone without the checkpoint key would after changing a record.
fn rechain(lines: &mut [String]) {
    let mut prev = "0".repeat(64);
    for line in lines.iter_mut() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        let event = &line[line.find(",\"event\":").unwrap() + 9..line.len() - 1];
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&seq.to_be_bytes());
        ctx.update(&hex::decode(&prev).unwrap());
        ctx.update(event.as_bytes());
        let hash = hex::encode(ctx.finish().as_ref());
        *line =
            format!("{{\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"{hash}\",\"event\":{event}}}");
        prev = hash;
    }
}

/// Keeps only the checkpoints that vouch for records up to `seq`.
fn drop_checkpoints_after(dir: &Path, seq: u64) {
    let path = dir.join("checkpoints.log");
    let kept: Vec<String> = read_lines(&path)
        .into_iter()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["seq"].as_u64().unwrap() <= seq
        })
        .collect();
    write_lines(&path, &kept);
}

/// `latchkey audit verify` must say the log was tampered with.
#[track_caller]
fn verify_fails(sb: &Sandbox, names: &[&str]) {
    let o = sb.cli(&["audit", "verify"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "verify must fail:\n{out}");
    assert!(out.contains("TAMPERED"), "{out}");
    for n in names {
        assert!(out.contains(n), "expected `{n}` in:\n{out}");
    }
}

/// What `latchkey dev` on an existing data directory did.
enum Dev {
    /// It served `/admin/health`; stopped cleanly since.
    Served,
    /// It exited without serving.
    Exited(std::process::Output),
}

/// Runs `latchkey dev` on `data` (under `umask 000` when `open_umask`),
/// until it serves (then stops it with SIGTERM) or exits.
fn dev_on(data: &Path, open_umask: bool) -> Dev {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = latchkey_cmd(["dev", "--data"]);
    if open_umask {
        let bin = std::env::var_os("LATCHKEY_TEST_BIN").unwrap_or_else(|| BIN.into());
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", "umask 000 && exec \"$0\" \"$@\""])
            .arg(bin)
            .args(["dev", "--data"])
            .env("LATCHKEY_LOG", "warn")
            .stdin(std::process::Stdio::null());
        cmd = sh;
    }
    let mut child = cmd
        .arg(data)
        .args(["--listen", &addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return Dev::Exited(child.wait_with_output().unwrap());
        }
        if http_status(&addr, "/admin/health") == Some(200) {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            return Dev::Served;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`latchkey dev` neither served nor exited within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `latchkey dev` on the sandbox's data; the gateway must refuse to
/// start, saying how to investigate and how to start a new log.
#[track_caller]
fn dev_refuses(sb: &Sandbox) {
    let o = match dev_on(&sb.data, false) {
        Dev::Exited(o) => o,
        Dev::Served => panic!("`latchkey dev` started on a log that does not verify"),
    };
    assert!(!o.status.success());
    let err = stderr(&o);
    for n in [
        "does not verify",
        "latchkey audit verify",
        "latchkey audit archive",
    ] {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
}

#[test]
fn regression_a_rewritten_log_with_emptied_checkpoints_does_not_verify_or_start() {
    let sb = used_sandbox();
    let dir = audit_dir(&sb);
    let mut lines = read_lines(&dir.join("audit.log"));
    let victim = lines.iter().position(|l| l.contains("bob")).unwrap();
    lines[victim] = lines[victim].replace("bob", "eve");
    rechain(&mut lines);
    write_lines(&dir.join("audit.log"), &lines);
    write_lines(&dir.join("checkpoints.log"), &[]);

    verify_fails(&sb, &["no signed checkpoint"]);
    dev_refuses(&sb);
}

#[test]
fn regression_a_tail_cut_with_its_checkpoint_does_not_verify_or_start() {
    let sb = used_sandbox();
    let dir = audit_dir(&sb);
    let lines = read_lines(&dir.join("audit.log"));
    assert!(lines.len() >= 4, "{lines:?}");
    let keep = lines.len() - 2;
    write_lines(&dir.join("audit.log"), &lines[..keep]);
    drop_checkpoints_after(&dir, keep as u64);

    // The store's audit index still knows the records that were cut.
    verify_fails(&sb, &["the audit index holds records up to"]);
    dev_refuses(&sb);
}

#[test]
fn regression_a_record_changed_mid_log_stops_the_gateway() {
    let sb = used_sandbox();
    let dir = audit_dir(&sb);
    let mut lines = read_lines(&dir.join("audit.log"));
    let victim = lines.iter().position(|l| l.contains("bob")).unwrap();
    assert!(victim + 1 < lines.len());
    lines[victim] = lines[victim].replace("bob", "eve");
    write_lines(&dir.join("audit.log"), &lines);

    verify_fails(&sb, &["hash does not match its contents"]);
    dev_refuses(&sb);
}

#[test]
fn archive_keeps_a_bad_log_as_evidence_and_lets_the_gateway_start_a_new_one() {
    let sb = used_sandbox();
    let dir = audit_dir(&sb);
    let mut lines = read_lines(&dir.join("audit.log"));
    lines[0] = lines[0].replacen("\"time_ms\":", "\"time_ms\":1", 1);
    write_lines(&dir.join("audit.log"), &lines);
    dev_refuses(&sb);

    let o = ok(sb.cli(&["audit", "archive", "--reason", "record 1 changed"]));
    let out = stdout(&o);
    assert!(out.contains("archived the audit log"), "{out}");
    let archived: Vec<_> = std::fs::read_dir(dir.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(archived.len(), 1);
    // The evidence is kept byte for byte.
    assert_eq!(read_lines(&archived[0].join("audit.log")), lines);

    // The new log starts with a record naming the archived one.
    let o = ok(sb.cli(&["audit", "verify"]));
    assert!(
        stdout(&o).contains("audit log intact: 1 record,"),
        "{}",
        stdout(&o)
    );
    let first: serde_json::Value =
        serde_json::from_str(&read_lines(&dir.join("audit.log"))[0]).unwrap();
    let event = &first["event"];
    assert_eq!(event["action"], "audit.archive");
    assert_eq!(
        event["context"]["archived"],
        archived[0].display().to_string()
    );
    let last_old: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(event["context"]["archived_last_hash"], last_old["hash"]);
    assert_eq!(event["outcome"]["detail"], "record 1 changed");

    assert!(matches!(dev_on(&sb.data, false), Dev::Served));
    ok(sb.cli(&["audit", "verify"]));
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(matches!(dev_on(&data, true), Dev::Served));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("audit")), 0o700);
    for file in [
        "master.key",
        "latchkey.db",
        "dev-issuer-key.pk8",
        "audit/audit.log",
        "audit/checkpoints.log",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for file in ["latchkey.db-wal", "latchkey.db-shm"] {
        if data.join(file).exists() {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
    }
}

/// Serves `body` on GET at a random port until the runtime is dropped.
fn serve_witness(rt: &tokio::runtime::Runtime, body: String) -> String {
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/witness",
            axum::routing::get(move || {
                let body = body.clone();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/witness", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    })
}

#[test]
fn verify_proves_the_log_against_a_witness_file_or_url() {
    let sb = used_sandbox();
    let dir = audit_dir(&sb);
    let witnessed = std::fs::read_to_string(dir.join("checkpoints.log")).unwrap();
    let spare = tempfile::tempdir().unwrap();
    let file = spare.path().join("witness.log");
    std::fs::write(&file, &witnessed).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = serve_witness(&rt, witnessed.clone());

    let file_arg = file.display().to_string();
    for source in [file_arg.as_str(), url.as_str()] {
        let o = ok(sb.cli(&["audit", "verify", "--witness", source]));
        assert!(
            stdout(&o).contains("witnessed checkpoints match the log")
                || stdout(&o).contains("1 witnessed checkpoint matches the log"),
            "{}",
            stdout(&o)
        );
    }

    // Cut back to the first checkpoint, which vouches for the empty log:
    // locally consistent, but the witness holds more.
    write_lines(&dir.join("audit.log"), &[]);
    let first = read_lines(&dir.join("checkpoints.log")).remove(0);
    write_lines(&dir.join("checkpoints.log"), &[first]);
    for source in [file_arg.as_str(), url.as_str()] {
        let o = sb.cli(&["audit", "verify", "--witness", source]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        assert!(
            stdout(&o).contains("the witness holds checkpoint 2"),
            "{}",
            stdout(&o)
        );
    }
}
