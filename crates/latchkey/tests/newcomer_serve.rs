//! Issue 13 ("the first hour of a platform engineer"), the `serve` side,
//! with the real binary: paths in a config file mean what they look like,
//! an OS error is said once, `serve --check [--online]` checks every
//! component, and the dev issuer in `serve` is announced loudly.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;

/// 32 bytes, base64.
const MASTER_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

/// `latchkey serve --config FILE ARGS`, run from `cwd`.
fn serve_in(cwd: &Path, config: &Path, args: &[&str]) -> Output {
    let mut cmd = latchkey_cmd(["serve", "--config"]);
    cmd.arg(config).args(args).current_dir(cwd);
    cmd.output().unwrap()
}

fn all_output(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// A config directory `etc/` with a master key file and the starter
/// policies, every path in the file relative.
fn relative_config(root: &Path, extra: &str) -> std::path::PathBuf {
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("policies")).unwrap();
    for entry in std::fs::read_dir(starter_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), etc.join("policies").join(entry.file_name())).unwrap();
    }
    std::fs::write(etc.join("master.key"), MASTER_KEY).unwrap();
    std::fs::create_dir_all(etc.join("repos")).unwrap();
    let path = etc.join("latchkey.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [keys]\nmaster_key = {{ file = \"master.key\" }}\n\
             [policy]\ndir = \"policies\"\n\
             [git.upstreams.local]\nlocal_root = \"repos\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// Relative paths resolve against the config file's directory, whatever
/// directory `latchkey` runs in.
#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let root = tempfile::tempdir().unwrap();
    let config = relative_config(root.path(), "");
    let elsewhere = tempfile::tempdir().unwrap();
    let o = serve_in(elsewhere.path(), &config, &["--check"]);
    assert!(o.status.success(), "{}", all_output(&o));
    let out = stdout(&o);
    let etc = root.path().join("etc");
    assert!(
        out.contains(&format!("policies in {}", etc.join("policies").display()))
            && out.contains("ok   policies: "),
        "{out}"
    );
    assert!(
        out.contains(&etc.join("repos").display().to_string()),
        "{out}"
    );
    assert!(
        out.contains(&etc.join("data").display().to_string()),
        "{out}"
    );
    assert!(out.contains("ok   master key"), "{out}");
}

/// An OS error is said once, with the path it is about, both by `serve`
/// (which stops at the first problem) and by `serve --check`.
#[test]
fn a_missing_file_says_its_os_error_once() {
    let root = tempfile::tempdir().unwrap();
    let config = relative_config(root.path(), "");
    let etc = root.path().join("etc");
    std::fs::remove_file(etc.join("master.key")).unwrap();
    let o = serve_in(root.path(), &config, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(
        err.contains(&etc.join("master.key").display().to_string()),
        "{err}"
    );

    std::fs::write(etc.join("master.key"), MASTER_KEY).unwrap();
    std::fs::rename(etc.join("policies"), etc.join("moved")).unwrap();
    let o = serve_in(root.path(), &config, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(
        err.contains(&etc.join("policies").display().to_string()),
        "{err}"
    );

    let o = serve_in(root.path(), &config, &["--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    let fail = stdout(&o)
        .lines()
        .find(|l| l.starts_with("FAIL policies:"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{}", all_output(&o)));
    assert_eq!(
        fail.matches("No such file or directory").count(),
        1,
        "{fail}"
    );
    assert!(fail.contains("policy.dir"), "{fail}");
}

/// `serve --check` fails on a `local_root` that does not exist, naming it
/// and the key to fix, and goes on to check the rest.
#[test]
fn check_fails_on_a_missing_local_root() {
    let root = tempfile::tempdir().unwrap();
    let config = relative_config(root.path(), "");
    std::fs::remove_dir(root.path().join("etc/repos")).unwrap();
    let o = serve_in(root.path(), &config, &["--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    let out = stdout(&o);
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL git upstream local:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        fail.contains(&root.path().join("etc/repos").display().to_string())
            && fail.contains("git.upstreams.local.local_root"),
        "{fail}"
    );
    assert!(
        out.contains("ok   policies:"),
        "the rest is still checked: {out}"
    );
    assert!(stderr(&o).contains("git upstream local"), "{}", stderr(&o));
}

/// `--online` fetches each issuer's discovery document and keys (here the
/// dev issuer of a running `latchkey dev`), and reaches each upstream; an
/// issuer or upstream on a closed port fails, naming it.
#[test]
fn check_online_reaches_issuers_and_upstreams() {
    let sb = Sandbox::start();
    let root = tempfile::tempdir().unwrap();
    let issuer = format!("{}/dev-idp", sb.url);
    let good = format!(
        "[[issuers]]\nname = \"sandbox\"\nissuer = \"{issuer}\"\naudiences = [\"latchkey\"]\n\
         [git.upstreams.sandbox]\nurl = \"{}/git/local\"\n",
        sb.url
    );
    let config = relative_config(root.path(), &good);
    let o = serve_in(root.path(), &config, &["--check", "--online"]);
    assert!(o.status.success(), "{}", all_output(&o));
    let out = stdout(&o);
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "ok   issuer {issuer}: `sandbox`: discovery document and"
        ))),
        "{out}"
    );
    assert!(out.contains("ok   git upstream sandbox:"), "{out}");

    // Offline, nothing is contacted and the line says so.
    let o = serve_in(root.path(), &config, &["--check"]);
    assert!(o.status.success(), "{}", all_output(&o));
    assert!(stdout(&o).contains("--online"), "{}", stdout(&o));

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = format!(
        "[[issuers]]\nname = \"gone\"\nissuer = \"http://127.0.0.1:{closed}\"\naudiences = [\"latchkey\"]\n\
         [git.upstreams.gone]\nurl = \"http://127.0.0.1:{closed}\"\n"
    );
    let config = relative_config(root.path(), &down);
    let o = serve_in(root.path(), &config, &["--check", "--online"]);
    assert_eq!(o.status.code(), Some(1), "{}", all_output(&o));
    let out = stdout(&o);
    let issuer_line = out
        .lines()
        .find(|l| l.starts_with(&format!("FAIL issuer http://127.0.0.1:{closed}:")))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        issuer_line.contains("discovery document") && issuer_line.contains("issuers[0].issuer"),
        "{issuer_line}"
    );
    let git_line = out
        .lines()
        .find(|l| l.starts_with("FAIL git upstream gone:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(git_line.contains("git.upstreams.gone.url"), "{git_line}");
}

/// `serve` with the dev issuer allowed logs a loud warning at every start.
#[test]
fn serve_with_the_dev_issuer_warns_at_start() {
    let root = tempfile::tempdir().unwrap();
    let config = relative_config(
        root.path(),
        "[dev_issuer]\nenabled = true\nallow_in_serve = true\n",
    );
    let mut child = latchkey_cmd(["serve", "--config"])
        .arg(&config)
        .env("LATCHKEY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let listening = line.contains("latchkey listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    let warning = seen
        .iter()
        .find(|l| l.contains("WARNING: the development identity provider is enabled in `serve`"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(log.contains("latchkey listening"), "{log}");
}
