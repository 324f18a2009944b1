//! The `scale` and `log` subresources. `status` is served by the object
//! verbs in `server` and `eviction` by the `eviction` module.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::object::{self, UpdateScope};
use super::selector::LabelSelector;
use super::server::{self, ApiRequest, Reply, Target};
use super::status::ApiError;
use super::store::{self, Store};

use super::resources::Subresource;

pub(super) fn get_scale(store: &Store, target: &Target<'_>) -> Result<Reply, ApiError> {
    let object = target.load(store)?;
    Ok(Reply::Json(StatusCode::OK, scale_of(&object)))
}

/// Replaces the scale with an `autoscaling/v1` Scale body; its
/// `spec.replicas` becomes the parent's.
pub(super) fn replace_scale(
    store: &mut Store,
    request: &ApiRequest,
    target: &Target<'_>,
) -> Result<Reply, ApiError> {
    let parent = target.load(store)?;
    let body = request.json_body()?;
    let scale = write_scale(store, request, target, &parent, &body)?;
    store.record(target.mutation(
        "update",
        Some(Subresource::Scale),
        request.params.dry_run,
        None,
        body,
    ));
    Ok(Reply::Json(StatusCode::OK, scale))
}

/// Patches the parent's Scale and writes the resulting `spec.replicas` back
/// to the parent.
pub(super) fn patch_scale(
    store: &mut Store,
    request: &ApiRequest,
    target: &Target<'_>,
) -> Result<Reply, ApiError> {
    let parent = target.load(store)?;
    let (patch_type, document) = server::read_patch(request)?;
    let mut scale = scale_of(&parent);
    server::apply_patch(target, patch_type, &mut scale, &document)?;
    let scale = write_scale(store, request, target, &parent, &scale)?;
    let mutation = target.mutation(
        "patch",
        Some(Subresource::Scale),
        request.params.dry_run,
        Some(patch_type),
        document,
    );
    store.record(mutation);
    Ok(Reply::Json(StatusCode::OK, scale))
}

/// Checks a new Scale against the parent, stores the parent with the new
/// replica count and returns the parent's new Scale.
fn write_scale(
    store: &mut Store,
    request: &ApiRequest,
    target: &Target<'_>,
    parent: &Value,
    scale: &Value,
) -> Result<Value, ApiError> {
    let expected_version = store::resource_version_of(scale);
    if expected_version.is_some() && expected_version != store::resource_version_of(parent) {
        return Err(ApiError::modified(target.kind, target.name));
    }
    let replicas = match scale.pointer("/spec/replicas") {
        Some(value) => value.as_i64().ok_or_else(|| {
            ApiError::invalid(
                target.kind,
                target.name,
                "spec.replicas",
                &format!("Invalid value: {value}: must be an integer"),
            )
        })?,
        None => 0,
    };
    if replicas < 0 {
        let problem = format!("Invalid value: {replicas}: must be greater than or equal to 0");
        return Err(ApiError::invalid(
            target.kind,
            target.name,
            "spec.replicas",
            &problem,
        ));
    }

    let mut updated = parent.clone();
    match updated.get_mut("spec").and_then(Value::as_object_mut) {
        Some(spec) => {
            spec.insert("replicas".to_owned(), Value::from(replicas));
        }
        None => updated["spec"] = json!({ "replicas": replicas }),
    }
    let updated = object::check_update(target.kind, parent, updated, UpdateScope::Object)?;
    let stored = object::commit(store, target.kind, updated, request.params.dry_run);
    Ok(scale_of(&stored))
}

/// Builds the `autoscaling/v1` Scale of a Deployment, StatefulSet or
/// ReplicaSet.
fn scale_of(object: &Value) -> Value {
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let copied = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let metadata: serde_json::Map<String, Value> = copied
        .iter()
        .filter_map(|field| {
            metadata
                .get(*field)
                .map(|value| ((*field).to_owned(), value.clone()))
        })
        .collect();
    let selector = object
        .pointer("/spec/selector")
        .and_then(|selector| LabelSelector::from_object(selector).ok())
        .map(|selector| selector.to_query())
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": metadata,
        "spec": { "replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0) },
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// Returns the log set with `FakeKube::set_pod_log`, or an empty log;
/// `tailLines` keeps the last lines.
///
/// NOTE: one log is kept per pod, so the `container` parameter is ignored.
pub(super) fn pod_log(
    store: &Store,
    request: &ApiRequest,
    target: &Target<'_>,
) -> Result<Reply, ApiError> {
    target.load(store)?;
    let log = store
        .pod_log(target.namespace, target.name)
        .unwrap_or_default();
    let log = match request.params.tail_lines {
        Some(count) => {
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(count);
            lines[start..]
                .iter()
                .map(|line| format!("{line}\n"))
                .collect()
        }
        None => log.to_owned(),
    };
    Ok(Reply::Text(log))
}
