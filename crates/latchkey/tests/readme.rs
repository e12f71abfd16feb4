//! The README runs as written.
//!
//! Each test takes the fenced code blocks of one README section, from
//! README.md itself (so the two cannot drift), and runs them the way a
//! reader would: the built `latchkey` on `PATH`, real `git`, the official
//! Node.js Firestore client and Google's emulator, in a fresh directory with
//! a home of its own. What a reader runs in "one terminal" (a block whose
//! command starts a server) runs in the background; the blocks after it run
//! in `bash`, one block per script, in the same directory.
//!
//! The only rewrites are of addresses, so that tests can run side by side:
//! `127.0.0.1:8080` (and the client's `port: 8080`) becomes the sandbox's
//! free port, given to `latchkey dev` with `--listen`, and the emulator's
//! `127.0.0.1:8681` becomes the port of the emulator this test starts with
//! the test kit (the README's `gcloud emulators firestore start` line, in a
//! process group the test can stop). `cargo run --release -p latchkey --`
//! is the built binary, as the README says it may be.
//!
//! Lines starting `#> ` in a shell block are what the block prints: each
//! must appear in its output. TOML blocks must parse as a Latchkey config,
//! Cedar blocks must validate beside the starter policies. The CI section's
//! YAML needs Buildkite or GitHub and is not run; its TOML is checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// One fenced block of README.md.
#[derive(Debug, Clone)]
struct Block {
    /// The `## ` heading it sits under (without the `## `).
    section: String,
    /// The info string after the opening fence: `sh`, `js`, `toml`, ...
    lang: String,
    text: String,
    /// Line of the opening fence (1-based), for messages.
    line: usize,
    /// Why no test runs it, from a `<!-- readme-test: not run: WHY -->`
    /// line just above the fence.
    not_run: Option<String>,
}

fn readme_blocks() -> Vec<Block> {
    let path = latchkey_testkit::repo_root().join("README.md");
    let text = std::fs::read_to_string(&path).expect("README.md");
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut open: Option<Block> = None;
    let mut not_run: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(b) = open.as_mut() {
            if line.trim_end() == "```" {
                blocks.push(open.take().expect("an open block"));
            } else {
                b.text.push_str(line);
                b.text.push('\n');
            }
            continue;
        }
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_owned();
        } else if let Some(lang) = line.strip_prefix("```") {
            open = Some(Block {
                section: section.clone(),
                lang: lang.trim().to_owned(),
                text: String::new(),
                line: i + 1,
                not_run: not_run.take(),
            });
            continue;
        }
        not_run = line
            .trim()
            .strip_prefix("<!-- readme-test: not run:")
            .and_then(|r| r.strip_suffix("-->"))
            .map(|r| r.trim().to_owned());
    }
    assert!(open.is_none(), "README.md ends inside a code block");
    blocks
}

/// The blocks of the section whose heading starts with `heading`, but
/// those marked not to be run.
fn section(heading: &str) -> Vec<Block> {
    let blocks: Vec<Block> = readme_blocks()
        .into_iter()
        .filter(|b| b.section.starts_with(heading) && b.not_run.is_none())
        .collect();
    assert!(!blocks.is_empty(), "no README section `{heading}`");
    blocks
}

/// The lines a shell block says it prints (`#> ` lines).
fn expected_output(block: &Block) -> Vec<String> {
    block
        .text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("#> "))
        .map(str::to_owned)
        .collect()
}

/// Whether a block starts a long-running server (and so is run line by
/// line, the server in the background).
fn is_server_block(block: &Block) -> bool {
    block.lang == "sh" && block.text.lines().any(|l| is_server_line(strip_comment(l)))
}

/// `latchkey dev` (not its `token`/`repo` tools), `latchkey serve` (not
/// `--check`), or the emulator.
fn is_server_line(cmd: &str) -> bool {
    let dev = (cmd.starts_with("latchkey dev") || cmd.contains("latchkey -- dev"))
        && !cmd.contains("dev token")
        && !cmd.contains("dev repo");
    let serve = cmd.starts_with("latchkey serve") && !cmd.contains("--check");
    dev || serve || cmd.starts_with("gcloud emulators firestore start")
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => line[..i].trim(),
        None if line.trim_start().starts_with('#') => "",
        None => line.trim(),
    }
}

