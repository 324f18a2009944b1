//! `restart_network_component`, `enable_debug_mode` and the debug mode
//! reverter through kube-rs against the in-memory Kubernetes API: the
//! resulting objects, dry-run, bad parameters, missing targets, retries and
//! reverts after the debug time passed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::{
    assert_one_dry_run_write, assert_one_write_with_resource_version, int, live_writes, params,
    run_attempt, target_in, text,
};
use serde_json::{Value, json};
use steward_actions::{ValidationError, validate};
use steward_execute::Mode;
use steward_execute::actions::monitoring::{
    DEBUG_MODE_LABEL, DEBUG_PREVIOUS_ANNOTATION, DEBUG_UNTIL_ANNOTATION, revert_expired,
    spawn_reverter,
};
use steward_execute::actions::{
    ACTION_ID_ANNOTATION, Executor, RESTARTED_AT_ANNOTATION, Report, Settings,
};
use steward_proto::v1::{ParameterValue, TargetKind};
use steward_testkit::kube::FakeKube;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn daemonset(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": name}},
            "template": {
                "metadata": {"labels": {"k8s-app": name}},
                "spec": {"containers": [{"name": name, "image": format!("{name}:1")}]},
            },
        },
    })
}

fn stored_daemonset(fake: &FakeKube, namespace: &str, name: &str) -> Value {
    fake.get_json("apps/v1", "daemonsets", namespace, name)
        .expect("daemon set")
}

async fn restart_network(executor: &Executor, id: Uuid, namespace: &str, name: &str) -> Report {
    run_attempt(
        executor,
        id,
        "restart_network_component",
        &target_in(TargetKind::Daemonset, namespace, name),
        HashMap::new(),
        1,
    )
    .await
}

#[tokio::test]
async fn restart_network_component_restarts_an_allowed_daemonset() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(daemonset("kube-system", "calico-node"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let id = Uuid::new_v4();

    let report = restart_network(&executor, id, "kube-system", "calico-node").await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with(&format!(
            "did patch daemonset/kube-system/calico-node: spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}] unset -> "
        )),
        "{report:?}"
    );
    let stored = stored_daemonset(&fake, "kube-system", "calico-node");
    let annotations = &stored["spec"]["template"]["metadata"]["annotations"];
    assert!(annotations[RESTARTED_AT_ANNOTATION].is_string(), "{stored}");
    assert_eq!(annotations[ACTION_ID_ANNOTATION], id.to_string());
    assert_eq!(live_writes(&fake), 1);
}

#[tokio::test]
async fn restart_network_component_rejects_unlisted_daemonset() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(daemonset("kube-system", "fluentd"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = restart_network(&executor, Uuid::new_v4(), "kube-system", "fluentd").await;

    assert!(!report.succeeded, "{report:?}");
    assert_eq!(
        report.error,
        "daemonset/kube-system/fluentd is not an allowed network component: restart_network_component restarts only daemon sets in kube-system named in --network-daemonsets (now: calico-node, cilium, kube-proxy, aws-node, kube-flannel-ds, canal, weave-net); add the name there to allow it"
    );
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn restart_network_component_rejects_other_namespaces() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(daemonset("shop", "calico-node")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = restart_network(&executor, Uuid::new_v4(), "shop", "calico-node").await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report
            .error
            .starts_with("daemonset/shop/calico-node is not an allowed network component"),
        "{report:?}"
    );
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn restart_network_component_follows_the_configured_list() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(daemonset("kube-system", "my-cni"))
        .expect("seed");
    fake.insert(daemonset("kube-system", "calico-node"))
        .expect("seed");
    let custom = Settings {
        network_daemonsets: vec!["my-cni".to_owned()],
        ..Settings::default()
    };
    let empty = Settings {
        network_daemonsets: Vec::new(),
        ..Settings::default()
    };
    let executor = Executor::with_settings(Some(fake.client()), Mode::Live, custom);
    let locked = Executor::with_settings(Some(fake.client()), Mode::Live, empty);

    let allowed = restart_network(&executor, Uuid::new_v4(), "kube-system", "my-cni").await;
    let rejected = restart_network(&executor, Uuid::new_v4(), "kube-system", "calico-node").await;
    let none = restart_network(&locked, Uuid::new_v4(), "kube-system", "my-cni").await;

    assert!(allowed.succeeded, "{allowed:?}");
    assert!(!rejected.succeeded, "{rejected:?}");
    assert!(rejected.error.contains("(now: my-cni)"), "{rejected:?}");
    assert!(!none.succeeded, "{none:?}");
    assert!(none.error.contains("(now: none)"), "{none:?}");
    assert_eq!(live_writes(&fake), 1);
}

#[tokio::test]
async fn restart_network_component_dry_run_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(daemonset("kube-system", "cilium"))
        .expect("seed");
    let before = stored_daemonset(&fake, "kube-system", "cilium");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = restart_network(&executor, Uuid::new_v4(), "kube-system", "cilium").await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("would patch daemonset/kube-system/cilium"),
        "{report:?}"
    );
    assert_eq!(stored_daemonset(&fake, "kube-system", "cilium"), before);
    assert_one_dry_run_write(&fake, "patch");
}

