//! `expand_pvc`, `quarantine_pod` and `collect_diagnostics` through kube-rs
//! against the in-memory Kubernetes API: the resulting objects, dry-run,
//! bad parameters, missing targets and retries.

mod common;

use std::collections::HashMap;

use common::{
    assert_one_dry_run_write, assert_one_write_with_resource_version, boolean, int, live_writes,
    params, run, run_attempt, target, text,
};
use serde_json::{Value, json};
use steward_actions::{ValidationError, validate};
use steward_execute::Mode;
use steward_execute::actions::{ACTION_ID_ANNOTATION, Executor, Report, Settings};
use steward_proto::v1::{ParameterValue, TargetKind};
use steward_testkit::kube::FakeKube;
use uuid::Uuid;

const QUARANTINE_LABEL: &str = "steward.io/quarantine";

/// An action id whose first eight hex digits, `0a1b2c3d`, name the
/// quarantine label value and network policy.
const ACTION_ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn action_id() -> Uuid {
    Uuid::parse_str(ACTION_ID).expect("a valid UUID")
}

fn storage_class(name: &str, allow_expansion: Option<bool>) -> Value {
    let mut class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "ebs.csi.aws.com",
    });
    if let Some(allow) = allow_expansion {
        class["allowVolumeExpansion"] = json!(allow);
    }
    class
}

fn claim(name: &str, class: Option<&str>, size: &str, phase: &str) -> Value {
    let mut claim = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
        "status": {"phase": phase, "capacity": {"storage": size}},
    });
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    claim
}

fn stored_claim(fake: &FakeKube, name: &str) -> Value {
    fake.get_json("v1", "persistentvolumeclaims", "shop", name)
        .expect("claim")
}

/// Seeds an expandable class `fast` and a bound 10Gi claim `data`.
fn seed_expandable(fake: &FakeKube) {
    fake.insert(storage_class("fast", Some(true)))
        .expect("seed class");
    fake.insert(claim("data", Some("fast"), "10Gi", "Bound"))
        .expect("seed claim");
}

/// Seeds `objects`, expands the claim `data` to 20Gi as a live action, and
/// returns the API server with the report.
async fn expand_seeded_data<const N: usize>(objects: [Value; N]) -> (FakeKube, Report) {
    let fake = FakeKube::start().await.expect("fake API");
    for object in objects {
        fake.insert(object).expect("seed");
    }
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = expand(&executor, "data", "20Gi").await;
    (fake, report)
}

async fn expand(executor: &Executor, name: &str, size: &str) -> Report {
    run(
        executor,
        "expand_pvc",
        &target(TargetKind::PersistentVolumeClaim, name),
        params([("size", text(size))]),
    )
    .await
}

#[tokio::test]
async fn expand_pvc_sets_the_new_size() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_expandable(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let id = Uuid::new_v4();

    let report = run_attempt(
        &executor,
        id,
        "expand_pvc",
        &target(TargetKind::PersistentVolumeClaim, "data"),
        params([("size", text("20Gi"))]),
        1,
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did patch persistentvolumeclaim/shop/data: spec.resources.requests.storage 10Gi -> 20Gi (storage class fast allows expansion)"
        ]
    );
    let stored = stored_claim(&fake, "data");
    assert_eq!(stored["spec"]["resources"]["requests"]["storage"], "20Gi");
    assert_eq!(
        stored["metadata"]["annotations"][ACTION_ID_ANNOTATION],
        id.to_string()
    );
    assert_one_write_with_resource_version(&fake);
}

#[tokio::test]
async fn expand_pvc_dry_run_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_expandable(&fake);
    let before = stored_claim(&fake, "data");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = expand(&executor, "data", "20Gi").await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("would patch persistentvolumeclaim/shop/data"),
        "{report:?}"
    );
    assert_eq!(
        stored_claim(&fake, "data"),
        before,
        "dry-run changed the claim"
    );
    assert_one_dry_run_write(&fake, "patch");
}

#[tokio::test]
async fn expand_pvc_retry_is_not_repeated() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_expandable(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    let id = Uuid::new_v4();
    let data = target(TargetKind::PersistentVolumeClaim, "data");

    run_attempt(
        &executor,
        id,
        "expand_pvc",
        &data,
        params([("size", text("20Gi"))]),
        1,
    )
    .await;
    let retry = run_attempt(
        &executor,
        id,
        "expand_pvc",
        &data,
        params([("size", text("20Gi"))]),
        1,
    )
    .await;

    assert!(retry.succeeded, "{retry:?}");
    assert!(
        retry.changes[0].contains("already expanded by this action"),
        "{retry:?}"
    );
    assert_eq!(live_writes(&fake), 1, "the retry patched the claim again");
}

