//! Tests of the fake API server through kube-rs typed clients.

use axum::http;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, LogParams, Patch, PatchParams, PostParams,
    Preconditions,
};
use kube::core::ErrorResponse;
use serde_json::{Value, json};

use super::selector::{FieldSelector, LabelSelector};
use super::{FakeKube, Mutation};

const NAMESPACE: &str = "shop";

async fn start() -> FakeKube {
    FakeKube::start()
        .await
        .expect("the fake API server binds a loopback port")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": NAMESPACE, "labels": { "app": name, "tier": "web" } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": {
                    "labels": { "app": name },
                    "annotations": { "team": "checkout" },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "shop/app:1.0",
                            "env": [{ "name": "MODE", "value": "fast" }, { "name": "LEVEL", "value": "info" }],
                        },
                        { "name": "proxy", "image": "envoy:1.30" },
                    ],
                },
            },
        },
    }))
    .expect("the deployment fixture is a valid Deployment")
}

/// Builds a pod; `ready` sets its `Ready` condition.
fn pod(name: &str, app: &str, node: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": NAMESPACE, "labels": { "app": app } },
        "spec": { "nodeName": node, "containers": [{ "name": "app", "image": "shop/app:1.0" }] },
        "status": {
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
        },
    }))
    .expect("the pod fixture is a valid Pod")
}

fn budget(name: &str, app: &str, min_available: i32) -> PodDisruptionBudget {
    serde_json::from_value(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": { "minAvailable": min_available, "selector": { "matchLabels": { "app": app } } },
    }))
    .expect("the budget fixture is a valid PodDisruptionBudget")
}

/// Returns the `Status` of a failed request, or panics naming what came back.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> ErrorResponse {
    match result {
        Err(kube::Error::Api(response)) => response,
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

/// Sends a JSON patch (RFC 6902) to a deployment. kube-rs builds these only
/// with its `jsonpatch` feature, which the workspace does not enable.
async fn json_patch_deployment(
    fake: &FakeKube,
    name: &str,
    operations: &Value,
) -> Result<Value, kube::Error> {
    let request = http::Request::patch(format!(
        "/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}"
    ))
    .header("Content-Type", "application/json-patch+json")
    .body(operations.to_string().into_bytes())
    .expect("the request is well formed");
    fake.client().request::<Value>(request).await
}

fn writes(fake: &FakeKube) -> Vec<Mutation> {
    fake.mutations()
        .into_iter()
        .filter(|mutation| !mutation.dry_run)
        .collect()
}

fn stored_deployment(fake: &FakeKube, name: &str) -> Value {
    fake.get_json("apps/v1", "Deployment", NAMESPACE, name)
        .unwrap_or_else(|| panic!("deployment {name} is missing from the store"))
}

#[tokio::test]
async fn create_stamps_server_fields_and_get_returns_object() {
    let fake = start().await;
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);

    let created = deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect("create succeeds");
    let fetched = deployments.get("web").await.expect("get succeeds");

    assert!(created.metadata.uid.is_some(), "create sets metadata.uid");
    assert!(
        created.metadata.creation_timestamp.is_some(),
        "create sets creationTimestamp"
    );
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        fetched.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(fetched.spec.and_then(|spec| spec.replicas), Some(2));
    let log = fake.mutations();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].verb, "create");
    assert_eq!(log[0].resource, "deployments");
    assert_eq!(log[0].name, "web");
}

#[tokio::test]
async fn create_of_existing_name_returns_already_exists() {
    let fake = start().await;
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect("first create succeeds");

    let error = api_error(
        deployments
            .create(&PostParams::default(), &deployment("web", 2))
            .await,
    );

    assert_eq!(error.code, 409);
    assert_eq!(error.reason, "AlreadyExists");
}

#[tokio::test]
async fn create_without_name_returns_invalid() {
    let fake = start().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(fake.client(), NAMESPACE);

    let error = api_error(
        config_maps
            .create(&PostParams::default(), &ConfigMap::default())
            .await,
    );

    assert_eq!(error.code, 422);
    assert_eq!(error.reason, "Invalid");
}

