//! Rules: configuration that turns events into planned actions.
//!
//! ```toml
//! [[rules]]
//! name = "record-approvals"
//! on = "pull_request_merged"
//! repository = "acme/payments"
//! base_ref = "refs/heads/main"
//! [rules.write_document]
//! database = "(default)"
//! path = "approvals/{merge_commit}"
//! fields = { merged_by = "{merged_by.email}", commit = "{merge_commit}" }
//!
//! [[rules]]
//! name = "freeze-failed-builds"
//! on = "build_finished"
//! state = "failed"
//! freeze_pipeline = true
//! ```
//!
//! Filters are globs ([`latchkey_core::glob_match`]: `*` and `?`); every
//! filter given must match. Ref filters match full ref names
//! (`refs/heads/main`), pipeline filters match the pipeline slug. This module
//! only plans: the gateway performs the actions, through the same policy
//! check and audit as any request.

use std::collections::BTreeMap;

use latchkey_core::glob_match;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Person};
use crate::source::Source;

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A unique name, used in audit records and errors.
    pub name: String,
    /// The event kind the rule reacts to.
    pub on: EventKind,
    /// Only events from this sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Glob on `owner/name` (push, pull_request_merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Glob on the full pushed ref (push).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_pattern: Option<String>,
    /// Glob on the full base ref (pull_request_merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ref: Option<String>,
    /// Glob on the organization slug (build_finished, job_finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Glob on the pipeline slug (build_finished, job_finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Glob on the branch name built (build_finished, job_finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Glob on the final state (build_finished, job_finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Glob on the step key (job_finished); a job without one never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_key: Option<String>,
    /// Write a document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_document: Option<WriteDocument>,
    /// Freeze the pipeline: no new tokens, and live ones stop working
    /// (build_finished, job_finished).
    #[serde(default, skip_serializing_if = "is_false")]
    pub freeze_pipeline: bool,
    /// Revoke the pipeline's live tokens without refusing new ones
    /// (build_finished, job_finished).
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoke_pipeline: bool,
    /// Revoke every token minted for the job (job_finished).
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoke_job: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_database() -> String {
    "(default)".to_owned()
}

/// `[rules.write_document]`: a document to write, with `{placeholder}`s
/// filled from the event. `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteDocument {
    /// The document database, `(default)` unless given.
    #[serde(default = "default_database")]
    pub database: String,
    /// The document path, `collection/doc[/collection/doc...]`. Each
    /// placeholder's value is percent-encoded so it is always exactly one
    /// segment (`{repository}` becomes `acme%2Fpayments`).
    pub path: String,
    /// Field name to value template.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// What a matching rule asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionKind {
    /// Write (create or replace) a document through the document API, as the
    /// `Service` principal acting for `acting_for` when the event names one.
    WriteDocument {
        /// The database.
        database: String,
        /// The expanded document path.
        path: String,
        /// The expanded fields.
        fields: BTreeMap<String, String>,
        /// The event's human (pusher or merger), to be mapped to an identity.
        acting_for: Option<Person>,
    },
    /// Freeze the pipeline: refuse new tokens and kill live ones. `pipeline`
    /// is the slug, the value CI tokens carry (`ci.pipeline`) and the
    /// revocation key; `organization` is for the audit record.
    FreezePipeline {
        /// The organization slug.
        organization: String,
        /// The pipeline slug.
        pipeline: String,
    },
    /// Revoke the pipeline's live tokens (same keys as `FreezePipeline`).
    RevokePipeline {
        /// The organization slug.
        organization: String,
        /// The pipeline slug.
        pipeline: String,
    },
    /// Revoke every token minted for a job.
    RevokeJob {
        /// The job id.
        job_id: String,
    },
}

/// One action planned by one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    /// The rule's name.
    pub rule: String,
    /// What to do.
    pub action: ActionKind,
}

