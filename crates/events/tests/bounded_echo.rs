//! Regression: webhook errors echo caller input; it must be bounded.
#![allow(clippy::unwrap_used)]

use latchkey_events::WebhookError;

#[test]
fn webhook_errors_echo_a_bounded_prefix() {
    let long = "w".repeat(10_000);
    for e in [
        WebhookError::UnknownSource {
            source_name: long.clone(),
        },
        WebhookError::UnknownEvent {
            event: long.clone(),
            source_name: "gogs",
            expected: "push",
        },
        WebhookError::EventMismatch {
            header: long.clone(),
            body: long.clone(),
        },
        WebhookError::MalformedJson {
            event: long.clone(),
            detail: long.clone(),
        },
        WebhookError::MissingField {
            event: long.clone(),
            field: "after",
        },
    ] {
        let text = e.to_string();
        assert!(text.len() < 700, "{} bytes: {text}", text.len());
        assert!(text.contains("wwww"), "{text}");
    }
}
