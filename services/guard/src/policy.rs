//! The guard's policy: confidence thresholds, protected namespaces, allowed
//! actions, rate limits, freeze windows, approvals and the detectors'
//! windows. It comes from a YAML file (`--policy`); every field has a
//! default, so an empty file, or none, gives the defaults documented in
//! `docs/guard.md`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use serde::Deserialize;
use steward_actions::Risk;
use steward_store::DetectorSettings;

/// Maximum duration in a policy: one year. A longer one is a typing
/// mistake, and a far longer one overflows Postgres's timestamps.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// The rules a proposal must pass.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Lowest confidence approved, for any risk without its own threshold.
    pub min_confidence: f64,
    /// Lowest confidence approved, per risk level.
    pub min_confidence_by_risk: HashMap<Risk, f64>,
    /// Time after an approval during which the same action on the same
    /// target is rejected.
    pub cooldown: Duration,
    /// Namespaces no action may touch (escalation aside).
    pub denied_namespaces: Vec<String>,
    /// When not empty, the only namespaces actions may touch.
    pub allowed_namespaces: Vec<String>,
    /// Actions allowed in a denied namespace after all.
    pub namespace_exceptions: Vec<NamespaceException>,
    /// Actions allowed per cluster and namespace; a proposal that matches a
    /// rule's scope must name one of its actions.
    pub action_rules: Vec<ActionRule>,
    /// Actions approved per hour in one cluster, escalations aside.
    pub max_actions_per_cluster_per_hour: Option<i64>,
    /// Actions approved per hour in one namespace, escalations aside.
    pub max_actions_per_namespace_per_hour: Option<i64>,
    /// Times in which nothing but escalation is approved.
    pub freeze_windows: Vec<FreezeWindow>,
    /// Actions that need a person's approval.
    pub require_approval: Vec<String>,
    /// Actions of this risk or above need a person's approval.
    pub require_approval_from_risk: Option<Risk>,
    /// Time a pending proposal waits for a person before it is rejected.
    pub approval_timeout: Duration,
    /// Windows and thresholds of the oscillation detectors.
    pub detectors: DetectorSettings,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_confidence: 0.7,
            min_confidence_by_risk: HashMap::new(),
            cooldown: Duration::from_secs(300),
            denied_namespaces: vec!["kube-system".to_owned(), "monitoring".to_owned()],
            allowed_namespaces: Vec::new(),
            namespace_exceptions: Vec::new(),
            action_rules: Vec::new(),
            max_actions_per_cluster_per_hour: None,
            max_actions_per_namespace_per_hour: None,
            freeze_windows: Vec::new(),
            require_approval: Vec::new(),
            require_approval_from_risk: Some(Risk::High),
            approval_timeout: Duration::from_secs(30 * 60),
            detectors: DetectorSettings::default(),
        }
    }
}

/// Actions allowed in one denied namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceException {
    /// The namespace.
    pub namespace: String,
    /// Actions allowed there.
    pub actions: Vec<String>,
}

/// Actions allowed in a scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    /// Cluster the rule applies to; every cluster when absent.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Namespace the rule applies to; every namespace when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Actions allowed in the scope.
    pub allow: Vec<String>,
}

