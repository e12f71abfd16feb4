//! Unit tests that need the crate's internals.

use cedar_policy::{Entities, Request};
use latchkey_core::{
    Action, Actor, CiClaims, Intent, Principal, PrincipalKind, ResourceKind, ResourceRef,
};

use crate::engine::{Loaded, PRINCIPAL_KINDS, RESOURCE_KINDS, action_index, statics};
use crate::request::{self, context_keys};
use crate::{PolicyEngine, STARTER_ENTITIES, STARTER_TESTS, run_policy_tests, starter_sources};

fn resource_for(action: Action) -> ResourceRef {
    let repo = ResourceRef::new(ResourceKind::Repository, "local/acme/app");
    match action {
        Action::GitRead => repo,
        Action::GitPush => {
            ResourceRef::new(ResourceKind::Ref, "local/acme/app:refs/heads/main").with_parent(repo)
        }
        Action::DocumentList | Action::DocumentQuery | Action::DocumentListen => {
            ResourceRef::new(ResourceKind::Collection, "prod/flags")
                .with_parent(ResourceRef::new(ResourceKind::Environment, "prod"))
        }
        Action::DocumentGet
        | Action::DocumentCreate
        | Action::DocumentUpdate
        | Action::DocumentDelete => ResourceRef::new(ResourceKind::Document, "prod/flags/x")
            .with_parent(
                ResourceRef::new(ResourceKind::Collection, "prod/flags")
                    .with_parent(ResourceRef::new(ResourceKind::Environment, "prod")),
            ),
        Action::TokenMint => ResourceRef::new(ResourceKind::Audience, "git"),
        Action::TokenRevoke | Action::TokenIntrospect | Action::AdminRead | Action::AdminWrite => {
            ResourceRef::new(ResourceKind::Gateway, "latchkey")
        }
        Action::HttpRequest => ResourceRef::new(ResourceKind::App, "grafana"),
    }
}

fn full_principal(kind: PrincipalKind) -> Principal {
    let mut p = Principal::new(kind, "p1", "https://issuer.example");
    p.groups = vec!["developers".into(), "unconfigured".into()];
    p.email = Some("p1@example.com".into());
    p.ci = CiClaims {
        system: Some("buildkite".into()),
        pipeline: Some("app".into()),
        build: Some("7".into()),
        job_id: Some("j".into()),
        branch: Some("main".into()),
        commit: Some("abc".into()),
        step: Some("test".into()),
        environment: Some("prod".into()),
    };
    p.actor = Some(Actor {
        kind: PrincipalKind::Agent,
        sub: "bot".into(),
        iss: None,
    });
    p.attributes.insert("extra".into(), "dropped".into());
    p
}

/// Everything the request builder produces conforms to the schema.
#[test]
fn built_requests_match_the_schema() {
    let s = statics().unwrap();
    let loaded = Loaded::from_sources(
        &starter_sources(),
        Some(("entities.json", STARTER_ENTITIES)),
    )
    .unwrap();
    for action in Action::ALL {
        for kind in PRINCIPAL_KINDS {
            let mut intent = Intent::new(action, resource_for(action))
                .with("request_id", "r1")
                .with("delegated", false)
                .with("unknown", "dropped");
            for (k, _) in context_keys(action) {
                intent = intent.with(*k, "create");
            }
            let principal = full_principal(kind);
            let built = request::build(&loaded, &principal, &intent).unwrap();
            let entities: Vec<_> = built.entities.iter().cloned().collect();
            Entities::from_entities(entities, Some(&s.schema))
                .unwrap_or_else(|e| panic!("{action} {kind}: {e}"));
            Request::new(
                built.principal,
                s.action_uids[action_index(action)].clone(),
                built.resource,
                built.context,
                Some(&s.schema),
            )
            .unwrap_or_else(|e| panic!("{action} {kind}: {e}"));
        }
    }
}

#[test]
fn action_index_follows_all() {
    for (i, a) in Action::ALL.into_iter().enumerate() {
        assert_eq!(action_index(a), i);
    }
}

#[test]
fn starter_tests_pass() {
    let engine = PolicyEngine::from_sources(&starter_sources(), Some(STARTER_ENTITIES)).unwrap();
    let report = run_policy_tests(&engine, STARTER_TESTS).unwrap();
    assert!(report.all_passed(), "{report}");
    assert!(report.cases.len() >= 15);
}

