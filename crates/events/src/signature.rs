//! Signature checks, delivery ids and event type headers.
//!
//! What each scheme was verified against:
//!
//! - **Gogs**: <https://gogs.io/advancing/webhooks> ("`X-Gogs-Signature`: the
//!   HMAC-SHA256 hex digest of the payload, computed using the webhook
//!   secret"; `X-Gogs-Delivery` a UUID; `X-Gogs-Event`), and Gogs' source
//!   (`internal/database/webhook.go`: `hmac.New(sha256.New, secret)` over the
//!   JSON payload, `hex.EncodeToString`, sent as `X-Gogs-Signature` next to
//!   `X-Gogs-Delivery` and `X-Gogs-Event`).
//! - **Gitea**: <https://docs.gitea.com/usage/webhooks> (`X-Gitea-Delivery`
//!   a UUID, `X-Gitea-Event`), and Gitea's source
//!   (`services/webhook/deliver.go`: `hmac.New(sha256.New, secret)` over the
//!   payload content, `hex.EncodeToString`, sent as `X-Gitea-Signature` with no
//!   prefix; the same value also goes out as `X-Gogs-Signature` and, prefixed
//!   `sha256=`, as `X-Hub-Signature-256`). Latchkey reads `X-Gitea-Signature`.
//! - **GitHub**: "Validating webhook deliveries"
//!   (<https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries>):
//!   `X-Hub-Signature-256: sha256=` + hex HMAC-SHA256 of the raw body, compared
//!   in constant time; `X-GitHub-Delivery` is a GUID per delivery.
//! - **Buildkite**: <https://buildkite.com/docs/apis/webhooks/pipelines>
//!   ("Webhook token", "Webhook signature", "Verifying HMAC signatures",
//!   "Defending against replay attacks"): either `X-Buildkite-Token` carries
//!   the token in clear text, or `X-Buildkite-Signature:
//!   timestamp=<unix>,signature=<hex>` where the signature is
//!   `HMAC-SHA256(token, "<timestamp>.<raw body>")`; the timestamp is when the
//!   request was dispatched and should be checked against a short window.
//!   Buildkite documents no delivery id header; see [`delivery_id`].

use std::time::Duration;

use aws_lc_rs::{constant_time, digest, hmac};
use latchkey_core::UnixTime;

use crate::error::WebhookError;
use crate::source::{Headers, MAX_HEADER_VALUE, Source, single};

/// The default Buildkite timestamp window: five minutes either way.
pub const DEFAULT_TIMESTAMP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The GitHub signature header.
pub const GITHUB_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// The Gogs signature header.
pub const GOGS_SIGNATURE_HEADER: &str = "X-Gogs-Signature";
/// The Gitea signature header.
pub const GITEA_SIGNATURE_HEADER: &str = "X-Gitea-Signature";
/// Buildkite's timestamped HMAC header.
pub const BUILDKITE_SIGNATURE_HEADER: &str = "X-Buildkite-Signature";
/// Buildkite's plain shared-token header.
pub const BUILDKITE_TOKEN_HEADER: &str = "X-Buildkite-Token";

const SHA256_LEN: usize = 32;

/// How a delivery proved it came from the source, so the gateway can record
/// it and refuse the weaker plain-token scheme if its configuration says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// An HMAC-SHA256 of the body (Gogs, Gitea, GitHub).
    BodyHmac,
    /// Buildkite's HMAC over `"<timestamp>.<body>"`, within the window.
    TimestampedHmac {
        /// The signed dispatch time.
        timestamp: UnixTime,
    },
    /// Buildkite's plain `X-Buildkite-Token` (no integrity, no freshness:
    /// anyone who sees one delivery can forge others).
    PlainToken,
}

/// The parsed `X-Buildkite-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildkiteSignature {
    /// The signed dispatch time, seconds since the Unix epoch.
    pub timestamp: UnixTime,
    /// The decoded HMAC-SHA256.
    pub signature: [u8; SHA256_LEN],
}

