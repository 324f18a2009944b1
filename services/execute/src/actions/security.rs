//! Security actions: quarantine and diagnostics.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, LogParams, Patch, PostParams};
use serde_json::{Value, json};

use super::{ACTION_ID_ANNOTATION, Ctx, FIELD_MANAGER, Report, Transient, at, classify};
use crate::config::Mode;

/// Label that marks a quarantined pod. Its value is the first eight hex
/// digits of the action id, and the action's network policy selects it.
const QUARANTINE_LABEL: &str = "steward.io/quarantine";

/// Maximum number of events `collect_diagnostics` keeps, newest first.
const MAX_EVENTS: usize = 20;

/// Maximum bytes of one container's log that `collect_diagnostics` keeps, so
/// that a pod with long lines cannot bloat the action record. The API
/// server stops reading after this many bytes of the requested tail.
const MAX_LOG_BYTES: i64 = 256 * 1024;

/// Labels the pod and isolates it with a deny-all network policy.
///
/// The policy selects the pod through [`QUARANTINE_LABEL`] and denies all
/// ingress and egress, except ingress from pods in the optional
/// `investigation_namespace` and, with `allow_dns`, DNS lookups to
/// kube-dns in kube-system. Both steps are idempotent: the policy's name
/// comes from the action id, so a retry finds it (409), and the pod's
/// action-id annotation shows that it was already labelled.
pub(super) async fn quarantine_pod(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let pod = match ctx.read_target().await {
        Ok(Some(pod)) => pod,
        Ok(None) => {
            return Ok(Report::failed(format!(
                "pod {}/{} not found",
                target.namespace, target.name
            )));
        }
        Err(result) => return result,
    };

    let action_id = ctx.request.action_id.to_string();
    let short_id = ctx.request.action_id.simple().to_string()[..8].to_owned();
    let policy_name = format!("steward-quarantine-{short_id}");
    let investigation_namespace = ctx.request.parameters.text("investigation_namespace");
    let allow_dns = ctx.request.parameters.boolean("allow_dns").unwrap_or(false);
    let mut changes = Vec::new();

    // The policy comes first, so that isolation starts the moment the label
    // lands on the pod.
    let policy = network_policy(
        &target.namespace,
        &policy_name,
        &short_id,
        &action_id,
        &target.name,
        investigation_namespace,
        allow_dns,
    );
    let policy: NetworkPolicy = serde_json::from_value(policy)
        .expect("the quarantine policy is built from a fixed shape that matches NetworkPolicy");
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let params = PostParams {
        dry_run: ctx.mode == Mode::DryRun,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    let allowed = describe_exceptions(investigation_namespace, allow_dns);
    match policies.create(&params, &policy).await {
        Ok(_) => changes.push(format!(
            "{} create network policy {}/{policy_name}: deny all ingress and egress of pods labelled {QUARANTINE_LABEL}={short_id}, {allowed}",
            ctx.verb(),
            target.namespace
        )),
        Err(kube::Error::Api(response)) if response.code == 409 => {
            match policies.get_opt(&policy_name).await {
                Ok(Some(existing)) if annotation(&existing.metadata, ACTION_ID_ANNOTATION) == Some(&action_id) => {
                    changes.push(format!(
                        "network policy {}/{policy_name} already exists from an earlier attempt of this action",
                        target.namespace
                    ));
                }
                // Deleted between the create and the read; the next attempt
                // creates it again.
                Ok(None) => {
                    return Err(Transient(format!(
                        "network policy {}/{policy_name} for {target} existed and then vanished; retrying",
                        target.namespace
                    )));
                }
                Ok(Some(_)) => {
                    return Ok(Report::failed(format!(
                        "network policy {}/{policy_name} exists but was not created by this action, so {target} was not quarantined; delete that policy or run the action again",
                        target.namespace
                    )));
                }
                Err(error) => {
                    return classify(
                        &format!("read network policy {policy_name} for"),
                        target,
                        error,
                    )
                    .into_result();
                }
            }
        }
        Err(error) => {
            return classify(
                &format!("create network policy {policy_name} for"),
                target,
                error,
            )
            .into_result();
        }
    }

    let labels = pod.metadata.labels.as_ref();
    let previous_label = labels.and_then(|labels| labels.get(QUARANTINE_LABEL));
    if annotation(&pod.metadata, ACTION_ID_ANNOTATION) == Some(&action_id)
        && previous_label == Some(&short_id)
    {
        changes.push(format!(
            "{target} was already labelled {QUARANTINE_LABEL}={short_id} by this action in an earlier attempt"
        ));
        return Ok(Report::done(changes));
    }
    let previous_label = previous_label.map_or("unset", String::as_str).to_owned();
    // No resourceVersion precondition: the kubelet updates a pod's status
    // often, and adding a label commutes with any such change.
    let patch = json!({"metadata": {
        "labels": {QUARANTINE_LABEL: short_id},
        "annotations": {ACTION_ID_ANNOTATION: action_id},
    }});
    match ctx
        .api(target.kind())
        .patch(&target.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            changes.push(format!(
                "{} patch {target}: metadata.labels[{QUARANTINE_LABEL}] {previous_label} -> {short_id}",
                ctx.verb()
            ));
            Ok(Report::done(changes))
        }
        Err(error) => {
            let mut report = classify("label", target, error).into_result()?;
            report.error = format!(
                "{}; network policy {}/{policy_name} is in place but selects no pod until the label is set",
                report.error, target.namespace
            );
            report.changes = changes;
            Ok(report)
        }
    }
}

