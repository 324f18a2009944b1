//! Guard decisions and the action history.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::{Store, StoreError};

/// Identifies the Kubernetes object an action targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetKey {
    /// Cluster name.
    pub cluster: String,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Kind label (`deployment`, `pod`, ...).
    pub kind: String,
    /// Object name.
    pub name: String,
}

impl TargetKey {
    /// Returns the text that keys the per-target advisory lock.
    fn lock_key(&self) -> String {
        length_prefixed(&[&self.cluster, &self.namespace, &self.kind, &self.name])
    }
}

/// Joins `parts` with each prefixed by its length, so that distinct lists
/// never produce the same text whatever characters the parts contain.
fn length_prefixed(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| format!("{}:{part}", part.len()))
        .collect::<Vec<_>>()
        .join("/")
}

/// The latest earlier action of a kind on a target.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentAction {
    /// Its id.
    pub action_id: Uuid,
    /// When the guard approved it.
    pub approved_at: DateTime<Utc>,
    /// Its execution status.
    pub status: String,
    /// Time since the approval, by the database's clock.
    pub age: std::time::Duration,
}

/// A guard decision to store.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Correlation id of the alert.
    pub correlation_id: Uuid,
    /// `approved` or `rejected`.
    pub verdict: &'static str,
    /// Every reason, in the order the checks ran.
    pub reasons: Vec<String>,
    /// The encoded decision event.
    pub event: Vec<u8>,
}

/// The history row of an approved action.
#[derive(Debug, Clone)]
pub struct ActionRecord {
    /// Registry action name.
    pub action: String,
    /// Action parameters, as a JSON object.
    pub parameters: serde_json::Value,
    /// The analyzer's confidence.
    pub confidence: f64,
}

/// A decision in progress: a transaction holding the target's advisory
/// lock, so that replicas deciding on the same target take turns.
pub struct DecisionTx {
    tx: Transaction<'static, Postgres>,
    target: TargetKey,
}

impl DecisionTx {
    /// Returns the target the transaction decides on.
    pub fn target(&self) -> &TargetKey {
        &self.target
    }

    /// Returns the transaction's connection, for queries of other modules.
    pub(crate) fn connection(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Returns the latest `action` on the target approved within `window`
    /// before now, by the database's clock, so that replicas with skewed
    /// clocks agree.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn latest_action_within(
        &mut self,
        action: &str,
        window: std::time::Duration,
    ) -> Result<Option<RecentAction>, StoreError> {
        let row: Option<(Uuid, DateTime<Utc>, String, f64)> = sqlx::query_as(
            "SELECT action_id, approved_at, status,
                    extract(epoch FROM now() - approved_at)::double precision
             FROM actions
             WHERE cluster = $1 AND namespace = $2 AND target_kind = $3 AND target_name = $4
               AND action = $5 AND approved_at >= now() - make_interval(secs => $6)
             ORDER BY approved_at DESC
             LIMIT 1",
        )
        .bind(&self.target.cluster)
        .bind(&self.target.namespace)
        .bind(&self.target.kind)
        .bind(&self.target.name)
        .bind(action)
        .bind(window.as_secs_f64())
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(StoreError::query("look up recent actions"))?;
        Ok(
            row.map(|(action_id, approved_at, status, age)| RecentAction {
                action_id,
                approved_at,
                status,
                age: std::time::Duration::from_secs_f64(age.max(0.0)),
            }),
        )
    }

