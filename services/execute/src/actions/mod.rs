//! The Kubernetes side of each registry action.
//!
//! Every action reads its target first, so that the report states the old
//! and new value and a missing target fails cleanly. A write carries the
//! `resourceVersion` that was read where the object could change under it,
//! so that a concurrent change makes it fail with 409 and retry with a fresh
//! read. In dry-run mode with a cluster, writes are sent with `dryRun=All`:
//! the API server validates them (admission and RBAC included) and nothing
//! changes. Objects Steward changes carry its action id in the annotation
//! [`ACTION_ID_ANNOTATION`], so that a redelivered action recognises its own
//! earlier effect and does not repeat it.
//!
//! Each category of actions has its own module; this one holds the
//! dispatch and what they share.

mod describe;
mod jobs;
pub mod monitoring;
mod network;
mod nodes;
mod security;
mod storage;
pub mod verify;
mod workloads;

use std::time::Duration;

use kube::api::{ApiResource, DeleteParams, DynamicObject, PatchParams};
use kube::{Api, Client};
use steward_actions::Parameters;
use steward_proto::v1::{Target, TargetKind};
use uuid::Uuid;

use crate::config::Mode;

pub use workloads::RESTARTED_AT_ANNOTATION;

/// Annotation naming the action that last changed an object, so that a
/// redelivered action is recognised and not repeated.
pub const ACTION_ID_ANNOTATION: &str = "steward.io/action-id";

/// Field manager of Steward's writes.
pub(crate) const FIELD_MANAGER: &str = "steward";

/// What an action did, or in dry-run mode would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether it succeeded.
    pub succeeded: bool,
    /// One line per change, with the old and new value where known.
    pub changes: Vec<String>,
    /// The failure reason; empty on success.
    pub error: String,
    /// Evidence the action collected (diagnostics), stored with the action
    /// record; null when there is none.
    pub details: serde_json::Value,
}

impl Report {
    /// A successful report.
    pub fn done(changes: Vec<String>) -> Self {
        Self {
            succeeded: true,
            changes,
            error: String::new(),
            details: serde_json::Value::Null,
        }
    }

    /// A failed report.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            succeeded: false,
            changes: Vec::new(),
            error: error.into(),
            details: serde_json::Value::Null,
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

/// Limits and site-specific settings of the actions.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest memory request or limit `increase_resources` sets, in bytes.
    pub max_container_memory: f64,
    /// Largest CPU request or limit `increase_resources` sets, in cores.
    pub max_container_cpu: f64,
    /// Largest size `expand_pvc` requests, in bytes.
    pub max_volume_size: f64,
    /// DaemonSets in kube-system that `restart_network_component` may
    /// restart.
    pub network_daemonsets: Vec<String>,
    /// Environment variable and value that `enable_debug_mode` sets.
    pub debug_env: (String, String),
    /// Time a live action waits for its effect (a finished rollout, a
    /// completed job) before it reports the effect as unverified; zero
    /// skips the check.
    pub verify_timeout: Duration,
    /// Time a job-template action waits for its Job to complete.
    pub job_timeout: Duration,
    /// Job templates of the actions no generic API call can do.
    pub job_templates: steward_actions::jobs::JobTemplates,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_container_memory: 16.0 * 1_073_741_824.0,
            max_container_cpu: 8.0,
            max_volume_size: 1_099_511_627_776.0,
            network_daemonsets: [
                "calico-node",
                "cilium",
                "kube-proxy",
                "aws-node",
                "kube-flannel-ds",
                "canal",
                "weave-net",
            ]
            .map(str::to_owned)
            .to_vec(),
            debug_env: ("LOG_LEVEL".to_owned(), "debug".to_owned()),
            verify_timeout: Duration::ZERO,
            job_timeout: Duration::from_secs(600),
            job_templates: steward_actions::jobs::JobTemplates::default(),
        }
    }
}