impl ActionRule {
    fn applies(&self, cluster: &str, namespace: &str) -> bool {
        self.cluster.as_deref().is_none_or(|c| c == cluster)
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

/// A time in which only escalation is approved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// Name shown in the rejection.
    pub name: String,
    /// Start of a one-off window.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// End of a one-off window.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Weekdays of a weekly window, in UTC (`mon` .. `sun`).
    #[serde(default)]
    pub days: Vec<String>,
    /// Start time of a weekly window on each of its days, `HH:MM` UTC;
    /// midnight when absent.
    #[serde(default)]
    pub from_time: Option<String>,
    /// End time of a weekly window, `HH:MM` UTC; the end of the day when
    /// absent or `24:00`. A time at or before `from_time` ends the window
    /// on the next day, so `22:00` to `06:00` spans the night.
    #[serde(default)]
    pub until_time: Option<String>,
}

impl FreezeWindow {
    /// Returns whether `now` is inside the window.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        if let (Some(from), Some(until)) = (self.from, self.until) {
            return from <= now && now < until;
        }
        if self.days.is_empty() {
            return false;
        }
        let starts_on = |day: Weekday| self.days.iter().any(|d| parse_weekday(d) == Some(day));
        let time = now.time();
        let (start, end) = self.times();
        match end {
            // Ends on the day it starts.
            None => starts_on(now.weekday()) && start <= time,
            Some(end) if start < end => starts_on(now.weekday()) && start <= time && time < end,
            // Runs past midnight: the evening of a listed day, or the
            // morning after one.
            Some(end) => {
                (starts_on(now.weekday()) && start <= time)
                    || (starts_on(now.weekday().pred()) && time < end)
            }
        }
    }

    /// Start and end time of a weekly window; no end means the end of the
    /// day.
    fn times(&self) -> (NaiveTime, Option<NaiveTime>) {
        let start = self
            .from_time
            .as_deref()
            .and_then(parse_time)
            .flatten()
            .unwrap_or(NaiveTime::MIN);
        let end = self.until_time.as_deref().and_then(parse_time).flatten();
        (start, end)
    }

    fn validate(&self) -> Result<(), String> {
        let weekly_times = self.from_time.is_some() || self.until_time.is_some();
        match (self.from, self.until, self.days.is_empty()) {
            (Some(from), Some(until), true) if from < until && !weekly_times => {}
            (Some(_), Some(_), true) if weekly_times => {
                return Err(format!(
                    "freeze window {}: from_time and until_time belong to a weekly window (with days); a window with from and until covers every moment between them",
                    self.name
                ));
            }
            (Some(_), Some(_), true) => {
                return Err(format!(
                    "freeze window {}: from must be before until",
                    self.name
                ));
            }
            (None, None, false) => {}
            _ => {
                return Err(format!(
                    "freeze window {}: give either from and until, or days (with from_time and until_time)",
                    self.name
                ));
            }
        }
        for day in &self.days {
            if parse_weekday(day).is_none() {
                return Err(format!(
                    "freeze window {}: {day:?} is not a weekday (mon .. sun)",
                    self.name
                ));
            }
        }
        if let Some(time) = &self.from_time {
            if !matches!(parse_time(time), Some(Some(_))) {
                return Err(format!(
                    "freeze window {}: from_time {time:?} is not a time of day (HH:MM, 00:00 to 23:59)",
                    self.name
                ));
            }
        }
        if let Some(time) = &self.until_time {
            if parse_time(time).is_none() {
                return Err(format!(
                    "freeze window {}: until_time {time:?} is not a time of day (HH:MM, 00:00 to 24:00)",
                    self.name
                ));
            }
        }
        let (start, end) = self.times();
        if end == Some(start) {
            return Err(format!(
                "freeze window {}: from_time and until_time are both {}, so the window is empty; leave out until_time to freeze the rest of the day",
                self.name,
                start.format("%H:%M")
            ));
        }
        Ok(())
    }
}

fn parse_weekday(day: &str) -> Option<Weekday> {
    day.parse().ok()
}

/// Parses `HH:MM`; `24:00` is the end of the day, `Some(None)`.
fn parse_time(time: &str) -> Option<Option<NaiveTime>> {
    if time == "24:00" {
        return Some(None);
    }
    // chrono also accepts `1:05`, but the policy requires two digits each.
    if time.len() != 5 {
        return None;
    }
    NaiveTime::parse_from_str(time, "%H:%M").ok().map(Some)
}