#[tokio::test]
async fn restart_network_component_retry_is_not_repeated() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(daemonset("kube-system", "kube-proxy"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let id = Uuid::new_v4();

    restart_network(&executor, id, "kube-system", "kube-proxy").await;
    let retry = restart_network(&executor, id, "kube-system", "kube-proxy").await;

    assert!(retry.succeeded, "{retry:?}");
    assert!(
        retry.changes[0].contains("already restarted by this action"),
        "{retry:?}"
    );
    assert_eq!(live_writes(&fake), 1, "the retry restarted it again");
}

#[tokio::test]
async fn restart_network_component_missing_daemonset_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = restart_network(&executor, Uuid::new_v4(), "kube-system", "cilium").await;

    assert!(!report.succeeded);
    assert_eq!(report.error, "daemonset/kube-system/cilium not found");
    assert!(fake.mutations().is_empty());
}

#[test]
fn restart_network_component_parameters_are_validated() {
    let unknown = validate(
        "restart_network_component",
        TargetKind::Daemonset,
        &params([("force", int(1))]),
    )
    .expect_err("the action takes no parameters");
    let wrong_target = validate(
        "restart_network_component",
        TargetKind::Deployment,
        &HashMap::new(),
    )
    .expect_err("only daemon sets");

    assert!(
        matches!(unknown, ValidationError::UnknownParameter { .. }),
        "{unknown:?}"
    );
    assert!(
        matches!(wrong_target, ValidationError::WrongTarget { .. }),
        "{wrong_target:?}"
    );
}

/// Builds a workload with container `app`, which sets `LOG_LEVEL=info`,
/// and container `proxy`, which does not set it.
fn workload(kind: &str, namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": "shop/app:1", "env": [
                        {"name": "REGION", "value": "eu"},
                        {"name": "LOG_LEVEL", "value": "info"},
                    ]},
                    {"name": "proxy", "image": "envoy:1"},
                ]},
            },
        },
    })
}

/// Builds the same workload as Steward leaves it in debug mode until
/// `until`.
fn workload_in_debug_mode(kind: &str, namespace: &str, name: &str, until: &str) -> Value {
    let mut object = workload(kind, namespace, name);
    object["metadata"]["labels"] = json!({DEBUG_MODE_LABEL: "on"});
    object["metadata"]["annotations"] = json!({
        DEBUG_UNTIL_ANNOTATION: until,
        DEBUG_PREVIOUS_ANNOTATION: r#"{"app":"info","proxy":null}"#,
    });
    let containers = &mut object["spec"]["template"]["spec"]["containers"];
    containers[0]["env"][1]["value"] = json!("debug");
    containers[1]["env"] = json!([{"name": "LOG_LEVEL", "value": "debug"}]);
    object
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        other => panic!("no debug mode for {other}"),
    }
}

