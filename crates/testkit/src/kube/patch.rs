//! The patch formats the API server accepts, applied to JSON objects.

use serde_json::{Map, Value};

/// A patch format, named by the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Reads the media type of a `Content-Type` value, ignoring parameters
    /// such as `charset`.
    pub(super) fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        match media_type {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::Strategic => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// The failure to apply a patch.
#[derive(Debug)]
pub(super) enum PatchError {
    /// The patch document has the wrong shape; the API server responds with 400.
    Malformed(String),
    /// A JSON patch operation failed, for example a `test` that did not
    /// match; the API server responds with 422.
    Failed(String),
}

/// Applies `patch` of type `patch_type` to `target`. On error `target` is
/// unchanged.
pub(super) fn apply(
    patch_type: PatchType,
    target: &mut Value,
    patch: &Value,
) -> Result<(), PatchError> {
    match patch_type {
        PatchType::Json => json_patch_apply(target, patch),
        PatchType::Merge => {
            require_object(patch)?;
            json_patch::merge(target, patch);
            Ok(())
        }
        // NOTE: server-side apply is treated as a strategic merge, so fields
        // that an earlier apply set and this one omits are kept, where the
        // real API server would remove those owned by the same field manager.
        PatchType::Strategic | PatchType::Apply => {
            require_object(patch)?;
            strategic_merge(target, patch);
            Ok(())
        }
    }
}

fn require_object(patch: &Value) -> Result<(), PatchError> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(PatchError::Malformed(
            "a merge patch must be a JSON object".to_owned(),
        ))
    }
}

fn json_patch_apply(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|error| PatchError::Malformed(format!("invalid JSON patch: {error}")))?;
    json_patch::patch(target, &operations).map_err(|error| PatchError::Failed(error.to_string()))
}

/// Lists whose items merge on a key other than `name`, by field name, as
/// the `patchMergeKey` tags of the Kubernetes API types declare them.
const MERGE_KEYS: &[(&str, &str)] = &[
    ("conditions", "type"),
    ("hostAliases", "ip"),
    ("ownerReferences", "uid"),
    ("readinessGates", "conditionType"),
    ("topologySpreadConstraints", "topologyKey"),
    ("volumeDevices", "devicePath"),
    ("volumeMounts", "mountPath"),
];

/// Applies a strategic merge patch.
///
/// Maps merge as in a JSON merge patch. A list of objects merges item by
/// item on its merge key (`name` unless `MERGE_KEYS` or the port rule names
/// another): items with a new key are appended, items with a known key
/// merge into the existing item, and `$patch: delete` removes one. Every
/// other list replaces the old one. `$patch: replace` replaces a map or a
/// list whole. Other directives (`$retainKeys`, `$setElementOrder/...`,
/// `$deleteFromPrimitiveList/...`) are ignored.
///
/// NOTE: lists of strings that the real API server merges (such as
/// `finalizers`) are replaced here.
pub(super) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = without_directives(patch);
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        unreachable!("target was made an object above");
    };

    for (field, value) in patch_map {
        if field.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target_map.remove(field);
            continue;
        }
        if let Value::Array(items) = value {
            let existing = target_map.entry(field.clone()).or_insert(Value::Null);
            merge_list(field, existing, items);
            continue;
        }
        strategic_merge(
            target_map.entry(field.clone()).or_insert(Value::Null),
            value,
        );
    }
}

fn merge_list(field: &str, existing: &mut Value, items: &[Value]) {
    let is_replace_marker = |item: &Value| {
        item.as_object()
            .is_some_and(|map| map.len() == 1 && map.get("$patch") == Some(&Value::from("replace")))
    };
    let replace = items.iter().any(is_replace_marker);
    let items: Vec<&Value> = items
        .iter()
        .filter(|item| !is_replace_marker(item))
        .collect();

    let merge_key = if replace {
        None
    } else {
        merge_key(field, &items)
    };
    let (Some(key), Value::Array(existing_items)) = (merge_key, &mut *existing) else {
        let remaining = items.into_iter().filter(|item| !is_delete_marker(item));
        *existing = Value::Array(remaining.map(without_directives).collect());
        return;
    };

    for item in items {
        let id = item.get(key);
        let position = existing_items.iter().position(|old| old.get(key) == id);
        if is_delete_marker(item) {
            if let Some(position) = position {
                existing_items.remove(position);
            }
            continue;
        }
        match position {
            Some(position) => strategic_merge(&mut existing_items[position], item),
            None => {
                let mut added = Value::Null;
                strategic_merge(&mut added, item);
                existing_items.push(added);
            }
        }
    }
}

/// Returns the key that items of list `field` merge on, or `None` when the
/// list replaces. Container ports merge on `containerPort` and service
/// ports on `port`.
fn merge_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    let has_key = |key: &str| !items.is_empty() && items.iter().all(|item| item.get(key).is_some());
    let key = if field == "ports" {
        if has_key("containerPort") {
            "containerPort"
        } else {
            "port"
        }
    } else {
        MERGE_KEYS
            .iter()
            .find(|(list, _)| *list == field)
            .map(|(_, key)| *key)
            .unwrap_or("name")
    };
    has_key(key).then_some(key)
}

fn is_delete_marker(item: &Value) -> bool {
    item.get("$patch").and_then(Value::as_str) == Some("delete")
}

/// Copies a patch value without `$`-prefixed directive keys and without
/// null fields, which in a patch only mean "remove".
fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, value)| !key.starts_with('$') && !value.is_null())
                .map(|(key, value)| (key.clone(), without_directives(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}
