//! `latchkey init [DIR]`: a starting point for `latchkey serve`, so an
//! operator does not need a sandbox to get a config, policies and a key.
//!
//! It writes files and nothing else: it does not start the gateway, reach
//! any issuer or upstream, and never overwrites a file that exists.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

/// The config file `init` writes.
pub(crate) const CONFIG_FILE: &str = "latchkey.toml";
/// The data directory, relative to the config file.
const DATA_DIR: &str = "data";
/// The master key file, inside the data directory.
const MASTER_KEY_FILE: &str = "master.key";
/// The policy directory, inside the data directory.
const POLICY_DIR: &str = "policies";
/// The starter policy tests, inside the policy directory.
pub(crate) const TESTS_FILE: &str = "tests.toml";

/// The generated `latchkey.toml`. Every value works as written; what needs
/// a decision (issuers, upstreams, Firestore, webhooks) is a commented
/// example. Paths are relative to the directory of this file.
const CONFIG_TEXT: &str = r#"# latchkey.toml, written by `latchkey init`.
#
# Check it:  latchkey serve --check --config latchkey.toml
# Run it:    latchkey serve --config latchkey.toml
#
# Relative paths in this file resolve against the directory this file is
# in. Durations are written `90s`, `15m`, `1h` or `7d`. Every secret can be
# `{ env = "VAR" }`, `{ file = "path" }` or (discouraged) `{ value = "..." }`.

[server]
listen = "127.0.0.1:8080"                # 0.0.0.0:8080 to serve other machines
# public_url = "https://latchkey.example.com"   # the `iss` of Latchkey tokens (default: from `listen`)
data_dir = "data"                        # SQLite store, audit log, signing keys; only its owner may read it

# [server.tls]                           # HTTPS (and HTTP/2 for gRPC) for remote clients
# cert_file = "/etc/latchkey/tls.crt"
# key_file = "/etc/latchkey/tls.key"

# [store]                                # several nodes: shared state in PostgreSQL (see "Running several nodes")
# backend = "postgres"                   # default "sqlite": latchkey.db in data_dir, one node
# url = { env = "LATCHKEY_DATABASE_URL" }   # postgres://latchkey@db.internal/latchkey?sslmode=verify-full
# node = "gw-1"                          # unique per node; its audit chain is kept under this name
# revocations = "strict"                 # refuse (503) when the view of revocations is older than max_staleness
# max_staleness = "5s"

[keys]
master_key = { file = "data/master.key" }   # 32 random bytes, base64; `latchkey init` made this one (mode 0600)
# rotation_period = "24h"                # a new signing key every day
# publish_ahead = "1h"                   # published in JWKS this long before it signs

[tokens]
default_lifetime = "15m"
max_lifetime = "1h"                      # up to "12h"
audiences = ["git", "documents", "latchkey"]   # `latchkey` = the admin API

[policy]
# dir = "data/policies"                  # the default: `policies` in data_dir; *.cedar + entities.json, SIGHUP reloads
                                         # policy tests: latchkey policy test data/policies/tests.toml --config latchkey.toml

[audit]
checkpoint_interval = "10s"              # records after the last signed checkpoint span at most about this
# [audit.witness]                        # a copy of every checkpoint off this machine
# url = "https://witness.example.com/latchkey"
# file = "/mnt/witness/latchkey-checkpoints.log"

# Who may sign in: one table per trusted OIDC issuer.
#
# [[issuers]]                            # people, through your company's identity provider
# name = "okta"
# issuer = "https://acme.okta.com/oauth2/default"
# audiences = ["latchkey"]
# kind = "user"
# subject_claim = "email"
# groups_claim = "groups"
#
# [[issuers]]                            # CI jobs (see "CI jobs" in the README)
# name = "buildkite"
# preset = "buildkite"
# audiences = ["https://latchkey.example.com"]
# bound_claims = { organization_slug = "acme" }   # required: every Buildkite org shares the issuer
#
# [[trust]]                              # which CI jobs may mint which tokens
# issuer = "buildkite"
# claims = { pipeline_slug = "deploy-*", build_branch = "main" }
# audiences = ["git"]
# max_lifetime = "15m"

