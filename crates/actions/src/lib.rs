//! The registry of remediation actions: the only actions Steward may take.
//!
//! Each action carries its name, category, a one-line description for the
//! prompt, a typed parameter schema with bounds and defaults, the target
//! kinds it applies to, a risk level and the Kubernetes permissions it
//! needs. Analyzers may only choose from here, and [`validate`] checks every
//! choice before the guard sees it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Value, json};
use steward_proto::v1::parameter_value::Kind as ValueKind;
use steward_proto::v1::{ParameterValue, TargetKind};

/// How much damage an action can do when it is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Risk {
    /// Changes nothing, or only adds capacity.
    Low,
    /// Restarts or replaces running pods.
    Medium,
    /// Removes capacity or data, or affects a whole node.
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
    /// Deployments, stateful sets, daemon sets, pods and jobs.
    Workload,
    /// Escalation to people without changing anything.
    Escalation,
}

impl Category {
    /// Returns the lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Workload => "workload",
            Category::Escalation => "escalation",
        }
    }
}

/// Type and bounds of a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamKind {
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
}

/// One parameter of an action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    /// Parameter name.
    pub name: &'static str,
    /// What it controls, with its unit.
    pub description: &'static str,
    /// Type and bounds.
    pub kind: ParamKind,
    /// Value used when the analyzer leaves it out; `None` makes it
    /// required.
    pub default: Option<i64>,
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
}

/// Every action Steward knows.
pub static REGISTRY: &[ActionSpec] = &[
    ActionSpec {
        name: "scale_deployment",
        category: Category::Workload,
        description: "Set a deployment's replica count through the scale subresource.",
        params: &[ParamSpec {
            name: "replicas",
            description: "desired replica count",
            kind: ParamKind::Integer { min: 1, max: 50 },
            default: None,
        }],
        targets: &[TargetKind::Deployment],
        risk: Risk::Medium,
        permissions: &[Permission {
            api_group: "apps",
            resource: "deployments/scale",
            verbs: &["get", "patch"],
        }],
    },
    ActionSpec {
        name: "restart_deployment",
        category: Category::Workload,
        description: "Roll out new pods for a deployment, as `kubectl rollout restart` does.",
        params: &[],
        targets: &[TargetKind::Deployment],
        risk: Risk::Medium,
        permissions: &[Permission {
            api_group: "apps",
            resource: "deployments",
            verbs: &["get", "patch"],
        }],
    },
    ActionSpec {
        name: "delete_pod",
        category: Category::Workload,
        description: "Delete one pod that a controller owns, so that the controller replaces it.",
        params: &[ParamSpec {
            name: "grace_period_seconds",
            description: "seconds the pod gets to shut down",
            kind: ParamKind::Integer { min: 0, max: 300 },
            default: Some(30),
        }],
        targets: &[TargetKind::Pod],
        risk: Risk::Medium,
        permissions: &[Permission {
            api_group: "",
            resource: "pods",
            verbs: &["get", "delete"],
        }],
    },
    ActionSpec {
        name: "notify_only",
        category: Category::Escalation,
        description: "Change nothing and escalate the alert to people.",
        params: &[],
        targets: &[
            TargetKind::Pod,
            TargetKind::Deployment,
            TargetKind::Statefulset,
            TargetKind::Daemonset,
            TargetKind::Node,
            TargetKind::PersistentVolumeClaim,
            TargetKind::Unspecified,
        ],
        risk: Risk::Low,
        permissions: &[],
    },
];

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
}