    /// Returns a proposal of `action` on the target that waits for a
    /// person's approval, if there is one.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn pending_same_action(&mut self, action: &str) -> Result<Option<Uuid>, StoreError> {
        // decisions_pending holds only the waiting proposals, so this reads
        // a handful of rows whatever the size of the history.
        sqlx::query_scalar(
            "SELECT d.proposal_id
             FROM decisions d
             JOIN analyses an ON an.proposal_id = d.proposal_id
             WHERE d.verdict = 'pending'
               AND an.cluster = $1 AND an.namespace = $2 AND an.target_kind = $3
               AND an.target_name = $4 AND an.action = $5
             ORDER BY d.decided_at
             LIMIT 1",
        )
        .bind(&self.target.cluster)
        .bind(&self.target.namespace)
        .bind(&self.target.kind)
        .bind(&self.target.name)
        .bind(action)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(StoreError::query("look up pending proposals"))
    }

    /// Counts the actions approved in the target's cluster (or, with
    /// `namespace`, in that namespace) within `window`, escalations aside.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn approvals_within(
        &mut self,
        window: std::time::Duration,
        namespace: Option<&str>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM actions
             WHERE cluster = $1 AND ($2::text IS NULL OR namespace = $2)
               AND action <> 'notify_only'
               AND approved_at >= now() - make_interval(secs => $3)",
        )
        .bind(&self.target.cluster)
        .bind(namespace)
        .bind(window.as_secs_f64())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(StoreError::query("count recent approvals"))
    }

    /// Takes the lock of the target's cluster (or, with `namespace`, of
    /// that namespace) until the transaction ends, so that decisions on
    /// different targets in one scope count and insert approvals in turn and
    /// a rate limit holds under concurrent decisions. Callers must take the
    /// namespace lock before the cluster lock (the target's lock comes first,
    /// from `begin_decision`): in that order no two transactions can wait for
    /// each other in a cycle.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn lock_scope(&mut self, namespace: Option<&str>) -> Result<(), StoreError> {
        let key = match namespace {
            Some(namespace) => length_prefixed(&[&self.target.cluster, namespace]),
            None => length_prefixed(&[&self.target.cluster]),
        };
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
            .bind(format!("scope/{key}"))
            .execute(&mut *self.tx)
            .await
            .map_err(StoreError::query("lock rate limit scope"))?;
        Ok(())
    }

    /// Returns whether Alertmanager has reported the alert instance as
    /// resolved.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn alert_resolved(&mut self, correlation_id: Uuid) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM alert_instances WHERE correlation_id = $1 AND status = 'resolved')",
        )
        .bind(correlation_id)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(StoreError::query("look up alert resolution"))
    }

    /// Inserts the action history row of an approved proposal.
    pub(crate) async fn insert_action(
        &mut self,
        proposal_id: Uuid,
        action: &ActionRecord,
    ) -> Result<(), StoreError> {
        let correlation_id: Uuid =
            sqlx::query_scalar("SELECT correlation_id FROM decisions WHERE proposal_id = $1")
                .bind(proposal_id)
                .fetch_one(&mut *self.tx)
                .await
                .map_err(StoreError::query("load decision for action"))?;
        sqlx::query(
            "INSERT INTO actions
                 (action_id, correlation_id, cluster, namespace, target_kind, target_name,
                  action, parameters, confidence)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(proposal_id)
        .bind(correlation_id)
        .bind(&self.target.cluster)
        .bind(&self.target.namespace)
        .bind(&self.target.kind)
        .bind(&self.target.name)
        .bind(&action.action)
        .bind(&action.parameters)
        .bind(action.confidence)
        .execute(&mut *self.tx)
        .await
        .map_err(StoreError::query("insert action"))?;
        Ok(())
    }

    /// Commits the transaction and releases the target's lock.
    pub(crate) async fn finish(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(StoreError::query("commit"))
    }

    /// Rolls the transaction back and releases the target's lock.
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        self.tx
            .rollback()
            .await
            .map_err(StoreError::query("roll back"))
    }

    /// Stores the decision, and for an approval the action history row,
    /// then commits and releases the lock.
    ///
    /// Returns the stored decision event: `decision.event`, or the one a
    /// concurrent delivery of the same proposal stored first.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn commit(
        mut self,
        decision: &DecisionRecord,
        approved: Option<&ActionRecord>,
    ) -> Result<Vec<u8>, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO decisions (proposal_id, correlation_id, cluster, verdict, reasons, event)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (proposal_id) DO NOTHING",
        )
        .bind(decision.proposal_id)
        .bind(decision.correlation_id)
        .bind(&self.target.cluster)
        .bind(decision.verdict)
        .bind(&decision.reasons)
        .bind(&decision.event)
        .execute(&mut *self.tx)
        .await
        .map_err(StoreError::query("insert decision"))?
        .rows_affected();

        if inserted == 1
            && let Some(action) = approved
        {
            self.insert_action(decision.proposal_id, action).await?;
        }

        let event: Vec<u8> =
            sqlx::query_scalar("SELECT event FROM decisions WHERE proposal_id = $1")
                .bind(decision.proposal_id)
                .fetch_one(&mut *self.tx)
                .await
                .map_err(StoreError::query("load stored decision"))?;
        self.tx
            .commit()
            .await
            .map_err(StoreError::query("commit decision"))?;
        Ok(event)
    }
}

/// The next step for an approved action, as claiming it decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Execute it: this attempt owns the action until its claim expires.
    Run {
        /// Attempts so far, this one included; more than 1 means an
        /// earlier attempt was interrupted and may have had its effect.
        attempts: i32,
        /// The alert resolved after the approval; the action should not
        /// run any more.
        alert_resolved: bool,
    },
    /// Another attempt has an unexpired claim, so try again later.
    Busy,
    /// It already finished; republish this `executed` event.
    Finished {
        /// The stored event.
        event: Vec<u8>,
    },
    /// No history row exists for it.
    Missing,
}

/// The result of an execution, to store in the history.
#[derive(Debug, Clone)]
pub struct Finish {
    /// `dry_run` or `live`.
    pub mode: &'static str,
    /// `succeeded`, `failed` or `skipped`.
    pub status: &'static str,
    /// One line per change made or planned.
    pub changes: Vec<String>,
    /// The failure reason; empty on success.
    pub error: String,
    /// Evidence the action collected; null when none.
    pub details: serde_json::Value,
    /// Whether the action had its effect; `None` when not checked.
    pub effective: Option<bool>,
    /// What the effect check saw.
    pub verification: String,
    /// The encoded `executed` event.
    pub event: Vec<u8>,
}

