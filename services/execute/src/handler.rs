//! Handles one approved decision.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use steward_bus::{Bus, Handler, Outcome, Stage, event_id};
use steward_proto::Message;
use steward_proto::v1::{
    Decision, Execution, ExecutionMode, ExecutionOutcome, RemediationEvent, remediation_event,
};
use steward_store::{Claim, Finish, Store, StoreError};
use steward_telemetry::{ExecutionLabels, Metrics, error_chain};
use tracing::Instrument;
use uuid::Uuid;

use crate::actions::verify::Verification;
use crate::actions::{Executor, Report, Request};
use crate::config::Mode;

/// Executes approved actions and publishes what happened.
pub struct DecisionHandler {
    bus: Bus,
    store: Store,
    executor: Executor,
    /// The only cluster whose approvals this replica may act on, if set.
    cluster: Option<String>,
    lease: Duration,
    metrics: Arc<Metrics>,
}

impl DecisionHandler {
    /// Creates the handler. With `cluster` set, approvals for any other
    /// cluster are rejected as dead letters instead of acted on.
    pub fn new(
        bus: Bus,
        store: Store,
        executor: Executor,
        cluster: Option<String>,
        lease: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            bus,
            store,
            executor,
            cluster,
            lease,
            metrics,
        }
    }

    async fn on_decision(
        &self,
        decision: Decision,
        action_id: Uuid,
        correlation_id: Uuid,
        cluster: String,
        delivery: steward_bus::Delivery,
    ) -> Outcome {
        if let Some(own) = &self.cluster
            && *own != cluster
        {
            return Outcome::Reject(format!(
                "approval for cluster {cluster:?} reached the executor of cluster {own:?}; the two names share a subject token, so rename one"
            ));
        }

        let (attempts, alert_resolved) = match self.store.claim_action(action_id, self.lease).await
        {
            Ok(Claim::Run {
                attempts,
                alert_resolved,
            }) => (attempts, alert_resolved),
            // An earlier delivery finished it: publish the stored result
            // again and never act twice.
            Ok(Claim::Finished { event }) => return self.publish(&cluster, event).await,
            Ok(Claim::Busy) => {
                return Outcome::Retry(format!(
                    "another attempt is running action {action_id}; waiting for it to finish or for its claim to expire"
                ));
            }
            Ok(Claim::Missing) => {
                return Outcome::Retry(format!(
                    "no action history row for {action_id}; the guard writes it before approving"
                ));
            }
            Err(error) => return self.database_failure(&error),
        };

        let proposal = decision.proposal.clone().unwrap_or_default();
        let target = proposal.target.clone().unwrap_or_default();
        let started_at = steward_proto::now();
        // Only a first attempt may skip: after an interrupted attempt the
        // action may already have changed the cluster, and running it to
        // the end records what it did.
        let (status, report) = if alert_resolved && attempts == 1 {
            (
                "skipped",
                Report {
                    succeeded: false,
                    changes: vec!["no change: the alert resolved after the approval".to_owned()],
                    error: String::new(),
                    details: serde_json::Value::Null,
                },
            )
        } else {
            let validated = steward_actions::validate_target(&target)
                .map_err(|error| error.to_string())
                .and_then(|()| {
                    steward_actions::validate(&proposal.action, target.kind(), &proposal.parameters)
                        .map_err(|error| error.to_string())
                });
            match validated {
                Err(error) => (
                    "failed",
                    Report {
                        succeeded: false,
                        changes: Vec::new(),
                        error: format!("refusing an invalid action: {error}"),
                        details: serde_json::Value::Null,
                    },
                ),
                Ok((_, parameters)) => {
                    let request = Request {
                        action_id,
                        action: &proposal.action,
                        parameters: &parameters,
                        target: &target,
                        attempts,
                    };
                    match self.run_holding_claim(action_id, &request).await {
                        Ok(report) if report.succeeded => ("succeeded", report),
                        Ok(report) => ("failed", report),
                        // On the last attempt the failure is final: record
                        // it, so the action does not stay `executing`.
                        Err(transient) if delivery.last => (
                            "failed",
                            Report {
                                succeeded: false,
                                changes: Vec::new(),
                                error: format!(
                                    "gave up after {} attempts: {transient}",
                                    delivery.attempt
                                ),
                                details: serde_json::Value::Null,
                            },
                        ),
                        Err(transient) => {
                            if let Err(error) = self.store.release_claim(action_id).await {
                                // The claim then expires on its own.
                                tracing::warn!(error = %error_chain(&error), "failed to release the claim after a transient failure");
                            }
                            return Outcome::Retry(transient.to_string());
                        }
                    }
                }
            }
        };

        let verification = if status == "succeeded" {
            let request = Request {
                action_id,
                action: &proposal.action,
                parameters: &steward_actions::Parameters::default(),
                target: &target,
                attempts,
            };
            self.executor.verify(&request).await
        } else {
            Verification::not_checked("the action did not succeed")
        };

        let mode = self.executor.mode();
        let execution = Execution {
            decision: Some(decision),
            mode: match mode {
                Mode::DryRun => ExecutionMode::DryRun,
                Mode::Live => ExecutionMode::Live,
            } as i32,
            outcome: match status {
                "succeeded" => ExecutionOutcome::Succeeded,
                "skipped" => ExecutionOutcome::Skipped,
                _ => ExecutionOutcome::Failed,
            } as i32,
            changes: report.changes.clone(),
            error: report.error.clone(),
            started_at: Some(started_at),
            finished_at: Some(steward_proto::now()),
            details_json: if report.details.is_null() {
                String::new()
            } else {
                report.details.to_string()
            },
            verification: Some(steward_proto::v1::Verification {
                checked: verification.checked,
                effective: verification.effective,
                detail: verification.detail.clone(),
            }),
        };
        let event = RemediationEvent {
            event_id: event_id(&action_id, Stage::Executed).to_string(),
            correlation_id: correlation_id.to_string(),
            cluster: cluster.clone(),
            occurred_at: execution.finished_at,
            body: Some(remediation_event::Body::Executed(execution)),
        };
        let finish = Finish {
            mode: mode.as_str(),
            status,
            changes: report.changes.clone(),
            error: report.error.clone(),
            details: report.details.clone(),
            effective: verification.checked.then_some(verification.effective),
            verification: verification.detail.clone(),
            event: event.encode_to_vec(),
        };
        let stored = match self.store.finish_action(action_id, &finish).await {
            Ok(stored) => stored,
            Err(error) => return self.database_failure(&error),
        };
        if stored != finish.event {
            // An attempt that outlived its expired claim finished first;
            // its result is the one on record and on the bus.
            tracing::warn!("another attempt finished this action first; publishing its result");
            return self.publish(&cluster, stored).await;
        }

        self.metrics
            .executions
            .get_or_create(&ExecutionLabels {
                action: proposal.action.clone(),
                mode: mode.as_str(),
                outcome: status,
            })
            .inc();
        match status {
            "succeeded" => {
                tracing::info!(mode = mode.as_str(), changes = %report.changes.join("; "), "action executed");
            }
            "skipped" => tracing::info!("the alert resolved after the approval; action skipped"),
            _ => tracing::warn!(mode = mode.as_str(), error = %report.error, "action failed"),
        }
        self.publish(&cluster, stored).await
    }

    /// Runs the action while extending this attempt's claim every third of
    /// the lease, so that a long action is not taken for a crashed one.
    async fn run_holding_claim(
        &self,
        action_id: Uuid,
        request: &Request<'_>,
    ) -> Result<Report, crate::actions::Transient> {
        let interval = (self.lease / 3).max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut run = std::pin::pin!(self.executor.run(request));
        loop {
            tokio::select! {
                report = &mut run => return report,
                _ = ticker.tick() => {
                    if let Err(error) = self.store.extend_claim(action_id, self.lease).await {
                        self.metrics.database_errors.inc();
                        tracing::warn!(error = %error_chain(&error), "failed to extend the claim on a running action");
                    }
                }
            }
        }
    }

    async fn publish(&self, cluster: &str, stored: Vec<u8>) -> Outcome {
        let event_id = match RemediationEvent::decode(stored.as_slice()) {
            Ok(event) => event.event_id,
            Err(error) => {
                return Outcome::Reject(format!("stored execution does not decode: {error}"));
            }
        };
        match self
            .bus
            .publish_event(Stage::Executed, cluster, &event_id, Bytes::from(stored))
            .await
        {
            Ok(_) => Outcome::Done,
            Err(error) => Outcome::Retry(error_chain(&error)),
        }
    }

    fn database_failure(&self, error: &StoreError) -> Outcome {
        self.metrics.database_errors.inc();
        error.outcome()
    }
}

