//! Node actions: cordon, uncordon and drain.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PostParams};
use serde_json::{Value, json};
use steward_proto::v1::{Target, TargetKind};
use tokio::time::Instant;

use super::{ACTION_ID_ANNOTATION, ApiFailure, Ctx, Report, Transient, classify, workloads};
use crate::config::Mode;

/// Annotation the kubelet sets on the API server's copy (the mirror pod) of
/// a static pod. Evicting a mirror pod does not stop the static pod.
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Time between two eviction attempts of a pod whose eviction is blocked,
/// usually by a PodDisruptionBudget. `kubectl drain` waits as long.
const EVICTION_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Interval between two listings of the node's pods while evicted pods
/// terminate.
const TERMINATION_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Marks the node unschedulable (cordon) or schedulable again (uncordon)
/// through `spec.unschedulable`.
pub(super) async fn set_schedulable(ctx: &Ctx<'_>, schedulable: bool) -> Result<Report, Transient> {
    let target = ctx.target();
    let node = match ctx.read_target().await {
        Ok(Some(node)) => node,
        Ok(None) => {
            return Ok(Report::failed(format!(
                "{target} not found; check the node name with `kubectl get nodes`"
            )));
        }
        Err(result) => return result,
    };

    let unschedulable = node.data["spec"]["unschedulable"]
        .as_bool()
        .unwrap_or(false);
    let (operation, state) = if schedulable {
        ("uncordon", "schedulable")
    } else {
        ("cordon", "cordoned")
    };
    if unschedulable != schedulable {
        return Ok(Report::done(vec![format!(
            "{target} is already {state}; nothing to change"
        )]));
    }

    // Uncordoning removes the field, as `kubectl uncordon` does. The
    // resourceVersion makes the patch fail with 409 when the node changed
    // since it was read.
    let desired = if schedulable {
        Value::Null
    } else {
        Value::Bool(true)
    };
    let patch = json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": {ACTION_ID_ANNOTATION: ctx.request.action_id.to_string()},
        },
        "spec": {"unschedulable": desired},
    });
    match ctx
        .api(TargetKind::Node)
        .patch(&target.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Report::done(vec![format!(
            "{} patch {target}: spec.unschedulable {unschedulable} -> {} ({operation})",
            ctx.verb(),
            !schedulable
        )])),
        Err(error) => classify("patch", target, error).into_result(),
    }
}

/// A pod on the node being drained.
struct NodePod {
    namespace: String,
    name: String,
    uid: Option<String>,
}

impl std::fmt::Display for NodePod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}/{}", self.namespace, self.name)
    }
}

/// The result of one eviction request.
enum Eviction {
    /// The API server accepted the eviction.
    Accepted,
    /// The pod is gone, or another pod took its name.
    Gone,
    /// The eviction is blocked for now: a disruption budget forbids it, or
    /// the API server was unavailable. Holds the reason.
    Retry(String),
    /// The eviction was rejected and a retry would fail the same way.
    /// Holds the reason.
    Failed(String),
}

/// Outcome of the evictions of one drain.
#[derive(Default)]
struct EvictionOutcome {
    /// One report line per evicted or vanished pod.
    evicted: Vec<String>,
    evicted_names: Vec<String>,
    /// The pods whose eviction was accepted, to wait for.
    accepted: Vec<NodePod>,
    /// Pods still blocked when the time ran out, with the last reason.
    blocked: Vec<(String, String)>,
    /// Pods whose eviction was rejected for good, with the reason.
    failed: Vec<(String, String)>,
}

