//! End to end with crashes: services are killed with SIGKILL while alerts
//! flow and started again. No alert may be lost and no action may be
//! applied twice to the (in-memory) cluster.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Stack;
use serde_json::json;
use steward_testkit::kube::FakeKube;
use steward_testkit::wait_for;

const DEPLOYMENTS: usize = 24;
const WAVE: usize = 8;

fn deployment_name(index: usize) -> String {
    format!("svc-{index:02}")
}

fn webhook(index: usize) -> serde_json::Value {
    json!({
        "version": "4",
        "status": "firing",
        "receiver": "steward",
        "groupKey": format!("{{}}:{{deployment=\"{}\"}}", deployment_name(index)),
        "alerts": [{
            "status": "firing",
            "labels": {
                "alertname": "KubeDeploymentReplicasMismatch",
                "cluster": "crash",
                "namespace": "shop",
                "deployment": deployment_name(index),
            },
            "annotations": {"summary": "replicas mismatch"},
            "startsAt": "2026-12-04T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }],
    })
}

async fn post_wave(stack: &Stack, wave: std::ops::Range<usize>) {
    for index in wave {
        assert_eq!(
            stack.post_webhook(&webhook(index)).await,
            200,
            "ingest rejected alert {index}"
        );
    }
}

/// Returns the deployments that have an executed notification.
fn executed(stack: &Stack) -> HashSet<String> {
    stack
        .lines()
        .iter()
        .filter(|line| line.starts_with("executed  "))
        .filter_map(|line| {
            let start = line.find("target=deployment/shop/")? + "target=deployment/shop/".len();
            line[start..].split_whitespace().next().map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn killed_services_lose_no_alert_and_act_once() {
    let fake = FakeKube::start().await.expect("fake API");
    for index in 0..DEPLOYMENTS {
        fake.insert(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deployment_name(index), "namespace": "shop"},
            "spec": {"replicas": 2, "template": {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "a"}]}}},
        }))
        .expect("seed");
    }
    // A slow API server keeps actions in flight when execute is killed,
    // some of them applied but not yet recorded.
    fake.set_latency(Duration::from_millis(150));
    let kubeconfig = std::env::temp_dir().join(steward_testkit::unique_name("kubeconfig-"));
    fake.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let mut stack = Stack::start(&[
        ("STEWARD_EXECUTE_MODE", "live".to_owned()),
        ("STEWARD_EXECUTE_CLUSTER", "crash".to_owned()),
        // A killed attempt's claim must expire before a redelivery may
        // run the action; keep it short so the test stays fast.
        ("STEWARD_EXECUTION_LEASE", "3s".to_owned()),
        ("STEWARD_KUBECONFIG", kubeconfig.display().to_string()),
        // Two messages at a time per service spread a wave out, so the
        // kill lands while some of it is still being handled.
        ("STEWARD_MAX_IN_FLIGHT", "2".to_owned()),
    ])
    .await;

    // Each service is killed while a wave of alerts is in flight: right
    // after the wave's first action was executed.
    for (wave, victim) in ["analyze", "guard", "execute"].into_iter().enumerate() {
        let before = executed(&stack).len();
        post_wave(&stack, wave * WAVE..(wave + 1) * WAVE).await;
        wait_for(
            "the wave's first executed action",
            Duration::from_secs(60),
            || async { (executed(&stack).len() > before).then_some(()) },
        )
        .await;
        stack.kill(victim).await;
        stack.restart(victim).await;
    }

    let done = wait_for(
        "every alert to reach an executed notification",
        Duration::from_secs(120),
        || async {
            let done = executed(&stack);
            (done.len() == DEPLOYMENTS).then_some(done)
        },
    )
    .await;
    let expected: HashSet<String> = (0..DEPLOYMENTS).map(deployment_name).collect();
    assert_eq!(done, expected);

    // Each deployment was restarted by exactly one live patch.
    let mut patches = std::collections::HashMap::<String, usize>::new();
    for mutation in fake.mutations() {
        if mutation.verb == "patch" && !mutation.dry_run && mutation.resource == "deployments" {
            *patches.entry(mutation.name).or_default() += 1;
        }
    }
    for name in &expected {
        assert_eq!(
            patches.get(name),
            Some(&1),
            "{name} was patched {:?} times",
            patches.get(name)
        );
    }

    let pool = stack.database.pool().await;
    let statuses: Vec<(String, String)> = sqlx::query_as("SELECT target_name, status FROM actions")
        .fetch_all(&pool)
        .await
        .expect("history");
    assert_eq!(statuses.len(), DEPLOYMENTS, "{statuses:?}");
    assert!(
        statuses.iter().all(|(_, status)| status == "succeeded"),
        "{statuses:?}"
    );
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(dead_letters, 0);
    let _ = std::fs::remove_file(kubeconfig);
}
