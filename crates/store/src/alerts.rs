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
    /// `rules` or `llm`.
    pub analyzer: &'static str,
    /// LLM endpoint, or empty.
    pub endpoint: String,
    /// LLM model, or empty.
    pub model: String,
    /// Why the rule analyzer decided in place of a configured LLM.
    pub fallback_reason: String,
    /// Prompt tokens the LLM reported.
    pub prompt_tokens: i32,
    /// Completion tokens the LLM reported.
    pub completion_tokens: i32,
    /// Time the analysis took, in milliseconds.
    pub latency_ms: i32,
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
                  prompt_tokens, completion_tokens, latency_ms, event)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
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
}
