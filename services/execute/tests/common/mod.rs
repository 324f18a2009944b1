//! Helpers shared by the action tests: targets, parameter values, running an
//! action as execute does, and checks on the writes that reached the
//! in-memory Kubernetes API.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::collections::HashMap;

use steward_actions::validate;
use steward_execute::actions::{Executor, Report, Request};
use steward_proto::v1::parameter_value::Kind;
use steward_proto::v1::{ParameterValue, Target, TargetKind};
use steward_testkit::kube::FakeKube;
use uuid::Uuid;

/// Builds a target in the namespace `shop`.
pub fn target(kind: TargetKind, name: &str) -> Target {
    target_in(kind, "shop", name)
}

/// Builds a target in `namespace`, which is empty for cluster-scoped kinds.
pub fn target_in(kind: TargetKind, namespace: &str, name: &str) -> Target {
    Target {
        kind: kind as i32,
        namespace: namespace.into(),
        name: name.into(),
    }
}

pub fn int(value: i64) -> ParameterValue {
    ParameterValue {
        kind: Some(Kind::IntValue(value)),
    }
}

pub fn text(value: &str) -> ParameterValue {
    ParameterValue {
        kind: Some(Kind::StringValue(value.to_owned())),
    }
}

pub fn boolean(value: bool) -> ParameterValue {
    ParameterValue {
        kind: Some(Kind::BoolValue(value)),
    }
}

/// Builds the parameter map of a request from name and value pairs.
pub fn params<const N: usize>(
    pairs: [(&str, ParameterValue); N],
) -> HashMap<String, ParameterValue> {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// Runs attempt 1 of a new action, as [`run_attempt`] does.
pub async fn run(
    executor: &Executor,
    action: &str,
    target: &Target,
    params: HashMap<String, ParameterValue>,
) -> Report {
    run_attempt(executor, Uuid::new_v4(), action, target, params, 1).await
}

/// Validates the parameters as execute does, then runs the action.
///
/// # Panics
/// Panics when the parameters are invalid or the run fails transiently.
pub async fn run_attempt(
    executor: &Executor,
    action_id: Uuid,
    action: &str,
    target: &Target,
    params: HashMap<String, ParameterValue>,
    attempts: i32,
) -> Report {
    let (_, parameters) = validate(action, target.kind(), &params).expect("valid parameters");
    let request = Request {
        action_id,
        action,
        parameters: &parameters,
        target,
        attempts,
    };
    executor.run(&request).await.expect("no transient failure")
}

/// Runs attempt 1 of a new action and then attempt 2 of the same action, as
/// when its message is redelivered, and returns both reports.
pub async fn run_and_retry(
    executor: &Executor,
    action: &str,
    target: &Target,
    params: HashMap<String, ParameterValue>,
) -> (Report, Report) {
    let action_id = Uuid::new_v4();
    let first = run_attempt(executor, action_id, action, target, params.clone(), 1).await;
    let retry = run_attempt(executor, action_id, action, target, params, 2).await;
    (first, retry)
}

/// Counts the writes the API server received without `dryRun=All`.
pub fn live_writes(fake: &FakeKube) -> usize {
    fake.mutations().iter().filter(|m| !m.dry_run).count()
}

/// Asserts that the API server received exactly one write, and that it was
/// sent with `dryRun=All`. `verb` names the write in the failure message.
#[track_caller]
pub fn assert_one_dry_run_write(fake: &FakeKube, verb: &str) {
    let mutations = fake.mutations();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert!(
        mutations[0].dry_run,
        "the {verb} was not sent with dryRun=All"
    );
}

/// Asserts that the API server received exactly one write, and that its body
/// carries `metadata.resourceVersion`, so that the write fails if the object
/// changed since it was read.
#[track_caller]
pub fn assert_one_write_with_resource_version(fake: &FakeKube) {
    let mutations = fake.mutations();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert!(
        mutations[0].body["metadata"]["resourceVersion"].is_string(),
        "the patch carries no resourceVersion precondition: {}",
        mutations[0].body
    );
}
