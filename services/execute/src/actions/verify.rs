//! Checks that a live action had its effect: a restart or rollback whose
//! rollout completed, a scale whose replicas are ready.
//!
//! The result goes into the action history as the action's effectiveness,
//! which the guard can weigh against repeating the action. An action whose
//! effect cannot be observed this way is reported as not checked.

use std::time::{Duration, Instant};

use serde_json::Value;
use steward_proto::v1::TargetKind;

use super::{Ctx, at};

/// Time between two reads of the target while waiting for the effect.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The effect was checked.
    pub checked: bool,
    /// The effect was seen within the timeout.
    pub effective: bool,
    /// What was seen, for people.
    pub detail: String,
}

impl Verification {
    /// A check that did not run.
    pub fn not_checked(detail: impl Into<String>) -> Self {
        Self {
            checked: false,
            effective: false,
            detail: detail.into(),
        }
    }
}

/// The state an action waits for.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// Every replica runs the newest pod template and is available.
    Rollout,
    /// The workload has as many ready replicas as it wants.
    Replicas,
}

/// Waits up to the verify timeout for the effect of `action` on the
/// target.
pub(crate) async fn effect(ctx: &Ctx<'_>, action: &str) -> Verification {
    let goal = match action {
        "restart_deployment"
        | "restart_statefulset"
        | "restart_daemonset"
        | "reset_service_mesh"
        | "rollback_deployment"
        | "increase_resources"
        | "restart_network_component" => Goal::Rollout,
        "scale_deployment" | "scale_statefulset" => Goal::Replicas,
        _ => return Verification::not_checked("this action's effect is not observed"),
    };
    let timeout = ctx.settings.verify_timeout;
    if timeout.is_zero() {
        return Verification::not_checked("verification is off (--verify-timeout 0s)");
    }

    let target = ctx.target();
    let deadline = Instant::now() + timeout;
    loop {
        let last = match ctx.api(target.kind()).get_opt(&target.name).await {
            Ok(Some(object)) => {
                let mut state = object.data.clone();
                state["metadata"] = serde_json::to_value(&object.metadata).unwrap_or(Value::Null);
                let (done, detail) = reached(target.kind(), goal, &state);
                if done {
                    return Verification {
                        checked: true,
                        effective: true,
                        detail,
                    };
                }
                detail
            }
            Ok(None) => format!("{target} no longer exists"),
            Err(error) => format!(
                "reading {target} failed: {}",
                steward_telemetry::error_chain(&error)
            ),
        };
        if Instant::now() >= deadline {
            return Verification {
                checked: true,
                effective: false,
                detail: format!("not done within {}s: {last}", timeout.as_secs()),
            };
        }
        tokio::time::sleep(POLL_INTERVAL.min(timeout)).await;
    }
}

/// Returns whether the object reached the goal, with what its status says.
fn reached(kind: TargetKind, goal: Goal, object: &Value) -> (bool, String) {
    let number = |path: &[&str]| at(object, path).as_i64().unwrap_or(0);
    let generation = number(&["metadata", "generation"]);
    let observed = number(&["status", "observedGeneration"]);
    let observed_now = observed >= generation;
    match kind {
        TargetKind::Daemonset => {
            let desired = number(&["status", "desiredNumberScheduled"]);
            let updated = number(&["status", "updatedNumberScheduled"]);
            let available = number(&["status", "numberAvailable"]);
            let done = observed_now && updated == desired && available == desired;
            (
                done,
                format!("{updated} of {desired} pods updated, {available} available"),
            )
        }
        _ => {
            let wanted = number(&["spec", "replicas"]);
            let replicas = number(&["status", "replicas"]);
            let updated = number(&["status", "updatedReplicas"]);
            let ready = number(&["status", "readyReplicas"]);
            let available = match kind {
                TargetKind::Statefulset => ready,
                _ => number(&["status", "availableReplicas"]),
            };
            let done = match goal {
                Goal::Rollout => {
                    observed_now && updated == wanted && replicas == wanted && available == wanted
                }
                Goal::Replicas => observed_now && ready == wanted && replicas == wanted,
            };
            (
                done,
                format!(
                    "{updated} of {wanted} replicas updated, {ready} ready, {replicas} in total"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rollout_needs_every_replica_updated_and_available() {
        let mut deployment = json!({
            "metadata": {"generation": 3},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2},
        });
        assert!(
            !reached(TargetKind::Deployment, Goal::Rollout, &deployment).0,
            "an old pod remains"
        );
        deployment["status"]["replicas"] = json!(2);
        assert!(reached(TargetKind::Deployment, Goal::Rollout, &deployment).0);
        deployment["metadata"]["generation"] = json!(4);
        assert!(
            !reached(TargetKind::Deployment, Goal::Rollout, &deployment).0,
            "the change is not observed yet"
        );
    }

    #[test]
    fn daemonset_rollout_counts_scheduled_pods() {
        let daemonset = json!({
            "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2},
        });
        let (done, detail) = reached(TargetKind::Daemonset, Goal::Rollout, &daemonset);
        assert!(!done);
        assert_eq!(detail, "3 of 3 pods updated, 2 available");
    }
}
