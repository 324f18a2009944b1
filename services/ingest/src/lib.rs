//! The ingest service: Alertmanager's webhook receiver.
//!
//! `POST /api/v1/alerts` validates the payload, publishes every alert of
//! the group on `<prefix>.alerts.<cluster>` with a `Nats-Msg-Id` per alert
//! instance and status, and responds 2xx only once JetStream has
//! acknowledged every publish. Any failure to publish gets 503, which
//! Alertmanager retries, so an alert is never acknowledged and lost.

pub mod config;
mod server;
pub mod webhook;

use std::future::IntoFuture;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use steward_bus::Bus;
use steward_telemetry::{Metrics, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Tokens};
pub use server::{AppState, router};

/// Runs ingest on an already bound listener until `shutdown` is cancelled.
///
/// The HTTP server starts at once, so `/healthz` responds while NATS is
/// still unreachable; until the streams exist, webhooks get 503 (which
/// Alertmanager retries) and `/readyz` reports not ready.
///
/// # Errors
/// Fails when the configuration is invalid, the streams cannot be created,
/// or the server stops with an I/O error.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tokens = Tokens::load(&config)?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let bus = Arc::new(OnceLock::new());

    let state = AppState {
        bus: bus.clone(),
        tokens: Arc::new(tokens),
        default_cluster: config.default_cluster.clone(),
        max_body_bytes: config.max_body_bytes,
        metrics: metrics.clone(),
        rejected_auth_log: Arc::default(),
    };
    let app = router(state)
        .merge(steward_telemetry::admin_router(
            readiness.clone(),
            metrics.clone(),
        ))
        // A client that sends a body slower than this gets 408 and frees
        // its connection.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ));
    tracing::info!(address = ?listener.local_addr().ok(), "ingest listening");
    let server_shutdown = CancellationToken::new();
    let stopping = readiness.clone();
    let stop_server = server_shutdown.clone();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            stop_server.cancelled().await;
            stopping.mark_stopping();
        })
        .into_future(),
    );

    let connected = match connect(&config, metrics, &shutdown).await {
        Ok(connected) => connected,
        Err(error) => {
            server_shutdown.cancel();
            let _ = server.await;
            if shutdown.is_cancelled() {
                tracing::info!("shutdown requested during start-up; stopped");
                return Ok(());
            }
            return Err(error);
        }
    };
    let check = connected.clone();
    readiness.add_check("nats", move || check.is_connected());
    // Only this task sets the cell, once.
    let _ = bus.set(connected);
    readiness.mark_started();

    shutdown.cancelled().await;
    server_shutdown.cancel();
    server
        .await
        .context("HTTP server task failed")?
        .context("while serving HTTP")?;
    tracing::info!("ingest stopped");
    Ok(())
}

async fn connect(
    config: &Config,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Bus> {
    let bus = Bus::connect(&config.nats, "steward-ingest", shutdown)
        .await
        .context("while connecting to NATS")?
        .with_metrics(metrics);
    bus.ensure_streams().await.context(
        "while creating streams (when JetStream reports insufficient storage, lower --stream-max-bytes or raise the server's max_file_store)",
    )?;
    Ok(bus)
}
