//! History retention: old rows are deleted in batches, so that the tables
//! do not grow forever and no single delete holds locks for long.

use std::time::Duration;

use crate::{Store, StoreError};

/// Key of the advisory lock that lets one replica prune at a time.
const PRUNE_LOCK: i64 = 0x5354_4557_5052_554e;

/// Rows deleted by one prune, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Finished actions.
    pub actions: u64,
    /// Decisions.
    pub decisions: u64,
    /// Analyses.
    pub analyses: u64,
    /// Alert instances.
    pub alert_instances: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// Each statement deletes the rows older than `$1` seconds, at most `$2`
/// of them.
const STATEMENTS: [(&str, &str); 5] = [
    (
        "actions",
        "DELETE FROM actions WHERE action_id IN (
             SELECT action_id FROM actions
             WHERE approved_at < now() - make_interval(secs => $1)
               AND status IN ('succeeded', 'failed', 'skipped')
             LIMIT $2)",
    ),
    (
        "decisions",
        "DELETE FROM decisions WHERE proposal_id IN (
             SELECT d.proposal_id FROM decisions d
             WHERE d.decided_at < now() - make_interval(secs => $1) AND d.verdict <> 'pending'
               AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.action_id = d.proposal_id)
             LIMIT $2)",
    ),
    (
        "analyses",
        "DELETE FROM analyses WHERE proposal_id IN (
             SELECT proposal_id FROM analyses WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
    ),
    (
        "alert_instances",
        "DELETE FROM alert_instances WHERE (correlation_id, status) IN (
             SELECT correlation_id, status FROM alert_instances
             WHERE first_seen_at < now() - make_interval(secs => $1) AND processed_at IS NOT NULL
             LIMIT $2)",
    ),
    (
        "dead_letters",
        "DELETE FROM dead_letters WHERE id IN (
             SELECT id FROM dead_letters WHERE recorded_at < now() - make_interval(secs => $1) LIMIT $2)",
    ),
];

impl Store {
    /// Deletes history older than `retention` in batches of `batch` rows.
    /// Returns `None` when another replica is pruning right now.
    ///
    /// Actions still running, pending decisions and alert instances not yet
    /// handled are kept whatever their age.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn prune(
        &self,
        retention: Duration,
        batch: i64,
    ) -> Result<Option<Pruned>, StoreError> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::query("acquire a connection to prune"))?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut *connection)
            .await
            .map_err(StoreError::query("lock pruning"))?;
        if !locked {
            return Ok(None);
        }

        let mut pruned = Pruned::default();
        let mut result = Ok(());
        for (table, statement) in STATEMENTS {
            loop {
                let deleted = match sqlx::query(statement)
                    .bind(retention.as_secs_f64())
                    .bind(batch)
                    .execute(&mut *connection)
                    .await
                {
                    Ok(done) => done.rows_affected(),
                    Err(source) => {
                        result = Err(StoreError::Query {
                            operation: "prune history",
                            source,
                        });
                        break;
                    }
                };
                match table {
                    "actions" => pruned.actions += deleted,
                    "decisions" => pruned.decisions += deleted,
                    "analyses" => pruned.analyses += deleted,
                    "alert_instances" => pruned.alert_instances += deleted,
                    _ => pruned.dead_letters += deleted,
                }
                if deleted < batch.max(1) as u64 {
                    break;
                }
            }
            if result.is_err() {
                break;
            }
        }

        // The lock belongs to this session; release it before the
        // connection goes back to the pool.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PRUNE_LOCK)
            .execute(&mut *connection)
            .await;
        result.map(|()| Some(pruned))
    }
}
