//! Test support for Steward: unique NATS and Postgres namespaces per test,
//! polling with a deadline, and an in-memory Kubernetes API over HTTP.
//!
//! Tests run against the real NATS (with JetStream) and Postgres servers
//! named by `STEWARD_TEST_NATS_URL` and `STEWARD_TEST_DATABASE_URL`, which
//! default to the local servers on their standard ports.

pub mod kube;
pub mod llm;

use std::future::Future;
use std::time::Duration;

use sqlx::Connection;
use steward_config::{DatabaseConfig, NatsConfig};

/// Returns the NATS URL tests use.
pub fn nats_url() -> String {
    std::env::var("STEWARD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Returns the URL of a Postgres database in which tests may create
/// databases.
pub fn postgres_admin_url() -> String {
    std::env::var("STEWARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Returns a short name that no other test run uses, starting with
/// `prefix`: the creation time in seconds as 8 hex digits, then 4 random
/// hex digits, so that a cleanup can tell old leftovers from live tests.
pub fn unique_name(prefix: &str) -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{:08x}{}", seconds as u32, &random[..4])
}

/// Returns the creation time (Unix seconds) encoded in a name made by
/// [`unique_name`] with `prefix`, if it is one.
pub fn created_at(name: &str, prefix: &str) -> Option<u64> {
    let rest = name.strip_prefix(prefix)?;
    let hex = rest.get(..8)?;
    if rest.len() < 12 || !rest[..12].bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Size limit of each test stream. JetStream reserves a stream's limit
/// from the account's storage when the stream is created, so a suite that
/// creates hundreds of streams keeps them small.
const TEST_STREAM_MAX_BYTES: i64 = 8 << 20;

/// Returns a NATS configuration with a subject and stream prefix of its
/// own, so that tests sharing one server never see each other's messages.
/// [`test_stream_created_at`] recognises its stream names.
pub fn isolated_nats() -> NatsConfig {
    let name = unique_name("t");
    NatsConfig {
        stream_max_bytes: TEST_STREAM_MAX_BYTES,
        ..NatsConfig::local(&nats_url(), &name, &name.to_uppercase())
    }
}

/// Returns the creation time (Unix seconds) of a stream made by
/// [`isolated_nats`], or `None` for any other stream.
pub fn test_stream_created_at(name: &str) -> Option<u64> {
    let (prefix, suffix) = name.split_once('_')?;
    if prefix.len() != 13 || !matches!(suffix, "ALERTS" | "REMEDIATION") {
        return None;
    }
    created_at(&prefix.to_lowercase(), "t")
}

/// A database created for one test.
pub struct TestDatabase {
    /// Its connection URL.
    pub url: String,
    /// Its name.
    pub name: String,
}

impl TestDatabase {
    /// Creates an empty database named `steward_test_<random>`.
    ///
    /// # Panics
    /// Panics when Postgres is unreachable, naming the URL.
    pub async fn create() -> Self {
        let admin_url = postgres_admin_url();
        let name = unique_name("steward_test_");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("Postgres at {admin_url} is not reachable: {e}"));
        // A database name cannot be a bind parameter; `name` is generated
        // above from hex digits only.
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("failed to create database {name}: {e}"));
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("STEWARD_TEST_DATABASE_URL {admin_url} has no database path"),
        };
        Self { url, name }
    }

    /// Returns a configuration pointing at the database.
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig::with_url(&self.url)
    }

    /// Opens a pool on the database, for assertions.
    ///
    /// # Panics
    /// Panics when the database is unreachable.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("database {} is not reachable: {e}", self.name))
    }
}

/// Polls `check` every 50 ms until it returns `Some`, and returns the value.
///
/// # Panics
/// Panics after `timeout` with `what`, which should name the condition and
/// the likely bug.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns a loopback port that was free a moment ago, for a child process
/// that must be told its port.
///
/// # Panics
/// Panics when no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

/// Returns the alerts of a storm: `alerts` firing alerts from `causes`
/// root causes (deployments `service-00`, `service-01`, ... in namespace
/// `shop` of cluster `storm`), interleaved across causes; half name the
/// deployment, half one of its pods.
pub fn storm_alerts(alerts: usize, causes: usize) -> Vec<steward_proto::v1::AlertEvent> {
    use steward_proto::v1::{AlertEvent, AlertStatus};
    let names = [
        "KubeDeploymentReplicasMismatch",
        "KubePodNotReady",
        "KubePodCrashLooping",
    ];
    (0..alerts)
        .map(|index| {
            let deployment = format!("service-{:02}", index % causes.max(1));
            let mut labels = std::collections::HashMap::from([
                (
                    "alertname".to_owned(),
                    names[index % names.len()].to_owned(),
                ),
                ("namespace".to_owned(), "shop".to_owned()),
            ]);
            if index % 2 == 0 {
                labels.insert("deployment".to_owned(), deployment);
            } else {
                labels.insert(
                    "pod".to_owned(),
                    format!("{deployment}-7d9f8b6c5d-{:05}", index % 100_000),
                );
            }
            AlertEvent {
                correlation_id: uuid::Uuid::new_v4().to_string(),
                cluster: "storm".into(),
                status: AlertStatus::Firing as i32,
                fingerprint: format!("{index:016x}"),
                labels,
                starts_at: Some(steward_proto::now()),
                ..AlertEvent::default()
            }
        })
        .collect()
}

/// A message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Subject it was published on.
    pub subject: String,
    /// Its body.
    pub payload: Vec<u8>,
    /// Its `Nats-Msg-Id` header, if any.
    pub message_id: Option<String>,
}

/// Returns every message a stream holds now, in sequence order.
///
/// # Panics
/// Panics when the stream does not exist or a read fails.
pub async fn stored_messages(client: &async_nats::Client, stream: &str) -> Vec<StoredMessage> {
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut handle = jetstream
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream} not found: {e}"));
    let state = handle
        .info()
        .await
        .unwrap_or_else(|e| panic!("stream {stream} info failed: {e}"))
        .state
        .clone();
    let mut messages = Vec::new();
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        // Work-queue streams delete acknowledged messages, leaving gaps.
        let Ok(message) = handle.get_raw_message(sequence).await else {
            continue;
        };
        messages.push(StoredMessage {
            subject: message.subject.to_string(),
            payload: message.payload.to_vec(),
            message_id: message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|value| value.as_str().to_owned()),
        });
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_carry_their_creation_time() {
        let name = unique_name("steward_test_");
        let created = created_at(&name, "steward_test_").expect("a time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(now - created < 60, "{name}");
    }

    #[test]
    fn test_streams_are_recognised_by_name() {
        let nats = isolated_nats();
        let stream = format!("{}_ALERTS", nats.stream_prefix);
        assert!(test_stream_created_at(&stream).is_some(), "{stream}");
        assert_eq!(test_stream_created_at("STEWARD_ALERTS"), None);
        assert_eq!(test_stream_created_at("TXYZ_ALERTS"), None);
    }
}
