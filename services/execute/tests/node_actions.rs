//! cordon_node, uncordon_node and drain_node against the in-memory
//! Kubernetes API: the node and its pods afterwards, disruption budgets,
//! pods a drain leaves alone, dry-run, bad parameters and missing nodes.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use common::{
    assert_one_dry_run_write, assert_one_write_with_resource_version, int, live_writes, params,
    run, run_and_retry, run_attempt, target_in,
};
use serde_json::{Value, json};
use steward_actions::validate;
use steward_execute::Mode;
use steward_execute::actions::{ACTION_ID_ANNOTATION, Executor, Report};
use steward_proto::v1::{ParameterValue, Target, TargetKind};
use steward_testkit::kube::FakeKube;
use uuid::Uuid;

/// Maximum time of a drain that has nothing to wait for.
const QUICK: Duration = Duration::from_secs(10);

fn node_target(name: &str) -> Target {
    target_in(TargetKind::Node, "", name)
}

fn node(name: &str, unschedulable: bool) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"unschedulable": unschedulable},
    })
}

/// Builds a running pod on `node`, labelled `app`, controlled by `owner` (kind and
/// name) when given.
fn pod(namespace: &str, name: &str, node: &str, app: &str, owner: Option<(&str, &str)>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": format!("{app}:1")}],
        },
        "status": {"phase": "Running"},
    });
    if let Some((kind, owner_name)) = owner {
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": owner_name,
            "uid": format!("uid-of-{owner_name}"), "controller": true,
        }]);
    }
    pod
}

/// Builds a budget that lets no pod labelled `app` go while only one is healthy.
fn budget(app: &str) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": "shop"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
    })
}

/// Runs an action that takes no parameters on the node `name`.
async fn run_on_node(executor: &Executor, action: &str, name: &str) -> Report {
    run(executor, action, &node_target(name), HashMap::new()).await
}

/// Awaits `future`, failing the test after `limit` with `why`.
async fn within<T>(limit: Duration, why: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {why}"))
}

fn stored_node(fake: &FakeKube, name: &str) -> Value {
    fake.get_json("v1", "nodes", "", name).expect("node")
}

fn pod_exists(fake: &FakeKube, namespace: &str, name: &str) -> bool {
    fake.get_json("v1", "pods", namespace, name).is_some()
}

fn drain_params(
    timeout_seconds: i64,
    grace_period_seconds: i64,
) -> HashMap<String, ParameterValue> {
    params([
        ("timeout_seconds", int(timeout_seconds)),
        ("grace_period_seconds", int(grace_period_seconds)),
    ])
}

// Cordon and uncordon

#[tokio::test]
async fn cordon_marks_node_unschedulable() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(node("n1", false)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let action_id = Uuid::new_v4();

    let report = run_attempt(
        &executor,
        action_id,
        "cordon_node",
        &node_target("n1"),
        HashMap::new(),
        1,
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        ["did patch node/n1: spec.unschedulable false -> true (cordon)"]
    );
    let stored = stored_node(&fake, "n1");
    assert_eq!(stored["spec"]["unschedulable"], true);
    assert_eq!(
        stored["metadata"]["annotations"][ACTION_ID_ANNOTATION],
        action_id.to_string()
    );
    assert_one_write_with_resource_version(&fake);
}

#[tokio::test]
async fn cordon_second_attempt_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(node("n1", false)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let n1 = node_target("n1");

    let (first, retry) = run_and_retry(&executor, "cordon_node", &n1, HashMap::new()).await;

    assert!(first.succeeded, "{first:?}");
    assert!(retry.succeeded, "{retry:?}");
    assert_eq!(
        retry.changes,
        ["node/n1 is already cordoned; nothing to change"]
    );
    assert_eq!(live_writes(&fake), 1, "the node was patched twice");
}

#[tokio::test]
async fn uncordon_makes_node_schedulable() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(node("n1", true)).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run_on_node(&executor, "uncordon_node", "n1").await;
    let again = run_on_node(&executor, "uncordon_node", "n1").await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        ["did patch node/n1: spec.unschedulable true -> false (uncordon)"]
    );
    let unschedulable = &stored_node(&fake, "n1")["spec"]["unschedulable"];
    assert!(
        unschedulable.is_null() || unschedulable == false,
        "spec.unschedulable is {unschedulable}"
    );
    assert!(again.succeeded, "{again:?}");
    assert_eq!(
        again.changes,
        ["node/n1 is already schedulable; nothing to change"]
    );
    assert_eq!(live_writes(&fake), 1);
}

