//! Payload parsing: each sender's JSON, read for just the fields the
//! normalized [`Event`] needs. Unknown fields are ignored; size and nesting
//! are bounded before the JSON parser runs.
//!
//! Shapes were taken from:
//!
//! - Gogs: `go-gogs-client` (`PushPayload`, `PayloadCommit`, `PayloadAuthor`,
//!   `User`, `PullRequest`) and `internal/database/pull.go`, which sends a
//!   merge as `pull_request` with `action: "closed"`, `pull_request.merged:
//!   true`, `merge_commit_sha`, `merged_by`, and the base as `base_branch`.
//! - Gitea: `modules/structs/hook.go` (`PushPayload`, `PullRequestPayload`)
//!   and `modules/structs/pull.go` (`base.ref`, `merged`, `merge_commit_sha`,
//!   `merged_by`, `user`); the push example on docs.gitea.com.
//! - GitHub: the `push` and `pull_request` payload examples of the
//!   machine-readable webhook specification (`octokit/webhooks`) and captured
//!   deliveries (`pusher.name`/`pusher.email`, `pull_request.merged`,
//!   `merge_commit_sha`, `merged_by.login`, `base.ref`).
//! - Buildkite: "Build webhook events" and "Job webhook events" (bodies with
//!   `event`, `build`, `pipeline`, and for jobs `job`), with the build, job
//!   and pipeline objects of the REST API ("Builds API": `number`, `state`,
//!   `commit`, `branch`, `url`; jobs: `id`, `state`, `step_key`). The
//!   organization slug is not a field of these objects; it is read from the
//!   pipeline's or build's API URL (`.../organizations/{org}/pipelines/...`)
//!   or web URL (`https://buildkite.com/{org}/{pipeline}/...`).

use serde::Deserialize;

use crate::error::{WebhookError, clip};
use crate::event::{
    BuildFinished, CommitSummary, Event, JobFinished, Person, PullRequestMerged, Push,
};
use crate::source::Source;

/// The largest body [`parse_event`] parses. GitHub caps payloads at 25 MB but
/// truncates commit lists long before that; Gogs, Gitea and Buildkite bodies
/// are far smaller. The gateway should bound the body it buffers to this.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// The deepest nesting of arrays and objects [`parse_event`] parses. Real
/// payloads nest fewer than ten levels.
pub const MAX_PAYLOAD_DEPTH: usize = 32;

const GIT_EVENTS: &str = "`push` and `pull_request` (and `ping`)";
const BUILDKITE_EVENTS: &str = "`build.finished` and `job.finished` (and `ping`)";

