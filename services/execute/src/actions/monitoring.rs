//! Monitoring actions: a bounded debug mode.
//!
//! `enable_debug_mode` sets the configured environment variable (such as
//! `LOG_LEVEL=debug`) on every container of a workload's pod template and
//! records the rest in the workload itself: the label
//! [`DEBUG_MODE_LABEL`]`=on`, the end time in [`DEBUG_UNTIL_ANNOTATION`],
//! and each container's previous value in [`DEBUG_PREVIOUS_ANNOTATION`].
//! Because the state lives in Kubernetes, any execute replica, including
//! one started after a restart, can revert it: [`spawn_reverter`] runs
//! [`revert_expired`] at an interval, and the first replica whose patch
//! lands wins while the others get 409 and skip.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Map, Value, json};
use steward_proto::v1::{Target, TargetKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    ACTION_ID_ANNOTATION, Ctx, FIELD_MANAGER, Report, Settings, Transient, api_resource, at,
    classify,
};
use crate::config::Mode;

/// Label, with value `on`, that marks a workload in debug mode. The
/// reverter lists workloads by it.
pub const DEBUG_MODE_LABEL: &str = "steward.io/debug-mode";

/// Annotation holding the RFC 3339 time after which the reverter restores
/// a workload's previous values.
pub const DEBUG_UNTIL_ANNOTATION: &str = "steward.io/debug-until";

/// Annotation holding a JSON object from container name to the debug
/// variable's value before debug mode, or null where it was unset.
pub const DEBUG_PREVIOUS_ANNOTATION: &str = "steward.io/debug-previous";

/// Kinds that can be put in debug mode.
const DEBUG_KINDS: [TargetKind; 2] = [TargetKind::Deployment, TargetKind::Statefulset];

