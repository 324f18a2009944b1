//! Workload actions: restarting, scaling, rolling back and resizing
//! workloads, changing autoscaler bounds, and deleting pods and failed jobs.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, Preconditions, PropagationPolicy};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use steward_proto::v1::{Target, TargetKind};

use super::{ACTION_ID_ANNOTATION, Ctx, Report, Transient, at, classify};

/// Annotation `kubectl rollout restart` sets to trigger a rollout.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Restarts a deployment, stateful set or daemon set by stamping its pod
/// template, as `kubectl rollout restart` does.
pub(super) async fn restart(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let object = match ctx.read_target().await {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(Report::failed(format!("{target} not found"))),
        Err(result) => return result,
    };

    let annotations = at(
        &object.data,
        &["spec", "template", "metadata", "annotations"],
    );
    let action_id = ctx.request.action_id.to_string();
    if annotations[ACTION_ID_ANNOTATION].as_str() == Some(action_id.as_str()) {
        return Ok(Report::done(vec![format!(
            "{target} was already restarted by this action in an earlier attempt; nothing to do"
        )]));
    }

    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let previous = annotations[RESTARTED_AT_ANNOTATION]
        .as_str()
        .unwrap_or("unset")
        .to_owned();
    // The resourceVersion makes the patch fail with 409 when the object
    // changed since it was read.
    let patch = json!({
        "metadata": {"resourceVersion": object.metadata.resource_version},
        "spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: now,
            ACTION_ID_ANNOTATION: action_id,
        }}}},
    });
    match ctx
        .api(target.kind())
        .patch(&target.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Report::done(vec![format!(
            "{} patch {target}: spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}] {previous} -> {now} (rollout restart)",
            ctx.verb()
        )])),
        Err(error) => classify("patch", target, error).into_result(),
    }
}

/// Sets the replica count of a deployment or stateful set through the
/// scale subresource.
pub(super) async fn scale(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let replicas = ctx
        .request
        .parameters
        .integer("replicas")
        .unwrap_or_default();
    let api = ctx.api(target.kind());
    let scale = match api.get_scale(&target.name).await {
        Ok(scale) => scale,
        Err(error) => return classify("read the scale of", target, error).into_result(),
    };
    let current = scale.spec.and_then(|spec| spec.replicas).unwrap_or(0);
    if i64::from(current) == replicas {
        return Ok(Report::done(vec![format!(
            "{target} already has spec.replicas {replicas}; nothing to change"
        )]));
    }
    let patch = json!({"spec": {"replicas": replicas}});
    match api
        .patch_scale(&target.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Report::done(vec![format!(
            "{} scale {target}: spec.replicas {current} -> {replicas}",
            ctx.verb()
        )])),
        Err(error) => classify("scale", target, error).into_result(),
    }
}

/// Deletes a pod that a controller owns.
pub(super) async fn delete_pod(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let grace_seconds = ctx
        .request
        .parameters
        .integer("grace_period_seconds")
        .unwrap_or(30);
    // NOTE: a retry after an interrupted attempt cannot tell a StatefulSet
    // pod's replacement, which reuses the name, from the original; it would
    // delete the replacement too. Recording the deleted pod's uid before
    // the call would close this gap.
    let pod = match ctx.read_target().await {
        Ok(Some(pod)) => pod,
        // A pod that an earlier, interrupted attempt deleted is gone now.
        Ok(None) if ctx.request.attempts > 1 => {
            return Ok(Report::done(vec![format!(
                "{target} is gone; an earlier attempt of this action deleted it"
            )]));
        }
        Ok(None) => {
            return Ok(Report::failed(format!(
                "pod {}/{} not found",
                target.namespace, target.name
            )));
        }
        Err(result) => return result,
    };

    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true));
    let Some(owner) = owner else {
        return Ok(Report::failed(format!(
            "pod {}/{} has no controller, so deleting it would not bring it back; refusing",
            target.namespace, target.name
        )));
    };
    let phase = at(&pod.data, &["status", "phase"])
        .as_str()
        .unwrap_or("Unknown")
        .to_owned();
    let params = kube::api::DeleteParams {
        grace_period_seconds: u32::try_from(grace_seconds).ok(),
        // Delete exactly the pod that was read, not a replacement that took
        // its name in the meantime.
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..ctx.delete_params()
    };
    match ctx.api(TargetKind::Pod).delete(&target.name, &params).await {
        Ok(_) => Ok(Report::done(vec![format!(
            "{} delete pod {}/{} (phase {phase}, owned by {} {}) with a {grace_seconds}s grace period",
            ctx.verb(),
            target.namespace,
            target.name,
            owner.kind,
            owner.name
        )])),
        Err(error) => classify("delete", target, error).into_result(),
    }
}

