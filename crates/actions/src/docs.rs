//! The action table in `docs/actions.md`, generated from the registry.

use std::collections::BTreeSet;

use crate::REGISTRY;

/// Returns the Markdown page that lists every action.
pub fn actions_markdown() -> String {
    let mut page = String::from(
        "<!-- Generated from the action registry (crates/actions) by `steward actions-doc`; \
         a test fails when this page and the registry differ. -->\n\
         # Actions\n\n\
         Every action Steward may take. Analyzers choose only from this list, the guard \
         checks every choice against it, and execute's RBAC role \
         (`deploy/kubernetes/rbac.yaml`) grants exactly the permissions below. Actions \
         whose description names a configured job run the Job template configured for the workload.\n\n\
         | action | category | risk | targets | parameters | permissions | description |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for spec in REGISTRY {
        let targets: BTreeSet<&str> = spec.targets.iter().map(|kind| kind.label()).collect();
        let params: Vec<String> = spec.params.iter().map(|param| param.describe()).collect();
        let permissions: Vec<String> = spec
            .permissions
            .iter()
            .map(|permission| {
                let group = if permission.api_group.is_empty() {
                    "core".to_owned()
                } else {
                    permission.api_group.to_owned()
                };
                format!(
                    "{group}/{}: {}",
                    permission.resource,
                    permission.verbs.join(", ")
                )
            })
            .collect();
        page.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            spec.name,
            spec.category.as_str(),
            spec.risk.as_str(),
            targets.into_iter().collect::<Vec<_>>().join(", "),
            if params.is_empty() {
                "none".to_owned()
            } else {
                params.join("<br>")
            },
            if permissions.is_empty() {
                "none".to_owned()
            } else {
                permissions.join("<br>")
            },
            spec.description.replace('|', "\\|"),
        ));
    }
    page
}
