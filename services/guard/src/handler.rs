//! Decides on one proposal.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use steward_bus::{Bus, Handler, Outcome, Stage, event_id};
use steward_proto::Message;
use steward_proto::v1::{self, Decision, Proposal, RemediationEvent, remediation_event};
use steward_store::{
    ActionRecord, Candidate, DecisionRecord, DecisionTx, Store, StoreError, TargetKey,
};
use steward_telemetry::{DecisionLabels, Metrics, error_chain};
use tracing::Instrument;
use uuid::Uuid;

use crate::Policy;

/// What the guard decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ruling {
    /// Execute the action.
    Approved,
    /// Do not execute it.
    Rejected,
    /// Wait for a person's approval.
    Pending,
}

impl Ruling {
    fn stage(self) -> Stage {
        match self {
            Ruling::Approved => Stage::Approved,
            Ruling::Rejected => Stage::Rejected,
            Ruling::Pending => Stage::Pending,
        }
    }
}

/// The guard's verdict with the rule that settled it and every reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What was decided.
    pub ruling: Ruling,
    /// The deciding rule, for metrics: `passed`, `invalid`, `escalation`,
    /// `freeze`, `namespace`, `action_rule`, `confidence`, `resolved`,
    /// `cooldown`, `duplicate`, a detector's name, `rate_limit` or
    /// `approval`.
    pub rule: &'static str,
    /// One line per check that ran, in order.
    pub reasons: Vec<String>,
}

impl Verdict {
    fn reject(rule: &'static str, mut reasons: Vec<String>, reason: String) -> Self {
        reasons.push(reason);
        Self {
            ruling: Ruling::Rejected,
            rule,
            reasons,
        }
    }

    /// Returns whether the action may run now.
    pub fn approved(&self) -> bool {
        self.ruling == Ruling::Approved
    }
}

/// Runs the checks that need no history: registry validation, escalation,
/// freeze windows, namespaces, allowed actions and the confidence threshold
/// of the action's risk. Returns a final verdict, or the reasons so far
/// when the history must be consulted.
pub fn evaluate_static(
    proposal: &Proposal,
    cluster: &str,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Verdict, Vec<String>> {
    let invalid = |error: String| {
        Ok(Verdict::reject(
            "invalid",
            Vec::new(),
            format!("invalid proposal: {error}"),
        ))
    };
    let target = proposal.target.clone().unwrap_or_default();
    if let Err(error) = steward_actions::validate_target(&target) {
        return invalid(error.to_string());
    }
    let spec =
        match steward_actions::validate(&proposal.action, target.kind(), &proposal.parameters) {
            Ok((spec, _)) => spec,
            Err(error) => return invalid(error.to_string()),
        };
    if !proposal.confidence.is_finite() || !(0.0..=1.0).contains(&proposal.confidence) {
        return invalid(format!(
            "confidence {} is outside [0, 1]",
            proposal.confidence
        ));
    }
    if proposal.action == steward_actions::NOTIFY_ONLY {
        return Ok(Verdict {
            ruling: Ruling::Approved,
            rule: "escalation",
            reasons: vec![
                "notify_only changes nothing, so escalation is always allowed".to_owned(),
            ],
        });
    }

    if let Some(window) = policy.freeze(now) {
        return Ok(Verdict::reject(
            "freeze",
            Vec::new(),
            format!(
                "freeze window {} is in effect: only escalation is allowed",
                window.name
            ),
        ));
    }
    if let Some(refusal) = policy.namespace_refusal(&target.namespace, &proposal.action) {
        return Ok(Verdict::reject("namespace", Vec::new(), refusal));
    }
    if let Some(refusal) = policy.action_refusal(cluster, &target.namespace, &proposal.action) {
        return Ok(Verdict::reject("action_rule", Vec::new(), refusal));
    }
    let threshold = policy.threshold(spec.risk);
    if proposal.confidence < threshold {
        return Ok(Verdict::reject(
            "confidence",
            Vec::new(),
            format!(
                "confidence {:.2} is below the threshold {threshold:.2} for {} risk",
                proposal.confidence,
                spec.risk.as_str()
            ),
        ));
    }
    Err(vec![format!(
        "confidence {:.2} meets the threshold {threshold:.2} for {} risk",
        proposal.confidence,
        spec.risk.as_str()
    )])
}

/// When the guard runs its history checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// A proposal just arrived.
    Arrival,
    /// A person approves a proposal that waited: the history may have
    /// changed since it arrived, so the checks run again, except the
    /// duplicate check (the proposal itself is the waiting one) and the
    /// approval requirement (it is being met).
    Approval,
}