/// The policy file; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    min_confidence: Option<f64>,
    #[serde(default)]
    min_confidence_by_risk: HashMap<String, f64>,
    #[serde(default, with = "humantime_serde_option")]
    cooldown: Option<Duration>,
    namespaces: Option<NamespacesFile>,
    #[serde(default)]
    actions: Vec<ActionRule>,
    rate_limits: Option<RateLimitsFile>,
    #[serde(default)]
    freeze_windows: Vec<FreezeWindow>,
    approval: Option<ApprovalFile>,
    detectors: Option<DetectorsFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesFile {
    denied: Option<Vec<String>>,
    #[serde(default)]
    allowed: Vec<String>,
    #[serde(default)]
    exceptions: Vec<NamespaceException>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitsFile {
    per_cluster_per_hour: Option<i64>,
    per_namespace_per_hour: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalFile {
    #[serde(default)]
    actions: Vec<String>,
    /// `low`, `medium`, `high` or `none`.
    from_risk: Option<String>,
    #[serde(default, with = "humantime_serde_option")]
    timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorsFile {
    #[serde(default, with = "humantime_serde_option")]
    scale_window: Option<Duration>,
    scale_min_changes: Option<i32>,
    #[serde(default, with = "humantime_serde_option")]
    thrashing_window: Option<Duration>,
    thrashing_min_alternations: Option<i32>,
    #[serde(default, with = "humantime_serde_option")]
    ineffective_window: Option<Duration>,
    ineffective_min_repeats: Option<i32>,
    #[serde(default, with = "humantime_serde_option")]
    settle: Option<Duration>,
    #[serde(default, with = "humantime_serde_option")]
    cascade_window: Option<Duration>,
    cascade_min_new_alerts: Option<i32>,
    failure_threshold: Option<i32>,
    #[serde(default, with = "humantime_serde_option")]
    failure_block: Option<Duration>,
}

impl DetectorsFile {
    /// Rejects counts below 1 and empty windows, which would switch a
    /// detector off without a word.
    fn validate(&self) -> Result<(), String> {
        let counts = [
            ("scale_min_changes", self.scale_min_changes),
            (
                "thrashing_min_alternations",
                self.thrashing_min_alternations,
            ),
            ("ineffective_min_repeats", self.ineffective_min_repeats),
            ("cascade_min_new_alerts", self.cascade_min_new_alerts),
            ("failure_threshold", self.failure_threshold),
        ];
        for (field, value) in counts {
            if let Some(value) = value.filter(|value| *value < 1) {
                return Err(format!(
                    "detectors.{field} is {value}; it must be 1 or more"
                ));
            }
        }
        let windows = [
            ("scale_window", self.scale_window),
            ("thrashing_window", self.thrashing_window),
            ("ineffective_window", self.ineffective_window),
            ("cascade_window", self.cascade_window),
            ("failure_block", self.failure_block),
        ];
        for (field, value) in windows {
            if value.is_some_and(|value| value.is_zero()) {
                return Err(format!(
                    "detectors.{field} is 0s, which would switch the detector off; give it a length such as 30m"
                ));
            }
        }
        Ok(())
    }
}

/// Durations in the policy file are written as people do: `45m`, `2h`.
mod humantime_serde_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|text| {
            humantime::parse_duration(&text).map_err(|error| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration ({error}); write it as 30s, 45m or 2h"
                ))
            })
        })
        .transpose()
    }
}

fn parse_risk(value: &str) -> Result<Risk, String> {
    match value {
        "low" => Ok(Risk::Low),
        "medium" => Ok(Risk::Medium),
        "high" => Ok(Risk::High),
        other => Err(format!("{other:?} is not a risk level (low, medium, high)")),
    }
}

