//! The Kubernetes side of each registry action.
//!
//! Every action reads its target first, so the report can state the old and
//! new value and a missing target fails cleanly. In dry-run mode with a
//! cluster, the write is sent with `dryRun=All`, so the API server
//! validates it (admission and RBAC included) and nothing changes.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use steward_actions::Parameters;
use steward_proto::v1::{Target, TargetKind};
use uuid::Uuid;

use crate::config::Mode;

/// Annotation on a pod template naming the action that last restarted it,
/// so that a redelivered restart is recognised and not repeated.
pub const ACTION_ID_ANNOTATION: &str = "steward.io/action-id";

/// Annotation `kubectl rollout restart` sets to trigger a rollout.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Field manager for Steward's writes.
const FIELD_MANAGER: &str = "steward";

/// What an action did, or in dry-run mode would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether it succeeded.
    pub succeeded: bool,
    /// One line per change.
    pub changes: Vec<String>,
    /// Why it failed.
    pub error: String,
}

impl Report {
    fn done(changes: Vec<String>) -> Self {
        Self {
            succeeded: true,
            changes,
            error: String::new(),
        }
    }

    fn failed(error: String) -> Self {
        Self {
            succeeded: false,
            changes: Vec::new(),
            error,
        }
    }
}

/// A failure that may pass: the API server was unreachable, overloaded or
/// reported a conflicting write. The message is retried later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// One action to run.
pub struct Request<'a> {
    /// Action history id.
    pub action_id: Uuid,
    /// Registry action name.
    pub action: &'a str,
    /// Validated parameters.
    pub parameters: &'a Parameters,
    /// The object to act on.
    pub target: &'a Target,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// Runs actions through kube-rs.
#[derive(Clone)]
pub struct Executor {
    client: Option<Client>,
    mode: Mode,
}

impl Executor {
    /// Creates an executor. Without a client, only dry-run mode works, and
    /// it describes the planned requests without reading the objects.
    pub fn new(client: Option<Client>, mode: Mode) -> Self {
        Self { client, mode }
    }

    /// Returns the mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Runs one action.
    ///
    /// # Errors
    /// Returns [`Transient`] when retrying later may succeed; permanent
    /// failures are a failed [`Report`].
    pub async fn run(&self, request: &Request<'_>) -> Result<Report, Transient> {
        let target = request.target;
        match (request.action, target.kind()) {
            (steward_actions::NOTIFY_ONLY, _) => Ok(Report::done(vec![
                "no change: the alert is escalated to people".to_owned(),
            ])),
            ("restart_deployment", TargetKind::Deployment) => {
                self.restart_deployment(request).await
            }
            ("scale_deployment", TargetKind::Deployment) => {
                let replicas = request.parameters.integer("replicas").unwrap_or_default();
                self.scale_deployment(target, replicas).await
            }
            ("delete_pod", TargetKind::Pod) => {
                let grace = request
                    .parameters
                    .integer("grace_period_seconds")
                    .unwrap_or(30);
                self.delete_pod(target, grace, request.attempts).await
            }
            (action, kind) => Ok(Report::failed(format!(
                "execute has no implementation of {action} for a {} target",
                kind.label()
            ))),
        }
    }

