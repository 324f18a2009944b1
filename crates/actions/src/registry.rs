//! Every action Steward knows, with its parameters, targets, risk and the
//! Kubernetes permissions it needs.

use steward_proto::v1::TargetKind;

use crate::params::{DefaultValue, ParamKind, ParamSpec, Requirement, TextRule};
use crate::{ActionSpec, Category, Permission, Risk};

const GET_PATCH: &[&str] = &["get", "patch"];
const JOB_VERBS: &[&str] = &["create", "get"];

const fn permission(
    api_group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Permission {
    Permission {
        api_group,
        resource,
        verbs,
    }
}

const fn integer(
    name: &'static str,
    description: &'static str,
    min: i64,
    max: i64,
    requirement: Requirement,
) -> ParamSpec {
    ParamSpec {
        name,
        description,
        kind: ParamKind::Integer { min, max },
        requirement,
    }
}

const fn text(
    name: &'static str,
    description: &'static str,
    rule: TextRule,
    requirement: Requirement,
) -> ParamSpec {
    ParamSpec {
        name,
        description,
        kind: ParamKind::Text { rule },
        requirement,
    }
}

const REQUIRED: Requirement = Requirement::Required;
const OPTIONAL: Requirement = Requirement::Optional;
const fn default_int(value: i64) -> Requirement {
    Requirement::Default(DefaultValue::Integer(value))
}

/// Permissions of an action that runs a Job from the workload's
/// configured template.
const JOB_TEMPLATE: &[Permission] = &[permission("batch", "jobs", JOB_VERBS)];

/// Every action Steward knows.
pub static REGISTRY: &[ActionSpec] = &[
    // Workloads
    ActionSpec {
        name: "scale_deployment",
        category: Category::Workload,
        description: "Set a deployment's replica count through the scale subresource.",
        params: &[integer(
            "replicas",
            "desired replica count",
            1,
            50,
            REQUIRED,
        )],
        targets: &[TargetKind::Deployment],
        risk: Risk::Medium,
        permissions: &[permission("apps", "deployments/scale", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "restart_deployment",
        category: Category::Workload,
        description: "Roll out new pods for a deployment, as `kubectl rollout restart` does.",
        params: &[],
        targets: &[TargetKind::Deployment],
        risk: Risk::Medium,
        permissions: &[permission("apps", "deployments", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "rollback_deployment",
        category: Category::Workload,
        description: "Return a deployment to its previous revision's pod template, as `kubectl rollout undo` does.",
        params: &[],
        targets: &[TargetKind::Deployment],
        risk: Risk::High,
        permissions: &[
            permission("apps", "deployments", GET_PATCH),
            permission("apps", "replicasets", &["list"]),
        ],
        job_template: false,
    },
    ActionSpec {
        name: "increase_resources",
        category: Category::Workload,
        description: "Raise one container's CPU or memory requests and limits, up to the configured maximum.",
        params: &[
            text(
                "container",
                "name of the container to change",
                TextRule::DnsLabel,
                REQUIRED,
            ),
            text(
                "memory_limit",
                "new memory limit",
                TextRule::Quantity,
                OPTIONAL,
            ),
            text(
                "memory_request",
                "new memory request",
                TextRule::Quantity,
                OPTIONAL,
            ),
            text("cpu_limit", "new CPU limit", TextRule::Quantity, OPTIONAL),
            text(
                "cpu_request",
                "new CPU request",
                TextRule::Quantity,
                OPTIONAL,
            ),
        ],
        targets: &[
            TargetKind::Deployment,
            TargetKind::Statefulset,
            TargetKind::Daemonset,
        ],
        risk: Risk::Medium,
        permissions: &[
            permission("apps", "deployments", GET_PATCH),
            permission("apps", "statefulsets", GET_PATCH),
            permission("apps", "daemonsets", GET_PATCH),
        ],
        job_template: false,
    },
    ActionSpec {
        name: "scale_statefulset",
        category: Category::Workload,
        description: "Set a stateful set's replica count through the scale subresource.",
        params: &[integer(
            "replicas",
            "desired replica count",
            1,
            50,
            REQUIRED,
        )],
        targets: &[TargetKind::Statefulset],
        risk: Risk::High,
        permissions: &[permission("apps", "statefulsets/scale", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "restart_statefulset",
        category: Category::Workload,
        description: "Roll out new pods for a stateful set, one at a time in its update order.",
        params: &[],
        targets: &[TargetKind::Statefulset],
        risk: Risk::Medium,
        permissions: &[permission("apps", "statefulsets", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "restart_daemonset",
        category: Category::Workload,
        description: "Roll out new pods for a daemon set on every node.",
        params: &[],
        targets: &[TargetKind::Daemonset],
        risk: Risk::Medium,
        permissions: &[permission("apps", "daemonsets", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "update_hpa",
        category: Category::Workload,
        description: "Change a horizontal pod autoscaler's minimum or maximum replicas.",
        params: &[
            integer(
                "min_replicas",
                "new minimum replica count",
                1,
                100,
                OPTIONAL,
            ),
            integer(
                "max_replicas",
                "new maximum replica count",
                1,
                200,
                OPTIONAL,
            ),
        ],
        targets: &[TargetKind::HorizontalPodAutoscaler],
        risk: Risk::Medium,
        permissions: &[permission(
            "autoscaling",
            "horizontalpodautoscalers",
            GET_PATCH,
        )],
        job_template: false,
    },
    ActionSpec {
        name: "delete_pod",
        category: Category::Workload,
        description: "Delete one pod that a controller owns, so that the controller replaces it.",
        params: &[integer(
            "grace_period_seconds",
            "seconds the pod gets to shut down",
            0,
            300,
            default_int(30),
        )],
        targets: &[TargetKind::Pod],
        risk: Risk::Medium,
        permissions: &[permission("", "pods", &["get", "delete"])],
        job_template: false,
    },
    ActionSpec {
        name: "delete_failed_job",
        category: Category::Workload,
        description: "Delete a job that has failed, with its pods, so that its owner can run it again.",
        params: &[],
        targets: &[TargetKind::Job],
        risk: Risk::Low,
        permissions: &[permission("batch", "jobs", &["get", "delete"])],
        job_template: false,
    },
    // Nodes
    ActionSpec {
        name: "cordon_node",
        category: Category::Node,
        description: "Mark a node unschedulable, so that no new pods land on it.",
        params: &[],
        targets: &[TargetKind::Node],
        risk: Risk::Medium,
        permissions: &[permission("", "nodes", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "uncordon_node",
        category: Category::Node,
        description: "Mark a cordoned node schedulable again.",
        params: &[],
        targets: &[TargetKind::Node],
        risk: Risk::Low,
        permissions: &[permission("", "nodes", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "drain_node",
        category: Category::Node,
        description: "Cordon a node, then evict its pods through the Eviction API, honouring disruption budgets.",
        params: &[
            integer(
                "timeout_seconds",
                "time to wait for blocked evictions and for evicted pods to terminate",
                30,
                1800,
                default_int(300),
            ),
            integer(
                "grace_period_seconds",
                "seconds each pod gets to shut down",
                0,
                600,
                default_int(30),
            ),
        ],
        targets: &[TargetKind::Node],
        risk: Risk::High,
        permissions: &[
            permission("", "nodes", GET_PATCH),
            permission("", "pods", &["list"]),
            permission("", "pods/eviction", &["create"]),
        ],
        job_template: false,
    },
    // Storage
    ActionSpec {
        name: "expand_pvc",
        category: Category::Storage,
        description: "Grow a persistent volume claim, when its storage class allows expansion.",
        params: &[text(
            "size",
            "new requested size, larger than the current one",
            TextRule::Quantity,
            REQUIRED,
        )],
        targets: &[TargetKind::PersistentVolumeClaim],
        risk: Risk::Medium,
        permissions: &[
            permission("", "persistentvolumeclaims", GET_PATCH),
            permission("storage.k8s.io", "storageclasses", &["get"]),
        ],
        job_template: false,
    },
    ActionSpec {
        name: "cleanup_storage",
        category: Category::Storage,
        description: "Run the volume's configured cleanup job (old logs, temporary files).",
        params: &[],
        targets: &[TargetKind::PersistentVolumeClaim],
        risk: Risk::High,
        permissions: JOB_TEMPLATE,
        job_template: true,
    },
    ActionSpec {
        name: "backup_data",
        category: Category::Storage,
        description: "Run the workload's configured backup job.",
        params: &[],
        targets: &[TargetKind::PersistentVolumeClaim, TargetKind::Statefulset],
        risk: Risk::Low,
        permissions: JOB_TEMPLATE,
        job_template: true,
    },
    ActionSpec {
        name: "compact_storage",
        category: Category::Storage,
        description: "Run the volume's configured compaction job.",
        params: &[],
        targets: &[TargetKind::PersistentVolumeClaim],
        risk: Risk::Medium,
        permissions: JOB_TEMPLATE,
        job_template: true,
    },
    // Security
    ActionSpec {
        name: "quarantine_pod",
        category: Category::Security,
        description: "Cut a pod off the network with a deny-all network policy, keeping it for investigation.",
        params: &[
            ParamSpec {
                name: "allow_dns",
                description: "keep DNS lookups to kube-system open",
                kind: ParamKind::Bool,
                requirement: Requirement::Default(DefaultValue::Bool(false)),
            },
            text(
                "investigation_namespace",
                "namespace whose pods may still reach the quarantined pod",
                TextRule::DnsLabel,
                OPTIONAL,
            ),
        ],
        targets: &[TargetKind::Pod],
        risk: Risk::High,
        permissions: &[
            permission("", "pods", GET_PATCH),
            permission("networking.k8s.io", "networkpolicies", &["create", "get"]),
        ],
        job_template: false,
    },
    ActionSpec {
        name: "rotate_secret",
        category: Category::Security,
        description: "Run the secret's configured rotation job, then restart the workloads that mount the secret.",
        params: &[],
        targets: &[TargetKind::Secret],
        risk: Risk::High,
        permissions: &[
            permission("batch", "jobs", JOB_VERBS),
            permission("apps", "deployments", &["list", "patch"]),
            permission("apps", "statefulsets", &["list", "patch"]),
            permission("apps", "daemonsets", &["list", "patch"]),
        ],
        job_template: true,
    },
    ActionSpec {
        name: "collect_diagnostics",
        category: Category::Security,
        description: "Record a pod's status, recent events and log tails with the action, changing nothing.",
        params: &[integer(
            "tail_lines",
            "log lines kept per container",
            10,
            2000,
            default_int(200),
        )],
        targets: &[TargetKind::Pod],
        risk: Risk::Low,
        permissions: &[
            permission("", "pods", &["get"]),
            permission("", "pods/log", &["get"]),
            permission("", "events", &["list"]),
        ],
        job_template: false,
    },
    // Network
    ActionSpec {
        name: "restart_network_component",
        category: Category::Network,
        description: "Restart a network daemon set in kube-system (such as the CNI) from the configured list.",
        params: &[],
        targets: &[TargetKind::Daemonset],
        risk: Risk::High,
        permissions: &[permission("apps", "daemonsets", GET_PATCH)],
        job_template: false,
    },
    ActionSpec {
        name: "reset_service_mesh",
        category: Category::Network,
        description: "Restart a workload so that its service mesh sidecars are injected again.",
        params: &[],
        targets: &[TargetKind::Deployment, TargetKind::Statefulset],
        risk: Risk::Medium,
        permissions: &[
            permission("apps", "deployments", GET_PATCH),
            permission("apps", "statefulsets", GET_PATCH),
        ],
        job_template: false,
    },
    // Databases
    ActionSpec {
        name: "failover_database",
        category: Category::Database,
        description: "Run the database's configured failover job.",
        params: &[],
        targets: &[TargetKind::Statefulset],
        risk: Risk::High,
        permissions: JOB_TEMPLATE,
        job_template: true,
    },
    ActionSpec {
        name: "repair_database",
        category: Category::Database,
        description: "Run the database's configured repair job.",
        params: &[],
        targets: &[TargetKind::Statefulset],
        risk: Risk::High,
        permissions: JOB_TEMPLATE,
        job_template: true,
    },
    // Monitoring
    ActionSpec {
        name: "enable_debug_mode",
        category: Category::Monitoring,
        description: "Set the configured debug log level on a workload for a bounded time, then revert it.",
        params: &[integer(
            "duration_seconds",
            "time before the log level is reverted",
            60,
            3600,
            default_int(900),
        )],
        targets: &[TargetKind::Deployment, TargetKind::Statefulset],
        risk: Risk::Low,
        // `list` finds the workloads whose debug mode expired, to revert it.
        permissions: &[
            permission("apps", "deployments", &["get", "list", "patch"]),
            permission("apps", "statefulsets", &["get", "list", "patch"]),
        ],
        job_template: false,
    },
    ActionSpec {
        name: "create_heap_dump",
        category: Category::Monitoring,
        description: "Run the workload's configured heap dump job for a pod.",
        params: &[],
        targets: &[TargetKind::Pod],
        risk: Risk::Low,
        permissions: JOB_TEMPLATE,
        job_template: true,
    },
    // Escalation
    ActionSpec {
        name: "notify_only",
        category: Category::Escalation,
        description: "Change nothing and escalate the alert to people.",
        params: &[],
        targets: &[
            TargetKind::Pod,
            TargetKind::Deployment,
            TargetKind::Statefulset,
            TargetKind::Daemonset,
            TargetKind::Node,
            TargetKind::PersistentVolumeClaim,
            TargetKind::HorizontalPodAutoscaler,
            TargetKind::Job,
            TargetKind::Secret,
            TargetKind::Unspecified,
        ],
        risk: Risk::Low,
        permissions: &[],
        job_template: false,
    },
];