/// Why a target cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The namespace is not a DNS-1123 label.
    #[error(
        "namespace {0:?} is not a valid Kubernetes namespace name (lower-case letters, digits and '-', at most 63)"
    )]
    Namespace(String),
    /// The name is not a DNS-1123 subdomain.
    #[error(
        "name {0:?} is not a valid Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253)"
    )]
    Name(String),
    /// A namespaced kind has no namespace, or a cluster-scoped one has one.
    #[error("a {kind} target {problem}")]
    Scope {
        /// Kind label.
        kind: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Checks that a target's namespace and name are valid Kubernetes names,
/// so that no label text reaches a Kubernetes API path unchecked. The
/// unspecified kind (an alert that names no object) passes with empty
/// fields only.
///
/// # Errors
/// Returns the first invalid part.
pub fn validate_target(target: &steward_proto::v1::Target) -> Result<(), TargetError> {
    let kind = target.kind();
    if kind == TargetKind::Unspecified {
        if target.namespace.is_empty() && target.name.is_empty() {
            return Ok(());
        }
        return Err(TargetError::Scope {
            kind: kind.label(),
            problem: "must not name an object",
        });
    }
    let cluster_scoped = kind == TargetKind::Node;
    match (cluster_scoped, target.namespace.is_empty()) {
        (true, false) => {
            return Err(TargetError::Scope {
                kind: kind.label(),
                problem: "is cluster-scoped and takes no namespace",
            });
        }
        (false, true) => {
            return Err(TargetError::Scope {
                kind: kind.label(),
                problem: "needs a namespace",
            });
        }
        (false, false) if !is_dns_label(&target.namespace) => {
            return Err(TargetError::Namespace(target.namespace.clone()));
        }
        _ => {}
    }
    if !is_dns_subdomain(&target.name) {
        return Err(TargetError::Name(target.name.clone()));
    }
    Ok(())
}

/// Returns whether `value` is a DNS-1123 label: lower-case alphanumerics
/// and `-`, starting and ending with an alphanumeric, at most 63
/// characters (the rule for namespace names).
pub fn is_dns_label(value: &str) -> bool {
    value.len() <= 63 && is_dns_name(value, false)
}

/// Returns whether `value` is a DNS-1123 subdomain: lower-case
/// alphanumerics, `-` and `.`, starting and ending with an alphanumeric,
/// at most 253 characters (the rule for most object names).
pub fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && is_dns_name(value, true)
}

fn is_dns_name(value: &str, dots: bool) -> bool {
    let bytes = value.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first())
        && edge(bytes.last())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || (dots && *b == b'.')
        })
}

/// Validated parameters, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parameters(BTreeMap<&'static str, i64>);

impl Parameters {
    /// Returns an integer parameter.
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.0.get(name).copied()
    }

    /// Returns the parameters as protobuf values.
    pub fn to_proto(&self) -> HashMap<String, ParameterValue> {
        self.0
            .iter()
            .map(|(name, value)| {
                (
                    (*name).to_owned(),
                    ParameterValue {
                        kind: Some(ValueKind::IntValue(*value)),
                    },
                )
            })
            .collect()
    }

    /// Returns the parameters as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(name, value)| ((*name).to_owned(), json!(value)))
                .collect(),
        )
    }
}

impl fmt::Display for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, value) in &self.0 {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
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
        let value = match params.get(param.name).and_then(|value| value.kind.as_ref()) {
            None => param.default.ok_or(ValidationError::MissingParameter {
                action: spec.name,
                name: param.name,
            })?,
            Some(ValueKind::IntValue(value)) => *value,
            Some(other) => {
                return Err(ValidationError::WrongType {
                    action: spec.name,
                    name: param.name,
                    expected: "an integer",
                    got: describe(other),
                });
            }
        };
        let ParamKind::Integer { min, max } = param.kind;
        if !(min..=max).contains(&value) {
            return Err(ValidationError::OutOfRange {
                action: spec.name,
                name: param.name,
                value,
                min,
                max,
            });
        }
        values.insert(param.name, value);
    }
    Ok((spec, Parameters(values)))
}

