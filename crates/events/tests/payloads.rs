//! Every fixture parses into the expected normalized event; unknown events,
//! malformed JSON, missing fields and hostile bodies get typed errors.
#![allow(clippy::unwrap_used)]

use latchkey_events::{
    BuildFinished, CommitSummary, Event, JobFinished, MAX_PAYLOAD_BYTES, Person, PullRequestMerged,
    Push, Source, WebhookError, parse_event,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(source: Source, event: &str, name: &str) -> Event {
    parse_event(source, event, &fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: ignored"))
}

fn person(login: &str, email: Option<&str>) -> Person {
    Person {
        login: login.into(),
        email: email.map(Into::into),
    }
}

#[test]
fn gogs_push() {
    let e = parse(Source::Gogs, "push", "gogs_push");
    assert_eq!(
        e,
        Event::Push(Push {
            repository: "acme/payments".into(),
            ref_name: "refs/heads/main".into(),
            before: "5c1f0e7a9d2b3c4e5f60718293a4b5c6d7e8f901".into(),
            after: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d".into(),
            commits: vec![CommitSummary {
                id: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d".into(),
                message: "Raise refund limit for EU merchants".into(),
                author_email: Some("dana@acme.test".into()),
            }],
            pusher: person("dana", Some("dana@acme.test")),
        })
    );
    assert_eq!(e.commit(), "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d");
    assert_eq!(e.repository(), Some("acme/payments"));
    assert_eq!(e.ref_name(), "refs/heads/main");
    assert_eq!(e.actor().map(|p| p.login.as_str()), Some("dana"));
}

#[test]
fn gogs_pull_request_merged() {
    let e = parse(Source::Gogs, "pull_request", "gogs_pull_request_merged");
    assert_eq!(
        e,
        Event::PullRequestMerged(PullRequestMerged {
            repository: "acme/payments".into(),
            number: 41,
            base_ref: "refs/heads/main".into(),
            merge_commit: "4b3a2f1e0d9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c".into(),
            merged_by: person("dana", Some("dana@acme.test")),
            author: person("lee", Some("lee@acme.test")),
        })
    );
    assert_eq!(e.actor().map(|p| p.login.as_str()), Some("dana"));
}

#[test]
fn gitea_push_creating_a_branch() {
    let Event::Push(p) = parse(Source::Gitea, "push", "gitea_push") else {
        panic!("not a push")
    };
    assert_eq!(p.repository, "acme/ledger");
    assert_eq!(p.ref_name, "refs/heads/release/2.4");
    assert_eq!(p.before, "0".repeat(40));
    assert!(!p.is_delete());
    assert_eq!(p.commits.len(), 2);
    assert_eq!(p.commits[1].author_email, None, "an empty e-mail is absent");
    assert_eq!(p.pusher, person("sam", Some("sam@acme.test")));
}

#[test]
fn gitea_pull_request_merged() {
    let e = parse(Source::Gitea, "pull_request", "gitea_pull_request_merged");
    assert_eq!(
        e,
        Event::PullRequestMerged(PullRequestMerged {
            repository: "acme/ledger".into(),
            number: 7,
            base_ref: "refs/heads/main".into(),
            merge_commit: "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".into(),
            merged_by: person("sam", Some("sam@acme.test")),
            author: person("ana", Some("ana@acme.test")),
        })
    );
}

#[test]
fn github_push() {
    let Event::Push(p) = parse(Source::GitHub, "push", "github_push") else {
        panic!("not a push")
    };
    assert_eq!(p.repository, "acme/portal");
    assert_eq!(p.after, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    // GitHub's pusher carries the login as `name`.
    assert_eq!(p.pusher, person("kimlau", Some("kim@acme.test")));
    assert_eq!(
        p.commits[0].message,
        "Enable checkout-v2 flag for 10% of traffic"
    );
}

#[test]
fn github_pull_request_merged() {
    let e = parse(Source::GitHub, "pull_request", "github_pull_request_merged");
    assert_eq!(
        e,
        Event::PullRequestMerged(PullRequestMerged {
            repository: "acme/portal".into(),
            number: 2,
            base_ref: "refs/heads/main".into(),
            merge_commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
            merged_by: person("rio", None),
            author: person("kimlau", None),
        })
    );
}

#[test]
fn buildkite_build_finished() {
    let e = parse(
        Source::Buildkite,
        "build.finished",
        "buildkite_build_finished",
    );
    assert_eq!(
        e,
        Event::BuildFinished(BuildFinished {
            pipeline: "payments-deploy".into(),
            organization: "acme-inc".into(),
            build_number: 1187,
            commit: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d".into(),
            branch: "main".into(),
            state: "failed".into(),
            failed: true,
        })
    );
    assert_eq!(e.repository(), None);
    assert_eq!(e.ref_name(), "refs/heads/main");
    assert_eq!(e.pipeline(), Some("payments-deploy"));
    assert_eq!(e.actor(), None);
    let ctx = e.audit_context();
    assert_eq!(ctx["event"], "build_finished");
    assert_eq!(ctx["pipeline"], "payments-deploy");
    assert_eq!(ctx["organization"], "acme-inc");
    assert_eq!(ctx["build"], 1187);
    assert_eq!(ctx["state"], "failed");
    assert_eq!(ctx["commit"], "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d");
    assert!(!ctx.contains_key("repository"));
}

#[test]
fn buildkite_job_finished() {
    let e = parse(Source::Buildkite, "job.finished", "buildkite_job_finished");
    assert_eq!(
        e,
        Event::JobFinished(JobFinished {
            job_id: "0193a3f7-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            pipeline: "payments-deploy".into(),
            organization: "acme-inc".into(),
            build_number: 1188,
            commit: "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d".into(),
            branch: "main".into(),
            step_key: Some("deploy".into()),
            state: "passed".into(),
        })
    );
    let ctx = e.audit_context();
    assert_eq!(ctx["job_id"], "0193a3f7-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(ctx["build"], 1188);
}

#[test]
fn git_audit_context() {
    let e = parse(Source::Gogs, "pull_request", "gogs_pull_request_merged");
    let ctx = e.audit_context();
    assert_eq!(ctx["event"], "pull_request_merged");
    assert_eq!(ctx["repository"], "acme/payments");
    assert_eq!(ctx["ref"], "refs/heads/main");
    assert_eq!(ctx["commit"], "4b3a2f1e0d9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c");
    assert_eq!(ctx["actor"], "dana");
    assert_eq!(ctx["actor_email"], "dana@acme.test");
    assert_eq!(ctx["pull_request"], 41);
}

#[test]
fn ignored_deliveries() {
    assert_eq!(
        parse_event(Source::GitHub, "ping", &fixture("github_ping")),
        Ok(None)
    );
    assert_eq!(
        parse_event(Source::Buildkite, "ping", &fixture("buildkite_ping")),
        Ok(None)
    );
    assert_eq!(
        parse_event(
            Source::GitHub,
            "pull_request",
            &fixture("github_pull_request_opened")
        ),
        Ok(None)
    );
    // A closed-but-unmerged pull request is not a merge.
    let closed = br#"{"action":"closed","number":9,"pull_request":{"merged":false},"repository":{"full_name":"a/b"}}"#;
    assert_eq!(parse_event(Source::Gitea, "pull_request", closed), Ok(None));
}

#[test]
fn unknown_events_are_refused() {
    for (source, event) in [
        (Source::Gogs, "issues"),
        (Source::Gitea, "release"),
        (Source::GitHub, "workflow_run"),
        (Source::Buildkite, "build.scheduled"),
        (Source::Buildkite, "agent.connected"),
        (Source::Buildkite, "push"),
        (Source::GitHub, "build.finished"),
        (Source::GitHub, ""),
    ] {
        let err = parse_event(source, event, b"{}").unwrap_err();
        assert!(
            matches!(err, WebhookError::UnknownEvent { .. }),
            "{source} {event}: {err}"
        );
        assert_eq!(err.status(), 422);
    }
    let err = parse_event(Source::GitHub, "issues", b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "event `issues` from github is not handled; subscribe the webhook only to `push` and `pull_request` (and `ping`)"
    );
}

#[test]
fn malformed_json_is_refused() {
    for body in [
        &b""[..],
        b"not json",
        b"{\"ref\":",
        b"[1,2,3]",
        b"{\"ref\": 5}",
        b"\xff\xfe",
    ] {
        let err = parse_event(Source::Gogs, "push", body).unwrap_err();
        assert!(
            matches!(err, WebhookError::MalformedJson { .. }),
            "{body:?}: {err}"
        );
        assert_eq!(err.status(), 400);
    }
    let err = parse_event(Source::Gogs, "push", b"{\"ref\": 5}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the webhook body is not valid JSON for a `push` event: unexpected value at line 1 column 9; send `Content-Type: application/json` deliveries"
    );
}

#[test]
fn missing_fields_are_named() {
    let cases: Vec<(Source, &str, &str, &str)> = vec![
        (Source::Gogs, "push", "{}", "repository.full_name"),
        (
            Source::Gogs,
            "push",
            r#"{"repository":{"full_name":"a/b"}}"#,
            "ref",
        ),
        (
            Source::GitHub,
            "push",
            r#"{"repository":{"full_name":"a/b"},"ref":"refs/heads/x","before":"1","after":"2"}"#,
            "pusher",
        ),
        (
            Source::GitHub,
            "pull_request",
            r#"{"action":"closed","number":1,"repository":{"full_name":"a/b"},"pull_request":{"merged":true,"base":{"ref":"main"},"user":{"login":"u"}}}"#,
            "pull_request.merge_commit_sha",
        ),
        (
            Source::Buildkite,
            "build.finished",
            r#"{"event":"build.finished"}"#,
            "pipeline",
        ),
        (
            Source::Buildkite,
            "build.finished",
            r#"{"event":"build.finished","pipeline":{"slug":"p"},"build":{"number":1,"state":"passed","commit":"c","branch":"b"}}"#,
            "pipeline.url",
        ),
        (
            Source::Buildkite,
            "job.finished",
            r#"{"event":"job.finished","pipeline":{"slug":"p","url":"https://api.buildkite.com/v2/organizations/o/pipelines/p"},"build":{"number":1,"commit":"c","branch":"b"}}"#,
            "job",
        ),
        (
            Source::Buildkite,
            "build.finished",
            r#"{"build":{}}"#,
            "event",
        ),
    ];
    for (source, event, body, field) in cases {
        let err = parse_event(source, event, body.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            WebhookError::MissingField {
                event: event.into(),
                field
            },
            "{source} {event}"
        );
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn buildkite_body_event_must_match_the_header() {
    let body = fixture("buildkite_build_finished");
    let err = parse_event(Source::Buildkite, "job.finished", &body).unwrap_err();
    assert_eq!(
        err,
        WebhookError::EventMismatch {
            header: "job.finished".into(),
            body: "build.finished".into()
        }
    );
    assert_eq!(err.status(), 400);
}

#[test]
fn hostile_bodies_fail_gracefully() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = parse_event(Source::GitHub, "push", deep.as_bytes()).unwrap_err();
    assert!(matches!(err, WebhookError::PayloadTooDeep { .. }), "{err}");
    let nested_inside = format!(
        r#"{{"ref":"refs/heads/x","junk":{}{}}}"#,
        "{\"a\":".repeat(50),
        "1".to_owned() + &"}".repeat(50)
    );
    assert!(matches!(
        parse_event(Source::GitHub, "push", nested_inside.as_bytes()),
        Err(WebhookError::PayloadTooDeep { .. })
    ));
    let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    let err = parse_event(Source::Buildkite, "build.finished", &huge).unwrap_err();
    assert!(matches!(err, WebhookError::PayloadTooLarge { .. }));
    assert_eq!(err.status(), 413);
    // Duplicate keys are refused rather than resolved either way.
    let dup = br#"{"action":"closed","action":"opened"}"#;
    assert!(matches!(
        parse_event(Source::Gitea, "pull_request", dup),
        Err(WebhookError::MalformedJson { .. })
    ));
}

#[test]
fn long_commit_messages_are_cut_to_one_line() {
    let msg = "x".repeat(5000);
    let body = format!(
        r#"{{"ref":"refs/heads/m","before":"a","after":"b","repository":{{"full_name":"o/r"}},"pusher":{{"login":"u"}},"commits":[{{"id":"b","message":"{msg}\nsecond"}}]}}"#
    );
    let Some(Event::Push(p)) = parse_event(Source::Gitea, "push", body.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(p.commits[0].message.len(), 200);
}

#[test]
fn repository_name_falls_back_to_owner_and_name() {
    let body = br#"{"ref":"refs/heads/m","before":"a","after":"b","repository":{"name":"r","owner":{"username":"o"}},"sender":{"login":"u"}}"#;
    let Some(Event::Push(p)) = parse_event(Source::Gogs, "push", body).unwrap() else {
        panic!()
    };
    assert_eq!(p.repository, "o/r");
    assert_eq!(p.pusher.login, "u", "sender stands in for a missing pusher");
}
