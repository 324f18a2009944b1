//! Job-template actions and the check of a live action's effect, against
//! the in-memory Kubernetes API.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{run, run_and_retry, run_attempt, target_in};
use serde_json::{Value, json};
use steward_actions::jobs::JobTemplates;
use steward_execute::Mode;
use steward_execute::actions::verify::Verification;
use steward_execute::actions::{Executor, Request, Settings};
use steward_proto::v1::TargetKind;
use steward_testkit::kube::FakeKube;
use steward_testkit::wait_for;
use uuid::Uuid;

const TEMPLATES: &str = r#"
templates:
  - action: backup_data
    namespace: data
    job:
      backoffLimit: 1
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: backup
              image: "registry.example.com/pg-backup:1"
              env: [{name: MODE, value: full}]
  - action: rotate_secret
    namespace: shop
    job:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: rotate, image: "rotate:1"}]
"#;

fn settings() -> Settings {
    Settings {
        job_templates: JobTemplates::parse(TEMPLATES).expect("valid templates"),
        job_timeout: Duration::from_secs(20),
        ..Settings::default()
    }
}

fn deployment(name: &str, uses_secret: Option<&str>) -> Value {
    let env = match uses_secret {
        Some(secret) => {
            json!([{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}])
        }
        None => json!([]),
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"replicas": 1, "template": {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "a", "env": env}]}}},
    })
}

#[tokio::test]
async fn backup_job_is_created_from_its_template() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::with_settings(Some(fake.client()), Mode::Live, settings());
    let claim = target_in(TargetKind::PersistentVolumeClaim, "data", "postgres-data-0");
    let action_id = Uuid::new_v4();

    let report = run_attempt(
        &executor,
        action_id,
        "backup_data",
        &claim,
        HashMap::new(),
        1,
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    let jobs = fake.list_json("batch/v1", "jobs", Some("data"));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert!(
        job["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("steward-backup-data-"),
        "{job}"
    );
    assert_eq!(
        job["metadata"]["annotations"]["steward.io/action-id"],
        action_id.to_string()
    );
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for expected in [
        "MODE",
        "STEWARD_ACTION",
        "STEWARD_ACTION_ID",
        "STEWARD_TARGET_KIND",
        "STEWARD_TARGET_NAMESPACE",
        "STEWARD_TARGET_NAME",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {env}");
    }
}

#[tokio::test]
async fn job_of_an_earlier_attempt_is_not_created_twice() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::with_settings(Some(fake.client()), Mode::Live, settings());
    let claim = target_in(TargetKind::PersistentVolumeClaim, "data", "postgres-data-0");

    let (_, retry) = run_and_retry(&executor, "backup_data", &claim, HashMap::new()).await;

    assert!(retry.succeeded, "{retry:?}");
    assert!(
        retry.changes[0].contains("already exists from an earlier attempt"),
        "{retry:?}"
    );
    assert_eq!(fake.list_json("batch/v1", "jobs", Some("data")).len(), 1);
}

#[tokio::test]
async fn job_action_without_template_fails_clearly() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::with_settings(Some(fake.client()), Mode::Live, settings());
    let claim = target_in(TargetKind::PersistentVolumeClaim, "other", "cache");

    let report = run(&executor, "backup_data", &claim, HashMap::new()).await;

    assert!(!report.succeeded);
    assert!(
        report.error.contains("no job template for backup_data"),
        "{report:?}"
    );
    assert!(report.error.contains("--job-templates"), "{report:?}");
}

#[tokio::test]
async fn dry_run_job_is_not_persisted() {
    let fake = FakeKube::start().await.expect("fake API");
    let executor = Executor::with_settings(Some(fake.client()), Mode::DryRun, settings());
    let claim = target_in(TargetKind::PersistentVolumeClaim, "data", "postgres-data-0");

    let report = run(&executor, "backup_data", &claim, HashMap::new()).await;

    assert!(report.succeeded, "{report:?}");
    assert!(
        report.changes[0].starts_with("would create job data/steward-backup-data-"),
        "{report:?}"
    );
    assert!(fake.list_json("batch/v1", "jobs", Some("data")).is_empty());
}

