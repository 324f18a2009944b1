//! Configuration of the guard service.

use std::path::PathBuf;
use std::time::Duration;

use crate::Policy;

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
    pub policy: PolicyFlags,

    /// Age after which the action history, decisions, analyses, alert
    /// instances and dead letters are deleted; one guard replica prunes
    /// every hour. `0s` keeps everything; otherwise at least `1h`, because
    /// the cooldown and the detectors read the recent history.
    #[arg(long, env = "STEWARD_RETENTION", default_value = "90d", value_parser = retention)]
    pub retention: Duration,

    /// Address of the approval API, where people approve or reject
    /// pending proposals.
    #[arg(
        long,
        env = "STEWARD_GUARD_APPROVAL_LISTEN",
        default_value = "127.0.0.1:9481"
    )]
    pub approval_listen: std::net::SocketAddr,

    /// File of approval tokens, one `TOKEN NAME` per line; the name is
    /// recorded as the approver. Unset: the approval API is off, and
    /// pending proposals are rejected after the approval timeout.
    #[arg(long, env = "STEWARD_GUARD_APPROVAL_TOKEN_FILE")]
    pub approval_token_file: Option<PathBuf>,

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

/// Where the policy comes from.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PolicyFlags {
    /// Policy file (YAML): thresholds, protected namespaces, allowed
    /// actions, rate limits, freeze windows, approvals and detector
    /// windows. Unset: the defaults in docs/guard.md.
    #[arg(long = "policy", env = "STEWARD_GUARD_POLICY")]
    pub file: Option<PathBuf>,

    /// Lowest confidence, in [0, 1], approved at any risk without its own
    /// threshold; overrides the file.
    #[arg(long, env = "STEWARD_GUARD_MIN_CONFIDENCE", value_parser = parse_confidence)]
    pub min_confidence: Option<f64>,

    /// Time after an approval during which the same action on the same
    /// target is rejected; overrides the file.
    #[arg(long, env = "STEWARD_GUARD_COOLDOWN", value_parser = humantime::parse_duration)]
    pub cooldown: Option<Duration>,
}

impl PolicyFlags {
    /// Reads the policy file, if any, and applies the overrides.
    ///
    /// # Errors
    /// Fails when the file cannot be read or is invalid.
    pub fn load(&self) -> anyhow::Result<Policy> {
        let mut policy = match &self.file {
            Some(path) => Policy::load(path).map_err(anyhow::Error::msg)?,
            None => Policy::default(),
        };
        if let Some(min_confidence) = self.min_confidence {
            policy.min_confidence = min_confidence;
        }
        if let Some(cooldown) = self.cooldown {
            policy.cooldown = cooldown;
        }
        policy.check_durations().map_err(anyhow::Error::msg)?;
        Ok(policy)
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

fn retention(value: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration such as 90d: {e}"))?;
    if !age.is_zero() && age < Duration::from_secs(3600) {
        return Err(format!(
            "{value:?} would delete the recent history that the cooldown and the detectors read; use 0s to keep everything, or at least 1h"
        ));
    }
    if age > Duration::from_secs(36_500 * 86_400) {
        return Err(format!(
            "{value:?} is longer than 36500d; use 0s to keep everything"
        ));
    }
    Ok(age)
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Config::command().debug_assert();
    }

    #[test]
    fn retention_keeps_at_least_an_hour() {
        assert_eq!(super::retention("0s"), Ok(std::time::Duration::ZERO));
        assert!(super::retention("30m").is_err());
        assert!(super::retention("1000000y").is_err());
        assert_eq!(
            super::retention("2h"),
            Ok(std::time::Duration::from_secs(7200))
        );
    }
}