    fn verb(&self) -> &'static str {
        match self.mode {
            Mode::DryRun => "would",
            Mode::Live => "did",
        }
    }

    fn patch_params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            dry_run: self.mode == Mode::DryRun,
            ..PatchParams::default()
        }
    }

    async fn restart_deployment(&self, request: &Request<'_>) -> Result<Report, Transient> {
        let target = request.target;
        let Some(client) = &self.client else {
            return Ok(Report::done(vec![format!(
                "would patch deployment {}/{}: set spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}] to the current time, as `kubectl rollout restart` does",
                target.namespace, target.name
            )]));
        };
        let api: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
        let deployment = match api.get_opt(&target.name).await {
            Ok(Some(deployment)) => deployment,
            Ok(None) => {
                return Ok(Report::failed(format!(
                    "deployment {}/{} not found",
                    target.namespace, target.name
                )));
            }
            Err(error) => return classify("read deployment", target, error).into_result(),
        };

        let annotations = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.metadata.as_ref())
            .and_then(|metadata| metadata.annotations.clone())
            .unwrap_or_default();
        let action_id = request.action_id.to_string();
        if annotations.get(ACTION_ID_ANNOTATION) == Some(&action_id) {
            return Ok(Report::done(vec![format!(
                "deployment {}/{} was already restarted by this action in an earlier attempt; nothing to do",
                target.namespace, target.name
            )]));
        }

        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let previous = annotations
            .get(RESTARTED_AT_ANNOTATION)
            .map_or_else(|| "unset".to_owned(), Clone::clone);
        // The resourceVersion makes the patch fail with 409 when the
        // deployment changed since it was read.
        let patch = json!({
            "metadata": {"resourceVersion": deployment.metadata.resource_version},
            "spec": {"template": {"metadata": {"annotations": {
                RESTARTED_AT_ANNOTATION: now,
                ACTION_ID_ANNOTATION: action_id,
            }}}},
        });
        match api
            .patch(&target.name, &self.patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Report::done(vec![format!(
                "{} patch deployment {}/{}: spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}] {previous} -> {now} (rollout restart)",
                self.verb(),
                target.namespace,
                target.name
            )])),
            Err(error) => classify("patch deployment", target, error).into_result(),
        }
    }

    async fn scale_deployment(&self, target: &Target, replicas: i64) -> Result<Report, Transient> {
        let Some(client) = &self.client else {
            return Ok(Report::done(vec![format!(
                "would set deployment {}/{} spec.replicas to {replicas} through the scale subresource",
                target.namespace, target.name
            )]));
        };
        let api: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
        let scale = match api.get_scale(&target.name).await {
            Ok(scale) => scale,
            Err(error) => return classify("read deployment scale", target, error).into_result(),
        };
        let current = scale.spec.and_then(|spec| spec.replicas).unwrap_or(0);
        if i64::from(current) == replicas {
            return Ok(Report::done(vec![format!(
                "deployment {}/{} already has spec.replicas {replicas}; nothing to change",
                target.namespace, target.name
            )]));
        }
        let patch = json!({"spec": {"replicas": replicas}});
        match api
            .patch_scale(&target.name, &self.patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Report::done(vec![format!(
                "{} scale deployment {}/{}: spec.replicas {current} -> {replicas}",
                self.verb(),
                target.namespace,
                target.name
            )])),
            Err(error) => classify("patch deployment scale", target, error).into_result(),
        }
    }

    async fn delete_pod(
        &self,
        target: &Target,
        grace_seconds: i64,
        attempts: i32,
    ) -> Result<Report, Transient> {
        let Some(client) = &self.client else {
            return Ok(Report::done(vec![format!(
                "would delete pod {}/{} with a {grace_seconds}s grace period, if a controller owns it",
                target.namespace, target.name
            )]));
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
        // NOTE: a retry after an interrupted attempt cannot tell a
        // StatefulSet pod's replacement, which reuses the name, from the
        // original; it would delete the replacement too. Recording the
        // deleted pod's uid before the call would close this gap.
        let pod = match api.get_opt(&target.name).await {
            Ok(Some(pod)) => pod,
            // A pod that an earlier, interrupted attempt deleted is gone now.
            Ok(None) if attempts > 1 => {
                return Ok(Report::done(vec![format!(
                    "pod {}/{} is gone; an earlier attempt of this action deleted it",
                    target.namespace, target.name
                )]));
            }
            Ok(None) => {
                return Ok(Report::failed(format!(
                    "pod {}/{} not found",
                    target.namespace, target.name
                )));
            }
            Err(error) => return classify("read pod", target, error).into_result(),
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
        let phase = pod
            .status
            .as_ref()
            .and_then(|status| status.phase.clone())
            .unwrap_or_else(|| "Unknown".to_owned());
        let params = DeleteParams {
            grace_period_seconds: u32::try_from(grace_seconds).ok(),
            // Delete exactly the pod that was read, not a replacement that
            // took its name in the meantime.
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            dry_run: self.mode == Mode::DryRun,
            ..DeleteParams::default()
        };
        match api.delete(&target.name, &params).await {
            Ok(_) => Ok(Report::done(vec![format!(
                "{} delete pod {}/{} (phase {phase}, owned by {} {}) with a {grace_seconds}s grace period",
                self.verb(),
                target.namespace,
                target.name,
                owner.kind,
                owner.name
            )])),
            Err(error) => classify("delete pod", target, error).into_result(),
        }
    }
}

/// How a Kubernetes API call failed.
enum ApiFailure {
    /// The object does not exist.
    NotFound(String),
    /// Retrying later may succeed.
    Transient(String),
    /// The same request will fail again.
    Permanent(String),
}

impl ApiFailure {
    /// Turns the failure into the action's result: a failed report, or a
    /// transient error for a retry.
    fn into_result(self) -> Result<Report, Transient> {
        match self {
            ApiFailure::NotFound(message) | ApiFailure::Permanent(message) => {
                Ok(Report::failed(message))
            }
            ApiFailure::Transient(message) => Err(Transient(message)),
        }
    }
}

fn classify(step: &str, target: &Target, error: kube::Error) -> ApiFailure {
    match &error {
        kube::Error::Api(response) => match response.code {
            404 => ApiFailure::NotFound(format!("{step} {target}: not found")),
            409 => ApiFailure::Transient(format!(
                "{step} {target}: the object changed while Steward acted on it ({}); retrying with a fresh read",
                response.message
            )),
            429 | 500..=599 => ApiFailure::Transient(format!(
                "{step} {target}: the API server answered {} {}",
                response.code, response.message
            )),
            403 => ApiFailure::Permanent(format!(
                "{step} {target}: forbidden ({}); grant the permission in Steward's RBAC role",
                response.message
            )),
            code => ApiFailure::Permanent(format!(
                "{step} {target}: rejected with {code} {}",
                response.message
            )),
        },
        // Connection-level failures may pass; a request that cannot even be
        // built (an invalid URI, say) fails the same way every time.
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::Auth(_) => {
            ApiFailure::Transient(format!(
                "{step} {target}: {}",
                steward_telemetry::error_chain(&error)
            ))
        }
        _ => ApiFailure::Permanent(format!(
            "{step} {target}: {}",
            steward_telemetry::error_chain(&error)
        )),
    }
}
