//! Handles one alert message.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use steward_bus::{Bus, Handler, Outcome, Stage, event_id};
use steward_proto::v1::{
    AlertEvent, AlertStatus, Proposal, RemediationEvent, Resolution, remediation_event,
};
use steward_proto::{Message, Timestamp};
use steward_store::{AlertDelivery, AnalysisRecord, Store, StoreError};
use steward_telemetry::{Metrics, error_chain};
use tracing::Instrument;
use uuid::Uuid;

use crate::Analyzers;

/// Turns alerts into proposals and resolution events.
pub struct AlertHandler {
    bus: Bus,
    store: Store,
    analyzers: Analyzers,
    metrics: Arc<Metrics>,
}

impl AlertHandler {
    /// Creates the handler.
    pub fn new(bus: Bus, store: Store, analyzers: Analyzers, metrics: Arc<Metrics>) -> Self {
        Self {
            bus,
            store,
            analyzers,
            metrics,
        }
    }

    async fn on_alert(&self, alert: AlertEvent, correlation_id: Uuid) -> Outcome {
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
        match self.store.record_alert_delivery(&delivery).await {
            Ok(true) => {
                self.metrics.duplicate_alerts.inc();
                tracing::debug!("alert instance already handled; skipping the repeated delivery");
                return Outcome::Done;
            }
            Ok(false) => {}
            Err(error) => return self.store_failure(&error),
        }

        let published = if status == "firing" {
            self.propose(alert, correlation_id).await
        } else {
            self.resolve(alert, correlation_id).await
        };
        if let Err(outcome) = published {
            return outcome;
        }

        match self
            .store
            .mark_alert_processed(correlation_id, status)
            .await
        {
            Ok(()) => Outcome::Done,
            Err(error) => self.store_failure(&error),
        }
    }

    /// Analyzes a firing alert, stores the analysis and publishes the
    /// proposal. A redelivered alert republishes the stored proposal
    /// instead of asking the analyzer again.
    async fn propose(&self, alert: AlertEvent, correlation_id: Uuid) -> Result<(), Outcome> {
        let proposal_id = Uuid::new_v5(&correlation_id, b"proposal");
        let event_id = event_id(&proposal_id, Stage::Proposed).to_string();
        let cluster = alert.cluster.clone();

        let stored = self
            .store
            .stored_proposal(proposal_id)
            .await
            .map_err(|e| self.store_failure(&e))?;
        let payload = match stored {
            Some(payload) => payload,
            None => {
                let (recommendation, analysis) = self.analyzers.recommend(&alert).await;
                tracing::info!(
                    action = %recommendation.action,
                    target = %recommendation.target,
                    confidence = recommendation.confidence,
                    analyzer = analysis.analyzer().as_str_name(),
                    "recommendation made"
                );
                let proposal = Proposal {
                    proposal_id: proposal_id.to_string(),
                    target: Some(recommendation.target.clone()),
                    action: recommendation.action.clone(),
                    parameters: recommendation.parameters.clone(),
                    confidence: recommendation.confidence,
                    reasoning: recommendation.reasoning.clone(),
                    analysis: Some(analysis.clone()),
                    alert: Some(alert.clone()),
                };
                let event = RemediationEvent {
                    event_id: event_id.clone(),
                    correlation_id: correlation_id.to_string(),
                    cluster: cluster.clone(),
                    occurred_at: Some(steward_proto::now()),
                    body: Some(remediation_event::Body::Proposed(proposal)),
                };
                let target = &recommendation.target;
                let record = AnalysisRecord {
                    proposal_id,
                    correlation_id,
                    cluster: cluster.clone(),
                    alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
                    target_kind: target.kind().label().to_owned(),
                    namespace: target.namespace.clone(),
                    target_name: target.name.clone(),
                    action: recommendation.action.clone(),
                    parameters: steward_actions::parameters_to_json(&recommendation.parameters),
                    confidence: recommendation.confidence,
                    reasoning: recommendation.reasoning.clone(),
                    analyzer: if analysis.analyzer() == steward_proto::v1::AnalyzerKind::Llm {
                        "llm"
                    } else {
                        "rules"
                    },
                    endpoint: analysis.endpoint.clone(),
                    model: analysis.model.clone(),
                    fallback_reason: analysis.fallback_reason.clone(),
                    prompt_tokens: i32::try_from(analysis.prompt_tokens).unwrap_or(i32::MAX),
                    completion_tokens: i32::try_from(analysis.completion_tokens)
                        .unwrap_or(i32::MAX),
                    latency_ms: i32::try_from(analysis.latency_ms).unwrap_or(i32::MAX),
                    event: event.encode_to_vec(),
                };
                self.store
                    .insert_analysis(&record)
                    .await
                    .map_err(|e| self.store_failure(&e))?
            }
        };

        self.publish(Stage::Proposed, &cluster, &event_id, payload)
            .await
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
        self.publish(Stage::Resolved, &cluster, &event_id, event.encode_to_vec())
            .await
    }

    async fn publish(
        &self,
        stage: Stage,
        cluster: &str,
        event_id: &str,
        payload: Vec<u8>,
    ) -> Result<(), Outcome> {
        self.bus
            .publish_event(stage, cluster, event_id, Bytes::from(payload))
            .await
            .map(|_| ())
            .map_err(|error| Outcome::Retry(error_chain(&error)))
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

fn to_chrono(timestamp: Option<&Timestamp>) -> DateTime<Utc> {
    timestamp
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or_else(Utc::now)
}