#[tokio::test]
async fn expand_pvc_rejects_a_class_without_expansion() {
    for allow in [None, Some(false)] {
        let (fake, report) = expand_seeded_data([
            storage_class("slow", allow),
            claim("data", Some("slow"), "10Gi", "Bound"),
        ])
        .await;

        assert!(!report.succeeded, "{report:?}");
        assert!(
            report
                .error
                .starts_with("expansion is not allowed: storage class slow"),
            "{report:?}"
        );
        assert!(
            report.error.contains("allowVolumeExpansion: true"),
            "{report:?}"
        );
        assert_eq!(live_writes(&fake), 0);
    }
}

#[tokio::test]
async fn expand_pvc_rejects_a_claim_without_class() {
    let (fake, report) = expand_seeded_data([claim("data", None, "10Gi", "Bound")]).await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report.error.starts_with(
            "expansion is not allowed: persistentvolumeclaim/shop/data has no storageClassName"
        ),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn expand_pvc_rejects_a_missing_class() {
    let (fake, report) = expand_seeded_data([claim("data", Some("gone"), "10Gi", "Bound")]).await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report
            .error
            .contains("storage class gone of persistentvolumeclaim/shop/data not found"),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn expand_pvc_rejects_a_size_not_larger() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_expandable(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let same = expand(&executor, "data", "10Gi").await;
    let smaller = expand(&executor, "data", "5Gi").await;

    assert!(!same.succeeded, "{same:?}");
    assert!(
        same.error.contains("is not larger than the 10Gi"),
        "{same:?}"
    );
    assert!(!smaller.succeeded, "{smaller:?}");
    assert!(
        smaller
            .error
            .starts_with("size 5Gi is not larger than the 10Gi"),
        "{smaller:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn expand_pvc_rejects_a_size_above_the_maximum() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_expandable(&fake);
    let settings = Settings {
        max_volume_size: 100.0 * 1_073_741_824.0,
        ..Settings::default()
    };
    let executor = Executor::with_settings(Some(fake.client()), Mode::Live, settings);

    let above = expand(&executor, "data", "101Gi").await;
    let at_maximum = expand(&executor, "data", "100Gi").await;

    assert!(!above.succeeded, "{above:?}");
    assert_eq!(
        above.error,
        "size 101Gi for persistentvolumeclaim/shop/data exceeds the maximum of 100Gi set by --max-volume-size; give a smaller size or raise the maximum"
    );
    assert!(at_maximum.succeeded, "{at_maximum:?}");
    assert_eq!(
        stored_claim(&fake, "data")["spec"]["resources"]["requests"]["storage"],
        "100Gi"
    );
}

#[tokio::test]
async fn expand_pvc_rejects_an_unbound_claim() {
    let (fake, report) = expand_seeded_data([
        storage_class("fast", Some(true)),
        claim("data", Some("fast"), "10Gi", "Pending"),
    ])
    .await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report
            .error
            .contains("is Pending, and only a bound claim can be expanded"),
        "{report:?}"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn expand_pvc_missing_claim_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(storage_class("fast", Some(true)))
        .expect("seed class");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = expand(&executor, "ghost", "20Gi").await;

    assert!(!report.succeeded);
    assert_eq!(report.error, "persistentvolumeclaim/shop/ghost not found");
    assert!(fake.mutations().is_empty());
}

#[test]
fn expand_pvc_parameters_are_validated() {
    let kind = TargetKind::PersistentVolumeClaim;

    let missing = validate("expand_pvc", kind, &HashMap::new()).expect_err("size is required");
    let not_quantity = validate("expand_pvc", kind, &params([("size", text("20GB"))]))
        .expect_err("20GB is no quantity");
    let number =
        validate("expand_pvc", kind, &params([("size", int(20))])).expect_err("size is a string");
    let unknown = validate(
        "expand_pvc",
        kind,
        &params([("size", text("20Gi")), ("force", boolean(true))]),
    )
    .expect_err("force is no parameter");
    let wrong_target = validate("expand_pvc", TargetKind::Deployment, &HashMap::new())
        .expect_err("expand_pvc applies to claims only");

    assert_eq!(
        missing.to_string(),
        "action expand_pvc requires parameter size"
    );
    assert!(
        matches!(not_quantity, ValidationError::BadText { .. }),
        "{not_quantity:?}"
    );
    assert!(
        matches!(number, ValidationError::WrongType { .. }),
        "{number:?}"
    );
    assert!(
        matches!(unknown, ValidationError::UnknownParameter { .. }),
        "{unknown:?}"
    );
    assert!(
        matches!(wrong_target, ValidationError::WrongTarget { .. }),
        "{wrong_target:?}"
    );
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {
            "nodeName": "node-a",
            "containers": [
                {"name": "app", "image": "shop/cart:1"},
                {"name": "proxy", "image": "envoy:1"},
            ],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            ],
            "containerStatuses": [
                {
                    "name": "app", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                },
                {"name": "proxy", "ready": true, "restartCount": 0, "state": {"running": {}}},
            ],
        },
    })
}

