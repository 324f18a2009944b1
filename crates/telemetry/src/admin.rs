//! The admin HTTP server: liveness, readiness and metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Metrics;

type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// Readiness of a service: started, and every dependency check passing.
///
/// `/readyz` answers 200 only when [`Readiness::mark_started`] was called
/// and each registered check returns true; otherwise 503 with the names of
/// the failing checks.
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    checks: Arc<Mutex<Vec<(&'static str, Check)>>>,
}

impl Readiness {
    /// Registers a dependency check, such as "the NATS connection is up".
    pub fn add_check(&self, name: &'static str, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.lock_checks().push((name, Box::new(check)));
    }

    /// Marks start-up as finished: streams, consumers and pools exist.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Marks the service as draining, so that load balancers stop sending
    /// it work.
    pub fn mark_stopping(&self) {
        self.started.store(false, Ordering::Release);
    }

    /// Returns the names of the checks that fail now; "starting" stands for
    /// unfinished start-up.
    pub fn failing(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
        if !self.started.load(Ordering::Acquire) {
            failing.push("starting");
        }
        for (name, check) in self.lock_checks().iter() {
            if !check() {
                failing.push(*name);
            }
        }
        failing
    }

    fn lock_checks(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Check)>> {
        // A check that panicked leaves the list intact, so the poison flag
        // carries no information here.
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

/// Returns the admin routes, for services that serve them on their own
/// listener or merge them into another router.
pub fn admin_router(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

/// Serves the admin routes on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// Fails when the server stops with an I/O error.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?address, "admin endpoints listening");
    axum::serve(listener, admin_router(readiness, metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let failing = state.readiness.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join(", ")),
        )
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lists_failing_checks() {
        let readiness = Readiness::default();
        readiness.add_check("nats", || false);
        readiness.add_check("postgres", || true);
        assert_eq!(readiness.failing(), vec!["starting", "nats"]);

        readiness.mark_started();
        assert_eq!(readiness.failing(), vec!["nats"]);
    }
}
