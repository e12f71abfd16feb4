//! Test support, never used by the gateway: asks the real `git receive-pack`
//! which ref updates it would act on for a request body, so the command
//! list Latchkey decides can be compared with git's own reading
//! (DESIGN invariant 8). Enabled by the `differential` feature, for the
//! differential test and fuzz target; it runs processes and touches the disk,
//! unlike the rest of the parsers.
//!
//! How git is asked: a scratch bare repository with a `pre-receive` hook that
//! copies its standard input (one `old new ref` line per command git queued)
//! to a file and then refuses, so the repository never changes. git runs the
//! hook after reading the commands and unpacking the (empty) pack, and before
//! updating any ref: when the hook does not run, git updated nothing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::commands::{CommandsParse, parse_receive_pack_commands};

/// An empty pack (`git pack-objects --stdout </dev/null`), appended after the
/// command section so git gets as far as its pre-receive hook.
pub const EMPTY_PACK: &[u8] = b"PACK\0\0\0\x02\0\0\0\0\x02\x9d\x08\x82\x3b\xd8\xa8\xea\xb5\x10\xad\x6a\xc7\x5c\x82\x3c\xfd\x3e\xd3\x1e";

/// One command as git's pre-receive hook sees it: `(old, new, ref)`,
/// ids in lowercase hex.
pub type HookCommand = (String, String, String);

/// A scratch repository and hook that answer "what would git act on".
#[derive(Debug)]
pub struct ReceivePackOracle {
    root: PathBuf,
    repo: PathBuf,
    seen: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn git(args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR");
    c
}

impl ReceivePackOracle {
    /// Creates the scratch repository under the system temp directory.
    /// It is removed when the oracle is dropped.
    pub fn new() -> std::io::Result<Self> {
        let root = std::env::temp_dir().join(format!(
            "latchkey-receive-pack-oracle-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root)?;
        let repo = root.join("scratch.git");
        let seen = root.join("seen");
        let repo_str = repo.to_string_lossy().into_owned();
        let status = git(&["init", "-q", "--bare", &repo_str]).status()?;
        if !status.success() {
            return Err(std::io::Error::other("git init failed"));
        }
        // Push options and certificates as a server that accepts both reads
        // them, so every part of the section is exercised.
        // Signature checks fail fast and never stop git (`false` as the
        // verifier): only the certificate's framing matters here.
        for (k, v) in [
            ("receive.advertisePushOptions", "true"),
            ("receive.certNonceSeed", "latchkey-differential"),
            ("gpg.program", "false"),
            ("gpg.ssh.program", "false"),
            ("gpg.x509.program", "false"),
        ] {
            git(&["-C", &repo_str, "config", k, v]).status()?;
        }
        let hook = repo.join("hooks/pre-receive");
        std::fs::write(
            &hook,
            format!("#!/bin/sh\ncat > '{}'\nexit 1\n", seen.to_string_lossy()),
        )?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Self { root, repo, seen })
    }

    /// The commands git's pre-receive hook was given for `body` (the command
    /// section; an empty pack is appended), or `None` when git stopped
    /// before the hook (and so changed nothing).
    pub fn commands(&self, section: &[u8]) -> std::io::Result<Option<Vec<HookCommand>>> {
        let _ = std::fs::remove_file(&self.seen);
        // The body goes in from a file, not a pipe: git may stop reading
        // early (it died on the input), and a write to a closed pipe would
        // kill a process that does not ignore SIGPIPE (libFuzzer's).
        let input = self.root.join("input");
        let mut whole = Vec::with_capacity(section.len() + EMPTY_PACK.len());
        whole.extend_from_slice(section);
        whole.extend_from_slice(EMPTY_PACK);
        std::fs::write(&input, &whole)?;
        git(&["receive-pack", "--stateless-rpc"])
            .arg(&self.repo)
            .stdin(Stdio::from(std::fs::File::open(&input)?))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let Ok(text) = std::fs::read(&self.seen) else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&text);
        let mut out = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(std::io::Error::other(format!(
                    "unexpected hook line `{line}`"
                )));
            };
            out.push((
                old.to_ascii_lowercase(),
                new.to_ascii_lowercase(),
                name.to_owned(),
            ));
        }
        Ok(Some(out))
    }

    /// Compares Latchkey's reading of `body` with git's. `Ok` when Latchkey
    /// refuses the body, waits for more of it, or decides exactly the
    /// commands git acts on; `Err` describes a difference.
    pub fn check(&self, body: &[u8]) -> Result<(), String> {
        let Ok(CommandsParse::Complete {
            updates, consumed, ..
        }) = parse_receive_pack_commands(body)
        else {
            return Ok(());
        };
        let mut ours: Vec<HookCommand> = updates
            .iter()
            .map(|u| (u.old.clone(), u.new.clone(), u.name.clone()))
            .collect();
        // The gateway forwards no command-free body but a bare flush-pkt.
        if ours.is_empty() && &body[..consumed] != b"0000" {
            return Ok(());
        }
        let theirs = self
            .commands(&body[..consumed])
            .map_err(|e| format!("could not run git receive-pack: {e}"))?;
        let Some(mut theirs) = theirs else {
            // git stopped before acting: it changed nothing.
            return Ok(());
        };
        ours.sort();
        theirs.sort();
        if ours == theirs {
            Ok(())
        } else {
            Err(format!(
                "Latchkey decided {ours:?} but git acts on {theirs:?} for {:?}",
                String::from_utf8_lossy(&body[..consumed])
            ))
        }
    }
}

impl Drop for ReceivePackOracle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
