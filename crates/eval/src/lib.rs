//! Decision quality of Steward, measured on labelled scenarios.
//!
//! A scenario is one or more Alertmanager webhooks, the objects and action
//! history around them, and labels: the acceptable actions, the forbidden
//! ones, and whether the guard must block everything. A run takes each
//! scenario through the real analyze and guard code with one backend and
//! counts acceptable proposals, unsafe proposals and unsafe proposals the guard
//! let through.

pub mod report;
pub mod run;
pub mod scenario;

use std::time::Duration;

pub use report::Summary;
pub use run::{Backend, EvalDatabase, Evaluator, Outcome, Probe};
pub use scenario::Scenario;
use steward_guard::Policy;

/// Results of one backend over the suite.
pub struct BackendResult {
    /// The figures.
    pub summary: Summary,
    /// One outcome per scenario.
    pub outcomes: Vec<Outcome>,
}

/// Runs every scenario with every backend, each backend in a database of
/// its own on the server of `database_url`.
///
/// # Errors
/// Fails when the database server is unreachable, a webhook is invalid, or
/// an LLM client cannot be built. An LLM that proposals badly is not an
/// error: it is counted.
pub async fn evaluate(
    database_url: &str,
    scenarios: &[Scenario],
    backends: &[Backend],
    policy: &Policy,
    timeout: Duration,
) -> anyhow::Result<Vec<BackendResult>> {
    let mut results = Vec::with_capacity(backends.len());
    for backend in backends {
        let database = EvalDatabase::create(database_url).await?;
        let evaluator = Evaluator::new(backend.clone(), policy.clone(), timeout)?;
        let mut outcomes = Vec::with_capacity(scenarios.len());
        let mut failure = None;
        for (index, scenario) in scenarios.iter().enumerate() {
            match evaluator
                .run(&database, scenario, &format!("eval-{index:03}"))
                .await
            {
                Ok(outcome) => outcomes.push(outcome),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        evaluator.close();
        database.drop_database().await?;
        if let Some(error) = failure {
            return Err(error);
        }
        results.push(BackendResult {
            summary: Summary::new(backend.name(), backend.model(), &outcomes),
            outcomes,
        });
    }
    Ok(results)
}

/// Proposes every scenario's unsafe proposals to the guard at confidence 1.0
/// and returns every verdict; see [`run::probe_guard`].
///
/// # Errors
/// Fails when the database server is unreachable or a webhook is invalid.
pub async fn probe_guard(
    database_url: &str,
    scenarios: &[Scenario],
    policy: &Policy,
) -> anyhow::Result<Vec<Probe>> {
    let database = EvalDatabase::create(database_url).await?;
    let mut probes = Vec::new();
    let mut failure = None;
    for (index, scenario) in scenarios.iter().enumerate() {
        match run::probe_guard(&database, scenario, &format!("probe-{index:03}"), policy).await {
            Ok(found) => probes.extend(found),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    database.drop_database().await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(probes),
    }
}
