//! What an action would do, stated without a cluster to read.
//!
//! Execute runs without a kubeconfig only in dry-run mode. Each action then
//! states the requests it would send and the fields they would set, so that
//! a first run shows what enabling Steward would change. The old values are
//! unknown because nothing was read.

use super::workloads::RESTARTED_AT_ANNOTATION;
use super::{ACTION_ID_ANNOTATION, Report, Request, Settings};

/// Describes `request` without reading any object.
pub(super) fn without_cluster(request: &Request<'_>, settings: &Settings) -> Report {
    match plan(request, settings) {
        Ok(planned) => Report::done(vec![format!(
            "{planned} (no cluster configured: the object was not read)"
        )]),
        Err(refusal) => Report::failed(refusal),
    }
}

/// Returns the planned requests, or why the action would fail.
fn plan(request: &Request<'_>, settings: &Settings) -> Result<String, String> {
    let target = request.target;
    let params = request.parameters;
    let integer = |name: &str, default: i64| params.integer(name).unwrap_or(default);
    let restart = format!(
        "would patch {target}: set spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}] to the current time, as `kubectl rollout restart` does"
    );
    let planned = match request.action {
        "restart_deployment" | "restart_statefulset" | "restart_daemonset" => restart,
        "reset_service_mesh" => format!("{restart}, so that new pods get fresh sidecars"),
        "restart_network_component" => {
            if settings.network_daemonsets.contains(&target.name)
                && target.namespace == "kube-system"
            {
                restart
            } else {
                return Err(format!(
                    "{target} is not a network component Steward may restart; the allowed kube-system daemon sets are {}",
                    settings.network_daemonsets.join(", ")
                ));
            }
        }
        "scale_deployment" | "scale_statefulset" => format!(
            "would set {target} spec.replicas to {} through the scale subresource",
            integer("replicas", 0)
        ),
        "rollback_deployment" => format!(
            "would list the ReplicaSets {target} owns and patch its spec.template to the pod template of the previous revision, as `kubectl rollout undo` does"
        ),
        "increase_resources" => {
            let container = params.text("container").unwrap_or_default();
            let fields: Vec<String> = [
                ("cpu_request", "requests.cpu"),
                ("cpu_limit", "limits.cpu"),
                ("memory_request", "requests.memory"),
                ("memory_limit", "limits.memory"),
            ]
            .into_iter()
            .filter_map(|(name, field)| {
                params
                    .text(name)
                    .map(|value| format!("resources.{field} to {value}"))
            })
            .collect();
            format!(
                "would patch container {container} of {target}: set {}",
                fields.join(", ")
            )
        }
        "update_hpa" => {
            let fields: Vec<String> = [
                ("min_replicas", "spec.minReplicas"),
                ("max_replicas", "spec.maxReplicas"),
            ]
            .into_iter()
            .filter_map(|(name, field)| {
                params
                    .integer(name)
                    .map(|value| format!("{field} to {value}"))
            })
            .collect();
            format!("would patch {target}: set {}", fields.join(", "))
        }
        "delete_pod" => format!(
            "would delete {target} with a {}s grace period, if a controller owns it",
            integer("grace_period_seconds", 30)
        ),
        "delete_failed_job" => format!(
            "would delete {target} and its pods (propagationPolicy Background), if it has failed and has no active pods"
        ),
        "cordon_node" => format!("would patch {target}: set spec.unschedulable to true"),
        "uncordon_node" => format!("would patch {target}: remove spec.unschedulable"),
        "drain_node" => format!(
            "would patch {target}: set spec.unschedulable to true, then evict every pod on it except DaemonSet, mirror and unmanaged pods through the Eviction API with a {}s grace period, retrying evictions a disruption budget blocks and waiting for the evicted pods to terminate, for up to {}s in all",
            integer("grace_period_seconds", 30),
            integer("timeout_seconds", 300)
        ),
        "expand_pvc" => format!(
            "would patch {target}: set spec.resources.requests.storage to {}, if its storage class allows volume expansion",
            params.text("size").unwrap_or_default()
        ),
        "quarantine_pod" => {
            let mut allowed = Vec::new();
            if params.boolean("allow_dns") == Some(true) {
                allowed.push("DNS to kube-system".to_owned());
            }
            if let Some(namespace) = params.text("investigation_namespace") {
                allowed.push(format!("traffic from namespace {namespace}"));
            }
            let allowed = if allowed.is_empty() {
                "allowing nothing".to_owned()
            } else {
                format!("allowing only {}", allowed.join(" and "))
            };
            format!(
                "would label {target} steward.io/quarantine and create a network policy in {} that selects it with Ingress and Egress policy types, {allowed}",
                target.namespace
            )
        }
        "collect_diagnostics" => format!(
            "would read {target}'s status, its recent events and the last {} log lines of each container, and store them with the action; nothing changes",
            integer("tail_lines", 200)
        ),
        "enable_debug_mode" => {
            let (name, value) = &settings.debug_env;
            format!(
                "would patch {target}: set environment variable {name}={value} on every container, then restore the previous value after {}s",
                integer("duration_seconds", 900)
            )
        }
        action => match settings.job_templates.find(action, target) {
            Some(_) if action == "rotate_secret" => format!(
                "would create a Job from the configured {action} template for {target}, wait for it to complete, then restart the deployments, stateful sets and daemon sets in {} that mount the secret",
                target.namespace
            ),
            Some(_) => format!(
                "would create a Job from the configured {action} template for {target}, annotated {ACTION_ID_ANNOTATION} with the action id"
            ),
            None if steward_actions::find(action).is_some_and(|spec| spec.job_template) => {
                return Err(format!(
                    "no job template for {action} on {target} is configured; add one to the file named by --job-templates"
                ));
            }
            None => format!("would run {action} on {target}"),
        },
    };
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use steward_actions::{REGISTRY, parameters_from_json, validate};
    use steward_proto::v1::{Target, TargetKind};
    use uuid::Uuid;

    use super::*;

    /// Returns an example of every action but `notify_only`, which execute
    /// answers before it looks for a cluster.
    fn examples() -> Vec<(&'static str, TargetKind, &'static str, Value)> {
        use TargetKind::*;
        vec![
            (
                "scale_deployment",
                Deployment,
                "web",
                json!({"replicas": 4}),
            ),
            ("restart_deployment", Deployment, "web", json!({})),
            ("rollback_deployment", Deployment, "web", json!({})),
            (
                "increase_resources",
                Deployment,
                "web",
                json!({"container": "app", "memory_limit": "1Gi", "cpu_request": "500m"}),
            ),
            (
                "scale_statefulset",
                Statefulset,
                "db",
                json!({"replicas": 3}),
            ),
            ("restart_statefulset", Statefulset, "db", json!({})),
            ("restart_daemonset", Daemonset, "agent", json!({})),
            (
                "update_hpa",
                HorizontalPodAutoscaler,
                "web",
                json!({"max_replicas": 12}),
            ),
            (
                "delete_pod",
                Pod,
                "web-1",
                json!({"grace_period_seconds": 10}),
            ),
            ("delete_failed_job", Job, "nightly", json!({})),
            ("cordon_node", Node, "node-1", json!({})),
            ("uncordon_node", Node, "node-1", json!({})),
            (
                "drain_node",
                Node,
                "node-1",
                json!({"timeout_seconds": 120}),
            ),
            (
                "expand_pvc",
                PersistentVolumeClaim,
                "data-db-0",
                json!({"size": "20Gi"}),
            ),
            (
                "cleanup_storage",
                PersistentVolumeClaim,
                "data-db-0",
                json!({}),
            ),
            ("backup_data", Statefulset, "db", json!({})),
            (
                "compact_storage",
                PersistentVolumeClaim,
                "data-db-0",
                json!({}),
            ),
            ("quarantine_pod", Pod, "web-1", json!({"allow_dns": true})),
            ("rotate_secret", Secret, "db-password", json!({})),
            (
                "collect_diagnostics",
                Pod,
                "web-1",
                json!({"tail_lines": 50}),
            ),
            ("restart_network_component", Daemonset, "cilium", json!({})),
            ("reset_service_mesh", Deployment, "web", json!({})),
            ("failover_database", Statefulset, "db", json!({})),
            ("repair_database", Statefulset, "db", json!({})),
            (
                "enable_debug_mode",
                Deployment,
                "web",
                json!({"duration_seconds": 600}),
            ),
            ("create_heap_dump", Pod, "web-1", json!({})),
        ]
    }

    fn describe(action: &str, kind: TargetKind, name: &str, params: &Value) -> String {
        let namespace = if action == "restart_network_component" {
            "kube-system"
        } else {
            "shop"
        };
        let target = Target {
            kind: kind as i32,
            namespace: if kind == TargetKind::Node {
                String::new()
            } else {
                namespace.to_owned()
            },
            name: name.to_owned(),
        };
        let params = parameters_from_json(params.as_object().expect("an object")).expect("scalars");
        let (_, parameters) = validate(action, kind, &params).expect("valid example");
        let request = Request {
            action_id: Uuid::new_v4(),
            action,
            parameters: &parameters,
            target: &target,
            attempts: 1,
        };
        let report = without_cluster(&request, &Settings::default());
        if report.succeeded {
            report.changes.join("\n")
        } else {
            report.error
        }
    }

    #[test]
    fn every_action_states_its_own_plan() {
        let examples = examples();
        for spec in REGISTRY
            .iter()
            .filter(|spec| spec.name != steward_actions::NOTIFY_ONLY)
        {
            assert!(
                examples.iter().any(|(action, ..)| *action == spec.name),
                "{} has no example here",
                spec.name
            );
        }
        for (action, kind, name, params) in &examples {
            let text = describe(action, *kind, name, params);
            assert!(
                !text.contains("would run"),
                "{action} fell back to a generic text: {text}"
            );
            assert!(
                text.contains(name),
                "{action} does not name its target: {text}"
            );
        }
    }

    #[test]
    fn plans_carry_the_parameters() {
        let examples = examples();
        for (action, expected) in [
            ("scale_deployment", "spec.replicas to 4"),
            (
                "increase_resources",
                "resources.requests.cpu to 500m, resources.limits.memory to 1Gi",
            ),
            ("update_hpa", "spec.maxReplicas to 12"),
            ("delete_pod", "10s grace period"),
            ("drain_node", "for up to 120s"),
            ("expand_pvc", "requests.storage to 20Gi"),
            ("quarantine_pod", "allowing only DNS to kube-system"),
            ("collect_diagnostics", "last 50 log lines"),
            (
                "enable_debug_mode",
                "LOG_LEVEL=debug on every container, then restore the previous value after 600s",
            ),
            ("cleanup_storage", "no job template for cleanup_storage"),
        ] {
            let (_, kind, name, params) = examples
                .iter()
                .find(|(name, ..)| *name == action)
                .expect("an example");
            let text = describe(action, *kind, name, params);
            assert!(text.contains(expected), "{expected:?} missing from: {text}");
        }
    }

    #[test]
    fn configured_job_templates_are_named() {
        let templates = steward_actions::jobs::JobTemplates::parse(
            "templates:\n  - action: backup_data\n    job:\n      template:\n        spec:\n          containers: [{name: backup, image: backup:1}]\n          restartPolicy: Never\n",
        )
        .expect("a valid template file");
        let settings = Settings {
            job_templates: templates,
            ..Settings::default()
        };
        let target = Target {
            kind: TargetKind::Statefulset as i32,
            namespace: "shop".into(),
            name: "db".into(),
        };
        let (_, parameters) =
            validate("backup_data", TargetKind::Statefulset, &Default::default()).expect("valid");
        let request = Request {
            action_id: Uuid::new_v4(),
            action: "backup_data",
            parameters: &parameters,
            target: &target,
            attempts: 1,
        };
        let text = without_cluster(&request, &settings).changes.join("\n");
        assert!(
            text.contains("would create a Job from the configured backup_data template"),
            "{text}"
        );
    }

    #[test]
    fn network_components_outside_the_list_are_refused() {
        let text = describe(
            "restart_network_component",
            TargetKind::Daemonset,
            "my-agent",
            &json!({}),
        );
        assert!(text.contains("is not a network component"), "{text}");
    }
}
