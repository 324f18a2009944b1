//! Handles one alert message.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use steward_bus::{Bus, Handler, Outcome, Stage, event_id};
use steward_proto::v1::{
    AlertEvent, AlertStatus, AnalyzerKind, Proposal, RemediationEvent, Resolution, Target,
    remediation_event,
};
use steward_proto::{Message, Timestamp};
use steward_store::{AlertDelivery, AnalysisRecord, Store, StoreError};
use steward_telemetry::{Metrics, error_chain};
use tracing::Instrument;
use uuid::Uuid;

use crate::batch::{BatchKey, BatchWork, Batcher, workload_key};
use crate::prompt::HistoryLine;
use crate::{Analyzers, BatchConfig, target};

/// Actions of a target's history put into the prompt.
const HISTORY_LINES: i64 = 5;

/// Turns alerts into proposals and resolution events.
pub struct AlertHandler {
    inner: Arc<Inner>,
    batcher: Batcher,
}

struct Inner {
    bus: Bus,
    store: Store,
    analyzers: Analyzers,
    batch: BatchConfig,
    claim_lease: Duration,
    metrics: Arc<Metrics>,
}

impl AlertHandler {
    /// Creates the handler. `claim_lease` bounds how long one replica keeps
    /// other replicas off a workload it analyzes.
    pub fn new(
        bus: Bus,
        store: Store,
        analyzers: Analyzers,
        batch: BatchConfig,
        claim_lease: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let inner = Arc::new(Inner {
            bus,
            store,
            analyzers,
            batch: batch.clone(),
            claim_lease,
            metrics,
        });
        let worker = inner.clone();
        let work: BatchWork = Arc::new(move |key, alerts| {
            let worker = worker.clone();
            Box::pin(async move { worker.analyze_batch(key, alerts).await })
        });
        Self {
            inner,
            batcher: Batcher::new(batch.window, batch.max_alerts, work),
        }
    }

    async fn on_alert(&self, alert: AlertEvent, correlation_id: Uuid) -> Outcome {
        let inner = &self.inner;
        let status = match alert.status() {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
            AlertStatus::Unspecified => {
                return Outcome::Reject("alert status is unspecified".to_owned());
            }
        };

        let delivery = AlertDelivery {
            correlation_id,
            status,
            cluster: alert.cluster.clone(),
            fingerprint: alert.fingerprint.clone(),
            alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
            starts_at: to_chrono(alert.starts_at.as_ref()),
            labels: serde_json::json!(alert.labels),
            annotations: serde_json::json!(alert.annotations),
        };
        match inner.store.record_alert_delivery(&delivery).await {
            Ok(true) => {
                inner.metrics.duplicate_alerts.inc();
                tracing::debug!("alert instance already handled; skipping the repeated delivery");
                return Outcome::Done;
            }
            Ok(false) => {}
            Err(error) => return inner.store_failure(&error),
        }

        if status == "resolved" {
            return match inner.resolve(alert, correlation_id).await {
                Ok(()) => inner.processed(correlation_id, "resolved").await,
                Err(outcome) => outcome,
            };
        }
        self.on_firing(alert, correlation_id).await
    }

    async fn on_firing(&self, alert: AlertEvent, correlation_id: Uuid) -> Outcome {
        let inner = &self.inner;

        // A redelivered alert whose proposal was stored publishes it again
        // instead of being analyzed a second time.
        let proposal_id = proposal_id(correlation_id);
        match inner.store.stored_proposal(proposal_id).await {
            Ok(Some(stored)) => {
                if let Err(outcome) = inner.publish_stored(&alert.cluster, stored).await {
                    return outcome;
                }
                return inner.processed(correlation_id, "firing").await;
            }
            Ok(None) => {}
            Err(error) => return inner.store_failure(&error),
        }

        let key = BatchKey {
            cluster: alert.cluster.clone(),
            workload: workload_key(&alert),
        };
        match inner.covering_analysis(&key).await {
            Ok(Some(covering)) => return inner.cover(&[correlation_id], covering).await,
            Ok(None) => {}
            Err(error) => return inner.store_failure(&error),
        }
        self.batcher.submit(key, alert).await
    }
}

impl Inner {
    /// Returns the analysis that already answers alerts about the workload.
    async fn covering_analysis(&self, key: &BatchKey) -> Result<Option<Uuid>, StoreError> {
        self.store
            .active_analysis(&key.cluster, &key.workload, self.batch.coalesce_window)
            .await
    }

    /// Records firing alerts as answered by an existing proposal.
    async fn cover(&self, correlation_ids: &[Uuid], proposal_id: Uuid) -> Outcome {
        for correlation_id in correlation_ids {
            if let Err(error) = self
                .store
                .mark_alert_covered(*correlation_id, proposal_id)
                .await
            {
                return self.store_failure(&error);
            }
            self.metrics.coalesced_alerts.inc();
        }
        tracing::debug!(covered = correlation_ids.len(), %proposal_id, "alerts covered by an earlier analysis of their workload");
        Outcome::Done
    }