fn stored_workload(fake: &FakeKube, kind: &str, namespace: &str, name: &str) -> Value {
    fake.get_json("apps/v1", plural(kind), namespace, name)
        .expect("workload")
}

/// Returns each container's `LOG_LEVEL`, `None` where it is unset.
fn log_levels(object: &Value) -> Vec<(String, Option<String>)> {
    object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|container| {
            let level = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|entry| entry["name"] == "LOG_LEVEL")
                .map(|entry| entry["value"].as_str().unwrap_or_default().to_owned());
            (
                container["name"].as_str().unwrap_or_default().to_owned(),
                level,
            )
        })
        .collect()
}

fn levels(app: Option<&str>, proxy: Option<&str>) -> Vec<(String, Option<String>)> {
    vec![
        ("app".to_owned(), app.map(str::to_owned)),
        ("proxy".to_owned(), proxy.map(str::to_owned)),
    ]
}

fn debug_until(object: &Value) -> DateTime<Utc> {
    let text = object["metadata"]["annotations"][DEBUG_UNTIL_ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("no {DEBUG_UNTIL_ANNOTATION}: {object}"));
    DateTime::parse_from_rfc3339(text)
        .expect("debug-until is RFC 3339")
        .with_timezone(&Utc)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn enable(
    executor: &Executor,
    id: Uuid,
    kind: TargetKind,
    name: &str,
    seconds: Option<i64>,
) -> Report {
    let parameters = match seconds {
        Some(seconds) => params([("duration_seconds", int(seconds))]),
        None => HashMap::new(),
    };
    run_attempt(
        executor,
        id,
        "enable_debug_mode",
        &target_in(kind, "shop", name),
        parameters,
        1,
    )
    .await
}

/// Starts the in-memory API server with the `checkout` deployment that
/// [`workload`] builds, and a live executor for it.
async fn start_with_checkout() -> (FakeKube, Executor) {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("Deployment", "shop", "checkout"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    (fake, executor)
}

/// Runs one pass of the debug mode reverter with the default settings and
/// returns its lines.
async fn revert_pass(fake: &FakeKube, mode: Mode) -> Vec<String> {
    revert_expired(&fake.client(), &Settings::default(), mode)
        .await
        .expect("revert pass")
}

/// Moves a workload's debug-until a minute into the past, as if its debug
/// time had passed.
fn expire(fake: &FakeKube, kind: &str, name: &str) {
    let mut object = stored_workload(fake, kind, "shop", name);
    object["metadata"]["annotations"][DEBUG_UNTIL_ANNOTATION] =
        json!(rfc3339(Utc::now() - chrono::Duration::seconds(60)));
    fake.insert(object).expect("rewrite debug-until");
}

#[tokio::test]
async fn enable_debug_mode_sets_variable_and_state() {
    let (fake, executor) = start_with_checkout().await;
    let id = Uuid::new_v4();
    let started = Utc::now();

    let report = enable(&executor, id, TargetKind::Deployment, "checkout", None).await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("did put deployment/shop/checkout in debug mode until "),
        "{report:?}"
    );
    assert_eq!(
        report.changes[1..],
        [
            "did set container app: LOG_LEVEL info -> debug",
            "did set container proxy: LOG_LEVEL unset -> debug",
        ]
    );
    let stored = stored_workload(&fake, "Deployment", "shop", "checkout");
    assert_eq!(log_levels(&stored), levels(Some("debug"), Some("debug")));
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["env"][0],
        json!({"name": "REGION", "value": "eu"}),
        "debug mode changed another variable"
    );
    assert_eq!(stored["metadata"]["labels"][DEBUG_MODE_LABEL], "on");
    let annotations = &stored["metadata"]["annotations"];
    let previous: Value = serde_json::from_str(
        annotations[DEBUG_PREVIOUS_ANNOTATION]
            .as_str()
            .expect("debug-previous"),
    )
    .expect("debug-previous is JSON");
    assert_eq!(previous, json!({"app": "info", "proxy": null}));
    assert_eq!(annotations[ACTION_ID_ANNOTATION], id.to_string());
    let until = debug_until(&stored);
    let expected = started + chrono::Duration::seconds(900);
    assert!(
        (until - expected).num_seconds().abs() <= 5,
        "debug-until {until} is not 900 seconds after {started}"
    );
    assert_one_write_with_resource_version(&fake);
}