#[tokio::test]
async fn create_with_generate_name_appends_suffix() {
    let fake = start().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(fake.client(), NAMESPACE);
    let mut config_map = ConfigMap::default();
    config_map.metadata.generate_name = Some("settings-".to_owned());

    let created = config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create with generateName succeeds");

    let name = created.metadata.name.expect("the server generates a name");
    assert!(
        name.starts_with("settings-") && name.len() > "settings-".len(),
        "generated name {name}"
    );
    assert!(
        fake.get_json("v1", "configmaps", NAMESPACE, &name)
            .is_some()
    );
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let fake = start().await;
    for (name, app, node) in [
        ("web-1", "web", "node-a"),
        ("web-2", "web", "node-b"),
        ("db-1", "db", "node-a"),
    ] {
        fake.insert_resource(&pod(name, app, node, true))
            .expect("pod seeds");
    }
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|pod| pod.metadata.name)
            .collect()
    };

    let by_label = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list succeeds");
    let by_node = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .expect("list succeeds");
    let by_both = pods
        .list(
            &ListParams::default()
                .labels("app=web")
                .fields("spec.nodeName=node-a"),
        )
        .await
        .expect("list succeeds");
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=db-1"))
        .await
        .expect("list succeeds");
    let by_set = pods
        .list(&ListParams::default().labels("app in (db,cache)"))
        .await
        .expect("list succeeds");

    assert_eq!(names(by_label), ["web-1", "web-2"]);
    assert_eq!(names(by_node), ["db-1", "web-1"]);
    assert_eq!(names(by_both), ["web-1"]);
    assert_eq!(names(by_name), ["db-1"]);
    assert_eq!(names(by_set), ["db-1"]);
}

#[tokio::test]
async fn list_all_namespaces_and_pages_with_limit() {
    let fake = start().await;
    for namespace in ["alpha", "beta", "gamma"] {
        let mut object = deployment("web", 1);
        object.metadata.namespace = Some(namespace.to_owned());
        fake.insert_resource(&object).expect("deployment seeds");
    }
    let all: Api<Deployment> = Api::all(fake.client());

    let everything = all
        .list(&ListParams::default())
        .await
        .expect("list succeeds");
    let first_page = all
        .list(&ListParams::default().limit(2))
        .await
        .expect("first page succeeds");
    let token = first_page
        .metadata
        .continue_
        .clone()
        .expect("a partial page has a continue token");
    let second_page = all
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("second page succeeds");

    let namespaces = |list: &kube::core::ObjectList<Deployment>| -> Vec<String> {
        list.items
            .iter()
            .filter_map(|item| item.metadata.namespace.clone())
            .collect()
    };
    assert_eq!(namespaces(&everything), ["alpha", "beta", "gamma"]);
    assert_eq!(namespaces(&first_page), ["alpha", "beta"]);
    assert_eq!(namespaces(&second_page), ["gamma"]);
    assert_eq!(second_page.metadata.continue_, None);
}

#[tokio::test]
async fn merge_patch_updates_replicas_and_template_annotation() {
    let fake = start().await;
    let seeded = fake
        .insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let patch = json!({
        "spec": {
            "replicas": 4,
            "template": { "metadata": { "annotations": { "steward.io/restartedAt": "2024-05-01T00:00:00Z" } } },
        },
    });

    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch succeeds");

    let stored = stored_deployment(&fake, "web");
    assert_eq!(stored["spec"]["replicas"], 4);
    let annotations = &stored["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["steward.io/restartedAt"],
        "2024-05-01T00:00:00Z"
    );
    assert_eq!(
        annotations["team"], "checkout",
        "merge patch keeps other annotations"
    );
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );
    assert_ne!(
        patched.metadata.resource_version,
        seeded.metadata.resource_version
    );
    let log = writes(&fake);
    assert_eq!(log.len(), 1, "one write in {log:?}");
    assert_eq!(log[0].verb, "patch");
    assert_eq!(log[0].resource, "deployments");
    assert_eq!(
        log[0].patch_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(log[0].body, patch);
}

#[tokio::test]
async fn metadata_only_patch_keeps_generation() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let patch = json!({ "metadata": { "labels": { "owner": "steward" } } });

    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch succeeds");

    assert_eq!(patched.metadata.generation, Some(1));
    assert_eq!(
        stored_deployment(&fake, "web")["metadata"]["labels"]["owner"],
        "steward"
    );
}

