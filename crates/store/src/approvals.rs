//! Pending proposals: the ones that wait for a person's approval.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{ActionRecord, DecisionTx, Store, StoreError, TargetKey};

/// A proposal waiting for a person.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingDecision {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Correlation id of the alert.
    pub correlation_id: Uuid,
    /// Cluster name.
    pub cluster: String,
    /// When the guard put it on hold.
    pub decided_at: DateTime<Utc>,
    /// The encoded `pending` event.
    pub event: Vec<u8>,
}

/// How settling a pending proposal went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// This call settled it; publish `event` and then call
    /// [`Store::mark_published`].
    Now,
    /// It was settled before with this verdict and event.
    Before {
        /// `approved` or `rejected`.
        verdict: String,
        /// The stored event.
        event: Vec<u8>,
        /// The person who settled it, or `timeout`.
        by: String,
    },
    /// No such proposal was ever put on hold.
    Unknown,
}

/// Whether a decision was held for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// The guard decided it without holding it.
    Direct,
    /// It still waits.
    Pending,
    /// It was held and then settled by this person, or by `timeout`.
    SettledBy(String),
}

/// The new state of a pending proposal.
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    /// `approved` or `rejected`.
    pub verdict: &'static str,
    /// Every reason, the person's included.
    pub reasons: Vec<String>,
    /// Who decided: a person's name, or `timeout`.
    pub by: &'a str,
    /// The encoded decision event.
    pub event: Vec<u8>,
    /// The target, for the action history and the per-target lock.
    pub target: TargetKey,
    /// The action history row of an approval.
    pub action: Option<ActionRecord>,
}

impl Store {
    /// Returns a pending proposal, if it is still pending.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn pending_decision(
        &self,
        proposal_id: Uuid,
    ) -> Result<Option<PendingDecision>, StoreError> {
        sqlx::query_as(
            "SELECT proposal_id, correlation_id, cluster, decided_at, event
             FROM decisions WHERE proposal_id = $1 AND verdict = 'pending'",
        )
        .bind(proposal_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("load pending decision"))
    }

    /// Returns every proposal still pending, oldest first.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn pending_decisions(&self) -> Result<Vec<PendingDecision>, StoreError> {
        sqlx::query_as(
            "SELECT proposal_id, correlation_id, cluster, decided_at, event
             FROM decisions WHERE verdict = 'pending' ORDER BY decided_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("list pending decisions"))
    }

    /// Returns the pending proposals put on hold more than `timeout` ago.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn expired_pending(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Vec<PendingDecision>, StoreError> {
        sqlx::query_as(
            "SELECT proposal_id, correlation_id, cluster, decided_at, event
             FROM decisions
             WHERE verdict = 'pending' AND decided_at < now() - make_interval(secs => $1)
             ORDER BY decided_at",
        )
        .bind(timeout.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("list expired pending decisions"))
    }

    /// Settles a pending proposal under its target's lock; only one caller
    /// (of several replicas, or a person racing the timeout) wins.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn settle_pending(
        &self,
        proposal_id: Uuid,
        settlement: &Settlement<'_>,
    ) -> Result<Settled, StoreError> {
        self.begin_decision(settlement.target.clone())
            .await?
            .settle(proposal_id, settlement)
            .await
    }

    /// Returns whether the proposal was held for a person, and who settled
    /// it; `None` when there is no such decision.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn holding(&self, proposal_id: Uuid) -> Result<Option<Holding>, StoreError> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT verdict, resolved_by FROM decisions WHERE proposal_id = $1")
                .bind(proposal_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query("look up whether a decision was held"))?;
        Ok(row.map(
            |(verdict, resolved_by)| match (verdict.as_str(), resolved_by) {
                ("pending", _) => Holding::Pending,
                (_, Some(by)) => Holding::SettledBy(by),
                (_, None) => Holding::Direct,
            },
        ))
    }

    /// Records that a settled proposal's event was published.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn mark_published(&self, proposal_id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE decisions SET unpublished = false WHERE proposal_id = $1")
            .bind(proposal_id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("mark decision published"))?;
        Ok(())
    }

    /// Returns settled proposals whose event is not published yet, with
    /// their cluster.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn unpublished_decisions(&self) -> Result<Vec<(Uuid, String, Vec<u8>)>, StoreError> {
        sqlx::query_as("SELECT proposal_id, cluster, event FROM decisions WHERE unpublished")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("list unpublished decisions"))
    }
}

impl DecisionTx {
    /// Returns whether the proposal still waits for a person. Under the
    /// target's lock the result stays true until this transaction ends,
    /// because every settlement takes the same lock.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn is_pending(&mut self, proposal_id: Uuid) -> Result<bool, StoreError> {
        let pending: Option<bool> =
            sqlx::query_scalar("SELECT verdict = 'pending' FROM decisions WHERE proposal_id = $1")
                .bind(proposal_id)
                .fetch_optional(self.connection())
                .await
                .map_err(StoreError::query("look up a pending decision"))?;
        Ok(pending == Some(true))
    }

    /// Settles a pending proposal in this transaction, which must hold the
    /// lock of the settlement's target, then commits.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn settle(
        mut self,
        proposal_id: Uuid,
        settlement: &Settlement<'_>,
    ) -> Result<Settled, StoreError> {
        let updated = sqlx::query(
            "UPDATE decisions
             SET verdict = $2, reasons = $3, event = $4, resolved_by = $5, resolved_at = now(), unpublished = true
             WHERE proposal_id = $1 AND verdict = 'pending'",
        )
        .bind(proposal_id)
        .bind(settlement.verdict)
        .bind(&settlement.reasons)
        .bind(&settlement.event)
        .bind(settlement.by)
        .execute(self.connection())
        .await
        .map_err(StoreError::query("settle pending decision"))?
        .rows_affected();

        if updated == 0 {
            let current: Option<(String, Vec<u8>, Option<String>)> = sqlx::query_as(
                "SELECT verdict, event, resolved_by FROM decisions WHERE proposal_id = $1",
            )
            .bind(proposal_id)
            .fetch_optional(self.connection())
            .await
            .map_err(StoreError::query("load settled decision"))?;
            self.rollback().await?;
            return Ok(match current {
                Some((verdict, event, by)) => Settled::Before {
                    verdict,
                    event,
                    by: by.unwrap_or_default(),
                },
                None => Settled::Unknown,
            });
        }
        if let Some(action) = &settlement.action {
            self.insert_action(proposal_id, action).await?;
        }
        self.finish().await?;
        Ok(Settled::Now)
    }
}
