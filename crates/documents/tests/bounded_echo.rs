//! Regression: Firestore names in error texts are caller input; a name of
//! kilobytes must not be echoed whole.
#![allow(clippy::unwrap_used)]

use http::Method as H;
use latchkey_documents::{ClassifyOptions, FieldPath, ResourceName, RestCall, classify_rest};

#[test]
fn name_and_route_errors_echo_a_bounded_prefix() {
    // Each id within Firestore's 1500-byte limit, the name 10 KB long.
    let long = vec!["n".repeat(1400); 7].join("/");
    let texts = [
        ResourceName::parse(&format!("projects/{long}/databases"))
            .unwrap_err()
            .to_string(),
        ResourceName::parse(&format!("projects/p/databases/d/documents/{long}//x"))
            .unwrap_err()
            .to_string(),
        ResourceName::parse(&format!(
            "projects/p/databases/d/documents/a/__{}__",
            "n".repeat(1400)
        ))
        .unwrap_err()
        .to_string(),
        FieldPath::parse(&format!("a..{long}"))
            .unwrap_err()
            .to_string(),
        RestCall::parse(&H::GET, &format!("/v1/{long}"), None)
            .and_then(|c| classify_rest(&c, b"", &ClassifyOptions::NONE))
            .unwrap_err()
            .to_string(),
    ];
    for text in texts {
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        assert!(text.contains("nnnn"), "{text}");
    }
}
