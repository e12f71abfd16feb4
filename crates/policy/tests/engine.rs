//! Loading, deciding, reloading and policy tests through the public API.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use latchkey_core::{
    Action, Actor, Effect, Intent, Principal, PrincipalKind, ResourceKind, ResourceRef,
};
use latchkey_policy::{
    PolicyEngine, PolicyError, STARTER_ENTITIES, STARTER_TESTS, run_policy_tests,
    starter_policy_files, starter_sources,
};

fn src(name: &str, text: &str) -> Vec<(String, String)> {
    vec![(name.to_owned(), text.to_owned())]
}

fn starter() -> PolicyEngine {
    PolicyEngine::from_sources(&starter_sources(), Some(STARTER_ENTITIES)).unwrap()
}

fn user(id: &str, groups: &[&str]) -> Principal {
    let mut p = Principal::new(PrincipalKind::User, id, "dev");
    p.groups = groups.iter().map(|g| (*g).to_owned()).collect();
    p
}

fn push(refname: &str, op: &str) -> Intent {
    Intent::new(
        Action::GitPush,
        ResourceRef::new(ResourceKind::Ref, format!("local/acme/app:{refname}"))
            .with_parent(ResourceRef::new(ResourceKind::Repository, "local/acme/app")),
    )
    .with("operation", op)
}

fn load_err(policies: &[(String, String)], entities: Option<&str>) -> String {
    PolicyEngine::from_sources(policies, entities)
        .unwrap_err()
        .to_string()
}

#[test]
fn starter_set_loads() {
    let engine = starter();
    assert_eq!(engine.policy_count(), 17);
    assert!(engine.policy_ids().contains(&"protect-main".to_owned()));
    assert_eq!(engine.entity_count(), 6);
    assert_eq!(
        engine.policy_file("protect-main").as_deref(),
        Some("20-git.cedar")
    );
    assert_eq!(starter_policy_files().len(), 6);
}

#[test]
fn allow_names_the_permit() {
    let d = starter().authorize(
        &user("alice", &["developers"]),
        &push("refs/heads/feature", "update"),
    );
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(d.policy_ids, vec!["developers-push"]);
    assert_eq!(d.reason, "allowed by policy `developers-push`");
}

#[test]
fn forbid_names_the_forbid() {
    let d = starter().authorize(
        &user("alice", &["developers"]),
        &push("refs/heads/main", "update"),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.policy_ids, vec!["protect-main"]);
    assert_eq!(d.reason, "denied by policy `protect-main`");
}

#[test]
fn default_deny_has_no_policy() {
    let d = starter().authorize(&user("mallory", &[]), &push("refs/heads/f", "update"));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.policy_ids.is_empty());
    assert_eq!(
        d.reason,
        r#"no policy permits `git.push` on Ref::"local/acme/app:refs/heads/f" (default deny)"#
    );
}

#[test]
fn group_hierarchy_from_entities_applies() {
    // maintainers are developers in the starter entities.json.
    let d = starter().authorize(
        &user("bob", &["maintainers"]),
        &Intent::new(
            Action::GitRead,
            ResourceRef::new(ResourceKind::Repository, "local/acme/app"),
        ),
    );
    assert_eq!(d.policy_ids, vec!["developers-read"]);
}

#[test]
fn configured_principal_parents_are_merged() {
    let entities = r#"[
      {"uid":{"type":"Latchkey::Group","id":"admins"},"attrs":{},"parents":[]},
      {"uid":{"type":"Latchkey::User","id":"root"},"attrs":{"issuer":"configured"},
       "parents":[{"type":"Latchkey::Group","id":"admins"}]}
    ]"#;
    let policies = src(
        "p.cedar",
        r#"@id("admins") permit(principal in Latchkey::Group::"admins", action, resource)
           when { principal.issuer == "dev" };"#,
    );
    let engine = PolicyEngine::from_sources(&policies, Some(entities)).unwrap();
    let intent = Intent::new(
        Action::AdminRead,
        ResourceRef::new(ResourceKind::Gateway, "latchkey"),
    );
    // Parents come from entities.json, the verified issuer wins over the configured one.
    let d = engine.authorize(&user("root", &[]), &intent);
    assert_eq!(d.policy_ids, vec!["admins"], "{}", d.reason);
    assert!(!engine.authorize(&user("other", &[]), &intent).is_allowed());
}

