//! The oscillation detectors on real Postgres, with crafted histories.

use serde_json::json;
use steward_store::{Candidate, DetectorSettings, Finding, Store, TargetKey};
use steward_testkit::TestDatabase;
use uuid::Uuid;

struct History {
    store: Store,
    pool: sqlx::PgPool,
    _database: TestDatabase,
}

/// One crafted row of the action history.
struct Past<'a> {
    action: &'a str,
    target: &'a str,
    parameters: serde_json::Value,
    status: &'a str,
    minutes_ago: i64,
    effective: Option<bool>,
    resolved_after_minutes: Option<i64>,
}

impl<'a> Past<'a> {
    fn new(action: &'a str, minutes_ago: i64) -> Self {
        Self {
            action,
            target: "checkout",
            parameters: json!({}),
            status: "succeeded",
            minutes_ago,
            effective: None,
            resolved_after_minutes: Some(1),
        }
    }
}

impl History {
    async fn new() -> Self {
        let database = TestDatabase::create().await;
        let store = Store::connect_once(&database.config())
            .await
            .expect("Postgres reachable");
        store.migrate().await.expect("migrations");
        let pool = database.pool().await;
        Self {
            store,
            pool,
            _database: database,
        }
    }

    /// Inserts a past action (and its decision) and returns its id. It
    /// finished a minute after its approval.
    async fn add(&self, past: Past<'_>) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO decisions (proposal_id, correlation_id, cluster, verdict, reasons, event, decided_at)
             VALUES ($1, $2, 'prod', 'approved', '{}', '', now() - make_interval(mins => $3))",
        )
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(past.minutes_ago as i32)
        .execute(&self.pool)
        .await
        .expect("decision row");
        sqlx::query(
            "INSERT INTO actions (action_id, correlation_id, cluster, namespace, target_kind, target_name,
                                  action, parameters, confidence, status, mode, approved_at, finished_at,
                                  effective, alert_resolved_at)
             VALUES ($1, $2, 'prod', 'shop', 'deployment', $3, $4, $5, 0.9, $6, 'live',
                     now() - make_interval(mins => $7),
                     now() - make_interval(mins => $7) + interval '1 minute',
                     $8,
                     now() - make_interval(mins => $7) + interval '1 minute' + make_interval(mins => $9))",
        )
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(past.target)
        .bind(past.action)
        .bind(&past.parameters)
        .bind(past.status)
        .bind(past.minutes_ago as i32)
        .bind(past.effective)
        .bind(past.resolved_after_minutes.map(|m| m as i32))
        .execute(&self.pool)
        .await
        .expect("action row");
        id
    }

    /// Records a firing alert in the namespace, first seen `minutes_ago`.
    async fn alert(&self, alertname: &str, minutes_ago: i64) {
        sqlx::query(
            "INSERT INTO alert_instances (correlation_id, status, cluster, fingerprint, alertname, starts_at,
                                          labels, annotations, first_seen_at)
             VALUES ($1, 'firing', 'prod', 'f', $2, now(), $3, '{}', now() - make_interval(mins => $4))",
        )
        .bind(Uuid::new_v4())
        .bind(alertname)
        .bind(json!({"alertname": alertname, "namespace": "shop"}))
        .bind(minutes_ago as i32)
        .execute(&self.pool)
        .await
        .expect("alert row");
    }

    async fn findings(&self, action: &str, replicas: Option<i32>) -> Vec<Finding> {
        let key = TargetKey {
            cluster: "prod".into(),
            namespace: "shop".into(),
            kind: "deployment".into(),
            name: "checkout".into(),
        };
        let mut tx = self.store.begin_decision(key).await.expect("transaction");
        tx.findings(
            &Candidate { action, replicas },
            &DetectorSettings::default(),
        )
        .await
        .expect("detectors run")
    }
}

fn scale(replicas: i64, minutes_ago: i64) -> Past<'static> {
    Past {
        parameters: json!({"replicas": replicas}),
        ..Past::new("scale_deployment", minutes_ago)
    }
}

fn only<'a>(findings: &'a [Finding], detector: &str) -> &'a Finding {
    let matching: Vec<&Finding> = findings.iter().filter(|f| f.detector == detector).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one {detector} finding in {findings:?}"
    );
    matching[0]
}

