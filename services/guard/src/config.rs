//! Configuration of the guard service.

use std::time::Duration;

use steward_config::{AdminConfig, ConsumerConfig, DatabaseConfig, LogConfig, NatsConfig};

/// Command line and environment of `steward-guard`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "steward-guard",
    version,
    about = "Approves or rejects proposed remediation actions"
)]
pub struct Config {
    /// Name of the durable consumer that all guard replicas share.
    #[arg(long, env = "STEWARD_GUARD_CONSUMER", default_value = "guard")]
    pub consumer_name: String,

    /// Decision rules.
    #[command(flatten)]
    pub policy: Policy,

    /// NATS connection and naming.
    #[command(flatten)]
    pub nats: NatsConfig,

    /// Consumer concurrency and retries.
    #[command(flatten)]
    pub consumer: ConsumerConfig,

    /// Postgres connection.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Admin endpoints.
    #[command(flatten)]
    pub admin: AdminConfig,

    /// Logs.
    #[command(flatten)]
    pub log: LogConfig,
}

/// The rules a proposal must pass.
#[derive(clap::Args, Debug, Clone)]
pub struct Policy {
    /// Lowest confidence, in [0, 1], that the guard approves.
    #[arg(long, env = "STEWARD_GUARD_MIN_CONFIDENCE", default_value_t = 0.7, value_parser = parse_confidence)]
    pub min_confidence: f64,

    /// Time after an approval during which the same action on the same
    /// target is rejected; read from the action history in Postgres.
    #[arg(
        long,
        env = "STEWARD_GUARD_COOLDOWN",
        default_value = "5m",
        value_parser = humantime::parse_duration
    )]
    pub cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_confidence: 0.7,
            cooldown: Duration::from_secs(300),
        }
    }
}

fn parse_confidence(value: &str) -> Result<f64, String> {
    let confidence: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if !(0.0..=1.0).contains(&confidence) {
        return Err(format!("{confidence} is outside [0, 1]"));
    }
    Ok(confidence)
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Config::command().debug_assert();
    }
}
