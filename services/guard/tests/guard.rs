//! guard against real NATS and Postgres: thresholds, cooldown from the
//! action history, redelivery, racing replicas and a database outage.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use steward_bus::{Bus, Stage, event_id};
use steward_guard::Config;
use steward_proto::Message;
use steward_proto::v1::{
    AlertEvent, Proposal, RemediationEvent, Target, TargetKind, Verdict, remediation_event::Body,
};
use steward_testkit::{TestDatabase, isolated_nats, stored_messages, wait_for};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Guard {
    bus: Bus,
    config: Config,
    database: TestDatabase,
    admin: Vec<SocketAddr>,
    shutdown: CancellationToken,
}

impl Guard {
    /// Starts `replicas` guard instances sharing one durable consumer.
    async fn start(replicas: usize) -> Self {
        Self::start_with(replicas, |_| {}).await
    }

    async fn start_with(replicas: usize, adjust: impl FnOnce(&mut Config)) -> Self {
        let database = TestDatabase::create().await;
        let mut config = Config::try_parse_from(["steward-guard"]).expect("defaults parse");
        config.nats = isolated_nats();
        config.database = database.config();
        config.consumer.retry_base_delay = Duration::from_millis(100);
        adjust(&mut config);

        let shutdown = CancellationToken::new();
        let mut admin = Vec::new();
        for _ in 0..replicas {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            admin.push(listener.local_addr().expect("address"));
            tokio::spawn(steward_guard::run(
                config.clone(),
                listener,
                shutdown.clone(),
            ));
        }

        let bus = Bus::connect_once(&config.nats, "guard-test")
            .await
            .expect("NATS reachable");
        bus.ensure_streams().await.expect("streams");
        Self {
            bus,
            config,
            database,
            admin,
            shutdown,
        }
    }

    async fn propose(&self, proposal: &Proposal) {
        let proposal_id = Uuid::parse_str(&proposal.proposal_id).expect("uuid");
        let event = RemediationEvent {
            event_id: event_id(&proposal_id, Stage::Proposed).to_string(),
            correlation_id: Uuid::new_v4().to_string(),
            cluster: "prod".into(),
            occurred_at: Some(steward_proto::now()),
            body: Some(Body::Proposed(proposal.clone())),
        };
        self.publish_event(&event, &event.event_id).await;
    }

    async fn publish_event(&self, event: &RemediationEvent, message_id: &str) {
        self.bus
            .publish(
                self.bus.names().remediation(Stage::Proposed, "prod"),
                "proposed",
                message_id,
                steward_bus::REMEDIATION_CONTENT_TYPE,
                Bytes::from(event.encode_to_vec()),
            )
            .await
            .expect("proposal published");
    }

    /// Returns the decision events on the stream, in order, with the
    /// pending ones.
    async fn decisions(&self) -> Vec<(Stage, steward_proto::v1::Decision)> {
        stored_messages(self.bus.client(), &self.bus.names().remediation_stream())
            .await
            .into_iter()
            .filter_map(|message| {
                let event =
                    RemediationEvent::decode(message.payload.as_slice()).expect("RemediationEvent");
                match event.body {
                    Some(Body::Approved(decision)) => Some((Stage::Approved, decision)),
                    Some(Body::Rejected(decision)) => Some((Stage::Rejected, decision)),
                    Some(Body::Pending(decision)) => Some((Stage::Pending, decision)),
                    _ => None,
                }
            })
            .collect()
    }