/// Annotation the deployment controller sets on a deployment and on each of
/// its ReplicaSets: the rollout revision, counting up from 1.
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Label the deployment controller adds to each ReplicaSet's pod template,
/// which a deployment's own template does not carry.
const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Page size of the lists the actions read.
const LIST_PAGE_SIZE: u32 = 500;

/// Reads the target, or returns the action's result when it does not exist
/// or cannot be read.
async fn read_existing(ctx: &Ctx<'_>) -> Result<DynamicObject, Result<Report, Transient>> {
    match ctx.read_target().await {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(Ok(Report::failed(format!(
            "{} not found; it may have been deleted or renamed since the alert fired",
            ctx.target()
        )))),
        Err(result) => Err(result),
    }
}

/// Lists every object that `params` selects, page by page.
pub(super) async fn list_all<K>(api: &Api<K>, params: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.clone().limit(LIST_PAGE_SIZE);
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

/// One revision of a deployment: a ReplicaSet it owns and its pod template.
struct Revision {
    number: i64,
    replica_set: String,
    template: Value,
}

/// Returns a deployment to its previous revision's pod template, as
/// `kubectl rollout undo` does: the ReplicaSet it owns with the
/// second-highest revision gives the template.
///
/// The new template carries the action id, so a redelivered action
/// recognises its own rollback. Because the annotation is part of the template, the
/// deployment controller rolls out a new ReplicaSet with the old template
/// instead of scaling the old ReplicaSet back up.
///
/// NOTE: `kubectl rollout undo` also copies the ReplicaSet's annotations,
/// such as `kubernetes.io/change-cause`, onto the deployment; this does not.
pub(super) async fn rollback_deployment(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let deployment = match read_existing(ctx).await {
        Ok(deployment) => deployment,
        Err(result) => return result,
    };

    let action_id = ctx.request.action_id.to_string();
    let current = at(&deployment.data, &["spec", "template"]);
    if current["metadata"]["annotations"][ACTION_ID_ANNOTATION].as_str() == Some(&action_id) {
        return Ok(Report::done(vec![format!(
            "{target} was already rolled back by this action in an earlier attempt; nothing to do"
        )]));
    }
    if at(&deployment.data, &["spec", "paused"]).as_bool() == Some(true) {
        return Ok(Report::failed(format!(
            "{target} is paused, so a rollback would not roll out; resume it with `kubectl rollout resume` and retry"
        )));
    }

    let revisions = match owned_revisions(ctx, &deployment).await {
        Ok(revisions) => revisions,
        Err(result) => return result,
    };
    let [latest, previous, ..] = revisions.as_slice() else {
        let found = match revisions.first() {
            Some(only) => format!(
                "it owns one ReplicaSet with a revision ({}, revision {})",
                only.replica_set, only.number
            ),
            None => format!("it owns no ReplicaSet with a {REVISION_ANNOTATION} annotation"),
        };
        return Ok(Report::failed(format!(
            "{target} has no previous revision to roll back to: {found}; a deployment keeps only spec.revisionHistoryLimit old ReplicaSets, so roll back by hand if the old template is known"
        )));
    };

    if comparable_template(current) == comparable_template(&previous.template) {
        return Ok(Report::done(vec![format!(
            "{target} already has the pod template of revision {} (ReplicaSet {}); nothing to change",
            previous.number, previous.replica_set
        )]));
    }

    let mut template = previous.template.clone();
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    template["metadata"]["annotations"][ACTION_ID_ANNOTATION] = Value::from(action_id);

    // A merge patch replaces lists whole, and the diff sets every key the
    // old template lacks to null, so the result is exactly the old template.
    // The resourceVersion makes the patch fail with 409 when the deployment
    // changed since it was read.
    let patch = json!({
        "metadata": {"resourceVersion": deployment.metadata.resource_version},
        "spec": {"template": merge_patch_between(current, &template)},
    });
    match ctx
        .api(TargetKind::Deployment)
        .patch(&target.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Report::done(vec![format!(
            "{} patch {target}: spec.template revision {} (ReplicaSet {}) -> revision {} (ReplicaSet {}); images {} -> {} (rollout undo)",
            ctx.verb(),
            latest.number,
            latest.replica_set,
            previous.number,
            previous.replica_set,
            container_images(current),
            container_images(&previous.template),
        )])),
        Err(error) => classify("patch", target, error).into_result(),
    }
}

