//! The execute service: applies approved actions through the Kubernetes
//! API, dry-run by default.
//!
//! Each `approved` event is claimed in the action history, executed (or in
//! dry-run mode described) and finished there with its changes, then
//! published on `<prefix>.remediation.executed.<cluster>`. A redelivered
//! approval of a finished action republishes the stored result and acts
//! no second time.

pub mod actions;
pub mod config;
mod handler;

use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use steward_bus::Bus;
use steward_bus::{ConsumerSpec, Stage};
use steward_runtime::Service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use actions::Executor;
pub use config::{Config, Mode};
pub use handler::DecisionHandler;

/// Builds a Kubernetes client from the kubeconfig option or the
/// environment. In dry-run mode a missing configuration is not an error.
///
/// # Errors
/// Fails in live mode when no usable configuration is found.
pub async fn kube_client(config: &Config) -> anyhow::Result<Option<kube::Client>> {
    let loaded = match &config.kubeconfig {
        Some(path) => {
            let options = kube::config::KubeConfigOptions::default();
            match kube::config::Kubeconfig::read_from(path) {
                Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(anyhow::Error::from),
                Err(error) => Err(anyhow::Error::from(error)),
            }
            .with_context(|| format!("while loading kubeconfig {}", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("while looking for a kubeconfig or in-cluster credentials"),
    };
    let kube_config = match (loaded, config.mode) {
        (Ok(kube_config), _) => kube_config,
        (Err(error), Mode::Live) => {
            return Err(error.context("live mode needs Kubernetes credentials"));
        }
        (Err(error), Mode::DryRun) => {
            tracing::info!(
                error = format!("{error:#}"),
                "no Kubernetes credentials; dry-run describes the planned requests without reading objects"
            );
            return Ok(None);
        }
    };
    tracing::info!(cluster_url = %kube_config.cluster_url, "Kubernetes API configured");
    let client =
        kube::Client::try_from(kube_config).context("while building the Kubernetes client")?;
    Ok(Some(client))
}

/// Runs execute until `shutdown` is cancelled.
///
/// # Errors
/// Fails when live mode has no Kubernetes credentials, or NATS, Postgres or
/// the durable consumer cannot be set up.
pub async fn run(
    config: Config,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = actions::Settings {
        max_container_memory: config.max_container_memory,
        max_container_cpu: config.max_container_cpu,
        max_volume_size: config.max_volume_size,
        network_daemonsets: config.network_daemonsets.clone(),
        debug_env: config.debug_env.clone(),
        verify_timeout: config.verify_timeout,
        job_timeout: config.job_timeout,
        job_templates: match &config.job_templates {
            Some(path) => {
                steward_actions::jobs::JobTemplates::load(path).map_err(anyhow::Error::msg)?
            }
            None => steward_actions::jobs::JobTemplates::default(),
        },
    };
    let every_cluster = config.cluster == "*";
    if every_cluster && config.mode == Mode::Live {
        anyhow::bail!(
            "live mode acts on one cluster: set --cluster (STEWARD_EXECUTE_CLUSTER) to the cluster name its alerts carry, not *"
        );
    }
    // Every cluster's approvals cannot go to the one cluster that a
    // kubeconfig reaches, so a `*` executor only describes requests.
    let client = if every_cluster {
        tracing::info!("--cluster * describes the planned requests without reading objects");
        None
    } else {
        kube_client(&config).await?
    };
    match config.mode {
        Mode::DryRun => tracing::info!("dry-run mode: actions are described, nothing is changed"),
        Mode::Live => tracing::warn!("live mode: approved actions change the cluster"),
    }

    // Debug modes expire in the cluster, so reverting them needs no
    // message; dry-run replicas change nothing and revert nothing.
    if let (Some(client), Mode::Live) = (&client, config.mode) {
        actions::monitoring::spawn_reverter(
            client.clone(),
            settings.clone(),
            config.mode,
            std::time::Duration::from_secs(30),
            shutdown.clone(),
        );
    }

    let Some(service) =
        Service::start("execute", &config.nats, &config.database, admin, shutdown).await?
    else {
        return Ok(());
    };

    let names = service.bus.names();
    let (durable, filter) = if every_cluster {
        (
            // `~` never occurs in a cluster's subject token, so no cluster
            // name gives this consumer name.
            format!("{}~all", config.consumer_name),
            names.remediation_stage(Stage::Approved),
        )
    } else {
        (
            format!(
                "{}-{}",
                config.consumer_name,
                steward_bus::subject_token(&config.cluster)
            ),
            names.remediation(Stage::Approved, &config.cluster),
        )
    };
    let spec = ConsumerSpec {
        stream: names.remediation_stream(),
        durable,
        filter,
        description: format!(
            "{EXECUTOR_DESCRIPTION}({}) for cluster {}",
            config.mode.as_str(),
            config.cluster
        ),
        settings: config.consumer.clone(),
    };
    check_consumers(&service.bus, &config, &spec).await?;
    let handler = Arc::new(DecisionHandler::new(
        service.bus.clone(),
        service.store.clone(),
        Executor::with_settings(client, config.mode, settings),
        (!every_cluster).then(|| config.cluster.clone()),
        config.execution_lease,
        service.metrics.clone(),
    ));
    service.consume(spec, handler).await
}

/// Start of the description of every executor's consumer.
const EXECUTOR_DESCRIPTION: &str = "Steward execute ";

/// Returns whether a filter takes the approvals of every cluster.
fn names_every_cluster(filter: &str) -> bool {
    filter.ends_with(".approved.>")
}

/// Refuses to start next to an executor whose consumer takes some of the
/// same approvals (a `*` executor and a per-cluster one), because the two
/// would split them; and warns when the shared consumer was last started
/// in the other mode, because replicas in both modes split approvals too.
async fn check_consumers(bus: &Bus, config: &Config, spec: &ConsumerSpec) -> anyhow::Result<()> {
    let stream = bus
        .jetstream()
        .get_stream(&spec.stream)
        .await
        .context("while looking up the remediation stream")?;
    // Executors mark their consumers by description; a user's own
    // consumer on the stream is never taken for one.
    let mut consumers = stream.consumers();
    while let Some(info) = consumers.next().await {
        let info = info.context("while listing consumers")?;
        let is_executor = info
            .config
            .description
            .as_deref()
            .is_some_and(|description| description.starts_with(EXECUTOR_DESCRIPTION));
        if !is_executor || info.name == spec.durable {
            continue;
        }
        let every =
            names_every_cluster(&info.config.filter_subject) || names_every_cluster(&spec.filter);
        if every || info.config.filter_subject == spec.filter {
            anyhow::bail!(
                "consumer {} takes approvals that {} takes too, so the two executors would split them; stop that executor and delete its consumer (nats consumer rm {} {}), or give this one another --consumer-name",
                info.name,
                spec.durable,
                spec.stream,
                info.name
            );
        }
    }

    if let Ok(existing) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&spec.durable)
        .await
    {
        let previous = existing
            .cached_info()
            .config
            .description
            .clone()
            .unwrap_or_default();
        let mode = format!("({})", config.mode.as_str());
        if !previous.is_empty() && !previous.contains(&mode) {
            tracing::warn!(
                consumer = %spec.durable,
                previous = %previous,
                "the consumer was last started in the other mode; while replicas in both modes run, they split the approvals"
            );
        }
    }
    Ok(())
}
