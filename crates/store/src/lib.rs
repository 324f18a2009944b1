//! Postgres access for Steward.
//!
//! The schema lives in `migrations/` at the repository root and is embedded
//! here; [`Store::migrate`] applies it and is safe to run from every replica
//! at once, because sqlx serializes migrations with an advisory lock.
//! Queries are checked at run time, never built with `format!`.

mod actions;
mod alerts;
mod approvals;
mod dead_letters;
mod detectors;
mod retention;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use steward_config::DatabaseConfig;
use steward_telemetry::error_chain;
use tokio_util::sync::CancellationToken;

pub use actions::{
    ActionRecord, ActionRow, Claim, DecisionRecord, DecisionTx, Finish, RecentAction, TargetKey,
};
pub use alerts::{AlertDelivery, AnalysisRecord, RecentTargetAction};
pub use approvals::{Holding, PendingDecision, Settled, Settlement};
pub use dead_letters::DeadLetterRow;
pub use detectors::{Candidate, DetectorSettings, Finding};
pub use retention::Pruned;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached.
    #[error("failed to connect to Postgres")]
    Connect(#[source] sqlx::Error),
    /// The schema migrations could not be applied.
    #[error("failed to apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database operation {operation} failed")]
    Query {
        /// The query's purpose.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Start-up was cancelled by a shutdown signal.
    #[error("shutdown requested while connecting to Postgres")]
    Cancelled,
}

impl StoreError {
    pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { operation, source }
    }

    /// Returns whether retrying later may succeed: true for connection and
    /// timeout errors, false for errors the same input would hit again
    /// (constraint violations, bad data).
    pub fn is_transient(&self) -> bool {
        let source = match self {
            StoreError::Query { source, .. } | StoreError::Connect(source) => source,
            StoreError::Migrate(_) | StoreError::Cancelled => return false,
        };
        match source {
            sqlx::Error::Database(db) => {
                // Class 08 is connection exceptions, 40 transaction rollback
                // (serialization failures, deadlocks), 53 insufficient
                // resources, 57 operator intervention (server shutting down).
                let code = db.code();
                let class = code.as_deref().map(|c| &c[..2.min(c.len())]);
                matches!(class, Some("08" | "40" | "53" | "57"))
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_) => true,
            _ => false,
        }
    }
}

impl StoreError {
    /// Returns what a message handler should do after this error: retry
    /// later when it may pass, or give the message up as a dead letter when
    /// the same input would fail again (a NUL byte in text, say).
    pub fn outcome(&self) -> steward_bus::Outcome {
        let chain = error_chain(self);
        if self.is_transient() {
            steward_bus::Outcome::Retry(chain)
        } else {
            steward_bus::Outcome::Reject(format!("{chain} (a permanent database error)"))
        }
    }
}

/// A pool of Postgres connections with Steward's queries.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects to Postgres, retrying with backoff until it succeeds or
    /// `shutdown` is cancelled. Each failed attempt is logged.
    ///
    /// # Errors
    /// Fails only when shutdown was requested first.
    pub async fn connect(
        config: &DatabaseConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, StoreError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match Self::connect_once(config).await {
                Ok(store) => return Ok(store),
                Err(error) => tracing::warn!(
                    error = %error_chain(&error),
                    retry_in = ?delay,
                    "Postgres is not reachable yet"
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(StoreError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Makes one connection attempt.
    ///
    /// # Errors
    /// Fails when the server is unreachable or refuses the connection.
    pub async fn connect_once(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect(&config.url)
            .await
            .map_err(StoreError::Connect)?;
        Ok(Self { pool })
    }

    /// Applies the embedded migrations.
    ///
    /// # Errors
    /// Fails when a migration fails or the database has a newer schema.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../../migrations")
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    /// Returns the connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `SELECT 1`, to tell whether Postgres responds.
    ///
    /// # Errors
    /// Fails when no connection can be made or the query fails.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("ping"))?;
        Ok(())
    }
}