/// A rule that does not make sense, found when configuration loads, or a
/// planned write that cannot be filled in for one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A rule without a name.
    #[error("a rule has an empty `name`; give every rule a unique name")]
    EmptyName,
    /// Two rules share a name.
    #[error("rule `{rule}` is defined twice; rule names must be unique")]
    DuplicateName {
        /// The name.
        rule: String,
    },
    /// A rule that does nothing.
    #[error(
        "rule `{rule}` has no action; set `write_document`, `freeze_pipeline`, `revoke_pipeline` or `revoke_job`"
    )]
    NoAction {
        /// The rule.
        rule: String,
    },
    /// A filter the event kind has no value for.
    #[error(
        "rule `{rule}`: filter `{field}` does not apply to `{on}` events; it applies to {applies_to}"
    )]
    FilterNotApplicable {
        /// The rule.
        rule: String,
        /// The filter.
        field: &'static str,
        /// The rule's event kind.
        on: EventKind,
        /// The kinds it applies to.
        applies_to: &'static str,
    },
    /// An action the event kind cannot drive.
    #[error(
        "rule `{rule}`: `{action}` does not apply to `{on}` events; it applies to {applies_to}"
    )]
    ActionNotApplicable {
        /// The rule.
        rule: String,
        /// The action.
        action: &'static str,
        /// The rule's event kind.
        on: EventKind,
        /// The kinds it applies to.
        applies_to: &'static str,
    },
    /// `source` names a sender that never sends the event kind.
    #[error("rule `{rule}`: source `{source_name}` never sends `{on}` events")]
    SourceNotApplicable {
        /// The rule.
        rule: String,
        /// The source.
        source_name: &'static str,
        /// The rule's event kind.
        on: EventKind,
    },
    /// A ref filter that is not a full ref name.
    #[error(
        "rule `{rule}`: `{field}` pattern `{pattern}` is not a full ref; write `refs/heads/{pattern}` (or start it with `*`)"
    )]
    RefNotFull {
        /// The rule.
        rule: String,
        /// The filter.
        field: &'static str,
        /// The pattern.
        pattern: String,
    },
    /// A template naming a placeholder the event kind does not have.
    #[error(
        "rule `{rule}`: `{field}` uses unknown placeholder `{{{placeholder}}}` for `{on}` events; known: {known}"
    )]
    UnknownPlaceholder {
        /// The rule.
        rule: String,
        /// The template's field (`write_document.path`, `write_document.fields.x`).
        field: String,
        /// The placeholder.
        placeholder: String,
        /// The rule's event kind.
        on: EventKind,
        /// The placeholders that kind has.
        known: String,
    },
    /// A template with unbalanced braces.
    #[error("rule `{rule}`: `{field}` is malformed: {reason}")]
    MalformedTemplate {
        /// The rule.
        rule: String,
        /// The template's field.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A document path that cannot name a document.
    #[error("rule `{rule}`: `write_document.path` `{path}` {reason}")]
    BadPath {
        /// The rule.
        rule: String,
        /// The path template.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An empty database name.
    #[error("rule `{rule}`: `write_document.database` is empty; use `(default)` or a database id")]
    EmptyDatabase {
        /// The rule.
        rule: String,
    },
    /// At evaluation: a placeholder whose value this event does not carry
    /// (an e-mail the server did not disclose, a job without a step key).
    #[error(
        "rule `{rule}`: `{field}` needs `{{{placeholder}}}`, which this event does not carry; the write was not planned"
    )]
    MissingValue {
        /// The rule.
        rule: String,
        /// The template's field.
        field: String,
        /// The placeholder.
        placeholder: String,
    },
}

const GIT_KINDS: &str = "`push` and `pull_request_merged`";
const CI_KINDS: &str = "`build_finished` and `job_finished`";

/// The placeholders a template may use for an event kind.
pub fn placeholders(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::Push => &[
            "source",
            "event",
            "commit",
            "repository",
            "ref",
            "branch",
            "before",
            "after",
            "pusher.login",
            "pusher.email",
        ],
        EventKind::PullRequestMerged => &[
            "source",
            "event",
            "commit",
            "repository",
            "number",
            "base_ref",
            "base_branch",
            "merge_commit",
            "merged_by.login",
            "merged_by.email",
            "author.login",
            "author.email",
        ],
        EventKind::BuildFinished => &[
            "source",
            "event",
            "commit",
            "organization",
            "pipeline",
            "build_number",
            "branch",
            "state",
        ],
        EventKind::JobFinished => &[
            "source",
            "event",
            "commit",
            "organization",
            "pipeline",
            "build_number",
            "branch",
            "state",
            "job_id",
            "step_key",
        ],
    }
}

