//! Renders a remediation event as one readable line.

use steward_proto::v1::{
    AlertEvent, AnalyzerKind, Decision, ExecutionMode, ExecutionOutcome, Proposal,
    RemediationEvent, remediation_event::Body,
};

/// Returns the line for `event`, or `None` for an event without a body.
///
/// Every value is flattened to one line, because alert text may contain
/// newlines and a notification is one line per event.
pub fn render(event: &RemediationEvent) -> Option<String> {
    let body = event.body.as_ref()?;
    let line = match body {
        Body::Proposed(proposal) => format!(
            "proposed  {}  {}",
            headline(event, proposal),
            reasoning(proposal)
        ),
        Body::Approved(decision) | Body::Rejected(decision) | Body::Pending(decision) => {
            let proposal = decision.proposal.clone().unwrap_or_default();
            let stage = match body {
                Body::Approved(_) => "approved",
                Body::Pending(_) => "pending",
                _ => "rejected",
            };
            format!(
                "{stage}  {}  guard={}  {}",
                headline(event, &proposal),
                guard(decision),
                reasoning(&proposal)
            )
        }
        Body::Executed(execution) => {
            let decision = execution.decision.clone().unwrap_or_default();
            let proposal = decision.proposal.clone().unwrap_or_default();
            let mode = match execution.mode() {
                ExecutionMode::Live => "live",
                _ => "dry-run",
            };
            let result = match execution.outcome() {
                ExecutionOutcome::Succeeded => {
                    format!("{mode} succeeded [{}]", execution.changes.join("; "))
                }
                ExecutionOutcome::Skipped => {
                    format!("{mode} skipped [{}]", execution.changes.join("; "))
                }
                _ => format!("{mode} failed [{}]", execution.error),
            };
            format!(
                "executed  {}  guard={}  result={}  {}",
                headline(event, &proposal),
                guard(&decision),
                result,
                reasoning(&proposal)
            )
        }
        Body::Resolved(resolution) => {
            let alert = resolution.alert.clone().unwrap_or_default();
            format!(
                "resolved  cluster={}  alert={}  fingerprint={}",
                value(&event.cluster),
                value(alert_name(&alert)),
                value(&alert.fingerprint)
            )
        }
    };
    Some(one_line(&format!(
        "{line}  correlation={}",
        event.correlation_id
    )))
}

fn headline(event: &RemediationEvent, proposal: &Proposal) -> String {
    let alert = proposal.alert.clone().unwrap_or_default();
    let target = proposal.target.clone().unwrap_or_default();
    let target = if target.name.is_empty() {
        "none".to_owned()
    } else {
        target.to_string()
    };
    let parameters: Vec<String> = {
        let mut pairs: Vec<_> = proposal.parameters.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        pairs
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect()
    };
    let action = if parameters.is_empty() {
        proposal.action.clone()
    } else {
        format!("{}({})", proposal.action, parameters.join(", "))
    };
    format!(
        "cluster={}  alert={}  action={}  target={}  confidence={:.2}  analyzer={}",
        value(&event.cluster),
        value(alert_name(&alert)),
        action,
        target,
        proposal.confidence,
        analyzer(proposal)
    )
}

fn analyzer(proposal: &Proposal) -> String {
    let analysis = proposal.analysis.clone().unwrap_or_default();
    match analysis.analyzer() {
        AnalyzerKind::Llm => format!("llm:{}", analysis.model),
        AnalyzerKind::Escalation => {
            format!("escalation (llm failed: {})", analysis.fallback_reason)
        }
        _ if !analysis.fallback_reason.is_empty() => {
            format!("rules (llm failed: {})", analysis.fallback_reason)
        }
        _ => "rules".to_owned(),
    }
}

fn guard(decision: &Decision) -> String {
    let verdict = match decision.verdict() {
        steward_proto::v1::Verdict::Approved => "approved",
        steward_proto::v1::Verdict::Rejected => "rejected",
        steward_proto::v1::Verdict::Pending => "pending",
        steward_proto::v1::Verdict::Unspecified => "unknown",
    };
    format!("{verdict} [{}]", decision.reasons.join("; "))
}

fn reasoning(proposal: &Proposal) -> String {
    format!("reasoning={:?}", proposal.reasoning)
}