#[tokio::test]
async fn rotated_secret_restarts_only_the_workloads_using_it() {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(deployment("checkout", Some("db-credentials")))
        .expect("seed");
    fake.insert(deployment("catalog", None)).expect("seed");
    let executor = Executor::with_settings(Some(fake.client()), Mode::Live, settings());
    let secret = target_in(TargetKind::Secret, "shop", "db-credentials");

    // Plays the Job controller: marks the rotation job complete.
    let controller = fake.client();
    let completer = {
        tokio::spawn(async move {
            let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
                kube::Api::namespaced(controller, "shop");
            let name = wait_for("the rotation job", Duration::from_secs(20), || async {
                let list = jobs.list(&Default::default()).await.ok()?;
                list.items.first().and_then(|job| job.metadata.name.clone())
            })
            .await;
            let status =
                json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
            jobs.patch_status(
                &name,
                &Default::default(),
                &kube::api::Patch::Merge(&status),
            )
            .await
            .expect("job status set");
        })
    };

    let action_id = Uuid::new_v4();
    let report = run_attempt(
        &executor,
        action_id,
        "rotate_secret",
        &secret,
        HashMap::new(),
        1,
    )
    .await;
    completer.await.expect("controller task");
    // A redelivery after the rotation finds the job done and the workload
    // already restarted.
    let retry = run_attempt(
        &executor,
        action_id,
        "rotate_secret",
        &secret,
        HashMap::new(),
        2,
    )
    .await;

    assert!(report.succeeded, "{report:?}");
    assert!(retry.succeeded, "{retry:?}");
    assert!(
        retry
            .changes
            .iter()
            .any(|line| line.contains("already restarted by this action")),
        "{retry:?}"
    );
    let restarts = fake
        .mutations()
        .iter()
        .filter(|m| m.resource == "deployments" && m.verb == "patch")
        .count();
    assert_eq!(restarts, 1);
    let checkout = fake
        .get_json("apps/v1", "deployments", "shop", "checkout")
        .expect("checkout");
    let catalog = fake
        .get_json("apps/v1", "deployments", "shop", "catalog")
        .expect("catalog");
    assert!(checkout["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
    assert!(
        catalog["spec"]["template"]["metadata"]["annotations"].is_null(),
        "{catalog}"
    );
}

/// Restarts the `checkout` deployment with a live executor that waits up to
/// `verify_timeout` for the rollout, runs `controller` between the restart
/// and the check, and returns what the check found.
async fn restart_and_verify(
    verify_timeout: Duration,
    controller: impl AsyncFnOnce(&FakeKube),
) -> Verification {
    let fake = FakeKube::start().await.expect("fake API");
    fake.insert(deployment("checkout", None)).expect("seed");
    let executor = Executor::with_settings(
        Some(fake.client()),
        Mode::Live,
        Settings {
            verify_timeout,
            ..Settings::default()
        },
    );
    let checkout = target_in(TargetKind::Deployment, "shop", "checkout");
    let (_, parameters) = steward_actions::validate(
        "restart_deployment",
        TargetKind::Deployment,
        &HashMap::new(),
    )
    .expect("valid");
    let request = Request {
        action_id: Uuid::new_v4(),
        action: "restart_deployment",
        parameters: &parameters,
        target: &checkout,
        attempts: 1,
    };

    executor.run(&request).await.expect("restart");
    controller(&fake).await;
    executor.verify(&request).await
}

#[tokio::test]
async fn finished_rollout_is_verified_effective() {
    // Plays the Deployment controller: reports the new pods available.
    let mark_available = async |fake: &FakeKube| {
        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(fake.client(), "shop");
        let current = deployments.get("checkout").await.expect("read");
        let generation = current.metadata.generation.unwrap_or(1);
        let status = json!({"status": {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
        deployments
            .patch_status(
                "checkout",
                &Default::default(),
                &kube::api::Patch::Merge(&status),
            )
            .await
            .expect("status set");
    };

    let verification = restart_and_verify(Duration::from_secs(20), mark_available).await;

    assert!(
        verification.checked && verification.effective,
        "{verification:?}"
    );
}

#[tokio::test]
async fn stuck_rollout_is_verified_ineffective() {
    // No controller reports the new pods, so the rollout never finishes.
    let verification = restart_and_verify(Duration::from_secs(1), async |_| {}).await;

    assert!(verification.checked, "{verification:?}");
    assert!(!verification.effective, "{verification:?}");
    assert!(
        verification.detail.starts_with("not done within 1s"),
        "{verification:?}"
    );
}