/// The value of a placeholder for an event; `None` when the event does not
/// carry it (or the name is not a placeholder of the event's kind).
pub fn placeholder_value(source: Source, event: &Event, name: &str) -> Option<String> {
    let s = |v: &str| Some(v.to_owned());
    match (name, event) {
        ("source", _) => s(source.as_str()),
        ("event", e) => s(e.kind().as_str()),
        ("commit", e) => s(e.commit()),
        ("repository", e) => e.repository().map(str::to_owned),
        ("ref", Event::Push(p)) => s(&p.ref_name),
        ("branch", Event::Push(p)) => p.ref_name.strip_prefix("refs/heads/").map(str::to_owned),
        ("before", Event::Push(p)) => s(&p.before),
        ("after", Event::Push(p)) => s(&p.after),
        ("pusher.login", Event::Push(p)) => s(&p.pusher.login),
        ("pusher.email", Event::Push(p)) => p.pusher.email.clone(),
        ("number", Event::PullRequestMerged(p)) => Some(p.number.to_string()),
        ("base_ref", Event::PullRequestMerged(p)) => s(&p.base_ref),
        ("base_branch", Event::PullRequestMerged(p)) => {
            p.base_ref.strip_prefix("refs/heads/").map(str::to_owned)
        }
        ("merge_commit", Event::PullRequestMerged(p)) => s(&p.merge_commit),
        ("merged_by.login", Event::PullRequestMerged(p)) => s(&p.merged_by.login),
        ("merged_by.email", Event::PullRequestMerged(p)) => p.merged_by.email.clone(),
        ("author.login", Event::PullRequestMerged(p)) => s(&p.author.login),
        ("author.email", Event::PullRequestMerged(p)) => p.author.email.clone(),
        ("organization", Event::BuildFinished(b)) => s(&b.organization),
        ("pipeline", Event::BuildFinished(b)) => s(&b.pipeline),
        ("build_number", Event::BuildFinished(b)) => Some(b.build_number.to_string()),
        ("branch", Event::BuildFinished(b)) => s(&b.branch),
        ("state", Event::BuildFinished(b)) => s(&b.state),
        ("organization", Event::JobFinished(j)) => s(&j.organization),
        ("pipeline", Event::JobFinished(j)) => s(&j.pipeline),
        ("build_number", Event::JobFinished(j)) => Some(j.build_number.to_string()),
        ("branch", Event::JobFinished(j)) => s(&j.branch),
        ("state", Event::JobFinished(j)) => s(&j.state),
        ("job_id", Event::JobFinished(j)) => s(&j.job_id),
        ("step_key", Event::JobFinished(j)) => j.step_key.clone(),
        _ => None,
    }
}

/// A parsed template piece.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Literal(String),
    Placeholder(&'a str),
}

fn parse_template(t: &str) -> Result<Vec<Piece<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("{{") {
            lit.push('{');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            lit.push('}');
            rest = r;
        } else if c == '{' {
            let end = rest
                .find('}')
                .ok_or("a `{` has no closing `}` (write `{{` for a literal brace)")?;
            let name = rest[1..end].trim();
            if name.is_empty() {
                return Err("`{}` names no placeholder");
            }
            if name.contains('{') {
                return Err("placeholders cannot nest");
            }
            if !lit.is_empty() {
                out.push(Piece::Literal(std::mem::take(&mut lit)));
            }
            out.push(Piece::Placeholder(name));
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err("a `}` has no opening `{` (write `}}` for a literal brace)");
        } else {
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    Ok(out)
}

/// Percent-encodes a value so it is exactly one document path segment.
fn encode_segment(v: &str) -> String {
    if v == "." || v == ".." {
        return v.bytes().map(|b| format!("%{b:02X}")).collect();
    }
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@' | b'+') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn expand(
    rule: &str,
    field: &str,
    template: &str,
    source: Source,
    event: &Event,
    as_segment: bool,
) -> Result<String, RuleError> {
    let pieces = parse_template(template).map_err(|reason| RuleError::MalformedTemplate {
        rule: rule.to_owned(),
        field: field.to_owned(),
        reason,
    })?;
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Literal(l) => out.push_str(&l),
            Piece::Placeholder(name) => {
                let v = placeholder_value(source, event, name)
                    .filter(|v| !(as_segment && v.is_empty()))
                    .ok_or_else(|| RuleError::MissingValue {
                        rule: rule.to_owned(),
                        field: field.to_owned(),
                        placeholder: name.to_owned(),
                    })?;
                if as_segment {
                    out.push_str(&encode_segment(&v));
                } else {
                    out.push_str(&v);
                }
            }
        }
    }
    Ok(out)
}

