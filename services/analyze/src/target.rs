//! Resolves the Kubernetes objects an alert is about from its labels.
//!
//! kube-state-metrics and kube-prometheus alerts name their object in the
//! labels `namespace` plus one of `pod`, `deployment`, `statefulset`,
//! `daemonset` or `persistentvolumeclaim`; node alerts use `node`. These
//! objects are the only targets an analyzer may choose for the alert.

use std::collections::HashMap;

use steward_proto::v1::{Target, TargetKind};

/// Label names and kinds, most specific first: a pod alert often also
/// carries the node it runs on, and the pod is what it is about.
/// kube-state-metrics names a job `job_name`, because `job` is the scrape
/// job of every Prometheus series.
const LABELS: [(&str, TargetKind); 9] = [
    ("persistentvolumeclaim", TargetKind::PersistentVolumeClaim),
    ("pod", TargetKind::Pod),
    ("job_name", TargetKind::Job),
    (
        "horizontalpodautoscaler",
        TargetKind::HorizontalPodAutoscaler,
    ),
    ("deployment", TargetKind::Deployment),
    ("statefulset", TargetKind::Statefulset),
    ("daemonset", TargetKind::Daemonset),
    ("secret", TargetKind::Secret),
    ("node", TargetKind::Node),
];

/// Returns the objects named by the alert's labels, most specific first.
///
/// A namespaced kind without a valid `namespace` label is skipped, because
/// Steward cannot tell which object it means, and so is any object whose
/// namespace or name is not a valid Kubernetes name: label text never
/// reaches an API path unchecked.
pub fn candidates(labels: &HashMap<String, String>) -> Vec<Target> {
    let namespace = labels.get("namespace").map(|namespace| namespace.trim());
    LABELS
        .iter()
        .filter_map(|(label, kind)| {
            let name = labels.get(*label)?.trim();
            let namespace = if *kind == TargetKind::Node {
                String::new()
            } else {
                namespace?.to_owned()
            };
            let target = Target {
                kind: *kind as i32,
                namespace,
                name: name.to_owned(),
            };
            steward_actions::validate_target(&target)
                .ok()
                .map(|()| target)
        })
        .collect()
}

/// Returns the target of an alert that names no usable object: an
/// unspecified kind, to which only escalation applies.
pub fn unresolved() -> Target {
    Target {
        kind: TargetKind::Unspecified as i32,
        namespace: String::new(),
        name: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pod_comes_before_its_node() {
        let found = candidates(&labels(&[
            ("namespace", "shop"),
            ("pod", "cart-1"),
            ("node", "worker-2"),
        ]));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].kind(), TargetKind::Pod);
        assert_eq!(found[0].to_string(), "pod/shop/cart-1");
        assert_eq!(found[1].to_string(), "node/worker-2");
    }

    #[test]
    fn namespaced_kinds_need_a_namespace() {
        let found = candidates(&labels(&[("deployment", "cart")]));
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn namespaces_with_path_characters_are_skipped() {
        let found = candidates(&labels(&[
            ("namespace", "kube-system/deployments/coredns#"),
            ("deployment", "evil"),
        ]));
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn invalid_object_names_are_skipped() {
        let found = candidates(&labels(&[
            ("namespace", "shop"),
            ("deployment", "../../secrets"),
            ("pod", "Cart"),
        ]));
        assert!(found.is_empty(), "{found:?}");
    }
}
