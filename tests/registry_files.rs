//! The files generated from the action registry match it: the RBAC role
//! in `deploy/` and the action table in `docs/`.

fn read(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

#[test]
fn rbac_role_matches_the_registry() {
    assert_eq!(
        read("deploy/kubernetes/rbac.yaml"),
        steward_actions::rbac::cluster_role_yaml(),
        "deploy/kubernetes/rbac.yaml is stale: run `cargo run --bin steward -- rbac > deploy/kubernetes/rbac.yaml`"
    );
}

#[test]
fn actions_doc_matches_the_registry() {
    assert_eq!(
        read("docs/actions.md"),
        steward_actions::docs::actions_markdown(),
        "docs/actions.md is stale: run `cargo run --bin steward -- actions-doc > docs/actions.md`"
    );
}