#[tokio::test]
async fn strategic_merge_patch_sets_template_annotation() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let patch = json!({
        "spec": {
            "replicas": 3,
            "template": { "metadata": { "annotations": { "kubectl.kubernetes.io/restartedAt": "now" } } },
        },
    });

    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("strategic merge patch succeeds");

    let stored = stored_deployment(&fake, "web");
    let annotations = &stored["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["kubectl.kubernetes.io/restartedAt"], "now");
    assert_eq!(annotations["team"], "checkout");
    assert_eq!(stored["spec"]["replicas"], 3);
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let log = writes(&fake);
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].patch_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let patch = json!({
        "spec": { "template": { "spec": { "containers": [
            { "name": "app", "image": "shop/app:1.1", "env": [{ "name": "LEVEL", "value": "debug" }] },
            { "name": "debugger", "image": "busybox:1.36" },
        ] } } },
    });

    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("strategic merge patch succeeds");

    let stored = stored_deployment(&fake, "web");
    let containers = &stored["spec"]["template"]["spec"]["containers"];
    let names: Vec<&str> = containers
        .as_array()
        .expect("containers is a list")
        .iter()
        .filter_map(|container| container["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["app", "proxy", "debugger"],
        "existing containers stay in place, new ones are appended"
    );
    assert_eq!(containers[0]["image"], "shop/app:1.1");
    assert_eq!(
        containers[1]["image"], "envoy:1.30",
        "the proxy container is untouched"
    );
    assert_eq!(
        containers[0]["env"],
        json!([{ "name": "MODE", "value": "fast" }, { "name": "LEVEL", "value": "debug" }])
    );
}

#[tokio::test]
async fn strategic_merge_patch_deletes_container_marked_for_deletion() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let patch = json!({
        "spec": { "template": { "spec": { "containers": [{ "name": "proxy", "$patch": "delete" }] } } },
    });

    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("strategic merge patch succeeds");

    let containers =
        stored_deployment(&fake, "web")["spec"]["template"]["spec"]["containers"].clone();
    assert_eq!(containers.as_array().map(Vec::len), Some(1));
    assert_eq!(containers[0]["name"], "app");
}

#[tokio::test]
async fn json_patch_with_failing_test_returns_invalid_and_changes_nothing() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let before = stored_deployment(&fake, "web");
    let operations = json!([
        { "op": "test", "path": "/spec/replicas", "value": 5 },
        { "op": "replace", "path": "/spec/replicas", "value": 1 },
    ]);

    let error = api_error(json_patch_deployment(&fake, "web", &operations).await);

    assert_eq!(error.code, 422);
    assert_eq!(error.reason, "Invalid");
    assert_eq!(stored_deployment(&fake, "web"), before);
    assert!(
        fake.mutations().is_empty(),
        "a rejected patch is not logged"
    );
}

#[tokio::test]
async fn json_patch_with_passing_test_applies() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let operations = json!([
        { "op": "test", "path": "/spec/replicas", "value": 2 },
        { "op": "replace", "path": "/spec/replicas", "value": 1 },
    ]);

    json_patch_deployment(&fake, "web", &operations)
        .await
        .expect("JSON patch succeeds");

    assert_eq!(stored_deployment(&fake, "web")["spec"]["replicas"], 1);
    assert_eq!(
        writes(&fake)[0].patch_type.as_deref(),
        Some("application/json-patch+json")
    );
}

#[tokio::test]
async fn patch_with_stale_resource_version_conflicts() {
    let fake = start().await;
    let seeded = fake
        .insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let stale_version = seeded
        .metadata
        .resource_version
        .clone()
        .expect("seeded objects have a version");
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .expect("first patch succeeds");

    let stale =
        json!({ "metadata": { "resourceVersion": stale_version }, "spec": { "replicas": 9 } });
    let error = api_error(
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(&stale))
            .await,
    );

    assert_eq!(error.code, 409);
    assert_eq!(error.reason, "Conflict");
    assert_eq!(stored_deployment(&fake, "web")["spec"]["replicas"], 3);
}

#[tokio::test]
async fn replace_with_stale_resource_version_conflicts() {
    let fake = start().await;
    let seeded = fake
        .insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let mut current = deployments.get("web").await.expect("get succeeds");
    if let Some(spec) = current.spec.as_mut() {
        spec.replicas = Some(3);
    }
    deployments
        .replace("web", &PostParams::default(), &current)
        .await
        .expect("replace with the current version succeeds");

    let mut stale = seeded;
    if let Some(spec) = stale.spec.as_mut() {
        spec.replicas = Some(7);
    }
    let error = api_error(
        deployments
            .replace("web", &PostParams::default(), &stale)
            .await,
    );

    assert_eq!(error.code, 409);
    assert_eq!(error.reason, "Conflict");
    assert_eq!(stored_deployment(&fake, "web")["spec"]["replicas"], 3);
    let log = writes(&fake);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].verb, "update");
}

