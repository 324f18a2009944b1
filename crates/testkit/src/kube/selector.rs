//! Label and field selectors, as sent in `labelSelector` and `fieldSelector`
//! query parameters and stored in `spec.selector` of workloads and budgets.

use serde_json::{Map, Value};

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        match self {
            Self::Equals(key, value) => label(key) == Some(value.as_str()),
            Self::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Self::In(key, values) => {
                label(key).is_some_and(|found| values.iter().any(|value| value == found))
            }
            Self::NotIn(key, values) => {
                !label(key).is_some_and(|found| values.iter().any(|value| value == found))
            }
            Self::Exists(key) => labels.contains_key(key),
            Self::NotExists(key) => !labels.contains_key(key),
        }
    }
}

/// A parsed label selector; every requirement must hold. An empty selector
/// matches every object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the query syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
    /// `a notin (x,y)`, `a` and `!a`, joined by commas.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_outside_parentheses(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(Self { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` object with
    /// `matchLabels` and `matchExpressions`.
    pub(super) fn from_object(selector: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in match_labels {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("matchLabels value for {key} is not a string"))?;
                requirements.push(Requirement::Equals(key.clone(), value.to_owned()));
            }
        }
        let expressions = selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for expression in expressions {
            requirements.push(parse_expression(expression)?);
        }
        Ok(Self { requirements })
    }

    /// Returns whether the object's `metadata.labels` satisfy the selector.
    pub(super) fn matches_object(&self, object: &Value) -> bool {
        let empty = Map::new();
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.matches(labels)
    }

    pub(super) fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(labels))
    }

    /// Renders the selector in query syntax, as `Scale.status.selector` has it.
    pub(super) fn to_query(&self) -> String {
        let terms: Vec<String> = self
            .requirements
            .iter()
            .map(|requirement| match requirement {
                Requirement::Equals(key, value) => format!("{key}={value}"),
                Requirement::NotEquals(key, value) => format!("{key}!={value}"),
                Requirement::In(key, values) => format!("{key} in ({})", values.join(",")),
                Requirement::NotIn(key, values) => format!("{key} notin ({})", values.join(",")),
                Requirement::Exists(key) => key.clone(),
                Requirement::NotExists(key) => format!("!{key}"),
            })
            .collect();
        terms.join(",")
    }
}

fn split_outside_parentheses(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(valid_key(key.trim(), term)?));
    }
    if let Some(open) = term.find('(') {
        let Some(values) = term[open + 1..].strip_suffix(')') else {
            return Err(format!(
                "invalid label selector term {term:?}: missing closing parenthesis"
            ));
        };
        let values: Vec<String> = values
            .split(',')
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .collect();
        let head = term[..open].trim_end();
        if let Some(key) = head.strip_suffix(" notin") {
            return Ok(Requirement::NotIn(valid_key(key.trim(), term)?, values));
        }
        if let Some(key) = head.strip_suffix(" in") {
            return Ok(Requirement::In(valid_key(key.trim(), term)?, values));
        }
        return Err(format!(
            "invalid label selector term {term:?}: expected `in` or `notin`"
        ));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(
            valid_key(key.trim(), term)?,
            value.trim().to_owned(),
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(
            valid_key(key.trim(), term)?,
            value.trim().to_owned(),
        ));
    }
    Ok(Requirement::Exists(valid_key(term, term)?))
}

fn valid_key(key: &str, term: &str) -> Result<String, String> {
    let allowed = |character: char| character.is_ascii_alphanumeric() || "-_./".contains(character);
    if key.is_empty() || !key.chars().all(allowed) {
        return Err(format!(
            "invalid label selector term {term:?}: invalid key {key:?}"
        ));
    }
    Ok(key.to_owned())
}

fn parse_expression(expression: &Value) -> Result<Requirement, String> {
    let key = expression
        .get("key")
        .and_then(Value::as_str)
        .ok_or("matchExpressions entry has no key")?
        .to_owned();
    let operator = expression
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let values: Vec<String> = expression
        .get("values")
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    match operator {
        "In" => Ok(Requirement::In(key, values)),
        "NotIn" => Ok(Requirement::NotIn(key, values)),
        "Exists" => Ok(Requirement::Exists(key)),
        "DoesNotExist" => Ok(Requirement::NotExists(key)),
        other => Err(format!(
            "matchExpressions operator {other:?} for key {key} is invalid: expected In, NotIn, Exists or DoesNotExist"
        )),
    }
}

/// A parsed field selector such as `metadata.name=web,spec.nodeName!=node-1`.
///
/// NOTE: any dotted path into the object is accepted, so a field the real
/// API server would reject with 400 (it serves a few fields per kind) is
/// matched here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct FieldSelector {
    /// (path segments, expected value, whether the value must equal).
    requirements: Vec<(Vec<String>, String, bool)>,
}

impl FieldSelector {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in text
            .split(',')
            .map(str::trim)
            .filter(|term| !term.is_empty())
        {
            let (path, value, equals) = if let Some((path, value)) = term.split_once("!=") {
                (path, value, false)
            } else if let Some((path, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                (path, value, true)
            } else {
                return Err(format!(
                    "invalid field selector term {term:?}: expected field=value or field!=value"
                ));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
            requirements.push((path, value.trim().to_owned(), equals));
        }
        Ok(Self { requirements })
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(path, expected, equals)| {
            let found = path
                .iter()
                .try_fold(object, |value, segment| value.get(segment))
                .map(field_text)
                .unwrap_or_default();
            (found == *expected) == *equals
        })
    }
}

/// Renders a field value the way field selectors compare it; a missing
/// field compares as the empty string.
fn field_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
