//! Actions that run the Job template configured for the target's workload:
//! backups, cleanups, compactions, database failovers and repairs, heap
//! dumps and secret rotations.
//!
//! The Job is named after the action and its id, so a redelivered action
//! finds the Job an earlier attempt created (409 AlreadyExists) instead of
//! starting a second one. Every container gets the action and target in
//! `STEWARD_*` environment variables.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{ListParams, Patch, PostParams};
use serde_json::{Value, json};
use steward_proto::v1::{Target, TargetKind};

use super::{ACTION_ID_ANNOTATION, Ctx, Report, Transient, classify, workloads};

/// Time between two reads of a running Job's status.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Runs the action's Job template and, for `rotate_secret`, restarts the
/// workloads that use the secret once the Job succeeded.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let action = ctx.request.action;
    let Some(template) = ctx.settings.job_templates.find(action, target) else {
        return Ok(Report::failed(format!(
            "no job template for {action} on {target} is configured; add one to the file named by --job-templates"
        )));
    };

    let name = job_name(action, &ctx.request.action_id);
    let job = render(ctx, &name, &template.job);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let job: Job = match serde_json::from_value(job) {
        Ok(job) => job,
        Err(error) => {
            return Ok(Report::failed(format!(
                "the job template of {action} for {target} is not a valid Job ({error}); fix it in the file named by --job-templates"
            )));
        }
    };
    let params = PostParams {
        dry_run: ctx.mode == crate::config::Mode::DryRun,
        field_manager: Some(super::FIELD_MANAGER.to_owned()),
    };
    let mut changes = match api.create(&params, &job).await {
        Ok(_) => vec![format!(
            "{} create job {}/{name} from the {action} template",
            ctx.verb(),
            target.namespace
        )],
        Err(kube::Error::Api(response)) if response.code == 409 => vec![format!(
            "job {}/{name} already exists from an earlier attempt of this action",
            target.namespace
        )],
        Err(error) => return classify("create a job for", target, error).into_result(),
    };
    if ctx.mode == crate::config::Mode::DryRun || action != "rotate_secret" {
        return Ok(Report::done(changes));
    }

    // The workloads get the new secret only once the rotation finished.
    match wait_for_job(&api, &name, ctx.settings.job_timeout).await? {
        JobState::Succeeded => {}
        JobState::Failed(reason) => {
            return Ok(Report {
                succeeded: false,
                changes,
                error: format!(
                    "job {}/{name} failed: {reason}; no workload was restarted",
                    target.namespace
                ),
                details: serde_json::Value::Null,
            });
        }
        JobState::Running => {
            return Ok(Report {
                succeeded: false,
                changes,
                error: format!(
                    "job {}/{name} did not finish within {}s; no workload was restarted",
                    target.namespace,
                    ctx.settings.job_timeout.as_secs()
                ),
                details: serde_json::Value::Null,
            });
        }
    }
    let restarts = restart_secret_users(ctx, target).await?;
    changes.extend(restarts.changes);
    if restarts.failures.is_empty() {
        return Ok(Report::done(changes));
    }
    Ok(Report {
        succeeded: false,
        changes,
        error: format!(
            "the secret was rotated, but these workloads that use it were not restarted: {}",
            restarts.failures.join("; ")
        ),
        details: serde_json::Value::Null,
    })
}

/// Returns the Job's name: the action and the first hex digits of its id,
/// within the 63 characters a Job's pods may carry in a label.
pub(super) fn job_name(action: &str, action_id: &uuid::Uuid) -> String {
    let id = action_id.simple().to_string();
    format!("steward-{}-{}", action.replace('_', "-"), &id[..8])
}

/// Builds the Job: the template's spec, Steward's name and labels, and the
/// action and target in every container's environment.
fn render(ctx: &Ctx<'_>, name: &str, spec: &Value) -> Value {
    let target = ctx.target();
    let mut spec = spec.clone();
    let environment = [
        ("STEWARD_ACTION", ctx.request.action.to_owned()),
        ("STEWARD_ACTION_ID", ctx.request.action_id.to_string()),
        ("STEWARD_TARGET_KIND", target.kind().kube_kind().to_owned()),
        ("STEWARD_TARGET_NAMESPACE", target.namespace.clone()),
        ("STEWARD_TARGET_NAME", target.name.clone()),
    ];
    if let Some(containers) = spec["template"]["spec"]["containers"].as_array_mut() {
        for container in containers {
            let env = container["env"].as_array().cloned().unwrap_or_default();
            let mut env: Vec<Value> = env;
            for (variable, value) in &environment {
                env.push(json!({"name": variable, "value": value}));
            }
            container["env"] = Value::Array(env);
        }
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": {"app.kubernetes.io/managed-by": "steward", "steward.io/action": ctx.request.action.replace('_', "-")},
            "annotations": {ACTION_ID_ANNOTATION: ctx.request.action_id.to_string()},
        },
        "spec": spec,
    })
}

/// Where a Job stands.
enum JobState {
    Succeeded,
    Failed(String),
    Running,
}