#[tokio::test]
async fn enable_debug_mode_works_on_statefulsets() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("StatefulSet", "shop", "db"))
        .expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = enable(
        &executor,
        Uuid::new_v4(),
        TargetKind::Statefulset,
        "db",
        Some(60),
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    let stored = stored_workload(&fake, "StatefulSet", "shop", "db");
    assert_eq!(log_levels(&stored), levels(Some("debug"), Some("debug")));
    assert_eq!(stored["metadata"]["labels"][DEBUG_MODE_LABEL], "on");
}

#[tokio::test]
async fn enable_debug_mode_dry_run_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(workload("Deployment", "shop", "checkout"))
        .expect("seed");
    let before = stored_workload(&fake, "Deployment", "shop", "checkout");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = enable(
        &executor,
        Uuid::new_v4(),
        TargetKind::Deployment,
        "checkout",
        None,
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert!(report.changes[0].starts_with("would put"), "{report:?}");
    assert_eq!(
        report.changes.last().map(String::as_str),
        Some("dry-run: nothing changed, so no revert is scheduled")
    );
    assert_eq!(
        stored_workload(&fake, "Deployment", "shop", "checkout"),
        before,
        "dry-run changed the workload"
    );
    assert_one_dry_run_write(&fake, "patch");
    let reverted = revert_pass(&fake, Mode::Live).await;
    assert!(
        reverted.is_empty(),
        "dry-run scheduled a revert: {reverted:?}"
    );
}

#[tokio::test]
async fn enable_debug_mode_retry_is_not_repeated() {
    let (fake, executor) = start_with_checkout().await;
    let id = Uuid::new_v4();

    enable(&executor, id, TargetKind::Deployment, "checkout", None).await;
    let retry = enable(&executor, id, TargetKind::Deployment, "checkout", None).await;

    assert!(retry.succeeded, "{retry:?}");
    assert!(
        retry.changes[0].contains("already put in debug mode by this action"),
        "{retry:?}"
    );
    assert_eq!(
        live_writes(&fake),
        1,
        "the retry patched the workload again"
    );
}

/// Puts the `checkout` deployment in debug mode for `first_seconds`, then
/// again for `second_seconds` as another action. Returns the API server, the
/// debug-until after the first action and the report of the second.
async fn enable_checkout_twice(
    first_seconds: i64,
    second_seconds: i64,
) -> (FakeKube, DateTime<Utc>, Report) {
    let (fake, executor) = start_with_checkout().await;

    enable(
        &executor,
        Uuid::new_v4(),
        TargetKind::Deployment,
        "checkout",
        Some(first_seconds),
    )
    .await;
    let first_until = debug_until(&stored_workload(&fake, "Deployment", "shop", "checkout"));
    let second = enable(
        &executor,
        Uuid::new_v4(),
        TargetKind::Deployment,
        "checkout",
        Some(second_seconds),
    )
    .await;
    (fake, first_until, second)
}