/// Lists the ReplicaSets the deployment owns (by owner uid) that carry a
/// revision, highest revision first.
async fn owned_revisions(
    ctx: &Ctx<'_>,
    deployment: &DynamicObject,
) -> Result<Vec<Revision>, Result<Report, Transient>> {
    let target = ctx.target();
    let resource = ApiResource::erase::<ReplicaSet>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &target.namespace, &resource);
    let replica_sets = list_all(&api, &ListParams::default())
        .await
        .map_err(|error| classify("list the ReplicaSets of", target, error).into_result())?;

    let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
    let mut revisions: Vec<Revision> = replica_sets
        .into_iter()
        .filter(|replica_set| {
            replica_set
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|owner| !uid.is_empty() && owner.uid == uid)
        })
        .filter_map(|replica_set| {
            let number = replica_set
                .metadata
                .annotations
                .as_ref()?
                .get(REVISION_ANNOTATION)?
                .parse()
                .ok()?;
            Some(Revision {
                number,
                replica_set: replica_set.metadata.name.clone().unwrap_or_default(),
                template: at(&replica_set.data, &["spec", "template"]).clone(),
            })
        })
        .collect();
    revisions.sort_by_key(|revision| std::cmp::Reverse(revision.number));
    Ok(revisions)
}

/// Returns a pod template without what differs between a deployment's
/// template and its ReplicaSet's for the same revision: the
/// `pod-template-hash` label and Steward's action id.
fn comparable_template(template: &Value) -> Value {
    let mut template = template.clone();
    for (field, key) in [
        ("labels", POD_TEMPLATE_HASH_LABEL),
        ("annotations", ACTION_ID_ANNOTATION),
    ] {
        let Some(metadata) = template["metadata"].as_object_mut() else {
            continue;
        };
        if let Some(map) = metadata.get_mut(field).and_then(Value::as_object_mut) {
            map.remove(key);
            if map.is_empty() {
                metadata.remove(field);
            }
        }
    }
    template
}

