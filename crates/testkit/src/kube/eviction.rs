//! The `pods/eviction` subresource and the PodDisruptionBudget check behind
//! it.
//!
//! The real API server reads `status.disruptionsAllowed`, which the
//! disruption controller computes from the pods' controller. With no
//! controllers here, the budget is computed from the pods in the store
//! at the time of the request, as described on [`check_budgets`].

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::object;
use super::resources::{self, Subresource};
use super::selector::LabelSelector;
use super::server::{self, ApiRequest, Reply, Target};
use super::status::ApiError;
use super::store::Store;

/// Deletes a pod through an `policy/v1` Eviction unless a disruption budget
/// forbids it, and responds with 201 and a success `Status`.
///
/// # Errors
/// 404 when the pod does not exist, 409 when `deleteOptions.preconditions`
/// do not match, 429 when a budget would be violated, 500 when more than
/// one budget selects the pod (as the real API server does).
pub(super) fn evict(
    store: &mut Store,
    request: &ApiRequest,
    target: &Target<'_>,
) -> Result<Reply, ApiError> {
    let body = request.json_body()?;
    if let Some(name) = body.pointer("/metadata/name").and_then(Value::as_str) {
        if name != target.name {
            return Err(ApiError::bad_request(format!(
                "the name of the Eviction ({name}) does not match the name of the pod on the URL ({})",
                target.name
            )));
        }
    }
    let pod = target.load(store)?;

    // kube-rs 1.1 sends its options as `delete_options`, a field the real
    // API server ignores, so only `deleteOptions` is read here too.
    let options = body.get("deleteOptions").cloned().unwrap_or(Value::Null);
    server::check_preconditions(target, &pod, &options)?;
    let dry_run = request.params.dry_run || server::options_dry_run(&options);

    check_budgets(store, target, &pod)?;

    object::delete(store, target.kind, pod, dry_run);
    store.record(target.mutation("evict", Some(Subresource::Eviction), dry_run, None, body));
    let success = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    });
    Ok(Reply::Json(StatusCode::CREATED, success))
}

/// Checks the PodDisruptionBudgets of the pod's namespace whose selector
/// matches the pod.
///
/// A pod is healthy when its `Ready` condition is `True`, or when it has no
/// `Ready` condition and its phase is `Running`. The expected pod count is
/// the number of pods the budget selects. Evicting a healthy pod is allowed
/// while the healthy count exceeds the desired count. Evicting an unhealthy
/// pod is allowed while the budget is met, or always with
/// `unhealthyPodEvictionPolicy: AlwaysAllow`. Pods that are `Pending`,
/// `Succeeded`, `Failed` or already being deleted may always be evicted.
fn check_budgets(store: &Store, target: &Target<'_>, pod: &Value) -> Result<(), ApiError> {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let terminating = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|stamp| !stamp.is_null());
    if matches!(phase, "Pending" | "Succeeded" | "Failed") || terminating {
        return Ok(());
    }

    let budget_kind = resources::find("policy", "v1", "poddisruptionbudgets")
        .expect("the resource table lists policy/v1 poddisruptionbudgets");
    let budgets: Vec<(&Value, LabelSelector)> = store
        .list(budget_kind, Some(target.namespace))
        .filter_map(|budget| budget_selector(budget).map(|selector| (budget, selector)))
        .filter(|(_, selector)| selector.matches_object(pod))
        .collect();
    let (budget, selector) = match budgets.as_slice() {
        [] => return Ok(()),
        [only] => only,
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };

    let selected: Vec<&Value> = store
        .list(target.kind, Some(target.namespace))
        .filter(|candidate| selector.matches_object(candidate))
        .collect();
    let expected = selected.len();
    let healthy = selected
        .iter()
        .filter(|candidate| is_healthy(candidate))
        .count();
    let desired = desired_healthy(budget, expected);

    let allowed = if is_healthy(pod) {
        healthy > desired
    } else {
        let policy = budget
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str);
        policy == Some("AlwaysAllow") || healthy >= desired
    };
    if allowed {
        return Ok(());
    }

    let budget_name = budget
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let cause = format!(
        "The disruption budget {budget_name} needs {desired} healthy pods and has {healthy} currently"
    );
    Err(ApiError::too_many_requests(
        target.kind,
        target.name,
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    .with_cause("DisruptionBudget", &cause, None))
}

/// Returns a budget's selector. In `policy/v1` a missing selector selects no
/// pods and an empty one selects every pod in the namespace.
fn budget_selector(budget: &Value) -> Option<LabelSelector> {
    let selector = budget
        .pointer("/spec/selector")
        .filter(|selector| !selector.is_null())?;
    match LabelSelector::from_object(selector) {
        Ok(selector) => Some(selector),
        Err(problem) => {
            tracing::warn!(%problem, "ignoring a PodDisruptionBudget with an invalid selector");
            None
        }
    }
}

fn is_healthy(pod: &Value) -> bool {
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition.get("type") == Some(&json!("Ready")))
        });
    match ready {
        Some(condition) => condition.get("status").and_then(Value::as_str) == Some("True"),
        None => pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running"),
    }
}

/// Returns how many selected pods the budget requires to stay healthy.
/// Percentages round up, as the disruption controller rounds them.
///
/// NOTE: a budget with neither `minAvailable` nor `maxUnavailable` requires
/// none here; the disruption controller's behaviour for it is not modelled.
fn desired_healthy(budget: &Value, expected: usize) -> usize {
    if let Some(max_unavailable) = budget.pointer("/spec/maxUnavailable") {
        let unavailable = int_or_percent(max_unavailable, expected);
        return expected.saturating_sub(unavailable);
    }
    match budget.pointer("/spec/minAvailable") {
        Some(min_available) => int_or_percent(min_available, expected),
        None => 0,
    }
}

/// Resolves an IntOrString such as `2` or `"50%"` against `total`.
fn int_or_percent(value: &Value, total: usize) -> usize {
    if let Some(count) = value.as_u64() {
        return usize::try_from(count).unwrap_or(usize::MAX);
    }
    let percent = value
        .as_str()
        .and_then(|text| text.strip_suffix('%'))
        .and_then(|number| number.trim().parse::<usize>().ok());
    match percent {
        Some(percent) => (percent * total).div_ceil(100),
        None => value
            .as_str()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0),
    }
}
