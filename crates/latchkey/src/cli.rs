//! The command line, as clap derives it. Help text here is the CLI's manual.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Latchkey: an identity-aware access gateway for Git, documents, CI and
/// internal apps.
///
/// People and CI jobs exchange their OIDC identity for short-lived Latchkey
/// tokens; Cedar policies decide every request; every decision lands in a
/// tamper-evident audit log. Start with `latchkey dev`.
#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `latchkey=debug`.
    #[arg(long, global = true, env = "LATCHKEY_LOG", default_value = "info")]
    pub(crate) log: String,
    /// Log line format on standard error: `text` for people (coloured only
    /// on a terminal and never with `NO_COLOR` set), `json` (one object per
    /// line) for log shippers.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration flag: `90s`, `15m`, `1h`, `7d`, or bare seconds (`900`), the
/// syntax of every duration in latchkey.toml. A clap value parser, so a bad
/// value is refused naming the flag.
pub(crate) fn duration_arg(s: &str) -> Result<Duration, String> {
    let d = latchkey_gateway::config::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "`{s}` is zero; give a positive duration like `15m`"
        ));
    }
    Ok(d)
}

/// A point in time for `--since`/`--until`: RFC 3339, or a duration ago
/// (`1h`). Checked here so a typo is refused naming the flag; the value is
/// resolved against the clock when the query runs.
pub(crate) fn when_arg(s: &str) -> Result<String, String> {
    let rfc3339 =
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok();
    if rfc3339 || latchkey_gateway::config::parse_duration(s).is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is neither an RFC 3339 time (`2026-01-31T09:00:00Z`) nor a duration like `1h`"
        ))
    }
}

/// The decision an audit record holds, as the log stores it
/// (`decision.effect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DecisionArg {
    /// Allowed requests.
    Allow,
    /// Refused requests.
    Deny,
}

