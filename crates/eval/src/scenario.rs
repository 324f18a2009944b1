//! Labelled scenarios: alerts as Alertmanager sends them, the objects and
//! action history around them, and which proposals are right or unsafe.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use steward_proto::v1::{Target, TargetKind};

/// One labelled scenario, read from a YAML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique name, equal to the file stem.
    pub name: String,
    /// One sentence on the incident and on what a good operator would do.
    pub summary: String,
    /// Group of the scenario in reports, such as `workload` or
    /// `adversarial`.
    pub category: String,
    /// Alertmanager webhook bodies, in the order they arrive.
    pub webhooks: Vec<Value>,
    /// The Kubernetes objects involved, as the API returns them.
    #[serde(default)]
    pub objects: Vec<Value>,
    /// The action history before the alerts arrived, oldest first.
    #[serde(default)]
    pub history: Vec<PastAction>,
    /// Other alerts that began firing since, in a namespace.
    #[serde(default)]
    pub alerts_since: Vec<LaterAlert>,
    /// The labels: acceptable and forbidden proposals.
    pub expect: Expectation,
}

/// One row of the crafted action history.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PastAction {
    /// Registry action name.
    pub action: String,
    /// `kind/namespace/name`, or `node/name`.
    pub target: String,
    /// Parameters the action ran with.
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
    /// Minutes between the approval and the scenario's alerts.
    pub minutes_ago: i64,
    /// `succeeded` or `failed`.
    pub status: String,
    /// Whether execute's verification saw the effect; unknown when absent.
    #[serde(default)]
    pub effective: Option<bool>,
    /// Minutes after the action finished that the alert resolved; absent
    /// when it did not resolve.
    #[serde(default)]
    pub resolved_after_minutes: Option<i64>,
}

/// An alert that began firing in a namespace after earlier actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaterAlert {
    /// Alert name.
    pub alertname: String,
    /// Namespace it fires in.
    pub namespace: String,
    /// Minutes since it was first seen.
    pub minutes_ago: i64,
}

/// What counts as a right and as an unsafe proposal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Actions that are a right answer.
    pub acceptable: Vec<String>,
    /// The object a right answer acts on, as `kind/namespace/name`;
    /// `notify_only` is exempt.
    #[serde(default)]
    pub target: Option<String>,
    /// Proposals that are unsafe here.
    #[serde(default)]
    pub forbidden: Vec<Forbidden>,
    /// Whether the guard must approve nothing here but `notify_only`.
    #[serde(default)]
    pub guard_blocks: bool,
}

/// An unsafe proposal: an action, or an action with particular parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Forbidden {
    /// The action with any parameters.
    Action(String),
    /// The action with these parameters (others may be safe).
    WithParameters {
        /// Registry action name.
        action: String,
        /// Parameter values that make it unsafe.
        parameters: serde_json::Map<String, Value>,
    },
}

impl Forbidden {
    /// Returns the action name.
    pub fn action(&self) -> &str {
        match self {
            Forbidden::Action(action) | Forbidden::WithParameters { action, .. } => action,
        }
    }

    /// Returns whether a proposal of `action` with `parameters` is this
    /// unsafe proposal.
    pub fn matches(&self, action: &str, parameters: &Value) -> bool {
        match self {
            Forbidden::Action(name) => name == action,
            Forbidden::WithParameters {
                action: name,
                parameters: unsafe_values,
            } => {
                name == action
                    && unsafe_values
                        .iter()
                        .all(|(key, value)| parameters.get(key) == Some(value))
            }
        }
    }
}

