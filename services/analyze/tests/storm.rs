//! An alert storm: 1,000 firing alerts from 20 root causes reach two
//! analyze replicas, which make one LLM call per root cause.

use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use steward_analyze::{Config, LlmApi};
use steward_bus::Bus;
use steward_proto::Message;
use steward_testkit::llm::FakeLlm;
use steward_testkit::{TestDatabase, isolated_nats, storm_alerts, wait_for};
use tokio_util::sync::CancellationToken;

const ROOT_CAUSES: usize = 20;
const ALERTS: usize = 1000;

#[tokio::test]
async fn storm_makes_one_llm_call_per_root_cause() {
    let llm = FakeLlm::start(Duration::from_millis(100))
        .await
        .expect("fake LLM");
    let database = TestDatabase::create().await;
    let mut config = Config::try_parse_from(["steward-analyze"]).expect("defaults parse");
    config.nats = isolated_nats();
    config.database = database.config();
    config.llm.urls = vec![llm.url().to_owned()];
    config.llm.api = LlmApi::Openai;
    config.batch.window = Duration::from_millis(300);
    config.consumer.max_in_flight = 64;
    config.consumer.retry_base_delay = Duration::from_millis(200);
    config.consumer.retry_max_delay = Duration::from_secs(1);
    config.consumer.max_deliver = 50;

    let shutdown = CancellationToken::new();
    for _ in 0..2 {
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        tokio::spawn(steward_analyze::run(
            config.clone(),
            admin,
            shutdown.clone(),
        ));
    }
    let bus = Bus::connect_once(&config.nats, "storm-test")
        .await
        .expect("NATS reachable");
    bus.ensure_streams().await.expect("streams");

    for (index, alert) in storm_alerts(ALERTS, ROOT_CAUSES).iter().enumerate() {
        bus.publish(
            bus.names().alert(&alert.cluster),
            "alert",
            &format!("storm-{index}"),
            "application/protobuf",
            Bytes::from(alert.encode_to_vec()),
        )
        .await
        .expect("alert published");
    }
    let pool = database.pool().await;
    let (handled, covered): (i64, i64) = wait_for("every storm alert to be handled", Duration::from_secs(120), || async {
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE processed_at IS NOT NULL), count(covered_by) FROM alert_instances",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (counts.0 == ALERTS as i64).then_some(counts)
    })
    .await;
    let analyses: i64 = sqlx::query_scalar("SELECT count(*) FROM analyses")
        .fetch_one(&pool)
        .await
        .expect("count");
    shutdown.cancel();

    assert_eq!(handled, ALERTS as i64);
    assert_eq!(analyses, ROOT_CAUSES as i64, "one analysis per root cause");
    assert_eq!(
        covered,
        (ALERTS - ROOT_CAUSES) as i64,
        "every other alert is covered"
    );
    assert_eq!(llm.requests(), ROOT_CAUSES, "one LLM call per root cause");
}
