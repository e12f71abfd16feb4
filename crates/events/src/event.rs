//! Normalized events: what a webhook says happened, whoever sent it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A person named by a Git server: a pusher, a merger, a pull request author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The account name on the Git server (`login`/`username`; GitHub's
    /// pusher carries it as `name`).
    pub login: String,
    /// The e-mail, when the server discloses it. Used to map the person to a
    /// Latchkey identity; never trusted for more than that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// One commit of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSummary {
    /// The commit id (SHA).
    pub id: String,
    /// The first line of the commit message (at most 200 characters).
    pub message: String,
    /// The author's e-mail as recorded in the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_email: Option<String>,
}

/// Refs were updated on a Git server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// `owner/name`.
    pub repository: String,
    /// The full ref name, e.g. `refs/heads/main`.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The ref's old object id (all zeros when the ref was created).
    pub before: String,
    /// The ref's new object id (all zeros when the ref was deleted).
    pub after: String,
    /// The commits pushed, as the server listed them (servers cap the list).
    pub commits: Vec<CommitSummary>,
    /// Who pushed.
    pub pusher: Person,
}

impl Push {
    /// Whether the push deleted the ref.
    pub fn is_delete(&self) -> bool {
        !self.after.is_empty() && self.after.bytes().all(|b| b == b'0')
    }
}

/// A pull request was merged (Gogs, Gitea and GitHub all send this as a
/// `pull_request` event with `action: closed` and `merged: true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestMerged {
    /// `owner/name` of the base repository.
    pub repository: String,
    /// The pull request number.
    pub number: u64,
    /// The full ref merged into, e.g. `refs/heads/main` (the servers send a
    /// branch name; it is normalized to a ref so rules match like pushes).
    pub base_ref: String,
    /// The commit the server reports as the merge result
    /// (`merge_commit_sha`).
    pub merge_commit: String,
    /// Who merged.
    pub merged_by: Person,
    /// Who opened the pull request.
    pub author: Person,
}

/// A Buildkite build finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFinished {
    /// The pipeline's slug, the value CI tokens carry as their pipeline.
    pub pipeline: String,
    /// The organization's slug.
    pub organization: String,
    /// The build number within the pipeline.
    pub build_number: u64,
    /// The commit built.
    pub commit: String,
    /// The branch built.
    pub branch: String,
    /// Buildkite's final state: `passed`, `failed`, `canceled`, ...
    pub state: String,
    /// Whether the state is `failed`.
    pub failed: bool,
}

/// A Buildkite job finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFinished {
    /// The job's id (UUID), the value CI tokens carry as their job id.
    pub job_id: String,
    /// The pipeline's slug.
    pub pipeline: String,
    /// The organization's slug.
    pub organization: String,
    /// The build number within the pipeline.
    pub build_number: u64,
    /// The commit built.
    pub commit: String,
    /// The branch built.
    pub branch: String,
    /// The step key, when the pipeline gave the step one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_key: Option<String>,
    /// The job's final state: `passed`, `failed`, `timed_out`, `canceled`, ...
    pub state: String,
}

/// A webhook normalized across senders: the input of the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Refs were pushed.
    Push(Push),
    /// A pull request was merged.
    PullRequestMerged(PullRequestMerged),
    /// A build finished.
    BuildFinished(BuildFinished),
    /// A job finished.
    JobFinished(JobFinished),
}

/// The kinds of [`Event`], as named in rule configuration (`on = "push"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`Event::Push`].
    Push,
    /// [`Event::PullRequestMerged`].
    PullRequestMerged,
    /// [`Event::BuildFinished`].
    BuildFinished,
    /// [`Event::JobFinished`].
    JobFinished,
}

impl EventKind {
    /// The snake_case name used in configuration and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::PullRequestMerged => "pull_request_merged",
            Self::BuildFinished => "build_finished",
            Self::JobFinished => "job_finished",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Push(_) => EventKind::Push,
            Self::PullRequestMerged(_) => EventKind::PullRequestMerged,
            Self::BuildFinished(_) => EventKind::BuildFinished,
            Self::JobFinished(_) => EventKind::JobFinished,
        }
    }

    /// The commit the event is about: a push's new head, a merge's result,
    /// the commit a build or job ran. This is what links the event to the
    /// push's audit record.
    pub fn commit(&self) -> &str {
        match self {
            Self::Push(p) => &p.after,
            Self::PullRequestMerged(p) => &p.merge_commit,
            Self::BuildFinished(b) => &b.commit,
            Self::JobFinished(j) => &j.commit,
        }
    }

    /// `owner/name` for Git server events; `None` for CI events.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Self::Push(p) => Some(&p.repository),
            Self::PullRequestMerged(p) => Some(&p.repository),
            Self::BuildFinished(_) | Self::JobFinished(_) => None,
        }
    }

    /// The full ref the event is about: a push's ref, a merge's base ref, a
    /// build's branch as `refs/heads/<branch>`.
    pub fn ref_name(&self) -> String {
        match self {
            Self::Push(p) => p.ref_name.clone(),
            Self::PullRequestMerged(p) => p.base_ref.clone(),
            Self::BuildFinished(b) => branch_ref(&b.branch),
            Self::JobFinished(j) => branch_ref(&j.branch),
        }
    }

    /// The pipeline slug for CI events.
    pub fn pipeline(&self) -> Option<&str> {
        match self {
            Self::BuildFinished(b) => Some(&b.pipeline),
            Self::JobFinished(j) => Some(&j.pipeline),
            Self::Push(_) | Self::PullRequestMerged(_) => None,
        }
    }

    /// The human the event's actions are taken for: the pusher or the
    /// merger. CI events name none.
    pub fn actor(&self) -> Option<&Person> {
        match self {
            Self::Push(p) => Some(&p.pusher),
            Self::PullRequestMerged(p) => Some(&p.merged_by),
            Self::BuildFinished(_) | Self::JobFinished(_) => None,
        }
    }

    /// The facts the gateway puts in the webhook's audit record: `event`,
    /// `repository`, `ref`, `commit`, `pipeline`, `organization`, `build`,
    /// `job_id`, `state`, `actor`, `actor_email`, whichever apply.
    pub fn audit_context(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: &str| {
            m.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        put("event", self.kind().as_str());
        if let Some(r) = self.repository() {
            put("repository", r);
        }
        put("ref", &self.ref_name());
        put("commit", self.commit());
        if let Some(a) = self.actor() {
            put("actor", &a.login);
            if let Some(e) = &a.email {
                put("actor_email", e);
            }
        }
        match self {
            Self::Push(_) => {}
            Self::PullRequestMerged(p) => {
                m.insert("pull_request".into(), Value::from(p.number));
            }
            Self::BuildFinished(b) => {
                put("pipeline", &b.pipeline);
                put("organization", &b.organization);
                put("state", &b.state);
                m.insert("build".into(), Value::from(b.build_number));
            }
            Self::JobFinished(j) => {
                put("pipeline", &j.pipeline);
                put("organization", &j.organization);
                put("job_id", &j.job_id);
                put("state", &j.state);
                m.insert("build".into(), Value::from(j.build_number));
            }
        }
        m
    }
}

fn branch_ref(branch: &str) -> String {
    if branch.starts_with("refs/") {
        branch.to_owned()
    } else {
        format!("refs/heads/{branch}")
    }
}
