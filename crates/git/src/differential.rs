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
use crate::pktline::pkt_line;

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

// Generated command sections: plausible pushes (unsigned, signed, with
// shallow lines and push options) and the mutations that made readers
// disagree before.

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";
const Z: &str = "0000000000000000000000000000000000000000";

/// Where the generator's choices come from: a seeded PRNG in the test, the
/// fuzzer's input bytes in the fuzz target.
pub trait Choices {
    /// A number below `n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize;
    /// One of `items` (not empty).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A small deterministic generator (xorshift64*), so a failure replays.
#[derive(Debug, Clone)]
pub struct Xorshift(pub u64);

impl Choices for Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

/// Choices read from bytes (the fuzzer's input); zeros once they run out.
#[derive(Debug, Clone)]
pub struct ByteChoices<'a>(pub &'a [u8]);

impl Choices for ByteChoices<'_> {
    fn below(&mut self, n: usize) -> usize {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        usize::from(b) % n.max(1)
    }
}

fn command(rng: &mut impl Choices) -> String {
    let ids = [A, B, Z];
    let names = [
        "refs/heads/main",
        "refs/heads/x",
        "refs/tags/v1",
        "refs/notes/n",
    ];
    format!("{} {} {}", rng.pick(&ids), rng.pick(&ids), rng.pick(&names))
}

/// The lines (pkt-line payloads; `None` is a flush-pkt) of a plausible
/// command section: shallow lines, unsigned commands or a push certificate,
/// push options.
fn section(rng: &mut impl Choices) -> Vec<Option<Vec<u8>>> {
    let mut lines: Vec<Option<Vec<u8>>> = Vec::new();
    let caps = *rng.pick(&[
        "report-status",
        "report-status-v2 side-band-64k push-options",
        "report-status atomic",
        "",
    ]);
    for _ in 0..rng.below(2) {
        lines.push(Some(format!("shallow {A}").into_bytes()));
    }
    if rng.below(2) == 0 {
        for i in 0..1 + rng.below(3) {
            let mut l = command(rng).into_bytes();
            if i == 0 {
                l.push(0);
                l.extend_from_slice(caps.as_bytes());
            }
            if rng.below(2) == 0 {
                l.push(b'\n');
            }
            lines.push(Some(l));
        }
    } else {
        let mut first = b"push-cert\0".to_vec();
        first.extend_from_slice(caps.as_bytes());
        lines.push(Some(first));
        for h in [
            "certificate version 0.1\n",
            "pusher T <t@example.com> 1700000000 +0000\n",
            "pushee http://example.com/acme/app.git\n",
            "nonce 1700000000-abc\n",
            "\n",
        ] {
            lines.push(Some(h.as_bytes().to_vec()));
        }
        for _ in 0..1 + rng.below(3) {
            lines.push(Some(format!("{}\n", command(rng)).into_bytes()));
        }
        let armor = *rng.pick(&[
            "-----BEGIN PGP SIGNATURE-----\n",
            "-----BEGIN SSH SIGNATURE-----\n",
            "-----BEGIN SIGNED MESSAGE-----\n",
        ]);
        lines.push(Some(armor.as_bytes().to_vec()));
        lines.push(Some(b"c2lnbmF0dXJl\n".to_vec()));
        lines.push(Some(b"-----END PGP SIGNATURE-----\n".to_vec()));
        lines.push(Some(b"push-cert-end\n".to_vec()));
    }
    lines.push(None);
    if caps.contains("push-options") {
        lines.push(Some(b"ci.skip".to_vec()));
        lines.push(None);
    }
    lines
}

/// One mutation of the kinds that made parsers disagree before: a NUL or a
/// newline inside a line, a duplicated (armor) line, a dropped or moved line,
/// a line split in two.
fn mutate(rng: &mut impl Choices, lines: &mut Vec<Option<Vec<u8>>>) {
    let i = rng.below(lines.len());
    match rng.below(7) {
        0 | 1 => {
            if let Some(Some(l)) = lines.get_mut(i) {
                let at = rng.below(l.len() + 1);
                l.insert(at, *rng.pick(&[0u8, b'\n', b' ']));
            }
        }
        2 => {
            let dup = lines[i].clone();
            let at = rng.below(lines.len());
            lines.insert(at, dup);
        }
        3 => {
            if lines.len() > 1 {
                lines.remove(i);
            }
        }
        4 => {
            let extra = rng
                .pick(&[
                    &b"-----BEGIN PGP SIGNATURE-----\n"[..],
                    b"push-cert-end\n",
                    b"\n",
                    b"push-cert",
                ])
                .to_vec();
            lines.insert(i, Some(extra));
        }
        5 => {
            if let Some(Some(l)) = lines.get(i).cloned()
                && l.len() > 1
            {
                let at = 1 + rng.below(l.len() - 1);
                lines[i] = Some(l[..at].to_vec());
                lines.insert(i + 1, Some(l[at..].to_vec()));
            }
        }
        _ => {
            let l = format!("{}\n", command(rng)).into_bytes();
            lines.insert(i, Some(l));
        }
    }
}

fn encode(lines: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        match l {
            None => out.extend_from_slice(b"0000"),
            Some(l) if l.is_empty() => out.extend_from_slice(b"0004"),
            Some(l) => out.extend_from_slice(&pkt_line(l)),
        }
    }
    out
}

/// A generated command section with up to `max_mutations` mutations, as
/// pkt-lines: what the differential test and fuzz target feed both readers.
pub fn generated_section(rng: &mut impl Choices, max_mutations: usize) -> Vec<u8> {
    let mut lines = section(rng);
    for _ in 0..rng.below(max_mutations + 1) {
        mutate(rng, &mut lines);
    }
    encode(&lines)
}