#[tokio::test]
async fn apply_patch_creates_then_updates() {
    let fake = start().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(fake.client(), NAMESPACE);
    let apply = PatchParams::apply("steward");
    let first = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" }, "data": { "mode": "fast" },
    });
    let second = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" }, "data": { "level": "debug" },
    });

    config_maps
        .patch("settings", &apply, &Patch::Apply(&first))
        .await
        .expect("apply creates");
    config_maps
        .patch("settings", &apply, &Patch::Apply(&second))
        .await
        .expect("apply updates");

    let stored = fake
        .get_json("v1", "ConfigMap", NAMESPACE, "settings")
        .expect("the config map exists");
    assert_eq!(stored["data"], json!({ "mode": "fast", "level": "debug" }));
    let log = writes(&fake);
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|mutation| mutation.patch_type.as_deref() == Some("application/apply-patch+yaml"))
    );
}

#[tokio::test]
async fn patch_of_missing_object_returns_not_found() {
    let fake = start().await;
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);

    let error = api_error(
        deployments
            .patch(
                "ghost",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
            )
            .await,
    );

    assert_eq!(error.code, 404);
    assert_eq!(error.reason, "NotFound");
}

#[tokio::test]
async fn scale_subresource_reads_and_patches_replicas() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);

    let scale = deployments
        .get_scale("web")
        .await
        .expect("get scale succeeds");
    let patch = json!({ "spec": { "replicas": 5 } });
    let scaled = deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch scale succeeds");

    assert_eq!(scale.spec.and_then(|spec| spec.replicas), Some(2));
    assert_eq!(
        scale.status.map(|status| status.selector),
        Some(Some("app=web".to_owned()))
    );
    assert_eq!(scaled.spec.and_then(|spec| spec.replicas), Some(5));
    let stored = stored_deployment(&fake, "web");
    assert_eq!(stored["spec"]["replicas"], 5);
    assert_eq!(stored["metadata"]["generation"], 2);
    let log = writes(&fake);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].resource, "deployments/scale");
    assert_eq!(log[0].verb, "patch");
}

#[tokio::test]
async fn scale_to_negative_replicas_is_invalid() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);

    let patch = json!({ "spec": { "replicas": -1 } });
    let error = api_error(
        deployments
            .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );

    assert_eq!(error.code, 422);
    assert_eq!(stored_deployment(&fake, "web")["spec"]["replicas"], 2);
}

#[tokio::test]
async fn status_subresource_writes_only_status() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);

    let status_patch = json!({ "spec": { "replicas": 9 }, "status": { "readyReplicas": 2 } });
    deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status_patch))
        .await
        .expect("status patch succeeds");
    let main_patch = json!({ "status": { "readyReplicas": 0 } });
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&main_patch))
        .await
        .expect("main patch succeeds");

    let stored = stored_deployment(&fake, "web");
    assert_eq!(
        stored["status"]["readyReplicas"], 2,
        "a main-resource patch leaves status alone"
    );
    assert_eq!(
        stored["spec"]["replicas"], 2,
        "a status patch leaves spec alone"
    );
    let resources: Vec<String> = writes(&fake)
        .into_iter()
        .map(|mutation| mutation.resource)
        .collect();
    assert_eq!(resources, ["deployments/status", "deployments"]);
}

#[tokio::test]
async fn delete_with_wrong_uid_precondition_conflicts() {
    let fake = start().await;
    let seeded = fake
        .insert_resource(&pod("web-1", "web", "node-a", true))
        .expect("pod seeds");
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);
    let with_uid = |uid: &str| DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };

    let error = api_error(pods.delete("web-1", &with_uid("not-the-uid")).await);
    assert_eq!(error.code, 409);
    assert_eq!(error.reason, "Conflict");
    assert!(
        fake.get_json("v1", "Pod", NAMESPACE, "web-1").is_some(),
        "a failed precondition keeps the pod"
    );

    let uid = seeded.metadata.uid.expect("seeded objects have a uid");
    let deleted = pods
        .delete("web-1", &with_uid(&uid))
        .await
        .expect("delete with the right uid succeeds");
    assert!(deleted.is_left(), "delete returns the deleted object");
    assert!(fake.get_json("v1", "Pod", NAMESPACE, "web-1").is_none());
    let log = writes(&fake);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].verb, "delete");
}

