//! Discovery documents (`/version`, `/api`, `/apis`, and the resource list
//! of each group version), built from the resource table.

use serde_json::{Value, json};

use super::resources::{KINDS, ResourceKind, Subresource};

/// The Kubernetes version the server reports; the API types follow
/// k8s-openapi's `v1_31` feature.
const MINOR_VERSION: &str = "31";

pub(super) fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR_VERSION,
        "gitVersion": format!("v1.{MINOR_VERSION}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-08-13T00:00:00Z",
        "goVersion": "go1.22.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(super) fn core_api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

pub(super) fn api_groups() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for kind in KINDS.iter().filter(|kind| !kind.group.is_empty()) {
        let group_version = kind.api_version();
        let entry = json!({ "groupVersion": group_version, "version": kind.version });
        match groups.iter_mut().find(|group| group["name"] == kind.group) {
            Some(group) => {
                let versions = group["versions"]
                    .as_array_mut()
                    .expect("groups are built with a versions array");
                if !versions.contains(&entry) {
                    versions.push(entry);
                }
            }
            None => groups.push(json!({
                "name": kind.group,
                "versions": [entry.clone()],
                "preferredVersion": entry,
            })),
        }
    }
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// Lists the kinds of one group version and their subresources.
pub(super) fn resource_list(group: &str, version: &str) -> Value {
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for kind in KINDS
        .iter()
        .filter(|kind| kind.group == group && kind.version == version)
    {
        resources.push(json!({
            "name": kind.plural,
            "singularName": kind.kind.to_lowercase(),
            "namespaced": kind.is_namespaced(),
            "kind": kind.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update"],
        }));
        for subresource in kind.subresources {
            resources.push(subresource_entry(kind, *subresource));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

fn subresource_entry(kind: &ResourceKind, subresource: Subresource) -> Value {
    let name = format!("{}/{}", kind.plural, subresource.path_segment());
    let namespaced = kind.is_namespaced();
    match subresource {
        Subresource::Status => json!({
            "name": name, "singularName": "", "namespaced": namespaced, "kind": kind.kind,
            "verbs": ["get", "patch", "update"],
        }),
        Subresource::Scale => json!({
            "name": name, "singularName": "", "namespaced": namespaced, "kind": "Scale",
            "group": "autoscaling", "version": "v1", "verbs": ["get", "patch", "update"],
        }),
        Subresource::Eviction => json!({
            "name": name, "singularName": "", "namespaced": namespaced, "kind": "Eviction",
            "group": "policy", "version": "v1", "verbs": ["create"],
        }),
        Subresource::Log => json!({
            "name": name, "singularName": "", "namespaced": namespaced, "kind": kind.kind,
            "verbs": ["get"],
        }),
    }
}