impl DecisionArg {
    /// The value in the log and its index.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecisionArg::Allow => "allow",
            DecisionArg::Deny => "deny",
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway from a config file.
    ///
    /// Refuses to start on any configuration error, naming the key, and
    /// without a master key (`keys.master_key`). SIGHUP reloads policies.
    Serve(ServeArgs),
    /// Run a complete local sandbox with no configuration.
    ///
    /// Data in `./latchkey-data`, a built-in development identity provider
    /// (DEV ONLY), starter policies, a local Git upstream with a sample
    /// repository, and a listener on 127.0.0.1:8080.
    Dev(DevArgs),
    /// Write a starting point for `latchkey serve` into DIR: a commented
    /// `latchkey.toml`, the starter policies with their tests, and a fresh
    /// master key (mode 0600).
    ///
    /// Refuses to overwrite any file that exists. Then:
    /// `latchkey serve --check --config DIR/latchkey.toml`.
    Init(InitArgs),
    /// Sign in from a terminal with the gateway's identity provider, so
    /// `latchkey token` and `latchkey git-credential` need no token pasted.
    ///
    /// Uses the device authorization grant (RFC 8628) when the provider
    /// offers it, else a redirect to a one-off listener on 127.0.0.1 with
    /// PKCE (RFC 8252; `--loopback` forces it). The ID and refresh tokens are
    /// kept in `$XDG_CACHE_HOME/latchkey` (or `~/.cache/latchkey`), readable
    /// only by you; the ID token is renewed quietly before it expires.
    Login(LoginArgs),
    /// Sign out of a gateway: revoke the refresh token at the provider (when
    /// it can revoke), and delete the sign-in and the Git tokens cached for
    /// the gateway.
    Logout(LogoutArgs),
    /// Exchange an identity token for a Latchkey token (RFC 8693) and print it.
    ///
    /// The identity token is `--subject-token`, else `LATCHKEY_ID_TOKEN`,
    /// else the sign-in of `latchkey login` for the gateway (renewed quietly
    /// when it has less than a minute left).
    Token(TokenArgs),
    /// Verify, query and follow the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Validate policies and run policy tests.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List and rotate token-signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Back up and restore the embedded document store.
    #[command(subcommand)]
    Documents(DocumentsCommand),
    /// A Git credential helper that hands Git short-lived Latchkey tokens.
    ///
    /// Configure it per gateway:
    /// `git config --global credential.http://HOST:PORT.helper "!latchkey git-credential"`.
    /// On `get` it prints a cached token with more than 60 s left, or exchanges
    /// an identity token for a new one. The identity token comes from
    /// `LATCHKEY_ID_TOKEN`, else the file `LATCHKEY_ID_TOKEN_FILE`, else the
    /// standard output of `LATCHKEY_ID_TOKEN_COMMAND` (run with `sh -c`, with
    /// `LATCHKEY_URL` set to the gateway's URL), else the sign-in of
    /// `latchkey login` for the gateway (renewed quietly). Tokens are cached in
    /// `$XDG_CACHE_HOME/latchkey` (or `~/.cache/latchkey`), readable only by you.
    GitCredential(GitCredentialArgs),
    /// Commands for CI jobs (Buildkite, GitHub Actions).
    #[command(subcommand)]
    Ci(CiCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CiCommand {
    /// Exchange this CI job's OIDC token for a Latchkey token and print it
    /// (or hand it to `git` with `--git-credential-cache`).
    ///
    /// Buildkite: runs `buildkite-agent oidc request-token --audience AUD`.
    /// GitHub Actions: asks `ACTIONS_ID_TOKEN_REQUEST_URL` (the job needs
    /// `permissions: id-token: write`). The CI token itself is never printed.
    Token(CiTokenArgs),
}

/// Where `latchkey ci token` gets the CI's OIDC token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CiSource {
    /// `buildkite-agent oidc request-token` (detected by `BUILDKITE=true`).
    Buildkite,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` (detected by `GITHUB_ACTIONS=true`).
    GithubActions,
    /// The file given with `--file`.
    File,
    /// Standard input.
    Stdin,
}

#[derive(Debug, Args)]
pub(crate) struct CiTokenArgs {
    /// The audience of the Latchkey token: `git`, `documents`, ...
    #[arg(long)]
    pub(crate) audience: String,
    /// The gateway's URL (default: the URL a `latchkey dev` sandbox in
    /// `--data` recorded).
    #[arg(long, env = "LATCHKEY_URL")]
    pub(crate) url: Option<String>,
    /// Data directory of a `latchkey dev` sandbox whose URL to use when
    /// neither `--url` nor `LATCHKEY_URL` is given.
    #[arg(long, default_value = "latchkey-data")]
    pub(crate) data: PathBuf,
    /// The audience to request from the CI's OIDC issuer (one of the
    /// issuer's `audiences` in latchkey.toml). Default: the gateway URL.
    #[arg(long)]
    pub(crate) oidc_audience: Option<String>,
    /// Where the CI token comes from; detected from the environment when omitted.
    #[arg(long, value_enum)]
    pub(crate) from: Option<CiSource>,
    /// The file holding the CI token (with `--from file`).
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// Space-separated scopes to request (a subset of the trust rule's).
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// Requested lifetime, e.g. `15m` or `1h` (bare numbers are seconds);
    /// capped by the trust rule, the server and the CI token's expiry.
    #[arg(long, value_parser = duration_arg)]
    pub(crate) lifetime: Option<Duration>,
    /// Store the token in `latchkey git-credential`'s cache instead of
    /// printing it, so `git` (with that helper configured) uses it.
    #[arg(long)]
    pub(crate) git_credential_cache: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GitCredentialArgs {
    /// What Git asks for: `get` (print a token), `erase` (drop the cached
    /// token, after the gateway refused it) or `store` (ignored). Other
    /// operations are ignored, as the credential protocol asks.
    pub(crate) operation: String,
    /// The audience of the Latchkey tokens to request.
    #[arg(long, default_value = "git")]
    pub(crate) audience: String,
    /// A file holding the identity token to exchange.
    #[arg(long, env = "LATCHKEY_ID_TOKEN_FILE", hide_env_values = true)]
    pub(crate) id_token_file: Option<PathBuf>,
    /// A shell command that prints the identity token to exchange, e.g.
    /// `latchkey dev token --data /abs/latchkey-data --user alice`.
    #[arg(long, env = "LATCHKEY_ID_TOKEN_COMMAND", hide_env_values = true)]
    pub(crate) id_token_command: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The gateway's URL. Default: the URL a `latchkey dev` sandbox in
    /// `--data` recorded, else `http://127.0.0.1:8080`.
    #[arg(long, visible_alias = "url", env = "LATCHKEY_URL")]
    pub(crate) gateway: Option<String>,
    /// Data directory of a `latchkey dev` sandbox whose URL to use when
    /// neither `--gateway` nor `LATCHKEY_URL` is given.
    #[arg(long, default_value = "latchkey-data")]
    pub(crate) data: PathBuf,
    /// Which of the gateway's sign-in providers (`/oauth2/login-providers`)
    /// to use; needed only when it has several.
    #[arg(long)]
    pub(crate) provider: Option<String>,
    /// Sign in with this OIDC issuer instead of asking the gateway (with
    /// `--client-id`), e.g. `http://127.0.0.1:8080/dev-idp`.
    #[arg(long, requires = "client_id")]
    pub(crate) issuer: Option<String>,
    /// The public client id registered at `--issuer` for `latchkey login`
    /// (the sandbox's is `latchkey-cli`).
    #[arg(long, requires = "issuer")]
    pub(crate) client_id: Option<String>,
    /// Use the loopback redirect even when the provider offers the device grant.
    #[arg(long)]
    pub(crate) loopback: bool,
    /// Only print the sign-in URL; do not try to open a browser.
    #[arg(long)]
    pub(crate) no_browser: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LogoutArgs {
    /// The gateway's URL. Default: the URL a `latchkey dev` sandbox in
    /// `--data` recorded, else `http://127.0.0.1:8080`.
    #[arg(long, visible_alias = "url", env = "LATCHKEY_URL")]
    pub(crate) gateway: Option<String>,
    /// Data directory of a `latchkey dev` sandbox whose URL to use when
    /// neither `--gateway` nor `LATCHKEY_URL` is given.
    #[arg(long, default_value = "latchkey-data")]
    pub(crate) data: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Path of `latchkey.toml`.
    #[arg(long, short, env = "LATCHKEY_CONFIG")]
    pub(crate) config: PathBuf,
    /// Validate the configuration, policies and secrets, then exit.
    #[arg(long)]
    pub(crate) check: bool,
    /// With `--check`: also fetch each issuer's discovery document and
    /// keys, and reach each upstream (Git, Firestore, the audit witness).
    #[arg(long, requires = "check")]
    pub(crate) online: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct DevArgs {
    /// Data directory.
    #[arg(long, default_value = "latchkey-data", global = true)]
    pub(crate) data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// Put a Firestore emulator (`host:port`, e.g. one started with
    /// `gcloud emulators firestore start`) behind the sandbox's Firestore
    /// routes; its `(default)` database is environment `dev` and its `prod`
    /// database environment `prod`, so both the allowed and the refused
    /// writes of the starter policies can be tried.
    #[arg(long, value_name = "HOST:PORT", env = "LATCHKEY_FIRESTORE_EMULATOR")]
    pub(crate) firestore_emulator: Option<String>,
    /// Lifetime of the ID tokens the sign-in page of the development
    /// identity provider issues (`latchkey login`, browser sign-in), e.g.
    /// `10m`; a short one shows the quiet renewal with the refresh token.
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    pub(crate) id_token_lifetime: Duration,
    #[command(subcommand)]
    pub(crate) command: Option<DevCommand>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DevCommand {
    /// Print an ID token from the development identity provider, ready to
    /// exchange with `latchkey token`. DEV ONLY.
    Token(DevTokenArgs),
    /// Manage repositories of the local Git upstream.
    #[command(subcommand)]
    Repo(DevRepoCommand),
}

#[derive(Debug, Args)]
pub(crate) struct DevTokenArgs {
    /// Subject (user name).
    #[arg(long)]
    pub(crate) user: String,
    /// Group membership; repeat for several.
    #[arg(long = "group")]
    pub(crate) groups: Vec<String>,
    /// E-mail claim (default `USER@example.com`).
    #[arg(long)]
    pub(crate) email: Option<String>,
    /// Lifetime, e.g. `10m` or `1h` (bare numbers are seconds).
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    pub(crate) ttl: Duration,
    /// The URL the dev sandbox listens on (it is the token's issuer).
    /// Default: the URL the sandbox recorded in `DATA/url`, else
    /// `http://127.0.0.1:8080`.
    #[arg(long, env = "LATCHKEY_URL")]
    pub(crate) url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DevRepoCommand {
    /// Create an empty bare repository `OWNER/NAME` in the local upstream.
    Create {
        /// `OWNER/NAME`, e.g. `acme/app`.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The identity token to exchange (an OIDC ID token or a CI token); `-`
    /// reads it from standard input. Default: `LATCHKEY_ID_TOKEN`, else the
    /// sign-in of `latchkey login`.
    #[arg(long)]
    pub(crate) subject_token: Option<String>,
    /// The audience the Latchkey token is for: `git`, `documents`, `latchkey` (admin API).
    #[arg(long)]
    pub(crate) audience: String,
    /// Space-separated scopes to request.
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// A token of the agent acting for the subject (delegation; adds `act`).
    #[arg(long)]
    pub(crate) actor_token: Option<String>,
    /// Requested lifetime, e.g. `15m` or `1h` (bare numbers are seconds);
    /// capped by the server.
    #[arg(long, value_parser = duration_arg)]
    pub(crate) lifetime: Option<Duration>,
    /// The gateway's URL. Default: the URL a `latchkey dev` sandbox in
    /// `--data` recorded, else `http://127.0.0.1:8080`.
    #[arg(long, env = "LATCHKEY_URL")]
    pub(crate) url: Option<String>,
    /// Data directory of a `latchkey dev` sandbox whose URL to use when
    /// neither `--url` nor `LATCHKEY_URL` is given.
    #[arg(long, default_value = "latchkey-data")]
    pub(crate) data: PathBuf,
    /// Print the whole token response as JSON instead of just the token.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Where the operator commands find the gateway's state.
#[derive(Debug, Args, Clone)]
pub(crate) struct Location {
    /// Read data directory, policy directory and master key from this config.
    #[arg(long, short, env = "LATCHKEY_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory of a `latchkey dev` sandbox (used without `--config`).
    #[arg(long, default_value = "latchkey-data")]
    pub(crate) data: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the whole hash chain, the chain of signed checkpoints, the index
    /// and (with `--witness`) the witnessed checkpoints; names the first bad
    /// record. Exit status 1 on any tampering.
    Verify(AuditVerifyArgs),
    /// Move the log and its checkpoints to `audit/archive/<time>/` and start
    /// a new log whose first record names the archived one. For a log that
    /// does not verify: keep it as evidence, and let the gateway start again.
    /// The gateway must be stopped.
    Archive(AuditArchiveArgs),
    /// Filter audit events; a table for people, `--json` for tools.
    Query(AuditQueryArgs),
    /// Print the newest events and follow new ones as they are written.
    Tail(AuditTailArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AuditVerifyArgs {
    #[command(flatten)]
    pub(crate) location: Location,
    /// Checkpoints a witness holds: a file (`[audit.witness] file`) or an
    /// `http(s)://` URL answering GET with them (JSON lines or a JSON array).
    /// Every witnessed checkpoint must be in the local log as witnessed.
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) witness: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArchiveArgs {
    #[command(flatten)]
    pub(crate) location: Location,
    /// Why, recorded in the new log's first record.
    #[arg(long, default_value = "archived by an operator")]
    pub(crate) reason: String,
}

#[derive(Debug, Args)]
pub(crate) struct AuditQueryArgs {
    #[command(flatten)]
    pub(crate) location: Location,
    /// Principal `kind:id` or just the id, e.g. `alice`.
    #[arg(long)]
    pub(crate) principal: Option<String>,
    /// Substring of the resource, e.g. `acme/app` or `refs/heads/main`.
    #[arg(long)]
    pub(crate) resource: Option<String>,
    /// Repository `upstream/owner/name` (shorthand for a resource filter).
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// Action, e.g. `git.push` or `token.mint`.
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// Only allowed or only refused requests.
    #[arg(long, value_enum)]
    pub(crate) decision: Option<DecisionArg>,
    /// Commit id or prefix.
    #[arg(long)]
    pub(crate) commit: Option<String>,
    /// Only events at or after this time (RFC 3339, or a duration ago such as `1h`).
    #[arg(long, value_parser = when_arg)]
    pub(crate) since: Option<String>,
    /// Only events before this time (RFC 3339, or a duration ago).
    #[arg(long, value_parser = when_arg)]
    pub(crate) until: Option<String>,
    /// Maximum rows (newest first are kept).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditTailArgs {
    #[command(flatten)]
    pub(crate) location: Location,
    /// How many of the newest events to print first.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub(crate) lines: usize,
    /// Print and exit instead of following.
    #[arg(long)]
    pub(crate) no_follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Check every policy and the entities against the Latchkey schema.
    Validate(PolicyLocation),
    /// Run a table of (principal, action, resource, context) → expected
    /// decision; fails naming the row on a mismatch.
    Test {
        /// The test table (TOML, `[[case]]` rows; see crates/policy/README.md).
        file: PathBuf,
        #[command(flatten)]
        location: PolicyLocation,
    },
    /// Print the Cedar schema policies are validated against.
    Schema,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct PolicyLocation {
    /// Policy directory (default: from `--config`, else `latchkey-data/policies`).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) location: Location,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Show each signing key's state and dates.
    List(#[command(flatten)] Location),
    /// Publish a new signing key now; it signs after `keys.publish_ahead`,
    /// and the old key signs until then and stays published until its
    /// tokens expire. With `--now` (a compromised key) the new key signs at
    /// once and every older key is removed: its tokens stop verifying. A
    /// running gateway reloads and audits the rotation within a second; a
    /// stopped one audits it when it next starts.
    Rotate(RotateArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum DocumentsCommand {
    /// Write every document of the embedded store as JSON lines, one
    /// document each (its full name, its fields in Firestore's REST JSON
    /// form, its create and update times), to standard output or `--out`.
    ///
    /// Reads the state store directly: run it beside a running gateway or a
    /// stopped one (beside a running one, writes made during the export may
    /// or may not be in it). Not audited: whoever can read the data
    /// directory can read the documents.
    Export(DocumentsExportArgs),
    /// Load JSON lines written by `export` (or converted from a Google
    /// Firestore export) into the embedded store, keeping each document's
    /// times; a document that exists is replaced. Idempotent.
    ///
    /// Writes the state store directly, bypassing policy: stop the gateway
    /// first (its listeners would not see the documents change), and keep
    /// the file as the record of what was loaded.
    Import(DocumentsImportArgs),
}

#[derive(Debug, Args, Clone)]
pub(crate) struct DocumentsExportArgs {
    /// Only this database (`projects/P/databases/D`); all when unset.
    #[arg(long)]
    pub(crate) database: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) location: Location,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct DocumentsImportArgs {
    /// The JSON-lines file (`-` for standard input).
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) location: Location,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct RotateArgs {
    /// Sign with the new key at once and remove every older key, so the
    /// tokens they signed stop verifying (for a compromised key).
    #[arg(long)]
    pub(crate) now: bool,
    #[command(flatten)]
    pub(crate) location: Location,
}