#[tokio::test]
async fn delete_of_object_with_finalizers_waits_for_them() {
    let fake = start().await;
    let mut seeded = pod("web-1", "web", "node-a", true);
    seeded.metadata.finalizers = Some(vec!["example.com/cleanup".to_owned()]);
    fake.insert_resource(&seeded).expect("pod seeds");
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    pods.delete("web-1", &DeleteParams::default())
        .await
        .expect("delete succeeds");
    let terminating = fake
        .get_json("v1", "Pod", NAMESPACE, "web-1")
        .expect("a pod with finalizers stays until they are removed");
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "{terminating}"
    );
    let unrelated = json!({"metadata": {"labels": {"checked": "yes"}}});
    pods.patch("web-1", &PatchParams::default(), &Patch::Merge(&unrelated))
        .await
        .expect("a terminating pod can be patched");
    assert!(fake.get_json("v1", "Pod", NAMESPACE, "web-1").is_some());

    let release = json!({"metadata": {"finalizers": null}});
    pods.patch("web-1", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("removing the finalizers succeeds");
    assert!(
        fake.get_json("v1", "Pod", NAMESPACE, "web-1").is_none(),
        "the deletion completes once the finalizers are gone"
    );
}

#[tokio::test]
async fn eviction_blocked_by_disruption_budget_returns_too_many_requests() {
    let fake = start().await;
    fake.insert_resource(&pod("web-1", "web", "node-a", true))
        .expect("pod seeds");
    fake.insert_resource(&pod("web-2", "web", "node-b", false))
        .expect("pod seeds");
    fake.insert_resource(&budget("web", "web", 1))
        .expect("budget seeds");
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    let error = api_error(pods.evict("web-1", &EvictParams::default()).await);

    assert_eq!(error.code, 429);
    assert_eq!(error.reason, "TooManyRequests");
    assert!(
        error.message.contains("disruption budget"),
        "message: {}",
        error.message
    );
    assert!(
        fake.get_json("v1", "Pod", NAMESPACE, "web-1").is_some(),
        "a blocked eviction keeps the pod"
    );
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn eviction_of_unready_pod_is_allowed_while_budget_is_met() {
    let fake = start().await;
    fake.insert_resource(&pod("web-1", "web", "node-a", true))
        .expect("pod seeds");
    fake.insert_resource(&pod("web-2", "web", "node-b", false))
        .expect("pod seeds");
    fake.insert_resource(&budget("web", "web", 1))
        .expect("budget seeds");
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    pods.evict("web-2", &EvictParams::default())
        .await
        .expect("the unready pod is evicted");

    assert!(fake.get_json("v1", "Pod", NAMESPACE, "web-2").is_none());
}

#[tokio::test]
async fn eviction_allowed_until_budget_has_no_spare_pods() {
    let fake = start().await;
    for name in ["web-1", "web-2", "web-3"] {
        fake.insert_resource(&pod(name, "web", "node-a", true))
            .expect("pod seeds");
    }
    fake.insert_resource(&budget("web", "web", 2))
        .expect("budget seeds");
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    pods.evict("web-1", &EvictParams::default())
        .await
        .expect("the first eviction fits the budget");
    let error = api_error(pods.evict("web-2", &EvictParams::default()).await);

    assert_eq!(error.code, 429);
    assert!(fake.get_json("v1", "Pod", NAMESPACE, "web-2").is_some());
}

#[tokio::test]
async fn eviction_without_budget_deletes_pod() {
    let fake = start().await;
    fake.insert_resource(&pod("web-1", "web", "node-a", true))
        .expect("pod seeds");
    fake.insert_resource(&budget("db", "db", 1))
        .expect("budget for other pods seeds");
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    let status = pods
        .evict("web-1", &EvictParams::default())
        .await
        .expect("eviction succeeds");

    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    assert!(fake.get_json("v1", "Pod", NAMESPACE, "web-1").is_none());
    let log = writes(&fake);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].verb, "evict");
    assert_eq!(log[0].resource, "pods/eviction");
    assert_eq!(log[0].name, "web-1");
}

#[tokio::test]
async fn eviction_of_missing_pod_returns_not_found() {
    let fake = start().await;
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    let error = api_error(pods.evict("ghost", &EvictParams::default()).await);

    assert_eq!(error.code, 404);
}