#[tokio::test]
async fn dry_run_cordon_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(node("n1", false)).expect("seed");
    let before = stored_node(&fake, "n1");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = run_on_node(&executor, "cordon_node", "n1").await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        ["would patch node/n1: spec.unschedulable false -> true (cordon)"]
    );
    assert_eq!(before, stored_node(&fake, "n1"), "dry-run changed the node");
    assert_one_dry_run_write(&fake, "patch");
}

#[tokio::test]
async fn cordon_of_missing_node_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let cordon = run_on_node(&executor, "cordon_node", "ghost").await;
    let uncordon = run_on_node(&executor, "uncordon_node", "ghost").await;

    assert!(!cordon.succeeded);
    assert_eq!(
        cordon.error,
        "node/ghost not found; check the node name with `kubectl get nodes`"
    );
    assert!(!uncordon.succeeded);
    assert_eq!(uncordon.error, cordon.error);
}

#[tokio::test]
async fn cordon_takes_no_parameters() {
    let timeout = params([("timeout_seconds", int(60))]);

    let error = validate("cordon_node", TargetKind::Node, &timeout)
        .expect_err("an unknown parameter must be invalid");

    assert_eq!(
        error.to_string(),
        "action cordon_node has no parameter \"timeout_seconds\""
    );
}

// Drain

/// Seeds node n1 with a ReplicaSet pod, a DaemonSet pod, a mirror pod and a
/// pod without controller, and node n2 with one ReplicaSet pod.
fn seed_drain(fake: &FakeKube) {
    fake.insert(node("n1", false)).expect("seed");
    fake.insert(node("n2", false)).expect("seed");
    fake.insert(pod(
        "shop",
        "web-1",
        "n1",
        "web",
        Some(("ReplicaSet", "web-7d9f")),
    ))
    .expect("seed");
    fake.insert(pod(
        "shop",
        "web-2",
        "n2",
        "web",
        Some(("ReplicaSet", "web-7d9f")),
    ))
    .expect("seed");
    fake.insert(pod(
        "kube-system",
        "fluentd-x1",
        "n1",
        "fluentd",
        Some(("DaemonSet", "fluentd")),
    ))
    .expect("seed");
    let mut mirror = pod("kube-system", "etcd-n1", "n1", "etcd", Some(("Node", "n1")));
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "4f1c"});
    fake.insert(mirror).expect("seed");
    fake.insert(pod("shop", "debug-shell", "n1", "debug", None))
        .expect("seed");
}

#[tokio::test]
async fn drain_cordons_and_evicts_controlled_pods() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_drain(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = within(
        QUICK,
        "a drain without disruption budgets waited",
        run(
            &executor,
            "drain_node",
            &node_target("n1"),
            drain_params(60, 10),
        ),
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did patch node/n1: spec.unschedulable false -> true (cordon)",
            "skipped pod kube-system/etcd-n1: mirror pod of a static pod, which only the kubelet's manifest removes",
            "skipped pod kube-system/fluentd-x1: owned by DaemonSet fluentd, whose pods stay on cordoned nodes",
            "skipped pod shop/debug-shell: no controller would recreate it elsewhere; delete it by hand if it may go",
            "did evict pod shop/web-1 with a 10s grace period",
        ]
    );
    assert_eq!(report.details["evicted"], json!(["pod shop/web-1"]));
    assert_eq!(stored_node(&fake, "n1")["spec"]["unschedulable"], true);
    assert!(!pod_exists(&fake, "shop", "web-1"), "web-1 was not evicted");
    assert!(
        pod_exists(&fake, "shop", "web-2"),
        "a pod on another node was evicted"
    );
    assert!(pod_exists(&fake, "kube-system", "fluentd-x1"));
    assert!(pod_exists(&fake, "kube-system", "etcd-n1"));
    assert!(pod_exists(&fake, "shop", "debug-shell"));

    let evictions: Vec<_> = fake
        .mutations()
        .into_iter()
        .filter(|m| m.verb == "evict")
        .collect();
    assert_eq!(evictions.len(), 1, "{evictions:?}");
    assert_eq!(evictions[0].resource, "pods/eviction");
    assert_eq!(evictions[0].body["deleteOptions"]["gracePeriodSeconds"], 10);
}

#[tokio::test]
async fn drain_second_attempt_finds_nothing_to_evict() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_drain(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let action_id = Uuid::new_v4();
    let n1 = node_target("n1");

    let first = within(
        QUICK,
        "the first drain waited",
        run_attempt(
            &executor,
            action_id,
            "drain_node",
            &n1,
            drain_params(60, 10),
            1,
        ),
    )
    .await;
    let writes = live_writes(&fake);
    let retry = within(
        QUICK,
        "the second drain waited",
        run_attempt(
            &executor,
            action_id,
            "drain_node",
            &n1,
            drain_params(60, 10),
            2,
        ),
    )
    .await;

    assert!(first.succeeded, "{first:?}");
    assert!(retry.succeeded, "{retry:?}");
    assert_eq!(
        retry.changes[0],
        "node/n1 is already cordoned; nothing to change"
    );
    assert!(
        retry.changes.iter().all(|line| !line.contains("evict")),
        "{retry:?}"
    );
    assert_eq!(live_writes(&fake), writes, "the second drain wrote again");
}

