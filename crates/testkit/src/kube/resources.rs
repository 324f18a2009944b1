//! The resource kinds the fake API server serves, one table entry each.

/// Whether objects of a kind live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    Namespaced,
    Cluster,
}

/// A subresource served below an object's path, as in `deployments/web/scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Subresource {
    /// `status`: reads the object and writes only its `.status`.
    Status,
    /// `scale`: an `autoscaling/v1` Scale mapped onto `spec.replicas`.
    Scale,
    /// `eviction`: deletes a pod unless a PodDisruptionBudget forbids it.
    Eviction,
    /// `log`: plain text set with `FakeKube::set_pod_log`.
    Log,
}

impl Subresource {
    pub(super) fn path_segment(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Scale => "scale",
            Self::Eviction => "eviction",
            Self::Log => "log",
        }
    }
}

/// One served kind: its group, version, names and subresources.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ResourceKind {
    /// API group, empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in URLs.
    pub plural: &'static str,
    pub scope: Scope,
    pub subresources: &'static [Subresource],
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    subresources: &'static [Subresource],
) -> ResourceKind {
    ResourceKind {
        group,
        version,
        kind,
        plural,
        scope,
        subresources,
    }
}

use Scope::{Cluster, Namespaced};
use Subresource::{Eviction, Log, Scale, Status};

/// Every kind the server stores. Add a kind by adding a line.
// Kept one entry per line, which rustfmt would otherwise break up.
#[rustfmt::skip]
pub(super) const KINDS: &[ResourceKind] = &[
    kind("", "v1", "Pod", "pods", Namespaced, &[Status, Eviction, Log]),
    kind("", "v1", "Service", "services", Namespaced, &[Status]),
    kind("", "v1", "ConfigMap", "configmaps", Namespaced, &[]),
    kind("", "v1", "Secret", "secrets", Namespaced, &[]),
    kind("", "v1", "ServiceAccount", "serviceaccounts", Namespaced, &[]),
    kind("", "v1", "Endpoints", "endpoints", Namespaced, &[]),
    kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", Namespaced, &[Status]),
    kind("", "v1", "Event", "events", Namespaced, &[]),
    kind("", "v1", "Namespace", "namespaces", Cluster, &[Status]),
    kind("", "v1", "Node", "nodes", Cluster, &[Status]),
    kind("", "v1", "PersistentVolume", "persistentvolumes", Cluster, &[Status]),
    kind("apps", "v1", "Deployment", "deployments", Namespaced, &[Status, Scale]),
    kind("apps", "v1", "StatefulSet", "statefulsets", Namespaced, &[Status, Scale]),
    kind("apps", "v1", "DaemonSet", "daemonsets", Namespaced, &[Status]),
    kind("apps", "v1", "ReplicaSet", "replicasets", Namespaced, &[Status, Scale]),
    kind("apps", "v1", "ControllerRevision", "controllerrevisions", Namespaced, &[]),
    kind("batch", "v1", "Job", "jobs", Namespaced, &[Status]),
    kind("batch", "v1", "CronJob", "cronjobs", Namespaced, &[Status]),
    kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", Namespaced, &[Status]),
    kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", Namespaced, &[Status]),
    kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", Namespaced, &[]),
    kind("storage.k8s.io", "v1", "StorageClass", "storageclasses", Cluster, &[]),
    kind("coordination.k8s.io", "v1", "Lease", "leases", Namespaced, &[]),
    kind("events.k8s.io", "v1", "Event", "events", Namespaced, &[]),
];

impl ResourceKind {
    /// Returns `apiVersion` as objects carry it: `v1` or `apps/v1`.
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Returns the name the API server uses in error messages: `pods` or
    /// `deployments.apps`.
    pub(super) fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Returns the kind qualified by its group, as validation errors name it:
    /// `Pod` or `Deployment.apps`.
    pub(super) fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub(super) fn is_namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    pub(super) fn has(&self, subresource: Subresource) -> bool {
        self.subresources.contains(&subresource)
    }

    pub(super) fn subresource(&self, segment: &str) -> Option<Subresource> {
        self.subresources
            .iter()
            .copied()
            .find(|subresource| subresource.path_segment() == segment)
    }
}

/// Finds the kind served at `/{group}/{version}/{plural}`.
pub(super) fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
    KINDS
        .iter()
        .find(|kind| kind.group == group && kind.version == version && kind.plural == plural)
}

/// Finds a kind by `apiVersion` and either its kind (`Deployment`) or its
/// plural (`deployments`).
pub(super) fn find_by_api_version(
    api_version: &str,
    kind_or_plural: &str,
) -> Option<&'static ResourceKind> {
    let (group, version) = split_api_version(api_version);
    KINDS.iter().find(|kind| {
        kind.group == group
            && kind.version == version
            && (kind.kind == kind_or_plural || kind.plural == kind_or_plural)
    })
}

/// Returns whether any kind is served in `group`/`version`.
pub(super) fn serves_group_version(group: &str, version: &str) -> bool {
    KINDS
        .iter()
        .any(|kind| kind.group == group && kind.version == version)
}

/// Splits `apps/v1` into `("apps", "v1")` and `v1` into `("", "v1")`.
pub(super) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}