fn stored_pod(fake: &FakeKube, name: &str) -> Value {
    fake.get_json("v1", "pods", "shop", name).expect("pod")
}

fn stored_policy(fake: &FakeKube) -> Option<Value> {
    fake.get_json(
        "networking.k8s.io/v1",
        "networkpolicies",
        "shop",
        "steward-quarantine-0a1b2c3d",
    )
}

async fn quarantine(
    executor: &Executor,
    pod: &str,
    params: HashMap<String, ParameterValue>,
) -> Report {
    run_attempt(
        executor,
        action_id(),
        "quarantine_pod",
        &target(TargetKind::Pod, pod),
        params,
        1,
    )
    .await
}

#[tokio::test]
async fn quarantine_pod_labels_and_isolates_the_pod() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod("cart-1")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = quarantine(
        &executor,
        "cart-1",
        params([
            ("investigation_namespace", text("forensics")),
            ("allow_dns", boolean(true)),
        ]),
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "did create network policy shop/steward-quarantine-0a1b2c3d: deny all ingress and egress of pods labelled steward.io/quarantine=0a1b2c3d, except ingress from pods in namespace forensics and egress to kube-dns in kube-system on port 53 (UDP and TCP)",
            "did patch pod/shop/cart-1: metadata.labels[steward.io/quarantine] unset -> 0a1b2c3d",
        ]
    );
    let stored = stored_pod(&fake, "cart-1");
    assert_eq!(stored["metadata"]["labels"][QUARANTINE_LABEL], "0a1b2c3d");
    assert_eq!(
        stored["metadata"]["labels"]["app"], "cart",
        "the quarantine removed the pod's other labels"
    );
    assert_eq!(
        stored["metadata"]["annotations"][ACTION_ID_ANNOTATION],
        ACTION_ID
    );
    let policy = stored_policy(&fake).expect("network policy");
    assert_eq!(
        policy["spec"],
        json!({
            "podSelector": {"matchLabels": {QUARANTINE_LABEL: "0a1b2c3d"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "forensics"}}}]}],
            "egress": [{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }],
        })
    );
    assert_eq!(
        policy["metadata"]["annotations"][ACTION_ID_ANNOTATION],
        ACTION_ID
    );
}

#[tokio::test]
async fn quarantine_pod_denies_everything_by_default() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod("cart-1")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = quarantine(&executor, "cart-1", HashMap::new()).await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].ends_with("with no ingress exception and no egress exception"),
        "{report:?}"
    );
    let policy = stored_policy(&fake).expect("network policy");
    let empty = |rules: &Value| rules.as_array().is_none_or(Vec::is_empty);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(empty(&policy["spec"]["ingress"]), "{policy}");
    assert!(empty(&policy["spec"]["egress"]), "{policy}");
}

#[tokio::test]
async fn quarantine_pod_dry_run_changes_nothing() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod("cart-1")).expect("seed");
    let before = stored_pod(&fake, "cart-1");
    let executor = Executor::new(Some(fake.client()), Mode::DryRun);

    let report = quarantine(&executor, "cart-1", HashMap::new()).await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("would create network policy"),
        "{report:?}"
    );
    assert!(
        report.changes[1].starts_with("would patch pod/shop/cart-1"),
        "{report:?}"
    );
    assert_eq!(
        stored_pod(&fake, "cart-1"),
        before,
        "dry-run changed the pod"
    );
    assert!(stored_policy(&fake).is_none(), "dry-run created the policy");
    let mutations = fake.mutations();
    assert_eq!(mutations.len(), 2, "{mutations:?}");
    assert!(mutations.iter().all(|m| m.dry_run), "{mutations:?}");
}

