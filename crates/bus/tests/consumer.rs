//! The durable consumer against a real NATS server.

use std::time::Duration;

use steward_bus::{Bus, ConsumerSpec};
use steward_config::ConsumerConfig;
use steward_testkit::isolated_nats;

fn spec(bus: &Bus, ack_wait: Duration) -> ConsumerSpec {
    ConsumerSpec {
        stream: bus.names().alerts_stream(),
        durable: "analyze".to_owned(),
        filter: bus.names().all_alerts(),
        description: "test".to_owned(),
        settings: ConsumerConfig {
            ack_wait,
            ..ConsumerConfig::default()
        },
    }
}

#[tokio::test]
async fn changed_ack_wait_reaches_the_existing_consumer() {
    let bus = Bus::connect_once(&isolated_nats(), "bus-test")
        .await
        .expect("NATS reachable");
    bus.ensure_streams().await.expect("streams");

    bus.durable_consumer(&spec(&bus, Duration::from_secs(30)))
        .await
        .expect("created");
    let mut consumer = bus
        .durable_consumer(&spec(&bus, Duration::from_secs(7)))
        .await
        .expect("updated");

    let info = consumer.info().await.expect("consumer info");
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(info.config.max_deliver, -1);
}

#[tokio::test]
async fn ensure_streams_is_idempotent() {
    let bus = Bus::connect_once(&isolated_nats(), "bus-test")
        .await
        .expect("NATS reachable");

    bus.ensure_streams().await.expect("first call");
    bus.ensure_streams().await.expect("second call");

    let jetstream = bus.jetstream();
    let mut alerts = jetstream
        .get_stream(bus.names().alerts_stream())
        .await
        .expect("alerts stream");
    let info = alerts.info().await.expect("info");
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(
        info.config.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
}
