//! Configuration of the execute service.

use std::path::PathBuf;

use steward_config::{AdminConfig, ConsumerConfig, DatabaseConfig, LogConfig, NatsConfig};

/// Command line and environment of `steward-execute`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "steward-execute",
    version,
    about = "Applies approved actions through the Kubernetes API, dry-run by default"
)]
pub struct Config {
    /// Name of the durable consumer that all execute replicas share.
    #[arg(long, env = "STEWARD_EXECUTE_CONSUMER", default_value = "execute")]
    pub consumer_name: String,

    /// `dry-run` records and reports what each action would change and
    /// changes nothing; `live` applies actions to the cluster.
    #[arg(long, env = "STEWARD_EXECUTE_MODE", value_enum, default_value_t = Mode::DryRun)]
    pub mode: Mode,

    /// Cluster this replica acts on: the name its alerts carry (ingest's
    /// token cluster, the `cluster` label, or ingest's default cluster),
    /// for the cluster the kubeconfig reaches. It consumes only that
    /// cluster's approvals, through the durable consumer
    /// `<consumer-name>-<cluster>`, shared by its replicas. `*` takes the
    /// approvals of every cluster, in dry-run mode only, through
    /// `<consumer-name>-all`.
    #[arg(long, env = "STEWARD_EXECUTE_CLUSTER", default_value = "default")]
    pub cluster: String,

    /// Time an attempt holds an action; a running attempt extends it every
    /// third of it, and a crashed attempt's hold expires, after which a
    /// redelivery may run the action.
    #[arg(
        long,
        env = "STEWARD_EXECUTION_LEASE",
        default_value = "2m",
        value_parser = humantime::parse_duration
    )]
    pub execution_lease: std::time::Duration,

    /// Kubeconfig file. Unset: `KUBECONFIG`, then `~/.kube/config`, then
    /// the in-cluster service account. Live mode fails at start without
    /// credentials; dry-run mode then describes the planned requests
    /// without reading the objects.
    #[arg(long, env = "STEWARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

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

/// Whether execute changes the cluster.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Describe every change and make none.
    DryRun,
    /// Apply changes through the Kubernetes API.
    Live,
}

impl Mode {
    /// Returns the name stored in the action history.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry_run",
            Mode::Live => "live",
        }
    }
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Config::command().debug_assert();
    }
}
