//! An audit log rewritten or cut by someone with the disk but not the key
//! does not verify, and `latchkey dev` refuses to start on it (issue 11,
//! point 2). Each test tampers a real `latchkey dev` sandbox's log the way
//! an attacker would.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

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

/// Runs `latchkey dev` on the sandbox's data; the gateway must refuse to
/// start, saying how to investigate and how to start a new log.
#[track_caller]
fn dev_refuses(sb: &Sandbox) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = latchkey_cmd(["dev", "--data"])
        .arg(&sb.data)
        .args(["--listen", &addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if http_status(&addr, "/admin/health") == Some(200) || Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "`latchkey dev` started on a log that does not verify:\n{}",
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
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
