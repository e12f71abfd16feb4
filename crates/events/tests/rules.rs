//! Rules: configuration parsing, validation errors that name the rule and
//! field, glob filters, placeholder expansion and planned actions.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use latchkey_events::{
    ActionKind, Event, EventKind, Person, PlannedAction, Rule, RuleError, Source, evaluate,
    parse_event, placeholder_value, placeholders, validate_rules,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rules: Vec<Rule>,
}

fn rules(toml_text: &str) -> Vec<Rule> {
    let c: Config = toml::from_str(toml_text).unwrap();
    c.rules
}

fn fixture(source: Source, event: &str, name: &str) -> Event {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    parse_event(source, event, &std::fs::read(path).unwrap())
        .unwrap()
        .unwrap()
}

const EXAMPLE: &str = r#"
[[rules]]
name = "record-approvals"
on = "pull_request_merged"
repository = "acme/payments"
base_ref = "refs/heads/main"
[rules.write_document]
database = "(default)"
path = "approvals/{merge_commit}"
fields = { merged_by = "{merged_by.email}", author = "{author.email}", commit = "{merge_commit}", pr = "{repository}#{number}" }

[[rules]]
name = "flag-pushes"
on = "push"
repository = "acme/*"
ref = "refs/heads/main"
[rules.write_document]
path = "flags/{repository}/pushes/{after}"
fields = { by = "{pusher.login}" }

[[rules]]
name = "freeze-failed-builds"
on = "build_finished"
state = "failed"
freeze_pipeline = true

[[rules]]
name = "revoke-finished-jobs"
on = "job_finished"
revoke_job = true
"#;

#[test]
fn example_config_validates() {
    let rs = rules(EXAMPLE);
    assert_eq!(rs.len(), 4);
    validate_rules(&rs).unwrap();
    assert_eq!(rs[0].on, EventKind::PullRequestMerged);
    assert_eq!(rs[1].write_document.as_ref().unwrap().database, "(default)");
}