/// A small deterministic generator (no new dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() as usize) % items.len()]
    }
}

const GROUPS: [&str; 5] = ["admins", "developers", "maintainers", "ops", "eng"];

fn generated_policies(n: usize, rng: &mut Lcg) -> String {
    let mut out = String::new();
    for i in 0..n {
        let effect = if rng.next().is_multiple_of(4) {
            "forbid"
        } else {
            "permit"
        };
        let a1 = rng.pick(&Action::ALL).as_str();
        let a2 = rng.pick(&Action::ALL).as_str();
        let action = match rng.next() % 4 {
            0 => "action".to_owned(),
            1 | 2 => format!("action == Latchkey::Action::\"{a1}\""),
            _ => format!("action in [Latchkey::Action::\"{a1}\", Latchkey::Action::\"{a2}\"]"),
        };
        let g = rng.pick(&GROUPS);
        let principal = match rng.next() % 6 {
            0 => "principal".to_owned(),
            1 | 2 => format!("principal in Latchkey::Group::\"{g}\""),
            3 => "principal == Latchkey::User::\"u1\"".to_owned(),
            4 => format!("principal is Latchkey::Workload in Latchkey::Group::\"{g}\""),
            _ => "principal is Latchkey::Agent".to_owned(),
        };
        let (resource, cond) = match rng.next() % 7 {
            0 => ("resource".to_owned(), String::new()),
            1 => (
                "resource is Latchkey::Ref".to_owned(),
                "when { resource.kind == \"branch\" }".to_owned(),
            ),
            2 => (
                "resource == Latchkey::Audience::\"git\"".to_owned(),
                String::new(),
            ),
            3 => (
                "resource in Latchkey::Repository::\"local/acme/r1\"".to_owned(),
                String::new(),
            ),
            4 => (
                "resource is Latchkey::Document in Latchkey::Collection::\"c1\"".to_owned(),
                "when { resource.path like \"c1/*\" }".to_owned(),
            ),
            5 => (
                "resource is Latchkey::Repository".to_owned(),
                "when { resource.owner == \"acme\" }".to_owned(),
            ),
            _ => (
                "resource".to_owned(),
                format!("unless {{ context.delegated || principal in Latchkey::Group::\"{g}\" }}"),
            ),
        };
        out.push_str(&format!(
            "@id(\"p{i}\")\n{effect}({principal}, {action}, {resource}) {cond};\n"
        ));
    }
    out
}

