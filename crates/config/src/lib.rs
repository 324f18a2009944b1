//! Configuration shared by Steward's services.
//!
//! Each group is a `clap::Args` struct, so a service flattens the groups it
//! needs into its own command line, and every flag can also be set through
//! the environment variable named in its help. Tests build these structs
//! directly instead of touching the process environment.

use std::net::SocketAddr;
use std::time::Duration;

/// How a service reaches NATS and names its streams and subjects.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsConfig {
    /// NATS server URL; several URLs may be separated by commas.
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "STEWARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,

    /// NATS credentials file (JWT and NKey seed); unset connects without one.
    #[arg(
        id = "nats_credentials",
        long = "nats-credentials",
        env = "STEWARD_NATS_CREDENTIALS"
    )]
    pub credentials: Option<std::path::PathBuf>,

    /// First token(s) of every subject Steward publishes or consumes, so that
    /// several installations can share one NATS account.
    #[arg(id = "subject_prefix", 
        long = "subject-prefix",
        env = "STEWARD_SUBJECT_PREFIX",
        default_value = "steward",
        value_parser = parse_subject_prefix
    )]
    pub subject_prefix: String,

    /// Prefix of the JetStream stream names (`<prefix>_ALERTS`,
    /// `<prefix>_REMEDIATION`).
    #[arg(id = "stream_prefix", 
        long = "stream-prefix",
        env = "STEWARD_STREAM_PREFIX",
        default_value = "STEWARD",
        value_parser = parse_stream_prefix
    )]
    pub stream_prefix: String,

    /// Window in which JetStream drops a publish whose `Nats-Msg-Id` it has
    /// already stored. Postgres keeps the durable record beyond it.
    #[arg(id = "duplicate_window", 
        long = "duplicate-window",
        env = "STEWARD_DUPLICATE_WINDOW",
        default_value = "10m",
        value_parser = humantime::parse_duration
    )]
    pub duplicate_window: Duration,

    /// Maximum size of each stream in bytes. A full stream rejects new
    /// messages instead of discarding stored ones, so publishers see the
    /// error and retry.
    #[arg(id = "stream_max_bytes", long = "stream-max-bytes", env = "STEWARD_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    pub stream_max_bytes: i64,

    /// How long remediation events are kept for consumers, including the
    /// consumers that users attach themselves.
    #[arg(id = "remediation_max_age", 
        long = "remediation-max-age",
        env = "STEWARD_REMEDIATION_MAX_AGE",
        default_value = "7d",
        value_parser = humantime::parse_duration
    )]
    pub remediation_max_age: Duration,

    /// Time allowed for one publish to be acknowledged by JetStream.
    #[arg(id = "publish_timeout", 
        long = "publish-timeout",
        env = "STEWARD_PUBLISH_TIMEOUT",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub publish_timeout: Duration,
}

impl NatsConfig {
    /// Returns a configuration for a local server with the given prefixes
    /// and every other field at its default.
    pub fn local(url: &str, subject_prefix: &str, stream_prefix: &str) -> Self {
        Self {
            url: url.to_owned(),
            credentials: None,
            subject_prefix: subject_prefix.to_owned(),
            stream_prefix: stream_prefix.to_owned(),
            duplicate_window: Duration::from_secs(600),
            stream_max_bytes: 1 << 30,
            remediation_max_age: Duration::from_secs(7 * 24 * 3600),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// How a service consumes its durable JetStream consumer.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsumerConfig {
    /// Maximum number of messages one replica handles at the same time; it
    /// pulls no more than that from JetStream.
    #[arg(
        id = "max_in_flight",
        long = "max-in-flight",
        env = "STEWARD_MAX_IN_FLIGHT",
        default_value_t = 16
    )]
    pub max_in_flight: usize,

    /// Time JetStream waits for an acknowledgement before it redelivers.
    /// Long handlers send in-progress acknowledgements at a third of it.
    #[arg(id = "ack_wait", 
        long = "ack-wait",
        env = "STEWARD_ACK_WAIT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub ack_wait: Duration,