#[tokio::test]
async fn quarantine_pod_retry_is_not_repeated() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod("cart-1")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    quarantine(&executor, "cart-1", HashMap::new()).await;
    let retry = quarantine(&executor, "cart-1", HashMap::new()).await;

    assert!(retry.succeeded, "{retry:?}");
    assert_eq!(
        retry.changes,
        [
            "network policy shop/steward-quarantine-0a1b2c3d already exists from an earlier attempt of this action",
            "pod/shop/cart-1 was already labelled steward.io/quarantine=0a1b2c3d by this action in an earlier attempt",
        ]
    );
    assert_eq!(live_writes(&fake), 2, "the retry wrote again");
}

#[tokio::test]
async fn quarantine_pod_retry_labels_after_an_interrupted_attempt() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod("cart-1")).expect("seed");
    let executor = Executor::new(Some(fake.client()), Mode::Live);
    quarantine(&executor, "cart-1", HashMap::new()).await;
    // The earlier attempt created the policy but its label never landed.
    fake.insert(pod("cart-1"))
        .expect("reseed the unlabelled pod");
    fake.clear_mutations();

    let retry = quarantine(&executor, "cart-1", HashMap::new()).await;

    assert!(retry.succeeded, "{retry:?}");
    assert!(retry.changes[0].contains("already exists"), "{retry:?}");
    assert!(
        retry.changes[1].starts_with("did patch pod/shop/cart-1"),
        "{retry:?}"
    );
    assert_eq!(
        stored_pod(&fake, "cart-1")["metadata"]["labels"][QUARANTINE_LABEL],
        "0a1b2c3d"
    );
    assert_eq!(live_writes(&fake), 1);
}

#[tokio::test]
async fn quarantine_pod_rejects_a_foreign_policy() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod("cart-1")).expect("seed");
    fake.insert(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "steward-quarantine-0a1b2c3d", "namespace": "shop"},
        "spec": {"podSelector": {}},
    }))
    .expect("seed policy");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = quarantine(&executor, "cart-1", HashMap::new()).await;

    assert!(!report.succeeded, "{report:?}");
    assert!(
        report
            .error
            .contains("exists but was not created by this action"),
        "{report:?}"
    );
    assert!(
        stored_pod(&fake, "cart-1")["metadata"]["labels"][QUARANTINE_LABEL].is_null(),
        "the pod was labelled although its policy is not Steward's"
    );
    assert_eq!(live_writes(&fake), 0);
}

#[tokio::test]
async fn quarantine_pod_missing_pod_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = quarantine(&executor, "ghost", HashMap::new()).await;

    assert!(!report.succeeded);
    assert_eq!(report.error, "pod shop/ghost not found");
    assert!(fake.mutations().is_empty());
}

#[test]
fn quarantine_pod_parameters_are_validated() {
    let kind = TargetKind::Pod;

    let bad_namespace = validate(
        "quarantine_pod",
        kind,
        &params([("investigation_namespace", text("Forensics_Team"))]),
    )
    .expect_err("not a DNS label");
    let bad_dns = validate(
        "quarantine_pod",
        kind,
        &params([("allow_dns", text("yes"))]),
    )
    .expect_err("allow_dns is a boolean");
    let (_, defaults) = validate("quarantine_pod", kind, &HashMap::new()).expect("all optional");

    assert!(
        matches!(bad_namespace, ValidationError::BadText { .. }),
        "{bad_namespace:?}"
    );
    assert!(
        matches!(bad_dns, ValidationError::WrongType { .. }),
        "{bad_dns:?}"
    );
    assert_eq!(defaults.boolean("allow_dns"), Some(false));
    assert_eq!(defaults.text("investigation_namespace"), None);
}

fn event(name: &str, pod: &str, minute: u32, reason: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": pod},
        "type": "Warning",
        "reason": reason,
        "message": format!("{reason} at minute {minute}"),
        "count": 1,
        "lastTimestamp": format!("2025-01-01T10:{minute:02}:00Z"),
        "source": {"component": "kubelet"},
    })
}

async fn diagnose(executor: &Executor, pod: &str, tail_lines: Option<i64>) -> Report {
    let parameters = match tail_lines {
        Some(lines) => params([("tail_lines", int(lines))]),
        None => HashMap::new(),
    };
    run(
        executor,
        "collect_diagnostics",
        &target(TargetKind::Pod, pod),
        parameters,
    )
    .await
}

/// Seeds the crash-looping pod `cart-1` with 25 events, one event about
/// another pod, and a 300-line log.
fn seed_diagnostics(fake: &FakeKube) {
    fake.insert(pod("cart-1")).expect("seed pod");
    // Inserted in an order other than by time, so that sorting shows.
    for minute in [
        7, 3, 24, 0, 12, 19, 5, 22, 1, 15, 9, 11, 2, 23, 17, 4, 6, 8, 10, 13, 14, 16, 18, 20, 21,
    ] {
        fake.insert(event(
            &format!("cart-1.{minute:02}"),
            "cart-1",
            minute,
            "BackOff",
        ))
        .expect("seed event");
    }
    fake.insert(event("cart-2.59", "cart-2", 59, "Killing"))
        .expect("seed other event");
    let log: String = (1..=300).map(|line| format!("line {line}\n")).collect();
    fake.set_pod_log("shop", "cart-1", log);
}

