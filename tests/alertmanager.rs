//! End to end: a real Alertmanager (Debian's `prometheus-alertmanager`)
//! sends its webhook to ingest; the alert goes through all five services
//! and ends as a notification and a row in the action history.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::Stack;
use serde_json::json;
use steward_testkit::{free_port, wait_for};
use tokio::process::{Child, Command};

/// A running Alertmanager with a webhook receiver pointing at ingest.
struct Alertmanager {
    url: String,
    _child: Child,
}

impl Alertmanager {
    async fn start(ingest_url: &str) -> Self {
        let binary = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .expect("Alertmanager is not installed; run deploy/local/deps.sh or apt-get install prometheus-alertmanager");
        let dir = std::env::temp_dir().join(steward_testkit::unique_name("alertmanager-"));
        std::fs::create_dir_all(&dir).expect("Alertmanager folder");
        let config = format!(
            "route:\n  receiver: steward\n  group_by: [alertname, namespace]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 4h\n\
             receivers:\n  - name: steward\n    webhook_configs:\n      - url: {ingest_url}/api/v1/alerts\n        send_resolved: true\n"
        );
        std::fs::write(dir.join("alertmanager.yml"), config).expect("Alertmanager config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // An empty cluster address turns off the HA gossip listener.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("Alertmanager starts");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        wait_for(
            &format!(
                "Alertmanager to become ready (log: {})",
                dir.join("alertmanager.log").display()
            ),
            Duration::from_secs(30),
            || async {
                let response = reqwest::get(&ready).await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
        Self { url, _child: child }
    }

    async fn post_alert(&self, alert: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&json!([alert]))
            .send()
            .await
            .expect("Alertmanager answers");
        assert!(
            response.status().is_success(),
            "Alertmanager rejected the alert: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn alertmanager_alert_reaches_a_notification_and_the_history() {
    let stack = Stack::start(&[("STEWARD_EXECUTE_CLUSTER", "e2e".to_owned())]).await;
    let alertmanager = Alertmanager::start(&stack.ingest_url).await;
    let labels = json!({
        "alertname": "KubeDeploymentReplicasMismatch",
        "severity": "warning",
        "cluster": "e2e",
        "namespace": "shop",
        "deployment": "checkout",
    });

    alertmanager
        .post_alert(json!({
            "labels": labels,
            "annotations": {"summary": "Deployment shop/checkout has fewer replicas than desired <for 15m> & more"},
        }))
        .await;
    let line = stack
        .wait_for_line("executed", "alert=KubeDeploymentReplicasMismatch")
        .await;

    for expected in [
        "cluster=e2e",
        "action=restart_deployment",
        "target=deployment/shop/checkout",
        "confidence=0.80",
        "analyzer=rules",
        "guard=approved [confidence 0.80 meets the threshold 0.70 for medium risk;",
        "result=dry-run succeeded [would patch deployment/shop/checkout",
        "reasoning=\"KubeDeploymentReplicasMismatch on deployment/shop/checkout:",
    ] {
        assert!(line.contains(expected), "{expected:?} missing from: {line}");
    }
    for stage in ["proposed", "approved"] {
        stack
            .wait_for_line(stage, "target=deployment/shop/checkout")
            .await;
    }

    let pool = stack.database.pool().await;
    let (action, status, mode, target): (String, String, String, String) = sqlx::query_as(
        "SELECT action, status, mode, target_name FROM actions WHERE cluster = 'e2e' AND namespace = 'shop'",
    )
    .fetch_one(&pool)
    .await
    .expect("one action history row");
    assert_eq!(
        (
            action.as_str(),
            status.as_str(),
            mode.as_str(),
            target.as_str()
        ),
        ("restart_deployment", "succeeded", "dry_run", "checkout")
    );

    // Steward computes the same fingerprint as Alertmanager for senders
    // that leave it out.
    let (fingerprint, stored_labels): (String, serde_json::Value) =
        sqlx::query_as("SELECT fingerprint, labels FROM alert_instances WHERE cluster = 'e2e'")
            .fetch_one(&pool)
            .await
            .expect("the alert instance row");
    let stored_labels: HashMap<String, String> =
        serde_json::from_value(stored_labels).expect("string labels");
    assert_eq!(
        steward_ingest::webhook::fingerprint(&stored_labels),
        fingerprint
    );

    // Resolving the alert in Alertmanager produces a resolved event.
    alertmanager
        .post_alert(json!({
            "labels": labels,
            "endsAt": chrono::Utc::now().to_rfc3339(),
        }))
        .await;
    stack
        .wait_for_line("resolved", "alert=KubeDeploymentReplicasMismatch")
        .await;
    let resolved_at: Option<chrono::DateTime<chrono::Utc>> = wait_for(
        "the action to record that its alert resolved",
        Duration::from_secs(30),
        || async {
            let value: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT alert_resolved_at FROM actions WHERE cluster = 'e2e'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            value.map(Some)
        },
    )
    .await;
    assert!(resolved_at.is_some());
}
