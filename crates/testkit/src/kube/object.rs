//! Rules the API server applies to an object before it stores it: type and
//! object metadata checks, server-managed fields, and what an update may
//! change.

use serde_json::{Map, Value};

use super::resources::{ResourceKind, Subresource};
use super::status::ApiError;
use super::store::{self, Store};

/// The part of an object that an update writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UpdateScope {
    /// The main resource: everything except `.status` when the kind has a
    /// status subresource.
    Object,
    /// The status subresource: only `.status`.
    Status,
}

/// Checks an object sent to create `kind` in `namespace` and fills in its
/// type, namespace and generated name. Server-managed fields are left to
/// [`stamp_new`].
pub(super) fn check_create(
    store: &Store,
    kind: &ResourceKind,
    namespace: &str,
    mut object: Value,
) -> Result<Value, ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    check_type_meta(kind, &mut object)?;
    check_namespace(kind, namespace, &mut object)?;

    let metadata = store::metadata_mut(&mut object);
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let generate_name = metadata
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = match (name.is_empty(), generate_name.is_empty()) {
        (false, _) => name,
        (true, false) => {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{generate_name}{}", &suffix[..5])
        }
        (true, true) => {
            return Err(ApiError::invalid(
                kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
    };
    if let Some(problem) = invalid_name(&name) {
        let problem = format!("Invalid value: {name:?}: {problem}");
        return Err(ApiError::invalid(kind, &name, "metadata.name", &problem));
    }
    if metadata
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|version| !version.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    metadata.insert("name".to_owned(), Value::from(name.clone()));

    if store.get(kind, namespace, &name).is_some() {
        return Err(ApiError::already_exists(kind, &name));
    }
    Ok(object)
}

/// Sets the fields the API server owns on a new object: `uid` and
/// `creationTimestamp` unless given, `generation` 1, and `spec.replicas` 1
/// for scalable kinds that lack it. `resourceVersion` is set by [`commit`].
pub(super) fn stamp_new(kind: &ResourceKind, object: &mut Value) {
    let metadata = store::metadata_mut(object);
    if metadata
        .get("uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        metadata.insert(
            "uid".to_owned(),
            Value::from(uuid::Uuid::new_v4().to_string()),
        );
    }
    if metadata.get("creationTimestamp").is_none_or(Value::is_null) {
        metadata.insert(
            "creationTimestamp".to_owned(),
            Value::from(store::now_timestamp()),
        );
    }
    metadata.insert("generation".to_owned(), Value::from(1));
    metadata.remove("generateName");

    if kind.has(Subresource::Scale) {
        let root = object
            .as_object_mut()
            .expect("stamped objects are JSON objects");
        let spec = root
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(spec) = spec.as_object_mut() {
            spec.entry("replicas").or_insert(Value::from(1));
        }
    }
}

/// Checks `new`, sent to replace `old`, and returns the object to store:
/// server-managed fields come from `old`, and `scope` decides whether
/// `.status` or everything else is taken from `new`.
///
/// # Errors
/// 400 when the type, name or namespace disagree with the request, 409
/// when `new` carries a `resourceVersion` or `uid` other than the stored one.
pub(super) fn check_update(
    kind: &ResourceKind,
    old: &Value,
    mut new: Value,
    scope: UpdateScope,
) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let name = store::name_of(old).to_owned();
    check_type_meta(kind, &mut new)?;
    check_namespace(kind, store::namespace_of(old), &mut new)?;

    let new_name = store::name_of(&new);
    if new_name.is_empty() {
        store::metadata_mut(&mut new).insert("name".to_owned(), Value::from(name.clone()));
    } else if new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }

    let expected_version = store::resource_version_of(&new);
    if expected_version.is_some() && expected_version != store::resource_version_of(old) {
        return Err(ApiError::modified(kind, &name));
    }
    if let (Some(new_uid), Some(old_uid)) = (store::uid_of(&new), store::uid_of(old)) {
        if new_uid != old_uid {
            let detail = format!(
                "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"
            );
            return Err(ApiError::conflict(kind, &name, &detail));
        }
    }

    let mut updated = match scope {
        UpdateScope::Object => {
            if kind.has(Subresource::Status) {
                set_field(&mut new, "status", old.get("status").cloned());
            }
            new
        }
        UpdateScope::Status => {
            let mut updated = old.clone();
            set_field(&mut updated, "status", new.get("status").cloned());
            updated
        }
    };

    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if store::spec_changed(old, &updated) {
        generation + 1
    } else {
        generation
    };
    let old_metadata = old.get("metadata").and_then(Value::as_object);
    let metadata = store::metadata_mut(&mut updated);
    for field in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "deletionTimestamp",
    ] {
        match old_metadata.and_then(|old_metadata| old_metadata.get(field)) {
            Some(value) => metadata.insert(field.to_owned(), value.clone()),
            None => metadata.remove(field),
        };
    }
    metadata.insert("generation".to_owned(), Value::from(generation));
    Ok(updated)
}