#[tokio::test]
async fn enable_debug_mode_again_extends_and_keeps_previous() {
    let (fake, first_until, second) = enable_checkout_twice(60, 3600).await;

    assert!(second.succeeded, "{second:?}");
    assert!(
        second.changes[0].starts_with("did extend debug mode of deployment/shop/checkout"),
        "{second:?}"
    );
    assert_eq!(second.changes.len(), 1, "no container changes: {second:?}");
    let stored = stored_workload(&fake, "Deployment", "shop", "checkout");
    let until = debug_until(&stored);
    assert!(
        until - first_until >= chrono::Duration::seconds(3000),
        "debug-until moved from {first_until} only to {until}"
    );
    let previous: Value = serde_json::from_str(
        stored["metadata"]["annotations"][DEBUG_PREVIOUS_ANNOTATION]
            .as_str()
            .expect("debug-previous"),
    )
    .expect("debug-previous is JSON");
    assert_eq!(
        previous,
        json!({"app": "info", "proxy": null}),
        "the second enable overwrote the values from before debug mode"
    );
}

#[tokio::test]
async fn enable_debug_mode_again_never_shortens() {
    let (fake, first_until, second) = enable_checkout_twice(3600, 60).await;

    assert!(second.succeeded, "{second:?}");
    let until = debug_until(&stored_workload(&fake, "Deployment", "shop", "checkout"));
    assert_eq!(
        until, first_until,
        "a shorter second enable moved debug-until"
    );
}

#[tokio::test]
async fn enable_debug_mode_rejects_referenced_variable() {
    let fake = FakeKube::start().await.expect("fake API");
    let mut object = workload("Deployment", "shop", "checkout");
    object["spec"]["template"]["spec"]["containers"][0]["env"][1] = json!({
        "name": "LOG_LEVEL",
        "valueFrom": {"configMapKeyRef": {"name": "logging", "key": "level"}},
    });
    fake.insert(object).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = enable(
        &executor,
        Uuid::new_v4(),
        TargetKind::Deployment,
        "checkout",
        None,
    )
    .await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report.error.starts_with(
            "container app of deployment/shop/checkout sets LOG_LEVEL from a reference (valueFrom)"
        ),
        "{report:?}"
    );
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn enable_debug_mode_missing_workload_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = enable(
        &executor,
        Uuid::new_v4(),
        TargetKind::Statefulset,
        "ghost",
        None,
    )
    .await;

    assert!(!report.succeeded);
    assert_eq!(report.error, "statefulset/shop/ghost not found");
    assert!(fake.mutations().is_empty());
}

#[test]
fn enable_debug_mode_parameters_are_validated() {
    let kind = TargetKind::Deployment;
    let with = |value: ParameterValue| params([("duration_seconds", value)]);

    let short = validate("enable_debug_mode", kind, &with(int(59))).expect_err("below 60");
    let long = validate("enable_debug_mode", kind, &with(int(3601))).expect_err("above 3600");
    let string = validate("enable_debug_mode", kind, &with(text("15m")))
        .expect_err("duration_seconds is an integer");
    let pod = validate("enable_debug_mode", TargetKind::Pod, &HashMap::new())
        .expect_err("only deployments and stateful sets");
    let (_, defaults) = validate("enable_debug_mode", kind, &HashMap::new()).expect("valid");

    assert_eq!(
        short.to_string(),
        "parameter duration_seconds of enable_debug_mode is 59, outside 60..=3600"
    );
    assert!(
        matches!(long, ValidationError::OutOfRange { value: 3601, .. }),
        "{long:?}"
    );
    assert!(
        matches!(string, ValidationError::WrongType { .. }),
        "{string:?}"
    );
    assert!(
        matches!(pod, ValidationError::WrongTarget { .. }),
        "{pod:?}"
    );
    assert_eq!(defaults.integer("duration_seconds"), Some(900));
}