/// Builds the quarantine network policy as JSON.
fn network_policy(
    namespace: &str,
    name: &str,
    short_id: &str,
    action_id: &str,
    pod: &str,
    investigation_namespace: Option<&str>,
    allow_dns: bool,
) -> Value {
    let namespace_selector =
        |namespace: &str| json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}});
    let ingress: Vec<Value> = investigation_namespace
        .map(|namespace| json!({"from": [{"namespaceSelector": namespace_selector(namespace)}]}))
        .into_iter()
        .collect();
    let egress: Vec<Value> = allow_dns
        .then(|| {
            json!({
                "to": [{
                    "namespaceSelector": namespace_selector("kube-system"),
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }],
                "ports": [
                    {"protocol": "UDP", "port": 53},
                    {"protocol": "TCP", "port": 53},
                ],
            })
        })
        .into_iter()
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "steward"},
            "annotations": {
                ACTION_ID_ANNOTATION: action_id,
                "steward.io/quarantined-pod": pod,
            },
        },
        "spec": {
            "podSelector": {"matchLabels": {QUARANTINE_LABEL: short_id}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    })
}

/// Describes what the quarantine policy still allows, for the report.
fn describe_exceptions(investigation_namespace: Option<&str>, allow_dns: bool) -> String {
    let ingress = match investigation_namespace {
        Some(namespace) => format!("except ingress from pods in namespace {namespace}"),
        None => "with no ingress exception".to_owned(),
    };
    let egress = if allow_dns {
        "and egress to kube-dns in kube-system on port 53 (UDP and TCP)"
    } else {
        "and no egress exception"
    };
    format!("{ingress} {egress}")
}

fn annotation<'a>(metadata: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a String> {
    metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key))
}