#[test]
fn context_delegation_comes_from_the_principal() {
    let policies = src(
        "p.cedar",
        r#"@id("no-agents") forbid(principal, action, resource) when { context.delegated };
           @id("all") permit(principal, action, resource);"#,
    );
    let engine = PolicyEngine::from_sources(&policies, None).unwrap();
    let intent = Intent::new(
        Action::HttpRequest,
        ResourceRef::new(ResourceKind::App, "grafana"),
    )
    .with("delegated", false);
    let mut p = user("alice", &[]);
    assert!(engine.authorize(&p, &intent).is_allowed());
    p.actor = Some(Actor {
        kind: PrincipalKind::Agent,
        sub: "bot".into(),
        iss: None,
    });
    let d = engine.authorize(&p, &intent);
    assert_eq!(d.policy_ids, vec!["no-agents"]);
}

#[test]
fn failing_forbid_denies() {
    // `method` is required by the schema for http.request; the classifier
    // forgot it, so the forbid cannot be evaluated: it denies (fail closed)
    // even an admin whom `admins-all` permits everything.
    let mut sources = starter_sources();
    sources.push((
        "no-deletes.cedar".to_owned(),
        r#"@id("no-deletes") forbid(principal, action == Latchkey::Action::"http.request", resource)
           when { context.method == "DELETE" };"#
            .to_owned(),
    ));
    let engine = PolicyEngine::from_sources(&sources, Some(STARTER_ENTITIES)).unwrap();
    let intent = Intent::new(
        Action::HttpRequest,
        ResourceRef::new(ResourceKind::App, "gogs"),
    );
    let d = engine.authorize(&user("root", &["admins"]), &intent);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.policy_ids, vec!["no-deletes"]);
    assert!(d.reason.contains("fail closed"), "{}", d.reason);
}

#[test]
fn failing_permit_does_not_allow() {
    let policies = src(
        "p.cedar",
        r#"@id("needs-op") permit(principal, action == Latchkey::Action::"http.request", resource)
           when { context.method == "GET" };"#,
    );
    let engine = PolicyEngine::from_sources(&policies, None).unwrap();
    let intent = Intent::new(
        Action::HttpRequest,
        ResourceRef::new(ResourceKind::App, "gogs"),
    );
    let d = engine.authorize(&user("a", &[]), &intent);
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.policy_ids.is_empty());
    assert!(
        d.reason
            .ends_with("(default deny); policy `needs-op` could not be evaluated"),
        "{}",
        d.reason
    );
}

#[test]
fn service_groups_are_ignored() {
    let engine = starter();
    let mut svc = Principal::new(PrincipalKind::Service, "latchkey", "latchkey");
    svc.groups = vec!["admins".into()];
    let d = engine.authorize(
        &svc,
        &Intent::new(
            Action::AdminWrite,
            ResourceRef::new(ResourceKind::Gateway, "latchkey"),
        ),
    );
    assert!(!d.is_allowed());
}

#[test]
fn bad_syntax_names_the_file() {
    let err = load_err(
        &src("broken.cedar", "@id(\"x\") permit(principal, action"),
        None,
    );
    assert!(
        err.starts_with("cannot parse policy file `broken.cedar`: "),
        "{err}"
    );
}

#[test]
fn unknown_entity_type_is_rejected() {
    let err = load_err(
        &src(
            "a.cedar",
            r#"@id("bad-type") permit(principal in Latchkey::Team::"x", action, resource);"#,
        ),
        None,
    );
    assert!(
        err.starts_with("policy `bad-type` in `a.cedar` does not match the latchkey schema: "),
        "{err}"
    );
    assert!(err.contains("Team"), "{err}");
}

#[test]
fn unknown_attribute_is_rejected() {
    let err = load_err(
        &src(
            "a.cedar",
            r#"@id("ok") permit(principal, action, resource);
               @id("bad-attr") permit(principal, action, resource is Latchkey::Ref) when { resource.branch == "x" };"#,
        ),
        None,
    );
    assert!(err.contains("policy `bad-attr` in `a.cedar`"), "{err}");
}

