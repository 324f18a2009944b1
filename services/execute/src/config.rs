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
    /// `<consumer-name>~all`.
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

    /// File of job templates for the actions no generic API call can do
    /// (backups, failovers); see `steward_actions::jobs`. Unset: those
    /// actions fail with a message naming the missing template.
    #[arg(long, env = "STEWARD_JOB_TEMPLATES")]
    pub job_templates: Option<PathBuf>,

    /// Largest memory request or limit `increase_resources` sets.
    #[arg(long, env = "STEWARD_MAX_CONTAINER_MEMORY", default_value = "16Gi", value_parser = parse_quantity)]
    pub max_container_memory: f64,

    /// Largest CPU request or limit `increase_resources` sets.
    #[arg(long, env = "STEWARD_MAX_CONTAINER_CPU", default_value = "8", value_parser = parse_quantity)]
    pub max_container_cpu: f64,

    /// Largest size `expand_pvc` requests.
    #[arg(long, env = "STEWARD_MAX_VOLUME_SIZE", default_value = "1Ti", value_parser = parse_quantity)]
    pub max_volume_size: f64,

    /// DaemonSets in kube-system that `restart_network_component` may
    /// restart, separated by commas.
    #[arg(
        long,
        env = "STEWARD_NETWORK_DAEMONSETS",
        value_delimiter = ',',
        default_value = "calico-node,cilium,kube-proxy,aws-node,kube-flannel-ds,canal,weave-net"
    )]
    pub network_daemonsets: Vec<String>,

    /// Environment variable `enable_debug_mode` sets, as `NAME=VALUE`.
    #[arg(long, env = "STEWARD_DEBUG_ENV", default_value = "LOG_LEVEL=debug", value_parser = parse_env)]
    pub debug_env: (String, String),

    /// Time a live action waits for its effect (a finished rollout) before
    /// reporting it unverified; `0s` skips the check.
    #[arg(
        long,
        env = "STEWARD_VERIFY_TIMEOUT",
        default_value = "2m",
        value_parser = humantime::parse_duration
    )]
    pub verify_timeout: std::time::Duration,

    /// Time a job-template action waits for its Job to complete.
    #[arg(
        long,
        env = "STEWARD_JOB_TIMEOUT",
        default_value = "10m",
        value_parser = humantime::parse_duration
    )]
    pub job_timeout: std::time::Duration,

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

fn parse_quantity(value: &str) -> Result<f64, String> {
    steward_actions::parse_quantity(value).ok_or_else(|| {
        format!("{value:?} is not a Kubernetes quantity such as 500m, 2, 512Mi or 1Ti")
    })
}

fn parse_env(value: &str) -> Result<(String, String), String> {
    let (name, setting) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not NAME=VALUE"))?;
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !valid {
        return Err(format!("{name:?} is not an environment variable name"));
    }
    Ok((name.to_owned(), setting.to_owned()))
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
