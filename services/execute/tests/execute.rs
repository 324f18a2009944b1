//! execute against real NATS and Postgres, acting on the in-memory
//! Kubernetes API through a kubeconfig as it would on a cluster.

mod common;

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use common::target;
use serde_json::json;
use steward_bus::{Bus, Stage, event_id};
use steward_execute::{Config, Mode};
use steward_proto::Message;
use steward_proto::v1::{
    Decision, ExecutionMode, ExecutionOutcome, Proposal, RemediationEvent, Target, TargetKind,
    Verdict, remediation_event::Body,
};
use steward_store::{ActionRecord, DecisionRecord, Store, TargetKey};
use steward_testkit::kube::FakeKube;
use steward_testkit::{TestDatabase, isolated_nats, stored_messages, wait_for};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Execute {
    bus: Bus,
    store: Store,
    database: TestDatabase,
    fake: Option<FakeKube>,
    shutdown: CancellationToken,
}

impl Execute {
    async fn start(mode: Mode, with_cluster: bool) -> Self {
        let database = TestDatabase::create().await;
        let mut config = Config::try_parse_from(["steward-execute"]).expect("defaults parse");
        config.nats = isolated_nats();
        config.database = database.config();
        config.mode = mode;
        config.cluster = "prod".to_owned();
        // The in-memory Kubernetes API runs no controllers, so no rollout
        // ever finishes there.
        config.verify_timeout = Duration::ZERO;
        config.consumer.retry_base_delay = Duration::from_millis(100);

        let fake = if with_cluster {
            let fake = FakeKube::start().await.expect("fake API");
            let path = std::env::temp_dir().join(steward_testkit::unique_name("kubeconfig-"));
            fake.write_kubeconfig(&path).expect("kubeconfig written");
            config.kubeconfig = Some(path);
            Some(fake)
        } else {
            config.kubeconfig = Some("/nonexistent/kubeconfig".into());
            None
        };

        let store = Store::connect_once(&database.config())
            .await
            .expect("Postgres reachable");
        store.migrate().await.expect("migrations");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let shutdown = CancellationToken::new();
        tokio::spawn(steward_execute::run(
            config.clone(),
            admin,
            shutdown.clone(),
        ));
        let bus = Bus::connect_once(&config.nats, "execute-test")
            .await
            .expect("NATS reachable");
        bus.ensure_streams().await.expect("streams");
        Self {
            bus,
            store,
            database,
            fake,
            shutdown,
        }
    }

    /// Records an approval as the guard does and returns its event.
    async fn approve(&self, action: &str, target: Target) -> RemediationEvent {
        let proposal_id = Uuid::new_v4();
        let correlation_id = Uuid::new_v4();
        let proposal = Proposal {
            proposal_id: proposal_id.to_string(),
            target: Some(target.clone()),
            action: action.into(),
            confidence: 0.9,
            reasoning: "test".into(),
            ..Proposal::default()
        };
        let event = RemediationEvent {
            event_id: event_id(&proposal_id, Stage::Approved).to_string(),
            correlation_id: correlation_id.to_string(),
            cluster: "prod".into(),
            occurred_at: Some(steward_proto::now()),
            body: Some(Body::Approved(Decision {
                proposal: Some(proposal),
                verdict: Verdict::Approved as i32,
                reasons: vec!["test approval".into()],
                decided_at: Some(steward_proto::now()),
            })),
        };
        let key = TargetKey {
            cluster: "prod".into(),
            namespace: target.namespace.clone(),
            kind: target.kind().label().into(),
            name: target.name.clone(),
        };
        let tx = self
            .store
            .begin_decision(key)
            .await
            .expect("decision transaction");
        tx.commit(
            &DecisionRecord {
                proposal_id,
                correlation_id,
                verdict: "approved",
                reasons: vec!["test approval".into()],
                event: event.encode_to_vec(),
            },
            Some(&ActionRecord {
                action: action.into(),
                parameters: json!({}),
                confidence: 0.9,
            }),
        )
        .await
        .expect("decision stored");
        event
    }

    async fn publish(&self, event: &RemediationEvent, message_id: &str) {
        self.bus
            .publish(
                self.bus.names().remediation(Stage::Approved, "prod"),
                "approved",
                message_id,
                steward_bus::REMEDIATION_CONTENT_TYPE,
                Bytes::from(event.encode_to_vec()),
            )
            .await
            .expect("approval published");
    }

    async fn executions(&self) -> Vec<steward_proto::v1::Execution> {
        stored_messages(self.bus.client(), &self.bus.names().remediation_stream())
            .await
            .into_iter()
            .filter_map(|message| {
                match RemediationEvent::decode(message.payload.as_slice())
                    .ok()?
                    .body
                {
                    Some(Body::Executed(execution)) => Some(execution),
                    _ => None,
                }
            })
            .collect()
    }