fn alert_name(alert: &AlertEvent) -> &str {
    alert
        .labels
        .get("alertname")
        .map(String::as_str)
        .unwrap_or("unknown")
}

/// Returns `text` as it is when it is one plain word, else quoted and
/// escaped, so that a label cannot pose as further fields of the line.
fn value(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
    if plain {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// Replaces control characters (newlines included) with spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use steward_proto::v1::{Analysis, Execution, Resolution, Target, TargetKind, Verdict};

    fn proposal() -> Proposal {
        Proposal {
            proposal_id: "p".into(),
            alert: Some(AlertEvent {
                labels: HashMap::from([(
                    "alertname".to_owned(),
                    "KubeDeploymentReplicasMismatch".to_owned(),
                )]),
                ..AlertEvent::default()
            }),
            target: Some(Target {
                kind: TargetKind::Deployment as i32,
                namespace: "shop".into(),
                name: "checkout".into(),
            }),
            action: "restart_deployment".into(),
            parameters: HashMap::new(),
            confidence: 0.8,
            reasoning: "stuck pods\nneed a restart".into(),
            analysis: Some(Analysis {
                analyzer: AnalyzerKind::Rules as i32,
                ..Analysis::default()
            }),
            covered_correlation_ids: Vec::new(),
        }
    }

    fn event(body: Body) -> RemediationEvent {
        RemediationEvent {
            event_id: "e".into(),
            correlation_id: "c-1".into(),
            cluster: "prod".into(),
            occurred_at: None,
            body: Some(body),
        }
    }

    #[test]
    fn executed_line_names_every_fact() {
        let decision = Decision {
            proposal: Some(proposal()),
            verdict: Verdict::Approved as i32,
            reasons: vec!["confidence 0.80 meets the threshold 0.70".into()],
            decided_at: None,
        };
        let line = render(&event(Body::Executed(Execution {
            decision: Some(decision),
            mode: ExecutionMode::DryRun as i32,
            outcome: ExecutionOutcome::Succeeded as i32,
            changes: vec!["would patch deployment shop/checkout".into()],
            ..Execution::default()
        })))
        .expect("a line");

        for expected in [
            "executed",
            "cluster=prod",
            "alert=KubeDeploymentReplicasMismatch",
            "action=restart_deployment",
            "target=deployment/shop/checkout",
            "confidence=0.80",
            "analyzer=rules",
            "guard=approved [confidence 0.80 meets the threshold 0.70]",
            "result=dry-run succeeded [would patch deployment shop/checkout]",
            "reasoning=\"stuck pods\\nneed a restart\"",
            "correlation=c-1",
        ] {
            assert!(line.contains(expected), "{expected:?} missing from {line}");
        }
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn rejected_line_names_the_reason() {
        let decision = Decision {
            proposal: Some(proposal()),
            verdict: Verdict::Rejected as i32,
            reasons: vec!["confidence 0.50 is below the threshold 0.70".into()],
            decided_at: None,
        };
        let line = render(&event(Body::Rejected(decision))).expect("a line");
        assert!(line.starts_with("rejected  "), "{line}");
        assert!(
            line.contains("guard=rejected [confidence 0.50 is below the threshold 0.70]"),
            "{line}"
        );
    }

    #[test]
    fn resolved_line_names_the_alert() {
        let line = render(&event(Body::Resolved(Resolution {
            alert: proposal().alert,
        })))
        .expect("a line");
        assert!(
            line.starts_with("resolved  cluster=prod  alert=KubeDeploymentReplicasMismatch"),
            "{line}"
        );
    }

    #[test]
    fn field_values_with_spaces_are_quoted() {
        let mut forged = proposal();
        forged.alert = Some(AlertEvent {
            labels: HashMap::from([(
                "alertname".to_owned(),
                "Spoof  action=delete_pod  result=live succeeded".to_owned(),
            )]),
            ..AlertEvent::default()
        });
        let line = render(&event(Body::Proposed(forged))).expect("a line");
        assert!(
            line.contains(r#"alert="Spoof  action=delete_pod  result=live succeeded""#),
            "{line}"
        );
        assert_eq!(value("KubePodCrashLooping"), "KubePodCrashLooping");
        assert_eq!(value(""), "\"\"");
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(one_line("a\nb\rc\u{1b}d"), "a b c d");
    }
}
