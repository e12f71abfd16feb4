//! Feeds arbitrary bytes to the webhook parsers: the first byte picks a
//! (source, event type), the rest is the body. Nothing may panic; whatever
//! parses must survive the rules and the audit context; the signature-header
//! parsers and the full verification see the same bytes as header values.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use latchkey_events::{
    Rule, Source, delivery_id, evaluate, parse_buildkite_signature, parse_event,
    parse_github_signature, parse_hex_signature, verify_signature,
};
use libfuzzer_sys::fuzz_target;

const CASES: [(Source, &str); 12] = [
    (Source::Gogs, "push"),
    (Source::Gogs, "pull_request"),
    (Source::Gitea, "push"),
    (Source::Gitea, "pull_request"),
    (Source::GitHub, "push"),
    (Source::GitHub, "pull_request"),
    (Source::GitHub, "ping"),
    (Source::Buildkite, "build.finished"),
    (Source::Buildkite, "job.finished"),
    (Source::Buildkite, "ping"),
    (Source::GitHub, "issues"),
    (Source::Buildkite, "build.scheduled"),
];

const RULES: &str = r#"
[[rules]]
name = "push"
on = "push"
ref = "refs/heads/*"
[rules.write_document]
path = "pushes/{repository}/refs/{ref}"
fields = { by = "{pusher.login}", email = "{pusher.email}", commit = "{commit}" }

[[rules]]
name = "merge"
on = "pull_request_merged"
[rules.write_document]
path = "approvals/{merge_commit}"
fields = { by = "{merged_by.email}", pr = "{repository}#{number}" }

[[rules]]
name = "build"
on = "build_finished"
state = "fail*"
freeze_pipeline = true

[[rules]]
name = "job"
on = "job_finished"
revoke_job = true
[rules.write_document]
path = "jobs/{job_id}"
fields = { step = "{step_key}" }
"#;

#[derive(serde::Deserialize)]
struct Config {
    rules: Vec<Rule>,
}

fn rules() -> Option<&'static [Rule]> {
    static RULES_PARSED: OnceLock<Option<Vec<Rule>>> = OnceLock::new();
    RULES_PARSED
        .get_or_init(|| toml::from_str::<Config>(RULES).ok().map(|c| c.rules))
        .as_deref()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (source, event) = CASES[usize::from(selector) % CASES.len()];

    if let Ok(Some(parsed)) = parse_event(source, event, body) {
        let _ = parsed.audit_context();
        let _ = parsed.ref_name();
        if let Some(rules) = rules() {
            for planned in evaluate(rules, source, &parsed).into_iter().flatten() {
                if let latchkey_events::ActionKind::WriteDocument { path, .. } = planned.action {
                    // Placeholder values are one segment each: the rule's
                    // literal slashes fix the segment count.
                    assert!(!path.contains("//"));
                }
            }
        }
    }

    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let _ = parse_buildkite_signature(text);
    let _ = parse_github_signature(text);
    let _ = parse_hex_signature("X-Gogs-Signature", text);
    for source in Source::ALL {
        let headers = [
            ("X-Gogs-Signature", text),
            ("X-Gitea-Signature", text),
            ("X-Hub-Signature-256", text),
            ("X-Buildkite-Signature", text),
            ("X-Buildkite-Token", text),
            ("X-GitHub-Delivery", text),
            ("X-Gogs-Delivery", text),
            ("X-Gitea-Delivery", text),
        ];
        let verified = verify_signature(
            source,
            b"fuzz-secret",
            &headers,
            body,
            1_700_000_000,
            Duration::from_secs(300),
        );
        assert!(
            verified.is_err() || text.trim() == "fuzz-secret",
            "forged: {text:?}"
        );
        let _ = delivery_id(source, &headers, body);
    }
});
