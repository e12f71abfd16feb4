//! A repository of several hundred MiB pushed and cloned through the
//! gateway, which must stream it: the gateway process's peak RSS stays far
//! below the repository's size.
//!
//! Runs the real binary (`latchkey dev`) and the real `git` client against
//! the sandbox's local upstream. Linux only (peak RSS comes from
//! `/proc/PID/status`). Skip with `LATCHKEY_SKIP_LARGE=1`; the size is
//! `LATCHKEY_LARGE_MIB` (default 300).
#![allow(clippy::unwrap_used, missing_docs)]
#![cfg(target_os = "linux")]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
use tokio::time::Instant;

/// Peak RSS allowed for the gateway. A debug build streaming this test's
/// traffic peaks around 40-50 MiB; buffering a pack would take it past the
/// repository's size.
const MAX_PEAK_RSS_MIB: u64 = if cfg!(debug_assertions) { 128 } else { 64 };

/// `latchkey dev`, killed and reaped on drop.
struct Sandbox {
    child: Child,
    url: String,
    data: PathBuf,
}

impl Sandbox {
    fn start(data: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(BIN)
            .args(["dev", "--data"])
            .arg(data)
            .args(["--listen", &addr.to_string()])
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut sandbox = Self {
            child,
            url: format!("http://{addr}"),
            data: data.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if health_ok(addr) {
                return sandbox;
            }
            if let Some(status) = sandbox.child.try_wait().unwrap() {
                panic!("latchkey dev exited before answering: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "latchkey dev did not answer GET /admin/health"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A Latchkey token for `alice` (a developer) with audience `git`.
    fn git_token(&self) -> String {
        let id = run_bin(&[
            "dev",
            "token",
            "--data",
            self.data.to_str().unwrap(),
            "--url",
            &self.url,
            "--user",
            "alice",
            "--group",
            "developers",
        ]);
        run_bin(&[
            "token",
            "--url",
            &self.url,
            "--subject-token",
            &id,
            "--audience",
            "git",
        ])
    }

    /// Peak resident set size of the gateway process so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /admin/health` answers 200.
fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /admin/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn run_bin(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "latchkey {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `git` isolated from the user's and the system's configuration.
fn git(home: &Path) -> Command {
    let mut c = Command::new("git");
    c.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
        ]);
    c
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository of `mib` MiB of random (incompressible) 1 MiB blobs over
/// four commits; returns its HEAD.
fn generate_repo(home: &Path, dir: &Path, mib: usize) -> String {
    run(git(home).args(["init", "-q", "-b", "work"]).arg(dir));
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    let commits = 4;
    let per_commit = mib.div_ceil(commits);
    for c in 0..commits {
        let sub = dir.join(format!("data{c}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..per_commit {
            let mut file = std::fs::File::create(sub.join(format!("blob{f}.bin"))).unwrap();
            let copied = std::io::copy(&mut (&mut urandom).take(1 << 20), &mut file).unwrap();
            assert_eq!(copied, 1 << 20);
        }
        run(git(home).current_dir(dir).args(["add", "-A"]));
        run(git(home)
            .current_dir(dir)
            .args(["commit", "-q", "-m", &format!("data {c}")]));
    }
    run(git(home).current_dir(dir).args(["rev-parse", "HEAD"]))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[test]
fn pushes_and_clones_a_large_repository_in_bounded_memory() {
    if std::env::var("LATCHKEY_SKIP_LARGE").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: LATCHKEY_SKIP_LARGE=1 asks to skip the large-repository test");
        return;
    }
    let mib: usize = std::env::var("LATCHKEY_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let started = Instant::now();

    let sandbox = Sandbox::start(&tmp.path().join("data"));
    let token = sandbox.git_token();
    let auth = format!("http.extraHeader=Authorization: Bearer {token}");
    let remote = format!("{}/git/local/acme/app.git", sandbox.url);
    let rss_idle = sandbox.peak_rss_kib();

    let t = Instant::now();
    let work = tmp.path().join("work");
    let head = generate_repo(&home, &work, mib);
    let generated = t.elapsed();

    // Push everything to a feature branch (main is protected). Random blobs
    // never delta: skip the delta search, compress fast.
    let t = Instant::now();
    run(git(&home).current_dir(&work).args([
        "-c",
        &auth,
        "-c",
        "pack.window=0",
        "-c",
        "pack.compression=1",
        "push",
        "-q",
        &remote,
        "HEAD:refs/heads/feature",
    ]));
    let pushed = t.elapsed();
    let upstream = sandbox.data.join("repos/acme/app.git");
    assert_eq!(
        run(git(&home)
            .arg("-C")
            .arg(&upstream)
            .args(["rev-parse", "refs/heads/feature"])),
        head,
        "the upstream's feature branch is the pushed commit"
    );
    let rss_after_push = sandbox.peak_rss_kib();

    // Clone it back (every object; bare, so no checkout).
    let t = Instant::now();
    let clone = tmp.path().join("clone.git");
    run(git(&home)
        .args(["-c", &auth, "clone", "-q", "--bare", "--branch", "feature"])
        .arg(&remote)
        .arg(&clone));
    let cloned = t.elapsed();
    assert_eq!(
        run(git(&home).arg("-C").arg(&clone).args(["rev-parse", "HEAD"])),
        head,
        "the clone's HEAD is the pushed commit"
    );
    let packed_mib = run(git(&home)
        .arg("-C")
        .arg(&clone)
        .args(["count-objects", "-v"]))
    .lines()
    .find_map(|l| l.strip_prefix("size-pack: "))
    .and_then(|v| v.parse::<u64>().ok())
    .unwrap()
        / 1024;
    assert!(
        packed_mib as usize >= mib * 9 / 10,
        "the clone holds the whole repository ({packed_mib} MiB packed)"
    );

    let peak = sandbox.peak_rss_kib();
    eprintln!(
        "large_repo: {mib} MiB ({packed_mib} MiB packed): generated in {}, pushed in {}, cloned in {}, \
         total {}; gateway peak RSS {} MiB (idle {} MiB, after push {} MiB, bound {MAX_PEAK_RSS_MIB} MiB)",
        secs(generated),
        secs(pushed),
        secs(cloned),
        secs(started.elapsed()),
        peak / 1024,
        rss_idle / 1024,
        rss_after_push / 1024,
    );
    assert!(
        peak / 1024 < MAX_PEAK_RSS_MIB,
        "gateway peak RSS {} MiB exceeds {MAX_PEAK_RSS_MIB} MiB while streaming {mib} MiB",
        peak / 1024
    );
}