/// A row of the action history, for operators.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActionRow {
    /// Action id.
    pub action_id: Uuid,
    /// Correlation id of the alert.
    pub correlation_id: Uuid,
    /// Cluster name.
    pub cluster: String,
    /// Target namespace.
    pub namespace: String,
    /// Target kind label.
    pub target_kind: String,
    /// Target name.
    pub target_name: String,
    /// Registry action name.
    pub action: String,
    /// Parameters as JSON.
    pub parameters: serde_json::Value,
    /// Execution status.
    pub status: String,
    /// `dry_run` or `live`, once executed.
    pub mode: Option<String>,
    /// Changes made or planned.
    pub changes: Vec<String>,
    /// Error of a failed execution.
    pub error: String,
    /// Execution attempts.
    pub attempts: i32,
    /// When the guard approved it.
    pub approved_at: DateTime<Utc>,
    /// When execution finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Opens a decision transaction holding the advisory lock of `target`.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn begin_decision(&self, target: TargetKey) -> Result<DecisionTx, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::query("begin decision"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(target.lock_key())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("lock target"))?;
        Ok(DecisionTx { tx, target })
    }

    /// Returns the stored decision event of a proposal, if it was decided.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn stored_decision(&self, proposal_id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT event FROM decisions WHERE proposal_id = $1")
            .bind(proposal_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("load stored decision"))
    }

    /// Claims an approved action for execution for `lease`, and counts the
    /// attempt. An action held by another attempt whose claim has not
    /// expired is [`Claim::Busy`].
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn claim_action(
        &self,
        action_id: Uuid,
        lease: std::time::Duration,
    ) -> Result<Claim, StoreError> {
        let claimed: Option<(i32, bool)> = sqlx::query_as(
            "UPDATE actions
             SET status = 'executing', attempts = attempts + 1, started_at = coalesce(started_at, now()),
                 claimed_until = now() + make_interval(secs => $2)
             WHERE action_id = $1
               AND (status = 'approved'
                    OR (status = 'executing' AND (claimed_until IS NULL OR claimed_until < now())))
             RETURNING attempts,
                       alert_resolved_at IS NOT NULL
                       OR EXISTS (SELECT 1 FROM alert_instances i
                                  WHERE i.correlation_id = actions.correlation_id AND i.status = 'resolved')",
        )
        .bind(action_id)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("claim action"))?;
        if let Some((attempts, alert_resolved)) = claimed {
            return Ok(Claim::Run {
                attempts,
                alert_resolved,
            });
        }

        let current: Option<(String, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT status, executed_event FROM actions WHERE action_id = $1")
                .bind(action_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query("load action state"))?;
        Ok(match current {
            Some((status, _)) if status == "executing" => Claim::Busy,
            Some((_, Some(event))) => Claim::Finished { event },
            // Only 'approved' and 'executing' rows lack an event, and both
            // are handled above.
            Some((_, None)) | None => Claim::Missing,
        })
    }

    /// Gives up this attempt's claim after a failure that may pass, so that
    /// the redelivery may run the action at once.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn release_claim(&self, action_id: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE actions SET claimed_until = NULL WHERE action_id = $1 AND status = 'executing'",
        )
        .bind(action_id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("release claim"))?;
        Ok(())
    }

    /// Extends this attempt's claim on an action by `lease` from now.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn extend_claim(
        &self,
        action_id: Uuid,
        lease: std::time::Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE actions SET claimed_until = now() + make_interval(secs => $2)
             WHERE action_id = $1 AND status = 'executing'",
        )
        .bind(action_id)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("extend claim"))?;
        Ok(())
    }

    /// Stores the result of an execution and returns the event to publish:
    /// `finish.event`, or the one stored by an attempt that finished first.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn finish_action(
        &self,
        action_id: Uuid,
        finish: &Finish,
    ) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "UPDATE actions
             SET status = $2, mode = $3, changes = $4, error = $5, executed_event = $6, details = $7,
                 effective = $8, verification = $9, finished_at = now(),
                 claimed_until = NULL
             WHERE action_id = $1 AND status IN ('approved', 'executing')",
        )
        .bind(action_id)
        .bind(finish.status)
        .bind(finish.mode)
        .bind(&finish.changes)
        .bind(&finish.error)
        .bind(&finish.event)
        .bind(&finish.details)
        .bind(finish.effective)
        .bind(&finish.verification)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("finish action"))?;

        let event: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT executed_event FROM actions WHERE action_id = $1")
                .bind(action_id)
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::query("load executed event"))?;
        Ok(event.unwrap_or_else(|| finish.event.clone()))
    }

    /// Returns the most recent rows of the action history, newest first.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn recent_actions(&self, limit: i64) -> Result<Vec<ActionRow>, StoreError> {
        sqlx::query_as(
            "SELECT action_id, correlation_id, cluster, namespace, target_kind, target_name, action,
                    parameters, status, mode, changes, error, attempts, approved_at, finished_at
             FROM actions ORDER BY approved_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("list actions"))
    }
}
