//! Each action through kube-rs against the in-memory Kubernetes API:
//! the resulting objects, dry-run, bad parameters and missing targets.

mod common;

use std::collections::HashMap;

use common::{int, live_writes, params, run, run_and_retry, run_attempt, target};
use serde_json::{Value, json};
use steward_actions::validate;
use steward_execute::Mode;
use steward_execute::actions::{
    ACTION_ID_ANNOTATION, Executor, RESTARTED_AT_ANNOTATION, Report, Request,
};
use steward_proto::v1::TargetKind;
use steward_testkit::kube::FakeKube;
use uuid::Uuid;

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]},
            },
        },
    })
}

fn pod(name: &str, owned: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {"containers": [{"name": "app", "image": "shop/cart:1"}]},
        "status": {"phase": "Running"},
    });
    if owned {
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-7d9f",
            "uid": "5b7c6f1e-0000-4000-8000-000000000001", "controller": true,
        }]);
    }
    pod
}

/// Scales the live deployment `checkout` from `current` to `replicas`, and
/// returns the API server with the report.
async fn scale_checkout(current: i64, replicas: i64) -> (FakeKube, Report) {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(deployment("checkout", current)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "scale_deployment",
        &target(TargetKind::Deployment, "checkout"),
        params([("replicas", int(replicas))]),
    )
    .await;
    (fake, report)
}

/// Seeds the pod `name`, controlled by a ReplicaSet when `owned`, deletes it
/// as a live action, and returns the API server with the report.
async fn delete_seeded_pod(name: &str, owned: bool) -> (FakeKube, Report) {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod(name, owned)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "delete_pod",
        &target(TargetKind::Pod, name),
        HashMap::new(),
    )
    .await;
    (fake, report)
}

#[tokio::test]
async fn restart_deployment_stamps_the_pod_template() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(deployment("checkout", 3)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let action_id = Uuid::new_v4();

    let report = run_attempt(
        &executor,
        action_id,
        "restart_deployment",
        &target(TargetKind::Deployment, "checkout"),
        HashMap::new(),
        1,
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("did patch deployment/shop/checkout"),
        "{report:?}"
    );
    let stored = fake
        .get_json("apps/v1", "deployments", "shop", "checkout")
        .expect("deployment");
    let annotations = &stored["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations[ACTION_ID_ANNOTATION], action_id.to_string());
    assert!(
        annotations[RESTARTED_AT_ANNOTATION].is_string(),
        "{annotations}"
    );
    assert_eq!(
        stored["spec"]["replicas"], 3,
        "the restart changed the replica count"
    );
    assert_eq!(live_writes(&fake), 1);
}

#[tokio::test]
async fn restart_already_applied_by_this_action_is_not_repeated() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(deployment("checkout", 3)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let checkout = target(TargetKind::Deployment, "checkout");

    let (_, retry) =
        run_and_retry(&executor, "restart_deployment", &checkout, HashMap::new()).await;

    assert!(retry.succeeded, "{retry:?}");
    assert!(
        retry.changes[0].contains("already restarted by this action"),
        "{retry:?}"
    );
    assert_eq!(
        live_writes(&fake),
        1,
        "a redelivered restart patched the deployment again"
    );
}

#[tokio::test]
async fn dry_run_restart_changes_nothing_and_says_what_it_would_do() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(deployment("checkout", 3)).expect("seed");
    let before = fake
        .get_json("apps/v1", "deployments", "shop", "checkout")
        .expect("deployment");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = run(
        &executor,
        "restart_deployment",
        &target(TargetKind::Deployment, "checkout"),
        HashMap::new(),
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with(&format!(
            "would patch deployment/shop/checkout: spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}] unset -> "
        )),
        "{report:?}"
    );
    let after = fake
        .get_json("apps/v1", "deployments", "shop", "checkout")
        .expect("deployment");
    assert_eq!(before, after, "dry-run changed the deployment");
    let mutations = fake.mutations();
    assert_eq!(
        mutations.len(),
        1,
        "the API server should validate the patch: {mutations:?}"
    );
    assert!(
        mutations[0].dry_run,
        "the patch was not sent with dryRun=All"
    );
}

#[tokio::test]
async fn dry_run_without_a_cluster_describes_the_request() {
    let executor = Executor::new(None, Mode::DryRun);

    let report = run(
        &executor,
        "scale_deployment",
        &target(TargetKind::Deployment, "checkout"),
        params([("replicas", int(6))]),
    )
    .await;

    assert!(report.succeeded);
    assert_eq!(
        report.changes,
        [
            "would set deployment/shop/checkout spec.replicas to 6 through the scale subresource (no cluster configured: the object was not read)"
        ]
    );
}

