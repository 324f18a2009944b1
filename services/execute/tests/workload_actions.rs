//! rollback_deployment, increase_resources, update_hpa and delete_failed_job
//! against the in-memory Kubernetes API: the resulting objects, dry-run,
//! bad parameters, missing targets and repeated attempts.

mod common;

use std::collections::HashMap;

use common::{
    assert_one_dry_run_write, assert_one_write_with_resource_version, int, live_writes, params,
    run, run_and_retry, run_attempt, target, text,
};
use serde_json::{Value, json};
use steward_actions::{ValidationError, validate};
use steward_execute::Mode;
use steward_execute::actions::{ACTION_ID_ANNOTATION, Executor, Report};
use steward_proto::v1::{ParameterValue, TargetKind};
use steward_testkit::kube::FakeKube;
use uuid::Uuid;

const REVISION: &str = "deployment.kubernetes.io/revision";

// Rollback

/// Builds the `web` deployment, whose current template runs `image`.
fn web_deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {REVISION: "3"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "track": "canary"}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": image,
                    "env": [{"name": "FEATURE_X", "value": "on"}],
                }]},
            },
        },
    })
}

/// Builds a ReplicaSet at `revision`, owned by the object with `owner_uid`.
fn replica_set(name: &str, owner_uid: &str, revision: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "annotations": {REVISION: revision.to_string()},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": owner_uid, "controller": true,
            }],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": name}},
            "template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    })
}

/// Seeds the `web` deployment at revision 3 (image `web:3`) with its
/// ReplicaSets for revisions 1 to 3, and returns the deployment's uid.
fn seed_web_history(fake: &FakeKube) -> String {
    let deployment = fake.insert(web_deployment("web:3")).expect("seed");
    let uid = deployment["metadata"]["uid"]
        .as_str()
        .expect("the fake API server stamps a uid")
        .to_owned();
    fake.insert(replica_set("web-1", &uid, 1, "web:1"))
        .expect("seed");
    fake.insert(replica_set("web-2", &uid, 2, "web:2"))
        .expect("seed");
    let mut current = replica_set("web-3", &uid, 3, "web:3");
    current["spec"]["template"] = web_deployment("web:3")["spec"]["template"].clone();
    fake.insert(current).expect("seed");
    uid
}

async fn rollback_web(executor: &Executor) -> Report {
    run(
        executor,
        "rollback_deployment",
        &target(TargetKind::Deployment, "web"),
        HashMap::new(),
    )
    .await
}

fn stored_deployment(fake: &FakeKube) -> Value {
    fake.get_json("apps/v1", "deployments", "shop", "web")
        .expect("deployment")
}

#[tokio::test]
async fn rollback_restores_the_previous_template() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_web_history(&fake);
    // A ReplicaSet of another owner, with a higher revision, must not count.
    fake.insert(replica_set("other-9", "another-uid", 9, "other:9"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let action_id = Uuid::new_v4();

    let report = run_attempt(
        &executor,
        action_id,
        "rollback_deployment",
        &target(TargetKind::Deployment, "web"),
        HashMap::new(),
        1,
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did patch deployment/shop/web: spec.template revision 3 (ReplicaSet web-3) -> revision 2 (ReplicaSet web-2); images app=web:3 -> app=web:2 (rollout undo)"
        ]
    );
    let template = &stored_deployment(&fake)["spec"]["template"];
    assert_eq!(
        template["spec"]["containers"],
        json!([{"name": "app", "image": "web:2"}]),
        "the containers are not exactly those of revision 2"
    );
    assert_eq!(
        template["metadata"]["labels"],
        json!({"app": "web"}),
        "labels of revision 3 or the pod-template-hash label remain"
    );
    assert_eq!(
        template["metadata"]["annotations"][ACTION_ID_ANNOTATION],
        action_id.to_string()
    );
    assert_one_write_with_resource_version(&fake);
}