/// Seeds node n1 with the StatefulSet pod api-0, whose budget blocks its
/// eviction, and the ReplicaSet pod web-1. Pods are evicted in name order, so
/// the eviction of api-0 is blocked before web-1 is evicted.
fn seed_blocked_drain(fake: &FakeKube) {
    fake.insert(node("n1", false)).expect("seed");
    fake.insert(pod(
        "shop",
        "api-0",
        "n1",
        "api",
        Some(("StatefulSet", "api")),
    ))
    .expect("seed");
    fake.insert(pod(
        "shop",
        "web-1",
        "n1",
        "web",
        Some(("ReplicaSet", "web-7d9f")),
    ))
    .expect("seed");
    fake.insert(budget("api")).expect("seed");
}

#[tokio::test]
async fn drain_waits_for_a_disruption_budget() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_blocked_drain(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let n1 = node_target("n1");
    let drain = run(&executor, "drain_node", &n1, drain_params(120, 0));
    let lift_budget = async {
        within(
            QUICK,
            "web-1 was never evicted, so the drain is stuck before its retries",
            async {
                while !fake
                    .mutations()
                    .iter()
                    .any(|m| m.verb == "evict" && m.name == "web-1")
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
        fake.remove("policy/v1", "poddisruptionbudgets", "shop", "api")
            .expect("the budget exists");
    };
    let (report, ()) = within(
        Duration::from_secs(60),
        "the drain did not retry api-0 after its budget was removed",
        async { tokio::join!(drain, lift_budget) },
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    let api = report
        .changes
        .iter()
        .find(|line| line.contains("pod shop/api-0"))
        .expect("a line for api-0");
    assert!(
        api.starts_with(
            "did evict pod shop/api-0 with a 0s grace period, after its eviction was blocked for "
        ),
        "{report:?}"
    );
    assert!(!pod_exists(&fake, "shop", "api-0"));
    assert!(!pod_exists(&fake, "shop", "web-1"));
}

/// Drains node n1 live with a 30s timeout, the shortest the registry
/// allows, and a 5s grace period.
async fn drain_with_shortest_timeout(fake: &FakeKube) -> Report {
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    within(
        Duration::from_secs(60),
        "the drain did not give up at its 30s timeout",
        run(
            &executor,
            "drain_node",
            &node_target("n1"),
            drain_params(30, 5),
        ),
    )
    .await
}

#[tokio::test]
async fn drain_blocked_until_timeout_fails_and_stays_cordoned() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_blocked_drain(&fake);
    let report = drain_with_shortest_timeout(&fake).await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report.error.starts_with(
            "drain of node/n1 is incomplete, evictions still blocked after 30s: pod shop/api-0 (Cannot evict pod as it would violate the pod's disruption budget.)"
        ),
        "{report:?}"
    );
    assert!(
        report.error.contains("the node stays cordoned"),
        "{report:?}"
    );
    assert_eq!(
        report.changes,
        [
            "did patch node/n1: spec.unschedulable false -> true (cordon)",
            "did evict pod shop/web-1 with a 5s grace period",
        ]
    );
    assert_eq!(report.details["blocked"], json!(["pod shop/api-0"]));
    assert_eq!(stored_node(&fake, "n1")["spec"]["unschedulable"], true);
    assert!(pod_exists(&fake, "shop", "api-0"));
    assert!(!pod_exists(&fake, "shop", "web-1"));
}

/// Seeds node n1 with the ReplicaSet pod web-1, which carries a finalizer,
/// so that its eviction leaves it terminating until the finalizer goes.
fn seed_slow_termination(fake: &FakeKube) {
    fake.insert(node("n1", false)).expect("seed");
    let mut web = pod(
        "shop",
        "web-1",
        "n1",
        "web",
        Some(("ReplicaSet", "web-7d9f")),
    );
    web["metadata"]["finalizers"] = json!(["example.com/flush-cache"]);
    fake.insert(web).expect("seed");
}

#[tokio::test]
async fn drain_waits_for_evicted_pods_to_terminate() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_slow_termination(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let n1 = node_target("n1");
    let drain = run(&executor, "drain_node", &n1, drain_params(60, 10));
    let finish_termination = async {
        within(QUICK, "web-1 was never evicted", async {
            while fake
                .get_json("v1", "pods", "shop", "web-1")
                .is_some_and(|pod| pod["metadata"]["deletionTimestamp"].is_null())
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        // Let the drain look at the terminating pod at least once.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(fake.client(), "shop");
        let release = json!({"metadata": {"finalizers": null}});
        pods.patch(
            "web-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&release),
        )
        .await
        .expect("the finalizer is removed");
    };
    let (report, ()) = within(
        Duration::from_secs(60),
        "the drain did not finish after web-1 terminated",
        async { tokio::join!(drain, finish_termination) },
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    let last = report.changes.last().expect("a change");
    assert!(
        last.starts_with("waited ") && last.ends_with("s for pod shop/web-1 to terminate"),
        "{report:?}"
    );
    assert_eq!(report.details["terminating"], json!([]));
    assert!(!pod_exists(&fake, "shop", "web-1"));
}

#[tokio::test]
async fn drain_fails_while_an_evicted_pod_keeps_terminating() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_slow_termination(&fake);
    let report = drain_with_shortest_timeout(&fake).await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report.error.starts_with(
            "drain of node/n1 is incomplete, evicted pods still terminating after 30s: pod shop/web-1;"
        ),
        "{report:?}"
    );
    assert_eq!(report.details["terminating"], json!(["pod shop/web-1"]));
    assert_eq!(stored_node(&fake, "n1")["spec"]["unschedulable"], true);
    let web = fake.get_json("v1", "pods", "shop", "web-1").expect("web-1");
    assert!(web["metadata"]["deletionTimestamp"].is_string(), "{web}");
}

#[tokio::test]
async fn dry_run_drain_does_not_wait() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_drain(&fake);
    fake.insert(pod(
        "shop",
        "api-0",
        "n1",
        "api",
        Some(("StatefulSet", "api")),
    ))
    .expect("seed");
    fake.insert(budget("api")).expect("seed");
    let before_node = stored_node(&fake, "n1");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = within(
        QUICK,
        "a dry-run drain waited for a disruption budget",
        run(
            &executor,
            "drain_node",
            &node_target("n1"),
            drain_params(300, 30),
        ),
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes[0],
        "would patch node/n1: spec.unschedulable false -> true (cordon)"
    );
    assert!(
        report
            .changes
            .contains(&"would evict pod shop/web-1 with a 30s grace period".to_owned()),
        "{report:?}"
    );
    assert!(
        report.changes.contains(
            &"would not evict pod shop/api-0 now: Cannot evict pod as it would violate the pod's disruption budget.; a live drain retries it for up to 300s".to_owned()
        ),
        "{report:?}"
    );
    assert_eq!(
        before_node,
        stored_node(&fake, "n1"),
        "dry-run changed the node"
    );
    assert!(pod_exists(&fake, "shop", "web-1"), "dry-run evicted web-1");
    assert!(pod_exists(&fake, "shop", "api-0"));
    let mutations = fake.mutations();
    assert!(!mutations.is_empty());
    assert!(
        mutations.iter().all(|m| m.dry_run),
        "a write without dryRun=All: {mutations:?}"
    );
}

#[tokio::test]
async fn drain_of_missing_node_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod(
        "shop",
        "web-1",
        "ghost",
        "web",
        Some(("ReplicaSet", "web-7d9f")),
    ))
    .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = run(
        &executor,
        "drain_node",
        &node_target("ghost"),
        drain_params(60, 30),
    )
    .await;

    assert!(!report.succeeded);
    assert_eq!(
        report.error,
        "node/ghost not found; check the node name with `kubectl get nodes`"
    );
    assert!(pod_exists(&fake, "shop", "web-1"));
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn drain_parameters_out_of_bounds_are_invalid() {
    let short = validate("drain_node", TargetKind::Node, &drain_params(10, 30))
        .expect_err("a timeout under 30s must be invalid");
    let long_grace = validate("drain_node", TargetKind::Node, &drain_params(60, 601))
        .expect_err("a grace period over 600s must be invalid");
    let (_, defaults) =
        validate("drain_node", TargetKind::Node, &HashMap::new()).expect("defaults are valid");

    assert_eq!(
        short.to_string(),
        "parameter timeout_seconds of drain_node is 10, outside 30..=1800"
    );
    assert_eq!(
        long_grace.to_string(),
        "parameter grace_period_seconds of drain_node is 601, outside 0..=600"
    );
    assert_eq!(defaults.integer("timeout_seconds"), Some(300));
    assert_eq!(defaults.integer("grace_period_seconds"), Some(30));
}
