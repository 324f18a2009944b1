//! Storage actions that use the API directly; the others run job templates.

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::Patch;
use serde_json::json;
use steward_actions::parse_quantity;

use super::{ACTION_ID_ANNOTATION, Ctx, Report, Transient, at, classify};

/// Grows a persistent volume claim when its storage class allows it.
///
/// The new size must be larger than the claim's requested size and at most
/// the configured maximum. The claim must be bound, because the API server
/// accepts a new size only for bound claims.
pub(super) async fn expand_pvc(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let claim = match ctx.read_target().await {
        Ok(Some(claim)) => claim,
        Ok(None) => return Ok(Report::failed(format!("{target} not found"))),
        Err(result) => return result,
    };

    let action_id = ctx.request.action_id.to_string();
    let annotations = claim.metadata.annotations.as_ref();
    if annotations.and_then(|annotations| annotations.get(ACTION_ID_ANNOTATION)) == Some(&action_id)
    {
        return Ok(Report::done(vec![format!(
            "{target} was already expanded by this action in an earlier attempt; nothing to do"
        )]));
    }

    let Some(size) = ctx.request.parameters.text("size") else {
        return Ok(Report::failed(format!(
            "expand_pvc on {target} has no size parameter; give the new size, such as 20Gi"
        )));
    };
    let Some(requested) = parse_quantity(size) else {
        return Ok(Report::failed(format!(
            "size {size:?} for {target} is not a Kubernetes quantity; give one such as 20Gi"
        )));
    };
    let current = at(&claim.data, &["spec", "resources", "requests", "storage"])
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(current_bytes) = parse_quantity(&current) else {
        return Ok(Report::failed(format!(
            "{target} requests storage {current:?}, which Steward cannot compare with {size}; expand it by hand"
        )));
    };
    if requested <= current_bytes {
        return Ok(Report::failed(format!(
            "size {size} is not larger than the {current} that {target} already requests; a volume can only grow, so give a larger size"
        )));
    }
    let max = ctx.settings.max_volume_size;
    if requested > max {
        return Ok(Report::failed(format!(
            "size {size} for {target} exceeds the maximum of {} set by --max-volume-size; give a smaller size or raise the maximum",
            format_bytes(max)
        )));
    }

    let phase = at(&claim.data, &["status", "phase"])
        .as_str()
        .unwrap_or("Unknown");
    if phase != "Bound" {
        return Ok(Report::failed(format!(
            "{target} is {phase}, and only a bound claim can be expanded; retry once it is bound"
        )));
    }

    let class = match at(&claim.data, &["spec", "storageClassName"]).as_str() {
        Some(class) if !class.is_empty() => class.to_owned(),
        _ => {
            return Ok(Report::failed(format!(
                "expansion is not allowed: {target} has no storageClassName, so no storage class allows volume expansion for it; expand its volume by hand"
            )));
        }
    };
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    match classes.get_opt(&class).await {
        Ok(Some(storage_class)) if storage_class.allow_volume_expansion == Some(true) => {}
        Ok(Some(_)) => {
            return Ok(Report::failed(format!(
                "expansion is not allowed: storage class {class} of {target} does not set allowVolumeExpansion: true; enable it on the class if its provisioner supports resizing"
            )));
        }
        Ok(None) => {
            return Ok(Report::failed(format!(
                "expansion is not allowed: storage class {class} of {target} not found; create the class or expand the volume by hand"
            )));
        }
        Err(error) => {
            return classify(&format!("read storage class {class} of"), target, error)
                .into_result();
        }
    }

    // The resourceVersion makes the patch fail with 409 when the claim
    // changed since it was read, such as by another resize.
    let patch = json!({
        "metadata": {
            "resourceVersion": claim.metadata.resource_version,
            "annotations": {ACTION_ID_ANNOTATION: action_id},
        },
        "spec": {"resources": {"requests": {"storage": size}}},
    });
    match ctx
        .api(target.kind())
        .patch(&target.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Report::done(vec![format!(
            "{} patch {target}: spec.resources.requests.storage {current} -> {size} (storage class {class} allows expansion)",
            ctx.verb()
        )])),
        Err(error) => classify("patch", target, error).into_result(),
    }
}

/// Formats a byte count with the largest binary suffix that divides it,
/// as Kubernetes quantities are written: 1099511627776 is `1Ti`.
fn format_bytes(bytes: f64) -> String {
    const SUFFIXES: [(&str, f64); 4] = [
        ("Ti", 1_099_511_627_776.0),
        ("Gi", 1_073_741_824.0),
        ("Mi", 1_048_576.0),
        ("Ki", 1024.0),
    ];
    for (suffix, factor) in SUFFIXES {
        let count = bytes / factor;
        if count >= 1.0 && count.fract() == 0.0 {
            return format!("{count}{suffix}");
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_use_binary_suffixes() {
        assert_eq!(format_bytes(1_099_511_627_776.0), "1Ti");
        assert_eq!(format_bytes(1_610_612_736.0), "1536Mi");
        assert_eq!(format_bytes(1000.0), "1000 bytes");
    }
}
