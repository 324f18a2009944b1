//! The guard service: a hard gate between proposals and execution.
//!
//! For each `proposed` event the guard re-validates the action against the
//! registry, checks the confidence threshold and the cooldown (the same
//! action on the same target, read from the action history in Postgres),
//! and publishes `approved` or `rejected` with every reason. The decision,
//! and for an approval the action history row, are committed in one
//! transaction that holds the target's advisory lock, so replicas deciding
//! on one target take turns and cannot both approve.

pub mod approvals;
pub mod config;
mod handler;
pub mod policy;

use std::sync::Arc;

use anyhow::Context;

use steward_bus::{ConsumerSpec, Stage};
use steward_runtime::Service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, PolicyFlags};
pub use handler::{Moment, ProposalHandler, Ruling, Verdict, evaluate_history, evaluate_static};
pub use policy::Policy;

/// Runs the guard until `shutdown` is cancelled.
///
/// # Errors
/// Fails when NATS, Postgres or the durable consumer cannot be set up.
pub async fn run(
    config: Config,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let policy = config.policy.load()?;
    let (field, lookback) = policy.longest_lookback();
    anyhow::ensure!(
        config.retention.is_zero() || config.retention >= lookback,
        "--retention {} is shorter than the policy's {field} ({}), which reads the history that far back; keep at least that much, or 0s to keep everything",
        humantime::format_duration(config.retention),
        humantime::format_duration(lookback)
    );
    let tokens = config
        .approval_token_file
        .as_deref()
        .map(approvals::ApproverTokens::load)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        min_confidence = policy.min_confidence,
        cooldown = ?policy.cooldown,
        denied_namespaces = ?policy.denied_namespaces,
        approval_from_risk = ?policy.require_approval_from_risk,
        "guard policy"
    );
    let Some(service) = Service::start(
        "guard",
        &config.nats,
        &config.database,
        admin,
        shutdown.clone(),
    )
    .await?
    else {
        return Ok(());
    };

    let spec = ConsumerSpec {
        stream: service.bus.names().remediation_stream(),
        durable: config.consumer_name.clone(),
        filter: service.bus.names().remediation_stage(Stage::Proposed),
        description: "Steward guard: approves or rejects proposals".to_owned(),
        settings: config.consumer.clone(),
    };
    let approvals = approvals::Approvals::new(
        service.bus.clone(),
        service.store.clone(),
        Arc::new(policy.clone()),
        service.metrics.clone(),
    );
    tokio::spawn(approvals.clone().sweep(shutdown.clone()));
    if !config.retention.is_zero() {
        tokio::spawn(prune_hourly(
            service.store.clone(),
            config.retention,
            shutdown.clone(),
        ));
    }
    match tokens {
        Some(tokens) => {
            let listener = tokio::net::TcpListener::bind(config.approval_listen)
                .await
                .with_context(|| {
                    format!(
                        "while binding the approval API to {}",
                        config.approval_listen
                    )
                })?;
            tokio::spawn(approvals::serve(
                listener,
                approvals,
                tokens,
                shutdown.clone(),
            ));
        }
        None => tracing::info!(
            timeout = ?policy.approval_timeout,
            "the approval API is off (no --approval-token-file); pending proposals are rejected after the timeout"
        ),
    }
    let handler = Arc::new(ProposalHandler::new(
        service.bus.clone(),
        service.store.clone(),
        policy,
        service.metrics.clone(),
    ));
    service.consume(spec, handler).await
}

/// Deletes history older than `retention` every hour until `shutdown`;
/// replicas take turns through an advisory lock.
async fn prune_hourly(
    store: steward_store::Store,
    retention: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.prune(retention, 10_000).await {
            Ok(Some(pruned)) => tracing::info!(?pruned, ?retention, "old history pruned"),
            Ok(None) => tracing::debug!("another replica is pruning"),
            Err(error) => {
                tracing::warn!(error = %steward_telemetry::error_chain(&error), "pruning failed; it runs again in an hour")
            }
        }
    }
}
