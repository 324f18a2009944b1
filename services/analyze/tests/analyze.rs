//! analyze against real NATS and Postgres: proposals, resolutions, durable
//! deduplication, LLM fallback and dead letters.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use serde_json::{Value, json};
use steward_analyze::{Config, LlmApi};
use steward_bus::{Bus, Stage};
use steward_proto::Message;
use steward_proto::v1::{
    AlertEvent, AlertStatus, AnalyzerKind, RemediationEvent, remediation_event::Body,
};
use steward_testkit::{TestDatabase, isolated_nats, stored_messages, wait_for};
use tokio_util::sync::CancellationToken;

struct Analyze {
    bus: Bus,
    database: TestDatabase,
    shutdown: CancellationToken,
}

impl Analyze {
    async fn start(llm: Option<(String, LlmApi)>) -> Self {
        Self::start_with(llm, |_| {}).await
    }

    async fn start_with(llm: Option<(String, LlmApi)>, adjust: impl FnOnce(&mut Config)) -> Self {
        let nats = isolated_nats();
        let database = TestDatabase::create().await;
        let mut config = Config::try_parse_from(["steward-analyze"]).expect("defaults parse");
        config.nats = nats.clone();
        config.database = database.config();
        config.consumer.retry_base_delay = Duration::from_millis(100);
        config.consumer.max_deliver = 3;
        config.batch.window = Duration::from_millis(200);
        if let Some((url, api)) = llm {
            config.llm.urls = vec![url];
            config.llm.api = api;
            config.llm.timeout = Duration::from_secs(5);
        }
        adjust(&mut config);

        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let shutdown = CancellationToken::new();
        tokio::spawn(steward_analyze::run(config, admin, shutdown.clone()));

        let bus = Bus::connect_once(&nats, "analyze-test")
            .await
            .expect("NATS reachable");
        bus.ensure_streams().await.expect("streams");
        Self {
            bus,
            database,
            shutdown,
        }
    }

    async fn publish(&self, alert: &AlertEvent, message_id: &str) {
        self.bus
            .publish(
                self.bus.names().alert(&alert.cluster),
                "alert",
                message_id,
                "application/protobuf",
                Bytes::from(alert.encode_to_vec()),
            )
            .await
            .expect("alert published");
    }

    async fn events(&self) -> Vec<(String, RemediationEvent)> {
        stored_messages(self.bus.client(), &self.bus.names().remediation_stream())
            .await
            .into_iter()
            .map(|message| {
                let event =
                    RemediationEvent::decode(message.payload.as_slice()).expect("RemediationEvent");
                (message.subject, event)
            })
            .collect()
    }

    /// Waits until the remediation stream holds `count` events.
    async fn wait_for_events(&self, count: usize, what: &str) -> Vec<(String, RemediationEvent)> {
        wait_for(what, Duration::from_secs(20), || async {
            let events = self.events().await;
            (events.len() >= count).then_some(events)
        })
        .await
    }
}