    /// Analyzes one batch while holding the workload's claim, so that two
    /// replicas never analyze one workload at once.
    async fn analyze_batch(&self, key: BatchKey, alerts: Vec<AlertEvent>) -> Outcome {
        let holder = Uuid::new_v4();
        match self
            .store
            .claim_workload(&key.cluster, &key.workload, holder, self.claim_lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Outcome::Retry(format!(
                    "another replica is analyzing workload {}; its analysis will cover these alerts",
                    key.workload
                ));
            }
            Err(error) => return self.store_failure(&error),
        }

        let outcome = self.analyze_claimed(&key, alerts).await;

        if let Err(error) = self
            .store
            .release_workload(&key.cluster, &key.workload, holder)
            .await
        {
            // The claim expires on its own.
            tracing::warn!(error = %error_chain(&error), workload = %key.workload, "failed to release a workload claim");
        }
        outcome
    }

    async fn analyze_claimed(&self, key: &BatchKey, alerts: Vec<AlertEvent>) -> Outcome {
        let correlation_ids: Vec<Uuid> = alerts
            .iter()
            .filter_map(|alert| Uuid::parse_str(&alert.correlation_id).ok())
            .collect();
        // Another replica may have finished an analysis of the workload
        // between this batch's check and its claim.
        match self.covering_analysis(key).await {
            Ok(Some(covering)) => return self.cover(&correlation_ids, covering).await,
            Ok(None) => {}
            Err(error) => return self.store_failure(&error),
        }

        let lead = &alerts[0];
        let lead_id = correlation_ids[0];
        let proposal_id = proposal_id(lead_id);
        let candidates = candidates_of(&alerts);
        let history = match history_lines(&self.store, &key.cluster, &candidates).await {
            Ok(history) => history,
            Err(error) => return self.store_failure(&error),
        };

        let (recommendation, analysis) = self
            .analyzers
            .recommend(&alerts, &candidates, &history)
            .await;
        tracing::info!(
            action = %recommendation.action,
            target = %recommendation.target,
            confidence = recommendation.confidence,
            analyzer = analysis.analyzer().as_str_name(),
            alerts = alerts.len(),
            "recommendation made"
        );

        let event_id = event_id(&proposal_id, Stage::Proposed).to_string();
        let proposal = Proposal {
            proposal_id: proposal_id.to_string(),
            target: Some(recommendation.target.clone()),
            action: recommendation.action.clone(),
            parameters: recommendation.parameters.clone(),
            confidence: recommendation.confidence,
            reasoning: recommendation.reasoning.clone(),
            analysis: Some(analysis.clone()),
            alert: Some(lead.clone()),
            covered_correlation_ids: correlation_ids[1..]
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        let event = RemediationEvent {
            event_id,
            correlation_id: lead_id.to_string(),
            cluster: key.cluster.clone(),
            occurred_at: Some(steward_proto::now()),
            body: Some(remediation_event::Body::Proposed(proposal)),
        };
        let target = &recommendation.target;
        let record = AnalysisRecord {
            proposal_id,
            correlation_id: lead_id,
            cluster: key.cluster.clone(),
            alertname: lead.labels.get("alertname").cloned().unwrap_or_default(),
            target_kind: target.kind().label().to_owned(),
            namespace: target.namespace.clone(),
            target_name: target.name.clone(),
            action: recommendation.action.clone(),
            parameters: steward_actions::parameters_to_json(&recommendation.parameters),
            confidence: recommendation.confidence,
            reasoning: recommendation.reasoning.clone(),
            analyzer: match analysis.analyzer() {
                AnalyzerKind::Llm => "llm",
                AnalyzerKind::Escalation => "escalation",
                _ => "rules",
            },
            endpoint: analysis.endpoint.clone(),
            model: analysis.model.clone(),
            fallback_reason: analysis.fallback_reason.clone(),
            prompt_tokens: i32::try_from(analysis.prompt_tokens).unwrap_or(i32::MAX),
            completion_tokens: i32::try_from(analysis.completion_tokens).unwrap_or(i32::MAX),
            latency_ms: i32::try_from(analysis.latency_ms).unwrap_or(i32::MAX),
            workload_key: key.workload.clone(),
            covered: i32::try_from(correlation_ids.len() - 1).unwrap_or(i32::MAX),
            event: event.encode_to_vec(),
        };
        let stored = match self.store.insert_analysis(&record).await {
            Ok(stored) => stored,
            Err(error) => return self.store_failure(&error),
        };

        if let Err(outcome) = self.publish_stored(&key.cluster, stored).await {
            return outcome;
        }
        match self.processed(lead_id, "firing").await {
            Outcome::Done => self.cover(&correlation_ids[1..], proposal_id).await,
            failure => failure,
        }
    }

    /// Records that the alert resolved and publishes a `resolved` event.
    async fn resolve(&self, alert: AlertEvent, correlation_id: Uuid) -> Result<(), Outcome> {
        let updated = self
            .store
            .mark_actions_resolved(correlation_id)
            .await
            .map_err(|e| self.store_failure(&e))?;
        tracing::info!(actions = updated, "alert resolved");

        let event_id = event_id(&correlation_id, Stage::Resolved).to_string();
        let cluster = alert.cluster.clone();
        let event = RemediationEvent {
            event_id: event_id.clone(),
            correlation_id: correlation_id.to_string(),
            cluster: cluster.clone(),
            occurred_at: alert.ends_at.or_else(|| Some(steward_proto::now())),
            body: Some(remediation_event::Body::Resolved(Resolution {
                alert: Some(alert),
            })),
        };
        self.bus
            .publish_event(
                Stage::Resolved,
                &cluster,
                &event_id,
                Bytes::from(event.encode_to_vec()),
            )
            .await
            .map(|_| ())
            .map_err(|error| Outcome::Retry(error_chain(&error)))
    }

    /// Publishes a stored `proposed` event with its own event id.
    async fn publish_stored(&self, cluster: &str, stored: Vec<u8>) -> Result<(), Outcome> {
        let event_id = RemediationEvent::decode(stored.as_slice())
            .map(|event| event.event_id)
            .map_err(|error| {
                Outcome::Reject(format!("stored proposal does not decode: {error}"))
            })?;
        self.bus
            .publish_event(Stage::Proposed, cluster, &event_id, Bytes::from(stored))
            .await
            .map(|_| ())
            .map_err(|error| Outcome::Retry(error_chain(&error)))
    }

    async fn processed(&self, correlation_id: Uuid, status: &str) -> Outcome {
        match self
            .store
            .mark_alert_processed(correlation_id, status)
            .await
        {
            Ok(()) => Outcome::Done,
            Err(error) => self.store_failure(&error),
        }
    }

    fn store_failure(&self, error: &StoreError) -> Outcome {
        self.metrics.database_errors.inc();
        error.outcome()
    }
}