    /// Deliveries of one message before it is recorded as a dead letter
    /// and terminated.
    #[arg(
        id = "max_deliver",
        long = "max-deliver",
        env = "STEWARD_MAX_DELIVER",
        default_value_t = 10
    )]
    pub max_deliver: i64,

    /// Redelivery delay after the first failure; it doubles with every
    /// further delivery up to `--retry-max-delay`.
    #[arg(id = "retry_base_delay", 
        long = "retry-base-delay",
        env = "STEWARD_RETRY_BASE_DELAY",
        default_value = "1s",
        value_parser = humantime::parse_duration
    )]
    pub retry_base_delay: Duration,

    /// Upper bound of the redelivery delay.
    #[arg(id = "retry_max_delay", 
        long = "retry-max-delay",
        env = "STEWARD_RETRY_MAX_DELAY",
        default_value = "1m",
        value_parser = humantime::parse_duration
    )]
    pub retry_max_delay: Duration,

    /// Time in-flight messages get to finish after a shutdown signal;
    /// what is still running then is redelivered to another replica.
    #[arg(id = "drain_timeout", 
        long = "drain-timeout",
        env = "STEWARD_DRAIN_TIMEOUT",
        default_value = "20s",
        value_parser = humantime::parse_duration
    )]
    pub drain_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 16,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// How a service reaches Postgres.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseConfig {
    /// Postgres connection URL.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "STEWARD_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/steward"
    )]
    pub url: String,

    /// Maximum connections in this replica's pool.
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        env = "STEWARD_DATABASE_MAX_CONNECTIONS",
        default_value_t = 8
    )]
    pub max_connections: u32,

    /// Time a query waits for a free connection before it fails.
    #[arg(id = "database_acquire_timeout", 
        long = "database-acquire-timeout",
        env = "STEWARD_DATABASE_ACQUIRE_TIMEOUT",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub acquire_timeout: Duration,
}

impl DatabaseConfig {
    /// Returns a configuration for the given URL with default pool settings.
    pub fn with_url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Where the health, readiness and metrics endpoints listen.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(
        id = "admin_listen",
        long = "admin-listen",
        env = "STEWARD_ADMIN_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub listen: SocketAddr,
}

/// How logs are written.
#[derive(clap::Args, Debug, Clone)]
pub struct LogConfig {
    /// Log format: `text` for people, `json` for log pipelines. The level
    /// comes from `RUST_LOG` (default `info`).
    #[arg(id = "log_format", long = "log-format", env = "STEWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
}

/// Output format of the service logs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Checks that a subject prefix is one or more valid subject tokens.
fn parse_subject_prefix(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("subject prefix is empty".to_owned());
    }
    for token in value.split('.') {
        if token.is_empty() {
            return Err(format!("subject prefix {value:?} has an empty token"));
        }
        if let Some(bad) = token
            .chars()
            .find(|c| c.is_whitespace() || *c == '*' || *c == '>')
        {
            return Err(format!(
                "subject prefix {value:?} contains {bad:?}, which NATS does not allow in a subject token"
            ));
        }
    }
    Ok(value.to_owned())
}

/// Checks that a stream prefix only uses the characters JetStream allows in
/// stream names.
fn parse_stream_prefix(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("stream prefix is empty".to_owned());
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "stream prefix {value:?} contains {bad:?}; use letters, digits, '_' and '-'"
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_prefix_accepts_dotted_tokens() {
        assert_eq!(
            parse_subject_prefix("acme.steward").as_deref(),
            Ok("acme.steward")
        );
    }

    #[test]
    fn subject_prefix_rejects_wildcards_and_gaps() {
        assert!(parse_subject_prefix("steward.>").is_err());
        assert!(parse_subject_prefix("a..b").is_err());
        assert!(parse_subject_prefix("a b").is_err());
        assert!(parse_subject_prefix("").is_err());
    }

    #[test]
    fn stream_prefix_rejects_dots() {
        let error = parse_stream_prefix("STEWARD.X").expect_err("dots are not allowed");
        assert!(error.contains("'.'"), "{error}");
    }
}