#[tokio::test]
async fn rollback_retry_is_not_repeated() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_web_history(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let web = target(TargetKind::Deployment, "web");

    let (first, retry) =
        run_and_retry(&executor, "rollback_deployment", &web, HashMap::new()).await;

    assert!(first.succeeded, "{first:?}");
    assert!(retry.succeeded, "{retry:?}");
    assert_eq!(
        retry.changes,
        [
            "deployment/shop/web was already rolled back by this action in an earlier attempt; nothing to do"
        ]
    );
    assert_eq!(
        live_writes(&fake),
        1,
        "a redelivered rollback patched the deployment again"
    );
}

#[tokio::test]
async fn rollback_to_the_current_template_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    let deployment = fake.insert(web_deployment("web:2")).expect("seed");
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    let mut previous = replica_set("web-2", uid, 2, "web:2");
    previous["spec"]["template"] = web_deployment("web:2")["spec"]["template"].clone();
    previous["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] = json!("web-2");
    fake.insert(previous).expect("seed");
    fake.insert(replica_set("web-3", uid, 3, "web:3"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = rollback_web(&executor).await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].contains("already has the pod template of revision 2"),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn rollback_without_previous_revision_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let deployment = fake.insert(web_deployment("web:1")).expect("seed");
    let uid = deployment["metadata"]["uid"].as_str().expect("uid");
    fake.insert(replica_set("web-1", uid, 1, "web:1"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = rollback_web(&executor).await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report
            .error
            .starts_with("deployment/shop/web has no previous revision to roll back to: it owns one ReplicaSet with a revision (web-1, revision 1)"),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn rollback_of_paused_deployment_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_web_history(&fake);
    let mut paused = stored_deployment(&fake);
    paused["spec"]["paused"] = json!(true);
    fake.insert(paused).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = rollback_web(&executor).await;

    assert!(!report.succeeded, "{report:?}");
    assert!(report.error.contains("is paused"), "{report:?}");
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn dry_run_rollback_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_web_history(&fake);
    let before = stored_deployment(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = rollback_web(&executor).await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("would patch deployment/shop/web: spec.template revision 3"),
        "{report:?}"
    );
    assert_eq!(
        before,
        stored_deployment(&fake),
        "dry-run changed the deployment"
    );
    assert_one_dry_run_write(&fake, "patch");
}

#[tokio::test]
async fn rollback_of_missing_deployment_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "rollback_deployment",
        &target(TargetKind::Deployment, "ghost"),
        HashMap::new(),
    )
    .await;

    assert!(!report.succeeded);
    assert!(
        report.error.starts_with("deployment/shop/ghost not found"),
        "{report:?}"
    );
}

#[tokio::test]
async fn rollback_takes_no_parameters() {
    let error = validate(
        "rollback_deployment",
        TargetKind::Deployment,
        &params([("revision", int(2))]),
    )
    .expect_err("an unknown parameter must be invalid");

    assert!(
        matches!(error, ValidationError::UnknownParameter { .. }),
        "{error}"
    );
}

// Resources

/// Builds a workload of `kind` with the containers `app` and `sidecar`.
fn workload(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {
                        "name": "app",
                        "image": "shop/app:1",
                        "resources": {
                            "limits": {"memory": "512Mi"},
                            "requests": {"memory": "256Mi", "cpu": "250m"},
                        },
                    },
                    {
                        "name": "sidecar",
                        "image": "shop/proxy:1",
                        "resources": {"limits": {"memory": "64Mi"}},
                    },
                ]},
            },
        },
    })
}

/// Runs increase_resources with `parameters` on a `cart` deployment that
/// [`workload`] builds, and returns the API server with the report.
async fn increase_cart_resources(
    parameters: HashMap<String, ParameterValue>,
) -> (FakeKube, Report) {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("Deployment", "cart")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "increase_resources",
        &target(TargetKind::Deployment, "cart"),
        parameters,
    )
    .await;
    (fake, report)
}

fn containers(fake: &FakeKube, plural: &str, name: &str) -> Value {
    fake.get_json("apps/v1", plural, "shop", name)
        .expect("workload")["spec"]["template"]["spec"]["containers"]
        .clone()
}