/// Stores `object` under a new resource version, unless `dry_run`, and
/// returns it as the API server would in its response.
pub(super) fn commit(
    store: &mut Store,
    kind: &ResourceKind,
    mut object: Value,
    dry_run: bool,
) -> Value {
    if !dry_run {
        let version = store.next_resource_version();
        store::metadata_mut(&mut object).insert("resourceVersion".to_owned(), Value::from(version));
        if is_terminating(&object) && !has_finalizers(&object) {
            // The update removed the last finalizer of an object being
            // deleted, so the deletion completes.
            store.remove(kind, store::namespace_of(&object), store::name_of(&object));
        } else {
            store.put(kind, object.clone());
        }
    }
    object
}

/// Deletes `object`, unless `dry_run`, and returns it as the API server
/// would in its response. An object without finalizers goes at once. One
/// with finalizers gets `metadata.deletionTimestamp` and stays until an
/// update empties its finalizers, as on a real API server, where the
/// kubelet or a controller removes them once the object is cleaned up.
///
/// NOTE: there is no grace period: an object without finalizers is gone
/// when the response is sent.
pub(super) fn delete(
    store: &mut Store,
    kind: &ResourceKind,
    mut object: Value,
    dry_run: bool,
) -> Value {
    if !has_finalizers(&object) {
        if !dry_run {
            store.remove(kind, store::namespace_of(&object), store::name_of(&object));
            store.next_resource_version();
        }
        return object;
    }
    store::metadata_mut(&mut object)
        .entry("deletionTimestamp")
        .or_insert_with(|| Value::from(store::now_timestamp()));
    commit(store, kind, object, dry_run)
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|finalizers| !finalizers.is_empty())
}

fn is_terminating(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|stamp| !stamp.is_null())
}

/// Checks `apiVersion` and `kind` against the URL's kind and fills them in
/// when missing.
fn check_type_meta(kind: &ResourceKind, object: &mut Value) -> Result<(), ApiError> {
    let expected_api_version = kind.api_version();
    let checks = [
        ("apiVersion", expected_api_version.as_str()),
        ("kind", kind.kind),
    ];
    for (field, expected) in checks {
        match object.get(field).and_then(Value::as_str) {
            Some(found) if found != expected => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({found}) does not match the expected {field} ({expected})"
                )));
            }
            Some(_) => {}
            None => set_field(object, field, Some(Value::from(expected))),
        }
    }
    Ok(())
}

/// Checks `metadata.namespace` against the request's namespace and fills it
/// in; cluster-scoped objects get none.
fn check_namespace(
    kind: &ResourceKind,
    namespace: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
    let metadata = store::metadata_mut(object);
    if !kind.is_namespaced() {
        metadata.remove("namespace");
        return Ok(());
    }
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(found) if !found.is_empty() && found != namespace => {
            Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({found}) does not match the namespace sent on the request ({namespace})"
            )))
        }
        _ => {
            metadata.insert("namespace".to_owned(), Value::from(namespace));
            Ok(())
        }
    }
}

/// Returns the reason `name` is not a valid DNS subdomain (RFC 1123), which is
/// what most kinds require of `metadata.name`.
fn invalid_name(name: &str) -> Option<&'static str> {
    let allowed = |character: char| {
        character.is_ascii_lowercase() || character.is_ascii_digit() || "-.".contains(character)
    };
    let alphanumeric =
        |character: char| character.is_ascii_lowercase() || character.is_ascii_digit();
    if name.len() > 253 {
        return Some("must be no more than 253 characters");
    }
    let starts_and_ends_alphanumeric =
        name.starts_with(alphanumeric) && name.ends_with(alphanumeric);
    if !name.chars().all(allowed) || !starts_and_ends_alphanumeric {
        return Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character",
        );
    }
    None
}

/// Sets a top-level field, or removes it when `value` is `None`.
fn set_field(object: &mut Value, field: &str, value: Option<Value>) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    match value {
        Some(value) => root.insert(field.to_owned(), value),
        None => root.remove(field),
    };
}