/// Parses `kind/namespace/name`, or `node/name` for nodes.
///
/// # Errors
/// Names what is wrong with the text.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let parts: Vec<&str> = text.split('/').collect();
    let (kind, namespace, name) = match parts.as_slice() {
        ["node", name] => ("node", "", *name),
        [kind, namespace, name] => (*kind, *namespace, *name),
        _ => {
            return Err(format!(
                "target {text:?} is not kind/namespace/name (or node/name)"
            ));
        }
    };
    let kind = TargetKind::from_label(kind)
        .ok_or_else(|| format!("target {text:?} has an unknown kind {kind:?}"))?;
    if (kind == TargetKind::Node) != namespace.is_empty() {
        return Err(format!(
            "target {text:?}: nodes have no namespace and every other kind has one"
        ));
    }
    Ok(Target {
        kind: kind as i32,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

impl Scenario {
    /// Checks what parsing cannot: the name, the actions and targets named
    /// by the labels and the history, and that some alert fires.
    ///
    /// # Errors
    /// Names the first problem.
    pub fn check(&self, stem: &str) -> Result<(), String> {
        if self.name != stem {
            return Err(format!(
                "name {:?} differs from the file name {stem:?}",
                self.name
            ));
        }
        if self.webhooks.is_empty() {
            return Err("webhooks is empty".to_owned());
        }
        if self.expect.acceptable.is_empty() {
            return Err("expect.acceptable is empty".to_owned());
        }
        let actions = self
            .expect
            .acceptable
            .iter()
            .map(String::as_str)
            .chain(self.expect.forbidden.iter().map(Forbidden::action))
            .chain(self.history.iter().map(|past| past.action.as_str()));
        for action in actions {
            if steward_actions::find(action).is_none() {
                return Err(format!("action {action:?} is not in the registry"));
            }
        }
        for (index, forbidden) in self.expect.forbidden.iter().enumerate() {
            if let Forbidden::WithParameters { action, parameters } = forbidden {
                let values = steward_actions::parameters_from_json(parameters)
                    .map_err(|e| format!("expect.forbidden[{index}]: {e}"))?;
                let targets = steward_actions::find(action)
                    .map(|spec| spec.targets)
                    .unwrap_or_default();
                let mut last_error = String::new();
                let valid = targets.iter().any(|kind| {
                    match steward_actions::validate(action, *kind, &values) {
                        Ok(_) => true,
                        Err(error) => {
                            last_error = error.to_string();
                            false
                        }
                    }
                });
                if !valid {
                    return Err(format!(
                        "expect.forbidden[{index}]: {action} with these parameters is not a valid proposal ({last_error}), so the guard would reject it as invalid and the probe would prove nothing"
                    ));
                }
            }
            if self
                .expect
                .acceptable
                .iter()
                .any(|a| a == forbidden.action())
                && matches!(forbidden, Forbidden::Action(_))
            {
                return Err(format!(
                    "{} is both acceptable and forbidden",
                    forbidden.action()
                ));
            }
        }
        if let Some(text) = &self.expect.target {
            let target = parse_target(text).map_err(|e| format!("expect.target: {e}"))?;
            steward_actions::validate_target(&target)
                .map_err(|e| format!("expect.target {text:?}: {e}"))?;
            for action in &self.expect.acceptable {
                let applies = steward_actions::find(action)
                    .is_some_and(|spec| spec.targets.contains(&target.kind()));
                if action != steward_actions::NOTIFY_ONLY && !applies {
                    return Err(format!(
                        "expect.acceptable: {action} does not apply to {text}, the expected target"
                    ));
                }
            }
        }
        for (index, past) in self.history.iter().enumerate() {
            let at = |problem: String| format!("history[{index}]: {problem}");
            let target = parse_target(&past.target).map_err(at)?;
            let parameters = steward_actions::parameters_from_json(&past.parameters).map_err(at)?;
            steward_actions::validate(&past.action, target.kind(), &parameters)
                .map_err(|e| at(e.to_string()))?;
            if !matches!(past.status.as_str(), "succeeded" | "failed") {
                return Err(at(format!(
                    "status {:?} is not succeeded or failed",
                    past.status
                )));
            }
            check_minutes("minutes_ago", past.minutes_ago).map_err(at)?;
            if let Some(minutes) = past.resolved_after_minutes {
                check_minutes("resolved_after_minutes", minutes).map_err(at)?;
            }
        }
        for (index, later) in self.alerts_since.iter().enumerate() {
            check_minutes("minutes_ago", later.minutes_ago)
                .map_err(|e| format!("alerts_since[{index}]: {e}"))?;
        }
        Ok(())
    }
}

/// Maximum time a scenario may reach back, in minutes: one year.
const MAX_MINUTES: i64 = 366 * 24 * 60;

fn check_minutes(field: &str, minutes: i64) -> Result<(), String> {
    if (0..=MAX_MINUTES).contains(&minutes) {
        Ok(())
    } else {
        Err(format!(
            "{field} {minutes} is outside 0 to {MAX_MINUTES} (one year)"
        ))
    }
}

/// Loads every `*.yaml` and `*.yml` file of `dir`, sorted by name, and
/// checks each.
///
/// # Errors
/// Names the file and the problem.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Scenario>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("failed to read scenario folder {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    paths.sort();
    anyhow::ensure!(
        !paths.is_empty(),
        "scenario folder {} has no .yaml or .yml files",
        dir.display()
    );

    let mut scenarios = Vec::with_capacity(paths.len());
    let mut names = HashMap::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", path.display()))?;
        let scenario: Scenario = serde_yaml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid scenario {}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or_default();
        scenario
            .check(stem)
            .map_err(|e| anyhow::anyhow!("invalid scenario {}: {e}", path.display()))?;
        if let Some(previous) = names.insert(scenario.name.clone(), path.clone()) {
            anyhow::bail!(
                "scenario name {} is used by {} and {}",
                scenario.name,
                previous.display(),
                path.display()
            );
        }
        scenarios.push(scenario);
    }
    Ok(scenarios)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_parse_with_and_without_namespace() {
        let deployment = parse_target("deployment/shop/checkout").expect("valid");
        let node = parse_target("node/worker-1").expect("valid");

        assert_eq!(deployment.kind(), TargetKind::Deployment);
        assert_eq!(deployment.namespace, "shop");
        assert_eq!(deployment.name, "checkout");
        assert_eq!(node.kind(), TargetKind::Node);
        assert_eq!(node.namespace, "");
    }

    #[test]
    fn malformed_targets_are_named() {
        for (text, expected) in [
            ("checkout", "is not kind/namespace/name"),
            ("gadget/shop/x", "unknown kind"),
            ("node/default/worker-1", "nodes have no namespace"),
            ("pod/web-1", "is not kind/namespace/name"),
        ] {
            let error = parse_target(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn forbidden_parameters_narrow_the_match() {
        let any = Forbidden::Action("scale_deployment".into());
        let upward = Forbidden::WithParameters {
            action: "scale_deployment".into(),
            parameters: json!({"replicas": 8}).as_object().expect("object").clone(),
        };

        assert!(any.matches("scale_deployment", &json!({"replicas": 2})));
        assert!(upward.matches("scale_deployment", &json!({"replicas": 8})));
        assert!(!upward.matches("scale_deployment", &json!({"replicas": 2})));
        assert!(!upward.matches("restart_deployment", &json!({})));
    }

    #[test]
    fn check_rejects_unknown_actions_and_names() {
        let text = r#"
name: sample
summary: s
category: workload
webhooks: [{}]
expect: {acceptable: [restart_everything]}
"#;
        let scenario: Scenario = serde_yaml::from_str(text).expect("parses");

        let wrong_name = scenario.check("other").expect_err("name differs");
        let unknown = scenario.check("sample").expect_err("unknown action");

        assert!(
            wrong_name.contains("differs from the file name"),
            "{wrong_name}"
        );
        assert!(unknown.contains("restart_everything"), "{unknown}");
    }

    fn check_text(text: &str) -> Result<(), String> {
        let scenario: Scenario = serde_yaml::from_str(text).expect("parses");
        scenario.check("sample")
    }

    #[test]
    fn check_rejects_impossible_history_and_labels() {
        let base = "name: sample\nsummary: s\ncategory: workload\nwebhooks: [{}]\n";
        let cases = [
            (
                "history: [{action: scale_deployment, target: deployment/shop/a, parameters: {replicas: lots}, minutes_ago: 3, status: succeeded}]\nexpect: {acceptable: [notify_only]}",
                "history[0]: ",
            ),
            (
                "history: [{action: scale_deployment, target: pod/shop/a, parameters: {replicas: 3}, minutes_ago: 3, status: succeeded}]\nexpect: {acceptable: [notify_only]}",
                "history[0]: ",
            ),
            (
                "history: [{action: restart_deployment, target: deployment/shop/a, minutes_ago: -30, status: succeeded}]\nexpect: {acceptable: [notify_only]}",
                "minutes_ago -30 is outside 0 to 527040",
            ),
            (
                "history: [{action: restart_deployment, target: deployment/shop/a, minutes_ago: 3000000000, status: succeeded}]\nexpect: {acceptable: [notify_only]}",
                "minutes_ago 3000000000 is outside",
            ),
            (
                "expect: {acceptable: [notify_only], forbidden: [{action: scale_deployment, parameters: {replica: 40}}]}",
                "expect.forbidden[0]: scale_deployment with these parameters is not a valid proposal",
            ),
            (
                "expect: {acceptable: [drain_node], target: pod/shop/a}",
                "drain_node does not apply to pod/shop/a",
            ),
            (
                "expect: {acceptable: [notify_only], target: pod/Billing!!/x}",
                "expect.target \"pod/Billing!!/x\"",
            ),
        ];
        for (rest, expected) in cases {
            let error = check_text(&format!("{base}{rest}")).expect_err(rest);
            assert!(error.contains(expected), "{rest}: {error}");
        }
    }
}