fn generated_entities() -> String {
    let mut list = Vec::new();
    for g in GROUPS {
        let parents = if g == "developers" || g == "ops" {
            r#"[{"type":"Latchkey::Group","id":"eng"}]"#
        } else {
            "[]"
        };
        list.push(format!(
            r#"{{"uid":{{"type":"Latchkey::Group","id":"{g}"}},"attrs":{{}},"parents":{parents}}}"#
        ));
    }
    list.push(r#"{"uid":{"type":"Latchkey::User","id":"u2"},"attrs":{"issuer":"x"},"parents":[{"type":"Latchkey::Group","id":"admins"}]}"#.to_owned());
    list.push(r#"{"uid":{"type":"Latchkey::Repository","id":"local/acme/r1"},"attrs":{"upstream":"local","owner":"acme","name":"r1"},"parents":[]}"#.to_owned());
    format!("[{}]", list.join(","))
}

fn random_intent(rng: &mut Lcg) -> Intent {
    let action = *rng.pick(&Action::ALL);
    // Mostly the resource kind the schema expects, sometimes any kind.
    let resource = if rng.next().is_multiple_of(5) {
        let kind = *rng.pick(&RESOURCE_KINDS);
        ResourceRef::new(
            kind,
            *rng.pick(&[
                "git",
                "c1/x",
                "local/acme/r1",
                "local/acme/r1:refs/heads/main",
            ]),
        )
    } else {
        match action {
            Action::GitPush => {
                let r = rng.pick(&["r1", "r2"]);
                let name = rng.pick(&["refs/heads/main", "refs/tags/v1", "refs/heads/f"]);
                ResourceRef::new(ResourceKind::Ref, format!("local/acme/{r}:{name}"))
            }
            Action::DocumentGet | Action::DocumentUpdate => {
                let c = rng.pick(&["c1", "c2"]);
                ResourceRef::new(ResourceKind::Document, format!("{c}/doc"))
                    .with_parent(ResourceRef::new(ResourceKind::Collection, *c))
            }
            Action::TokenMint => {
                ResourceRef::new(ResourceKind::Audience, *rng.pick(&["git", "documents"]))
            }
            _ => resource_for(action),
        }
    };
    let mut intent = Intent::new(action, resource);
    if rng.next().is_multiple_of(2) {
        intent = intent.with("operation", "update");
    }
    intent
}

fn random_principal(rng: &mut Lcg) -> Principal {
    let kind = *rng.pick(&PRINCIPAL_KINDS);
    let id = rng.pick(&["u1", "u2", "u3"]);
    let mut p = Principal::new(kind, *id, "iss");
    for _ in 0..(rng.next() % 3) {
        p.groups.push((*rng.pick(&GROUPS)).to_owned());
    }
    if rng.next().is_multiple_of(4) {
        p.actor = Some(Actor {
            kind: PrincipalKind::Agent,
            sub: "bot".into(),
            iss: None,
        });
    }
    p
}

/// The index, and the small per-request entity set, decide exactly like the
/// full policy set with every configured entity.
#[test]
fn index_matches_full_set() {
    let mut rng = Lcg(42);
    let policies = generated_policies(150, &mut rng);
    let entities = generated_entities();
    let sources = vec![("gen.cedar".to_owned(), policies)];
    let engine = PolicyEngine::from_sources(&sources, Some(&entities)).unwrap();
    let loaded = engine.loaded();
    let mut allows = 0;
    let mut forbids = 0;
    for _ in 0..3000 {
        let principal = random_principal(&mut rng);
        let intent = random_intent(&mut rng);
        let indexed = engine.authorize(&principal, &intent);
        let unindexed = engine.authorize_unindexed(&principal, &intent);
        let full = loaded.authorize_built(
            &principal,
            &intent,
            request::build_full(&loaded, &principal, &intent),
            &loaded.all,
        );
        assert_eq!(indexed, unindexed, "{principal:?} {intent:?}");
        assert_eq!(indexed, full, "{principal:?} {intent:?}");
        if indexed.is_allowed() {
            allows += 1;
        } else if !indexed.policy_ids.is_empty() {
            forbids += 1;
        }
    }
    // The generated set exercises all three outcomes.
    assert!(allows > 100, "{allows}");
    assert!(forbids > 100, "{forbids}");
}

/// Timing probe (run with `--ignored --nocapture`): indexed vs. unindexed,
/// and request validation with vs. without the schema. Debug builds are
/// slow; compare the ratios. The real benchmark is the workspace harness.
#[test]
#[ignore]
fn timing_probe() {
    let mut rng = Lcg(7);
    let policies = generated_policies(100, &mut rng);
    let sources = vec![("gen.cedar".to_owned(), policies)];
    let engine = PolicyEngine::from_sources(&sources, Some(&generated_entities())).unwrap();
    let loaded = engine.loaded();
    let s = statics().unwrap();
    let principal = full_principal(PrincipalKind::User);
    let intent =
        Intent::new(Action::GitPush, resource_for(Action::GitPush)).with("operation", "update");
    let n = 2000;
    let time = |label: &str, f: &dyn Fn()| {
        let start = tokio::time::Instant::now();
        for _ in 0..n {
            f();
        }
        println!("{label}: {:?}", start.elapsed() / n);
    };
    time("authorize (indexed)", &|| {
        std::hint::black_box(engine.authorize(&principal, &intent));
    });
    time("authorize (unindexed)", &|| {
        std::hint::black_box(engine.authorize_unindexed(&principal, &intent));
    });
    time("build entities+context", &|| {
        std::hint::black_box(request::build(&loaded, &principal, &intent).unwrap());
    });
    let a = s.action_uids[action_index(Action::GitPush)].clone();
    time("request without schema", &|| {
        let b = request::build(&loaded, &principal, &intent).unwrap();
        std::hint::black_box(
            Request::new(b.principal, a.clone(), b.resource, b.context, None).unwrap(),
        );
    });
    time("request with schema", &|| {
        let b = request::build(&loaded, &principal, &intent).unwrap();
        std::hint::black_box(
            Request::new(
                b.principal,
                a.clone(),
                b.resource,
                b.context,
                Some(&s.schema),
            )
            .unwrap(),
        );
    });
}