#[tokio::test]
async fn revert_expired_restores_previous_values() {
    let (fake, executor) = start_with_checkout().await;
    let id = Uuid::new_v4();
    enable(&executor, id, TargetKind::Deployment, "checkout", Some(60)).await;
    expire(&fake, "Deployment", "checkout");
    fake.clear_mutations();

    let reverted = revert_pass(&fake, Mode::Live).await;

    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert!(
        reverted[0].starts_with("did revert debug mode of deployment/shop/checkout"),
        "{reverted:?}"
    );
    assert!(
        reverted[0].ends_with(
            "container app: LOG_LEVEL debug -> info; container proxy: LOG_LEVEL debug -> unset"
        ),
        "{reverted:?}"
    );
    let stored = stored_workload(&fake, "Deployment", "shop", "checkout");
    assert_eq!(log_levels(&stored), levels(Some("info"), None));
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["env"][0],
        json!({"name": "REGION", "value": "eu"})
    );
    assert!(
        stored["metadata"]["labels"][DEBUG_MODE_LABEL].is_null(),
        "{stored}"
    );
    let annotations = &stored["metadata"]["annotations"];
    assert!(annotations[DEBUG_UNTIL_ANNOTATION].is_null(), "{stored}");
    assert!(annotations[DEBUG_PREVIOUS_ANNOTATION].is_null(), "{stored}");
    assert_eq!(annotations[ACTION_ID_ANNOTATION], id.to_string());
    assert_eq!(live_writes(&fake), 1);

    let again = revert_pass(&fake, Mode::Live).await;
    assert!(
        again.is_empty(),
        "a reverted workload was reverted again: {again:?}"
    );
}

