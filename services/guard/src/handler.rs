//! Decides on one proposal.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use steward_bus::{Bus, Handler, Outcome, Stage, event_id};
use steward_proto::Message;
use steward_proto::v1::{self, Decision, Proposal, RemediationEvent, remediation_event};
use steward_store::{ActionRecord, DecisionRecord, DecisionTx, Store, StoreError, TargetKey};
use steward_telemetry::{DecisionLabels, Metrics, error_chain};
use tracing::Instrument;
use uuid::Uuid;

use crate::Policy;

/// The guard's verdict with the rule that settled it and every reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether the proposal passed.
    pub approved: bool,
    /// The deciding rule, for metrics: `passed`, `invalid`, `confidence`,
    /// `resolved`, `cooldown` or `escalation`.
    pub rule: &'static str,
    /// One line per check that ran, in order.
    pub reasons: Vec<String>,
}

/// Runs the checks that need no history: registry validation, escalation
/// and the confidence threshold. Returns a final verdict, or the reasons so
/// far when the history must be consulted.
pub fn evaluate_static(proposal: &Proposal, policy: &Policy) -> Result<Verdict, Vec<String>> {
    let target = proposal.target.clone().unwrap_or_default();
    if let Err(error) = steward_actions::validate_target(&target) {
        return Ok(Verdict {
            approved: false,
            rule: "invalid",
            reasons: vec![format!("invalid proposal: {error}")],
        });
    }
    if let Err(error) =
        steward_actions::validate(&proposal.action, target.kind(), &proposal.parameters)
    {
        return Ok(Verdict {
            approved: false,
            rule: "invalid",
            reasons: vec![format!("invalid proposal: {error}")],
        });
    }
    if !proposal.confidence.is_finite() || !(0.0..=1.0).contains(&proposal.confidence) {
        return Ok(Verdict {
            approved: false,
            rule: "invalid",
            reasons: vec![format!(
                "invalid proposal: confidence {} is outside [0, 1]",
                proposal.confidence
            )],
        });
    }
    if proposal.action == steward_actions::NOTIFY_ONLY {
        return Ok(Verdict {
            approved: true,
            rule: "escalation",
            reasons: vec![
                "notify_only changes nothing, so escalation is always allowed".to_owned(),
            ],
        });
    }

    if proposal.confidence < policy.min_confidence {
        return Ok(Verdict {
            approved: false,
            rule: "confidence",
            reasons: vec![format!(
                "confidence {:.2} is below the threshold {:.2}",
                proposal.confidence, policy.min_confidence
            )],
        });
    }
    Err(vec![format!(
        "confidence {:.2} meets the threshold {:.2}",
        proposal.confidence, policy.min_confidence
    )])
}

/// Turns proposals into decisions.
pub struct ProposalHandler {
    bus: Bus,
    store: Store,
    policy: Policy,
    metrics: Arc<Metrics>,
}

impl ProposalHandler {
    /// Creates the handler.
    pub fn new(bus: Bus, store: Store, policy: Policy, metrics: Arc<Metrics>) -> Self {
        Self {
            bus,
            store,
            policy,
            metrics,
        }
    }

