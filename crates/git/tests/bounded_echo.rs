//! Regression: an invalid Git path was echoed whole (10 KB and all) in the
//! error text every caller and the audit log saw.
#![allow(clippy::unwrap_used)]

use latchkey_git::GitRoute;

#[test]
fn route_errors_echo_a_bounded_prefix_of_the_path() {
    let long = "a".repeat(10_000);
    for (path, query) in [
        (
            format!("local/{long}/app.git/info/refs"),
            Some("service=git-upload-pack"),
        ),
        (format!("local/acme/app.git/{long}"), None),
        (format!("local/acme/app.git/objects/{long}"), None),
        (
            "local/acme/app.git/info/refs".to_owned(),
            Some(long.as_str()),
        ),
    ] {
        let query = query.map(|q| {
            if q == long {
                format!("service={long}")
            } else {
                q.to_owned()
            }
        });
        let e = GitRoute::parse(&path, query.as_deref())
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{} bytes: {e}", e.len());
        assert!(e.contains("aaaa"), "{e}");
    }
}
