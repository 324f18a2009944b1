//! The Kubernetes ClusterRole that execute needs, generated from the
//! registry, so that the role in `deploy/` never drifts from the actions.

use std::collections::{BTreeMap, BTreeSet};

use crate::REGISTRY;

/// Returns the ClusterRole, as YAML, granting every permission an action
/// of the registry needs and nothing else.
pub fn cluster_role_yaml() -> String {
    // (API group, resource) to verbs, sorted so that the output is stable.
    let mut rules: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for spec in REGISTRY {
        for permission in spec.permissions {
            rules
                .entry((permission.api_group, permission.resource))
                .or_default()
                .extend(permission.verbs.iter().copied());
        }
    }

    let mut yaml = String::from(
        "# Generated from the action registry (crates/actions) by `steward rbac`.\n\
         # Do not edit: a test fails when this file and the registry differ.\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: ClusterRole\n\
         metadata:\n  name: steward-execute\n\
         rules:\n",
    );
    for ((group, resource), verbs) in rules {
        let verbs: Vec<&str> = verbs.into_iter().collect();
        yaml.push_str(&format!(
            "  - apiGroups: [\"{group}\"]\n    resources: [\"{resource}\"]\n    verbs: [{}]\n",
            verbs
                .iter()
                .map(|verb| format!("\"{verb}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_merges_verbs_per_resource() {
        let yaml = cluster_role_yaml();
        assert!(
            yaml.contains("  - apiGroups: [\"\"]\n    resources: [\"pods\"]\n    verbs: [\"delete\", \"get\", \"list\", \"patch\"]\n"),
            "{yaml}"
        );
        assert_eq!(yaml.matches("resources: [\"pods\"]").count(), 1, "{yaml}");
    }
}