#[tokio::test]
async fn increase_resources_raises_one_container() {
    let (fake, report) = increase_cart_resources(params([
        ("container", text("app")),
        ("memory_limit", text("1Gi")),
        ("cpu_request", text("500m")),
    ]))
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did patch deployment/shop/cart container app: resources.limits.memory 512Mi -> 1Gi",
            "did patch deployment/shop/cart container app: resources.requests.cpu 250m -> 500m",
        ]
    );
    let containers = containers(&fake, "deployments", "cart");
    assert_eq!(
        containers[0]["resources"],
        json!({
            "limits": {"memory": "1Gi"},
            "requests": {"memory": "256Mi", "cpu": "500m"},
        })
    );
    assert_eq!(
        containers[1],
        workload("Deployment", "cart")["spec"]["template"]["spec"]["containers"][1],
        "the other container changed"
    );
    let mutations = fake.mutations();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert_eq!(
        mutations[0].patch_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
}

#[tokio::test]
async fn increase_resources_works_on_statefulsets_and_daemonsets() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("StatefulSet", "db")).expect("seed");
    fake.insert(workload("DaemonSet", "agent")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let change = || {
        params([
            ("container", text("sidecar")),
            ("memory_limit", text("128Mi")),
        ])
    };

    let statefulset = run(
        &executor,
        "increase_resources",
        &target(TargetKind::Statefulset, "db"),
        change(),
    )
    .await;
    let daemonset = run(
        &executor,
        "increase_resources",
        &target(TargetKind::Daemonset, "agent"),
        change(),
    )
    .await;

    assert!(statefulset.succeeded, "{statefulset:?}");
    assert!(daemonset.succeeded, "{daemonset:?}");
    assert_eq!(
        containers(&fake, "statefulsets", "db")[1]["resources"]["limits"]["memory"],
        "128Mi"
    );
    assert_eq!(
        containers(&fake, "daemonsets", "agent")[1]["resources"]["limits"]["memory"],
        "128Mi"
    );
}