impl Policy {
    /// Reads the policy from a YAML file.
    ///
    /// # Errors
    /// Fails when the file cannot be read or parsed, or names an unknown
    /// action, risk level, weekday or time, with the file and the problem.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read the policy file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("policy file {}: {e}", path.display()))
    }

    /// Parses a policy from YAML text.
    ///
    /// # Errors
    /// As [`Policy::load`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        let mut policy = Policy::default();

        if let Some(value) = file.min_confidence {
            policy.min_confidence = check_confidence(value)?;
        }
        for (risk, value) in file.min_confidence_by_risk {
            policy
                .min_confidence_by_risk
                .insert(parse_risk(&risk)?, check_confidence(value)?);
        }
        if let Some(cooldown) = file.cooldown {
            policy.cooldown = cooldown;
        }
        if let Some(namespaces) = file.namespaces {
            if let Some(denied) = namespaces.denied {
                policy.denied_namespaces = denied;
            }
            policy.allowed_namespaces = namespaces.allowed;
            policy.namespace_exceptions = namespaces.exceptions;
        }
        policy.action_rules = file.actions;
        if let Some(limits) = file.rate_limits {
            for (field, value) in [
                ("per_cluster_per_hour", limits.per_cluster_per_hour),
                ("per_namespace_per_hour", limits.per_namespace_per_hour),
            ] {
                if value.is_some_and(|value| value < 0) {
                    return Err(format!(
                        "rate_limits.{field} is {}; it must be 0 or more",
                        value.unwrap_or_default()
                    ));
                }
            }
            policy.max_actions_per_cluster_per_hour = limits.per_cluster_per_hour;
            policy.max_actions_per_namespace_per_hour = limits.per_namespace_per_hour;
        }
        for window in &file.freeze_windows {
            window.validate()?;
        }
        policy.freeze_windows = file.freeze_windows;
        if let Some(approval) = file.approval {
            policy.require_approval = approval.actions;
            if let Some(risk) = approval.from_risk {
                policy.require_approval_from_risk = match risk.as_str() {
                    "none" => None,
                    other => Some(parse_risk(other)?),
                };
            }
            if let Some(timeout) = approval.timeout {
                if timeout.is_zero() {
                    return Err(
                        "approval.timeout is 0s, which would reject every held proposal at once"
                            .to_owned(),
                    );
                }
                policy.approval_timeout = timeout;
            }
        }
        if let Some(d) = file.detectors {
            d.validate()?;
            let s = &mut policy.detectors;
            s.scale_window = d.scale_window.unwrap_or(s.scale_window);
            s.scale_min_changes = d.scale_min_changes.unwrap_or(s.scale_min_changes);
            s.thrashing_window = d.thrashing_window.unwrap_or(s.thrashing_window);
            s.thrashing_min_alternations = d
                .thrashing_min_alternations
                .unwrap_or(s.thrashing_min_alternations);
            s.ineffective_window = d.ineffective_window.unwrap_or(s.ineffective_window);
            s.ineffective_min_repeats = d
                .ineffective_min_repeats
                .unwrap_or(s.ineffective_min_repeats);
            s.settle = d.settle.unwrap_or(s.settle);
            s.cascade_window = d.cascade_window.unwrap_or(s.cascade_window);
            s.cascade_min_new_alerts = d.cascade_min_new_alerts.unwrap_or(s.cascade_min_new_alerts);
            s.failure_threshold = d.failure_threshold.unwrap_or(s.failure_threshold);
            s.failure_block = d.failure_block.unwrap_or(s.failure_block);
        }

        let named = policy
            .require_approval
            .iter()
            .chain(policy.action_rules.iter().flat_map(|rule| &rule.allow))
            .chain(policy.namespace_exceptions.iter().flat_map(|e| &e.actions));
        for action in named {
            if steward_actions::find(action).is_none() {
                return Err(format!("action {action:?} is not in the registry"));
            }
        }
        policy.check_durations()?;
        Ok(policy)
    }

    /// Returns the durations that say how far back the cooldown and the
    /// detectors read the history, with their field names.
    fn lookbacks(&self) -> [(&'static str, Duration); 6] {
        let d = &self.detectors;
        [
            ("cooldown", self.cooldown),
            ("detectors.scale_window", d.scale_window),
            ("detectors.thrashing_window", d.thrashing_window),
            ("detectors.ineffective_window", d.ineffective_window),
            ("detectors.cascade_window", d.cascade_window),
            ("detectors.failure_block", d.failure_block),
        ]
    }

    /// Checks that every duration fits in the history's timestamps: none
    /// may exceed [`MAX_DURATION`].
    ///
    /// # Errors
    /// Names the first duration that is too long.
    pub fn check_durations(&self) -> Result<(), String> {
        let others = [
            ("approval.timeout", self.approval_timeout),
            ("detectors.settle", self.detectors.settle),
        ];
        for (field, value) in self.lookbacks().into_iter().chain(others) {
            if value > MAX_DURATION {
                return Err(format!(
                    "{field} is {}; it must be at most {}d",
                    humantime::format_duration(value),
                    MAX_DURATION.as_secs() / 86_400
                ));
            }
        }
        Ok(())
    }

    /// Returns the longest time back that the cooldown and the detectors
    /// read the history, and the field that sets it.
    pub fn longest_lookback(&self) -> (&'static str, Duration) {
        self.lookbacks()
            .into_iter()
            .max_by_key(|(_, value)| *value)
            .unwrap_or(("cooldown", self.cooldown))
    }

    /// Returns the confidence threshold of a risk level.
    pub fn threshold(&self, risk: Risk) -> f64 {
        self.min_confidence_by_risk
            .get(&risk)
            .copied()
            .unwrap_or(self.min_confidence)
    }

    /// Returns the freeze window `now` is in, if any.
    pub fn freeze(&self, now: DateTime<Utc>) -> Option<&FreezeWindow> {
        self.freeze_windows
            .iter()
            .find(|window| window.contains(now))
    }

    /// Returns why the namespace is off limits for `action`, if it is.
    pub fn namespace_refusal(&self, namespace: &str, action: &str) -> Option<String> {
        if namespace.is_empty() {
            return None;
        }
        let excepted = self
            .namespace_exceptions
            .iter()
            .any(|e| e.namespace == namespace && e.actions.iter().any(|a| a == action));
        if self.denied_namespaces.iter().any(|n| n == namespace) && !excepted {
            return Some(format!(
                "namespace {namespace} is protected: the policy denies actions there"
            ));
        }
        if !self.allowed_namespaces.is_empty()
            && !self.allowed_namespaces.iter().any(|n| n == namespace)
        {
            return Some(format!(
                "namespace {namespace} is not among the namespaces the policy allows ({})",
                self.allowed_namespaces.join(", ")
            ));
        }
        None
    }

    /// Returns why `action` is not allowed in the scope, if it is not.
    pub fn action_refusal(&self, cluster: &str, namespace: &str, action: &str) -> Option<String> {
        let rule = self
            .action_rules
            .iter()
            .find(|rule| rule.applies(cluster, namespace))?;
        if rule.allow.iter().any(|a| a == action) {
            return None;
        }
        Some(format!(
            "the policy allows only {} in cluster {cluster}{}",
            rule.allow.join(", "),
            rule.namespace
                .as_deref()
                .map(|n| format!(" namespace {n}"))
                .unwrap_or_default()
        ))
    }

    /// Returns whether `action` of `risk` needs a person's approval.
    pub fn needs_approval(&self, action: &str, risk: Risk) -> bool {
        self.require_approval.iter().any(|a| a == action)
            || self
                .require_approval_from_risk
                .is_some_and(|from| risk >= from)
    }
}