    async fn on_proposal(
        &self,
        proposal: Proposal,
        proposal_id: Uuid,
        correlation_id: Uuid,
        cluster: String,
    ) -> Outcome {
        // A redelivered proposal that was decided before gets the stored
        // decision again, never a second one.
        match self.store.stored_decision(proposal_id).await {
            Ok(Some(stored)) => return self.publish_stored(&cluster, stored).await,
            Ok(None) => {}
            Err(error) => return self.database_failure(&error),
        }

        let target = proposal.target.clone().unwrap_or_default();
        let key = TargetKey {
            cluster: cluster.clone(),
            namespace: target.namespace.clone(),
            kind: target.kind().label().to_owned(),
            name: target.name.clone(),
        };
        let mut tx = match self.store.begin_decision(key).await {
            Ok(tx) => tx,
            Err(error) => return self.database_failure(&error),
        };

        let verdict = match evaluate_static(&proposal, &self.policy) {
            Ok(verdict) => verdict,
            Err(reasons) => match self
                .check_history(&mut tx, &proposal, &target, correlation_id, reasons)
                .await
            {
                Ok(verdict) => verdict,
                Err(error) => return self.database_failure(&error),
            },
        };

        let stage = if verdict.approved {
            Stage::Approved
        } else {
            Stage::Rejected
        };
        let decision = Decision {
            proposal: Some(proposal.clone()),
            verdict: if verdict.approved {
                v1::Verdict::Approved
            } else {
                v1::Verdict::Rejected
            } as i32,
            reasons: verdict.reasons.clone(),
            decided_at: Some(steward_proto::now()),
        };
        let event = RemediationEvent {
            event_id: event_id(&proposal_id, stage).to_string(),
            correlation_id: correlation_id.to_string(),
            cluster: cluster.clone(),
            occurred_at: decision.decided_at,
            body: Some(if verdict.approved {
                remediation_event::Body::Approved(decision)
            } else {
                remediation_event::Body::Rejected(decision)
            }),
        };
        let record = DecisionRecord {
            proposal_id,
            correlation_id,
            verdict: stage.as_str(),
            reasons: verdict.reasons.clone(),
            event: event.encode_to_vec(),
        };
        let action = verdict.approved.then(|| ActionRecord {
            action: proposal.action.clone(),
            parameters: steward_actions::parameters_to_json(&proposal.parameters),
            confidence: proposal.confidence,
        });
        let stored = match tx.commit(&record, action.as_ref()).await {
            Ok(stored) => stored,
            Err(error) => return self.database_failure(&error),
        };
        if stored != record.event {
            // Another replica decided this proposal first; its decision is
            // the one on record and on the bus.
            tracing::info!("another replica decided this proposal first; publishing its decision");
            return self.publish_stored(&cluster, stored).await;
        }

        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                verdict: stage.as_str(),
                rule: verdict.rule,
            })
            .inc();
        tracing::info!(
            verdict = stage.as_str(),
            rule = verdict.rule,
            reasons = %verdict.reasons.join("; "),
            "proposal decided"
        );
        self.publish_stored(&cluster, stored).await
    }

    /// Runs the checks that read Postgres, inside the decision transaction:
    /// whether the alert already resolved, and the cooldown.
    async fn check_history(
        &self,
        tx: &mut DecisionTx,
        proposal: &Proposal,
        target: &v1::Target,
        correlation_id: Uuid,
        mut reasons: Vec<String>,
    ) -> Result<Verdict, StoreError> {
        if tx.alert_resolved(correlation_id).await? {
            reasons.push("the alert resolved before the decision; nothing to remediate".to_owned());
            return Ok(Verdict {
                approved: false,
                rule: "resolved",
                reasons,
            });
        }

        let recent = tx
            .latest_action_within(&proposal.action, self.policy.cooldown)
            .await?;
        if let Some(recent) = recent {
            reasons.push(format!(
                "cooldown: {} on {target} was approved {} ago (action {}); the cooldown is {}",
                proposal.action,
                humanize(recent.age),
                recent.action_id,
                humanize(self.policy.cooldown),
            ));
            return Ok(Verdict {
                approved: false,
                rule: "cooldown",
                reasons,
            });
        }
        reasons.push(format!(
            "no {} on {target} in the last {}",
            proposal.action,
            humanize(self.policy.cooldown)
        ));
        Ok(Verdict {
            approved: true,
            rule: "passed",
            reasons,
        })
    }

    /// Publishes a stored decision event on the subject of its own stage.
    async fn publish_stored(&self, cluster: &str, stored: Vec<u8>) -> Outcome {
        let event = match RemediationEvent::decode(stored.as_slice()) {
            Ok(event) => event,
            Err(error) => {
                return Outcome::Reject(format!("stored decision does not decode: {error}"));
            }
        };
        let stage = match event.body {
            Some(remediation_event::Body::Approved(_)) => Stage::Approved,
            Some(remediation_event::Body::Rejected(_)) => Stage::Rejected,
            _ => {
                return Outcome::Reject(
                    "stored decision is neither approved nor rejected".to_owned(),
                );
            }
        };
        let result = self
            .bus
            .publish_event(stage, cluster, &event.event_id, Bytes::from(stored))
            .await;
        match result {
            Ok(_) => Outcome::Done,
            Err(error) => Outcome::Retry(error_chain(&error)),
        }
    }

    /// Fails closed: nothing is approved while Postgres is unreachable, and
    /// the proposal comes back after a delay.
    fn database_failure(&self, error: &StoreError) -> Outcome {
        self.metrics.database_errors.inc();
        error.outcome()
    }
}