/// Waits up to `timeout` for the Job to succeed or fail.
async fn wait_for_job(
    api: &Api<Job>,
    name: &str,
    timeout: Duration,
) -> Result<JobState, Transient> {
    let deadline = Instant::now() + timeout;
    loop {
        let job = api.get_opt(name).await.map_err(|error| {
            Transient(format!(
                "failed to read job {name}: {}",
                steward_telemetry::error_chain(&error)
            ))
        })?;
        let conditions = job
            .and_then(|job| job.status)
            .and_then(|status| status.conditions)
            .unwrap_or_default();
        for condition in &conditions {
            if condition.status != "True" {
                continue;
            }
            match condition.type_.as_str() {
                "Complete" => return Ok(JobState::Succeeded),
                "Failed" => {
                    return Ok(JobState::Failed(
                        condition
                            .message
                            .clone()
                            .unwrap_or_else(|| "no message".to_owned()),
                    ));
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return Ok(JobState::Running);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The restarts after a rotation.
struct Restarts {
    /// One line per workload restarted, or found restarted by an earlier
    /// attempt.
    changes: Vec<String>,
    /// One line per workload the API server refused to restart.
    failures: Vec<String>,
}

/// Restarts the deployments, stateful sets and daemon sets in the secret's
/// namespace whose pod template uses the secret: as a volume, through
/// `env.valueFrom.secretKeyRef`, or through `envFrom.secretRef`. A workload
/// that already carries this action's id was restarted by an earlier
/// attempt and is left alone.
async fn restart_secret_users(ctx: &Ctx<'_>, secret: &Target) -> Result<Restarts, Transient> {
    let mut changes = Vec::new();
    let mut failures = Vec::new();
    let action_id = ctx.request.action_id.to_string();
    for kind in [
        TargetKind::Deployment,
        TargetKind::Statefulset,
        TargetKind::Daemonset,
    ] {
        let api = ctx.api(kind);
        let list = api.list(&ListParams::default()).await.map_err(|error| {
            Transient(format!(
                "failed to list {}s: {}",
                kind.label(),
                steward_telemetry::error_chain(&error)
            ))
        })?;
        for object in list.items {
            let Some(name) = object.metadata.name.clone() else {
                continue;
            };
            if !uses_secret(&object.data["spec"]["template"]["spec"], &secret.name) {
                continue;
            }
            let workload = Target {
                kind: kind as i32,
                namespace: secret.namespace.clone(),
                name,
            };
            let stamped =
                &object.data["spec"]["template"]["metadata"]["annotations"][ACTION_ID_ANNOTATION];
            if stamped.as_str() == Some(action_id.as_str()) {
                changes.push(format!(
                    "{workload} was already restarted by this action in an earlier attempt"
                ));
                continue;
            }
            match restart_workload(ctx, &workload).await? {
                Ok(change) => changes.push(change),
                Err(failure) => failures.push(failure),
            }
        }
    }
    if changes.is_empty() && failures.is_empty() {
        changes.push(format!(
            "no workload in namespace {} uses {secret}",
            secret.namespace
        ));
    }
    Ok(Restarts { changes, failures })
}

/// Restarts one workload; the inner error names a restart the API server
/// refused.
async fn restart_workload(
    ctx: &Ctx<'_>,
    workload: &Target,
) -> Result<Result<String, String>, Transient> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        workloads::RESTARTED_AT_ANNOTATION: now,
        ACTION_ID_ANNOTATION: ctx.request.action_id.to_string(),
    }}}}});
    match ctx
        .api(workload.kind())
        .patch(&workload.name, &ctx.patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Ok(format!(
            "{} restart {workload}, which uses the rotated secret",
            ctx.verb()
        ))),
        Err(error) => match classify("restart", workload, error) {
            super::ApiFailure::Transient(message) => Err(Transient(message)),
            // A workload deleted since the list needs no restart.
            super::ApiFailure::NotFound(message) => Ok(Ok(message)),
            super::ApiFailure::Permanent(message) => Ok(Err(message)),
        },
    }
}

/// Returns whether a pod spec uses the secret named `name`.
fn uses_secret(pod_spec: &Value, name: &str) -> bool {
    let in_volumes = pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|volume| volume["secret"]["secretName"] == name);
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|field| pod_spec[*field].as_array().cloned().unwrap_or_default());
    let in_env = containers.into_iter().any(|container| {
        let env = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|variable| variable["valueFrom"]["secretKeyRef"]["name"] == name);
        let env_from = container["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|source| source["secretRef"]["name"] == name);
        env || env_from
    });
    in_volumes || in_env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_fit_a_label() {
        let name = job_name("failover_database", &uuid::Uuid::new_v4());
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("steward-failover-database-"), "{name}");
    }

    #[test]
    fn secret_users_are_found_in_volumes_and_env() {
        let volume = json!({"volumes": [{"name": "creds", "secret": {"secretName": "db"}}], "containers": []});
        let env = json!({"containers": [{"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}]}]});
        let env_from = json!({"containers": [{"envFrom": [{"secretRef": {"name": "db"}}]}]});
        let other = json!({"containers": [{"envFrom": [{"secretRef": {"name": "other"}}]}]});
        assert!(uses_secret(&volume, "db"));
        assert!(uses_secret(&env, "db"));
        assert!(uses_secret(&env_from, "db"));
        assert!(!uses_secret(&other, "db"));
    }
}
