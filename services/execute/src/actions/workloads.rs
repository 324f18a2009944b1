//! Restarting, scaling and deleting workloads' pods.

use kube::api::{Patch, Preconditions};
use serde_json::json;
use steward_proto::v1::TargetKind;

use super::{ACTION_ID_ANNOTATION, Ctx, Report, Request, Transient, at, classify};

/// Annotation `kubectl rollout restart` sets to trigger a rollout.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Describes the planned request of an action when no cluster is
/// configured, without reading any object.
pub(super) fn describe_without_cluster(request: &Request<'_>) -> Report {
    let target = request.target;
    let parameters = request.parameters.to_string();
    let with = if parameters.is_empty() {
        String::new()
    } else {
        format!(" with {parameters}")
    };
    let what = match request.action {
        "restart_deployment"
        | "restart_statefulset"
        | "restart_daemonset"
        | "reset_service_mesh" => format!(
            "would patch {target}: set spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}] to the current time, as `kubectl rollout restart` does"
        ),
        "scale_deployment" | "scale_statefulset" => format!(
            "would set {target} spec.replicas to {} through the scale subresource",
            request.parameters.integer("replicas").unwrap_or_default()
        ),
        "delete_pod" => format!(
            "would delete {target} with a {}s grace period, if a controller owns it",
            request
                .parameters
                .integer("grace_period_seconds")
                .unwrap_or(30)
        ),
        action => format!("would run {action} on {target}{with}"),
    };
    Report::done(vec![format!(
        "{what} (no cluster configured: the object was not read)"
    )])
}

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

/// Returns a deployment to its previous revision's pod template.
pub(super) async fn rollback_deployment(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}

/// Raises one container's requests and limits.
pub(super) async fn increase_resources(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}

/// Changes an autoscaler's minimum or maximum replicas.
pub(super) async fn update_hpa(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}

/// Deletes a failed job with its pods.
pub(super) async fn delete_failed_job(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}
