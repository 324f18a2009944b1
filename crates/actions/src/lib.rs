//! The registry of remediation actions: the only actions Steward may take.
//!
//! Each action carries its name, category, a one-line description for the
//! prompt, a typed parameter schema with bounds and defaults, the target
//! kinds it applies to, a risk level and the Kubernetes permissions it
//! needs. Analyzers may only choose from here, [`validate`] checks every
//! choice before the guard sees it, and the RBAC role in `deploy/` and the
//! action table in `docs/` are generated from it ([`rbac`], [`docs`]).

pub mod docs;
pub mod jobs;
mod params;
pub mod rbac;
mod registry;
mod target;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use steward_proto::v1::{ParameterValue, TargetKind};

pub use params::{
    DefaultValue, Param, ParamKind, ParamSpec, Parameters, Requirement, TextRule,
    parameters_from_json, parameters_to_json, parse_quantity,
};
pub use registry::REGISTRY;
pub use target::{TargetError, is_dns_label, is_dns_subdomain, validate_target};

/// How much damage an action can do when it is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Changes nothing, or only adds capacity or information.
    Low,
    /// Restarts or replaces running pods.
    Medium,
    /// Removes capacity or data, cuts traffic, or affects a whole node.
    High,
}

impl Risk {
    /// Returns the lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// The area an action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Deployments, stateful sets, daemon sets, pods, jobs and autoscalers.
    Workload,
    /// Nodes.
    Node,
    /// Volumes and the data on them.
    Storage,
    /// Network isolation, secrets and evidence.
    Security,
    /// Cluster networking and service meshes.
    Network,
    /// Databases run as stateful sets.
    Database,
    /// Logging and profiling.
    Monitoring,
    /// Escalation to people without changing anything.
    Escalation,
}

impl Category {
    /// Returns the lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Workload => "workload",
            Category::Node => "node",
            Category::Storage => "storage",
            Category::Security => "security",
            Category::Network => "network",
            Category::Database => "database",
            Category::Monitoring => "monitoring",
            Category::Escalation => "escalation",
        }
    }
}

/// A Kubernetes permission an action needs, for the RBAC role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group; empty for the core group.
    pub api_group: &'static str,
    /// Resource, with a subresource after a slash (`deployments/scale`).
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// An action of the registry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActionSpec {
    /// Unique name, as analyzers choose it.
    pub name: &'static str,
    /// Area.
    pub category: Category,
    /// One line for the prompt and the docs.
    pub description: &'static str,
    /// Parameters.
    pub params: &'static [ParamSpec],
    /// Target kinds it applies to.
    pub targets: &'static [TargetKind],
    /// Risk level.
    pub risk: Risk,
    /// Kubernetes permissions it needs.
    pub permissions: &'static [Permission],
    /// It runs the Job template configured for the target's workload
    /// instead of a generic API call, so it is offered only where one is
    /// configured.
    pub job_template: bool,
}

/// Name of the action that changes nothing and escalates to people.
pub const NOTIFY_ONLY: &str = "notify_only";

/// Returns the action called `name`.
pub fn find(name: &str) -> Option<&'static ActionSpec> {
    REGISTRY.iter().find(|spec| spec.name == name)
}

/// Returns the actions that apply to targets of `kind`.
pub fn for_target(kind: TargetKind) -> impl Iterator<Item = &'static ActionSpec> {
    REGISTRY
        .iter()
        .filter(move |spec| spec.targets.contains(&kind))
}

/// Why an action choice is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// The action is not in the registry.
    #[error("action {0:?} is not in the registry")]
    UnknownAction(String),
    /// The action does not apply to the target's kind.
    #[error("action {action} does not apply to a {kind} target")]
    WrongTarget {
        /// Action name.
        action: &'static str,
        /// Target kind label.
        kind: &'static str,
    },
    /// A parameter the action does not define.
    #[error("action {action} has no parameter {name:?}")]
    UnknownParameter {
        /// Action name.
        action: &'static str,
        /// Parameter name.
        name: String,
    },
    /// A required parameter is missing.
    #[error("action {action} requires parameter {name}")]
    MissingParameter {
        /// Action name.
        action: &'static str,
        /// Parameter name.
        name: &'static str,
    },
    /// A parameter has the wrong type.
    #[error("parameter {name} of {action} must be {expected}, got {got}")]
    WrongType {
        /// Action name.
        action: &'static str,
        /// Parameter name.
        name: &'static str,
        /// Expected type.
        expected: &'static str,
        /// The value received.
        got: String,
    },
    /// A parameter is outside its bounds.
    #[error("parameter {name} of {action} is {value}, outside {min}..={max}")]
    OutOfRange {
        /// Action name.
        action: &'static str,
        /// Parameter name.
        name: &'static str,
        /// The value received.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A text parameter breaks its rule.
    #[error("parameter {name} of {action} is {value:?}, which is not {rule}")]
    BadText {
        /// Action name.
        action: &'static str,
        /// Parameter name.
        name: &'static str,
        /// The value received.
        value: String,
        /// What the value must be.
        rule: &'static str,
    },
}