#[tokio::test]
async fn increase_resources_above_maximum_is_rejected() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("Deployment", "cart")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let cart = target(TargetKind::Deployment, "cart");

    let memory = run(
        &executor,
        "increase_resources",
        &cart,
        params([("container", text("app")), ("memory_limit", text("32Gi"))]),
    )
    .await;
    let cpu = run(
        &executor,
        "increase_resources",
        &cart,
        params([("container", text("app")), ("cpu_request", text("8500m"))]),
    )
    .await;

    assert!(!memory.succeeded);
    assert_eq!(
        memory.error,
        "parameter memory_limit of increase_resources on deployment/shop/cart is 32Gi, above the maximum of 16Gi that Steward may set; choose a smaller value or raise --max-container-memory"
    );
    assert!(!cpu.succeeded);
    assert_eq!(
        cpu.error,
        "parameter cpu_request of increase_resources on deployment/shop/cart is 8500m, above the maximum of 8 cores that Steward may set; choose a smaller value or raise --max-container-cpu"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn increase_resources_lower_value_is_rejected() {
    let (fake, report) = increase_cart_resources(params([
        ("container", text("app")),
        ("memory_limit", text("0.25Gi")),
    ]))
    .await;

    assert!(!report.succeeded);
    assert!(
        report.error.contains(
            "is 0.25Gi, below the current resources.limits.memory 512Mi of container app in deployment/shop/cart"
        ),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn increase_resources_request_above_limit_is_rejected() {
    let (fake, report) = increase_cart_resources(params([
        ("container", text("app")),
        ("memory_request", text("1Gi")),
    ]))
    .await;

    assert!(!report.succeeded);
    assert!(
        report
            .error
            .contains("resources.requests.memory 1Gi above resources.limits.memory 512Mi"),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn increase_resources_unknown_container_lists_containers() {
    let (fake, report) = increase_cart_resources(params([
        ("container", text("worker")),
        ("memory_limit", text("1Gi")),
    ]))
    .await;

    assert!(!report.succeeded);
    assert_eq!(
        report.error,
        "deployment/shop/cart has no container \"worker\"; its containers are app, sidecar; choose one of them"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn increase_resources_needs_a_resource_parameter() {
    let (fake, report) = increase_cart_resources(params([("container", text("app"))])).await;

    assert!(!report.succeeded);
    assert_eq!(
        report.error,
        "increase_resources on deployment/shop/cart needs at least one of the parameters memory_limit, memory_request, cpu_limit, cpu_request; none was given"
    );
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn increase_resources_bad_parameters_are_invalid() {
    let kind = TargetKind::Deployment;

    let no_container = validate(
        "increase_resources",
        kind,
        &params([("memory_limit", text("1Gi"))]),
    )
    .expect_err("a missing container must be invalid");
    let bad_quantity = validate(
        "increase_resources",
        kind,
        &params([("container", text("app")), ("memory_limit", text("lots"))]),
    )
    .expect_err("a value that is not a quantity must be invalid");
    let number = validate(
        "increase_resources",
        kind,
        &params([("container", text("app")), ("cpu_limit", int(2))]),
    )
    .expect_err("a number where a quantity string is expected must be invalid");

    assert!(
        matches!(
            no_container,
            ValidationError::MissingParameter {
                name: "container",
                ..
            }
        ),
        "{no_container}"
    );
    assert!(
        matches!(
            bad_quantity,
            ValidationError::BadText {
                name: "memory_limit",
                ..
            }
        ),
        "{bad_quantity}"
    );
    assert!(
        matches!(
            number,
            ValidationError::WrongType {
                name: "cpu_limit",
                ..
            }
        ),
        "{number}"
    );
}

#[tokio::test]
async fn increase_resources_retry_is_not_repeated() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("Deployment", "cart")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let cart = target(TargetKind::Deployment, "cart");
    let change = || params([("container", text("app")), ("memory_limit", text("1Gi"))]);

    let (first, retry) = run_and_retry(&executor, "increase_resources", &cart, change()).await;
    let other_action = run(&executor, "increase_resources", &cart, change()).await;

    assert!(first.succeeded, "{first:?}");
    assert!(retry.succeeded, "{retry:?}");
    assert!(
        retry.changes[0].contains("already changed by this action"),
        "{retry:?}"
    );
    assert!(other_action.succeeded, "{other_action:?}");
    assert_eq!(
        other_action.changes,
        [
            "deployment/shop/cart container app already has resources.limits.memory 1Gi",
            "deployment/shop/cart container app already has the requested resources; nothing to change",
        ]
    );
    assert_eq!(live_writes(&fake), 1, "the same change was patched again");
}

#[tokio::test]
async fn dry_run_increase_resources_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("Deployment", "cart")).expect("seed");
    let before = containers(&fake, "deployments", "cart");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = run(
        &executor,
        "increase_resources",
        &target(TargetKind::Deployment, "cart"),
        params([("container", text("app")), ("cpu_limit", text("2"))]),
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        ["would patch deployment/shop/cart container app: resources.limits.cpu unset -> 2"]
    );
    assert_eq!(before, containers(&fake, "deployments", "cart"));
    assert_one_dry_run_write(&fake, "patch");
}

#[tokio::test]
async fn increase_resources_of_missing_workload_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "increase_resources",
        &target(TargetKind::Statefulset, "ghost"),
        params([("container", text("app")), ("cpu_limit", text("2"))]),
    )
    .await;

    assert!(!report.succeeded);
    assert!(
        report.error.starts_with("statefulset/shop/ghost not found"),
        "{report:?}"
    );
}

// Autoscalers

fn hpa(min: i64, max: i64) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"},
            "minReplicas": min,
            "maxReplicas": max,
        },
    })
}

/// Runs update_hpa with `parameters` on the autoscaler `cart`, which allows 2
/// to 10 replicas, and returns the API server with the report.
async fn update_cart_hpa(parameters: HashMap<String, ParameterValue>) -> (FakeKube, Report) {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(hpa(2, 10)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "update_hpa",
        &target(TargetKind::HorizontalPodAutoscaler, "cart"),
        parameters,
    )
    .await;
    (fake, report)
}

fn stored_hpa_spec(fake: &FakeKube) -> Value {
    fake.get_json("autoscaling/v2", "horizontalpodautoscalers", "shop", "cart")
        .expect("autoscaler")["spec"]
        .clone()
}