    async fn wait_for_executions(&self, count: usize) -> Vec<steward_proto::v1::Execution> {
        wait_for(
            &format!("{count} executed events"),
            Duration::from_secs(30),
            || async {
                let executions = self.executions().await;
                (executions.len() >= count).then_some(executions)
            },
        )
        .await
    }
}

impl Drop for Execute {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn checkout() -> Target {
    target(TargetKind::Deployment, "checkout")
}

fn seed_checkout(fake: &FakeKube) {
    fake.insert(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"replicas": 3, "template": {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "a"}]}}},
    }))
    .expect("seed");
}

#[tokio::test]
async fn dry_run_without_cluster_records_the_plan() {
    let execute = Execute::start(Mode::DryRun, false).await;
    let event = execute.approve("restart_deployment", checkout()).await;

    execute.publish(&event, "x1").await;
    let executions = execute.wait_for_executions(1).await;

    let execution = &executions[0];
    assert_eq!(execution.mode(), ExecutionMode::DryRun);
    assert_eq!(execution.outcome(), ExecutionOutcome::Succeeded);
    assert!(
        execution.changes[0].starts_with("would patch deployment/shop/checkout"),
        "{execution:?}"
    );
    let pool = execute.database.pool().await;
    let (status, mode, changes): (String, String, Vec<String>) =
        sqlx::query_as("SELECT status, mode, changes FROM actions")
            .fetch_one(&pool)
            .await
            .expect("history row");
    assert_eq!((status.as_str(), mode.as_str()), ("succeeded", "dry_run"));
    assert_eq!(changes, execution.changes);
}