# Git servers behind /git/{upstream}/{owner}/{repo}.git
#
# [git.upstreams.gogs]
# url = "http://gogs.internal:3000"
# username = "latchkey-bot"
# password = { file = "/run/secrets/gogs-token" }   # injected as Basic auth; never reaches callers
#
# [git.upstreams.local]                  # a directory of bare repositories, served by `git http-backend`
# local_root = "repos"

# Documents: the Firestore API, answered by Latchkey's embedded store or by
# Google Firestore (see "Documents" in the README)
#
# [documents]
# backend = "embedded"                                      # or "firestore", with [firestore] below
# project = "acme-prod"                                     # callers may name only this project
# databases = { "(default)" = "staging", prod = "prod" }    # database → Environment; others refused
# record_values = ["flags", "approvals"]                    # collections whose written values are audited
#
# [firestore]                                               # only with backend = "firestore"
# service_account_file = "/run/secrets/firestore-sa.json"   # or: metadata = true, or: emulator = "127.0.0.1:8681"

# Webhooks and the rules they drive (see "Webhooks and rules" in the README)
#
# [webhooks.buildkite]
# secret = { env = "BUILDKITE_WEBHOOK_SECRET" }
#
# [[rules]]
# name = "freeze-failed-builds"
# on = "build_finished"
# state = "failed"
# freeze_pipeline = true
"#;

/// Writes the config, the starter policies (with their tests) and a fresh
/// master key into `dir`. Refuses before writing anything if any of those
/// files exists.
pub(crate) fn run(dir: &Path) -> Result<ExitCode> {
    let data = dir.join(DATA_DIR);
    let policies = data.join(POLICY_DIR);
    let config = dir.join(CONFIG_FILE);
    let key = data.join(MASTER_KEY_FILE);
    let mut files: Vec<(PathBuf, &str)> = vec![(config.clone(), CONFIG_TEXT)];
    files.extend(
        starter_files()
            .into_iter()
            .map(|(name, text)| (policies.join(name), text)),
    );
    for path in std::iter::once(&config)
        .chain(std::iter::once(&key))
        .chain(files.iter().skip(1).map(|(p, _)| p))
    {
        if path.symlink_metadata().is_ok() {
            bail!(
                "`{}` exists; `latchkey init` never overwrites a file: move it away or pick another directory",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    latchkey_gateway::create_private_dir(&data)
        .with_context(|| format!("cannot create `{}`", data.display()))?;
    std::fs::create_dir_all(&policies)
        .with_context(|| format!("cannot create `{}`", policies.display()))?;
    let master = latchkey_tokens::MasterKey::generate()
        .map_err(|e| anyhow::anyhow!("cannot generate a master key: {e}"))?;
    write_new(&key, format!("{}\n", master.to_base64()).as_bytes(), true)?;
    for (path, text) in &files {
        write_new(path, text.as_bytes(), false)?;
    }
    println!(
        "wrote `{}`, a master key in `{}` (readable only by you) and the starter policies with their tests in `{}`",
        config.display(),
        key.display(),
        policies.display()
    );
    println!("next, from `{}`:", dir.display());
    println!("  latchkey serve --check --config {CONFIG_FILE}");
    println!("  latchkey policy test {DATA_DIR}/{POLICY_DIR}/{TESTS_FILE} --config {CONFIG_FILE}");
    println!("  latchkey serve --config {CONFIG_FILE}");
    Ok(ExitCode::SUCCESS)
}

/// The starter policy set as `(file name, text)`: the policies, the group
/// hierarchy they rely on (`entities.json`) and their tests (`tests.toml`).
/// `latchkey dev` and `latchkey init` both write these.
pub(crate) fn starter_files() -> Vec<(&'static str, &'static str)> {
    let mut files = latchkey_policy::starter_policy_files();
    files.push((
        latchkey_policy::ENTITIES_FILE,
        latchkey_policy::STARTER_ENTITIES,
    ));
    files.push((TESTS_FILE, latchkey_policy::STARTER_TESTS));
    files
}

/// Creates `path` (failing if it exists) with `bytes`; `private` makes it
/// readable only by its owner from the moment it exists.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))
}
