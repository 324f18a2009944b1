//! The life cycle every consuming service shares: serve the admin
//! endpoints, connect to Postgres and NATS (retrying until they are up),
//! migrate, create the streams, consume until shutdown, then drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use steward_bus::{Bus, ConsumerSpec, Handler};
use steward_config::{DatabaseConfig, NatsConfig};
use steward_store::Store;
use steward_telemetry::{Metrics, Readiness};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started service: its connections, metrics and readiness.
pub struct Service {
    /// Service name, as it appears in logs and the NATS client name.
    pub name: &'static str,
    /// NATS connection.
    pub bus: Bus,
    /// Postgres pool.
    pub store: Store,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness reported on `/readyz`.
    pub readiness: Readiness,
    admin: JoinHandle<std::io::Result<()>>,
    /// Stops the admin endpoints; cancelled after the drain, so that
    /// `/metrics` and `/healthz` stay up while in-flight work finishes.
    admin_shutdown: CancellationToken,
    shutdown: CancellationToken,
}

/// How often the readiness check pings Postgres.
const DATABASE_PING_INTERVAL: Duration = Duration::from_secs(5);

impl Service {
    /// Serves the admin endpoints on `admin`, then connects to Postgres
    /// and NATS, applies migrations and creates the streams.
    ///
    /// `/healthz` responds as soon as this starts; `/readyz` only once the
    /// consumer runs and both connections are up.
    ///
    /// Returns `None` when shutdown was requested before start-up finished.
    ///
    /// # Errors
    /// Fails when migrations or stream creation fail.
    pub async fn start(
        name: &'static str,
        nats: &NatsConfig,
        database: &DatabaseConfig,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        let cancelled = shutdown.clone();
        match Self::start_inner(name, nats, database, admin, shutdown).await {
            Ok(service) => Ok(Some(service)),
            Err(_) if cancelled.is_cancelled() => {
                tracing::info!(
                    service = name,
                    "shutdown requested during start-up; stopped"
                );
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    async fn start_inner(
        name: &'static str,
        nats: &NatsConfig,
        database: &DatabaseConfig,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let readiness = Readiness::default();
        let admin_shutdown = CancellationToken::new();
        let admin = tokio::spawn(steward_telemetry::serve_admin(
            admin,
            readiness.clone(),
            metrics.clone(),
            admin_shutdown.clone(),
        ));
        // A shutdown during start-up stops the admin endpoints too.
        let start_shutdown = shutdown.clone();
        let admin_stop = admin_shutdown.clone();
        let startup = tokio::spawn(async move {
            start_shutdown.cancelled().await;
            admin_stop.cancel();
        });

        let store = Store::connect(database, &shutdown)
            .await
            .context("while connecting to Postgres")?;
        store
            .migrate()
            .await
            .context("while migrating the database")?;
        let bus = Bus::connect(nats, &format!("steward-{name}"), &shutdown)
            .await
            .context("while connecting to NATS")?
            .with_metrics(metrics.clone());
        bus.ensure_streams()
            .await
            .context("while creating streams")?;

        startup.abort();

        let connected = bus.clone();
        readiness.add_check("nats", move || connected.is_connected());
        let reachable = Arc::new(AtomicBool::new(true));
        readiness.add_check("postgres", {
            let reachable = reachable.clone();
            move || reachable.load(Ordering::Relaxed)
        });
        tokio::spawn(ping_database(store.clone(), reachable, shutdown.clone()));

        Ok(Self {
            name,
            bus,
            store,
            metrics,
            readiness,
            admin,
            admin_shutdown,
            shutdown,
        })
    }

    /// Consumes `spec` with `handler` until shutdown, records dead letters
    /// in Postgres, then drains and stops the admin endpoints.
    ///
    /// # Errors
    /// Fails when the durable consumer cannot be created.
    pub async fn consume<H: Handler>(
        self,
        spec: ConsumerSpec,
        handler: Arc<H>,
    ) -> anyhow::Result<()> {
        // Report not ready as soon as shutdown starts, so that no new work
        // is routed here while in-flight messages drain.
        let stopping = self.readiness.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stopping.mark_stopping();
        });
        let readiness = self.readiness.clone();
        let result = steward_bus::consume(
            &self.bus,
            spec,
            handler,
            Arc::new(self.store.clone()),
            self.metrics.clone(),
            self.shutdown.clone(),
            move || readiness.mark_started(),
        )
        .await
        .context("while consuming");

        self.readiness.mark_stopping();
        self.shutdown.cancel();
        self.admin_shutdown.cancel();
        match self.admin.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "admin server stopped with an error"),
            Err(error) => tracing::warn!(error = %error, "admin server task failed"),
        }
        tracing::info!(service = self.name, "stopped");
        result
    }
}

/// Keeps `reachable` up to date with a `SELECT 1` every few seconds, so
/// that `/readyz` reports a Postgres outage.
async fn ping_database(store: Store, reachable: Arc<AtomicBool>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(DATABASE_PING_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let ping = tokio::time::timeout(DATABASE_PING_INTERVAL, store.ping()).await;
        let up = matches!(ping, Ok(Ok(())));
        if reachable.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("Postgres is reachable again");
            } else {
                tracing::warn!("Postgres is unreachable; reporting not ready");
            }
        }
    }
}