/// Checks that a delivery is authentic: the signature (or Buildkite token)
/// matches `secret`, compared in constant time, and for Buildkite's
/// timestamped signature the timestamp is within `window` of `now` in either
/// direction.
///
/// For Buildkite the signature header wins when both are present; a delivery
/// with only `X-Buildkite-Token` returns [`Proof::PlainToken`].
pub fn verify_signature<H: Headers + ?Sized>(
    source: Source,
    secret: &[u8],
    headers: &H,
    body: &[u8],
    now: UnixTime,
    window: Duration,
) -> Result<Proof, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::SecretNotConfigured {
            source_name: source.as_str(),
        });
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let bad = || WebhookError::BadSignature {
        source_name: source.as_str(),
    };
    match source {
        Source::Gogs | Source::Gitea | Source::GitHub => {
            let header = match source {
                Source::Gogs => GOGS_SIGNATURE_HEADER,
                Source::Gitea => GITEA_SIGNATURE_HEADER,
                _ => GITHUB_SIGNATURE_HEADER,
            };
            let value = single(headers, header)?.ok_or(WebhookError::MissingSignature {
                header,
                source_name: source.as_str(),
            })?;
            let tag = if source == Source::GitHub {
                parse_github_signature(value)?
            } else {
                parse_hex_signature(header, value)?
            };
            hmac::verify(&key, body, &tag).map_err(|_| bad())?;
            Ok(Proof::BodyHmac)
        }
        Source::Buildkite => {
            if let Some(value) = single(headers, BUILDKITE_SIGNATURE_HEADER)? {
                let sig = parse_buildkite_signature(value)?;
                let mut ctx = hmac::Context::with_key(&key);
                ctx.update(sig.timestamp.to_string().as_bytes());
                ctx.update(b".");
                ctx.update(body);
                let expected = ctx.sign();
                constant_time::verify_slices_are_equal(expected.as_ref(), &sig.signature)
                    .map_err(|_| bad())?;
                check_window(sig.timestamp, now, window)?;
                return Ok(Proof::TimestampedHmac {
                    timestamp: sig.timestamp,
                });
            }
            let token =
                single(headers, BUILDKITE_TOKEN_HEADER)?.ok_or(WebhookError::MissingSignature {
                    header: BUILDKITE_SIGNATURE_HEADER,
                    source_name: source.as_str(),
                })?;
            if token.len() > MAX_HEADER_VALUE {
                return Err(WebhookError::MalformedSignatureHeader {
                    header: BUILDKITE_TOKEN_HEADER,
                    reason: "it is longer than 1024 bytes",
                });
            }
            // Compare digests so that neither the content nor the length of
            // the secret leaks through timing.
            let got = digest::digest(&digest::SHA256, token.as_bytes());
            let want = digest::digest(&digest::SHA256, secret);
            constant_time::verify_slices_are_equal(got.as_ref(), want.as_ref())
                .map_err(|_| bad())?;
            Ok(Proof::PlainToken)
        }
    }
}

fn check_window(timestamp: UnixTime, now: UnixTime, window: Duration) -> Result<(), WebhookError> {
    let window_secs = window.as_secs();
    if timestamp <= now {
        let age_secs = now - timestamp;
        if age_secs > window_secs {
            return Err(WebhookError::StaleTimestamp {
                timestamp,
                age_secs,
                window_secs,
            });
        }
    } else {
        let ahead_secs = timestamp - now;
        if ahead_secs > window_secs {
            return Err(WebhookError::FutureTimestamp {
                timestamp,
                ahead_secs,
                window_secs,
            });
        }
    }
    Ok(())
}

/// Parses a bare hex HMAC-SHA256 (Gogs, Gitea).
pub fn parse_hex_signature(
    header: &'static str,
    value: &str,
) -> Result<[u8; SHA256_LEN], WebhookError> {
    let value = value.trim();
    if value.len() != SHA256_LEN * 2 {
        return Err(WebhookError::MalformedSignatureHeader {
            header,
            reason: "expected 64 hex digits (an HMAC-SHA256)",
        });
    }
    let mut out = [0u8; SHA256_LEN];
    hex::decode_to_slice(value, &mut out).map_err(|_| WebhookError::MalformedSignatureHeader {
        header,
        reason: "expected 64 hex digits (an HMAC-SHA256)",
    })?;
    Ok(out)
}

/// Parses GitHub's `sha256=<hex>` signature.
pub fn parse_github_signature(value: &str) -> Result<[u8; SHA256_LEN], WebhookError> {
    let hex_part =
        value
            .trim()
            .strip_prefix("sha256=")
            .ok_or(WebhookError::MalformedSignatureHeader {
                header: GITHUB_SIGNATURE_HEADER,
                reason: "expected `sha256=` followed by 64 hex digits",
            })?;
    parse_hex_signature(GITHUB_SIGNATURE_HEADER, hex_part)
}