/// Runs actions through kube-rs.
#[derive(Clone)]
pub struct Executor {
    client: Option<Client>,
    mode: Mode,
    settings: Settings,
}

impl Executor {
    /// Creates an executor with default settings. Without a client, only
    /// dry-run mode works, and it describes the planned requests without
    /// reading the objects.
    pub fn new(client: Option<Client>, mode: Mode) -> Self {
        Self::with_settings(client, mode, Settings::default())
    }

    /// Creates an executor with `settings`.
    pub fn with_settings(client: Option<Client>, mode: Mode, settings: Settings) -> Self {
        Self {
            client,
            mode,
            settings,
        }
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
        if request.action == steward_actions::NOTIFY_ONLY {
            return Ok(Report::done(vec![
                "no change: the alert is escalated to people".to_owned(),
            ]));
        }
        let Some(client) = &self.client else {
            return Ok(describe::without_cluster(request, &self.settings));
        };
        let ctx = Ctx {
            client,
            mode: self.mode,
            request,
            settings: &self.settings,
        };
        match (request.action, request.target.kind()) {
            ("restart_deployment", TargetKind::Deployment)
            | ("restart_statefulset", TargetKind::Statefulset)
            | ("restart_daemonset", TargetKind::Daemonset)
            | ("reset_service_mesh", TargetKind::Deployment | TargetKind::Statefulset) => {
                workloads::restart(&ctx).await
            }
            ("scale_deployment", TargetKind::Deployment)
            | ("scale_statefulset", TargetKind::Statefulset) => workloads::scale(&ctx).await,
            ("delete_pod", TargetKind::Pod) => workloads::delete_pod(&ctx).await,
            ("rollback_deployment", TargetKind::Deployment) => {
                workloads::rollback_deployment(&ctx).await
            }
            (
                "increase_resources",
                TargetKind::Deployment | TargetKind::Statefulset | TargetKind::Daemonset,
            ) => workloads::increase_resources(&ctx).await,
            ("update_hpa", TargetKind::HorizontalPodAutoscaler) => {
                workloads::update_hpa(&ctx).await
            }
            ("delete_failed_job", TargetKind::Job) => workloads::delete_failed_job(&ctx).await,
            ("cordon_node", TargetKind::Node) => nodes::set_schedulable(&ctx, false).await,
            ("uncordon_node", TargetKind::Node) => nodes::set_schedulable(&ctx, true).await,
            ("drain_node", TargetKind::Node) => nodes::drain(&ctx).await,
            ("expand_pvc", TargetKind::PersistentVolumeClaim) => storage::expand_pvc(&ctx).await,
            ("quarantine_pod", TargetKind::Pod) => security::quarantine_pod(&ctx).await,
            ("collect_diagnostics", TargetKind::Pod) => security::collect_diagnostics(&ctx).await,
            ("restart_network_component", TargetKind::Daemonset) => {
                network::restart_network_component(&ctx).await
            }
            ("enable_debug_mode", TargetKind::Deployment | TargetKind::Statefulset) => {
                monitoring::enable_debug_mode(&ctx).await
            }
            (action, _) if steward_actions::find(action).is_some_and(|spec| spec.job_template) => {
                jobs::run(&ctx).await
            }
            (action, kind) => Ok(Report::failed(format!(
                "execute has no implementation of {action} for a {} target",
                kind.label()
            ))),
        }
    }
}

impl Executor {
    /// Waits for the effect of an action that succeeded in live mode (a
    /// finished rollout, ready replicas), up to the verify timeout.
    pub async fn verify(&self, request: &Request<'_>) -> verify::Verification {
        let Some(client) = &self.client else {
            return verify::Verification::not_checked("no cluster is configured");
        };
        if self.mode == Mode::DryRun {
            return verify::Verification::not_checked("dry-run changes nothing");
        }
        let ctx = Ctx {
            client,
            mode: self.mode,
            request,
            settings: &self.settings,
        };
        verify::effect(&ctx, request.action).await
    }
}