/// Returns the JSON merge patch (RFC 7386) that turns `from` into `to`.
/// Null values in `to` are dropped, as a merge patch cannot set them.
fn merge_patch_between(from: &Value, to: &Value) -> Value {
    let (Value::Object(from), Value::Object(to)) = (from, to) else {
        return to.clone();
    };
    let mut patch = serde_json::Map::new();
    for key in from.keys().filter(|key| !to.contains_key(*key)) {
        patch.insert(key.clone(), Value::Null);
    }
    for (key, value) in to {
        match from.get(key) {
            Some(old) if old == value => {}
            Some(old) => {
                patch.insert(key.clone(), merge_patch_between(old, value));
            }
            None => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(patch)
}

/// Returns a pod template's containers as `name=image`, separated by commas.
fn container_images(template: &Value) -> String {
    let images: Vec<String> = at(template, &["spec", "containers"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|container| {
            format!(
                "{}={}",
                container["name"].as_str().unwrap_or("?"),
                container["image"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if images.is_empty() {
        "none".to_owned()
    } else {
        images.join(", ")
    }
}

/// A container resource that `increase_resources` sets from the parameter
/// of the same name.
struct ResourceField {
    parameter: &'static str,
    /// `limits` or `requests`.
    section: &'static str,
    /// `memory` (bytes) or `cpu` (cores).
    resource: &'static str,
}

static RESOURCE_FIELDS: [ResourceField; 4] = [
    ResourceField {
        parameter: "memory_limit",
        section: "limits",
        resource: "memory",
    },
    ResourceField {
        parameter: "memory_request",
        section: "requests",
        resource: "memory",
    },
    ResourceField {
        parameter: "cpu_limit",
        section: "limits",
        resource: "cpu",
    },
    ResourceField {
        parameter: "cpu_request",
        section: "requests",
        resource: "cpu",
    },
];

/// A requested value of one resource field.
struct Requested<'a> {
    field: &'a ResourceField,
    text: &'a str,
    value: f64,
}

/// Raises one container's CPU and memory requests and limits in a
/// deployment's, stateful set's or daemon set's pod template.
///
/// Every value must stay within the configured maximum and must not be
/// lower than the current one, and each request must stay within its
/// limit, as the API server requires.
pub(super) async fn increase_resources(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let requested = match requested_resources(ctx) {
        Ok(requested) => requested,
        Err(report) => return Ok(report),
    };
    let container_name = ctx.request.parameters.text("container").unwrap_or_default();

    let object = match read_existing(ctx).await {
        Ok(object) => object,
        Err(result) => return result,
    };
    let template = at(&object.data, &["spec", "template"]);
    let action_id = ctx.request.action_id.to_string();
    if template["metadata"]["annotations"][ACTION_ID_ANNOTATION].as_str() == Some(&action_id) {
        return Ok(Report::done(vec![format!(
            "{target} container {container_name} was already changed by this action in an earlier attempt; nothing to do"
        )]));
    }
    let containers = at(template, &["spec", "containers"])
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(container) = containers
        .iter()
        .find(|container| container["name"].as_str() == Some(container_name))
    else {
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|container| container["name"].as_str())
            .collect();
        return Ok(Report::failed(format!(
            "{target} has no container {container_name:?}; its containers are {}; choose one of them",
            names.join(", ")
        )));
    };

    let plan = match plan_resources(target, container_name, &container["resources"], &requested) {
        Ok(plan) => plan,
        Err(message) => return Ok(Report::failed(message)),
    };
    if plan.patch.is_empty() {
        let mut changes = plan.unchanged;
        changes.push(format!(
            "{target} container {container_name} already has the requested resources; nothing to change"
        ));
        return Ok(Report::done(changes));
    }

    // A strategic merge patch merges the container list by name, so only
    // this container's resources change. The resourceVersion makes the
    // patch fail with 409 when the object changed since it was read.
    let patch = json!({
        "metadata": {"resourceVersion": object.metadata.resource_version},
        "spec": {"template": {
            "metadata": {"annotations": {ACTION_ID_ANNOTATION: action_id}},
            "spec": {"containers": [{
                "name": container_name,
                "resources": Value::Object(plan.patch),
            }]},
        }},
    });
    match ctx
        .api(target.kind())
        .patch(&target.name, &ctx.patch_params(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => {
            let mut changes: Vec<String> = plan
                .changed
                .iter()
                .map(|change| {
                    format!(
                        "{} patch {target} container {container_name}: {change}",
                        ctx.verb()
                    )
                })
                .collect();
            changes.extend(plan.unchanged);
            Ok(Report::done(changes))
        }
        Err(error) => classify("patch", target, error).into_result(),
    }
}

/// Reads the resource parameters and checks them against the configured
/// maximums; `Err` is the failed report.
fn requested_resources<'a>(ctx: &'a Ctx<'_>) -> Result<Vec<Requested<'a>>, Report> {
    let target = ctx.target();
    let mut requested = Vec::new();
    for field in &RESOURCE_FIELDS {
        let Some(text) = ctx.request.parameters.text(field.parameter) else {
            continue;
        };
        let Some(value) = steward_actions::parse_quantity(text) else {
            return Err(Report::failed(format!(
                "parameter {} of increase_resources on {target} is {text:?}, which is not a Kubernetes quantity such as 512Mi or 500m",
                field.parameter
            )));
        };
        let (maximum, setting) = match field.resource {
            "memory" => (ctx.settings.max_container_memory, "--max-container-memory"),
            _ => (ctx.settings.max_container_cpu, "--max-container-cpu"),
        };
        if value > maximum {
            return Err(Report::failed(format!(
                "parameter {} of increase_resources on {target} is {text}, above the maximum of {} that Steward may set; choose a smaller value or raise {setting}",
                field.parameter,
                describe_amount(field.resource, maximum),
            )));
        }
        requested.push(Requested { field, text, value });
    }
    if requested.is_empty() {
        let names: Vec<&str> = RESOURCE_FIELDS
            .iter()
            .map(|field| field.parameter)
            .collect();
        return Err(Report::failed(format!(
            "increase_resources on {target} needs at least one of the parameters {}; none was given",
            names.join(", ")
        )));
    }
    Ok(requested)
}

/// The resource changes of one container.
struct ResourcePlan {
    /// The `resources` patch, with `limits` and `requests` maps.
    patch: serde_json::Map<String, Value>,
    /// One line per changed field, `resources.limits.memory 1Gi -> 2Gi`.
    changed: Vec<String>,
    /// One line per requested field that already has the value.
    unchanged: Vec<String>,
}

/// Compares the requested values with the container's current
/// `resources`; `Err` is the reason to reject the request.
fn plan_resources(
    target: &Target,
    container: &str,
    current: &Value,
    requested: &[Requested<'_>],
) -> Result<ResourcePlan, String> {
    let mut plan = ResourcePlan {
        patch: serde_json::Map::new(),
        changed: Vec::new(),
        unchanged: Vec::new(),
    };
    // The value of each (section, resource) once the change is applied.
    let mut result: Vec<(&str, &str, f64, String)> = Vec::new();

    for section in ["limits", "requests"] {
        for resource in ["memory", "cpu"] {
            let path = format!("resources.{section}.{resource}");
            let old_text = quantity_text(&current[section][resource]);
            let old_value = match &old_text {
                Some(text) => Some(steward_actions::parse_quantity(text).ok_or_else(|| {
                    format!(
                        "{target} container {container} has {path} {text:?}, which Steward cannot compare; change it by hand"
                    )
                })?),
                None => None,
            };
            let new = requested
                .iter()
                .find(|new| new.field.section == section && new.field.resource == resource);

            let Some(new) = new else {
                if let (Some(text), Some(value)) = (old_text, old_value) {
                    result.push((section, resource, value, text));
                }
                continue;
            };
            if old_value.is_some_and(|old| new.value < old) {
                return Err(format!(
                    "parameter {} of increase_resources is {}, below the current {path} {} of container {container} in {target}; increase_resources only raises values, so choose a larger value",
                    new.field.parameter,
                    new.text,
                    old_text.as_deref().unwrap_or_default(),
                ));
            }
            result.push((section, resource, new.value, new.text.to_owned()));
            if old_value == Some(new.value) {
                plan.unchanged.push(format!(
                    "{target} container {container} already has {path} {}",
                    new.text
                ));
                continue;
            }
            plan.patch
                .entry(section)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("every entry inserted under limits and requests is an object")
                .insert(resource.to_owned(), Value::from(new.text));
            plan.changed.push(format!(
                "{path} {} -> {}",
                old_text.as_deref().unwrap_or("unset"),
                new.text
            ));
        }
    }

    // The API server rejects a request above its limit.
    for resource in ["memory", "cpu"] {
        let find = |section: &str| {
            result
                .iter()
                .find(|(s, r, _, _)| *s == section && *r == resource)
        };
        if let (Some((_, _, limit, limit_text)), Some((_, _, request, request_text))) =
            (find("limits"), find("requests"))
        {
            if request > limit {
                return Err(format!(
                    "the change would set resources.requests.{resource} {request_text} above resources.limits.{resource} {limit_text} of container {container} in {target}, which the API server rejects; raise the {resource} limit in the same action"
                ));
            }
        }
    }
    Ok(plan)
}

/// Returns a quantity as text; the API server stores quantities as strings,
/// but a hand-written object may hold a number.
fn quantity_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Describes an amount of memory (bytes) or CPU (cores) for messages.
fn describe_amount(resource: &str, value: f64) -> String {
    if resource != "memory" {
        return format!("{value} cores");
    }
    for (suffix, factor) in [
        ("Ti", 1_099_511_627_776.0),
        ("Gi", 1_073_741_824.0),
        ("Mi", 1_048_576.0),
        ("Ki", 1024.0),
    ] {
        if value >= factor && (value / factor).fract() == 0.0 {
            return format!("{}{suffix}", value / factor);
        }
    }
    format!("{value} bytes")
}

/// Changes a horizontal pod autoscaler's `spec.minReplicas` or
/// `spec.maxReplicas`, keeping the minimum at or below the maximum.
pub(super) async fn update_hpa(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let parameters = ctx.request.parameters;
    let min_requested = parameters.integer("min_replicas");
    let max_requested = parameters.integer("max_replicas");
    if min_requested.is_none() && max_requested.is_none() {
        return Ok(Report::failed(format!(
            "update_hpa on {target} needs min_replicas, max_replicas or both; neither was given"
        )));
    }

    let hpa = match read_existing(ctx).await {
        Ok(hpa) => hpa,
        Err(result) => return result,
    };
    let spec = &hpa.data["spec"];
    // autoscaling/v2 defaults minReplicas to 1.
    let min_current = spec["minReplicas"].as_i64().unwrap_or(1);
    let Some(max_current) = spec["maxReplicas"].as_i64() else {
        return Ok(Report::failed(format!(
            "{target} has no spec.maxReplicas, which autoscaling/v2 requires; fix the object by hand"
        )));
    };
    let min_new = min_requested.unwrap_or(min_current);
    let max_new = max_requested.unwrap_or(max_current);
    if min_new > max_new {
        return Ok(Report::failed(format!(
            "update_hpa would leave {target} with spec.minReplicas {min_new} above spec.maxReplicas {max_new}; choose min_replicas at or below max_replicas"
        )));
    }

    let mut spec_patch = serde_json::Map::new();
    let mut changes = Vec::new();
    for (field, old, new) in [
        ("minReplicas", min_current, min_new),
        ("maxReplicas", max_current, max_new),
    ] {
        if old != new {
            spec_patch.insert(field.to_owned(), Value::from(new));
            changes.push(format!(
                "{} patch {target}: spec.{field} {old} -> {new}",
                ctx.verb()
            ));
        }
    }
    if spec_patch.is_empty() {
        return Ok(Report::done(vec![format!(
            "{target} already has spec.minReplicas {min_current} and spec.maxReplicas {max_current}; nothing to change"
        )]));
    }

    // The resourceVersion makes the patch fail with 409 when the
    // autoscaler changed since it was read.
    let patch = json!({
        "metadata": {
            "resourceVersion": hpa.metadata.resource_version,
            "annotations": {ACTION_ID_ANNOTATION: ctx.request.action_id.to_string()},
        },
        "spec": Value::Object(spec_patch),
    });
    match ctx
        .api(TargetKind::HorizontalPodAutoscaler)
        .patch(&target.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Report::done(changes)),
        Err(error) => classify("patch", target, error).into_result(),
    }
}

/// Deletes a job that has failed, and with it its pods, so that its owner
/// (a CronJob, a deploy pipeline) can run it again. A job that is running,
/// has succeeded or has not failed is left alone.
pub(super) async fn delete_failed_job(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let job = match ctx.read_target().await {
        Ok(Some(job)) => job,
        // A job that an earlier, interrupted attempt deleted is gone now.
        Ok(None) if ctx.request.attempts > 1 => {
            return Ok(Report::done(vec![format!(
                "{target} is gone; an earlier attempt of this action deleted it"
            )]));
        }
        Ok(None) => {
            return Ok(Report::failed(format!(
                "{target} not found; it may have been deleted since the alert fired"
            )));
        }
        Err(result) => return result,
    };

    let status = &job.data["status"];
    let condition = |kind: &str| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|condition| condition["type"] == kind && condition["status"] == "True")
    };
    let failed_pods = status["failed"].as_i64().unwrap_or(0);
    let active_pods = status["active"].as_i64().unwrap_or(0);
    if condition("Complete").is_some() {
        return Ok(Report::failed(format!(
            "{target} has completed successfully, so it is not a failed job; leaving it in place"
        )));
    }
    let failed = condition("Failed");
    if failed.is_none() && failed_pods == 0 {
        return Ok(Report::failed(format!(
            "{target} has not failed (no Failed condition and status.failed is 0); leaving it in place"
        )));
    }
    if active_pods > 0 {
        return Ok(Report::failed(format!(
            "{target} still has {active_pods} active pods, so it may yet succeed; retry once it has finished"
        )));
    }

    let why = match failed {
        Some(condition) => format!(
            "condition Failed ({}: {}), {failed_pods} failed pods",
            condition["reason"].as_str().unwrap_or("no reason"),
            condition["message"].as_str().unwrap_or("no message"),
        ),
        None => format!("{failed_pods} failed pods"),
    };
    let params = kube::api::DeleteParams {
        // Background propagation lets the garbage collector delete the pods;
        // without it, a job deleted through the API leaves them orphaned.
        propagation_policy: Some(PropagationPolicy::Background),
        // Delete exactly the job that was read, not one created under the
        // same name since.
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..ctx.delete_params()
    };
    match ctx.api(TargetKind::Job).delete(&target.name, &params).await {
        Ok(_) => Ok(Report::done(vec![format!(
            "{} delete {target} ({why}) with its pods (propagationPolicy Background)",
            ctx.verb()
        )])),
        Err(error) => classify("delete", target, error).into_result(),
    }
}