impl Handler for ProposalHandler {
    async fn handle(
        &self,
        message: &async_nats::jetstream::Message,
        _delivery: steward_bus::Delivery,
    ) -> Outcome {
        let event = match RemediationEvent::decode(message.payload.as_ref()) {
            Ok(event) => event,
            Err(error) => {
                return Outcome::Reject(format!(
                    "payload is not a steward.v1.RemediationEvent: {error}"
                ));
            }
        };
        let Some(remediation_event::Body::Proposed(proposal)) = event.body else {
            return Outcome::Reject("event on the proposed subject carries no proposal".to_owned());
        };
        let (Ok(proposal_id), Ok(correlation_id)) = (
            Uuid::parse_str(&proposal.proposal_id),
            Uuid::parse_str(&event.correlation_id),
        ) else {
            return Outcome::Reject(format!(
                "proposal has an invalid proposal id {:?} or correlation id {:?}",
                proposal.proposal_id, event.correlation_id
            ));
        };
        let span = tracing::info_span!(
            "proposal",
            %correlation_id,
            %proposal_id,
            cluster = %event.cluster,
            action = %proposal.action,
            target = %proposal.target.clone().unwrap_or_default(),
        );
        self.on_proposal(proposal, proposal_id, correlation_id, event.cluster)
            .instrument(span)
            .await
    }
}

/// Formats a duration as whole seconds, minutes and hours (`2m 3s`).
fn humanize(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_proto::v1::{Target, TargetKind};

    fn proposal(action: &str, confidence: f64) -> Proposal {
        Proposal {
            action: action.to_owned(),
            confidence,
            target: Some(Target {
                kind: TargetKind::Deployment as i32,
                namespace: "shop".into(),
                name: "checkout".into(),
            }),
            ..Proposal::default()
        }
    }

    #[test]
    fn low_confidence_is_rejected() {
        let verdict = evaluate_static(&proposal("restart_deployment", 0.5), &Policy::default())
            .expect("final");
        assert!(!verdict.approved);
        assert_eq!(
            verdict.reasons,
            ["confidence 0.50 is below the threshold 0.70"]
        );
    }

    #[test]
    fn unknown_action_is_rejected_before_confidence() {
        let verdict =
            evaluate_static(&proposal("drop_database", 0.99), &Policy::default()).expect("final");
        assert!(!verdict.approved);
        assert_eq!(verdict.rule, "invalid");
    }

    #[test]
    fn notify_only_passes_at_any_confidence() {
        let verdict =
            evaluate_static(&proposal("notify_only", 0.1), &Policy::default()).expect("final");
        assert!(verdict.approved);
    }

    #[test]
    fn confident_valid_proposal_needs_the_history() {
        let reasons = evaluate_static(&proposal("restart_deployment", 0.9), &Policy::default())
            .expect_err("the call must fail");
        assert_eq!(reasons, ["confidence 0.90 meets the threshold 0.70"]);
    }

    #[test]
    fn target_with_path_characters_is_invalid() {
        let mut hostile = proposal("restart_deployment", 0.99);
        hostile.target = Some(Target {
            kind: TargetKind::Deployment as i32,
            namespace: "kube-system/deployments/coredns#".into(),
            name: "evil".into(),
        });
        let verdict = evaluate_static(&hostile, &Policy::default()).expect("final");
        assert!(!verdict.approved);
        assert_eq!(verdict.rule, "invalid");
        assert!(
            verdict.reasons[0].contains("is not a valid Kubernetes namespace name"),
            "{:?}",
            verdict.reasons
        );
    }

    #[test]
    fn nan_confidence_is_invalid() {
        let verdict = evaluate_static(
            &proposal("restart_deployment", f64::NAN),
            &Policy::default(),
        )
        .expect("final");
        assert_eq!(verdict.rule, "invalid");
    }
}