    async fn wait_for_decisions(&self, count: usize) -> Vec<(Stage, steward_proto::v1::Decision)> {
        wait_for(
            &format!("{count} decisions on the remediation stream"),
            Duration::from_secs(30),
            || async {
                let decisions = self.decisions().await;
                (decisions.len() >= count).then_some(decisions)
            },
        )
        .await
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn proposal(action: &str, confidence: f64, deployment: &str) -> Proposal {
    Proposal {
        proposal_id: Uuid::new_v4().to_string(),
        alert: Some(AlertEvent {
            labels: HashMap::from([(
                "alertname".to_owned(),
                "KubeDeploymentReplicasMismatch".to_owned(),
            )]),
            ..AlertEvent::default()
        }),
        target: Some(Target {
            kind: TargetKind::Deployment as i32,
            namespace: "shop".into(),
            name: deployment.into(),
        }),
        action: action.into(),
        parameters: HashMap::new(),
        confidence,
        reasoning: "test".into(),
        analysis: None,
        covered_correlation_ids: Vec::new(),
    }
}

#[tokio::test]
async fn confident_proposal_is_approved_and_recorded() {
    let guard = Guard::start(1).await;
    let proposal = proposal("restart_deployment", 0.9, "checkout");

    guard.propose(&proposal).await;
    let decisions = guard.wait_for_decisions(1).await;

    let (stage, decision) = &decisions[0];
    assert_eq!(*stage, Stage::Approved);
    assert_eq!(decision.verdict(), Verdict::Approved);
    assert_eq!(
        decision.reasons,
        [
            "confidence 0.90 meets the threshold 0.70 for medium risk",
            "no restart_deployment on deployment/shop/checkout in the last 5m",
            "no oscillation in the action history",
        ]
    );
    let pool = guard.database.pool().await;
    let (status, action): (String, String) =
        sqlx::query_as("SELECT status, action FROM actions WHERE action_id = $1::uuid")
            .bind(&proposal.proposal_id)
            .fetch_one(&pool)
            .await
            .expect("the approval is in the action history");
    assert_eq!(
        (status.as_str(), action.as_str()),
        ("approved", "restart_deployment")
    );
}

#[tokio::test]
async fn low_confidence_is_rejected_with_the_reason() {
    let guard = Guard::start(1).await;

    guard
        .propose(&proposal("restart_deployment", 0.55, "checkout"))
        .await;
    let decisions = guard.wait_for_decisions(1).await;

    assert_eq!(decisions[0].0, Stage::Rejected);
    assert_eq!(
        decisions[0].1.reasons,
        ["confidence 0.55 is below the threshold 0.70 for medium risk"]
    );
    let pool = guard.database.pool().await;
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM actions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(actions, 0, "a rejected proposal entered the action history");
}

#[tokio::test]
async fn same_action_within_cooldown_is_rejected() {
    let guard = Guard::start(1).await;
    let first = proposal("restart_deployment", 0.9, "checkout");
    let second = proposal("restart_deployment", 0.95, "checkout");

    guard.propose(&first).await;
    guard.wait_for_decisions(1).await;
    guard.propose(&second).await;
    let decisions = guard.wait_for_decisions(2).await;

    assert_eq!(decisions[1].0, Stage::Rejected);
    let cooldown = &decisions[1].1.reasons[1];
    assert!(
        cooldown
            .starts_with("cooldown: restart_deployment on deployment/shop/checkout was approved"),
        "{cooldown}"
    );
    assert!(
        cooldown.contains(&first.proposal_id),
        "the reason names the earlier action: {cooldown}"
    );
}

#[tokio::test]
async fn another_action_on_the_same_target_is_not_in_cooldown() {
    let guard = Guard::start(1).await;
    let mut scale = proposal("scale_deployment", 0.9, "checkout");
    scale.parameters.insert(
        "replicas".into(),
        steward_proto::v1::ParameterValue {
            kind: Some(steward_proto::v1::parameter_value::Kind::IntValue(4)),
        },
    );

    guard
        .propose(&proposal("restart_deployment", 0.9, "checkout"))
        .await;
    guard.wait_for_decisions(1).await;
    guard.propose(&scale).await;
    let decisions = guard.wait_for_decisions(2).await;

    assert_eq!(
        decisions[1].0,
        Stage::Approved,
        "{:?}",
        decisions[1].1.reasons
    );
}

#[tokio::test]
async fn invalid_proposal_is_rejected() {
    let guard = Guard::start(1).await;

    guard
        .propose(&proposal("delete_namespace", 0.99, "checkout"))
        .await;
    let decisions = guard.wait_for_decisions(1).await;

    assert_eq!(decisions[0].0, Stage::Rejected);
    assert_eq!(
        decisions[0].1.reasons,
        ["invalid proposal: action \"delete_namespace\" is not in the registry"]
    );
}

#[tokio::test]
async fn redelivered_proposal_gets_the_stored_decision() {
    let guard = Guard::start(1).await;
    let proposal = proposal("restart_deployment", 0.9, "checkout");
    let proposal_id = Uuid::parse_str(&proposal.proposal_id).expect("uuid");
    let event = RemediationEvent {
        event_id: event_id(&proposal_id, Stage::Proposed).to_string(),
        correlation_id: Uuid::new_v4().to_string(),
        cluster: "prod".into(),
        occurred_at: None,
        body: Some(Body::Proposed(proposal.clone())),
    };

    guard.publish_event(&event, "copy-1").await;
    guard.wait_for_decisions(1).await;
    guard.publish_event(&event, "copy-2").await;
    let pool = guard.database.pool().await;
    let proposed_stream = guard.bus.names().remediation_stream();
    // The remediation stream keeps acknowledged messages, so wait for the
    // consumer's pending count instead.
    wait_for(
        "the second copy to be acknowledged",
        Duration::from_secs(20),
        || async {
            let jetstream = async_nats::jetstream::new(guard.bus.client().clone());
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                .get_consumer_from_stream(&guard.config.consumer_name, &proposed_stream)
                .await
                .ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence >= 3)
                .then_some(())
        },
    )
    .await;

    let decisions = guard.decisions().await;
    assert_eq!(
        decisions.len(),
        1,
        "the redelivery produced a second decision"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn racing_replicas_approve_one_of_conflicting_proposals() {
    let guard = Guard::start(3).await;
    let proposals: Vec<Proposal> = (0..12)
        .map(|_| proposal("restart_deployment", 0.9, "checkout"))
        .collect();

    futures::future::join_all(proposals.iter().map(|p| guard.propose(p))).await;
    let decisions = guard.wait_for_decisions(proposals.len()).await;

    let approved = decisions
        .iter()
        .filter(|(stage, _)| *stage == Stage::Approved)
        .count();
    assert_eq!(
        approved, 1,
        "conflicting proposals were approved together: {decisions:?}"
    );
    let pool = guard.database.pool().await;
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM actions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(actions, 1);
}

#[tokio::test]
async fn racing_replicas_approve_independent_targets() {
    let guard = Guard::start(3).await;
    let proposals: Vec<Proposal> = (0..12)
        .map(|i| proposal("restart_deployment", 0.9, &format!("service-{i}")))
        .collect();

    futures::future::join_all(proposals.iter().map(|p| guard.propose(p))).await;
    let decisions = guard.wait_for_decisions(proposals.len()).await;

    assert!(
        decisions.iter().all(|(stage, _)| *stage == Stage::Approved),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn database_outage_approves_nothing() {
    let guard = Guard::start(1).await;
    let metrics_url = format!("http://{}/metrics", guard.admin[0]);
    wait_for("guard to become ready", Duration::from_secs(20), || async {
        let response = reqwest::get(format!("http://{}/readyz", guard.admin[0]))
            .await
            .ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let admin_url = steward_testkit::postgres_admin_url();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .expect("admin connection");
    sqlx::raw_sql(&format!(
        "DROP DATABASE {} WITH (FORCE)",
        guard.database.name
    ))
    .execute(&mut admin)
    .await
    .expect("drop the guard's database");

    guard
        .propose(&proposal("restart_deployment", 0.99, "checkout"))
        .await;
    wait_for(
        "guard to count failed database operations",
        Duration::from_secs(30),
        || async {
            let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
            let errors: f64 = text
                .lines()
                .find(|line| line.starts_with("steward_database_errors_total "))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (errors >= 2.0).then_some(())
        },
    )
    .await;

    assert!(
        guard.decisions().await.is_empty(),
        "a decision was made without the database"
    );
}

#[tokio::test]
async fn proposal_for_a_resolved_alert_is_rejected() {
    let guard = Guard::start(1).await;
    let proposal = proposal("restart_deployment", 0.9, "checkout");
    let correlation_id = Uuid::new_v4();
    let pool = guard.database.pool().await;
    // Wait for the guard to have created the schema.
    wait_for("the guard's migrations", Duration::from_secs(20), || async {
        sqlx::query(
            "INSERT INTO alert_instances (correlation_id, status, cluster, fingerprint, alertname, starts_at, labels, annotations)
             VALUES ($1, 'resolved', 'prod', 'f', 'A', now(), '{}', '{}')",
        )
        .bind(correlation_id)
        .execute(&pool)
        .await
        .ok()
    })
    .await;
    let proposal_id = Uuid::parse_str(&proposal.proposal_id).expect("uuid");
    let event = RemediationEvent {
        event_id: event_id(&proposal_id, Stage::Proposed).to_string(),
        correlation_id: correlation_id.to_string(),
        cluster: "prod".into(),
        occurred_at: None,
        body: Some(Body::Proposed(proposal)),
    };

    guard.publish_event(&event, &event.event_id).await;
    let decisions = guard.wait_for_decisions(1).await;

    assert_eq!(decisions[0].0, Stage::Rejected);
    assert_eq!(
        decisions[0].1.reasons[1],
        "the alert resolved before the decision; nothing to remediate"
    );
}

fn scale(replicas: i64) -> Proposal {
    let mut proposal = proposal("scale_deployment", 0.9, "checkout");
    proposal.parameters.insert(
        "replicas".into(),
        steward_proto::v1::ParameterValue {
            kind: Some(steward_proto::v1::parameter_value::Kind::IntValue(replicas)),
        },
    );
    proposal
}

#[tokio::test]
async fn scale_oscillation_is_rejected_with_its_evidence() {
    let guard = Guard::start_with(1, |config| config.policy.cooldown = Some(Duration::ZERO)).await;
    let steps = [5, 2, 6, 3];
    for (index, replicas) in steps.iter().enumerate() {
        guard.propose(&scale(*replicas)).await;
        guard.wait_for_decisions(index + 1).await;
    }

    let decisions = guard.decisions().await;

    let stages: Vec<Stage> = decisions.iter().map(|(stage, _)| *stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Approved,
            Stage::Approved,
            Stage::Approved,
            Stage::Rejected
        ]
    );
    let reason = decisions[3].1.reasons.last().cloned().unwrap_or_default();
    assert!(
        reason.starts_with("scale oscillation: 2 direction changes in 1h (actions "),
        "{reason}"
    );
    let first = &decisions[0]
        .1
        .proposal
        .clone()
        .unwrap_or_default()
        .proposal_id;
    assert!(
        reason.contains(first.as_str()),
        "the evidence names the earlier actions: {reason}"
    );
    assert!(
        decisions[2]
            .1
            .reasons
            .iter()
            .any(|r| r.starts_with("warning: scale oscillation: 1 direction changes")),
        "{:?}",
        decisions[2].1.reasons
    );
}

#[tokio::test]
async fn namespace_rate_limit_is_enforced() {
    let policy = std::env::temp_dir().join(steward_testkit::unique_name("policy-"));
    std::fs::write(&policy, "rate_limits: {per_namespace_per_hour: 2}\n").expect("policy file");
    let guard = Guard::start_with(1, |config| config.policy.file = Some(policy.clone())).await;

    for (index, name) in ["a", "b", "c"].iter().enumerate() {
        guard
            .propose(&proposal("restart_deployment", 0.9, name))
            .await;
        guard.wait_for_decisions(index + 1).await;
    }
    let decisions = guard.decisions().await;

    assert_eq!(decisions[2].0, Stage::Rejected);
    assert_eq!(
        decisions[2].1.reasons.last().map(String::as_str),
        Some("rate limit: 2 actions approved in namespace shop in the last hour; the limit is 2")
    );
    let _ = std::fs::remove_file(policy);
}

#[tokio::test]
async fn high_risk_action_waits_for_approval() {
    let guard = Guard::start(1).await;

    guard
        .propose(&proposal("rollback_deployment", 0.95, "checkout"))
        .await;
    let decisions = guard.wait_for_decisions(1).await;

    assert_eq!(decisions[0].0, Stage::Pending);
    assert!(
        decisions[0].1.reasons.last().is_some_and(
            |r| r.starts_with("rollback_deployment (high risk) needs a person's approval")
        ),
        "{:?}",
        decisions[0].1.reasons
    );
    let pool = guard.database.pool().await;
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM actions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        actions, 0,
        "a pending proposal must not enter the action history"
    );
}

/// Records `proposal` as analyze does before publishing it.
async fn record_analysis(guard: &Guard, proposal: &Proposal) {
    let target = proposal.target.clone().expect("a target");
    sqlx::query(
        "INSERT INTO analyses (proposal_id, correlation_id, cluster, alertname, target_kind, namespace,
                               target_name, action, parameters, confidence, reasoning, analyzer, event)
         VALUES ($1, $2, 'prod', 'KubeDeploymentReplicasMismatch', 'deployment', $3, $4, $5, '{}', $6,
                 'test', 'rules', ''::bytea)",
    )
    .bind(Uuid::parse_str(&proposal.proposal_id).expect("uuid"))
    .bind(Uuid::new_v4())
    .bind(&target.namespace)
    .bind(&target.name)
    .bind(&proposal.action)
    .bind(proposal.confidence)
    .execute(&guard.database.pool().await)
    .await
    .expect("analysis row");
}

#[tokio::test]
async fn second_proposal_while_one_waits_is_a_duplicate() {
    let guard = Guard::start(1).await;
    // The guard migrates in the background; the analyses rows need the
    // schema now. Migrations take a lock, so running them twice is safe.
    steward_store::Store::connect_once(&guard.database.config())
        .await
        .expect("Postgres reachable")
        .migrate()
        .await
        .expect("migrations");
    let first = proposal("rollback_deployment", 0.95, "checkout");
    let second = proposal("rollback_deployment", 0.95, "checkout");
    let other = proposal("rollback_deployment", 0.95, "catalog");

    record_analysis(&guard, &first).await;
    guard.propose(&first).await;
    guard.wait_for_decisions(1).await;
    for later in [&second, &other] {
        record_analysis(&guard, later).await;
        guard.propose(later).await;
    }
    let decisions = guard.wait_for_decisions(3).await;

    assert_eq!(decisions[0].0, Stage::Pending);
    let verdict_of = |proposal: &Proposal| {
        decisions
            .iter()
            .find(|(_, d)| {
                d.proposal.as_ref().map(|p| p.proposal_id.as_str())
                    == Some(proposal.proposal_id.as_str())
            })
            .map(|(stage, d)| (*stage, d.reasons.last().cloned().unwrap_or_default()))
            .expect("a decision")
    };
    let (stage, reason) = verdict_of(&second);
    assert_eq!(stage, Stage::Rejected);
    assert_eq!(
        reason,
        format!(
            "a rollback_deployment on deployment/shop/checkout already waits for a person's approval (proposal {})",
            first.proposal_id
        )
    );
    assert_eq!(
        verdict_of(&other).0,
        Stage::Pending,
        "another target is not a duplicate"
    );
}

/// A guard with the approval API on, and its token file's token.
async fn guard_with_approvals(policy: &str) -> (Guard, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(steward_testkit::unique_name("approvals-"));
    std::fs::create_dir_all(&dir).expect("folder");
    std::fs::write(dir.join("tokens"), "secret-alice alice\nsecret-bob bob\n").expect("token file");
    std::fs::write(dir.join("policy.yaml"), policy).expect("policy file");
    let port = steward_testkit::free_port();
    let guard = Guard::start_with(1, |config| {
        config.approval_token_file = Some(dir.join("tokens"));
        config.approval_listen = format!("127.0.0.1:{port}").parse().expect("address");
        config.policy.file = Some(dir.join("policy.yaml"));
    })
    .await;
    let api = format!("http://127.0.0.1:{port}");
    let pending = format!("{api}/api/v1/pending");
    wait_for(
        "the approval API to listen",
        Duration::from_secs(20),
        || async {
            let response = reqwest::Client::new()
                .get(&pending)
                .bearer_auth("secret-alice")
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;
    (guard, api, dir)
}

async fn settle(
    api: &str,
    proposal: &Proposal,
    verb: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{api}/api/v1/proposals/{}/{verb}",
            proposal.proposal_id
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"comment": "checked the dashboards"}))
        .send()
        .await
        .expect("approval API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn person_approves_a_pending_proposal() {
    let (guard, api, dir) = guard_with_approvals("").await;
    let proposal = proposal("rollback_deployment", 0.95, "checkout");
    guard.propose(&proposal).await;
    guard.wait_for_decisions(1).await;

    let (wrong, _) = settle(&api, &proposal, "approve", "secret-mallory").await;
    let (status, body) = settle(&api, &proposal, "approve", "secret-alice").await;
    let decisions = guard.wait_for_decisions(2).await;
    let (again, _) = settle(&api, &proposal, "approve", "secret-alice").await;
    let (late, late_body) = settle(&api, &proposal, "approve", "secret-bob").await;
    let (conflict, conflict_body) = settle(&api, &proposal, "reject", "secret-bob").await;

    assert_eq!(wrong, 401);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["by"], "alice");
    assert_eq!(body["repeated"], false);
    assert_eq!(late, 200, "{late_body}");
    assert_eq!(
        late_body["by"], "alice",
        "bob learns that alice approved it"
    );
    assert_eq!(late_body["repeated"], true);
    assert_eq!(
        conflict_body["error"],
        format!(
            "proposal {} was already approved by alice",
            proposal.proposal_id
        )
    );
    assert_eq!(decisions[1].0, Stage::Approved);
    assert_eq!(
        decisions[1].1.reasons.last().map(String::as_str),
        Some("approved by alice: checked the dashboards")
    );
    assert_eq!(again, 200, "approving twice is a retry, not an error");
    assert_eq!(conflict, 409, "an approved proposal cannot be rejected");
    let pool = guard.database.pool().await;
    let (status, resolved_by): (String, Option<String>) = sqlx::query_as(
        "SELECT a.status, d.resolved_by FROM actions a JOIN decisions d ON d.proposal_id = a.action_id",
    )
    .fetch_one(&pool)
    .await
    .expect("the approval entered the action history");
    assert_eq!(
        (status.as_str(), resolved_by.as_deref()),
        ("approved", Some("alice"))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn concurrent_approvals_respect_the_rate_limit() {
    let (guard, api, dir) = guard_with_approvals(
        "approval: {actions: [restart_deployment]}\nrate_limits: {per_namespace_per_hour: 2}\n",
    )
    .await;
    let waiting: Vec<Proposal> = (1..=6)
        .map(|n| proposal("restart_deployment", 0.95, &format!("web-{n}")))
        .collect();
    for proposal in &waiting {
        guard.propose(proposal).await;
    }
    guard.wait_for_decisions(waiting.len()).await;

    let answers = futures::future::join_all(
        waiting
            .iter()
            .map(|proposal| settle(&api, proposal, "approve", "secret-alice")),
    )
    .await;

    let approved = answers.iter().filter(|(status, _)| *status == 200).count();
    let rejected = answers.iter().filter(|(status, _)| *status == 409).count();
    assert_eq!(approved, 2, "{answers:?}");
    assert_eq!(rejected, 4, "{answers:?}");
    let pool = guard.database.pool().await;
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM actions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(actions, 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn malformed_approval_body_settles_nothing() {
    let (guard, api, dir) = guard_with_approvals("").await;
    let proposal = proposal("rollback_deployment", 0.95, "checkout");
    guard.propose(&proposal).await;
    guard.wait_for_decisions(1).await;
    let url = format!("{api}/api/v1/proposals/{}/approve", proposal.proposal_id);

    for body in [
        "[]",
        r#"{"comentt": "typo"}"#,
        r#"{"comment": "x""#,
        r#"{"comment": 5}"#,
    ] {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth("secret-alice")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("approval API answers");
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.expect("a JSON error");
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("invalid request body: ")),
            "{body}: {answer}"
        );
    }

    let pool = guard.database.pool().await;
    let verdict: String = sqlx::query_scalar("SELECT verdict FROM decisions")
        .fetch_one(&pool)
        .await
        .expect("the decision");
    assert_eq!(verdict, "pending");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn person_rejects_a_pending_proposal() {
    let (guard, api, dir) = guard_with_approvals("").await;
    let proposal = proposal("rollback_deployment", 0.95, "checkout");
    guard.propose(&proposal).await;
    guard.wait_for_decisions(1).await;

    let (status, _) = settle(&api, &proposal, "reject", "secret-alice").await;
    let decisions = guard.wait_for_decisions(2).await;

    assert_eq!(status, 200);
    assert_eq!(decisions[1].0, Stage::Rejected);
    let pool = guard.database.pool().await;
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM actions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(actions, 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn approval_runs_the_checks_again() {
    // One action per hour in the namespace: the rollback waits for a
    // person, and meanwhile a restart in the same namespace is approved.
    let (guard, api, dir) =
        guard_with_approvals("rate_limits: {per_namespace_per_hour: 1}\n").await;
    let rollback = proposal("rollback_deployment", 0.95, "checkout");
    guard.propose(&rollback).await;
    guard.wait_for_decisions(1).await;
    guard
        .propose(&proposal("restart_deployment", 0.95, "catalog"))
        .await;
    guard.wait_for_decisions(2).await;

    let (status, body) = settle(&api, &rollback, "approve", "secret-alice").await;
    let decisions = guard.wait_for_decisions(3).await;
    let (again, again_body) = settle(&api, &rollback, "approve", "secret-bob").await;

    assert_eq!(decisions[0].0, Stage::Pending);
    assert_eq!(decisions[1].0, Stage::Approved);
    assert_eq!(status, 409, "{body}");
    let expected = "rejected at approval: rate limit: 1 actions approved in namespace shop in the last hour; the limit is 1";
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.ends_with(&expected["rejected at approval: ".len()..])),
        "{body}"
    );
    assert_eq!(decisions[2].0, Stage::Rejected);
    assert_eq!(
        decisions[2].1.reasons[decisions[2].1.reasons.len() - 2..],
        [
            "approved by alice: checked the dashboards".to_owned(),
            expected.to_owned()
        ]
    );
    assert_eq!(again, 409, "the rejection stands");
    assert_eq!(
        again_body["error"],
        format!(
            "proposal {} was already rejected at approval: alice approved it, but rate limit: 1 actions approved in namespace shop in the last hour; the limit is 1",
            rollback.proposal_id
        )
    );
    let pool = guard.database.pool().await;
    let rollbacks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM actions WHERE action = 'rollback_deployment'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(rollbacks, 0, "a refused approval never enters the history");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unanswered_proposal_is_rejected_after_the_timeout() {
    let (guard, _api, dir) = guard_with_approvals("approval: {timeout: 1s}\n").await;
    guard
        .propose(&proposal("rollback_deployment", 0.95, "checkout"))
        .await;

    let decisions = guard.wait_for_decisions(2).await;

    assert_eq!(decisions[0].0, Stage::Pending);
    assert_eq!(decisions[1].0, Stage::Rejected);
    assert_eq!(
        decisions[1].1.reasons.last().map(String::as_str),
        Some("no one approved within 1s; rejected")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unknown_proposal_is_not_found() {
    let (_guard, api, dir) = guard_with_approvals("").await;
    let stranger = proposal("rollback_deployment", 0.95, "checkout");

    let (status, body) = settle(&api, &stranger, "approve", "secret-alice").await;

    assert_eq!(status, 404, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn directly_decided_proposal_cannot_be_settled() {
    let (guard, api, dir) = guard_with_approvals("").await;
    let proposal = proposal("restart_deployment", 0.95, "checkout");
    guard.propose(&proposal).await;
    let decisions = guard.wait_for_decisions(1).await;

    let (status, body) = settle(&api, &proposal, "approve", "secret-alice").await;

    assert_eq!(decisions[0].0, Stage::Approved);
    assert_eq!(status, 404, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}