#[tokio::test]
async fn collect_diagnostics_records_status_events_and_logs() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_diagnostics(&fake);
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = diagnose(&executor, "cart-1", Some(10)).await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes,
        [
            "no change: collected status, 20 events and logs of 2 containers",
            "pod phase Running; container app: not ready, 3 restarts, last terminated OOMKilled; container proxy: ready, 0 restarts",
        ]
    );
    let details = &report.details;
    assert_eq!(details["status"]["phase"], "Running");
    assert_eq!(
        details["status"]["conditions"][0]["reason"],
        "ContainersNotReady"
    );
    let app = &details["status"]["containers"][0];
    assert_eq!(app["restartCount"], 3);
    assert_eq!(app["lastTermination"]["reason"], "OOMKilled");

    let events = details["events"].as_array().expect("events");
    assert_eq!(events.len(), 20, "at most 20 events are kept");
    assert_eq!(events[0]["time"], "2025-01-01T10:24:00Z", "newest first");
    assert_eq!(events[19]["time"], "2025-01-01T10:05:00Z");
    assert!(
        events.iter().all(|event| event["reason"] == "BackOff"),
        "an event about another pod was collected: {events:?}"
    );

    let expected_tail: String = (291..=300).map(|line| format!("line {line}\n")).collect();
    assert_eq!(details["logs"]["app"]["current"], expected_tail.as_str());
    assert_eq!(details["logs"]["proxy"]["current"], expected_tail.as_str());
    assert!(
        details["logs"]["app"]["previous"].is_string(),
        "the restarted container's previous log is missing: {details}"
    );
    assert!(details["logs"]["proxy"]["previous"].is_null());
    assert!(fake.mutations().is_empty(), "diagnostics changed something");
}

#[tokio::test]
async fn collect_diagnostics_dry_run_collects_the_same() {
    let fake = FakeKube::start().await.expect("fake API");
    seed_diagnostics(&fake);
    let live = Executor::new(Some(fake.client()), Mode::Live);
    let dry_run = Executor::new(Some(fake.client()), Mode::DryRun);

    let live_report = diagnose(&live, "cart-1", None).await;
    let dry_run_report = diagnose(&dry_run, "cart-1", None).await;

    assert!(live_report.succeeded, "{live_report:?}");
    assert_eq!(dry_run_report, live_report);
    assert_eq!(live_report.details["tail_lines"], 200, "the default tail");
    assert!(fake.mutations().is_empty());
}

#[tokio::test]
async fn collect_diagnostics_without_events_or_logs_succeeds() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(pod("cart-1")).expect("seed pod");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = diagnose(&executor, "cart-1", Some(10)).await;

    assert!(report.succeeded, "{report:?}");
    assert_eq!(
        report.changes[0],
        "no change: collected status, 0 events and logs of 2 containers"
    );
    assert_eq!(report.details["events"], json!([]));
    assert_eq!(report.details["logs"]["app"]["current"], "");
}

#[tokio::test]
async fn collect_diagnostics_missing_pod_fails() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::new(Some(fake.client()), Mode::Live);

    let report = diagnose(&executor, "ghost", None).await;

    assert!(!report.succeeded);
    assert_eq!(report.error, "pod shop/ghost not found");
    assert!(report.details.is_null());
}

#[test]
fn collect_diagnostics_parameters_are_validated() {
    let kind = TargetKind::Pod;

    let too_few = validate(
        "collect_diagnostics",
        kind,
        &params([("tail_lines", int(5))]),
    )
    .expect_err("below 10");
    let too_many = validate(
        "collect_diagnostics",
        kind,
        &params([("tail_lines", int(2001))]),
    )
    .expect_err("above 2000");
    let (_, defaults) = validate("collect_diagnostics", kind, &HashMap::new()).expect("valid");

    assert_eq!(
        too_few.to_string(),
        "parameter tail_lines of collect_diagnostics is 5, outside 10..=2000"
    );
    assert!(
        matches!(too_many, ValidationError::OutOfRange { value: 2001, .. }),
        "{too_many:?}"
    );
    assert_eq!(defaults.integer("tail_lines"), Some(200));
}