/// Cordons the node, then evicts its pods through the Eviction API, which
/// honours PodDisruptionBudgets, skipping DaemonSet pods, mirror pods and
/// pods without a controller.
///
/// A pod whose eviction a budget blocks is retried every few seconds, and
/// then the drain waits for the evicted pods to leave the node, as `kubectl
/// drain` does, all within `timeout_seconds`. When some pods are still
/// blocked or terminating then, the drain fails and the node stays
/// cordoned. In dry-run mode the evictions are sent with `dryRun=All` and
/// blocked pods are reported without waiting.
pub(super) async fn drain(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let parameters = ctx.request.parameters;
    let timeout_seconds = parameters.integer("timeout_seconds").unwrap_or(300);
    let grace_seconds = parameters.integer("grace_period_seconds").unwrap_or(30);
    let timeout = Duration::from_secs(u64::try_from(timeout_seconds).unwrap_or_default());
    let deadline = Instant::now() + timeout;

    let cordon = set_schedulable(ctx, false).await?;
    if !cordon.succeeded {
        return Ok(cordon);
    }
    let mut changes = cordon.changes;

    let pods_api: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={}", target.name));
    let pods = match workloads::list_all(&pods_api, &on_node).await {
        Ok(pods) => pods,
        Err(error) => return classify("list the pods of", target, error).into_result(),
    };

    let mut to_evict = Vec::new();
    let mut skipped = Vec::new();
    for pod in &pods {
        let node_pod = NodePod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone(),
        };
        match skip_reason(pod) {
            Some(reason) => {
                changes.push(format!("skipped {node_pod}: {reason}"));
                skipped.push(node_pod.to_string());
            }
            None => to_evict.push(node_pod),
        }
    }

    let outcome = evict_all(ctx, to_evict, grace_seconds, deadline).await;
    changes.extend(outcome.evicted.iter().cloned());
    let mut terminating = Vec::new();
    if ctx.mode == Mode::Live && !outcome.accepted.is_empty() {
        let started = Instant::now();
        let (first, last) =
            match wait_for_termination(&pods_api, &on_node, &outcome.accepted, deadline).await {
                Ok(seen) => seen,
                Err(error) => return classify("list the pods of", target, error).into_result(),
            };
        if !first.is_empty() && last.is_empty() {
            changes.push(format!(
                "waited {}s for {} to terminate",
                started.elapsed().as_secs(),
                first.join(", ")
            ));
        }
        terminating = last;
    }
    let details = json!({
        "evicted": outcome.evicted_names,
        "skipped": skipped,
        "blocked": outcome.blocked.iter().map(|(pod, _)| pod).collect::<Vec<_>>(),
        "failed": outcome.failed.iter().map(|(pod, _)| pod).collect::<Vec<_>>(),
        "terminating": terminating,
    });

    if ctx.mode == Mode::DryRun {
        changes.extend(outcome.blocked.iter().map(|(pod, reason)| {
            format!(
                "would not evict {pod} now: {reason}; a live drain retries it for up to {timeout_seconds}s"
            )
        }));
        changes.extend(
            outcome
                .failed
                .iter()
                .map(|(pod, reason)| format!("would fail to evict {pod}: {reason}")),
        );
        return Ok(Report {
            details,
            ..Report::done(changes)
        });
    }
    if outcome.blocked.is_empty() && outcome.failed.is_empty() && terminating.is_empty() {
        return Ok(Report {
            details,
            ..Report::done(changes)
        });
    }

    let mut problems = Vec::new();
    if !outcome.blocked.is_empty() {
        problems.push(format!(
            "evictions still blocked after {timeout_seconds}s: {}",
            describe_pods(&outcome.blocked)
        ));
    }
    if !outcome.failed.is_empty() {
        problems.push(format!(
            "evictions rejected: {}",
            describe_pods(&outcome.failed)
        ));
    }
    if !terminating.is_empty() {
        problems.push(format!(
            "evicted pods still terminating after {timeout_seconds}s: {}",
            terminating.join(", ")
        ));
    }
    let error = format!(
        "drain of {target} is incomplete, {}; the node stays cordoned, so relax the disruption budgets or move those pods and run drain_node again, or run uncordon_node to give up",
        problems.join("; ")
    );
    Ok(Report {
        changes,
        details,
        ..Report::failed(error)
    })
}

/// Returns why a drain leaves a pod on the node, or `None` to evict it.
fn skip_reason(pod: &Pod) -> Option<String> {
    let metadata = &pod.metadata;
    let mirror = metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(MIRROR_POD_ANNOTATION));
    if mirror {
        return Some(
            "mirror pod of a static pod, which only the kubelet's manifest removes".to_owned(),
        );
    }
    let controller = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true));
    match controller {
        Some(owner) if owner.kind == "DaemonSet" => Some(format!(
            "owned by DaemonSet {}, whose pods stay on cordoned nodes",
            owner.name
        )),
        Some(_) => None,
        None => Some(
            "no controller would recreate it elsewhere; delete it by hand if it may go".to_owned(),
        ),
    }
}