/// Converts a JSON object of parameters, as a language model writes them,
/// into protobuf values without coercing types: `3.0` stays a number and
/// fails an integer parameter.
///
/// # Errors
/// Fails on nested values (arrays, objects, null), naming the parameter.
pub fn parameters_from_json(
    object: &serde_json::Map<String, Value>,
) -> Result<HashMap<String, ParameterValue>, String> {
    let mut params = HashMap::new();
    for (name, value) in object {
        let kind = match value {
            Value::Bool(b) => ValueKind::BoolValue(*b),
            Value::String(s) => ValueKind::StringValue(s.clone()),
            Value::Number(n) => match n.as_i64() {
                Some(i) => ValueKind::IntValue(i),
                None => ValueKind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Null | Value::Array(_) | Value::Object(_) => {
                return Err(format!("parameter {name:?} must be a scalar, got {value}"));
            }
        };
        params.insert(name.clone(), ParameterValue { kind: Some(kind) });
    }
    Ok(params)
}

/// Converts protobuf parameter values into a JSON object, for storage.
pub fn parameters_to_json(params: &HashMap<String, ParameterValue>) -> Value {
    let object = params
        .iter()
        .map(|(name, value)| {
            let value = match &value.kind {
                Some(ValueKind::IntValue(v)) => json!(v),
                Some(ValueKind::NumberValue(v)) => json!(v),
                Some(ValueKind::StringValue(v)) => json!(v),
                Some(ValueKind::BoolValue(v)) => json!(v),
                None => Value::Null,
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(object)
}

/// Returns the JSON schema of an action's parameters object.
pub fn parameters_schema(spec: &ActionSpec) -> Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for param in spec.params {
        let ParamKind::Integer { min, max } = param.kind;
        let mut schema = json!({
            "type": "integer",
            "minimum": min,
            "maximum": max,
            "description": param.description,
        });
        if let Some(default) = param.default {
            schema["default"] = json!(default);
        } else {
            required.push(param.name);
        }
        properties.insert(param.name.to_owned(), schema);
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn describe(value: &ValueKind) -> String {
    match value {
        ValueKind::IntValue(v) => format!("integer {v}"),
        ValueKind::NumberValue(v) => format!("number {v}"),
        ValueKind::StringValue(v) => format!("string {v:?}"),
        ValueKind::BoolValue(v) => format!("boolean {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(value: i64) -> ParameterValue {
        ParameterValue {
            kind: Some(ValueKind::IntValue(value)),
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
    fn names_are_unique() {
        for (index, spec) in REGISTRY.iter().enumerate() {
            assert!(
                REGISTRY[index + 1..]
                    .iter()
                    .all(|other| other.name != spec.name),
                "{} appears twice",
                spec.name
            );
        }
    }

    #[test]
    fn validate_fills_defaults() {
        let (_, params) = validate("delete_pod", TargetKind::Pod, &HashMap::new()).expect("valid");
        assert_eq!(params.integer("grace_period_seconds"), Some(30));
    }

    #[test]
    fn validate_rejects_unknown_action() {
        let error =
            validate("rm_rf", TargetKind::Pod, &HashMap::new()).expect_err("the call must fail");
        assert_eq!(error, ValidationError::UnknownAction("rm_rf".into()));
    }

    #[test]
    fn validate_rejects_wrong_target_kind() {
        let error = validate("restart_deployment", TargetKind::Node, &HashMap::new())
            .expect_err("the call must fail");
        assert_eq!(
            error.to_string(),
            "action restart_deployment does not apply to a node target"
        );
    }

    #[test]
    fn validate_rejects_missing_required_parameter() {
        let error = validate("scale_deployment", TargetKind::Deployment, &HashMap::new())
            .expect_err("the call must fail");
        assert_eq!(
            error.to_string(),
            "action scale_deployment requires parameter replicas"
        );
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let params = HashMap::from([("replicas".to_owned(), int(500))]);
        let error = validate("scale_deployment", TargetKind::Deployment, &params)
            .expect_err("the call must fail");
        assert_eq!(
            error.to_string(),
            "parameter replicas of scale_deployment is 500, outside 1..=50"
        );
    }

    #[test]
    fn validate_rejects_unknown_parameter() {
        let params = HashMap::from([("force".to_owned(), int(1))]);
        let error = validate("restart_deployment", TargetKind::Deployment, &params)
            .expect_err("the call must fail");
        assert!(
            matches!(error, ValidationError::UnknownParameter { .. }),
            "{error}"
        );
    }

    #[test]
    fn json_floats_fail_integer_parameters() {
        let object = serde_json::from_str::<Value>(r#"{"replicas": 3.0}"#).expect("json");
        let params = parameters_from_json(object.as_object().expect("object")).expect("scalars");
        let error = validate("scale_deployment", TargetKind::Deployment, &params)
            .expect_err("the call must fail");
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
    }
}