#[test]
fn merged_pull_request_writes_an_approval() {
    let rs = rules(EXAMPLE);
    let e = fixture(Source::Gogs, "pull_request", "gogs_pull_request_merged");
    let plan = evaluate(&rs, Source::Gogs, &e);
    let fields: BTreeMap<String, String> = [
        ("merged_by", "dana@acme.test"),
        ("author", "lee@acme.test"),
        ("commit", "4b3a2f1e0d9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"),
        ("pr", "acme/payments#41"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        plan,
        vec![Ok(PlannedAction {
            rule: "record-approvals".into(),
            action: ActionKind::WriteDocument {
                database: "(default)".into(),
                path: "approvals/4b3a2f1e0d9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c".into(),
                fields,
                acting_for: Some(Person {
                    login: "dana".into(),
                    email: Some("dana@acme.test".into())
                }),
            },
        })]
    );
}

#[test]
fn push_path_values_are_one_segment_each() {
    let rs = rules(EXAMPLE);
    let e = fixture(Source::Gogs, "push", "gogs_push");
    let plan = evaluate(&rs, Source::Gogs, &e);
    let [
        Ok(PlannedAction {
            rule,
            action: ActionKind::WriteDocument { path, .. },
        }),
    ] = plan.as_slice()
    else {
        panic!("{plan:?}")
    };
    assert_eq!(rule, "flag-pushes");
    assert_eq!(
        path,
        "flags/acme%2Fpayments/pushes/9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
    );
}

#[test]
fn filters_are_globs_and_all_must_match() {
    let rs = rules(EXAMPLE);
    // Gitea push to acme/ledger release/2.4: the repo glob matches but the
    // ref does not.
    let e = fixture(Source::Gitea, "push", "gitea_push");
    assert!(evaluate(&rs, Source::Gitea, &e).is_empty());
    // Gitea merge into acme/ledger: repository is not acme/payments.
    let e = fixture(Source::Gitea, "pull_request", "gitea_pull_request_merged");
    assert!(evaluate(&rs, Source::Gitea, &e).is_empty());

    let glob = rules(
        r#"
[[rules]]
name = "release-pushes"
on = "push"
ref = "refs/heads/release/*"
source = "gitea"
[rules.write_document]
path = "releases/{branch}"
"#,
    );
    validate_rules(&glob).unwrap();
    let plan = evaluate(&glob, Source::Gitea, &e_push_gitea());
    assert_eq!(plan.len(), 1);
    let Ok(PlannedAction {
        action: ActionKind::WriteDocument { path, .. },
        ..
    }) = &plan[0]
    else {
        panic!()
    };
    assert_eq!(path, "releases/release%2F2.4");
    // The source filter: the same event from another sender does not match.
    assert!(evaluate(&glob, Source::Gogs, &e_push_gitea()).is_empty());
}

fn e_push_gitea() -> Event {
    fixture(Source::Gitea, "push", "gitea_push")
}

#[test]
fn failed_build_freezes_its_pipeline() {
    let rs = rules(EXAMPLE);
    let e = fixture(
        Source::Buildkite,
        "build.finished",
        "buildkite_build_finished",
    );
    assert_eq!(
        evaluate(&rs, Source::Buildkite, &e),
        vec![Ok(PlannedAction {
            rule: "freeze-failed-builds".into(),
            action: ActionKind::FreezePipeline {
                organization: "acme-inc".into(),
                pipeline: "payments-deploy".into()
            }
        })]
    );
    // A passed build does not.
    let Event::BuildFinished(mut b) = e else {
        panic!()
    };
    b.state = "passed".into();
    b.failed = false;
    assert!(evaluate(&rs, Source::Buildkite, &Event::BuildFinished(b)).is_empty());
}

#[test]
fn finished_job_revokes_its_tokens() {
    let rs = rules(EXAMPLE);
    let e = fixture(Source::Buildkite, "job.finished", "buildkite_job_finished");
    assert_eq!(
        evaluate(&rs, Source::Buildkite, &e),
        vec![Ok(PlannedAction {
            rule: "revoke-finished-jobs".into(),
            action: ActionKind::RevokeJob {
                job_id: "0193a3f7-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into()
            }
        })]
    );
}

#[test]
fn several_actions_in_rule_order() {
    let rs = rules(
        r#"
[[rules]]
name = "deploy-step"
on = "job_finished"
organization = "acme-*"
pipeline = "payments-*"
branch = "main"
step_key = "deploy"
state = "*"
revoke_job = true
revoke_pipeline = true
freeze_pipeline = true
[rules.write_document]
path = "deploys/{pipeline}-{build_number}"
fields = { job = "{job_id}", step = "{step_key}", commit = "{commit}", from = "{source}:{event}" }

[[rules]]
name = "other-step"
on = "job_finished"
step_key = "test"
revoke_job = true
"#,
    );
    validate_rules(&rs).unwrap();
    let e = fixture(Source::Buildkite, "job.finished", "buildkite_job_finished");
    let plan: Vec<ActionKind> = evaluate(&rs, Source::Buildkite, &e)
        .into_iter()
        .map(|p| p.unwrap().action)
        .collect();
    assert_eq!(plan.len(), 4);
    let ActionKind::WriteDocument {
        path,
        fields,
        acting_for,
        ..
    } = &plan[0]
    else {
        panic!()
    };
    assert_eq!(path, "deploys/payments-deploy-1188");
    assert_eq!(fields["step"], "deploy");
    assert_eq!(fields["from"], "buildkite:job_finished");
    assert_eq!(*acting_for, None, "CI events act for no human");
    assert!(matches!(plan[1], ActionKind::FreezePipeline { .. }));
    assert!(matches!(plan[2], ActionKind::RevokePipeline { .. }));
    assert!(matches!(plan[3], ActionKind::RevokeJob { .. }));
}

#[test]
fn missing_values_are_reported_not_guessed() {
    let rs = rules(
        r#"
[[rules]]
name = "needs-email"
on = "pull_request_merged"
[rules.write_document]
path = "approvals/{merge_commit}"
fields = { merged_by = "{merged_by.email}" }
"#,
    );
    validate_rules(&rs).unwrap();
    // GitHub does not disclose the merger's e-mail.
    let e = fixture(Source::GitHub, "pull_request", "github_pull_request_merged");
    let plan = evaluate(&rs, Source::GitHub, &e);
    assert_eq!(
        plan,
        vec![Err(RuleError::MissingValue {
            rule: "needs-email".into(),
            field: "write_document.fields.merged_by".into(),
            placeholder: "merged_by.email".into()
        })]
    );
    assert_eq!(
        plan[0].as_ref().unwrap_err().to_string(),
        "rule `needs-email`: `write_document.fields.merged_by` needs `{merged_by.email}`, which this event does not carry; the write was not planned"
    );
}

fn validation_error(toml_text: &str) -> RuleError {
    validate_rules(&rules(toml_text)).unwrap_err()
}

#[test]
fn unknown_placeholders_are_named_at_validation() {
    let err = validation_error(
        r#"
[[rules]]
name = "typo"
on = "pull_request_merged"
[rules.write_document]
path = "approvals/{merge_comit}"
"#,
    );
    assert!(
        matches!(&err, RuleError::UnknownPlaceholder { rule, field, placeholder, .. }
        if rule == "typo" && field == "write_document.path" && placeholder == "merge_comit")
    );
    let text = err.to_string();
    assert!(text.starts_with(
        "rule `typo`: `write_document.path` uses unknown placeholder `{merge_comit}` for `pull_request_merged` events; known: "
    ), "{text}");
    assert!(text.contains("merge_commit"));

    // A placeholder of another kind is unknown too.
    let err = validation_error(
        r#"
[[rules]]
name = "wrong-kind"
on = "push"
[rules.write_document]
path = "x/y"
fields = { job = "{job_id}" }
"#,
    );
    assert!(matches!(&err, RuleError::UnknownPlaceholder { field, .. }
        if field == "write_document.fields.job"));
}

#[test]
fn validation_errors_name_the_rule_and_field() {
    let cases: Vec<(&str, &str)> = vec![
        (
            r#"[[rules]]
name = "a"
on = "push"
"#,
            "rule `a` has no action; set `write_document`, `freeze_pipeline`, `revoke_pipeline` or `revoke_job`",
        ),
        (
            r#"[[rules]]
name = "b"
on = "push"
base_ref = "refs/heads/main"
[rules.write_document]
path = "a/b"
"#,
            "rule `b`: filter `base_ref` does not apply to `push` events; it applies to `pull_request_merged`",
        ),
        (
            r#"[[rules]]
name = "c"
on = "push"
revoke_job = true
"#,
            "rule `c`: `revoke_job` does not apply to `push` events; it applies to `job_finished`",
        ),
        (
            r#"[[rules]]
name = "d"
on = "build_finished"
freeze_pipeline = true
repository = "acme/x"
"#,
            "rule `d`: filter `repository` does not apply to `build_finished` events; it applies to `push` and `pull_request_merged`",
        ),
        (
            r#"[[rules]]
name = "e"
on = "push"
ref = "main"
[rules.write_document]
path = "a/b"
"#,
            "rule `e`: `ref` pattern `main` is not a full ref; write `refs/heads/main` (or start it with `*`)",
        ),
        (
            r#"[[rules]]
name = "f"
on = "push"
[rules.write_document]
path = "flags/{after"
"#,
            "rule `f`: `write_document.path` is malformed: a `{` has no closing `}` (write `{{` for a literal brace)",
        ),
        (
            r#"[[rules]]
name = "g"
on = "push"
[rules.write_document]
path = "flags"
"#,
            "rule `g`: `write_document.path` `flags` names a collection, not a document; use `collection/document` pairs",
        ),
        (
            r#"[[rules]]
name = "h"
on = "push"
[rules.write_document]
path = "/a/b"
"#,
            "rule `h`: `write_document.path` `/a/b` must not be empty or start or end with `/`",
        ),
        (
            r#"[[rules]]
name = "i"
on = "build_finished"
source = "github"
freeze_pipeline = true
"#,
            "rule `i`: source `github` never sends `build_finished` events",
        ),
        (
            r#"[[rules]]
name = "j"
on = "job_finished"
revoke_job = true
[[rules]]
name = "j"
on = "job_finished"
revoke_job = true
"#,
            "rule `j` is defined twice; rule names must be unique",
        ),
        (
            r#"[[rules]]
name = " "
on = "job_finished"
revoke_job = true
"#,
            "a rule has an empty `name`; give every rule a unique name",
        ),
        (
            r#"[[rules]]
name = "k"
on = "push"
[rules.write_document]
database = ""
path = "a/b"
"#,
            "rule `k`: `write_document.database` is empty; use `(default)` or a database id",
        ),
        (
            r#"[[rules]]
name = "l"
on = "build_finished"
step_key = "deploy"
freeze_pipeline = true
"#,
            "rule `l`: filter `step_key` does not apply to `build_finished` events; it applies to `job_finished`",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(validation_error(text).to_string(), want);
    }
}

#[test]
fn unknown_config_keys_are_refused() {
    let bad: Result<Config, _> = toml::from_str(
        r#"
[[rules]]
name = "x"
on = "push"
refs = "refs/heads/main"
"#,
    );
    assert!(
        bad.err()
            .unwrap()
            .to_string()
            .contains("unknown field `refs`")
    );
    let bad_kind: Result<Config, _> = toml::from_str(
        r#"
[[rules]]
name = "x"
on = "pull_request"
"#,
    );
    assert!(bad_kind.is_err());
}

#[test]
fn every_listed_placeholder_resolves_for_a_fixture() {
    let events = [
        (Source::Gogs, fixture(Source::Gogs, "push", "gogs_push")),
        (
            Source::Gogs,
            fixture(Source::Gogs, "pull_request", "gogs_pull_request_merged"),
        ),
        (
            Source::Buildkite,
            fixture(
                Source::Buildkite,
                "build.finished",
                "buildkite_build_finished",
            ),
        ),
        (
            Source::Buildkite,
            fixture(Source::Buildkite, "job.finished", "buildkite_job_finished"),
        ),
    ];
    for (source, e) in &events {
        for name in placeholders(e.kind()) {
            assert!(
                placeholder_value(*source, e, name).is_some(),
                "{} lacks {name}",
                e.kind()
            );
        }
    }
}
