//! `latchkey git-credential`: a Git credential helper that answers Git's
//! `get` with a short-lived Latchkey token (as the Basic-auth password), cached
//! per gateway until it has a minute left, and exchanged afresh from an
//! identity token otherwise.
//!
//! It does not verify tokens (the gateway does), does not store anything Git
//! hands it (`store` is a no-op) and never writes a token anywhere but Git's
//! standard output and the private cache file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use latchkey_core::SharedClock;

use crate::cli::GitCredentialArgs;

/// A cached token is handed out only while it has more than this many seconds left.
const MIN_REMAINING_SECS: u64 = 60;

/// The user name the helper gives Git; the gateway ignores it.
const USERNAME: &str = "latchkey";

/// Runs one credential-helper operation.
pub(crate) async fn run(args: GitCredentialArgs, clock: SharedClock) -> Result<ExitCode> {
    // Git writes the request and closes stdin; read it all so Git never sees a broken pipe.
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .context("cannot read the credential request from standard input")?;
    let request = parse_request(&input);
    match args.operation.as_str() {
        "get" => get(&args, &request, &clock).await,
        "erase" => {
            let Some(url) = request.gateway_url() else {
                return Ok(ExitCode::SUCCESS);
            };
            let path = cache_dir()?.join(cache_file_name(&url, &args.audience));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove `{}`", path.display()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        // `store` (Git saving a credential that worked) and any future
        // operation: nothing to do; the cache is written on `get`.
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn get(args: &GitCredentialArgs, request: &Request, clock: &SharedClock) -> Result<ExitCode> {
    let Some(url) = request.gateway_url() else {
        return Ok(ExitCode::SUCCESS);
    };
    let dir = cache_dir()?;
    let path = dir.join(cache_file_name(&url, &args.audience));
    let now = clock.unix();
    if let Some(token) = read_cache(&path, &url, &args.audience)
        && token_exp(&token).is_some_and(|exp| exp > now.saturating_add(MIN_REMAINING_SECS))
    {
        print_credential(&token);
        return Ok(ExitCode::SUCCESS);
    }
    let identity = match identity_token(args, &url).await? {
        Some(t) => Some(t),
        // Last: the sign-in of `latchkey login`, renewed quietly when due.
        None => crate::login::cached_id_token(&url, clock).await?,
    };
    let Some(identity) = identity else {
        eprintln!(
            "latchkey git-credential: no identity token for {url}: run `latchkey login --gateway {url}`, \
             or set `LATCHKEY_ID_TOKEN`, `LATCHKEY_ID_TOKEN_FILE` or `LATCHKEY_ID_TOKEN_COMMAND` \
             (a command printing an OIDC ID token)"
        );
        return Ok(ExitCode::SUCCESS);
    };
    let body = crate::client::exchange(
        &url,
        &crate::client::exchange_form(identity, &args.audience),
    )
    .await
    .with_context(|| format!("cannot get a `{}` token from {url}", args.audience))?;
    let token = body["access_token"]
        .as_str()
        .context("the gateway's answer has no `access_token`")?
        .to_owned();
    if !is_protocol_safe(&token) {
        bail!(
            "the gateway's `access_token` is not a single printable line; refusing to hand it to Git"
        );
    }
    if let Err(e) = write_cache(
        &dir,
        &path,
        &CacheEntry {
            url: url.clone(),
            audience: args.audience.clone(),
            token: token.clone(),
        },
    ) {
        // The token still works; the next `get` just exchanges again.
        eprintln!("latchkey git-credential: warning: cannot cache the token: {e:#}");
    }
    print_credential(&token);
    Ok(ExitCode::SUCCESS)
}

/// Stores `token` in the cache this helper reads, for the gateway at
/// `gateway_url` (any URL on it; only scheme, host and port count) and
/// `audience`, so that `git` gets it from `latchkey git-credential get`
/// without an identity token of its own (`latchkey ci token
/// --git-credential-cache`). Returns the gateway origin the entry is for.
pub(crate) fn cache_token(gateway_url: &str, audience: &str, token: &str) -> Result<String> {
    // Git's credential request names the host with a port only when it is
    // not the scheme's default; `gateway_origin` follows the same rule.
    let url = crate::login::gateway_origin(gateway_url)?;
    if !is_protocol_safe(token) {
        bail!("the gateway's `access_token` is not a single printable line; refusing to cache it");
    }
    let dir = cache_dir()?;
    let path = dir.join(cache_file_name(&url, audience));
    write_cache(
        &dir,
        &path,
        &CacheEntry {
            url: url.clone(),
            audience: audience.to_owned(),
            token: token.to_owned(),
        },
    )?;
    Ok(url)
}

fn print_credential(token: &str) {
    let mut out = format!("username={USERNAME}\npassword={token}\n");
    if let Some(exp) = token_exp(token) {
        // Git ≥ 2.41 then never keeps the token past its expiry in other helpers.
        out.push_str(&format!("password_expiry_utc={exp}\n"));
    }
    print!("{out}");
}

/// The attributes of a credential request this helper uses.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    protocol: Option<String>,
    host: Option<String>,
}

impl Request {
    /// `{protocol}://{host}` for `http` and `https`; `None` for anything else.
    fn gateway_url(&self) -> Option<String> {
        let protocol = self.protocol.as_deref()?;
        let host = self.host.as_deref().filter(|h| !h.is_empty())?;
        matches!(protocol, "http" | "https").then(|| format!("{protocol}://{host}"))
    }
}

/// Parses Git's `key=value` lines up to the first blank line.
fn parse_request(text: &str) -> Request {
    let mut req = Request::default();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "protocol" => req.protocol = Some(value.to_owned()),
            "host" => req.host = Some(value.to_owned()),
            _ => {}
        }
    }
    req
}