/// Parses Buildkite's `timestamp=<unix>,signature=<hex>` header. Keys may
/// come in any order with whitespace around them; unknown keys are ignored
/// (room for new schemes); a repeated key is malformed.
pub fn parse_buildkite_signature(value: &str) -> Result<BuildkiteSignature, WebhookError> {
    let malformed = |reason| WebhookError::MalformedSignatureHeader {
        header: BUILDKITE_SIGNATURE_HEADER,
        reason,
    };
    if value.len() > MAX_HEADER_VALUE {
        return Err(malformed("it is longer than 1024 bytes"));
    }
    let mut timestamp: Option<&str> = None;
    let mut signature: Option<&str> = None;
    for part in value.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or(malformed("expected `timestamp=<unix>,signature=<hex>`"))?;
        let slot = match k.trim() {
            "timestamp" => &mut timestamp,
            "signature" => &mut signature,
            _ => continue,
        };
        if slot.replace(v.trim()).is_some() {
            return Err(malformed("a key appears more than once"));
        }
    }
    let timestamp = timestamp.ok_or(malformed("the `timestamp=` part is missing"))?;
    let signature = signature.ok_or(malformed("the `signature=` part is missing"))?;
    if timestamp.is_empty()
        || timestamp.len() > 19
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(malformed("the timestamp is not a whole number of seconds"));
    }
    let timestamp: UnixTime = timestamp
        .parse()
        .map_err(|_| malformed("the timestamp is not a whole number of seconds"))?;
    let signature = parse_hex_signature(BUILDKITE_SIGNATURE_HEADER, signature)?;
    Ok(BuildkiteSignature {
        timestamp,
        signature,
    })
}

/// The delivery id used for replay protection, namespaced by source
/// (`gitea:f6266f16-...`) so that ids from different senders never collide.
///
/// Gogs, Gitea and GitHub send one per delivery (`X-Gogs-Delivery`,
/// `X-Gitea-Delivery`, `X-GitHub-Delivery`); it is required. Buildkite
/// documents no delivery id header, so one is derived from what the sender
/// signed:
///
/// - with `X-Buildkite-Signature`: `buildkite:sig:<timestamp>:<signature hex>`.
///   The signature covers the timestamp and the body, so a byte-identical
///   replay maps to the same id and the timestamp window bounds how long the
///   store must remember it;
/// - with `X-Buildkite-Token`: `buildkite:body:<SHA-256 of the body, hex>`.
///   Distinct Buildkite events differ in their bodies (ids, states, times), so
///   this dedupes replays without merging distinct events.
///
/// Call this only after [`verify_signature`] succeeded.
pub fn delivery_id<H: Headers + ?Sized>(
    source: Source,
    headers: &H,
    body: &[u8],
) -> Result<String, WebhookError> {
    if let Some(header) = source.delivery_header() {
        let id = single(headers, header)?.ok_or(WebhookError::MissingDeliveryId { header })?;
        if id.len() > 128 {
            return Err(WebhookError::MalformedDeliveryId {
                header,
                reason: "it is longer than 128 characters",
            });
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WebhookError::MalformedDeliveryId {
                header,
                reason: "it must be printable ASCII without spaces",
            });
        }
        return Ok(format!("{source}:{id}"));
    }
    if let Some(value) = single(headers, BUILDKITE_SIGNATURE_HEADER)? {
        let sig = parse_buildkite_signature(value)?;
        return Ok(format!(
            "buildkite:sig:{}:{}",
            sig.timestamp,
            hex::encode(sig.signature)
        ));
    }
    let d = digest::digest(&digest::SHA256, body);
    Ok(format!("buildkite:body:{}", hex::encode(d.as_ref())))
}

/// The event type the sender put in its event header (`push`,
/// `pull_request`, `build.finished`, ...).
pub fn event_type<H: Headers + ?Sized>(source: Source, headers: &H) -> Result<&str, WebhookError> {
    let header = source.event_header();
    let value = single(headers, header)?.ok_or(WebhookError::MissingEventType { header })?;
    Ok(value)
}

/// The headers a sender would attach to `body`, for tests, fixtures and the
/// `latchkey dev` sandbox. Buildkite gets the timestamped signature (dated
/// `timestamp`); the others ignore `timestamp`. The event and delivery id
/// headers are not included.
pub fn signature_headers(
    source: Source,
    secret: &[u8],
    body: &[u8],
    timestamp: UnixTime,
) -> Vec<(String, String)> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    match source {
        Source::Gogs | Source::Gitea | Source::GitHub => {
            let sig = hex::encode(hmac::sign(&key, body).as_ref());
            let (name, value) = match source {
                Source::Gogs => (GOGS_SIGNATURE_HEADER, sig),
                Source::Gitea => (GITEA_SIGNATURE_HEADER, sig),
                _ => (GITHUB_SIGNATURE_HEADER, format!("sha256={sig}")),
            };
            vec![(name.to_owned(), value)]
        }
        Source::Buildkite => {
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(timestamp.to_string().as_bytes());
            ctx.update(b".");
            ctx.update(body);
            let sig = hex::encode(ctx.sign().as_ref());
            vec![(
                BUILDKITE_SIGNATURE_HEADER.to_owned(),
                format!("timestamp={timestamp},signature={sig}"),
            )]
        }
    }
}