#[tokio::test]
async fn scale_deployment_sets_replicas_through_the_scale_subresource() {
    let (fake, report) = scale_checkout(2, 5).await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        ["did scale deployment/shop/checkout: spec.replicas 2 -> 5"]
    );
    let stored = fake
        .get_json("apps/v1", "deployments", "shop", "checkout")
        .expect("deployment");
    assert_eq!(stored["spec"]["replicas"], 5);
    let mutations = fake.mutations();
    assert_eq!(mutations.len(), 1);
    assert_eq!(mutations[0].resource, "deployments/scale");
}

#[tokio::test]
async fn scale_to_the_current_count_changes_nothing() {
    let (fake, report) = scale_checkout(4, 4).await;

    assert!(report.succeeded);
    assert!(
        report.changes[0].contains("already has spec.replicas 4"),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn scale_parameters_out_of_bounds_are_invalid() {
    let too_many = params([("replicas", int(51))]);
    let zero = params([("replicas", int(0))]);

    let many = validate("scale_deployment", TargetKind::Deployment, &too_many)
        .expect_err("the call must fail");
    let none = validate("scale_deployment", TargetKind::Deployment, &zero)
        .expect_err("the call must fail");

    assert_eq!(
        many.to_string(),
        "parameter replicas of scale_deployment is 51, outside 1..=50"
    );
    assert_eq!(
        none.to_string(),
        "parameter replicas of scale_deployment is 0, outside 1..=50"
    );
}

#[tokio::test]
async fn delete_pod_removes_a_controlled_pod() {
    let (fake, report) = delete_seeded_pod("cart-7d9f-x2x", true).await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did delete pod shop/cart-7d9f-x2x (phase Running, owned by ReplicaSet cart-7d9f) with a 30s grace period"
        ]
    );
    assert!(
        fake.get_json("v1", "pods", "shop", "cart-7d9f-x2x")
            .is_none()
    );
}

#[tokio::test]
async fn delete_pod_refuses_a_pod_without_controller() {
    let (fake, report) = delete_seeded_pod("debug-shell", false).await;

    assert!(!report.succeeded);
    assert!(report.error.contains("has no controller"), "{report:?}");
    assert!(fake.get_json("v1", "pods", "shop", "debug-shell").is_some());
}

#[tokio::test]
async fn delete_pod_gone_after_an_interrupted_attempt_succeeds() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let cart = target(TargetKind::Pod, "cart-1");

    let first = run_attempt(
        &executor,
        Uuid::new_v4(),
        "delete_pod",
        &cart,
        HashMap::new(),
        1,
    )
    .await;
    let retry = run_attempt(
        &executor,
        Uuid::new_v4(),
        "delete_pod",
        &cart,
        HashMap::new(),
        2,
    )
    .await;

    assert!(
        !first.succeeded,
        "a first attempt on a missing pod must fail: {first:?}"
    );
    assert_eq!(first.error, "pod shop/cart-1 not found");
    assert!(retry.succeeded, "{retry:?}");
}

#[tokio::test]
async fn missing_targets_fail_with_not_found() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let ghost = target(TargetKind::Deployment, "ghost");

    let restart = run(&executor, "restart_deployment", &ghost, HashMap::new()).await;
    let scale = run(
        &executor,
        "scale_deployment",
        &ghost,
        params([("replicas", int(2))]),
    )
    .await;

    assert_eq!(restart.error, "deployment/shop/ghost not found");
    assert!(scale.error.contains("not found"), "{scale:?}");
    assert!(!restart.succeeded && !scale.succeeded);
}

#[tokio::test]
async fn server_errors_are_transient() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(deployment("checkout", 3)).expect("seed");
    fake.fail_next(1, 503);
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let (_, parameters) = validate(
        "restart_deployment",
        TargetKind::Deployment,
        &HashMap::new(),
    )
    .expect("valid");
    let checkout = target(TargetKind::Deployment, "checkout");
    let request = Request {
        action_id: Uuid::new_v4(),
        action: "restart_deployment",
        parameters: &parameters,
        target: &checkout,
        attempts: 1,
    };

    let first = executor.run(&request).await;
    let second = executor.run(&request).await;

    let error = first.expect_err("a 503 must be retried");
    assert!(error.to_string().contains("503"), "{error}");
    assert!(second.expect("the retry succeeds").succeeded);
}

#[tokio::test]
async fn notify_only_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "notify_only",
        &target(TargetKind::Pod, "cart-1"),
        HashMap::new(),
    )
    .await;

    assert!(report.succeeded);
    assert_eq!(
        report.changes,
        ["no change: the alert is escalated to people"]
    );
    assert!(fake.mutations().is_empty());
}