/// A token can go into a `key=value` line of the credential protocol.
fn is_protocol_safe(token: &str) -> bool {
    !token.is_empty() && token.chars().all(|c| c.is_ascii_graphic())
}

/// The `exp` claim of a JWT, read without verifying the signature (the
/// gateway verifies; this only decides whether to reuse a cached token).
fn token_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_u64()
}

/// `$XDG_CACHE_HOME/latchkey`, else `~/.cache/latchkey`.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    if let Some(base) = xdg {
        return Ok(base.join("latchkey"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("latchkey")),
        None => {
            bail!("neither `XDG_CACHE_HOME` nor `HOME` is set; set one so tokens can be cached")
        }
    }
}

/// One cache file per (gateway URL, audience). Letters, digits and `.` are
/// kept, everything else becomes `_XX`, so distinct URLs never share a file.
fn cache_file_name(url: &str, audience: &str) -> String {
    format!("{}-{}.json", escape_name(url), escape_name(audience))
}

/// `s` as part of a file name: letters, digits and `.` kept, every other
/// byte `_XX`; never a `-`, so names joined with `-` stay distinct.
pub(crate) fn escape_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// Deletes every Latchkey token cached for the gateway `origin` (any
/// audience); returns how many there were.
pub(crate) fn forget_gateway(origin: &str) -> Result<usize> {
    let dir = cache_dir()?;
    let prefix = format!("{}-", escape_name(origin));
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot list `{}`", dir.display())),
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.ends_with(".json") {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot delete `{}`", entry.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// What a cache file holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    url: String,
    audience: String,
    token: String,
}

/// The cached token for `url` and `audience`, if there is a readable one.
fn read_cache(path: &Path, url: &str, audience: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    (entry.url == url && entry.audience == audience && is_protocol_safe(&entry.token))
        .then_some(entry.token)
}

/// Writes the cache file atomically, readable only by its owner, in a
/// directory only its owner can enter.
fn write_cache(dir: &Path, path: &Path, entry: &CacheEntry) -> Result<()> {
    write_private(dir, path, &serde_json::to_string(entry)?)
}

/// Writes `text` to `path` atomically (a temporary file renamed over it),
/// mode 0600, in `dir` created mode 0700.
pub(crate) fn write_private(dir: &Path, path: &Path, text: &str) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict `{}` to its owner", dir.display()))?;
    }
    #[cfg(not(unix))]
    builder
        .create(dir)
        .with_context(|| format!("cannot create `{}`", dir.display()))?;

    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write `{}`", path.display()));
    }
    Ok(())
}

/// The identity token to exchange: `LATCHKEY_ID_TOKEN`, else the token file,
/// else the token command's output. `None` when none is configured.
async fn identity_token(args: &GitCredentialArgs, url: &str) -> Result<Option<String>> {
    if let Some(t) = std::env::var("LATCHKEY_ID_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(t));
    }
    if let Some(file) = args
        .id_token_file
        .as_ref()
        .filter(|f| !f.as_os_str().is_empty())
    {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the identity token file `{}`", file.display()))?;
        let t = text.trim();
        if t.is_empty() {
            bail!("the identity token file `{}` is empty", file.display());
        }
        return Ok(Some(t.to_owned()));
    }
    if let Some(cmd) = args
        .id_token_command
        .as_deref()
        .filter(|c| !c.trim().is_empty())
    {
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("LATCHKEY_URL", url)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .context("cannot run `LATCHKEY_ID_TOKEN_COMMAND` with `sh -c`")?;
        if !output.status.success() {
            bail!(
                "`LATCHKEY_ID_TOKEN_COMMAND` failed ({}); run it by hand to see why",
                output.status
            );
        }
        let text = String::from_utf8(output.stdout)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        return match text {
            Some(t) => Ok(Some(t)),
            None => {
                bail!("`LATCHKEY_ID_TOKEN_COMMAND` printed no identity token on standard output")
            }
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_until_blank_line() {
        let req =
            parse_request("protocol=http\nhost=127.0.0.1:8080\npath=acme/app.git\n\nhost=evil\n");
        assert_eq!(req.gateway_url().as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(parse_request("protocol=ssh\nhost=x\n").gateway_url(), None);
        assert_eq!(parse_request("protocol=https\n").gateway_url(), None);
    }

    #[test]
    fn cache_names_are_distinct_and_plain() {
        let a = cache_file_name("http://a:1", "git");
        let b = cache_file_name("http://a_1", "git");
        assert_ne!(a, b);
        assert_ne!(
            cache_file_name("http://a", "b-c"),
            cache_file_name("http://a-b", "c")
        );
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{a}"
        );
    }

    #[test]
    fn reads_exp_without_verifying() {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1234,"sub":"a"}"#);
        assert_eq!(token_exp(&format!("h.{payload}.s")), Some(1234));
        assert_eq!(token_exp("not-a-jwt"), None);
        assert_eq!(token_exp("a.!!!.b"), None);
    }

    #[test]
    fn refuses_tokens_that_would_break_the_protocol() {
        assert!(is_protocol_safe("a.b.c"));
        assert!(!is_protocol_safe("a\npassword=x"));
        assert!(!is_protocol_safe(""));
    }
}
