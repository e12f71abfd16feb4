//! Turning a parsed request into `Intent`s for the authorize step.

use latchkey_core::{Action, Intent, ResourceKind, ResourceRef};

use crate::commands::{RefOp, RefUpdate};
use crate::route::GitRoute;

/// The ref as a policy resource: kind `Ref`, id `upstream/owner/repo:refs/...`,
/// parent the repository, attributes `name`, `kind` and `short`.
pub fn ref_resource(route: &GitRoute, update: &RefUpdate) -> ResourceRef {
    ResourceRef::new(
        ResourceKind::Ref,
        format!("{}:{}", route.repository_id(), update.name),
    )
    .with_parent(route.repository_resource())
    .with_attr("name", update.name.clone())
    .with_attr("kind", update.kind.as_str())
    .with_attr("short", update.short_name())
}

/// One `git.push` intent per ref update. Context: `operation`
/// (create/update/delete), `old`, `new`, and `commit` (= new) unless the ref
/// is deleted.
pub fn intents_for_push(route: &GitRoute, updates: &[RefUpdate]) -> Vec<Intent> {
    updates
        .iter()
        .map(|u| {
            let mut intent = Intent::new(Action::GitPush, ref_resource(route, u))
                .with("operation", u.op.as_str())
                .with("old", u.old.clone())
                .with("new", u.new.clone());
            if u.op != RefOp::Delete {
                intent = intent.with("commit", u.new.clone());
            }
            intent
        })
        .collect()
}

/// The `git.read` intent on the repository, for clone, fetch and every ref
/// advertisement (including receive-pack's: pushes are decided per ref on
/// the actual push).
pub fn intent_for_read(route: &GitRoute) -> Intent {
    Intent::new(Action::GitRead, route.repository_resource())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::RefKind;
    use latchkey_core::ContextValue;

    #[test]
    fn push_intents_carry_ref_and_context() {
        let route = GitRoute::parse("local/acme/app.git/git-receive-pack", None).unwrap();
        let updates = [
            RefUpdate {
                old: "0".repeat(40),
                new: "a".repeat(40),
                name: "refs/heads/feature/x".into(),
                op: RefOp::Create,
                kind: RefKind::Branch,
            },
            RefUpdate {
                old: "b".repeat(40),
                new: "0".repeat(40),
                name: "refs/tags/v1".into(),
                op: RefOp::Delete,
                kind: RefKind::Tag,
            },
        ];
        let intents = intents_for_push(&route, &updates);
        assert_eq!(intents.len(), 2);
        let i = &intents[0];
        assert_eq!(i.action, Action::GitPush);
        assert_eq!(i.resource.kind, ResourceKind::Ref);
        assert_eq!(i.resource.id, "local/acme/app:refs/heads/feature/x");
        assert_eq!(
            i.resource.parent.as_deref(),
            Some(&route.repository_resource())
        );
        assert_eq!(i.resource.attributes["name"], "refs/heads/feature/x");
        assert_eq!(i.resource.attributes["kind"], "branch");
        assert_eq!(i.resource.attributes["short"], "feature/x");
        assert_eq!(i.context["operation"], ContextValue::from("create"));
        assert_eq!(i.context["commit"], ContextValue::from("a".repeat(40)));
        let d = &intents[1];
        assert_eq!(d.resource.attributes["kind"], "tag");
        assert_eq!(d.resource.attributes["short"], "v1");
        assert_eq!(d.context["operation"], ContextValue::from("delete"));
        assert!(!d.context.contains_key("commit"));
        assert_eq!(d.context["old"], ContextValue::from("b".repeat(40)));
    }

    #[test]
    fn read_intent_is_on_the_repository() {
        let route = GitRoute::parse("local/acme/app.git/git-upload-pack", None).unwrap();
        let i = intent_for_read(&route);
        assert_eq!(i.action, Action::GitRead);
        assert_eq!(i.resource, route.repository_resource());
    }
}