/// Parses a verified delivery into a normalized event.
///
/// `Ok(None)` means a delivery that is understood and deliberately ignored:
/// `ping`, and `pull_request` actions other than a merge. An event type
/// Latchkey does not handle is [`WebhookError::UnknownEvent`].
pub fn parse_event(
    source: Source,
    event_type: &str,
    body: &[u8],
) -> Result<Option<Event>, WebhookError> {
    let event_type = event_type.trim();
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(WebhookError::PayloadTooLarge {
            size: body.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    match source {
        Source::Gogs | Source::Gitea | Source::GitHub => match event_type {
            "ping" => Ok(None),
            "push" => parse_push(source, body).map(|p| Some(Event::Push(p))),
            "pull_request" => {
                parse_pull_request(source, body).map(|p| p.map(Event::PullRequestMerged))
            }
            other => Err(unknown(source, other, GIT_EVENTS)),
        },
        Source::Buildkite => {
            if !matches!(event_type, "ping" | "build.finished" | "job.finished") {
                return Err(unknown(source, event_type, BUILDKITE_EVENTS));
            }
            let payload: BkPayload = decode(event_type, body)?;
            // The event header is not signed; the body is. They must agree.
            let named = payload.event.as_deref().unwrap_or_default();
            if named.is_empty() {
                return Err(missing(event_type, "event"));
            }
            if named != event_type {
                return Err(WebhookError::EventMismatch {
                    header: clip(event_type),
                    body: clip(named),
                });
            }
            match event_type {
                "build.finished" => build_finished(payload).map(|b| Some(Event::BuildFinished(b))),
                "job.finished" => job_finished(payload).map(|j| Some(Event::JobFinished(j))),
                _ => Ok(None),
            }
        }
    }
}

fn unknown(source: Source, event: &str, expected: &'static str) -> WebhookError {
    WebhookError::UnknownEvent {
        event: clip(event),
        source_name: source.as_str(),
        expected,
    }
}

fn missing(event: &str, field: &'static str) -> WebhookError {
    WebhookError::MissingField {
        event: clip(event),
        field,
    }
}

/// Refuses bodies nested deeper than [`MAX_PAYLOAD_DEPTH`], scanning bytes
/// (strings and escapes aware) before any recursive parser sees them.
fn check_depth(body: &[u8]) -> Result<(), WebhookError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_PAYLOAD_DEPTH {
                    return Err(WebhookError::PayloadTooDeep {
                        limit: MAX_PAYLOAD_DEPTH,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn decode<'de, T: Deserialize<'de>>(event: &str, body: &'de [u8]) -> Result<T, WebhookError> {
    check_depth(body)?;
    serde_json::from_slice(body).map_err(|e| WebhookError::MalformedJson {
        event: clip(event),
        // serde_json's messages name the problem and position; for type
        // errors they may quote a short input fragment, so clip them.
        detail: clip_detail(&e),
    })
}

fn clip_detail(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

// ---------------------------------------------------------------- Git servers

/// A user object (Gogs/Gitea `User`, GitHub user or pusher). Every field is
/// optional because each server fills a different subset.
#[derive(Debug, Default, Deserialize)]
struct RawUser {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

fn pick(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl RawUser {
    /// The account name: `login`, else `username`, else (GitHub's pusher)
    /// `name`.
    fn person(&self, prefer_name: bool) -> Option<Person> {
        let login = if prefer_name {
            pick(&self.name)
                .or(pick(&self.login))
                .or(pick(&self.username))
        } else {
            pick(&self.login).or(pick(&self.username))
        }?;
        Some(Person {
            login: login.to_owned(),
            email: pick(&self.email).map(str::to_owned),
        })
    }
}

#[derive(Debug, Deserialize)]
struct RawRepo {
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    owner: Option<RawUser>,
}

impl RawRepo {
    fn full_name(&self) -> Option<String> {
        if let Some(f) = self
            .full_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            return Some(f.to_owned());
        }
        let owner = self.owner.as_ref()?.person(false)?;
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())?;
        Some(format!("{}/{}", owner.login, name))
    }
}

#[derive(Debug, Deserialize)]
struct RawCommit {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    author: Option<RawUser>,
}

#[derive(Debug, Deserialize)]
struct RawPush {
    #[serde(rename = "ref", default)]
    ref_name: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    commits: Option<Vec<RawCommit>>,
    #[serde(default)]
    repository: Option<RawRepo>,
    #[serde(default)]
    pusher: Option<RawUser>,
    #[serde(default)]
    sender: Option<RawUser>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn first_line(message: &str) -> String {
    const MAX_CHARS: usize = 200;
    let line = message.lines().next().unwrap_or_default().trim_end();
    line.chars().take(MAX_CHARS).collect()
}

fn parse_push(source: Source, body: &[u8]) -> Result<Push, WebhookError> {
    const EV: &str = "push";
    let raw: RawPush = decode(EV, body)?;
    let repository = raw
        .repository
        .as_ref()
        .and_then(RawRepo::full_name)
        .ok_or_else(|| missing(EV, "repository.full_name"))?;
    let ref_name = non_empty(raw.ref_name).ok_or_else(|| missing(EV, "ref"))?;
    let before = non_empty(raw.before).ok_or_else(|| missing(EV, "before"))?;
    let after = non_empty(raw.after).ok_or_else(|| missing(EV, "after"))?;
    // GitHub's pusher is `{name, email}` where `name` is the account name;
    // Gogs and Gitea send a full user with `login`/`username`.
    let pusher = raw
        .pusher
        .as_ref()
        .and_then(|p| p.person(source == Source::GitHub))
        .or_else(|| raw.sender.as_ref().and_then(|s| s.person(false)))
        .ok_or_else(|| missing(EV, "pusher"))?;
    let mut commits = Vec::new();
    for c in raw.commits.unwrap_or_default() {
        let id = non_empty(c.id).ok_or_else(|| missing(EV, "commits[].id"))?;
        commits.push(CommitSummary {
            id,
            message: first_line(c.message.as_deref().unwrap_or_default()),
            author_email: c.author.and_then(|a| non_empty(a.email)),
        });
    }
    Ok(Push {
        repository,
        ref_name,
        before,
        after,
        commits,
        pusher,
    })
}

#[derive(Debug, Deserialize)]
struct RawBranch {
    #[serde(rename = "ref", default)]
    ref_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawPullRequest {
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    #[serde(default)]
    merged_by: Option<RawUser>,
    #[serde(default)]
    user: Option<RawUser>,
    /// Gitea and GitHub.
    #[serde(default)]
    base: Option<RawBranch>,
    /// Gogs.
    #[serde(default)]
    base_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawPullRequestEvent {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    pull_request: Option<RawPullRequest>,
    #[serde(default)]
    repository: Option<RawRepo>,
    #[serde(default)]
    sender: Option<RawUser>,
}

fn parse_pull_request(
    _source: Source,
    body: &[u8],
) -> Result<Option<PullRequestMerged>, WebhookError> {
    const EV: &str = "pull_request";
    let raw: RawPullRequestEvent = decode(EV, body)?;
    let action = non_empty(raw.action).ok_or_else(|| missing(EV, "action"))?;
    let pr = raw
        .pull_request
        .ok_or_else(|| missing(EV, "pull_request"))?;
    if action != "closed" || pr.merged != Some(true) {
        return Ok(None);
    }
    let repository = raw
        .repository
        .as_ref()
        .and_then(RawRepo::full_name)
        .ok_or_else(|| missing(EV, "repository.full_name"))?;
    let number = raw
        .number
        .or(pr.number)
        .ok_or_else(|| missing(EV, "number"))?;
    let base = pr
        .base
        .and_then(|b| non_empty(b.ref_name))
        .or_else(|| non_empty(pr.base_branch))
        .ok_or_else(|| missing(EV, "pull_request.base.ref"))?;
    let base_ref = if base.starts_with("refs/") {
        base
    } else {
        format!("refs/heads/{base}")
    };
    let merge_commit = non_empty(pr.merge_commit_sha)
        .ok_or_else(|| missing(EV, "pull_request.merge_commit_sha"))?;
    let merged_by = pr
        .merged_by
        .as_ref()
        .and_then(|u| u.person(false))
        .or_else(|| raw.sender.as_ref().and_then(|s| s.person(false)))
        .ok_or_else(|| missing(EV, "pull_request.merged_by"))?;
    let author = pr
        .user
        .as_ref()
        .and_then(|u| u.person(false))
        .ok_or_else(|| missing(EV, "pull_request.user"))?;
    Ok(Some(PullRequestMerged {
        repository,
        number,
        base_ref,
        merge_commit,
        merged_by,
        author,
    }))
}

// ------------------------------------------------------------------ Buildkite

#[derive(Debug, Deserialize)]
struct BkPipeline {
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    web_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BkBuild {
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    web_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BkJob {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    step_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BkPayload {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    build: Option<BkBuild>,
    #[serde(default)]
    pipeline: Option<BkPipeline>,
    #[serde(default)]
    job: Option<BkJob>,
}

/// The organization slug from an API URL
/// (`https://api.buildkite.com/v2/organizations/{org}/pipelines/...`) or a
/// web URL (`https://buildkite.com/{org}/{pipeline}/...`).
fn organization_from_url(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut segments = rest.split('/').skip(1).filter(|s| !s.is_empty());
    let first = segments.next()?;
    let org = if first == "v2" {
        if segments.next()? != "organizations" {
            return None;
        }
        segments.next()?
    } else if first == "organizations" {
        segments.next()?
    } else {
        first
    };
    let ok = !org.is_empty()
        && org.len() <= 100
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| org.to_owned())
}

struct BkCommon {
    pipeline: String,
    organization: String,
    build_number: u64,
    commit: String,
    branch: String,
    build_state: Option<String>,
}

fn common(
    event: &str,
    pipeline: Option<BkPipeline>,
    build: Option<BkBuild>,
) -> Result<BkCommon, WebhookError> {
    let pipeline = pipeline.ok_or_else(|| missing(event, "pipeline"))?;
    let build = build.ok_or_else(|| missing(event, "build"))?;
    let slug = non_empty(pipeline.slug).ok_or_else(|| missing(event, "pipeline.slug"))?;
    let organization = [&pipeline.url, &pipeline.web_url, &build.url, &build.web_url]
        .into_iter()
        .flatten()
        .find_map(|u| organization_from_url(u))
        .ok_or_else(|| missing(event, "pipeline.url"))?;
    Ok(BkCommon {
        pipeline: slug,
        organization,
        build_number: build.number.ok_or_else(|| missing(event, "build.number"))?,
        commit: non_empty(build.commit).ok_or_else(|| missing(event, "build.commit"))?,
        branch: non_empty(build.branch).ok_or_else(|| missing(event, "build.branch"))?,
        build_state: non_empty(build.state),
    })
}

fn build_finished(p: BkPayload) -> Result<BuildFinished, WebhookError> {
    const EV: &str = "build.finished";
    let c = common(EV, p.pipeline, p.build)?;
    let state = c.build_state.ok_or_else(|| missing(EV, "build.state"))?;
    Ok(BuildFinished {
        failed: state == "failed",
        pipeline: c.pipeline,
        organization: c.organization,
        build_number: c.build_number,
        commit: c.commit,
        branch: c.branch,
        state,
    })
}

fn job_finished(p: BkPayload) -> Result<JobFinished, WebhookError> {
    const EV: &str = "job.finished";
    let job = p.job.ok_or_else(|| missing(EV, "job"))?;
    let c = common(EV, p.pipeline, p.build)?;
    Ok(JobFinished {
        job_id: non_empty(job.id).ok_or_else(|| missing(EV, "job.id"))?,
        pipeline: c.pipeline,
        organization: c.organization,
        build_number: c.build_number,
        commit: c.commit,
        branch: c.branch,
        step_key: non_empty(job.step_key),
        state: non_empty(job.state).ok_or_else(|| missing(EV, "job.state"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_from_api_and_web_urls() {
        assert_eq!(
            organization_from_url(
                "https://api.buildkite.com/v2/organizations/acme-inc/pipelines/deploy"
            ),
            Some("acme-inc".into())
        );
        assert_eq!(
            organization_from_url("https://buildkite.com/acme-inc/deploy/builds/7"),
            Some("acme-inc".into())
        );
        assert_eq!(organization_from_url("https://buildkite.com/"), None);
        assert_eq!(
            organization_from_url("https://api.buildkite.com/v2/other/x"),
            None
        );
        assert_eq!(organization_from_url("https://buildkite.com/a%2Fb/x"), None);
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        let deep = "[".repeat(MAX_PAYLOAD_DEPTH + 1);
        assert!(check_depth(deep.as_bytes()).is_err());
        let quoted = format!("{{\"a\":\"{}\"}}", "[".repeat(1000));
        assert!(check_depth(quoted.as_bytes()).is_ok());
        let escaped = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(1000));
        assert!(check_depth(escaped.as_bytes()).is_ok());
    }

    #[test]
    fn first_line_trims_and_bounds() {
        assert_eq!(first_line("fix: x\n\nbody"), "fix: x");
        assert_eq!(first_line(""), "");
        assert_eq!(first_line(&"é".repeat(500)).chars().count(), 200);
    }
}