/// Collects the pod's status, recent events and log tails.
///
/// Everything goes into the report's details: the phase, conditions and
/// container statuses, at most 20 events about the pod (newest first), and
/// the last `tail_lines` lines of each container's log, plus the previous
/// instance's log for a container that restarted. A log that cannot be
/// read is recorded as an error string. The action changes nothing, so
/// dry-run mode does the same.
pub(super) async fn collect_diagnostics(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let pod = match ctx.read_target().await {
        Ok(Some(pod)) => pod,
        Ok(None) => {
            return Ok(Report::failed(format!(
                "pod {}/{} not found",
                target.namespace, target.name
            )));
        }
        Err(result) => return result,
    };
    let tail_lines = ctx.request.parameters.integer("tail_lines").unwrap_or(200);

    let status = pod_status(&pod.data);

    let events_api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &target.namespace,
        &ApiResource::erase::<Event>(&()),
    );
    let selector = format!(
        "involvedObject.kind=Pod,involvedObject.name={}",
        target.name
    );
    let events = match events_api
        .list(&ListParams::default().fields(&selector))
        .await
    {
        Ok(list) => newest_events(list.items),
        Err(error) => return classify("list the events of", target, error).into_result(),
    };

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let mut logs = serde_json::Map::new();
    let mut unreadable = Vec::new();
    for container in container_names(&pod.data) {
        let restarted = restart_count(&pod.data, &container) > 0;
        let mut entry = serde_json::Map::new();
        let current = read_log(&pods, &target.name, &container, tail_lines, false).await;
        if let Value::Object(error) = &current {
            unreadable.push(format!(
                "{container}: {}",
                error["error"].as_str().unwrap_or_default()
            ));
        }
        entry.insert("current".to_owned(), current);
        if restarted {
            let previous = read_log(&pods, &target.name, &container, tail_lines, true).await;
            entry.insert("previous".to_owned(), previous);
        }
        logs.insert(container, Value::Object(entry));
    }

    let mut changes = vec![format!(
        "no change: collected status, {} events and logs of {} containers",
        events.len(),
        logs.len()
    )];
    changes.push(summarize_status(&status));
    for line in unreadable {
        changes.push(format!("log unavailable for container {line}"));
    }
    let mut report = Report::done(changes);
    report.details = json!({
        "pod": {"namespace": target.namespace, "name": target.name},
        "status": status,
        "events": events,
        "logs": logs,
        "tail_lines": tail_lines,
    });
    Ok(report)
}

/// Returns the parts of a pod's status that explain its health.
fn pod_status(pod: &Value) -> Value {
    let conditions: Vec<Value> = at(pod, &["status", "conditions"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|condition| {
            json!({
                "type": condition["type"],
                "status": condition["status"],
                "reason": condition["reason"],
                "message": condition["message"],
                "lastTransitionTime": condition["lastTransitionTime"],
            })
        })
        .collect();
    let containers = |field: &str| -> Vec<Value> {
        at(pod, &["status", field])
            .as_array()
            .into_iter()
            .flatten()
            .map(container_status)
            .collect()
    };
    json!({
        "phase": at(pod, &["status", "phase"]).as_str().unwrap_or("Unknown"),
        "reason": at(pod, &["status", "reason"]),
        "message": at(pod, &["status", "message"]),
        "node": at(pod, &["spec", "nodeName"]),
        "startTime": at(pod, &["status", "startTime"]),
        "conditions": conditions,
        "initContainers": containers("initContainerStatuses"),
        "containers": containers("containerStatuses"),
    })
}

/// Returns one container's readiness, restarts, state and last termination.
fn container_status(status: &Value) -> Value {
    let terminated = &status["lastState"]["terminated"];
    let last_termination = if terminated.is_object() {
        json!({
            "reason": terminated["reason"],
            "exitCode": terminated["exitCode"],
            "finishedAt": terminated["finishedAt"],
        })
    } else {
        Value::Null
    };
    json!({
        "name": status["name"],
        "ready": status["ready"],
        "restartCount": status["restartCount"].as_i64().unwrap_or(0),
        "state": status["state"],
        "lastTermination": last_termination,
    })
}

/// Sums up the status in one line for the report, such as
/// `pod phase Running; container app: ready, 3 restarts, last terminated OOMKilled`.
fn summarize_status(status: &Value) -> String {
    let mut line = format!(
        "pod phase {}",
        status["phase"].as_str().unwrap_or("Unknown")
    );
    for container in status["containers"].as_array().into_iter().flatten() {
        let ready = if container["ready"] == true {
            "ready"
        } else {
            "not ready"
        };
        line.push_str(&format!(
            "; container {}: {ready}, {} restarts",
            container["name"].as_str().unwrap_or("?"),
            container["restartCount"]
        ));
        if let Some(reason) = container["lastTermination"]["reason"].as_str() {
            line.push_str(&format!(", last terminated {reason}"));
        }
    }
    line
}

/// Returns the names of the pod's init containers and containers.
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|field| {
            at(pod, &["spec", field])
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|container| container["name"].as_str().map(str::to_owned))
        .collect()
}

