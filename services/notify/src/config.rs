//! Configuration of the notify service.

use steward_config::{AdminConfig, ConsumerConfig, DatabaseConfig, LogConfig, NatsConfig};

/// Command line and environment of `steward-notify`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "steward-notify",
    version,
    about = "Prints one readable line per remediation event"
)]
pub struct Config {
    /// Name of the durable consumer that all notify replicas share.
    #[arg(long, env = "STEWARD_NOTIFY_CONSUMER", default_value = "notify")]
    pub consumer_name: String,

    /// NATS connection and naming.
    #[command(flatten)]
    pub nats: NatsConfig,

    /// Consumer concurrency and retries.
    #[command(flatten)]
    pub consumer: ConsumerConfig,

    /// Postgres connection, for dead letters.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Admin endpoints.
    #[command(flatten)]
    pub admin: AdminConfig,

    /// Logs.
    #[command(flatten)]
    pub log: LogConfig,
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Config::command().debug_assert();
    }
}