/// Checks an action choice against the registry: the action exists,
/// applies to `target`, and every parameter is known, typed and in bounds.
///
/// # Errors
/// Returns the first problem found.
pub fn validate(
    action: &str,
    target: TargetKind,
    params: &HashMap<String, ParameterValue>,
) -> Result<(&'static ActionSpec, Parameters), ValidationError> {
    let spec = find(action).ok_or_else(|| ValidationError::UnknownAction(action.to_owned()))?;
    if !spec.targets.contains(&target) {
        return Err(ValidationError::WrongTarget {
            action: spec.name,
            kind: target.label(),
        });
    }
    if let Some(name) = params
        .keys()
        .find(|name| !spec.params.iter().any(|param| param.name == name.as_str()))
    {
        return Err(ValidationError::UnknownParameter {
            action: spec.name,
            name: name.clone(),
        });
    }

    let mut values = BTreeMap::new();
    for param in spec.params {
        let given = params.get(param.name).and_then(|value| value.kind.as_ref());
        let Some(given) = given else {
            match param.requirement {
                Requirement::Required => {
                    return Err(ValidationError::MissingParameter {
                        action: spec.name,
                        name: param.name,
                    });
                }
                Requirement::Default(DefaultValue::Integer(value)) => {
                    values.insert(param.name, Param::Integer(value));
                }
                Requirement::Default(DefaultValue::Bool(value)) => {
                    values.insert(param.name, Param::Bool(value));
                }
                Requirement::Optional => {}
            }
            continue;
        };
        let value = params::check_value(param, given).map_err(|error| match error {
            params::CheckError::OutOfRange { value, min, max } => ValidationError::OutOfRange {
                action: spec.name,
                name: param.name,
                value,
                min,
                max,
            },
            params::CheckError::Rule { value, rule } => ValidationError::BadText {
                action: spec.name,
                name: param.name,
                value,
                rule,
            },
            params::CheckError::Type { expected, got } => ValidationError::WrongType {
                action: spec.name,
                name: param.name,
                expected,
                got,
            },
        })?;
        values.insert(param.name, value);
    }
    Ok((spec, Parameters(values)))
}