#[test]
fn missing_id_names_the_policy() {
    let err = load_err(
        &src(
            "a.cedar",
            "@id(\"one\") permit(principal, action, resource);\npermit(principal, action, resource);",
        ),
        None,
    );
    assert_eq!(
        err,
        "policy #2 in `a.cedar` has no `@id(\"...\")` annotation; add one so decisions and audit records can name it (starts with: `permit(principal, action, resource);`)"
    );
}

#[test]
fn duplicate_id_names_both_files() {
    let policies = vec![
        (
            "a.cedar".to_owned(),
            r#"@id("same") permit(principal, action, resource);"#.to_owned(),
        ),
        (
            "b.cedar".to_owned(),
            r#"@id("same") forbid(principal, action, resource);"#.to_owned(),
        ),
    ];
    assert_eq!(
        load_err(&policies, None),
        "policy id `same` is used twice (in `a.cedar` and `b.cedar`); give every policy a unique `@id`"
    );
}

#[test]
fn templates_are_rejected() {
    let err = load_err(
        &src(
            "t.cedar",
            r#"@id("t") permit(principal == ?principal, action, resource);"#,
        ),
        None,
    );
    assert!(err.contains("contains a template"), "{err}");
}

#[test]
fn entities_must_match_the_schema() {
    let policies = src(
        "a.cedar",
        r#"@id("a") permit(principal, action, resource);"#,
    );
    // A user without the required `issuer`.
    let err = load_err(
        &policies,
        Some(r#"[{"uid":{"type":"Latchkey::User","id":"u"},"attrs":{},"parents":[]}]"#),
    );
    assert!(
        err.starts_with("entities file `entities.json` is invalid: "),
        "{err}"
    );
    // An unknown entity type.
    let err = load_err(
        &policies,
        Some(r#"[{"uid":{"type":"Latchkey::Team","id":"t"},"attrs":{},"parents":[]}]"#),
    );
    assert!(
        err.starts_with("entities file `entities.json` is invalid: "),
        "{err}"
    );
    // Not JSON.
    assert!(load_err(&policies, Some("{")).starts_with("entities file"));
}

fn write_dir(dir: &Path, files: &[(&str, &str)]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn load_and_reload_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(&str, &str)> = starter_policy_files();
    files.push(("entities.json", STARTER_ENTITIES));
    files.push(("README.txt", "not a policy"));
    write_dir(dir.path(), &files);
    let engine = PolicyEngine::load(dir.path()).unwrap();
    assert_eq!(engine.policy_count(), 17);
    assert!(
        engine
            .policy_file("protect-main")
            .unwrap()
            .ends_with("20-git.cedar")
    );
    let alice = user("alice", &["developers"]);
    assert!(
        engine
            .authorize(&alice, &push("refs/heads/f", "update"))
            .is_allowed()
    );

    // A broken set is refused and the old one stays in force.
    write_dir(
        dir.path(),
        &[("a.cedar", "@id(\"x\") permit(principal, action, resource)")],
    );
    let err = engine.reload(dir.path()).unwrap_err();
    assert!(matches!(err, PolicyError::Syntax { .. }), "{err}");
    assert_eq!(engine.policy_count(), 17);
    assert!(
        engine
            .authorize(&alice, &push("refs/heads/f", "update"))
            .is_allowed()
    );

    // An empty directory is refused too.
    write_dir(dir.path(), &[]);
    assert!(matches!(
        engine.reload(dir.path()).unwrap_err(),
        PolicyError::NoPolicyFiles { .. }
    ));
    assert_eq!(engine.policy_count(), 17);

    // A good set replaces it.
    write_dir(
        dir.path(),
        &[(
            "a.cedar",
            "@id(\"deny-all\") forbid(principal, action, resource);\n@id(\"admins-all\") permit(principal, action, resource);",
        )],
    );
    let summary = engine.reload(dir.path()).unwrap();
    assert_eq!(summary.policies, 2);
    assert_eq!(summary.entities, 0);
    assert_eq!(summary.added, vec!["deny-all"]);
    assert_eq!(summary.removed.len(), 16);
    let d = engine.authorize(&alice, &push("refs/heads/f", "update"));
    assert_eq!(d.policy_ids, vec!["deny-all"]);
}

#[test]
fn missing_directory_is_an_io_error() {
    let err = PolicyEngine::load(Path::new("/nonexistent/latchkey-policies")).unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read `/nonexistent/latchkey-policies`")
    );
}

#[test]
fn engine_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
}