impl Rule {
    /// Checks the rule against its event kind: filters and actions that
    /// apply, ref patterns that are full refs, templates whose placeholders
    /// exist, a path that names a document. Every error names the rule and
    /// the field.
    pub fn validate(&self) -> Result<(), RuleError> {
        let rule = || self.name.clone();
        if self.name.trim().is_empty() {
            return Err(RuleError::EmptyName);
        }
        let on = self.on;
        let git = matches!(on, EventKind::Push | EventKind::PullRequestMerged);
        if let Some(src) = self.source
            && src.is_git_server() != git
        {
            return Err(RuleError::SourceNotApplicable {
                rule: rule(),
                source_name: src.as_str(),
                on,
            });
        }
        let filters: [(&'static str, bool, bool, &'static str); 8] = [
            ("repository", self.repository.is_some(), git, GIT_KINDS),
            (
                "ref",
                self.ref_pattern.is_some(),
                on == EventKind::Push,
                "`push`",
            ),
            (
                "base_ref",
                self.base_ref.is_some(),
                on == EventKind::PullRequestMerged,
                "`pull_request_merged`",
            ),
            ("organization", self.organization.is_some(), !git, CI_KINDS),
            ("pipeline", self.pipeline.is_some(), !git, CI_KINDS),
            ("branch", self.branch.is_some(), !git, CI_KINDS),
            ("state", self.state.is_some(), !git, CI_KINDS),
            (
                "step_key",
                self.step_key.is_some(),
                on == EventKind::JobFinished,
                "`job_finished`",
            ),
        ];
        for (field, set, applies, applies_to) in filters {
            if set && !applies {
                return Err(RuleError::FilterNotApplicable {
                    rule: rule(),
                    field,
                    on,
                    applies_to,
                });
            }
        }
        for (field, pattern) in [("ref", &self.ref_pattern), ("base_ref", &self.base_ref)] {
            if let Some(p) = pattern
                && !(p.starts_with("refs/") || p.starts_with('*'))
            {
                return Err(RuleError::RefNotFull {
                    rule: rule(),
                    field,
                    pattern: p.clone(),
                });
            }
        }
        let actions: [(&'static str, bool, bool, &'static str); 3] = [
            ("freeze_pipeline", self.freeze_pipeline, !git, CI_KINDS),
            ("revoke_pipeline", self.revoke_pipeline, !git, CI_KINDS),
            (
                "revoke_job",
                self.revoke_job,
                on == EventKind::JobFinished,
                "`job_finished`",
            ),
        ];
        for (action, set, applies, applies_to) in actions {
            if set && !applies {
                return Err(RuleError::ActionNotApplicable {
                    rule: rule(),
                    action,
                    on,
                    applies_to,
                });
            }
        }
        if self.write_document.is_none() && !actions.iter().any(|a| a.1) {
            return Err(RuleError::NoAction { rule: rule() });
        }
        if let Some(w) = &self.write_document {
            if w.database.trim().is_empty() {
                return Err(RuleError::EmptyDatabase { rule: rule() });
            }
            self.check_template("write_document.path", &w.path)?;
            let bad_path = |reason| RuleError::BadPath {
                rule: rule(),
                path: w.path.clone(),
                reason,
            };
            if w.path.is_empty() || w.path.starts_with('/') || w.path.ends_with('/') {
                return Err(bad_path("must not be empty or start or end with `/`"));
            }
            if w.path.contains("//") {
                return Err(bad_path("must not contain an empty segment (`//`)"));
            }
            // Placeholders expand to exactly one segment, so the literal
            // slashes decide the segment count.
            let segments = w.path.matches('/').count() + 1;
            if segments % 2 != 0 {
                return Err(bad_path(
                    "names a collection, not a document; use `collection/document` pairs",
                ));
            }
            for (name, template) in &w.fields {
                if name.trim().is_empty() {
                    return Err(RuleError::MalformedTemplate {
                        rule: rule(),
                        field: "write_document.fields".into(),
                        reason: "a field name is empty",
                    });
                }
                self.check_template(&format!("write_document.fields.{name}"), template)?;
            }
        }
        Ok(())
    }