/// Returns the JSON schema of an action's parameters object.
pub fn parameters_schema(spec: &ActionSpec) -> Value {
    let properties: serde_json::Map<String, Value> = spec
        .params
        .iter()
        .map(|param| (param.name.to_owned(), param.schema()))
        .collect();
    let required: Vec<&str> = spec
        .params
        .iter()
        .filter(|param| param.requirement == Requirement::Required)
        .map(|param| param.name)
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_proto::v1::parameter_value::Kind as ValueKind;

    fn int(value: i64) -> ParameterValue {
        ParameterValue {
            kind: Some(ValueKind::IntValue(value)),
        }
    }

    fn string(value: &str) -> ParameterValue {
        ParameterValue {
            kind: Some(ValueKind::StringValue(value.to_owned())),
        }
    }

    fn target(kind: TargetKind, namespace: &str, name: &str) -> steward_proto::v1::Target {
        steward_proto::v1::Target {
            kind: kind as i32,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn registry_has_every_advertised_action() {
        assert!(REGISTRY.len() >= 26, "{} actions", REGISTRY.len());
        for (index, spec) in REGISTRY.iter().enumerate() {
            assert!(
                REGISTRY[index + 1..]
                    .iter()
                    .all(|other| other.name != spec.name),
                "{} appears twice",
                spec.name
            );
            assert!(!spec.targets.is_empty(), "{} applies to nothing", spec.name);
            assert!(
                spec.name == NOTIFY_ONLY || !spec.permissions.is_empty(),
                "{} needs no permission",
                spec.name
            );
        }
    }

    #[test]
    fn targets_with_path_characters_are_invalid() {
        for namespace in [
            "kube-system/deployments/coredns#",
            "kube-system/deployments/coredns?x=",
            "../kube-system",
            "kube system",
            "Shop",
            "a.b",
            "-shop",
            &"n".repeat(64),
        ] {
            let error = validate_target(&target(TargetKind::Deployment, namespace, "web"));
            assert_eq!(
                error,
                Err(TargetError::Namespace(namespace.to_owned())),
                "{namespace:?}"
            );
        }
        for name in ["../x", "web#", "Web", "", "web/scale", &"n".repeat(254)] {
            let error = validate_target(&target(TargetKind::Deployment, "shop", name));
            assert_eq!(error, Err(TargetError::Name(name.to_owned())), "{name:?}");
        }
    }

    #[test]
    fn valid_targets_pass() {
        assert_eq!(
            validate_target(&target(TargetKind::Deployment, "shop", "web.v2")),
            Ok(())
        );
        assert_eq!(
            validate_target(&target(TargetKind::Node, "", "worker-1.eu")),
            Ok(())
        );
        assert_eq!(
            validate_target(&target(TargetKind::Unspecified, "", "")),
            Ok(())
        );
    }

    #[test]
    fn target_scope_must_match_the_kind() {
        assert!(validate_target(&target(TargetKind::Node, "shop", "worker-1")).is_err());
        assert!(validate_target(&target(TargetKind::Pod, "", "web-1")).is_err());
        assert!(validate_target(&target(TargetKind::Unspecified, "", "x")).is_err());
    }

    #[test]
    fn validate_fills_defaults() {
        let (_, params) = validate("delete_pod", TargetKind::Pod, &HashMap::new()).expect("valid");
        assert_eq!(params.integer("grace_period_seconds"), Some(30));
        let (_, params) =
            validate("quarantine_pod", TargetKind::Pod, &HashMap::new()).expect("valid");
        assert_eq!(params.boolean("allow_dns"), Some(false));
        assert_eq!(params.text("investigation_namespace"), None);
    }

    #[test]
    fn validate_rejects_unknown_action() {
        let error = validate("rm_rf", TargetKind::Pod, &HashMap::new()).expect_err("unknown");
        assert_eq!(error, ValidationError::UnknownAction("rm_rf".into()));
    }

    #[test]
    fn validate_rejects_wrong_target_kind() {
        let error = validate("restart_deployment", TargetKind::Node, &HashMap::new())
            .expect_err("wrong kind");
        assert_eq!(
            error.to_string(),
            "action restart_deployment does not apply to a node target"
        );
    }

    #[test]
    fn validate_rejects_missing_required_parameter() {
        let error = validate("scale_deployment", TargetKind::Deployment, &HashMap::new())
            .expect_err("missing");
        assert_eq!(
            error.to_string(),
            "action scale_deployment requires parameter replicas"
        );
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let params = HashMap::from([("replicas".to_owned(), int(500))]);
        let error = validate("scale_deployment", TargetKind::Deployment, &params)
            .expect_err("out of range");
        assert_eq!(
            error.to_string(),
            "parameter replicas of scale_deployment is 500, outside 1..=50"
        );
    }

    #[test]
    fn validate_rejects_unknown_parameter() {
        let params = HashMap::from([("force".to_owned(), int(1))]);
        let error =
            validate("restart_deployment", TargetKind::Deployment, &params).expect_err("unknown");
        assert!(
            matches!(error, ValidationError::UnknownParameter { .. }),
            "{error}"
        );
    }

    #[test]
    fn validate_checks_text_rules() {
        let params = HashMap::from([
            ("container".to_owned(), string("app")),
            ("memory_limit".to_owned(), string("lots")),
        ]);
        let error = validate("increase_resources", TargetKind::Deployment, &params)
            .expect_err("bad quantity");
        assert!(
            matches!(
                error,
                ValidationError::BadText {
                    name: "memory_limit",
                    ..
                }
            ),
            "{error}"
        );

        let params = HashMap::from([
            ("container".to_owned(), string("app")),
            ("memory_limit".to_owned(), string("512Mi")),
        ]);
        let (_, parsed) =
            validate("increase_resources", TargetKind::Deployment, &params).expect("valid");
        assert_eq!(parsed.text("memory_limit"), Some("512Mi"));
    }

    #[test]
    fn json_floats_fail_integer_parameters() {
        let object = serde_json::from_str::<Value>(r#"{"replicas": 3.0}"#).expect("json");
        let params = parameters_from_json(object.as_object().expect("object")).expect("scalars");
        let error =
            validate("scale_deployment", TargetKind::Deployment, &params).expect_err("a float");
        assert!(
            matches!(error, ValidationError::WrongType { .. }),
            "{error}"
        );
    }

    #[test]
    fn parameters_schema_marks_required_parameters() {
        let spec = find("scale_deployment").expect("registered");
        let schema = parameters_schema(spec);
        assert_eq!(schema["required"], json!(["replicas"]));
        assert_eq!(schema["properties"]["replicas"]["maximum"], json!(50));
        let spec = find("increase_resources").expect("registered");
        let schema = parameters_schema(spec);
        assert_eq!(schema["required"], json!(["container"]));
        assert_eq!(
            schema["properties"]["memory_limit"]["type"],
            json!("string")
        );
    }
}
