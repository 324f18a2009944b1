//! Parameter schemas, validated parameter values and their JSON forms.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Value, json};
use steward_proto::v1::ParameterValue;
use steward_proto::v1::parameter_value::Kind as ValueKind;

use crate::target::{is_dns_label, is_dns_subdomain};

/// What a text parameter must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRule {
    /// A DNS-1123 label: container and namespace names.
    DnsLabel,
    /// A DNS-1123 subdomain: most object names.
    DnsSubdomain,
    /// A Kubernetes resource quantity such as `500m`, `2Gi` or `1.5`.
    Quantity,
}

impl TextRule {
    fn describe(self) -> &'static str {
        match self {
            TextRule::DnsLabel => "a DNS-1123 label",
            TextRule::DnsSubdomain => "a Kubernetes object name",
            TextRule::Quantity => "a Kubernetes quantity such as 500m or 2Gi",
        }
    }

    fn accepts(self, value: &str) -> bool {
        match self {
            TextRule::DnsLabel => is_dns_label(value),
            TextRule::DnsSubdomain => is_dns_subdomain(value),
            TextRule::Quantity => parse_quantity(value).is_some(),
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
    /// `true` or `false`.
    Bool,
    /// Text that follows a rule.
    Text {
        /// The rule.
        rule: TextRule,
    },
}

/// A default value of a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    /// An integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
}

/// Whether a parameter must be given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Requirement {
    /// The analyzer must give it.
    Required,
    /// Left out, it takes this value.
    Default(DefaultValue),
    /// Left out, it is absent and the action does without it.
    Optional,
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
    /// Whether it must be given.
    pub requirement: Requirement,
}

impl ParamSpec {
    /// Returns a one-line description for the prompt and the docs.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            ParamKind::Integer { min, max } => format!("integer {min}..{max}"),
            ParamKind::Bool => "boolean".to_owned(),
            ParamKind::Text { rule } => rule.describe().to_owned(),
        };
        format!(
            "{} ({kind}, {}): {}",
            self.name,
            self.requirement_text(),
            self.description
        )
    }

    /// Returns `required`, `optional` or `default <value>`.
    pub fn requirement_text(&self) -> String {
        match self.requirement {
            Requirement::Required => "required".to_owned(),
            Requirement::Default(DefaultValue::Integer(value)) => format!("default {value}"),
            Requirement::Default(DefaultValue::Bool(value)) => format!("default {value}"),
            Requirement::Optional => "optional".to_owned(),
        }
    }

    /// Returns the JSON schema of the parameter.
    pub fn schema(&self) -> Value {
        let mut schema = match self.kind {
            ParamKind::Integer { min, max } => {
                json!({"type": "integer", "minimum": min, "maximum": max})
            }
            ParamKind::Bool => json!({"type": "boolean"}),
            ParamKind::Text {
                rule: TextRule::Quantity,
            } => {
                json!({"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$", "maxLength": 32})
            }
            ParamKind::Text { .. } => {
                json!({"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253})
            }
        };
        schema["description"] = json!(self.description);
        match self.requirement {
            Requirement::Default(DefaultValue::Integer(value)) => schema["default"] = json!(value),
            Requirement::Default(DefaultValue::Bool(value)) => schema["default"] = json!(value),
            Requirement::Required | Requirement::Optional => {}
        }
        schema
    }
}

/// A validated parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// An integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
    /// Text that passed its rule.
    Text(String),
}

/// Validated parameters, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parameters(pub(crate) BTreeMap<&'static str, Param>);

impl Parameters {
    /// Returns an integer parameter.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.0.get(name) {
            Some(Param::Integer(value)) => Some(*value),
            _ => None,
        }
    }

    /// Returns a boolean parameter.
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.0.get(name) {
            Some(Param::Bool(value)) => Some(*value),
            _ => None,
        }
    }

    /// Returns a text parameter.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(Param::Text(value)) => Some(value),
            _ => None,
        }
    }

    /// Returns the parameters as protobuf values.
    pub fn to_proto(&self) -> HashMap<String, ParameterValue> {
        self.0
            .iter()
            .map(|(name, value)| {
                let kind = match value {
                    Param::Integer(v) => ValueKind::IntValue(*v),
                    Param::Bool(v) => ValueKind::BoolValue(*v),
                    Param::Text(v) => ValueKind::StringValue(v.clone()),
                };
                ((*name).to_owned(), ParameterValue { kind: Some(kind) })
            })
            .collect()
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
            match value {
                Param::Integer(v) => write!(f, "{name}={v}")?,
                Param::Bool(v) => write!(f, "{name}={v}")?,
                Param::Text(v) => write!(f, "{name}={v:?}")?,
            }
        }
        Ok(())
    }
}

/// Checks one value against its spec; `Err` holds the expected type and the
/// value received, or the rule it broke.
pub(crate) fn check_value(spec: &ParamSpec, value: &ValueKind) -> Result<Param, CheckError> {
    match (spec.kind, value) {
        (ParamKind::Integer { min, max }, ValueKind::IntValue(v)) => {
            if (min..=max).contains(v) {
                Ok(Param::Integer(*v))
            } else {
                Err(CheckError::OutOfRange {
                    value: *v,
                    min,
                    max,
                })
            }
        }
        (ParamKind::Bool, ValueKind::BoolValue(v)) => Ok(Param::Bool(*v)),
        (ParamKind::Text { rule }, ValueKind::StringValue(v)) => {
            if rule.accepts(v) {
                Ok(Param::Text(v.clone()))
            } else {
                Err(CheckError::Rule {
                    value: v.clone(),
                    rule: rule.describe(),
                })
            }
        }
        (kind, other) => Err(CheckError::Type {
            expected: match kind {
                ParamKind::Integer { .. } => "an integer",
                ParamKind::Bool => "a boolean",
                ParamKind::Text { .. } => "a string",
            },
            got: describe(other),
        }),
    }
}

pub(crate) enum CheckError {
    OutOfRange { value: i64, min: i64, max: i64 },
    Rule { value: String, rule: &'static str },
    Type { expected: &'static str, got: String },
}

fn describe(value: &ValueKind) -> String {
    match value {
        ValueKind::IntValue(v) => format!("integer {v}"),
        ValueKind::NumberValue(v) => format!("number {v}"),
        ValueKind::StringValue(v) => format!("string {v:?}"),
        ValueKind::BoolValue(v) => format!("boolean {v}"),
    }
}

/// Parses a Kubernetes resource quantity into its value in base units
/// (cores or bytes): `500m` is 0.5, `2Gi` is 2 * 2^30, `1.5` is 1.5.
/// Returns `None` for anything else, including negative values and
/// exponents, which Steward does not accept.
pub fn parse_quantity(value: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 9] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    if value.is_empty() || value.len() > 32 {
        return None;
    }
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| value.strip_suffix(suffix).map(|number| (number, *factor)))
        .unwrap_or((value, 1.0));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let valid = match number.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(number),
    };
    if !valid {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * factor)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_base_units() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2Gi"), Some(2.0 * 1_073_741_824.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1_048_576.0));
        for bad in ["", "-1", "1e3", "Gi", "1.", ".5", "1Gb", "ten"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }
}
