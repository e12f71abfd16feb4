//! Helpers for the end-to-end tests: run the built `latchkey` binary and real
//! `git` the way a user would, and a `latchkey dev` sandbox as a child process.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
use tokio::time::Instant;

/// Environment variables of the person running the tests that would change
/// what the binary or git does.
const SCRUB: &[&str] = &[
    "LATCHKEY_CONFIG",
    "LATCHKEY_URL",
    "LATCHKEY_ID_TOKEN",
    "LATCHKEY_ID_TOKEN_FILE",
    "LATCHKEY_ID_TOKEN_COMMAND",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_DIR",
    "GIT_WORK_TREE",
];

/// `latchkey ARGS` with a clean environment.
pub fn latchkey_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    // `LATCHKEY_TEST_BIN` runs the suite against another build (to see a
    // regression test fail on the code before a fix).
    let bin = std::env::var_os("LATCHKEY_TEST_BIN").unwrap_or_else(|| BIN.into());
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("LATCHKEY_LOG", "warn")
        .stdin(Stdio::null());
    for v in SCRUB {
        cmd.env_remove(v);
    }
    cmd
}

/// Runs `latchkey ARGS` to completion.
pub fn latchkey<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    latchkey_cmd(args).output().expect("run latchkey")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics with both streams unless the command succeeded.
#[track_caller]
pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

/// A home directory for git: no system or user config of the machine, no prompts.
pub struct GitHome {
    pub dir: tempfile::TempDir,
}

impl GitHome {
    pub fn new() -> Self {
        GitHome {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `git ARGS` run in `cwd` as a user with this home.
    pub fn git<I, S>(&self, cwd: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("git");
        for v in SCRUB {
            cmd.env_remove(v);
        }
        cmd.current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_CACHE_HOME", self.cache())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Alice")
            .env("GIT_AUTHOR_EMAIL", "alice@example.com")
            .env("GIT_COMMITTER_NAME", "Alice")
            .env("GIT_COMMITTER_EMAIL", "alice@example.com")
            .env("LATCHKEY_LOG", "warn");
        cmd
    }
}

/// The directory holding the `latchkey` binary under test, for `PATH`, so
/// scripts run `latchkey` as a user who installed it would.
pub fn bin_dir() -> PathBuf {
    let bin = std::env::var_os("LATCHKEY_TEST_BIN").unwrap_or_else(|| BIN.into());
    Path::new(&bin)
        .parent()
        .expect("the binary has a directory")
        .to_owned()
}

impl GitHome {
    /// `sh -c SCRIPT` run in `cwd` as this user (the environment of
    /// [`Self::git`]), with the binary under test first on `PATH`.
    pub fn sh(&self, cwd: &Path, script: &str) -> Command {
        self.shell("sh", cwd, script)
    }

    /// [`Self::sh`] with another shell, e.g. `bash`.
    pub fn shell(&self, shell: &str, cwd: &Path, script: &str) -> Command {
        // The same environment as `git` gets (`get_envs` lists what it sets).
        let cmd = self.git(cwd, ["--version"]);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin_dir()];
        dirs.extend(std::env::split_paths(&path));
        let mut sh = Command::new(shell);
        sh.current_dir(cwd)
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null());
        for v in SCRUB {
            sh.env_remove(v);
        }
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh.env("PATH", std::env::join_paths(dirs).expect("PATH"));
        sh
    }
}

/// A `latchkey dev` sandbox running as a child process; killed on drop.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub url: String,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET path` over plain HTTP/1.0; the status code, or `None` if nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

impl Sandbox {
    /// Starts `latchkey dev --data <tempdir>/data --listen 127.0.0.1:<free port>`
    /// and waits until `/admin/health` answers 200.
    pub fn start() -> Sandbox {
        Sandbox::start_with(&[])
    }

    /// [`Self::start`] with more `latchkey dev` arguments (after `--listen`).
    pub fn start_with(extra: &[&str]) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        for attempt in 0..3 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
            let mut child = latchkey_cmd(["dev", "--data"])
                .arg(&data)
                .args(["--listen", &addr])
                .args(extra)
                .env("LATCHKEY_LOG", "info")
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn latchkey dev");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    let log =
                        std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                    if attempt < 2 && log.contains("cannot listen") {
                        break; // the port was taken meanwhile; try another
                    }
                    panic!("latchkey dev exited ({status}):\n{log}");
                }
                if http_status(&addr, "/admin/health") == Some(200) {
                    return Sandbox {
                        url: format!("http://{addr}"),
                        data,
                        child: Some(child),
                        dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("latchkey dev did not answer /admin/health within 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("three attempts either returned or panicked")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A fresh ID token from the dev identity provider.
    pub fn id_token(&self, user: &str, groups: &[&str]) -> String {
        let mut cmd = latchkey_cmd(["dev", "token", "--data"]);
        cmd.arg(&self.data)
            .args(["--url", &self.url, "--user", user]);
        for g in groups {
            cmd.args(["--group", g]);
        }
        stdout(&ok(cmd.output().expect("dev token")))
            .trim()
            .to_owned()
    }

    /// A Latchkey token for `audience`, exchanged from `id`.
    pub fn token(&self, id: &str, audience: &str) -> String {
        let o = ok(latchkey([
            "token",
            "--url",
            &self.url,
            "--subject-token",
            id,
            "--audience",
            audience,
        ]));
        stdout(&o).trim().to_owned()
    }

    pub fn repo_url(&self) -> String {
        format!("{}/git/local/acme/app.git", self.url)
    }

    /// `latchkey ARGS --data <data>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        latchkey_cmd(args)
            .arg("--data")
            .arg(&self.data)
            .output()
            .expect("run latchkey")
    }

    /// Starts `latchkey dev` again on the same data directory and address
    /// (after [`Self::stop`]) and waits until `/admin/health` answers 200.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the sandbox first");
        let addr = self.url.trim_start_matches("http://").to_owned();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log");
        let mut child = latchkey_cmd(["dev", "--data"])
            .arg(&self.data)
            .args(["--listen", &addr])
            .env("LATCHKEY_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn latchkey dev");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(&addr, "/admin/health") != Some(200) {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("latchkey dev exited ({status}):\n{}", self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("latchkey dev did not answer /admin/health within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// SIGTERM, then waits for a clean exit (the server writes a final checkpoint).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "latchkey dev exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "latchkey dev did not stop within 15 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Retries `f` for up to 5 s until it returns `Some` (audit records and their
/// index are written just after the response in some paths).
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Single-quotes `s` for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `crates/policy/starter`.
pub fn starter_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/starter")
}
