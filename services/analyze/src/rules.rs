//! The built-in rule analyzer: a fixed table from alert names to actions.
//!
//! It decides when no LLM endpoint is configured or the LLM's answer is
//! unusable. An alert no rule covers, or whose target is missing, is
//! escalated with `notify_only`.

use std::collections::HashMap;

use steward_proto::v1::{AlertEvent, Target, TargetKind};

use crate::Recommendation;

/// One rule: when `alerts` contains the alert name and the alert names an
/// object of `kind`, recommend `action` on it.
struct Rule {
    alerts: &'static [&'static str],
    kind: TargetKind,
    action: &'static str,
    confidence: f64,
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        alerts: &[
            "KubeDeploymentReplicasMismatch",
            "KubeDeploymentRolloutStuck",
        ],
        kind: TargetKind::Deployment,
        action: "restart_deployment",
        confidence: 0.8,
        why: "the deployment has fewer available replicas than it wants; a rollout restart replaces pods that are stuck",
    },
    Rule {
        alerts: &["KubePodNotReady"],
        kind: TargetKind::Pod,
        action: "delete_pod",
        confidence: 0.75,
        why: "the pod has not become ready for a long time; deleting it lets its controller start a fresh one",
    },
];

/// Alerts that need a code or configuration change, where restarting only
/// hides the symptom.
const ESCALATE: &[(&str, &str)] = &[
    (
        "KubePodCrashLooping",
        "a crash loop comes from the container itself (code, configuration or a dependency); restarting it again does not help",
    ),
    (
        "KubeContainerWaiting",
        "a container waiting to start usually lacks an image, a secret or a volume, which only a person can provide",
    ),
];

/// Returns, for each alert name of `alerts` that the rule tables cover,
/// what the rules would do and why, as prompt lines.
pub(crate) fn hints(alerts: &[AlertEvent]) -> Vec<String> {
    let mut names: Vec<&str> = alerts
        .iter()
        .filter_map(|alert| alert.labels.get("alertname").map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            if let Some(rule) = RULES.iter().find(|rule| rule.alerts.contains(&name)) {
                return Some(format!(
                    "{name}: {} on the {}, because {}",
                    rule.action,
                    rule.kind.label(),
                    rule.why
                ));
            }
            ESCALATE
                .iter()
                .find(|(alert, _)| *alert == name)
                .map(|(_, why)| format!("{name}: notify_only, because {why}"))
        })
        .collect()
}

/// Decides with the rule table.
#[derive(Debug, Clone, Default)]
pub struct RuleAnalyzer;

impl RuleAnalyzer {
    /// Returns the rule table's recommendation for `alert`, choosing among
    /// the alert's own objects.
    pub fn recommend(&self, alert: &AlertEvent, candidates: &[Target]) -> Recommendation {
        let name = alert
            .labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("");

        if let Some(rule) = RULES.iter().find(|rule| rule.alerts.contains(&name)) {
            if let Some(target) = candidates.iter().find(|target| target.kind() == rule.kind) {
                return Recommendation {
                    target: target.clone(),
                    action: rule.action.to_owned(),
                    parameters: HashMap::new(),
                    confidence: rule.confidence,
                    reasoning: format!("{name} on {target}: {}", rule.why),
                };
            }
            return escalate(
                candidates,
                0.9,
                format!(
                    "{name} matches the {} rule, but the alert names no {}; escalating",
                    rule.action,
                    rule.kind.label()
                ),
            );
        }

        if let Some((_, why)) = ESCALATE.iter().find(|(alert, _)| *alert == name) {
            return escalate(candidates, 0.85, format!("{name}: {why}"));
        }
        if candidates.is_empty() {
            return escalate(
                candidates,
                0.9,
                format!("{name} names no Kubernetes object Steward can act on; escalating"),
            );
        }
        escalate(
            candidates,
            0.9,
            format!("no rule covers {name}; escalating to people"),
        )
    }
}

fn escalate(candidates: &[Target], confidence: f64, reasoning: String) -> Recommendation {
    Recommendation {
        target: candidates
            .first()
            .cloned()
            .unwrap_or_else(crate::target::unresolved),
        action: steward_actions::NOTIFY_ONLY.to_owned(),
        parameters: HashMap::new(),
        confidence,
        reasoning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::candidates;

    fn alert(pairs: &[(&str, &str)]) -> AlertEvent {
        AlertEvent {
            labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..AlertEvent::default()
        }
    }

    #[test]
    fn replicas_mismatch_restarts_the_deployment() {
        let alert = alert(&[
            ("alertname", "KubeDeploymentReplicasMismatch"),
            ("namespace", "shop"),
            ("deployment", "checkout"),
        ]);
        let recommendation = RuleAnalyzer.recommend(&alert, &candidates(&alert.labels));
        assert_eq!(recommendation.action, "restart_deployment");
        assert_eq!(
            recommendation.target.to_string(),
            "deployment/shop/checkout"
        );
    }

    #[test]
    fn rule_without_its_target_escalates() {
        let alert = alert(&[("alertname", "KubePodNotReady"), ("namespace", "shop")]);
        let recommendation = RuleAnalyzer.recommend(&alert, &candidates(&alert.labels));
        assert_eq!(recommendation.action, "notify_only");
        assert_eq!(recommendation.target.kind(), TargetKind::Unspecified);
        assert!(
            recommendation.reasoning.contains("names no pod"),
            "{}",
            recommendation.reasoning
        );
    }

    #[test]
    fn crash_loops_escalate() {
        let alert = alert(&[
            ("alertname", "KubePodCrashLooping"),
            ("namespace", "shop"),
            ("pod", "cart-1"),
        ]);
        let recommendation = RuleAnalyzer.recommend(&alert, &candidates(&alert.labels));
        assert_eq!(recommendation.action, "notify_only");
        assert_eq!(recommendation.target.to_string(), "pod/shop/cart-1");
    }
}
