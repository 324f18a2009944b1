//! Durable alert deduplication and the analysis record.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Store, StoreError};

/// One delivery of an alert instance to analyze.
#[derive(Debug, Clone)]
pub struct AlertDelivery {
    /// Correlation id of the instance.
    pub correlation_id: Uuid,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// Cluster name.
    pub cluster: String,
    /// Alertmanager fingerprint.
    pub fingerprint: String,
    /// The `alertname` label.
    pub alertname: String,
    /// When the alert started firing.
    pub starts_at: DateTime<Utc>,
    /// Every label, as a JSON object.
    pub labels: serde_json::Value,
    /// Every annotation, as a JSON object.
    pub annotations: serde_json::Value,
}

/// A recommendation and how it was produced.
#[derive(Debug, Clone)]
pub struct AnalysisRecord {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Correlation id of the alert.
    pub correlation_id: Uuid,
    /// Cluster name.
    pub cluster: String,
    /// The `alertname` label.
    pub alertname: String,
    /// Target kind label (`deployment`, `pod`, ...).
    pub target_kind: String,
    /// Target namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Target name.
    pub target_name: String,
    /// Registry action name.
    pub action: String,
    /// Action parameters, as a JSON object.
    pub parameters: serde_json::Value,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// The analyzer's reasoning.
    pub reasoning: String,
    /// `rules`, `llm` or `escalation`.
    pub analyzer: &'static str,
    /// LLM endpoint, or empty.
    pub endpoint: String,
    /// LLM model, or empty.
    pub model: String,
    /// Why no LLM answer was used although endpoints are configured.
    pub fallback_reason: String,
    /// Prompt tokens the LLM reported.
    pub prompt_tokens: i32,
    /// Completion tokens the LLM reported.
    pub completion_tokens: i32,
    /// Time the analysis took, in milliseconds.
    pub latency_ms: i32,
    /// Namespace and owning workload of the analyzed alerts.
    pub workload_key: String,
    /// Other alerts this analysis answers.
    pub covered: i32,
    /// The encoded `proposed` event.
    pub event: Vec<u8>,
}