#[tokio::test]
async fn scale_oscillation_blocks_a_third_turn() {
    let history = History::new().await;
    let a = history.add(scale(5, 40)).await;
    let b = history.add(scale(2, 30)).await;

    // 5 -> 2 (down), then the candidate 2 -> 6 (up): one change, a warning.
    let warned = history.findings("scale_deployment", Some(6)).await;
    let c = history.add(scale(6, 20)).await;
    // 2 -> 6 (up), then the candidate 6 -> 3 (down): two changes.
    let blocked = history.findings("scale_deployment", Some(3)).await;

    assert_eq!(only(&warned, "scale_oscillation").severity, "warning");
    let finding = only(&blocked, "scale_oscillation");
    assert!(finding.blocks(), "{finding:?}");
    assert_eq!(
        finding.detail,
        "scale oscillation: 2 direction changes in 1h"
    );
    assert_eq!(finding.evidence, vec![a, b, c]);
}

#[tokio::test]
async fn steady_scaling_is_not_oscillation() {
    let history = History::new().await;
    history.add(scale(3, 40)).await;
    history.add(scale(4, 30)).await;
    history.add(scale(5, 20)).await;

    let findings = history.findings("scale_deployment", Some(6)).await;

    assert!(
        findings.iter().all(|f| f.detector != "scale_oscillation"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn scaling_outside_the_window_is_ignored() {
    let history = History::new().await;
    history.add(scale(5, 200)).await;
    history.add(scale(2, 190)).await;
    history.add(scale(6, 180)).await;

    let findings = history.findings("scale_deployment", Some(3)).await;

    assert!(
        findings.iter().all(|f| f.detector != "scale_oscillation"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn resources_and_scaling_alternating_is_thrashing() {
    let history = History::new().await;
    let a = history.add(scale(4, 30)).await;
    let b = history
        .add(Past {
            parameters: json!({"container": "app", "memory_limit": "1Gi"}),
            ..Past::new("increase_resources", 20)
        })
        .await;

    let findings = history.findings("scale_deployment", Some(6)).await;

    let finding = only(&findings, "resource_thrashing");
    assert!(finding.blocks(), "{finding:?}");
    assert_eq!(
        finding.detail,
        "resource thrashing: increase_resources and scaling alternated 2 times in 45m"
    );
    assert_eq!(finding.evidence, vec![a, b]);
}

#[tokio::test]
async fn ineffective_repeats_block_the_next_one() {
    let history = History::new().await;
    let ineffective = |minutes_ago| Past {
        resolved_after_minutes: None,
        ..Past::new("restart_deployment", minutes_ago)
    };
    let a = history.add(ineffective(90)).await;
    let b = history.add(ineffective(60)).await;
    let c = history.add(ineffective(30)).await;

    let findings = history.findings("restart_deployment", None).await;

    let finding = only(&findings, "ineffective_loop");
    assert!(finding.blocks(), "{finding:?}");
    assert_eq!(
        finding.detail,
        "ineffective loop: restart_deployment ran 3 times in 2h without resolving its alert"
    );
    assert_eq!(finding.evidence, vec![a, b, c]);
}

#[tokio::test]
async fn dry_runs_are_not_judged_ineffective() {
    let history = History::new().await;
    for minutes_ago in [90, 60, 30] {
        history
            .add(Past {
                resolved_after_minutes: None,
                ..Past::new("restart_deployment", minutes_ago)
            })
            .await;
    }
    sqlx::query("UPDATE actions SET mode = 'dry_run'")
        .execute(&history.pool)
        .await
        .expect("dry-run rows");

    let findings = history.findings("restart_deployment", None).await;

    assert!(
        findings.iter().all(|f| f.detector != "ineffective_loop"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn effective_repeats_are_not_a_loop() {
    let history = History::new().await;
    for minutes_ago in [90, 60, 30] {
        history
            .add(Past::new("restart_deployment", minutes_ago))
            .await;
    }

    let findings = history.findings("restart_deployment", None).await;

    assert!(
        findings.iter().all(|f| f.detector != "ineffective_loop"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn recent_actions_are_not_judged_before_they_settle() {
    let history = History::new().await;
    for minutes_ago in [8, 5, 2] {
        history
            .add(Past {
                resolved_after_minutes: None,
                ..Past::new("restart_deployment", minutes_ago)
            })
            .await;
    }

    let findings = history.findings("restart_deployment", None).await;

    assert!(
        findings.iter().all(|f| f.detector != "ineffective_loop"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn failed_effect_check_counts_as_ineffective() {
    let history = History::new().await;
    for minutes_ago in [90, 60] {
        history
            .add(Past {
                effective: Some(false),
                ..Past::new("restart_deployment", minutes_ago)
            })
            .await;
    }

    let findings = history.findings("restart_deployment", None).await;

    assert_eq!(only(&findings, "ineffective_loop").severity, "warning");
}

#[tokio::test]
async fn new_alerts_after_an_action_are_a_cascade() {
    let history = History::new().await;
    let action = history.add(Past::new("restart_deployment", 20)).await;
    history.alert("KubePodCrashLooping", 15).await;
    history.alert("TargetDown", 10).await;
    // An alert from before the action is not a consequence of it.
    history.alert("KubeQuotaAlmostFull", 25).await;

    let findings = history.findings("scale_deployment", Some(3)).await;

    let finding = only(&findings, "cascading_failure");
    assert!(finding.blocks(), "{finding:?}");
    assert_eq!(
        finding.detail,
        "cascading failure: 2 new alerts (KubePodCrashLooping, TargetDown) in namespace shop after actions there in the last 30m"
    );
    assert_eq!(finding.evidence, vec![action]);
}

#[tokio::test]
async fn three_failures_block_for_an_hour() {
    let history = History::new().await;
    let failed = |minutes_ago| Past {
        status: "failed",
        ..Past::new("restart_deployment", minutes_ago)
    };
    let ids = [
        history.add(failed(50)).await,
        history.add(failed(40)).await,
        history.add(failed(30)).await,
    ];

    let findings = history.findings("restart_deployment", None).await;

    let finding = only(&findings, "consecutive_failures");
    assert!(finding.blocks());
    assert_eq!(finding.evidence, ids.to_vec());
}

#[tokio::test]
async fn failures_older_than_the_block_do_not_block() {
    let history = History::new().await;
    for minutes_ago in [150, 140, 130] {
        history
            .add(Past {
                status: "failed",
                ..Past::new("restart_deployment", minutes_ago)
            })
            .await;
    }

    let findings = history.findings("restart_deployment", None).await;

    assert!(
        findings
            .iter()
            .all(|f| f.detector != "consecutive_failures"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn a_success_between_failures_resets_the_count() {
    let history = History::new().await;
    let failed = |minutes_ago| Past {
        status: "failed",
        ..Past::new("restart_deployment", minutes_ago)
    };
    history.add(failed(50)).await;
    history.add(Past::new("restart_deployment", 40)).await;
    history.add(failed(30)).await;
    history.add(failed(20)).await;

    let findings = history.findings("restart_deployment", None).await;

    assert!(
        findings
            .iter()
            .all(|f| f.detector != "consecutive_failures"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn pruning_removes_old_finished_history_only() {
    let history = History::new().await;
    let old = history
        .add(Past::new("restart_deployment", 60 * 24 * 100))
        .await;
    let recent = history.add(Past::new("restart_deployment", 60)).await;
    let running = history
        .add(Past {
            status: "executing",
            ..Past::new("restart_deployment", 60 * 24 * 100)
        })
        .await;

    let pruned = history
        .store
        .prune(std::time::Duration::from_secs(90 * 24 * 3600), 1)
        .await
        .expect("prune")
        .expect("no other pruner");

    assert_eq!(pruned.actions, 1);
    assert_eq!(pruned.decisions, 1);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT action_id FROM actions ORDER BY approved_at")
        .fetch_all(&history.pool)
        .await
        .expect("rows");
    assert!(!left.contains(&old), "the old finished action must go");
    assert!(
        left.contains(&recent) && left.contains(&running),
        "{left:?}"
    );
}