/// Sets the debug environment variable for a bounded time.
///
/// On a workload already in debug mode, a second enable sets the variable
/// on containers added since, and moves debug-until later (never earlier),
/// but keeps the recorded previous values, which are the ones from before
/// debug mode. In dry-run mode the patch is sent with `dryRun=All`, so no
/// label lands and nothing is scheduled to revert.
pub(super) async fn enable_debug_mode(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let object = match ctx.read_target().await {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(Report::failed(format!("{target} not found"))),
        Err(result) => return result,
    };

    let action_id = ctx.request.action_id.to_string();
    if metadata_value(object.metadata.annotations.as_ref(), ACTION_ID_ANNOTATION)
        == Some(action_id.as_str())
    {
        return Ok(Report::done(vec![format!(
            "{target} was already put in debug mode by this action in an earlier attempt; nothing to do"
        )]));
    }

    let (variable, debug_value) = &ctx.settings.debug_env;
    let containers = template_containers(&object);
    if containers.is_empty() {
        return Ok(Report::failed(format!(
            "{target} has no containers in its pod template, so there is nothing to put in debug mode"
        )));
    }

    let in_debug_mode =
        metadata_value(object.metadata.labels.as_ref(), DEBUG_MODE_LABEL) == Some("on");
    let annotations = object.metadata.annotations.as_ref();
    let mut previous = if in_debug_mode {
        match previous_values(annotations) {
            Some(previous) => previous,
            None => {
                return Ok(Report::failed(format!(
                    "{target} is in debug mode but its {DEBUG_PREVIOUS_ANNOTATION} annotation is missing or not a JSON object, so the values to restore are unknown; fix the annotation or remove the {DEBUG_MODE_LABEL} label"
                )));
            }
        }
    } else {
        Map::new()
    };

    let mut changes = Vec::new();
    let mut container_patches = Vec::new();
    for container in &containers {
        let name = container["name"].as_str().unwrap_or_default();
        let entry = env_entry(container, variable);
        if entry.is_some_and(|entry| !entry["valueFrom"].is_null()) && !previous.contains_key(name)
        {
            return Ok(Report::failed(format!(
                "container {name} of {target} sets {variable} from a reference (valueFrom), which debug mode cannot restore; change it by hand"
            )));
        }
        let current = entry.map(env_value);
        previous
            .entry(name.to_owned())
            .or_insert_with(|| current.map_or(Value::Null, Value::from));
        if current == Some(debug_value.as_str()) {
            continue;
        }
        changes.push(format!(
            "container {name}: {variable} {} -> {debug_value}",
            current.unwrap_or("unset")
        ));
        container_patches.push(json!({
            "name": name,
            "env": [{"name": variable, "value": debug_value}],
        }));
    }

    let now = Utc::now();
    let duration_seconds = ctx
        .request
        .parameters
        .integer("duration_seconds")
        .unwrap_or(900);
    let requested_until = now + chrono::Duration::seconds(duration_seconds);
    let current_until = metadata_value(annotations, DEBUG_UNTIL_ANNOTATION).and_then(parse_time);
    let until = match current_until {
        Some(current) if in_debug_mode && current > requested_until => current,
        _ => requested_until,
    };
    let until_text = until.to_rfc3339_opts(SecondsFormat::Secs, true);
    let previous_text = Value::Object(previous).to_string();

    // The resourceVersion makes the patch fail with 409 when the workload
    // changed since it was read, so that the recorded previous values are
    // the ones this patch replaces.
    let mut patch = json!({
        "metadata": {
            "resourceVersion": object.metadata.resource_version,
            "labels": {DEBUG_MODE_LABEL: "on"},
            "annotations": {
                DEBUG_UNTIL_ANNOTATION: until_text,
                DEBUG_PREVIOUS_ANNOTATION: previous_text,
                ACTION_ID_ANNOTATION: action_id,
            },
        },
    });
    // The spec is left out when no container changes, so that no empty
    // containers list is sent: applied as a list replacement, it would leave
    // the pod template without containers.
    if !container_patches.is_empty() {
        patch["spec"] = json!({"template": {"spec": {"containers": container_patches}}});
    }
    if let Err(error) = ctx
        .api(target.kind())
        .patch(&target.name, &ctx.patch_params(), &Patch::Strategic(&patch))
        .await
    {
        return classify("patch", target, error).into_result();
    }

    let verb = ctx.verb();
    let mut report = Vec::new();
    if in_debug_mode {
        let old = current_until.map_or_else(
            || "unset".to_owned(),
            |time| time.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        report.push(format!(
            "{verb} extend debug mode of {target}: {DEBUG_UNTIL_ANNOTATION} {old} -> {until_text}, keeping the recorded previous values"
        ));
    } else {
        report.push(format!(
            "{verb} put {target} in debug mode until {until_text}: label {DEBUG_MODE_LABEL}=on, previous values recorded in {DEBUG_PREVIOUS_ANNOTATION}"
        ));
    }
    report.extend(
        changes
            .into_iter()
            .map(|change| format!("{verb} set {change}")),
    );
    if ctx.mode == Mode::DryRun {
        report.push("dry-run: nothing changed, so no revert is scheduled".to_owned());
    }
    Ok(Report::done(report))
}

/// Reverts every deployment and stateful set whose debug mode has expired,
/// in all namespaces, and returns one line per reverted workload.
///
/// A workload whose debug-until is missing or unreadable counts as expired,
/// because debug mode is meant to end. Each container's variable goes back
/// to its recorded previous value, or is removed where there was none. A
/// variable that no longer has the debug value was changed by someone
/// else and stays as it is. The label and annotations are removed. A
/// workload that changed since it was listed (409) is skipped, and the next
/// pass retries it. Other failures on one workload are logged at WARN and
/// do not stop the pass. In dry-run mode the patches carry `dryRun=All`,
/// so each pass reports the same reverts again.
///
/// NOTE: the variable name and debug value come from `settings`, not from
/// the workload, so a changed `--debug-env` between enable and revert
/// leaves the old variable in place.
///
/// # Errors
/// Returns [`Transient`] when the workloads in debug mode cannot be listed.
pub async fn revert_expired(
    client: &Client,
    settings: &Settings,
    mode: Mode,
) -> Result<Vec<String>, Transient> {
    let now = Utc::now();
    let selector = format!("{DEBUG_MODE_LABEL}=on");
    let mut reverted = Vec::new();
    for kind in DEBUG_KINDS {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(kind));
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|error| {
                Transient(format!(
                    "failed to list {}s labelled {selector}: {}; the next pass retries",
                    kind.label(),
                    steward_telemetry::error_chain(&error)
                ))
            })?;
        for object in list.items {
            let until =
                metadata_value(object.metadata.annotations.as_ref(), DEBUG_UNTIL_ANNOTATION)
                    .and_then(parse_time);
            if until.is_some_and(|until| until > now) {
                continue;
            }
            let target = Target {
                kind: kind as i32,
                namespace: object.metadata.namespace.clone().unwrap_or_default(),
                name: object.metadata.name.clone().unwrap_or_default(),
            };
            match revert(client, settings, mode, &target, &object).await {
                Ok(Some(line)) => reverted.push(line),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(workload = %target, error = %error, "debug mode revert failed");
                }
            }
        }
    }
    Ok(reverted)
}