    fn check_template(&self, field: &str, template: &str) -> Result<(), RuleError> {
        let pieces = parse_template(template).map_err(|reason| RuleError::MalformedTemplate {
            rule: self.name.clone(),
            field: field.to_owned(),
            reason,
        })?;
        let known = placeholders(self.on);
        for p in pieces {
            if let Piece::Placeholder(name) = p
                && !known.contains(&name)
            {
                return Err(RuleError::UnknownPlaceholder {
                    rule: self.name.clone(),
                    field: field.to_owned(),
                    placeholder: name.to_owned(),
                    on: self.on,
                    known: known.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Whether the rule's kind and filters match the event.
    pub fn matches(&self, source: Source, event: &Event) -> bool {
        if self.on != event.kind() || self.source.is_some_and(|s| s != source) {
            return false;
        }
        let check = |pattern: &Option<String>, value: Option<&str>| match pattern {
            None => true,
            Some(p) => value.is_some_and(|v| glob_match(p, v)),
        };
        match event {
            Event::Push(p) => {
                check(&self.repository, Some(&p.repository))
                    && check(&self.ref_pattern, Some(&p.ref_name))
            }
            Event::PullRequestMerged(p) => {
                check(&self.repository, Some(&p.repository))
                    && check(&self.base_ref, Some(&p.base_ref))
            }
            Event::BuildFinished(b) => {
                check(&self.organization, Some(&b.organization))
                    && check(&self.pipeline, Some(&b.pipeline))
                    && check(&self.branch, Some(&b.branch))
                    && check(&self.state, Some(&b.state))
            }
            Event::JobFinished(j) => {
                check(&self.organization, Some(&j.organization))
                    && check(&self.pipeline, Some(&j.pipeline))
                    && check(&self.branch, Some(&j.branch))
                    && check(&self.state, Some(&j.state))
                    && check(&self.step_key, j.step_key.as_deref())
            }
        }
    }

    /// The actions this rule plans for an event it matches, in order:
    /// document write, freeze, pipeline revoke, job revoke.
    fn plan(&self, source: Source, event: &Event) -> Vec<Result<PlannedAction, RuleError>> {
        let mut out = Vec::new();
        let planned = |action| PlannedAction {
            rule: self.name.clone(),
            action,
        };
        if let Some(w) = &self.write_document {
            let write = (|| {
                let path = expand(
                    &self.name,
                    "write_document.path",
                    &w.path,
                    source,
                    event,
                    true,
                )?;
                let mut fields = BTreeMap::new();
                for (name, template) in &w.fields {
                    let field = format!("write_document.fields.{name}");
                    fields.insert(
                        name.clone(),
                        expand(&self.name, &field, template, source, event, false)?,
                    );
                }
                Ok(planned(ActionKind::WriteDocument {
                    database: w.database.clone(),
                    path,
                    fields,
                    acting_for: event.actor().cloned(),
                }))
            })();
            out.push(write);
        }
        let ci = match event {
            Event::BuildFinished(b) => Some((&b.organization, &b.pipeline)),
            Event::JobFinished(j) => Some((&j.organization, &j.pipeline)),
            _ => None,
        };
        if let Some((organization, pipeline)) = ci {
            if self.freeze_pipeline {
                out.push(Ok(planned(ActionKind::FreezePipeline {
                    organization: organization.clone(),
                    pipeline: pipeline.clone(),
                })));
            }
            if self.revoke_pipeline {
                out.push(Ok(planned(ActionKind::RevokePipeline {
                    organization: organization.clone(),
                    pipeline: pipeline.clone(),
                })));
            }
        }
        if let (true, Event::JobFinished(j)) = (self.revoke_job, event) {
            out.push(Ok(planned(ActionKind::RevokeJob {
                job_id: j.job_id.clone(),
            })));
        }
        out
    }
}

/// Validates every rule and that names are unique; the first error wins.
pub fn validate_rules(rules: &[Rule]) -> Result<(), RuleError> {
    let mut seen = std::collections::BTreeSet::new();
    for r in rules {
        r.validate()?;
        if !seen.insert(r.name.as_str()) {
            return Err(RuleError::DuplicateName {
                rule: r.name.clone(),
            });
        }
    }
    Ok(())
}

/// Plans the actions of every rule matching the event, in rule order.
///
/// A planned write whose template needs a value this event lacks (an e-mail
/// the server did not disclose, a job without a step key) comes back as
/// [`RuleError::MissingValue`] instead of a guessed value, so the gateway can
/// audit it. Rules are assumed validated ([`validate_rules`]).
pub fn evaluate(
    rules: &[Rule],
    source: Source,
    event: &Event,
) -> Vec<Result<PlannedAction, RuleError>> {
    rules
        .iter()
        .filter(|r| r.matches(source, event))
        .flat_map(|r| r.plan(source, event))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_escape() {
        assert_eq!(
            parse_template("a/{b}/{{c}}").unwrap(),
            vec![
                Piece::Literal("a/".into()),
                Piece::Placeholder("b"),
                Piece::Literal("/{c}".into()),
            ]
        );
        assert!(parse_template("{a").is_err());
        assert!(parse_template("a}").is_err());
        assert!(parse_template("{}").is_err());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("acme/payments"), "acme%2Fpayments");
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("."), "%2E");
        assert_eq!(encode_segment("a@b.c"), "a@b.c");
        assert_eq!(encode_segment("a b%"), "a%20b%25");
    }
}