#[tokio::test]
async fn revert_expired_leaves_unexpired_workloads_alone() {
    let (fake, executor) = start_with_checkout().await;
    enable(
        &executor,
        Uuid::new_v4(),
        TargetKind::Deployment,
        "checkout",
        Some(60),
    )
    .await;
    let before = stored_workload(&fake, "Deployment", "shop", "checkout");
    fake.clear_mutations();

    let reverted = revert_pass(&fake, Mode::Live).await;

    assert!(reverted.is_empty(), "{reverted:?}");
    assert_eq!(
        stored_workload(&fake, "Deployment", "shop", "checkout"),
        before
    );
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn revert_expired_covers_every_namespace_and_kind() {
    let fake = FakeKube::start().await.expect("fake API");
    let past = rfc3339(Utc::now() - chrono::Duration::seconds(1));
    let future = rfc3339(Utc::now() + chrono::Duration::seconds(600));
    fake.insert(workload_in_debug_mode(
        "Deployment",
        "shop",
        "checkout",
        &past,
    ))
    .expect("seed");
    fake.insert(workload_in_debug_mode(
        "StatefulSet",
        "billing",
        "ledger",
        &past,
    ))
    .expect("seed");
    fake.insert(workload_in_debug_mode(
        "StatefulSet",
        "billing",
        "queue",
        &future,
    ))
    .expect("seed");
    fake.insert(workload("Deployment", "shop", "untouched"))
        .expect("seed");

    let mut reverted = revert_pass(&fake, Mode::Live).await;
    reverted.sort();

    assert_eq!(reverted.len(), 2, "{reverted:?}");
    assert!(
        reverted[0].contains("deployment/shop/checkout"),
        "{reverted:?}"
    );
    assert!(
        reverted[1].contains("statefulset/billing/ledger"),
        "{reverted:?}"
    );
    for (kind, namespace, name) in [
        ("Deployment", "shop", "checkout"),
        ("StatefulSet", "billing", "ledger"),
    ] {
        let stored = stored_workload(&fake, kind, namespace, name);
        assert_eq!(
            log_levels(&stored),
            levels(Some("info"), None),
            "{kind} {namespace}/{name}"
        );
    }
    let queue = stored_workload(&fake, "StatefulSet", "billing", "queue");
    assert_eq!(queue["metadata"]["labels"][DEBUG_MODE_LABEL], "on");
    assert_eq!(log_levels(&queue), levels(Some("debug"), Some("debug")));
}

#[tokio::test]
async fn revert_expired_keeps_values_changed_since() {
    let fake = FakeKube::start().await.expect("fake API");
    let past = rfc3339(Utc::now() - chrono::Duration::seconds(1));
    let mut object = workload_in_debug_mode("Deployment", "shop", "checkout", &past);
    object["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = json!("warn");
    fake.insert(object).expect("seed");

    let reverted = revert_pass(&fake, Mode::Live).await;

    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert!(
        reverted[0].contains("container app: LOG_LEVEL is warn instead of debug"),
        "{reverted:?}"
    );
    let stored = stored_workload(&fake, "Deployment", "shop", "checkout");
    assert_eq!(log_levels(&stored), levels(Some("warn"), None));
    assert!(stored["metadata"]["labels"][DEBUG_MODE_LABEL].is_null());
}

#[tokio::test]
async fn revert_expired_without_previous_values_ends_debug_mode() {
    let fake = FakeKube::start().await.expect("fake API");
    let past = rfc3339(Utc::now() - chrono::Duration::seconds(1));
    let mut object = workload_in_debug_mode("Deployment", "shop", "checkout", &past);
    object["metadata"]["annotations"][DEBUG_PREVIOUS_ANNOTATION] = json!("not json");
    fake.insert(object).expect("seed");

    let reverted = revert_pass(&fake, Mode::Live).await;

    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert!(
        reverted[0].contains("is missing or invalid"),
        "{reverted:?}"
    );
    let stored = stored_workload(&fake, "Deployment", "shop", "checkout");
    assert_eq!(
        log_levels(&stored),
        levels(Some("debug"), Some("debug")),
        "values were changed without knowing the previous ones"
    );
    assert!(stored["metadata"]["labels"][DEBUG_MODE_LABEL].is_null());
}

#[tokio::test]
async fn revert_expired_dry_run_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    let past = rfc3339(Utc::now() - chrono::Duration::seconds(1));
    fake.insert(workload_in_debug_mode(
        "Deployment",
        "shop",
        "checkout",
        &past,
    ))
    .expect("seed");
    let before = stored_workload(&fake, "Deployment", "shop", "checkout");

    let reverted = revert_pass(&fake, Mode::DryRun).await;

    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert!(
        reverted[0].starts_with("would revert debug mode of deployment/shop/checkout"),
        "{reverted:?}"
    );
    assert_eq!(
        stored_workload(&fake, "Deployment", "shop", "checkout"),
        before
    );
    assert_one_dry_run_write(&fake, "patch");
}

#[tokio::test]
async fn revert_expired_list_failure_is_transient() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.fail_next(1, 503);

    let error = revert_expired(&fake.client(), &Settings::default(), Mode::Live)
        .await
        .expect_err("a 503 on the list must fail the pass");

    assert!(
        error.to_string().contains("failed to list deployments"),
        "{error}"
    );
}

#[tokio::test]
async fn reverter_reverts_and_stops_on_shutdown() {
    let fake = FakeKube::start().await.expect("fake API");
    let past = rfc3339(Utc::now() - chrono::Duration::seconds(1));
    fake.insert(workload_in_debug_mode(
        "Deployment",
        "shop",
        "checkout",
        &past,
    ))
    .expect("seed");
    let shutdown = CancellationToken::new();

    let reverter = spawn_reverter(
        fake.client(),
        Settings::default(),
        Mode::Live,
        Duration::from_millis(20),
        shutdown.clone(),
    );
    let reverted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let stored = stored_workload(&fake, "Deployment", "shop", "checkout");
            if stored["metadata"]["labels"][DEBUG_MODE_LABEL].is_null() {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the reverter did not revert an expired workload within 10s; is its first pass run at once?");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), reverter)
        .await
        .expect("the reverter did not stop within 5s of shutdown")
        .expect("the reverter task panicked");

    assert_eq!(log_levels(&reverted), levels(Some("info"), None));
}