fn check_confidence(value: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("confidence threshold {value} is outside [0, 1]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
min_confidence: 0.75
min_confidence_by_risk: {high: 0.9}
cooldown: 10m
namespaces:
  denied: [kube-system]
  exceptions:
    - {namespace: kube-system, actions: [restart_network_component]}
actions:
  - {cluster: prod, namespace: payments, allow: [restart_deployment]}
rate_limits: {per_cluster_per_hour: 20, per_namespace_per_hour: 5}
freeze_windows:
  - {name: black-friday, from: "2026-11-27T00:00:00Z", until: "2026-11-30T00:00:00Z"}
  - {name: weekend, days: [sat, sun]}
approval:
  actions: [failover_database]
  from_risk: none
  timeout: 15m
detectors:
  scale_window: 2h
  failure_threshold: 5
"#;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn empty_policy_has_safe_defaults() {
        let policy = Policy::parse("").expect("defaults");
        assert_eq!(policy.threshold(Risk::High), 0.7);
        assert!(
            policy
                .namespace_refusal("kube-system", "restart_deployment")
                .is_some()
        );
        assert!(
            policy
                .namespace_refusal("monitoring", "restart_deployment")
                .is_some()
        );
        assert!(policy.needs_approval("drain_node", Risk::High));
        assert!(!policy.needs_approval("restart_deployment", Risk::Medium));
    }

    #[test]
    fn file_overrides_defaults() {
        let policy = Policy::parse(FILE).expect("valid file");
        assert_eq!(policy.threshold(Risk::High), 0.9);
        assert_eq!(policy.threshold(Risk::Medium), 0.75);
        assert_eq!(policy.cooldown, Duration::from_secs(600));
        assert_eq!(policy.detectors.scale_window, Duration::from_secs(7200));
        assert_eq!(policy.detectors.failure_threshold, 5);
        assert_eq!(policy.approval_timeout, Duration::from_secs(900));
        assert!(policy.needs_approval("failover_database", Risk::High));
        assert!(!policy.needs_approval("drain_node", Risk::High));
        assert_eq!(policy.max_actions_per_namespace_per_hour, Some(5));
    }

    #[test]
    fn exceptions_open_a_protected_namespace_for_named_actions() {
        let policy = Policy::parse(FILE).expect("valid file");
        assert_eq!(
            policy.namespace_refusal("kube-system", "restart_network_component"),
            None
        );
        assert!(
            policy
                .namespace_refusal("kube-system", "restart_daemonset")
                .is_some()
        );
        assert_eq!(
            policy.namespace_refusal("monitoring", "restart_deployment"),
            None
        );
    }

    #[test]
    fn action_rules_limit_their_scope_only() {
        let policy = Policy::parse(FILE).expect("valid file");
        assert_eq!(
            policy.action_refusal("prod", "payments", "restart_deployment"),
            None
        );
        let refusal = policy
            .action_refusal("prod", "payments", "scale_deployment")
            .expect("refused");
        assert_eq!(
            refusal,
            "the policy allows only restart_deployment in cluster prod namespace payments"
        );
        assert_eq!(
            policy.action_refusal("prod", "shop", "scale_deployment"),
            None
        );
    }

    #[test]
    fn freeze_windows_match_dates_and_weekdays() {
        let policy = Policy::parse(FILE).expect("valid file");
        assert_eq!(
            policy
                .freeze(at("2026-11-28T12:00:00Z"))
                .map(|w| w.name.as_str()),
            Some("black-friday")
        );
        // 2026-12-05 is a Saturday.
        assert_eq!(
            policy
                .freeze(at("2026-12-05T03:00:00Z"))
                .map(|w| w.name.as_str()),
            Some("weekend")
        );
        assert!(policy.freeze(at("2026-12-03T12:00:00Z")).is_none());
    }

    #[test]
    fn longest_lookback_names_its_field() {
        let defaults = Policy::parse("").expect("defaults");
        let custom = Policy::parse("cooldown: 3h").expect("valid file");

        assert_eq!(
            defaults.longest_lookback(),
            ("detectors.ineffective_window", Duration::from_secs(7200))
        );
        assert_eq!(
            custom.longest_lookback(),
            ("cooldown", Duration::from_secs(3 * 3600))
        );
    }

    #[test]
    fn weekly_window_runs_past_midnight() {
        let policy = Policy::parse(
            "freeze_windows: [{name: nightly, days: [fri], from_time: \"22:00\", until_time: \"06:00\"}]",
        )
        .expect("valid file");
        let frozen = |time: &str| policy.freeze(at(time)).is_some();
        // 2026-12-04 is a Friday.
        assert!(!frozen("2026-12-04T21:59:00Z"));
        assert!(frozen("2026-12-04T22:00:00Z"));
        assert!(
            frozen("2026-12-05T00:23:00Z"),
            "Saturday morning after Friday"
        );
        assert!(frozen("2026-12-05T05:59:00Z"));
        assert!(!frozen("2026-12-05T06:00:00Z"));
        assert!(!frozen("2026-12-05T22:30:00Z"), "Saturday is not listed");
        assert!(!frozen("2026-12-04T03:00:00Z"), "Thursday is not listed");
    }

    #[test]
    fn weekly_window_may_end_at_midnight() {
        let policy = Policy::parse(
            "freeze_windows: [{name: evening, days: [fri], from_time: \"18:00\", until_time: \"24:00\"}]",
        )
        .expect("valid file");
        assert!(policy.freeze(at("2026-12-04T23:59:30Z")).is_some());
        assert!(policy.freeze(at("2026-12-05T00:00:00Z")).is_none());
    }

    #[test]
    fn ambiguous_or_empty_windows_are_rejected() {
        let error = Policy::parse(
            "freeze_windows: [{name: x, days: [mon], from_time: \"10:00\", until_time: \"10:00\"}]",
        )
        .expect_err("empty window");
        assert!(error.contains("the window is empty"), "{error}");
        let error = Policy::parse(
            "freeze_windows: [{name: x, from: \"2020-01-01T00:00:00Z\", until: \"2099-01-01T00:00:00Z\", from_time: \"09:00\"}]",
        )
        .expect_err("mixed forms");
        assert!(error.contains("belong to a weekly window"), "{error}");
        let error = Policy::parse("freeze_windows: [{name: x, days: [mon], from_time: \"24:00\"}]")
            .expect_err("start at the end of the day");
        assert!(error.contains("from_time \"24:00\""), "{error}");
        let error = Policy::parse("freeze_windows: [{name: x, days: [mon], from_time: \"1:05\"}]")
            .expect_err("one-digit hour");
        assert!(error.contains("from_time \"1:05\""), "{error}");
    }

    #[test]
    fn rule_switching_values_are_rejected() {
        let error = Policy::parse("rate_limits: {per_cluster_per_hour: -5}").expect_err("negative");
        assert_eq!(
            error,
            "rate_limits.per_cluster_per_hour is -5; it must be 0 or more"
        );
        let error = Policy::parse("detectors: {failure_threshold: 0}").expect_err("zero count");
        assert_eq!(
            error,
            "detectors.failure_threshold is 0; it must be 1 or more"
        );
        let error = Policy::parse("detectors: {scale_window: 0s}").expect_err("empty window");
        assert!(error.starts_with("detectors.scale_window is 0s"), "{error}");
        let error = Policy::parse("approval: {timeout: 0s}").expect_err("zero timeout");
        assert!(error.starts_with("approval.timeout is 0s"), "{error}");
        let error = Policy::parse("cooldown: 1000000y").expect_err("too long");
        assert!(error.starts_with("cooldown is 1000000years"), "{error}");
        assert!(error.ends_with("it must be at most 366d"), "{error}");
        let error =
            Policy::parse("detectors: {scale_window: 300000y}").expect_err("too long a window");
        assert!(error.starts_with("detectors.scale_window is"), "{error}");
        let error = Policy::parse("cooldown: -5m").expect_err("negative duration");
        assert!(error.contains("\"-5m\" is not a duration"), "{error}");
    }

    #[test]
    fn unknown_names_are_rejected() {
        let error =
            Policy::parse("approval: {actions: [reboot_cluster]}").expect_err("unknown action");
        assert_eq!(error, "action \"reboot_cluster\" is not in the registry");
        let error =
            Policy::parse("freeze_windows: [{name: w, days: [funday]}]").expect_err("bad day");
        assert!(error.contains("\"funday\" is not a weekday"), "{error}");
        let error = Policy::parse("min_confidence: 1.5").expect_err("bad threshold");
        assert!(error.contains("outside [0, 1]"), "{error}");
        let error = Policy::parse("colldown: 5m").expect_err("unknown field");
        assert!(error.contains("unknown field `colldown`"), "{error}");
    }
}
