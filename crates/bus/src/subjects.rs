//! Subject and stream names of the bus contract.
//!
//! - alerts: `<prefix>.alerts.<cluster>` on stream `<STREAM>_ALERTS`
//! - remediation events: `<prefix>.remediation.<stage>.<cluster>` on stream
//!   `<STREAM>_REMEDIATION`

use std::borrow::Cow;
use std::fmt;

use steward_config::NatsConfig;

/// A stage of the remediation stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// analyze recommended an action.
    Proposed,
    /// guard approved a proposal.
    Approved,
    /// guard rejected a proposal.
    Rejected,
    /// A proposal waits for a person's approval.
    Pending,
    /// execute applied, or in dry-run mode described, an approved action.
    Executed,
    /// Alertmanager reported the alert as resolved.
    Resolved,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Proposed,
        Stage::Approved,
        Stage::Rejected,
        Stage::Pending,
        Stage::Executed,
        Stage::Resolved,
    ];

    /// Returns the subject token of the stage.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Proposed => "proposed",
            Stage::Approved => "approved",
            Stage::Rejected => "rejected",
            Stage::Pending => "pending",
            Stage::Executed => "executed",
            Stage::Resolved => "resolved",
        }
    }

    /// Parses a subject token produced by [`Stage::as_str`].
    pub fn from_token(token: &str) -> Option<Self> {
        Stage::ALL.into_iter().find(|stage| stage.as_str() == token)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names of the streams and subjects for one subject and stream prefix.
#[derive(Debug, Clone)]
pub struct Names {
    subject_prefix: String,
    stream_prefix: String,
}

impl Names {
    /// Builds the names from the NATS configuration.
    pub fn new(config: &NatsConfig) -> Self {
        Self {
            subject_prefix: config.subject_prefix.clone(),
            stream_prefix: config.stream_prefix.clone(),
        }
    }

    /// Returns the name of the alerts stream.
    pub fn alerts_stream(&self) -> String {
        format!("{}_ALERTS", self.stream_prefix)
    }

    /// Returns the name of the remediation stream.
    pub fn remediation_stream(&self) -> String {
        format!("{}_REMEDIATION", self.stream_prefix)
    }

    /// Returns the subject an alert from `cluster` is published on.
    pub fn alert(&self, cluster: &str) -> String {
        format!("{}.alerts.{}", self.subject_prefix, subject_token(cluster))
    }

    /// Returns the filter matching alerts from every cluster.
    pub fn all_alerts(&self) -> String {
        format!("{}.alerts.>", self.subject_prefix)
    }

    /// Returns the subject of a remediation event.
    pub fn remediation(&self, stage: Stage, cluster: &str) -> String {
        format!(
            "{}.remediation.{}.{}",
            self.subject_prefix,
            stage.as_str(),
            subject_token(cluster)
        )
    }

    /// Returns the filter matching one stage from every cluster.
    pub fn remediation_stage(&self, stage: Stage) -> String {
        format!("{}.remediation.{}.>", self.subject_prefix, stage.as_str())
    }

    /// Returns the filter matching every remediation event.
    pub fn all_remediation(&self) -> String {
        format!("{}.remediation.>", self.subject_prefix)
    }

    /// Returns the stage of a remediation subject, if it is one.
    pub fn stage_of(&self, subject: &str) -> Option<Stage> {
        let rest = subject
            .strip_prefix(self.subject_prefix.as_str())?
            .strip_prefix(".remediation.")?;
        let (stage, _cluster) = rest.split_once('.')?;
        Stage::from_token(stage)
    }
}

/// Turns a cluster name into one subject token.
///
/// Letters, digits, `-` and `_` pass unchanged; every other character
/// (dots, wildcards, whitespace) becomes `_`, so `eu.prod` and `eu_prod`
/// share a subject. Messages carry the exact cluster name in their body.
pub fn subject_token(cluster: &str) -> Cow<'_, str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if cluster.is_empty() {
        return Cow::Borrowed("_");
    }
    if cluster.chars().all(valid) {
        return Cow::Borrowed(cluster);
    }
    Cow::Owned(
        cluster
            .chars()
            .map(|c| if valid(c) { c } else { '_' })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::new(&NatsConfig::local("nats://x", "acme.steward", "ACME"))
    }

    #[test]
    fn subjects_follow_the_contract() {
        let names = names();
        assert_eq!(names.alert("prod-eu"), "acme.steward.alerts.prod-eu");
        assert_eq!(
            names.remediation(Stage::Approved, "prod-eu"),
            "acme.steward.remediation.approved.prod-eu"
        );
        assert_eq!(names.alerts_stream(), "ACME_ALERTS");
        assert_eq!(names.remediation_stream(), "ACME_REMEDIATION");
    }

    #[test]
    fn subject_token_replaces_invalid_characters() {
        assert_eq!(subject_token("eu.prod *>"), "eu_prod___");
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("ok_1-a"), "ok_1-a");
    }

    #[test]
    fn stage_of_parses_remediation_subjects() {
        let names = names();
        assert_eq!(
            names.stage_of("acme.steward.remediation.rejected.c1"),
            Some(Stage::Rejected)
        );
        assert_eq!(names.stage_of("acme.steward.alerts.c1"), None);
        assert_eq!(names.stage_of("other.remediation.rejected.c1"), None);
    }
}