/// Restores one workload's previous values and removes its debug-mode
/// label and annotations. Returns `Ok(None)` when the workload changed or
/// vanished since it was listed.
async fn revert(
    client: &Client,
    settings: &Settings,
    mode: Mode,
    target: &Target,
    object: &DynamicObject,
) -> Result<Option<String>, String> {
    let (variable, debug_value) = &settings.debug_env;
    let annotations = object.metadata.annotations.as_ref();
    let until = metadata_value(annotations, DEBUG_UNTIL_ANNOTATION).unwrap_or("unset");

    let mut changes = Vec::new();
    let mut container_patches = Vec::new();
    match previous_values(annotations) {
        Some(previous) => {
            for container in template_containers(object) {
                let name = container["name"].as_str().unwrap_or_default();
                let Some(old) = previous.get(name) else {
                    continue;
                };
                let current = env_entry(&container, variable).map(env_value);
                if current != Some(debug_value.as_str()) {
                    changes.push(format!(
                        "container {name}: {variable} is {} instead of {debug_value}, so it was changed since and is left as it is",
                        current.unwrap_or("unset")
                    ));
                    continue;
                }
                let entry = match old.as_str() {
                    Some(old) => json!({"name": variable, "value": old}),
                    None => json!({"name": variable, "$patch": "delete"}),
                };
                changes.push(format!(
                    "container {name}: {variable} {debug_value} -> {}",
                    old.as_str().unwrap_or("unset")
                ));
                container_patches.push(json!({"name": name, "env": [entry]}));
            }
        }
        None => {
            tracing::warn!(
                workload = %target,
                annotation = DEBUG_PREVIOUS_ANNOTATION,
                "debug mode ended with the previous values unknown; the variable is left as it is, set it back by hand"
            );
            changes.push(format!(
                "{DEBUG_PREVIOUS_ANNOTATION} is missing or invalid, so {variable} is left as it is; set it back by hand"
            ));
        }
    }

    // The resourceVersion makes two replicas' reverts, or a revert and a
    // new enable, exclude each other: the later one gets 409.
    let mut patch = json!({
        "metadata": {
            "resourceVersion": object.metadata.resource_version,
            "labels": {DEBUG_MODE_LABEL: null},
            "annotations": {DEBUG_UNTIL_ANNOTATION: null, DEBUG_PREVIOUS_ANNOTATION: null},
        },
    });
    if !container_patches.is_empty() {
        patch["spec"] = json!({"template": {"spec": {"containers": container_patches}}});
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        dry_run: mode == Mode::DryRun,
        ..PatchParams::default()
    };
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &target.namespace,
        &api_resource(target.kind()),
    );
    match api
        .patch(&target.name, &params, &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 409 || response.code == 404 => {
            tracing::debug!(workload = %target, code = response.code, "debug mode revert skipped; the workload changed since it was listed");
            return Ok(None);
        }
        Err(error) => {
            let message = match classify("revert debug mode of", target, error) {
                super::ApiFailure::NotFound(message)
                | super::ApiFailure::Transient(message)
                | super::ApiFailure::Permanent(message) => message,
            };
            return Err(message);
        }
    }

    let verb = match mode {
        Mode::DryRun => "would",
        Mode::Live => "did",
    };
    let mut line = format!("{verb} revert debug mode of {target} (debug-until {until})");
    if !changes.is_empty() {
        line.push_str(": ");
        line.push_str(&changes.join("; "));
    }
    Ok(Some(line))
}

/// Spawns a task that runs [`revert_expired`] every `interval` until
/// `shutdown` is cancelled, logging each revert at INFO and each failed
/// pass at WARN. The first pass runs at once, so debug modes that expired
/// while no replica ran are reverted at start.
pub fn spawn_reverter(
    client: Client,
    settings: Settings,
    mode: Mode,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            interval_seconds = interval.as_secs_f64(),
            "debug mode reverter started"
        );
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let pass = tokio::select! {
                () = shutdown.cancelled() => break,
                pass = revert_expired(&client, &settings, mode) => pass,
            };
            match pass {
                Ok(reverted) => {
                    for revert in reverted {
                        tracing::info!(revert = %revert, "debug mode reverted");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "debug mode revert pass failed; retrying at the next interval");
                }
            }
        }
        tracing::info!("debug mode reverter stopped");
    })
}

/// Returns the containers of a workload's pod template.
fn template_containers(object: &DynamicObject) -> Vec<Value> {
    at(&object.data, &["spec", "template", "spec", "containers"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Returns a container's environment entry named `variable`.
fn env_entry<'a>(container: &'a Value, variable: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["name"] == variable)
}

/// Returns an environment entry's value. An entry without one sets the
/// variable to the empty string.
fn env_value(entry: &Value) -> &str {
    entry["value"].as_str().unwrap_or_default()
}

/// Parses the previous-values annotation. Returns `None` when it is missing
/// or not a JSON object of strings and nulls.
fn previous_values(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<Map<String, Value>> {
    let text = metadata_value(annotations, DEBUG_PREVIOUS_ANNOTATION)?;
    let Ok(Value::Object(previous)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    previous
        .values()
        .all(|value| value.is_string() || value.is_null())
        .then_some(previous)
}

fn metadata_value<'a>(
    map: Option<&'a std::collections::BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    map.and_then(|map| map.get(key)).map(String::as_str)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}