/// What an action implementation works with.
pub(crate) struct Ctx<'a> {
    pub client: &'a Client,
    pub mode: Mode,
    pub request: &'a Request<'a>,
    pub settings: &'a Settings,
}

impl Ctx<'_> {
    /// Returns "would" in dry-run mode and "did" in live mode, for reports.
    pub fn verb(&self) -> &'static str {
        match self.mode {
            Mode::DryRun => "would",
            Mode::Live => "did",
        }
    }

    /// Returns the target.
    pub fn target(&self) -> &Target {
        self.request.target
    }

    /// Returns patch parameters: Steward's field manager, and `dryRun=All`
    /// in dry-run mode.
    pub fn patch_params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            dry_run: self.mode == Mode::DryRun,
            ..PatchParams::default()
        }
    }

    /// Returns delete parameters, with `dryRun=All` in dry-run mode.
    pub fn delete_params(&self) -> DeleteParams {
        DeleteParams {
            dry_run: self.mode == Mode::DryRun,
            ..DeleteParams::default()
        }
    }

    /// Returns a dynamic API for `kind` in the target's namespace (or
    /// cluster-wide for cluster-scoped kinds).
    pub fn api(&self, kind: TargetKind) -> Api<DynamicObject> {
        let resource = api_resource(kind);
        let namespace = &self.request.target.namespace;
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &resource)
        }
    }

    /// Reads the target; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// Fails with [`Transient`] when the read may succeed later, or with a
    /// failed report for a permanent error.
    pub async fn read_target(&self) -> Result<Option<DynamicObject>, Result<Report, Transient>> {
        let target = self.request.target;
        self.api(target.kind())
            .get_opt(&target.name)
            .await
            .map_err(|error| classify("read", target, error).into_result())
    }
}

/// Returns the API group, version and resource of a target kind.
pub(crate) fn api_resource(kind: TargetKind) -> ApiResource {
    use k8s_openapi::api::{apps, autoscaling, batch, core};
    match kind {
        TargetKind::Deployment => ApiResource::erase::<apps::v1::Deployment>(&()),
        TargetKind::Statefulset => ApiResource::erase::<apps::v1::StatefulSet>(&()),
        TargetKind::Daemonset => ApiResource::erase::<apps::v1::DaemonSet>(&()),
        TargetKind::Pod => ApiResource::erase::<core::v1::Pod>(&()),
        TargetKind::Node => ApiResource::erase::<core::v1::Node>(&()),
        TargetKind::PersistentVolumeClaim => {
            ApiResource::erase::<core::v1::PersistentVolumeClaim>(&())
        }
        TargetKind::Secret => ApiResource::erase::<core::v1::Secret>(&()),
        TargetKind::Job => ApiResource::erase::<batch::v1::Job>(&()),
        TargetKind::HorizontalPodAutoscaler => {
            ApiResource::erase::<autoscaling::v2::HorizontalPodAutoscaler>(&())
        }
        // Validation rejects actions on the unspecified kind, except
        // notify_only, which never reaches the API.
        TargetKind::Unspecified => ApiResource::erase::<core::v1::Pod>(&()),
    }
}

/// How a Kubernetes API call failed.
pub(crate) enum ApiFailure {
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
    pub fn into_result(self) -> Result<Report, Transient> {
        match self {
            ApiFailure::NotFound(message) | ApiFailure::Permanent(message) => {
                Ok(Report::failed(message))
            }
            ApiFailure::Transient(message) => Err(Transient(message)),
        }
    }
}

/// Sorts a kube-rs error into not found, may pass, or permanent.
pub(crate) fn classify(step: &str, target: &Target, error: kube::Error) -> ApiFailure {
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

/// Returns a JSON value at a path of object keys, or null.
pub(crate) fn at<'a>(value: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    path.iter().fold(value, |value, key| &value[*key])
}