/// A reader's directory, home and address book.
struct Reader {
    dir: tempfile::TempDir,
    home: GitHome,
    /// `127.0.0.1:PORT` of the sandbox.
    addr: String,
    /// `127.0.0.1:PORT` of the emulator, if one was started.
    emulator: Option<String>,
    servers: Vec<Child>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            dir: tempfile::tempdir().expect("tempdir"),
            home: GitHome::new(),
            addr: format!("127.0.0.1:{}", latchkey_testkit::free_port()),
            emulator: None,
            servers: Vec::new(),
        }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// The block's text with the test's addresses in place of the README's.
    fn rewrite(&self, text: &str) -> String {
        let port = self.addr.rsplit(':').next().expect("a port");
        let mut t = text
            .replace("cargo run --release -p latchkey --", "latchkey")
            .replace("127.0.0.1:8080", &self.addr)
            .replace("port: 8080", &format!("port: {port}"));
        if let Some(e) = &self.emulator {
            t = t.replace("127.0.0.1:8681", e);
        }
        t
    }

    /// `bash -c SCRIPT` as the reader: `latchkey` first on `PATH`, the
    /// reader's own home, git config and cache.
    /// Writes the section's scripts into the reader's directory, and links
    /// the Node.js Firestore client the README installs with npm where Node
    /// finds it. Scripts first: the README shows a script after the command
    /// that runs it.
    fn write_scripts(&self, blocks: &[Block]) {
        let modules = self.cwd().join("node_modules");
        if !modules.exists() {
            std::os::unix::fs::symlink(
                latchkey_testkit::firestore::node_scenario_dir().join("node_modules"),
                &modules,
            )
            .expect("link node_modules");
        }
        for block in blocks.iter().filter(|b| b.lang == "js") {
            // The script names its file on its first line: `// flags.mjs: ...`.
            let name = block
                .text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("// "))
                .and_then(|l| l.split(':').next())
                .expect("a JS block starts with `// FILE: ...`");
            std::fs::write(self.cwd().join(name), self.rewrite(&block.text))
                .expect("write the script");
        }
    }

    fn bash(&self, script: &str) -> Command {
        let mut bash = self.home.shell("bash", self.cwd(), script);
        // The Node client must not look for a GCE metadata server.
        bash.env("METADATA_SERVER_DETECTION", "none");
        bash
    }

    /// Runs a server block line by line: the emulator line through the
    /// test kit (the caller starts it), `latchkey dev` and `latchkey serve`
    /// in the background (`dev` with `--listen`; a served config has its
    /// address rewritten by the caller), every other line in bash, which
    /// must succeed.
    fn start_servers(&mut self, block: &Block) {
        for line in block.text.lines() {
            let cmd = strip_comment(line);
            if cmd.is_empty() {
                continue;
            }
            if cmd.starts_with("gcloud emulators firestore start") {
                assert!(
                    self.emulator.is_some(),
                    "README line {}: start the emulator before the block",
                    block.line
                );
                assert_eq!(
                    cmd, "gcloud emulators firestore start --host-port=127.0.0.1:8681 &",
                    "README line {}: the emulator line the test knows",
                    block.line
                );
                continue;
            }
            let cmd = self.rewrite(cmd);
            if !is_server_line(&cmd) {
                let o = self.bash(&cmd).output().expect("bash");
                assert!(
                    o.status.success(),
                    "README line {}: `{cmd}` failed ({}):\n{}{}",
                    block.line,
                    o.status,
                    stdout(&o),
                    stderr(&o)
                );
                continue;
            }
            let cmd = if cmd.starts_with("latchkey dev") {
                format!("{cmd} --listen {}", self.addr)
            } else {
                cmd
            };
            let log = std::fs::File::create(self.cwd().join("server.log")).expect("log");
            let child = self
                .bash(&format!("exec {cmd}"))
                .env("LATCHKEY_LOG", "info")
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn the server");
            self.servers.push(child);
            self.wait_ready();
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(&self.addr, "/admin/health") != Some(200) {
            for s in &mut self.servers {
                if let Some(status) = s.try_wait().expect("try_wait") {
                    panic!("latchkey dev exited ({status}):\n{}", self.server_log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "latchkey dev did not answer within 30 s:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.cwd().join("server.log")).unwrap_or_default()
    }

    /// Runs a shell block in bash; checks its `#> ` lines are in its output.
    fn run(&self, block: &Block) -> Output {
        let o = self
            .bash(&self.rewrite(&block.text))
            .output()
            .expect("bash");
        let all = format!("{}{}", stdout(&o), stderr(&o));
        for want in expected_output(block) {
            let want = self.rewrite(&want);
            assert!(
                all.contains(&want),
                "README line {}: the block should print\n  {want}\nit printed:\n{all}\nserver log:\n{}",
                block.line,
                self.server_log()
            );
        }
        o
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// Fails naming the block unless `o` succeeded.
#[track_caller]
fn block_ok(block: &Block, o: &Output) {
    assert!(
        o.status.success(),
        "README line {} ({}) failed ({}):\n{}\nstdout:\n{}\nstderr:\n{}",
        block.line,
        block.section,
        o.status,
        block.text,
        stdout(o),
        stderr(o)
    );
}

fn refs(repo: &Path) -> String {
    let o = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["for-each-ref", "--format=%(refname)"])
        .output()
        .expect("git for-each-ref");
    stdout(&ok(o))
}

#[test]
fn quick_start_runs_as_written() {
    if let Err(e) = latchkey_testkit::firestore::ensure_node_installed() {
        latchkey_testkit::skip_or_fail("node-firestore", &e.to_string());
        return;
    }
    let blocks = section("Quick start");
    let (server, rest) = blocks.split_first().expect("a server block first");
    assert!(is_server_block(server), "{server:?}");
    let mut reader = Reader::new();
    reader.write_scripts(rest);
    reader.start_servers(server);
    let shell: Vec<&Block> = rest.iter().filter(|b| b.lang == "sh").collect();
    assert_eq!(shell.len(), 1, "one block of commands: {shell:?}");
    let o = reader.run(shell[0]);
    // The block ends with `latchkey audit verify`: its status is the block's.
    block_ok(shell[0], &o);
    let upstream = reader.cwd().join("latchkey-data/repos/acme/app.git");
    let heads = refs(&upstream);
    assert!(
        heads.contains("refs/heads/feature") && !heads.contains("refs/heads/main"),
        "the allowed push landed and the refused one did not: {heads}"
    );
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.contains("git.push") && l.contains("DENY") && l.contains("protect-main")),
        "`audit tail` shows the refused push and its policy:\n{out}"
    );
    // The webhook's rule wrote pushes/{commit} as Latchkey itself, and the
    // client's prod write was refused by name: both in the same trail.
    assert!(
        out.lines()
            .any(|l| l.contains("document.update") && l.contains("ALLOW") && l.contains("pushes/")),
        "`audit tail` shows the rule's write:\n{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("document.update")
            && l.contains("DENY")
            && l.contains("protect-prod-documents")),
        "`audit tail` shows the refused prod write and its policy:\n{out}"
    );
}

#[test]
fn git_credential_helper_runs_as_written() {
    let quick = section("Quick start");
    let blocks = section("Git credential helper");
    let mut reader = Reader::new();
    reader.start_servers(&quick[0]);
    let shell: Vec<&Block> = blocks.iter().filter(|b| b.lang == "sh").collect();
    assert_eq!(shell.len(), 1, "{shell:?}");
    let o = reader.run(shell[0]);
    block_ok(shell[0], &o);
    let clone = reader.cwd().join("app");
    assert!(clone.join(".git").is_dir(), "git clone made `app`");
    // The helper cached a token for this gateway, readable only by the reader.
    let cache = reader.home.cache().join("latchkey");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .expect("the helper's cache")
        .collect();
    assert_eq!(entries.len(), 1, "one cached token: {entries:?}");
}

#[test]
fn login_section_runs_as_written() {
    let quick = section("Quick start");
    let blocks = section("Signing in from a terminal");
    let mut reader = Reader::new();
    reader.start_servers(&quick[0]);
    for b in blocks.iter().filter(|b| b.lang == "sh") {
        let o = reader.run(b);
        block_ok(b, &o);
    }
    assert!(reader.cwd().join("app-signed-in/.git").exists());
}

#[test]
fn documents_section_runs_as_written() {
    if let Err(e) = latchkey_testkit::firestore::ensure_node_installed() {
        latchkey_testkit::skip_or_fail("node-firestore", &e.to_string());
        return;
    }
    let blocks = section("Documents");
    let mut reader = Reader::new();
    reader.write_scripts(&blocks);
    let mut ran = 0;
    for block in blocks.iter().filter(|b| b.lang == "sh") {
        if is_server_block(block) {
            reader.start_servers(block);
        } else {
            let o = reader.run(block);
            block_ok(block, &o);
            ran += 1;
        }
    }
    assert_eq!(ran, 2, "the client block and the audit query block ran");
    // The audit trail holds the allowed dev write and the refused prod one.
    let o = reader
        .bash("latchkey audit query --action document.update --json")
        .output()
        .expect("audit query");
    let events: Vec<serde_json::Value> = stdout(&ok(o))
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let effect = |env: &str| {
        events
            .iter()
            .find(|e| {
                e["resource"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("\"{env}/flags/checkout\""))
            })
            .map(|e| e["decision"]["effect"].clone())
    };
    assert_eq!(effect("(default)"), Some("allow".into()), "{events:#?}");
    assert_eq!(effect("prod"), Some("deny".into()), "{events:#?}");
}

#[test]
fn configuration_starts_from_init() {
    let blocks = section("Configuration");
    let mut reader = Reader::new();
    // The section's first command: `latchkey init [DIR]`, here the current directory.
    ok(reader.bash("latchkey init").output().expect("init"));
    let config = reader.cwd().join("latchkey.toml");
    let text = std::fs::read_to_string(&config).expect("latchkey.toml");
    std::fs::write(&config, reader.rewrite(&text)).expect("rewrite the listen address");
    let shell: Vec<&Block> = blocks.iter().filter(|b| b.lang == "sh").collect();
    assert_eq!(shell.len(), 1, "one block of commands: {shell:?}");
    let block = shell[0];
    assert!(block.text.contains("latchkey serve"), "{block:?}");
    reader.start_servers(block);
    // It serves: the starter policies, the master key init wrote, and a
    // readiness report with nothing failing.
    assert_eq!(
        http_status(&reader.addr, "/readyz"),
        Some(200),
        "{}",
        reader.server_log()
    );
}

/// Every TOML block is a valid Latchkey config, so a renamed key shows up
/// here. A fragment that needs a `[documents]` table (a rule that writes a
/// document) is checked with one added.
#[test]
fn every_toml_block_is_a_valid_config() {
    let documents_table = "[documents]\nbackend = \"embedded\"\nproject = \"demo\"\n\
                           databases = { \"(default)\" = \"staging\", prod = \"prod\" }\n";
    let mut checked = 0;
    for block in readme_blocks().iter().filter(|b| b.lang == "toml") {
        let parsed = latchkey_gateway::config::Config::parse(&block.text).or_else(|e| {
            if block.text.contains("[documents]") || block.text.contains("[firestore]") {
                Err(e)
            } else {
                latchkey_gateway::config::Config::parse(&format!(
                    "{}\n{documents_table}",
                    block.text
                ))
            }
        });
        if let Err(e) = parsed {
            panic!(
                "README line {} ({}): not a valid config: {e}\n{}",
                block.line, block.section, block.text
            );
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} TOML blocks found");
}

/// Every Cedar block validates against the schema (with the starter
/// entities, which name the groups the examples use).
#[test]
fn every_cedar_block_validates() {
    let mut checked = 0;
    for block in readme_blocks().iter().filter(|b| b.lang == "cedar") {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(latchkey_policy::ENTITIES_FILE),
            latchkey_policy::STARTER_ENTITIES,
        )
        .expect("write");
        std::fs::write(dir.path().join("readme.cedar"), &block.text).expect("write");
        if let Err(e) = latchkey_policy::PolicyEngine::load(dir.path()) {
            panic!(
                "README line {} ({}): the policy does not validate: {e}\n{}",
                block.line, block.section, block.text
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} Cedar blocks found");
}

/// Which sections the tests above run: a new section with shell or JS
/// blocks must be added to them, or its blocks marked with why they are
/// not run (and the marks are few and say why).
#[test]
fn every_shell_block_is_run_or_says_why_not() {
    const RUN: &[&str] = &[
        "Quick start",
        "Git credential helper",
        "Signing in from a terminal",
        "Documents",
        "Configuration",
    ];
    let blocks = readme_blocks();
    let mut marked = 0;
    for b in blocks.iter().filter(|b| b.lang == "sh" || b.lang == "js") {
        match &b.not_run {
            Some(why) => {
                assert!(
                    why.len() > 10,
                    "README line {}: say why it is not run",
                    b.line
                );
                marked += 1;
            }
            None => assert!(
                RUN.iter().any(|r| b.section.starts_with(r)),
                "README line {} (section `{}`): a shell or JS block no test runs",
                b.line,
                b.section
            ),
        }
    }
    assert!(marked <= 3, "{marked} blocks are not run: run them instead");
}
