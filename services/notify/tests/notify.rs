//! notify against real NATS and Postgres: one line per event, and a
//! failed delivery is retried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use steward_bus::{Bus, Stage};
use steward_notify::{Config, Notifier};
use steward_proto::Message;
use steward_proto::v1::{AlertEvent, RemediationEvent, Resolution, remediation_event::Body};
use steward_testkit::{TestDatabase, isolated_nats, wait_for};
use tokio_util::sync::CancellationToken;

/// Collects lines in memory; fails the first `failures` sends.
#[derive(Clone, Default)]
struct Collector {
    lines: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<usize>>,
}

impl Notifier for Collector {
    fn send(&self, line: &str) -> Result<(), String> {
        let mut failures = self.failures.lock().expect("lock");
        if *failures > 0 {
            *failures -= 1;
            return Err("the notification channel is down".to_owned());
        }
        self.lines.lock().expect("lock").push(line.to_owned());
        Ok(())
    }
}

async fn start(collector: Collector) -> (Bus, CancellationToken, TestDatabase) {
    let database = TestDatabase::create().await;
    let mut config = Config::try_parse_from(["steward-notify"]).expect("defaults parse");
    config.nats = isolated_nats();
    config.database = database.config();
    config.consumer.retry_base_delay = Duration::from_millis(100);
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = CancellationToken::new();
    tokio::spawn(steward_notify::run(
        config.clone(),
        collector,
        admin,
        shutdown.clone(),
    ));
    let bus = Bus::connect_once(&config.nats, "notify-test")
        .await
        .expect("NATS reachable");
    bus.ensure_streams().await.expect("streams");
    (bus, shutdown, database)
}

fn resolved(alertname: &str) -> RemediationEvent {
    RemediationEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        correlation_id: "c-7".into(),
        cluster: "prod".into(),
        occurred_at: None,
        body: Some(Body::Resolved(Resolution {
            alert: Some(AlertEvent {
                labels: [("alertname".to_owned(), alertname.to_owned())].into(),
                fingerprint: "0123456789abcdef".into(),
                ..AlertEvent::default()
            }),
        })),
    }
}

#[tokio::test]
async fn each_event_becomes_one_line() {
    let collector = Collector::default();
    let (bus, shutdown, _database) = start(collector.clone()).await;

    let event = resolved("KubePodCrashLooping");
    bus.publish_event(
        Stage::Resolved,
        "prod",
        &event.event_id,
        Bytes::from(event.encode_to_vec()),
    )
    .await
    .expect("published");
    let lines = wait_for("the notification line", Duration::from_secs(20), || async {
        let lines = collector.lines.lock().expect("lock").clone();
        (!lines.is_empty()).then_some(lines)
    })
    .await;

    assert_eq!(
        lines,
        [
            "resolved  cluster=prod  alert=KubePodCrashLooping  fingerprint=0123456789abcdef  correlation=c-7"
        ]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn failed_delivery_is_retried() {
    let collector = Collector::default();
    *collector.failures.lock().expect("lock") = 2;
    let (bus, shutdown, _database) = start(collector.clone()).await;

    let event = resolved("NodeNotReady");
    bus.publish_event(
        Stage::Resolved,
        "prod",
        &event.event_id,
        Bytes::from(event.encode_to_vec()),
    )
    .await
    .expect("published");
    let lines = wait_for(
        "the line after two failed sends",
        Duration::from_secs(20),
        || async {
            let lines = collector.lines.lock().expect("lock").clone();
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await;

    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("alert=NodeNotReady"), "{lines:?}");
    shutdown.cancel();
}