fn restart_count(pod: &Value, container: &str) -> i64 {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|field| {
            at(pod, &["status", field])
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|status| status["name"] == container)
        .and_then(|status| status["restartCount"].as_i64())
        .unwrap_or(0)
}

/// Reads the last lines of a container's log. A log that cannot be read
/// becomes `{"error": ...}`, because a missing log is evidence too.
async fn read_log(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    tail_lines: i64,
    previous: bool,
) -> Value {
    let params = LogParams {
        container: Some(container.to_owned()),
        tail_lines: Some(tail_lines),
        limit_bytes: Some(MAX_LOG_BYTES),
        previous,
        ..LogParams::default()
    };
    match pods.logs(pod, &params).await {
        Ok(log) => Value::String(log),
        Err(error) => json!({
            "error": format!("failed to read the log: {}", steward_telemetry::error_chain(&error))
        }),
    }
}

/// Orders events newest first and keeps the first [`MAX_EVENTS`], each
/// reduced to the fields that explain it.
fn newest_events(events: Vec<DynamicObject>) -> Vec<Value> {
    let mut events: Vec<(Option<DateTime<Utc>>, Value)> = events
        .into_iter()
        .map(|event| (event_time(&event), event.data))
        .collect();
    events.sort_by_key(|(time, _)| Reverse(*time));
    events
        .into_iter()
        .take(MAX_EVENTS)
        .map(|(time, event)| {
            json!({
                "time": time.map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "type": event["type"],
                "reason": event["reason"],
                "message": event["message"],
                "count": event["count"],
                "source": event["source"]["component"],
            })
        })
        .collect()
}

/// Returns when an event last happened: its last timestamp, series, event
/// time or creation, whichever is set first.
fn event_time(event: &DynamicObject) -> Option<DateTime<Utc>> {
    let data = &event.data;
    let candidates = [
        &data["lastTimestamp"],
        &data["series"]["lastObservedTime"],
        &data["eventTime"],
        &data["firstTimestamp"],
    ];
    let parsed = candidates
        .into_iter()
        .filter_map(Value::as_str)
        .find_map(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc));
    parsed.or_else(|| {
        event
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_testkit::kube::FakeKube;

    fn event_at(name: &str, field: &str, time: &str) -> DynamicObject {
        let mut event = DynamicObject::new(name, &ApiResource::erase::<Event>(&()));
        event.data = json!({field: time, "reason": name});
        event
    }

    #[test]
    fn events_sort_newest_first_across_time_fields() {
        let events = vec![
            event_at("oldest", "lastTimestamp", "2025-01-01T10:00:00Z"),
            event_at("newest", "eventTime", "2025-01-01T10:00:00.500000Z"),
            event_at("middle", "firstTimestamp", "2025-01-01T10:00:00.250000Z"),
        ];

        let sorted = newest_events(events);

        let reasons: Vec<&str> = sorted
            .iter()
            .map(|event| event["reason"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(reasons, ["newest", "middle", "oldest"]);
    }

    #[tokio::test]
    async fn unreadable_log_is_recorded_as_an_error() {
        let fake = FakeKube::start().await.expect("fake API");
        let pods: Api<Pod> = Api::namespaced(fake.client(), "shop");

        let log = read_log(&pods, "ghost", "app", 10, false).await;

        let error = log["error"].as_str().expect("an error string");
        assert!(error.starts_with("failed to read the log: "), "{error}");
    }
}
