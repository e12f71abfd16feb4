//! Talking to a running gateway: the token exchange every command that
//! needs a token makes.

use anyhow::{Context, Result, bail};

/// Posts an RFC 8693 token exchange to the gateway at `base_url` and returns
/// the JSON answer. Errors name the gateway's `error` and description, never
/// a token.
pub(crate) async fn exchange(base_url: &str, form: &[(&str, String)]) -> Result<serde_json::Value> {
    let url = format!("{}/oauth2/token", base_url.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&url)
        .form(form)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}; is the gateway running?"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.with_context(|| {
        format!("{url} sent a non-JSON answer (HTTP {status}); is that a Latchkey gateway?")
    })?;
    if !status.is_success() {
        let code = body["error"].as_str().unwrap_or("error");
        let desc = body["error_description"].as_str().unwrap_or("");
        bail!("token exchange refused ({code}): {desc}");
    }
    Ok(body)
}

/// The form of a token exchange for `subject` and `audience`.
pub(crate) fn exchange_form(subject: String, audience: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", subject),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
        ),
        ("audience", audience.to_owned()),
    ]
}