#[tokio::test]
async fn update_hpa_sets_min_and_max() {
    let (fake, report) = update_cart_hpa(params([
        ("min_replicas", int(4)),
        ("max_replicas", int(20)),
    ]))
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did patch horizontalpodautoscaler/shop/cart: spec.minReplicas 2 -> 4",
            "did patch horizontalpodautoscaler/shop/cart: spec.maxReplicas 10 -> 20",
        ]
    );
    let spec = stored_hpa_spec(&fake);
    assert_eq!(spec["minReplicas"], 4);
    assert_eq!(spec["maxReplicas"], 20);
    assert_eq!(spec["scaleTargetRef"]["name"], "cart");
}

#[tokio::test]
async fn update_hpa_changes_only_the_given_bound() {
    let (fake, report) = update_cart_hpa(params([("max_replicas", int(15))])).await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        ["did patch horizontalpodautoscaler/shop/cart: spec.maxReplicas 10 -> 15"]
    );
    let spec = stored_hpa_spec(&fake);
    assert_eq!(spec["minReplicas"], 2);
    assert_eq!(spec["maxReplicas"], 15);
}

#[tokio::test]
async fn update_hpa_min_above_max_is_rejected() {
    let (fake, report) = update_cart_hpa(params([("min_replicas", int(12))])).await;

    assert!(!report.succeeded);
    assert_eq!(
        report.error,
        "update_hpa would leave horizontalpodautoscaler/shop/cart with spec.minReplicas 12 above spec.maxReplicas 10; choose min_replicas at or below max_replicas"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn update_hpa_needs_a_parameter() {
    let (fake, report) = update_cart_hpa(HashMap::new()).await;

    assert!(!report.succeeded);
    assert_eq!(
        report.error,
        "update_hpa on horizontalpodautoscaler/shop/cart needs min_replicas, max_replicas or both; neither was given"
    );
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn update_hpa_parameters_out_of_bounds_are_invalid() {
    let kind = TargetKind::HorizontalPodAutoscaler;

    let too_many = validate("update_hpa", kind, &params([("max_replicas", int(201))]))
        .expect_err("max_replicas above 200 must be invalid");
    let zero = validate("update_hpa", kind, &params([("min_replicas", int(0))]))
        .expect_err("min_replicas 0 must be invalid");

    assert_eq!(
        too_many.to_string(),
        "parameter max_replicas of update_hpa is 201, outside 1..=200"
    );
    assert_eq!(
        zero.to_string(),
        "parameter min_replicas of update_hpa is 0, outside 1..=100"
    );
}

#[tokio::test]
async fn update_hpa_second_attempt_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(hpa(2, 10)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let cart = target(TargetKind::HorizontalPodAutoscaler, "cart");
    let change = params([("min_replicas", int(3))]);

    let (first, retry) = run_and_retry(&executor, "update_hpa", &cart, change).await;

    assert!(first.succeeded, "{first:?}");
    assert!(retry.succeeded, "{retry:?}");
    assert_eq!(
        retry.changes,
        [
            "horizontalpodautoscaler/shop/cart already has spec.minReplicas 3 and spec.maxReplicas 10; nothing to change"
        ]
    );
    assert_eq!(live_writes(&fake), 1);
}

#[tokio::test]
async fn dry_run_update_hpa_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(hpa(2, 10)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = run(
        &executor,
        "update_hpa",
        &target(TargetKind::HorizontalPodAutoscaler, "cart"),
        params([("max_replicas", int(30))]),
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        ["would patch horizontalpodautoscaler/shop/cart: spec.maxReplicas 10 -> 30"]
    );
    assert_eq!(stored_hpa_spec(&fake)["maxReplicas"], 10);
    assert_one_dry_run_write(&fake, "patch");
}

#[tokio::test]
async fn update_hpa_of_missing_autoscaler_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "update_hpa",
        &target(TargetKind::HorizontalPodAutoscaler, "ghost"),
        params([("max_replicas", int(30))]),
    )
    .await;

    assert!(!report.succeeded);
    assert!(
        report
            .error
            .starts_with("horizontalpodautoscaler/shop/ghost not found"),
        "{report:?}"
    );
}

// Jobs

/// Builds a job named `name` with `status`.
fn job(name: &str, status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "migrate", "image": "shop/migrate:1"}],
        }}},
        "status": status,
    })
}

