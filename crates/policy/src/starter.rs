//! The starter policy set used by `latchkey dev`.

/// The starter entities file (`entities.json`): the `admins`, `developers`
/// and `maintainers` groups (maintainers are developers), the `git` and
/// `documents` audiences and the gateway.
pub const STARTER_ENTITIES: &str = include_str!("../starter/entities.json");

/// Policy tests for the starter set, in the [`crate::run_policy_tests`] format.
pub const STARTER_TESTS: &str = include_str!("../starter/tests.toml");

/// The starter policy files as `(file name, text)`, for `latchkey dev` to
/// write into its sandbox: admins may do everything; users may mint `git`
/// and `documents` tokens, workloads `git` tokens; developers may read every
/// repository and push branches; `protect-main` and `protect-tags` keep main
/// and tag creation/deletion to maintainers and admins; webhook rules may
/// freeze and revoke CI pipelines and jobs; developers may use web apps
/// and write to repositories through a Git web app.
pub fn starter_policy_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "00-admins.cedar",
            include_str!("../starter/00-admins.cedar"),
        ),
        (
            "10-tokens.cedar",
            include_str!("../starter/10-tokens.cedar"),
        ),
        ("20-git.cedar", include_str!("../starter/20-git.cedar")),
        (
            "30-documents.cedar",
            include_str!("../starter/30-documents.cedar"),
        ),
        ("40-rules.cedar", include_str!("../starter/40-rules.cedar")),
        ("50-apps.cedar", include_str!("../starter/50-apps.cedar")),
    ]
}

/// The starter policy files in the owned form [`crate::PolicyEngine::from_sources`] takes.
pub fn starter_sources() -> Vec<(String, String)> {
    starter_policy_files()
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}