impl Store {
    /// Records a delivery of an alert instance and returns whether an
    /// earlier delivery was already fully handled.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn record_alert_delivery(&self, alert: &AlertDelivery) -> Result<bool, StoreError> {
        let processed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO alert_instances
                 (correlation_id, status, cluster, fingerprint, alertname, starts_at, labels, annotations)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (correlation_id, status)
             DO UPDATE SET deliveries = alert_instances.deliveries + 1
             RETURNING processed_at",
        )
        .bind(alert.correlation_id)
        .bind(alert.status)
        .bind(&alert.cluster)
        .bind(&alert.fingerprint)
        .bind(&alert.alertname)
        .bind(alert.starts_at)
        .bind(&alert.labels)
        .bind(&alert.annotations)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::query("record alert delivery"))?;
        Ok(processed.is_some())
    }

    /// Marks an alert instance as handled, after its event was published.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn mark_alert_processed(
        &self,
        correlation_id: Uuid,
        status: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_instances SET processed_at = now()
             WHERE correlation_id = $1 AND status = $2 AND processed_at IS NULL",
        )
        .bind(correlation_id)
        .bind(status)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("mark alert processed"))?;
        Ok(())
    }

    /// Records on the actions taken for an alert that the alert resolved.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn mark_actions_resolved(&self, correlation_id: Uuid) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE actions SET alert_resolved_at = now()
             WHERE correlation_id = $1 AND alert_resolved_at IS NULL",
        )
        .bind(correlation_id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("mark actions resolved"))?;
        Ok(result.rows_affected())
    }

    /// Returns the stored `proposed` event for an alert, if it was analyzed
    /// before.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn stored_proposal(&self, proposal_id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT event FROM analyses WHERE proposal_id = $1")
            .bind(proposal_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("load stored proposal"))
    }

    /// Stores an analysis and returns the event to publish: the new one, or
    /// the one stored by a concurrent or earlier delivery, so that every
    /// replica publishes the same bytes.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn insert_analysis(&self, record: &AnalysisRecord) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO analyses
                 (proposal_id, correlation_id, cluster, alertname, target_kind, namespace, target_name,
                  action, parameters, confidence, reasoning, analyzer, endpoint, model, fallback_reason,
                  prompt_tokens, completion_tokens, latency_ms, event, workload_key, covered)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
             ON CONFLICT (proposal_id) DO NOTHING",
        )
        .bind(record.proposal_id)
        .bind(record.correlation_id)
        .bind(&record.cluster)
        .bind(&record.alertname)
        .bind(&record.target_kind)
        .bind(&record.namespace)
        .bind(&record.target_name)
        .bind(&record.action)
        .bind(&record.parameters)
        .bind(record.confidence)
        .bind(&record.reasoning)
        .bind(record.analyzer)
        .bind(&record.endpoint)
        .bind(&record.model)
        .bind(&record.fallback_reason)
        .bind(record.prompt_tokens)
        .bind(record.completion_tokens)
        .bind(record.latency_ms)
        .bind(&record.event)
        .bind(&record.workload_key)
        .bind(record.covered)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("insert analysis"))?;

        self.stored_proposal(record.proposal_id)
            .await?
            .ok_or(StoreError::Query {
                operation: "load inserted analysis",
                source: sqlx::Error::RowNotFound,
            })
    }

    /// Returns the latest analysis of the workload within `window` that
    /// still answers new alerts: not yet decided, or approved with an
    /// action that has not failed or been skipped.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn active_analysis(
        &self,
        cluster: &str,
        workload_key: &str,
        window: std::time::Duration,
    ) -> Result<Option<Uuid>, StoreError> {
        sqlx::query_scalar(
            "SELECT a.proposal_id
             FROM analyses a
             LEFT JOIN decisions d ON d.proposal_id = a.proposal_id
             LEFT JOIN actions x ON x.action_id = a.proposal_id
             WHERE a.cluster = $1 AND a.workload_key = $2
               AND a.created_at >= now() - make_interval(secs => $3)
               AND (d.proposal_id IS NULL
                    OR (d.verdict = 'approved' AND coalesce(x.status, 'approved') NOT IN ('failed', 'skipped')))
             ORDER BY a.created_at DESC
             LIMIT 1",
        )
        .bind(cluster)
        .bind(workload_key)
        .bind(window.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("look up active analysis"))
    }

    /// Records that a firing alert is answered by another alert's proposal
    /// and needs no handling of its own.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn mark_alert_covered(
        &self,
        correlation_id: Uuid,
        proposal_id: Uuid,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_instances SET covered_by = $2, processed_at = coalesce(processed_at, now())
             WHERE correlation_id = $1 AND status = 'firing'",
        )
        .bind(correlation_id)
        .bind(proposal_id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("mark alert covered"))?;
        Ok(())
    }

    /// Claims a workload for analysis for `lease` on behalf of `holder`;
    /// returns false when another analysis holds an unexpired claim.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn claim_workload(
        &self,
        cluster: &str,
        workload_key: &str,
        holder: Uuid,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let claimed: Option<i32> = sqlx::query_scalar(
            "INSERT INTO analysis_claims (cluster, workload_key, holder, claimed_until)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (cluster, workload_key)
             DO UPDATE SET holder = EXCLUDED.holder, claimed_until = EXCLUDED.claimed_until
             WHERE analysis_claims.claimed_until < now()
             RETURNING 1",
        )
        .bind(cluster)
        .bind(workload_key)
        .bind(holder)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query("claim workload"))?;
        Ok(claimed.is_some())
    }

    /// Releases `holder`'s claim on a workload; a claim that expired and
    /// was taken by another analysis stays.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn release_workload(
        &self,
        cluster: &str,
        workload_key: &str,
        holder: Uuid,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM analysis_claims WHERE cluster = $1 AND workload_key = $2 AND holder = $3",
        )
        .bind(cluster)
        .bind(workload_key)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("release workload"))?;
        Ok(())
    }

    /// Returns the latest actions on any of the named objects of one
    /// namespace, newest first, for the prompt.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn recent_target_actions(
        &self,
        cluster: &str,
        namespace: &str,
        names: &[String],
        limit: i64,
    ) -> Result<Vec<RecentTargetAction>, StoreError> {
        sqlx::query_as(
            "SELECT approved_at, action, target_kind, namespace, target_name, status, mode,
                    alert_resolved_at IS NOT NULL AS alert_resolved
             FROM actions
             WHERE cluster = $1 AND namespace = $2 AND target_name = ANY($3)
             ORDER BY approved_at DESC
             LIMIT $4",
        )
        .bind(cluster)
        .bind(namespace)
        .bind(names)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("load target history"))
    }
}

/// An earlier action on an object, for the prompt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentTargetAction {
    /// When the guard approved it.
    pub approved_at: DateTime<Utc>,
    /// Registry action name.
    pub action: String,
    /// Target kind label.
    pub target_kind: String,
    /// Target namespace.
    pub namespace: String,
    /// Target name.
    pub target_name: String,
    /// Execution status.
    pub status: String,
    /// `dry_run` or `live`, once executed.
    pub mode: Option<String>,
    /// Whether its alert resolved afterwards.
    pub alert_resolved: bool,
}