#[tokio::test]
async fn dry_run_writes_change_nothing() {
    let fake = start().await;
    let seeded = fake
        .insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    fake.insert_resource(&pod("web-1", "web", "node-a", true))
        .expect("pod seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);
    let before = stored_deployment(&fake, "web");

    let response = deployments
        .patch(
            "web",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({ "spec": { "replicas": 7 } })),
        )
        .await
        .expect("dry-run patch succeeds");
    deployments
        .patch_scale(
            "web",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .expect("dry-run scale succeeds");
    deployments
        .delete("web", &DeleteParams::default().dry_run())
        .await
        .expect("dry-run delete succeeds");
    deployments
        .create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &deployment("api", 1),
        )
        .await
        .expect("dry-run create succeeds");
    let mut evict = EvictParams::default();
    evict.post_options.dry_run = true;
    pods.evict("web-1", &evict)
        .await
        .expect("dry-run eviction succeeds");

    assert_eq!(
        response.spec.and_then(|spec| spec.replicas),
        Some(7),
        "a dry run returns the result"
    );
    assert_eq!(stored_deployment(&fake, "web"), before);
    assert_eq!(
        before["metadata"]["resourceVersion"].as_str(),
        seeded.metadata.resource_version.as_deref()
    );
    assert!(
        fake.get_json("apps/v1", "Deployment", NAMESPACE, "api")
            .is_none()
    );
    assert!(fake.get_json("v1", "Pod", NAMESPACE, "web-1").is_some());
    let log = fake.mutations();
    assert_eq!(log.len(), 5);
    assert!(
        log.iter().all(|mutation| mutation.dry_run),
        "every logged write is a dry run: {log:?}"
    );
}

#[tokio::test]
async fn get_of_unknown_pod_returns_not_found() {
    let fake = start().await;
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    let error = api_error(pods.get("ghost").await);

    assert_eq!(error.code, 404);
    assert_eq!(error.reason, "NotFound");
    assert_eq!(error.message, "pods \"ghost\" not found");
    assert_eq!(
        pods.get_opt("ghost")
            .await
            .expect("get_opt maps 404 to None"),
        None
    );
}

#[tokio::test]
async fn unknown_resource_path_returns_not_found() {
    let fake = start().await;
    let client = fake.client();
    let request = http::Request::get("/apis/example.com/v1/namespaces/shop/widgets")
        .body(Vec::new())
        .expect("the request is well formed");

    let error = api_error(client.request::<Value>(request).await);

    assert_eq!(error.code, 404);
}

#[tokio::test]
async fn malformed_json_body_returns_bad_request() {
    let fake = start().await;
    let client = fake.client();
    let request = http::Request::post("/api/v1/namespaces/shop/configmaps")
        .header("Content-Type", "application/json")
        .body(b"{ not json".to_vec())
        .expect("the request is well formed");

    let error = api_error(client.request::<Value>(request).await);

    assert_eq!(error.code, 400);
    assert_eq!(error.reason, "BadRequest");
}

#[tokio::test]
async fn cluster_scoped_node_is_patched() {
    let fake = start().await;
    fake.insert(json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-a" } }))
        .expect("node seeds");
    let nodes: Api<Node> = Api::all(fake.client());

    nodes
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "spec": { "unschedulable": true } })),
        )
        .await
        .expect("cordon patch succeeds");

    let node = fake
        .get_resource::<Node>("", "node-a")
        .expect("the node exists");
    assert_eq!(node.spec.and_then(|spec| spec.unschedulable), Some(true));
    assert_eq!(node.metadata.namespace, None);
    assert_eq!(writes(&fake)[0].namespace, "");
}

