//! Webhook senders and the headers they use.

use serde::{Deserialize, Serialize};

use crate::error::{WebhookError, clip};

/// A system that sends webhooks to `/hooks/{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Gogs (`X-Gogs-*` headers).
    Gogs,
    /// Gitea (`X-Gitea-*` headers).
    Gitea,
    /// GitHub (`X-GitHub-*`, `X-Hub-Signature-256`).
    #[serde(rename = "github")]
    GitHub,
    /// Buildkite Pipelines (`X-Buildkite-*`).
    Buildkite,
}

impl Source {
    /// Every source, in URL order.
    pub const ALL: [Source; 4] = [Self::Gogs, Self::Gitea, Self::GitHub, Self::Buildkite];

    /// The lowercase name used in URLs, config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gogs => "gogs",
            Self::Gitea => "gitea",
            Self::GitHub => "github",
            Self::Buildkite => "buildkite",
        }
    }

    /// Parses the `/hooks/{source}` path segment.
    pub fn parse(segment: &str) -> Result<Self, WebhookError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == segment)
            .ok_or_else(|| WebhookError::UnknownSource {
                source_name: clip(segment),
            })
    }

    /// The header naming the event type.
    pub fn event_header(self) -> &'static str {
        match self {
            Self::Gogs => "X-Gogs-Event",
            Self::Gitea => "X-Gitea-Event",
            Self::GitHub => "X-GitHub-Event",
            Self::Buildkite => "X-Buildkite-Event",
        }
    }

    /// The header carrying the delivery id, if the source sends one.
    /// Buildkite documents none (see [`crate::delivery_id`]).
    pub fn delivery_header(self) -> Option<&'static str> {
        match self {
            Self::Gogs => Some("X-Gogs-Delivery"),
            Self::Gitea => Some("X-Gitea-Delivery"),
            Self::GitHub => Some("X-GitHub-Delivery"),
            Self::Buildkite => None,
        }
    }

    /// Whether the source is a Git server (push and pull request events)
    /// rather than a CI system (build and job events).
    pub fn is_git_server(self) -> bool {
        !matches!(self, Self::Buildkite)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Case-insensitive access to a request's headers, so this crate needs no
/// HTTP library. Implemented for slices and vectors of name/value pairs; the
/// gateway can implement it over its own header map.
pub trait Headers {
    /// Every value of the header `name` (compared case-insensitively), in
    /// order of appearance.
    fn values<'a>(&'a self, name: &str) -> Vec<&'a str>;
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.iter()
            .filter(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
            .collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.as_slice().values(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Headers for [(K, V); N] {
    fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.as_slice().values(name)
    }
}

/// The longest header value this crate reads; longer ones are malformed.
pub(crate) const MAX_HEADER_VALUE: usize = 1024;

/// The one value of `header`, refusing repeats. Leading and trailing
/// whitespace is trimmed; an empty value counts as absent.
pub(crate) fn single<'a, H: Headers + ?Sized>(
    headers: &'a H,
    header: &'static str,
) -> Result<Option<&'a str>, WebhookError> {
    let values = headers.values(header);
    match values.as_slice() {
        [] => Ok(None),
        [one] => {
            let v = one.trim();
            Ok((!v.is_empty()).then_some(v))
        }
        _ => Err(WebhookError::DuplicateHeader { header }),
    }
}
