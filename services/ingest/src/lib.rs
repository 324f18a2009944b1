//! The ingest service: Alertmanager's webhook receiver.
//!
//! `POST /api/v1/alerts` validates the payload, publishes every alert of
//! the group on `<prefix>.alerts.<cluster>` with a `Nats-Msg-Id` per alert
//! instance and status, and answers 2xx only once JetStream has
//! acknowledged every publish. Any failure to publish answers 503, which
//! Alertmanager retries, so an alert is never acknowledged and lost.

pub mod config;
mod server;
pub mod webhook;

use std::sync::Arc;

use anyhow::Context;
use steward_bus::Bus;
use steward_telemetry::{Metrics, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Tokens};
pub use server::{AppState, router};

/// Runs ingest on an already bound listener until `shutdown` is cancelled.
///
/// # Errors
/// Fails when the configuration is invalid, NATS cannot be set up, or the
/// server stops with an I/O error.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tokens = Tokens::load(&config)?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();

    let bus = Bus::connect(&config.nats, "steward-ingest", &shutdown)
        .await
        .context("while connecting to NATS")?
        .with_metrics(metrics.clone());
    bus.ensure_streams()
        .await
        .context("while creating streams")?;
    let connected = bus.clone();
    readiness.add_check("nats", move || connected.is_connected());
    readiness.mark_started();

    let state = AppState {
        bus,
        tokens: Arc::new(tokens),
        default_cluster: config.default_cluster.clone(),
        max_body_bytes: config.max_body_bytes,
        metrics: metrics.clone(),
        rejected_auth_log: Arc::default(),
    };
    let app = router(state).merge(steward_telemetry::admin_router(readiness.clone(), metrics));

    tracing::info!(address = ?listener.local_addr().ok(), "ingest listening");
    let stopping = readiness.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.cancelled().await;
        stopping.mark_stopping();
    })
    .await
    .context("while serving HTTP")?;
    tracing::info!("ingest stopped");
    Ok(())
}