fn failed_status() -> Value {
    json!({
        "failed": 3,
        "conditions": [{
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }],
    })
}

async fn delete_failed_job(executor: &Executor, name: &str) -> Report {
    run(
        executor,
        "delete_failed_job",
        &target(TargetKind::Job, name),
        HashMap::new(),
    )
    .await
}

fn stored_job(fake: &FakeKube, name: &str) -> Option<Value> {
    fake.get_json("batch/v1", "jobs", "shop", name)
}

#[tokio::test]
async fn delete_failed_job_deletes_it_with_its_pods() {
    let fake = FakeKube::start().await.expect("fake API");
    let seeded = fake.insert(job("migrate", failed_status())).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = delete_failed_job(&executor, "migrate").await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did delete job/shop/migrate (condition Failed (BackoffLimitExceeded: Job has reached the specified backoff limit), 3 failed pods) with its pods (propagationPolicy Background)"
        ]
    );
    assert!(stored_job(&fake, "migrate").is_none());
    let mutations = fake.mutations();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert_eq!(mutations[0].body["propagationPolicy"], "Background");
    assert_eq!(
        mutations[0].body["preconditions"]["uid"],
        seeded["metadata"]["uid"]
    );
}

#[tokio::test]
async fn delete_failed_job_accepts_failed_pods_without_condition() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(job("migrate", json!({"failed": 1, "active": 0})))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = delete_failed_job(&executor, "migrate").await;

    assert!(report.succeeded, "{report:?}");
    assert!(stored_job(&fake, "migrate").is_none());
}

#[tokio::test]
async fn delete_failed_job_keeps_unfailed_jobs() {
    let fake = FakeKube::start().await.expect("fake API");
    let cases = [
        (
            "running",
            json!({"active": 1, "failed": 1}),
            "still has 1 active pods",
        ),
        ("fresh", json!({"active": 0}), "has not failed"),
        (
            "done",
            json!({"succeeded": 1, "failed": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
            "has completed successfully",
        ),
    ];
    for (name, status, _) in &cases {
        fake.insert(job(name, status.clone())).expect("seed");
    }
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    for (name, _, expected) in &cases {
        let report = delete_failed_job(&executor, name).await;

        assert!(!report.succeeded, "job {name} was deleted: {report:?}");
        assert!(
            report.error.starts_with(&format!("job/shop/{name} ")),
            "{report:?}"
        );
        assert!(report.error.contains(expected), "{report:?}");
        assert!(stored_job(&fake, name).is_some(), "job {name} is gone");
    }
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn delete_failed_job_gone_after_earlier_attempt_succeeds() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let migrate = target(TargetKind::Job, "migrate");

    let first = run_attempt(
        &executor,
        Uuid::new_v4(),
        "delete_failed_job",
        &migrate,
        HashMap::new(),
        1,
    )
    .await;
    let retry = run_attempt(
        &executor,
        Uuid::new_v4(),
        "delete_failed_job",
        &migrate,
        HashMap::new(),
        2,
    )
    .await;

    assert!(
        !first.succeeded,
        "a first attempt on a missing job must fail: {first:?}"
    );
    assert!(
        first.error.starts_with("job/shop/migrate not found"),
        "{first:?}"
    );
    assert!(retry.succeeded, "{retry:?}");
    assert_eq!(
        retry.changes,
        ["job/shop/migrate is gone; an earlier attempt of this action deleted it"]
    );
}

#[tokio::test]
async fn dry_run_delete_failed_job_keeps_the_job() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(job("migrate", failed_status())).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = delete_failed_job(&executor, "migrate").await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("would delete job/shop/migrate"),
        "{report:?}"
    );
    assert!(stored_job(&fake, "migrate").is_some());
    assert_one_dry_run_write(&fake, "delete");
}

#[tokio::test]
async fn delete_failed_job_takes_no_parameters() {
    let error = validate(
        "delete_failed_job",
        TargetKind::Job,
        &params([("grace_period_seconds", int(5))]),
    )
    .expect_err("an unknown parameter must be invalid");

    assert!(
        matches!(error, ValidationError::UnknownParameter { .. }),
        "{error}"
    );
}