#[test]
fn policy_tests_report_each_row() {
    let engine = starter();
    let report = run_policy_tests(&engine, STARTER_TESTS).unwrap();
    assert!(report.all_passed(), "{report}");

    let file = r#"
[[case]]
name = "passes"
principal = { kind = "user", id = "alice", groups = ["developers"] }
action = "git.push"
resource = { kind = "Ref", id = "local/acme/app:refs/heads/feature" }
context = { operation = "update" }
expect = "allow"

[[case]]
name = "wrong effect"
principal = { kind = "user", id = "alice", groups = ["developers"] }
action = "git.push"
resource = { kind = "Ref", id = "local/acme/app:refs/heads/main" }
context = { operation = "update" }
expect = "allow"

[[case]]
name = "wrong policies"
principal = { kind = "user", id = "alice", groups = ["developers"] }
action = "git.push"
resource = { kind = "Ref", id = "local/acme/app:refs/heads/f" }
context = { operation = "update" }
expect = "allow"
expect_policies = ["admins-all"]
"#;
    let report = run_policy_tests(&engine, file).unwrap();
    assert_eq!((report.passed(), report.failed()), (1, 2));
    let failures: Vec<String> = report.failures().map(|c| c.to_string()).collect();
    assert_eq!(
        failures[0],
        "FAIL  #2 wrong effect: expected allow, got deny by `protect-main` (denied by policy `protect-main`)"
    );
    assert_eq!(
        failures[1],
        "FAIL  #3 wrong policies: expected allow by `admins-all`, got allow by `developers-push` (allowed by policy `developers-push`)"
    );
    assert!(report.to_string().ends_with("1 passed, 2 failed"));
}

#[test]
fn malformed_test_files_are_errors() {
    let engine = starter();
    let err = run_policy_tests(&engine, "[[case]]\nname = 1").unwrap_err();
    assert!(matches!(err, PolicyError::TestFile { .. }));
    let typo = r#"
[[case]]
name = "typo"
principal = { kind = "user", id = "a" }
action = "git.push"
resource = { kind = "Ref", id = "r:refs/heads/x" }
expct = "allow"
"#;
    let err = run_policy_tests(&engine, typo).unwrap_err().to_string();
    assert!(err.contains("expct"), "{err}");
    assert!(run_policy_tests(&engine, "").is_err());
}

fn scoped(p: Principal, scopes: &[&str]) -> Principal {
    Principal {
        scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
        ..p
    }
}

/// An intent for every action, on a resource of a kind it applies to.
fn every_action() -> Vec<Intent> {
    Action::ALL
        .into_iter()
        .map(|a| {
            let resource = match a {
                Action::GitRead => ResourceRef::new(ResourceKind::Repository, "local/acme/app"),
                Action::GitPush => {
                    return push("refs/heads/feature", "update");
                }
                Action::DocumentGet
                | Action::DocumentUpdate
                | Action::DocumentDelete
                | Action::DocumentCreate => {
                    ResourceRef::new(ResourceKind::Document, "staging/flags/checkout")
                }
                Action::DocumentList | Action::DocumentQuery | Action::DocumentListen => {
                    ResourceRef::new(ResourceKind::Collection, "staging/flags")
                }
                Action::TokenMint => ResourceRef::new(ResourceKind::Audience, "git"),
                Action::HttpRequest => {
                    return Intent::new(a, ResourceRef::new(ResourceKind::App, "grafana"))
                        .with("method", "GET")
                        .with("path", "/");
                }
                Action::TokenRevoke
                | Action::TokenIntrospect
                | Action::AdminRead
                | Action::AdminWrite => ResourceRef::new(ResourceKind::Gateway, "latchkey"),
            };
            Intent::new(a, resource)
        })
        .collect()
}