impl Drop for Analyze {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn alert(status: AlertStatus, labels: &[(&str, &str)]) -> AlertEvent {
    let labels: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    AlertEvent {
        correlation_id: uuid::Uuid::new_v4().to_string(),
        cluster: "prod".into(),
        status: status as i32,
        fingerprint: "0123456789abcdef".into(),
        labels,
        starts_at: Some(steward_proto::now()),
        ..AlertEvent::default()
    }
}

fn mismatch() -> AlertEvent {
    alert(
        AlertStatus::Firing,
        &[
            ("alertname", "KubeDeploymentReplicasMismatch"),
            ("namespace", "shop"),
            ("deployment", "checkout"),
        ],
    )
}

#[tokio::test]
async fn firing_alert_becomes_a_proposal() {
    let analyze = Analyze::start(None).await;
    let alert = mismatch();

    analyze.publish(&alert, "a1").await;
    let events = analyze
        .wait_for_events(1, "the proposal of a firing alert")
        .await;

    let (subject, event) = &events[0];
    assert_eq!(
        *subject,
        analyze.bus.names().remediation(Stage::Proposed, "prod")
    );
    assert_eq!(event.correlation_id, alert.correlation_id);
    let Some(Body::Proposed(proposal)) = &event.body else {
        panic!("expected a proposal, got {event:?}");
    };
    assert_eq!(proposal.action, "restart_deployment");
    assert_eq!(
        proposal.target.clone().unwrap_or_default().to_string(),
        "deployment/shop/checkout"
    );
    assert_eq!(
        proposal.analysis.clone().unwrap_or_default().analyzer(),
        AnalyzerKind::Rules
    );

    let pool = analyze.database.pool().await;
    let (analyzer, action): (String, String) =
        sqlx::query_as("SELECT analyzer, action FROM analyses")
            .fetch_one(&pool)
            .await
            .expect("the analysis is recorded");
    assert_eq!(
        (analyzer.as_str(), action.as_str()),
        ("rules", "restart_deployment")
    );
}

#[tokio::test]
async fn repeated_alert_instance_is_analyzed_once() {
    let analyze = Analyze::start(None).await;
    let alert = mismatch();

    // Distinct message ids get past JetStream's duplicate window, as a
    // re-send hours later (Alertmanager's repeat interval) would.
    analyze.publish(&alert, "first").await;
    analyze.wait_for_events(1, "the first proposal").await;
    analyze.publish(&alert, "repeat").await;
    let pool = analyze.database.pool().await;
    wait_for(
        "the repeat delivery to be counted",
        Duration::from_secs(20),
        || async {
            let deliveries: i32 = sqlx::query_scalar("SELECT deliveries FROM alert_instances")
                .fetch_one(&pool)
                .await
                .ok()?;
            (deliveries == 2).then_some(())
        },
    )
    .await;
    // The alerts stream has work-queue retention: once the repeat is
    // acknowledged it is gone, and whatever it caused is published.
    let alerts_stream = analyze.bus.names().alerts_stream();
    wait_for(
        "the repeat delivery to be acknowledged",
        Duration::from_secs(20),
        || async {
            stored_messages(analyze.bus.client(), &alerts_stream)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;

    assert_eq!(
        analyze.events().await.len(),
        1,
        "a repeated alert instance was analyzed again"
    );
}

#[tokio::test]
async fn resolved_alert_produces_a_resolved_event() {
    let analyze = Analyze::start(None).await;
    let mut resolved = mismatch();
    resolved.status = AlertStatus::Resolved as i32;

    analyze.publish(&resolved, "r1").await;
    let events = analyze.wait_for_events(1, "the resolved event").await;

    let (subject, event) = &events[0];
    assert_eq!(
        *subject,
        analyze.bus.names().remediation(Stage::Resolved, "prod")
    );
    assert!(matches!(event.body, Some(Body::Resolved(_))), "{event:?}");
}

#[tokio::test]
async fn alert_without_a_target_is_escalated() {
    let analyze = Analyze::start(None).await;
    let alert = alert(
        AlertStatus::Firing,
        &[("alertname", "KubePodNotReady"), ("pod", "cart-1")],
    );

    analyze.publish(&alert, "n1").await;
    let events = analyze.wait_for_events(1, "the escalation proposal").await;

    let Some(Body::Proposed(proposal)) = &events[0].1.body else {
        panic!("expected a proposal");
    };
    assert_eq!(proposal.action, "notify_only");
    assert!(
        proposal.reasoning.contains("names no pod"),
        "{}",
        proposal.reasoning
    );
}

#[tokio::test]
async fn llm_failure_falls_back_to_rules_and_says_why() {
    let reply = json!({"choices": [{"message": {"content": "{\"action\": \"drop_tables\", \"target\": \"deployment/shop/checkout\", \"parameters\": {}, \"confidence\": 1, \"reasoning\": \"x\"}"}, "finish_reason": "stop"}]});
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |Json(_): Json<Value>| {
            let reply = reply.clone();
            async move { Json(reply) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let analyze = Analyze::start(Some((url, LlmApi::Openai))).await;

    analyze.publish(&mismatch(), "l1").await;
    let events = analyze.wait_for_events(1, "the fallback proposal").await;

    let Some(Body::Proposed(proposal)) = &events[0].1.body else {
        panic!("expected a proposal");
    };
    let analysis = proposal.analysis.clone().unwrap_or_default();
    assert_eq!(analysis.analyzer(), AnalyzerKind::Rules);
    assert!(
        analysis
            .fallback_reason
            .contains("\"drop_tables\" is not in the registry"),
        "{analysis:?}"
    );
    assert!(
        analysis.endpoint.ends_with("/v1/chat/completions"),
        "{analysis:?}"
    );
    assert_eq!(proposal.action, "restart_deployment");
}

#[tokio::test]
async fn undecodable_message_becomes_a_dead_letter() {
    let analyze = Analyze::start(None).await;

    analyze
        .bus
        .publish(
            analyze.bus.names().alert("prod"),
            "alert",
            "garbage",
            "text/plain",
            Bytes::from_static(b"\xff\xfe not protobuf"),
        )
        .await
        .expect("published");

    let pool = analyze.database.pool().await;
    let (consumer, reason): (String, String) =
        wait_for("the dead letter row", Duration::from_secs(20), || async {
            sqlx::query_as("SELECT consumer, reason FROM dead_letters")
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
        })
        .await;
    assert_eq!(consumer, "analyze");
    assert!(
        reason.contains("payload is not a steward.v1.AlertEvent"),
        "{reason}"
    );
    assert!(analyze.events().await.is_empty());
}

#[tokio::test]
async fn unavailable_llm_escalates_when_configured() {
    let dead = format!("http://127.0.0.1:{}/v1", steward_testkit::free_port());
    let analyze = Analyze::start_with(Some((dead, LlmApi::Openai)), |config| {
        config.llm.fallback = steward_analyze::Fallback::Escalate;
        config.llm.attempts = 1;
    })
    .await;

    analyze.publish(&mismatch(), "e1").await;
    let events = analyze.wait_for_events(1, "the escalation").await;

    let Some(Body::Proposed(proposal)) = &events[0].1.body else {
        panic!("expected a proposal");
    };
    let analysis = proposal.analysis.clone().unwrap_or_default();
    assert_eq!(analysis.analyzer(), AnalyzerKind::Escalation);
    assert_eq!(proposal.action, "notify_only");
    assert!(
        proposal
            .reasoning
            .contains("escalating to people as configured"),
        "{}",
        proposal.reasoning
    );
    assert!(!analysis.fallback_reason.is_empty());
}

#[tokio::test]
async fn alerts_about_one_workload_share_one_analysis() {
    let analyze = Analyze::start(None).await;
    let deployment = mismatch();
    let mut pod = alert(
        AlertStatus::Firing,
        &[
            ("alertname", "KubePodNotReady"),
            ("namespace", "shop"),
            ("pod", "checkout-7d9f8b6c5d-x2x4k"),
        ],
    );
    pod.fingerprint = "fedcba9876543210".into();

    analyze.publish(&deployment, "w1").await;
    analyze.publish(&pod, "w2").await;
    let pool = analyze.database.pool().await;
    let covered: (i64, i64) = wait_for("both alerts to be handled", Duration::from_secs(20), || async {
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE processed_at IS NOT NULL), count(covered_by) FROM alert_instances",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (counts.0 == 2).then_some(counts)
    })
    .await;

    assert_eq!(
        covered.1, 1,
        "one alert must be covered by the other's analysis"
    );
    let events = analyze.events().await;
    assert_eq!(events.len(), 1, "one workload must get one proposal");
    let Some(Body::Proposed(proposal)) = &events[0].1.body else {
        panic!("expected a proposal");
    };
    assert_eq!(proposal.covered_correlation_ids.len(), 1);
}