#[tokio::test]
async fn pod_log_returns_text_set_on_fake() {
    let fake = start().await;
    fake.insert_resource(&pod("web-1", "web", "node-a", true))
        .expect("pod seeds");
    fake.set_pod_log(
        NAMESPACE,
        "web-1",
        "starting\nready\npanic: out of memory\n",
    );
    let pods: Api<Pod> = Api::namespaced(fake.client(), NAMESPACE);

    let full = pods
        .logs("web-1", &LogParams::default())
        .await
        .expect("logs succeed");
    let tail = pods
        .logs(
            "web-1",
            &LogParams {
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await
        .expect("tailed logs succeed");

    assert_eq!(full, "starting\nready\npanic: out of memory\n");
    assert_eq!(tail, "panic: out of memory\n");
}

#[tokio::test]
async fn injected_failures_precede_success() {
    let fake = start().await;
    fake.insert_resource(&deployment("web", 2))
        .expect("deployment seeds");
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), NAMESPACE);
    fake.fail_next(2, 503);

    let first = api_error(deployments.get("web").await);
    let second = api_error(deployments.get("web").await);
    let third = deployments.get("web").await;

    assert_eq!(first.code, 503);
    assert_eq!(first.reason, "ServiceUnavailable");
    assert_eq!(second.code, 503);
    assert!(
        third.is_ok(),
        "the third request reaches the store: {third:?}"
    );
}

#[tokio::test]
async fn kubeconfig_file_builds_working_client() {
    let fake = start().await;
    fake.insert(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" }, "data": { "mode": "fast" },
    }))
    .expect("config map seeds");
    let path = std::env::temp_dir().join(format!(
        "steward-fake-kubeconfig-{}.json",
        uuid::Uuid::new_v4()
    ));
    fake.write_kubeconfig(&path)
        .expect("the kubeconfig is written");

    let kubeconfig = kube::config::Kubeconfig::read_from(&path);
    std::fs::remove_file(&path).expect("the kubeconfig file is removed");
    let kubeconfig = kubeconfig.expect("the written kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("the kubeconfig yields a config");
    let client = kube::Client::try_from(config).expect("the config builds a client");
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client);

    let settings = config_maps
        .get("settings")
        .await
        .expect("the client reaches the fake server");

    assert_eq!(
        settings
            .data
            .and_then(|data| data.get("mode").cloned())
            .as_deref(),
        Some("fast")
    );
}

#[tokio::test]
async fn discovery_reports_version_and_kinds() {
    let fake = start().await;
    let client = fake.client();

    let version = client.apiserver_version().await.expect("version succeeds");
    let gvk = kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment");
    let (resource, capabilities) = kube::discovery::oneshot::pinned_kind(&client, &gvk)
        .await
        .expect("discovery finds deployments");

    assert_eq!(version.major, "1");
    assert_eq!(resource.plural, "deployments");
    assert_eq!(capabilities.scope, kube::discovery::Scope::Namespaced);
    assert!(
        capabilities
            .subresources
            .iter()
            .any(|(subresource, _)| subresource.plural == "scale")
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let fake = start().await;
    let client = fake.client();
    client
        .apiserver_version()
        .await
        .expect("the server responds before shutdown");

    fake.shutdown().await;

    let pods: Api<Pod> = Api::namespaced(client, NAMESPACE);
    assert!(
        pods.get("web-1").await.is_err(),
        "requests fail after shutdown"
    );
}

#[tokio::test]
async fn drop_stops_serving() {
    let fake = start().await;
    let client = fake.client();
    client
        .apiserver_version()
        .await
        .expect("the server responds before the drop");

    drop(fake);

    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while client.apiserver_version().await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        stopped.is_ok(),
        "the server still responds 5 s after FakeKube was dropped; Drop does not signal the server task"
    );
}

#[test]
fn label_selector_parses_every_operator() {
    let labels = json!({ "app": "web", "tier": "front" });
    let labels = labels.as_object().expect("labels are a map");
    let cases = [
        ("app=web", true),
        ("app==web", true),
        ("app!=web", false),
        ("app in (web, db)", true),
        ("app notin (web)", false),
        ("tier", true),
        ("!tier", false),
        ("!missing", true),
        ("app=web,tier=back", false),
        ("", true),
    ];
    for (text, expected) in cases {
        let selector =
            LabelSelector::parse(text).unwrap_or_else(|error| panic!("{text:?} parses: {error}"));
        assert_eq!(selector.matches(labels), expected, "selector {text:?}");
    }
}

#[test]
fn label_selector_rejects_unclosed_set() {
    assert!(LabelSelector::parse("app in (web").is_err());
}

#[test]
fn field_selector_compares_nested_fields() {
    let object = json!({ "metadata": { "name": "web-1" }, "status": { "phase": "Running" } });

    let matching =
        FieldSelector::parse("metadata.name=web-1,status.phase!=Pending").expect("selector parses");
    let missing = FieldSelector::parse("spec.nodeName=node-a").expect("selector parses");

    assert!(matching.matches(&object));
    assert!(!missing.matches(&object));
}
