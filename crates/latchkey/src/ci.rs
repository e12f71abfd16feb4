//! `latchkey ci token`: inside a CI step, get the job's OIDC token from the
//! CI system, exchange it at the gateway (RFC 8693) and print the Latchkey
//! token, or put it in the Git credential helper's cache.
//!
//! It never prints, logs or caches the CI token itself, and does not decide
//! anything: the gateway's trust rules and policies do.

use std::io::Read;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::{CiSource, CiTokenArgs};

/// How long the CI's token endpoint or `buildkite-agent` may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest CI token accepted (the gateway refuses bigger ones anyway).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Runs `latchkey ci token`.
pub(crate) async fn token(args: CiTokenArgs) -> Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // A CI job names its gateway; only a sandbox's recorded URL stands in
    // for `--url` (a job that silently tried 127.0.0.1:8080 would fail
    // later and less clearly).
    let url = match args.url.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => crate::config::sandbox_url(&args.data)?
            .map(|u| u.trim_end_matches('/').to_owned())
            .context("no gateway URL: pass `--url URL` or set `LATCHKEY_URL`")?,
    };
    let oidc_audience = args.oidc_audience.clone().unwrap_or_else(|| url.clone());
    let source = match args.from {
        Some(s) => s,
        None => detect(&env).context(
            "not running in Buildkite or GitHub Actions (neither `BUILDKITE=true` nor \
             `GITHUB_ACTIONS=true` is set): pass `--from file --file PATH` or `--from stdin` \
             with an OIDC token, or `--from buildkite|github-actions`",
        )?,
    };
    let ci_token = match source {
        CiSource::Buildkite => buildkite_token(&oidc_audience).await?,
        CiSource::GithubActions => github_token(&env, &oidc_audience).await?,
        CiSource::File => {
            let Some(path) = &args.file else {
                bail!("`--from file` needs `--file PATH`");
            };
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the CI token file `{}`", path.display()))?;
            check_token(text, &format!("the file `{}`", path.display()))?
        }
        CiSource::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_TOKEN_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .context("cannot read the CI token from standard input")?;
            check_token(text, "standard input")?
        }
    };

    let mut form = crate::client::exchange_form(ci_token, &args.audience);
    if let Some(s) = &args.scope {
        form.push(("scope", s.clone()));
    }
    if let Some(l) = args.lifetime {
        form.push(("lifetime", l.as_secs().to_string()));
    }
    let body = crate::client::exchange(&url, &form)
        .await
        .with_context(|| format!("cannot get a `{}` token from {url}", args.audience))?;
    let token = body["access_token"]
        .as_str()
        .context("the gateway's answer has no `access_token`")?;
    if args.git_credential_cache {
        let origin = crate::credential::cache_token(&url, &args.audience, token)?;
        let expires = body["expires_in"].as_u64().unwrap_or(0);
        eprintln!(
            "latchkey: cached a `{}` token for {origin} (expires in {expires} s); git uses it \
             through the `latchkey git-credential` helper",
            args.audience
        );
    } else {
        println!("{token}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Which CI the environment says this is.
fn detect(env: &dyn Fn(&str) -> Option<String>) -> Option<CiSource> {
    if env("BUILDKITE").as_deref() == Some("true") || env("BUILDKITE_JOB_ID").is_some() {
        Some(CiSource::Buildkite)
    } else if env("GITHUB_ACTIONS").as_deref() == Some("true") {
        Some(CiSource::GithubActions)
    } else {
        None
    }
}

/// Trims and checks a token read from somewhere; `from` names the place in
/// errors (never the token).
fn check_token(text: String, from: &str) -> Result<String> {
    let t = text.trim();
    if t.is_empty() {
        bail!("{from} holds no token");
    }
    if t.len() > MAX_TOKEN_BYTES {
        bail!("{from} holds more than {MAX_TOKEN_BYTES} bytes; that is not an OIDC token");
    }
    if !t.chars().all(|c| c.is_ascii_graphic()) || t.split('.').count() != 3 {
        bail!("{from} does not hold a JWT (`header.claims.signature` on one line)");
    }
    Ok(t.to_owned())
}

/// `buildkite-agent oidc request-token --audience AUD`.
async fn buildkite_token(audience: &str) -> Result<String> {
    let child = tokio::process::Command::new("buildkite-agent")
        .args(["oidc", "request-token", "--audience", audience])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`buildkite-agent` is not on PATH: run inside a Buildkite job, or pass `--from file|stdin`"
        ),
        Err(e) => return Err(e).context("cannot run `buildkite-agent`"),
    };
    let output = tokio::time::timeout(FETCH_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "`buildkite-agent oidc request-token` did not answer within {} s",
                FETCH_TIMEOUT.as_secs()
            )
        })?
        .context("cannot run `buildkite-agent`")?;
    if !output.status.success() {
        bail!(
            "`buildkite-agent oidc request-token --audience {audience}` failed ({}); see its message above",
            output.status
        );
    }
    let text = String::from_utf8(output.stdout)
        .context("`buildkite-agent oidc request-token` printed something that is not text")?;
    check_token(text, "`buildkite-agent oidc request-token`'s output")
}

/// GitHub Actions' token endpoint: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUD`
/// with `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answering
/// `{"value": "<jwt>"}`.
async fn github_token(env: &dyn Fn(&str) -> Option<String>, audience: &str) -> Result<String> {
    let (Some(request_url), Some(request_token)) = (
        env("ACTIONS_ID_TOKEN_REQUEST_URL"),
        env("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        bail!(
            "GitHub Actions gave this job no OIDC token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL` \
             and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` are unset): add `permissions: id-token: write` \
             to the workflow or job"
        );
    };
    let mut url =
        reqwest::Url::parse(&request_url).context("`ACTIONS_ID_TOKEN_REQUEST_URL` is not a URL")?;
    url.query_pairs_mut().append_pair("audience", audience);
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .context("cannot build an HTTP client")?;
    let resp = client
        .get(url)
        .header(
            reqwest::header::AUTHORIZATION,
            format!("bearer {request_token}"),
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .context("cannot reach GitHub's OIDC token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`)")?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "GitHub's OIDC token endpoint refused the request (HTTP {status}); \
             does the job have `permissions: id-token: write`?"
        );
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .context("GitHub's OIDC token endpoint sent an answer that is not JSON")?;
    let Some(value) = body["value"].as_str() else {
        bail!("GitHub's OIDC token endpoint answered without a `value`");
    };
    check_token(value.to_owned(), "GitHub's OIDC token endpoint answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn detects_the_ci() {
        assert_eq!(
            detect(&env_of(&[("BUILDKITE", "true")])),
            Some(CiSource::Buildkite)
        );
        assert_eq!(
            detect(&env_of(&[("BUILDKITE_JOB_ID", "0184")])),
            Some(CiSource::Buildkite)
        );
        assert_eq!(
            detect(&env_of(&[("GITHUB_ACTIONS", "true")])),
            Some(CiSource::GithubActions)
        );
        assert_eq!(detect(&env_of(&[("CI", "true")])), None);
    }

    #[test]
    fn token_checks_never_echo_the_token() {
        assert_eq!(check_token(" a.b.c \n".into(), "x").unwrap(), "a.b.c");
        let e = check_token("secret value".into(), "the file `t`")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        assert!(check_token(String::new(), "x").is_err());
        assert!(check_token("a.b".into(), "x").is_err());
    }
}