/// Evicts `pods`, retrying blocked evictions until `deadline`. In dry-run
/// mode each pod is tried once.
async fn evict_all(
    ctx: &Ctx<'_>,
    pods: Vec<NodePod>,
    grace_seconds: i64,
    deadline: Instant,
) -> EvictionOutcome {
    let started = Instant::now();
    let mut outcome = EvictionOutcome::default();
    let mut pending: Vec<(NodePod, String)> =
        pods.into_iter().map(|pod| (pod, String::new())).collect();
    let mut first_round = true;

    loop {
        let mut blocked = Vec::new();
        for (pod, _) in pending {
            match evict(ctx, &pod, grace_seconds).await {
                Eviction::Accepted => {
                    let waited = if first_round {
                        String::new()
                    } else {
                        format!(
                            ", after its eviction was blocked for {}s",
                            started.elapsed().as_secs()
                        )
                    };
                    outcome.evicted.push(format!(
                        "{} evict {pod} with a {grace_seconds}s grace period{waited}",
                        ctx.verb()
                    ));
                    outcome.evicted_names.push(pod.to_string());
                    outcome.accepted.push(pod);
                }
                Eviction::Gone => {
                    outcome
                        .evicted
                        .push(format!("{pod} is already gone; nothing to evict"));
                    outcome.evicted_names.push(pod.to_string());
                }
                Eviction::Retry(reason) => blocked.push((pod, reason)),
                Eviction::Failed(reason) => outcome.failed.push((pod.to_string(), reason)),
            }
        }
        pending = blocked;
        first_round = false;

        let now = Instant::now();
        if pending.is_empty() || ctx.mode == Mode::DryRun || now >= deadline {
            break;
        }
        // The last retry happens at the deadline.
        tokio::time::sleep(EVICTION_RETRY_INTERVAL.min(deadline - now)).await;
    }

    outcome.blocked = pending
        .into_iter()
        .map(|(pod, reason)| (pod.to_string(), reason))
        .collect();
    outcome
}

/// Waits until none of the `evicted` pods is on the node any more, or until
/// `deadline`. A pod counts as gone when no pod of its namespace, name and
/// uid is listed on the node. Returns the pods still there at the first
/// look and at the last one.
async fn wait_for_termination(
    pods_api: &Api<Pod>,
    on_node: &ListParams,
    evicted: &[NodePod],
    deadline: Instant,
) -> Result<(Vec<String>, Vec<String>), kube::Error> {
    let mut first = None;
    loop {
        let listed = workloads::list_all(pods_api, on_node).await?;
        let left: Vec<String> = evicted
            .iter()
            .filter(|pod| {
                listed.iter().any(|listed| {
                    listed.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
                        && listed.metadata.name.as_deref() == Some(pod.name.as_str())
                        && (pod.uid.is_none() || listed.metadata.uid == pod.uid)
                })
            })
            .map(ToString::to_string)
            .collect();
        let first = first.get_or_insert_with(|| left.clone());
        let now = Instant::now();
        if left.is_empty() || now >= deadline {
            return Ok((first.clone(), left));
        }
        tokio::time::sleep(TERMINATION_POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Sends one eviction for `pod`, with `dryRun=All` in dry-run mode.
///
/// The Eviction is posted as a `policy/v1` object instead of through
/// `Api::evict`, because kube-rs 1.1 sends the delete options of
/// `EvictParams` under `delete_options`, a field the API server ignores,
/// so the grace period and the uid precondition would be lost.
async fn evict(ctx: &Ctx<'_>, pod: &NodePod, grace_seconds: i64) -> Eviction {
    let dry_run = ctx.mode == Mode::DryRun;
    let mut delete_options = json!({
        "gracePeriodSeconds": grace_seconds,
        // Evict exactly the pod that was listed, not a replacement that
        // took its name since.
        "preconditions": {"uid": pod.uid},
    });
    if dry_run {
        delete_options["dryRun"] = json!(["All"]);
    }
    let eviction = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": delete_options,
    });
    let body = match serde_json::to_vec(&eviction) {
        Ok(body) => body,
        Err(error) => {
            return Eviction::Failed(format!("failed to encode the eviction of {pod}: {error}"));
        }
    };
    let params = PostParams {
        dry_run,
        field_manager: None,
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace);
    let error = match api
        .create_subresource::<Value>("eviction", &pod.name, &params, body)
        .await
    {
        Ok(_) => return Eviction::Accepted,
        Err(error) => error,
    };

    if let kube::Error::Api(response) = &error {
        match response.code {
            // A PodDisruptionBudget forbids the eviction for now, or the
            // API server throttles requests.
            429 => return Eviction::Retry(response.message.clone()),
            // The uid precondition failed: the pod that was listed is gone
            // and another one took its name.
            409 => return Eviction::Gone,
            _ => {}
        }
    }
    let pod_target = Target {
        kind: TargetKind::Pod as i32,
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    };
    match classify("evict", &pod_target, error) {
        ApiFailure::NotFound(_) => Eviction::Gone,
        ApiFailure::Transient(message) => Eviction::Retry(message),
        ApiFailure::Permanent(message) => Eviction::Failed(message),
    }
}

/// Lists pods with their reasons: `pod a/b (reason), pod c/d (reason)`.
fn describe_pods(pods: &[(String, String)]) -> String {
    pods.iter()
        .map(|(pod, reason)| format!("{pod} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ")
}
