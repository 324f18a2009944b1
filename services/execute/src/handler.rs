//! Handles one approved decision.

use std::sync::Arc;

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

use crate::actions::{Executor, Report, Request};
use crate::config::Mode;

/// Executes approved actions and publishes what happened.
pub struct DecisionHandler {
    bus: Bus,
    store: Store,
    executor: Executor,
    metrics: Arc<Metrics>,
}

impl DecisionHandler {
    /// Creates the handler.
    pub fn new(bus: Bus, store: Store, executor: Executor, metrics: Arc<Metrics>) -> Self {
        Self {
            bus,
            store,
            executor,
            metrics,
        }
    }

    async fn on_decision(
        &self,
        decision: Decision,
        action_id: Uuid,
        correlation_id: Uuid,
        cluster: String,
    ) -> Outcome {
        let attempts = match self.store.claim_action(action_id).await {
            Ok(Claim::Run { attempts }) => attempts,
            // An earlier delivery finished it: publish the stored result
            // again and never act twice.
            Ok(Claim::Finished { event }) => return self.publish(&cluster, event).await,
            Ok(Claim::Missing) => {
                return Outcome::Retry(format!(
                    "no action history row for {action_id}; the guard writes it before approving"
                ));
            }
            Err(error) => return self.database_retry(&error),
        };

        let proposal = decision.proposal.clone().unwrap_or_default();
        let target = proposal.target.clone().unwrap_or_default();
        let started_at = steward_proto::now();
        let report = match steward_actions::validate(
            &proposal.action,
            target.kind(),
            &proposal.parameters,
        ) {
            Err(error) => Report {
                succeeded: false,
                changes: Vec::new(),
                error: format!("refusing an invalid action: {error}"),
            },
            Ok((_, parameters)) => {
                let request = Request {
                    action_id,
                    action: &proposal.action,
                    parameters: &parameters,
                    target: &target,
                    attempts,
                };
                match self.executor.run(&request).await {
                    Ok(report) => report,
                    Err(transient) => return Outcome::Retry(transient.to_string()),
                }
            }
        };

        let mode = self.executor.mode();
        let execution = Execution {
            decision: Some(decision),
            mode: match mode {
                Mode::DryRun => ExecutionMode::DryRun,
                Mode::Live => ExecutionMode::Live,
            } as i32,
            outcome: if report.succeeded {
                ExecutionOutcome::Succeeded
            } else {
                ExecutionOutcome::Failed
            } as i32,
            changes: report.changes.clone(),
            error: report.error.clone(),
            started_at: Some(started_at),
            finished_at: Some(steward_proto::now()),
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
            succeeded: report.succeeded,
            changes: report.changes.clone(),
            error: report.error.clone(),
            event: event.encode_to_vec(),
        };
        let stored = match self.store.finish_action(action_id, &finish).await {
            Ok(stored) => stored,
            Err(error) => return self.database_retry(&error),
        };

        let outcome = if report.succeeded {
            "succeeded"
        } else {
            "failed"
        };
        self.metrics
            .executions
            .get_or_create(&ExecutionLabels {
                action: proposal.action.clone(),
                mode: mode.as_str(),
                outcome,
            })
            .inc();
        if report.succeeded {
            tracing::info!(mode = mode.as_str(), changes = %report.changes.join("; "), "action executed");
        } else {
            tracing::warn!(mode = mode.as_str(), error = %report.error, "action failed");
        }
        self.publish(&cluster, stored).await
    }

    async fn publish(&self, cluster: &str, stored: Vec<u8>) -> Outcome {
        let event_id = match RemediationEvent::decode(stored.as_slice()) {
            Ok(event) => event.event_id,
            Err(error) => {
                return Outcome::Retry(format!("stored execution does not decode: {error}"));
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

    fn database_retry(&self, error: &StoreError) -> Outcome {
        self.metrics.database_errors.inc();
        Outcome::Retry(error_chain(error))
    }
}

impl Handler for DecisionHandler {
    async fn handle(&self, message: &async_nats::jetstream::Message) -> Outcome {
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
        self.on_decision(decision, action_id, correlation_id, event.cluster)
            .instrument(span)
            .await
    }
}