/// Runs the checks that read Postgres, inside the decision transaction.
/// They cover the resolved alert, the cooldown, a twin proposal waiting for
/// approval, the oscillation detectors and the rate limits. Last comes
/// whether a person must approve.
///
/// # Errors
/// Fails when a query fails; nothing is decided then.
pub async fn evaluate_history(
    tx: &mut DecisionTx,
    policy: &Policy,
    proposal: &Proposal,
    target: &v1::Target,
    correlation_id: Uuid,
    mut reasons: Vec<String>,
    moment: Moment,
) -> Result<Verdict, StoreError> {
    if tx.alert_resolved(correlation_id).await? {
        return Ok(Verdict::reject(
            "resolved",
            reasons,
            "the alert resolved before the decision; nothing to remediate".to_owned(),
        ));
    }

    if let Some(recent) = tx
        .latest_action_within(&proposal.action, policy.cooldown)
        .await?
    {
        return Ok(Verdict::reject(
            "cooldown",
            reasons,
            format!(
                "cooldown: {} on {target} was approved {} ago (action {}); the cooldown is {}",
                proposal.action,
                humanize(recent.age),
                recent.action_id,
                humanize(policy.cooldown),
            ),
        ));
    }
    if moment == Moment::Arrival
        && let Some(waiting) = tx.pending_same_action(&proposal.action).await?
    {
        return Ok(Verdict::reject(
            "duplicate",
            reasons,
            format!(
                "a {} on {target} already waits for a person's approval (proposal {waiting})",
                proposal.action
            ),
        ));
    }
    reasons.push(format!(
        "no {} on {target} in the last {}",
        proposal.action,
        humanize(policy.cooldown)
    ));

    let replicas = proposal
        .parameters
        .get("replicas")
        .and_then(|value| match value.kind {
            Some(v1::parameter_value::Kind::IntValue(replicas)) => i32::try_from(replicas).ok(),
            _ => None,
        });
    let candidate = Candidate {
        action: &proposal.action,
        replicas,
    };
    let findings = tx.findings(&candidate, &policy.detectors).await?;
    for finding in &findings {
        let evidence: Vec<String> = finding.evidence.iter().map(ToString::to_string).collect();
        let line = format!("{} (actions {})", finding.detail, evidence.join(", "));
        if finding.blocks() {
            return Ok(Verdict::reject(
                detector_rule(&finding.detector),
                reasons,
                line,
            ));
        }
        reasons.push(format!("warning: {line}"));
    }
    if findings.is_empty() {
        reasons.push("no oscillation in the action history".to_owned());
    }

    let hour = Duration::from_secs(3600);
    // Approvals on other targets of the scope count too: hold the scope
    // until this decision commits, namespace first, then cluster.
    if policy.max_actions_per_namespace_per_hour.is_some() {
        tx.lock_scope(Some(&target.namespace)).await?;
    }
    if policy.max_actions_per_cluster_per_hour.is_some() {
        tx.lock_scope(None).await?;
    }
    if let Some(limit) = policy.max_actions_per_cluster_per_hour {
        let count = tx.approvals_within(hour, None).await?;
        if count >= limit {
            return Ok(Verdict::reject(
                "rate_limit",
                reasons,
                format!(
                    "rate limit: {count} actions approved in cluster {} in the last hour; the limit is {limit}",
                    tx.target().cluster
                ),
            ));
        }
    }
    if let Some(limit) = policy.max_actions_per_namespace_per_hour {
        let count = tx.approvals_within(hour, Some(&target.namespace)).await?;
        if count >= limit {
            return Ok(Verdict::reject(
                "rate_limit",
                reasons,
                format!(
                    "rate limit: {count} actions approved in namespace {} in the last hour; the limit is {limit}",
                    target.namespace
                ),
            ));
        }
    }

    let risk = steward_actions::find(&proposal.action)
        .map_or(steward_actions::Risk::High, |spec| spec.risk);
    if moment == Moment::Arrival && policy.needs_approval(&proposal.action, risk) {
        reasons.push(format!(
            "{} ({} risk) needs a person's approval; it is rejected unless approved within {}",
            proposal.action,
            risk.as_str(),
            humanize(policy.approval_timeout)
        ));
        return Ok(Verdict {
            ruling: Ruling::Pending,
            rule: "approval",
            reasons,
        });
    }
    Ok(Verdict {
        ruling: Ruling::Approved,
        rule: "passed",
        reasons,
    })
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

        let verdict = match evaluate_static(&proposal, &cluster, &self.policy, Utc::now()) {
            Ok(verdict) => verdict,
            Err(reasons) => match evaluate_history(
                &mut tx,
                &self.policy,
                &proposal,
                &target,
                correlation_id,
                reasons,
                Moment::Arrival,
            )
            .await
            {
                Ok(verdict) => verdict,
                Err(error) => return self.database_failure(&error),
            },
        };

        let stage = verdict.ruling.stage();
        let decision = Decision {
            proposal: Some(proposal.clone()),
            verdict: match verdict.ruling {
                Ruling::Approved => v1::Verdict::Approved,
                Ruling::Rejected => v1::Verdict::Rejected,
                Ruling::Pending => v1::Verdict::Pending,
            } as i32,
            reasons: verdict.reasons.clone(),
            decided_at: Some(steward_proto::now()),
        };
        let event = RemediationEvent {
            event_id: event_id(&proposal_id, stage).to_string(),
            correlation_id: correlation_id.to_string(),
            cluster: cluster.clone(),
            occurred_at: decision.decided_at,
            body: Some(match verdict.ruling {
                Ruling::Approved => remediation_event::Body::Approved(decision),
                Ruling::Rejected => remediation_event::Body::Rejected(decision),
                Ruling::Pending => remediation_event::Body::Pending(decision),
            }),
        };
        let record = DecisionRecord {
            proposal_id,
            correlation_id,
            verdict: stage.as_str(),
            reasons: verdict.reasons.clone(),
            event: event.encode_to_vec(),
        };
        let action = verdict.approved().then(|| ActionRecord {
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
            Some(remediation_event::Body::Pending(_)) => Stage::Pending,
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

/// Returns the metric label of a detector.
fn detector_rule(detector: &str) -> &'static str {
    match detector {
        "scale_oscillation" => "scale_oscillation",
        "resource_thrashing" => "resource_thrashing",
        "ineffective_loop" => "ineffective_loop",
        "cascading_failure" => "cascading_failure",
        "consecutive_failures" => "consecutive_failures",
        _ => "detector",
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

    fn decide(proposal: &Proposal, policy: &Policy) -> Result<Verdict, Vec<String>> {
        evaluate_static(proposal, "prod", policy, Utc::now())
    }

    #[test]
    fn low_confidence_is_rejected() {
        let verdict =
            decide(&proposal("restart_deployment", 0.5), &Policy::default()).expect("final");
        assert!(!verdict.approved());
        assert_eq!(
            verdict.reasons,
            ["confidence 0.50 is below the threshold 0.70 for medium risk"]
        );
    }

    #[test]
    fn high_risk_uses_its_own_threshold() {
        let policy = Policy::parse("min_confidence_by_risk: {high: 0.9}").expect("policy");
        let verdict = decide(&proposal("rollback_deployment", 0.85), &policy).expect("final");
        assert_eq!(verdict.rule, "confidence");
        assert_eq!(
            verdict.reasons,
            ["confidence 0.85 is below the threshold 0.90 for high risk"]
        );
    }

    #[test]
    fn unknown_action_is_rejected_before_confidence() {
        let verdict = decide(&proposal("drop_database", 0.99), &Policy::default()).expect("final");
        assert!(!verdict.approved());
        assert_eq!(verdict.rule, "invalid");
    }

    #[test]
    fn notify_only_passes_at_any_confidence() {
        let verdict = decide(&proposal("notify_only", 0.1), &Policy::default()).expect("final");
        assert!(verdict.approved());
    }

    #[test]
    fn confident_valid_proposal_needs_the_history() {
        let reasons = decide(&proposal("restart_deployment", 0.9), &Policy::default())
            .expect_err("needs history");
        assert_eq!(
            reasons,
            ["confidence 0.90 meets the threshold 0.70 for medium risk"]
        );
    }

    #[test]
    fn protected_namespace_is_rejected() {
        let mut system = proposal("restart_deployment", 0.99);
        system.target = Some(Target {
            kind: TargetKind::Deployment as i32,
            namespace: "kube-system".into(),
            name: "coredns".into(),
        });
        let verdict = decide(&system, &Policy::default()).expect("final");
        assert_eq!(verdict.rule, "namespace");
        assert_eq!(
            verdict.reasons,
            ["namespace kube-system is protected: the policy denies actions there"]
        );
    }

    #[test]
    fn freeze_window_rejects_everything_but_escalation() {
        let policy = Policy::parse("freeze_windows: [{name: release, from: \"2026-01-01T00:00:00Z\", until: \"2100-01-01T00:00:00Z\"}]")
            .expect("policy");
        let restart = decide(&proposal("restart_deployment", 0.99), &policy).expect("final");
        let escalation = decide(&proposal("notify_only", 0.99), &policy).expect("final");
        assert_eq!(restart.rule, "freeze");
        assert_eq!(
            restart.reasons,
            ["freeze window release is in effect: only escalation is allowed"]
        );
        assert!(escalation.approved());
    }

    #[test]
    fn action_rules_reject_other_actions() {
        let policy = Policy::parse("actions: [{cluster: prod, allow: [restart_deployment]}]")
            .expect("policy");
        let verdict = decide(&proposal("rollback_deployment", 0.99), &policy).expect("final");
        assert_eq!(verdict.rule, "action_rule");
    }

    #[test]
    fn target_with_path_characters_is_invalid() {
        let mut hostile = proposal("restart_deployment", 0.99);
        hostile.target = Some(Target {
            kind: TargetKind::Deployment as i32,
            namespace: "kube-system/deployments/coredns#".into(),
            name: "evil".into(),
        });
        let verdict = decide(&hostile, &Policy::default()).expect("final");
        assert!(!verdict.approved());
        assert_eq!(verdict.rule, "invalid");
        assert!(
            verdict.reasons[0].contains("is not a valid Kubernetes namespace name"),
            "{:?}",
            verdict.reasons
        );
    }

    #[test]
    fn nan_confidence_is_invalid() {
        let verdict = decide(
            &proposal("restart_deployment", f64::NAN),
            &Policy::default(),
        )
        .expect("final");
        assert_eq!(verdict.rule, "invalid");
    }
}
