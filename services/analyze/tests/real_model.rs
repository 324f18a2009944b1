//! analyze against a real language model: llama.cpp's llama-server with
//! SmolLM2-135M-Instruct, through the OpenAI-compatible API, started by
//! `deploy/local/llm.sh` (which `deploy/local/test.sh` runs). The model is
//! tiny, so these tests check that its answers are schema-valid and
//! registry-valid, not that they are good.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use steward_analyze::llm::ClientSettings;
use steward_analyze::pool::{Pool, PoolSettings};
use steward_analyze::prompt::{Prompt, parse_answer};
use steward_analyze::{Config, LlmApi, target};
use steward_bus::Bus;
use steward_proto::Message;
use steward_proto::v1::{
    AlertEvent, AlertStatus, AnalyzerKind, RemediationEvent, remediation_event::Body,
};
use steward_telemetry::Metrics;
use steward_testkit::{TestDatabase, isolated_nats, stored_messages, wait_for};
use tokio_util::sync::CancellationToken;

fn model_url() -> String {
    std::env::var("STEWARD_TEST_LLM_URL").unwrap_or_else(|_| {
        panic!(
            "STEWARD_TEST_LLM_URL is not set: run deploy/local/test.sh, or start a model with \
             deploy/local/llm.sh and set it to http://127.0.0.1:18080/v1"
        )
    })
}

fn alert(pairs: &[(&str, &str)], summary: &str) -> AlertEvent {
    AlertEvent {
        correlation_id: uuid::Uuid::new_v4().to_string(),
        cluster: "prod".into(),
        status: AlertStatus::Firing as i32,
        fingerprint: "0123456789abcdef".into(),
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: HashMap::from([("summary".to_owned(), summary.to_owned())]),
        starts_at: Some(steward_proto::now()),
        ..AlertEvent::default()
    }
}

/// Alerts as kube-prometheus and node-exporter send them.
fn real_alerts() -> Vec<AlertEvent> {
    vec![
        alert(
            &[
                ("alertname", "KubeDeploymentReplicasMismatch"),
                ("namespace", "shop"),
                ("deployment", "checkout"),
                ("severity", "warning"),
            ],
            "Deployment has not matched the expected number of replicas.",
        ),
        alert(
            &[
                ("alertname", "KubePodCrashLooping"),
                ("namespace", "shop"),
                ("pod", "cart-7d9f8b6c5d-x2x4k"),
                ("container", "cart"),
                ("severity", "warning"),
            ],
            "Pod is crash looping.",
        ),
        alert(
            &[
                ("alertname", "KubePodNotReady"),
                ("namespace", "payments"),
                ("pod", "ledger-5c8d7f9b4-q8r2t"),
                ("severity", "warning"),
            ],
            "Pod has been in a non-ready state for more than 15 minutes.",
        ),
        alert(
            &[
                ("alertname", "KubeNodeNotReady"),
                ("node", "worker-3"),
                ("severity", "warning"),
            ],
            "Node is not ready.",
        ),
        alert(
            &[
                ("alertname", "KubePersistentVolumeFillingUp"),
                ("namespace", "data"),
                ("persistentvolumeclaim", "postgres-data-0"),
                ("severity", "critical"),
            ],
            "PersistentVolume is filling up.",
        ),
    ]
}

#[tokio::test]
async fn real_model_answers_are_schema_and_registry_valid() {
    let settings = ClientSettings {
        api: LlmApi::Openai,
        model: "SmolLM2-135M-Instruct".to_owned(),
        api_key: None,
        timeout: Duration::from_secs(120),
        cold_timeout: Duration::from_secs(300),
        max_tokens: 256,
    };
    let pool_settings = PoolSettings {
        max_concurrency: 2,
        attempts: 2,
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(5),
        probe_interval: Duration::from_secs(60),
        retry_delay: Duration::from_millis(500),
    };
    let pool = Arc::new(
        Pool::new(
            &[model_url()],
            settings,
            pool_settings,
            Arc::new(Metrics::new()),
        )
        .expect("pool"),
    );

    for alert in real_alerts() {
        let candidates = target::candidates(&alert.labels);
        let prompt = Prompt::new(std::slice::from_ref(&alert), &candidates, &[]);
        let answer = pool
            .complete(&prompt)
            .await
            .unwrap_or_else(|e| panic!("the model server failed: {e}"));
        let name = &alert.labels["alertname"];

        let recommendation =
            parse_answer(&answer.completion.content, &candidates).unwrap_or_else(|e| {
                panic!(
                    "{name}: invalid answer {:?}: {e}",
                    answer.completion.content
                )
            });

        assert!(
            steward_actions::find(&recommendation.action).is_some(),
            "{name}: {}",
            recommendation.action
        );
        assert!((0.0..=1.0).contains(&recommendation.confidence), "{name}");
        let usage = &answer.completion.usage;
        assert!(
            usage.prompt_tokens > 0 && usage.prompt_tokens < 1000,
            "{name}: {usage:?}"
        );
        assert!(usage.completion_tokens > 0, "{name}: {usage:?}");
    }
}

#[tokio::test]
async fn analyze_service_decides_with_the_real_model() {
    let database = TestDatabase::create().await;
    let mut config = Config::try_parse_from(["steward-analyze"]).expect("defaults parse");
    config.nats = isolated_nats();
    config.database = database.config();
    config.llm.urls = vec![model_url()];
    config.llm.api = LlmApi::Openai;
    config.llm.model = "SmolLM2-135M-Instruct".to_owned();
    config.llm.timeout = Duration::from_secs(120);
    config.batch.window = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    tokio::spawn(steward_analyze::run(
        config.clone(),
        admin,
        shutdown.clone(),
    ));
    let bus = Bus::connect_once(&config.nats, "real-model-test")
        .await
        .expect("NATS reachable");
    bus.ensure_streams().await.expect("streams");
    let alert = real_alerts().remove(0);

    bus.publish(
        bus.names().alert(&alert.cluster),
        "alert",
        "real-1",
        "application/protobuf",
        Bytes::from(alert.encode_to_vec()),
    )
    .await
    .expect("published");
    let stream = bus.names().remediation_stream();
    let event = wait_for("the model's proposal", Duration::from_secs(180), || async {
        let messages = stored_messages(bus.client(), &stream).await;
        let message = messages.first()?;
        RemediationEvent::decode(message.payload.as_slice()).ok()
    })
    .await;
    shutdown.cancel();

    let Some(Body::Proposed(proposal)) = event.body else {
        panic!("expected a proposal, got {event:?}");
    };
    let analysis = proposal.analysis.clone().unwrap_or_default();
    assert_eq!(
        analysis.analyzer(),
        AnalyzerKind::Llm,
        "the model's answer was not used: {}",
        analysis.fallback_reason
    );
    assert_eq!(analysis.model, "SmolLM2-135M-Instruct");
    assert!(
        analysis.prompt_tokens > 0 && analysis.completion_tokens > 0,
        "{analysis:?}"
    );
}