/// A web request's method decides its scope: `read` covers GET, HEAD and
/// OPTIONS, anything else (and a request without a method) needs `write`.
#[test]
fn http_request_scope_follows_the_method() {
    let engine = starter();
    let root = scoped(user("root", &["admins"]), &["read"]);
    let app = || ResourceRef::new(ResourceKind::App, "gogs");
    for (method, effect) in [
        ("GET", Effect::Allow),
        ("HEAD", Effect::Allow),
        ("OPTIONS", Effect::Allow),
        ("POST", Effect::Deny),
        ("DELETE", Effect::Deny),
        ("get", Effect::Deny),
    ] {
        let intent = Intent::new(Action::HttpRequest, app())
            .with("method", method)
            .with("path", "/");
        let d = engine.authorize(&root, &intent);
        assert_eq!(d.effect, effect, "{method}: {}", d.reason);
        if effect == Effect::Deny {
            assert!(d.reason.contains("needs scope `write`"), "{}", d.reason);
        }
    }
}

/// The class behind the `scope=read` push: for every action, an admin
/// (whom policy permits everything) with a token scoped `read` may do
/// exactly the reads; `write` may do everything; a scope Latchkey does not
/// enforce, nothing but what needs no scope; no scopes at all, everything.
#[test]
fn scopes_narrow_every_action_whatever_policy_permits() {
    let engine = starter();
    let root = user("root", &["admins"]);
    for intent in every_action() {
        let a = intent.action;
        let d = engine.authorize(&root, &intent);
        assert_eq!(d.effect, Effect::Allow, "{a}: {}", d.reason);
        let d = engine.authorize(&scoped(root.clone(), &["write"]), &intent);
        assert_eq!(d.effect, Effect::Allow, "{a} with write: {}", d.reason);

        let read = engine.authorize(&scoped(root.clone(), &["read"]), &intent);
        let custom = engine.authorize(&scoped(root.clone(), &["deploy"]), &intent);
        match intent.required_scope() {
            Some(latchkey_core::Scope::Read) => {
                assert_eq!(read.effect, Effect::Allow, "{a} with read: {}", read.reason);
                assert_eq!(custom.effect, Effect::Deny, "{a} with deploy");
                assert!(
                    custom.reason.contains("needs scope `read`"),
                    "{}",
                    custom.reason
                );
            }
            Some(latchkey_core::Scope::Write) => {
                assert_eq!(read.effect, Effect::Deny, "{a} with read");
                assert!(read.policy_ids.is_empty());
                assert!(
                    read.reason.starts_with(&format!("`{a}` on "))
                        && read.reason.contains(
                            "needs scope `write`; the token carries only `read` \
                             (request a token with `scope=write`)"
                        ),
                    "{}",
                    read.reason
                );
            }
            None => {
                assert_eq!(read.effect, Effect::Allow, "{a} needs no scope");
                assert_eq!(custom.effect, Effect::Allow, "{a} needs no scope");
            }
        }
        // The unindexed path decides the same.
        let unindexed = engine.authorize_unindexed(&scoped(root.clone(), &["read"]), &intent);
        assert_eq!(unindexed.effect, read.effect, "{a}");
    }
}

#[test]
fn policies_see_the_token_scopes_in_context() {
    let policies = src(
        "p.cedar",
        r#"@id("deploy-pushes")
permit (principal, action == Latchkey::Action::"git.push", resource)
when { context has scopes && context.scopes.contains("deploy") };"#,
    );
    let engine = PolicyEngine::from_sources(&policies, None).unwrap();
    let alice = user("alice", &[]);
    let intent = push("refs/heads/feature", "update");
    let d = engine.authorize(&scoped(alice.clone(), &["write", "deploy"]), &intent);
    assert_eq!(d.effect, Effect::Allow, "{}", d.reason);
    assert_eq!(d.policy_ids, vec!["deploy-pushes"]);
    let d = engine.authorize(&scoped(alice.clone(), &["write"]), &intent);
    assert_eq!(d.effect, Effect::Deny);
    // No scopes: `context has scopes` is false.
    assert_eq!(engine.authorize(&alice, &intent).effect, Effect::Deny);
}