impl Handler for AlertHandler {
    async fn handle(
        &self,
        message: &async_nats::jetstream::Message,
        _delivery: steward_bus::Delivery,
    ) -> Outcome {
        let alert = match AlertEvent::decode(message.payload.as_ref()) {
            Ok(alert) => alert,
            Err(error) => {
                return Outcome::Reject(format!("payload is not a steward.v1.AlertEvent: {error}"));
            }
        };
        let Ok(correlation_id) = Uuid::parse_str(&alert.correlation_id) else {
            return Outcome::Reject(format!(
                "alert has an invalid correlation id {:?}",
                alert.correlation_id
            ));
        };
        let span = tracing::info_span!(
            "alert",
            %correlation_id,
            cluster = %alert.cluster,
            alertname = alert.labels.get("alertname").map(String::as_str).unwrap_or(""),
            status = alert.status().as_str_name(),
        );
        self.on_alert(alert, correlation_id).instrument(span).await
    }
}

/// Returns the id of the proposal a lead alert gets.
fn proposal_id(correlation_id: Uuid) -> Uuid {
    Uuid::new_v5(&correlation_id, b"proposal")
}

/// Returns the objects the alerts name, without repeats, most specific
/// first per alert.
/// Returns the recent actions on the candidates, newest first, as
/// prompt lines.
///
/// # Errors
/// Fails when the database is unreachable.
pub async fn history_lines(
    store: &Store,
    cluster: &str,
    candidates: &[Target],
) -> Result<Vec<HistoryLine>, StoreError> {
    let Some(namespace) = candidates
        .iter()
        .map(|t| t.namespace.as_str())
        .find(|ns| !ns.is_empty())
    else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = candidates.iter().map(|t| t.name.clone()).collect();
    let actions = store
        .recent_target_actions(cluster, namespace, &names, HISTORY_LINES)
        .await?;
    Ok(actions
        .into_iter()
        .map(|action| {
            HistoryLine(format!(
                "{} {} {}/{}/{}: {} ({}){}",
                action.approved_at.format("%Y-%m-%dT%H:%M:%SZ"),
                action.action,
                action.target_kind,
                action.namespace,
                action.target_name,
                action.status,
                action.mode.as_deref().unwrap_or("not executed"),
                if action.alert_resolved {
                    "; the alert resolved afterwards"
                } else {
                    "; the alert did not resolve"
                }
            ))
        })
        .collect())
}

/// Returns the objects the alerts name, without repeats, most specific
/// first.
pub fn candidates_of(alerts: &[AlertEvent]) -> Vec<Target> {
    let mut seen = std::collections::HashSet::new();
    alerts
        .iter()
        .flat_map(|alert| target::candidates(&alert.labels))
        .filter(|target| seen.insert(target.to_string()))
        .collect()
}

fn to_chrono(timestamp: Option<&Timestamp>) -> DateTime<Utc> {
    timestamp
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or_else(Utc::now)
}