#[tokio::test]
async fn live_restart_through_kubeconfig_patches_once_despite_redelivery() {
    let execute = Execute::start(Mode::Live, true).await;
    let fake = execute.fake.as_ref().expect("cluster");
    seed_checkout(fake);
    let event = execute.approve("restart_deployment", checkout()).await;

    execute.publish(&event, "first").await;
    execute.wait_for_executions(1).await;
    // A second copy past JetStream's duplicate window, as after a crash
    // between acting and acknowledging.
    execute.publish(&event, "second").await;
    let pool = execute.database.pool().await;
    wait_for(
        "the second copy to be handled",
        Duration::from_secs(20),
        || async {
            let jetstream = async_nats::jetstream::new(execute.bus.client().clone());
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                .get_consumer_from_stream("execute-prod", execute.bus.names().remediation_stream())
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.num_redelivered == 0
                && info.delivered.consumer_sequence >= 2)
                .then_some(())
        },
    )
    .await;

    let patches = fake
        .mutations()
        .iter()
        .filter(|m| m.verb == "patch" && !m.dry_run)
        .count();
    assert_eq!(
        patches,
        1,
        "the approval was executed twice: {:?}",
        fake.mutations()
    );
    assert_eq!(
        execute.executions().await.len(),
        1,
        "the republished result must be deduplicated"
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM actions")
        .fetch_one(&pool)
        .await
        .expect("history row");
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn live_action_on_missing_target_is_recorded_as_failed() {
    let execute = Execute::start(Mode::Live, true).await;
    let event = execute.approve("restart_deployment", checkout()).await;

    execute.publish(&event, "m1").await;
    let executions = execute.wait_for_executions(1).await;

    assert_eq!(executions[0].outcome(), ExecutionOutcome::Failed);
    assert_eq!(executions[0].error, "deployment/shop/checkout not found");
    let pool = execute.database.pool().await;
    let (status, error): (String, String) = sqlx::query_as("SELECT status, error FROM actions")
        .fetch_one(&pool)
        .await
        .expect("history row");
    assert_eq!(status, "failed");
    assert_eq!(error, "deployment/shop/checkout not found");
}

#[tokio::test]
async fn api_server_errors_are_retried_until_the_action_succeeds() {
    let execute = Execute::start(Mode::Live, true).await;
    let fake = execute.fake.as_ref().expect("cluster");
    seed_checkout(fake);
    fake.fail_next(2, 503);
    let event = execute.approve("restart_deployment", checkout()).await;

    execute.publish(&event, "r1").await;
    let executions = execute.wait_for_executions(1).await;

    assert_eq!(
        executions[0].outcome(),
        ExecutionOutcome::Succeeded,
        "{:?}",
        executions[0]
    );
    let stored = fake
        .get_json("apps/v1", "deployments", "shop", "checkout")
        .expect("deployment");
    assert!(
        stored["spec"]["template"]["metadata"]["annotations"]["steward.io/action-id"].is_string()
    );
}

#[tokio::test]
async fn live_mode_without_credentials_fails_at_start() {
    let mut config = Config::try_parse_from(["steward-execute", "--mode", "live"]).expect("parse");
    config.kubeconfig = Some("/nonexistent/kubeconfig".into());

    let result = steward_execute::kube_client(&config).await;

    let Err(error) = result else {
        panic!("live mode started without Kubernetes credentials");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("live mode needs Kubernetes credentials"),
        "{message}"
    );
    assert!(message.contains("/nonexistent/kubeconfig"), "{message}");
}

#[tokio::test]
async fn alert_resolved_after_approval_is_skipped() {
    let execute = Execute::start(Mode::Live, true).await;
    let fake = execute.fake.as_ref().expect("cluster");
    seed_checkout(fake);
    let event = execute.approve("restart_deployment", checkout()).await;
    let correlation_id = Uuid::parse_str(&event.correlation_id).expect("uuid");
    execute
        .store
        .mark_actions_resolved(correlation_id)
        .await
        .expect("resolved");

    execute.publish(&event, "s1").await;
    let executions = execute.wait_for_executions(1).await;

    assert_eq!(executions[0].outcome(), ExecutionOutcome::Skipped);
    assert_eq!(
        executions[0].changes,
        ["no change: the alert resolved after the approval"]
    );
    assert!(
        fake.mutations().is_empty(),
        "a skipped action touched the cluster"
    );
}

#[tokio::test]
async fn action_held_by_another_attempt_waits_for_its_claim() {
    let execute = Execute::start(Mode::Live, true).await;
    seed_checkout(execute.fake.as_ref().expect("cluster"));
    let event = execute.approve("restart_deployment", checkout()).await;
    let Some(Body::Approved(decision)) = &event.body else {
        panic!("approval event");
    };
    let action_id =
        Uuid::parse_str(&decision.proposal.clone().unwrap_or_default().proposal_id).expect("uuid");
    // Another attempt that then crashed holds the action for one second.
    let claim = execute
        .store
        .claim_action(action_id, Duration::from_secs(1))
        .await
        .expect("claim");
    assert!(
        matches!(claim, steward_store::Claim::Run { attempts: 1, .. }),
        "{claim:?}"
    );

    execute.publish(&event, "b1").await;
    let executions = execute.wait_for_executions(1).await;

    assert_eq!(executions[0].outcome(), ExecutionOutcome::Succeeded);
    let pool = execute.database.pool().await;
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM actions")
        .fetch_one(&pool)
        .await
        .expect("history row");
    assert_eq!(
        attempts, 2,
        "the redelivery must run once the crashed claim expired"
    );
}

#[tokio::test]
async fn approval_for_a_colliding_cluster_name_is_a_dead_letter() {
    let execute = Execute::start(Mode::DryRun, false).await;
    let mut event = execute.approve("restart_deployment", checkout()).await;
    // "prod " (trailing space) has the subject token "prod_", not
    // "prod"; publishing it on the "prod" subject stands for two cluster
    // names that share a token.
    event.cluster = "prod ".into();

    execute.publish(&event, "c1").await;
    let pool = execute.database.pool().await;
    let reason: String = wait_for("the dead letter", Duration::from_secs(20), || async {
        sqlx::query_scalar("SELECT reason FROM dead_letters")
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
    })
    .await;

    assert!(
        reason.contains("reached the executor of cluster \"prod\""),
        "{reason}"
    );
    assert!(execute.executions().await.is_empty());
}

#[tokio::test]
async fn live_mode_refuses_every_cluster() {
    let mut config =
        Config::try_parse_from(["steward-execute", "--mode", "live", "--cluster", "*"])
            .expect("parse");
    config.nats = isolated_nats();

    let message = start_error(config, "live mode for every cluster must not start").await;

    assert!(
        message.contains("live mode acts on one cluster"),
        "{message}"
    );
}

#[tokio::test]
async fn overlapping_executors_refuse_to_start() {
    let execute = Execute::start(Mode::DryRun, false).await;
    // Wait until the per-cluster executor's consumer exists.
    let jetstream = async_nats::jetstream::new(execute.bus.client().clone());
    wait_for(
        "the prod executor's consumer",
        Duration::from_secs(20),
        || async {
            jetstream
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    "execute-prod",
                    execute.bus.names().remediation_stream(),
                )
                .await
                .ok()
        },
    )
    .await;
    let mut config = Config::try_parse_from(["steward-execute", "--cluster", "*"]).expect("parse");
    config.nats = isolated_nats();
    config.nats.subject_prefix = execute_prefix(&execute);
    config.nats.stream_prefix = execute
        .bus
        .names()
        .remediation_stream()
        .trim_end_matches("_REMEDIATION")
        .to_owned();
    config.database = execute.database.config();

    let message = start_error(config, "an overlapping executor must not start").await;

    assert!(
        message.contains("consumer execute-prod takes approvals that execute~all takes too"),
        "{message}"
    );
}

/// Runs execute with `config`, which must fail at start, and returns the
/// error with its causes. `expectation` is the panic message if it does not
/// fail.
async fn start_error(config: Config, expectation: &str) -> String {
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");

    let result = steward_execute::run(config, admin, CancellationToken::new()).await;

    format!("{:#}", result.expect_err(expectation))
}

fn execute_prefix(execute: &Execute) -> String {
    execute
        .bus
        .names()
        .all_alerts()
        .trim_end_matches(".alerts.>")
        .to_owned()
}