impl Handler for DecisionHandler {
    async fn handle(
        &self,
        message: &async_nats::jetstream::Message,
        delivery: steward_bus::Delivery,
    ) -> Outcome {
        let event = match RemediationEvent::decode(message.payload.as_ref()) {
            Ok(event) => event,
            Err(error) => {
                return Outcome::Reject(format!(
                    "payload is not a steward.v1.RemediationEvent: {error}"
                ));
            }
        };
        let Some(remediation_event::Body::Approved(decision)) = event.body else {
            return Outcome::Reject("event on the approved subject carries no approval".to_owned());
        };
        let proposal_id = decision
            .proposal
            .as_ref()
            .map(|proposal| proposal.proposal_id.as_str())
            .unwrap_or_default();
        let (Ok(action_id), Ok(correlation_id)) = (
            Uuid::parse_str(proposal_id),
            Uuid::parse_str(&event.correlation_id),
        ) else {
            return Outcome::Reject(format!(
                "approval has an invalid proposal id {proposal_id:?} or correlation id {:?}",
                event.correlation_id
            ));
        };
        let proposal = decision.proposal.clone().unwrap_or_default();
        let span = tracing::info_span!(
            "execution",
            %correlation_id,
            %action_id,
            cluster = %event.cluster,
            action = %proposal.action,
            target = %proposal.target.unwrap_or_default(),
        );
        self.on_decision(decision, action_id, correlation_id, event.cluster, delivery)
            .instrument(span)
            .await
    }
}
