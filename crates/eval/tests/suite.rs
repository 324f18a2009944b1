//! The scenario suite through the real analyze and guard code, on real
//! Postgres: the files are valid, and no unsafe proposal passes the guard,
//! whether the rule analyzer gives it or it is proposed at full confidence.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use steward_eval::{Backend, Scenario, scenario::load_dir};
use steward_guard::Policy;
use steward_testkit::TestDatabase;

fn suite() -> Vec<Scenario> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios");
    load_dir(&dir).expect("the scenario suite loads")
}

#[test]
fn suite_covers_every_category() {
    let scenarios = suite();
    let mut per_category: HashMap<&str, usize> = HashMap::new();
    for scenario in &scenarios {
        *per_category.entry(scenario.category.as_str()).or_default() += 1;
    }

    assert!(scenarios.len() >= 60, "{} scenarios", scenarios.len());
    for category in [
        "workload",
        "node",
        "storage",
        "job",
        "autoscaling",
        "quota",
        "control-plane",
    ] {
        assert!(
            per_category.contains_key(category),
            "no {category} scenario: {per_category:?}"
        );
    }
    assert!(
        per_category.get("adversarial").copied().unwrap_or(0) >= 10,
        "{per_category:?}"
    );
    assert!(
        per_category.get("oscillation").copied().unwrap_or(0) >= 5,
        "{per_category:?}"
    );
}

#[test]
fn every_oscillation_detector_has_a_scenario() {
    let scenarios = suite();
    let histories: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| s.category == "oscillation")
        .collect();

    assert!(
        histories.iter().any(|s| s
            .history
            .iter()
            .filter(|p| p.action.starts_with("scale_"))
            .count()
            >= 2),
        "no scale oscillation history"
    );
    assert!(
        histories
            .iter()
            .any(|s| s.history.iter().any(|p| p.action == "increase_resources")),
        "no resource thrashing history"
    );
    assert!(
        histories
            .iter()
            .any(|s| s.history.iter().filter(|p| p.status == "failed").count() >= 3),
        "no consecutive failures history"
    );
    assert!(
        histories.iter().any(|s| !s.alerts_since.is_empty()),
        "no cascading failure history"
    );
    assert!(
        histories.iter().any(|s| s
            .history
            .iter()
            .filter(|p| p.effective == Some(false) || p.resolved_after_minutes.is_none())
            .count()
            >= 3),
        "no ineffective loop history"
    );
}

#[tokio::test]
async fn guard_approves_no_unsafe_answer() {
    let database = TestDatabase::create().await;
    let scenarios = suite();

    let probes = steward_eval::probe_guard(&database.url, &scenarios, &Policy::default())
        .await
        .expect("the probes run");

    assert!(
        probes.len() >= scenarios.len(),
        "only {} probes for {} scenarios",
        probes.len(),
        scenarios.len()
    );
    let approved: Vec<_> = probes.iter().filter(|p| p.verdict == "approved").collect();
    assert!(approved.is_empty(), "{approved:#?}");
}

#[tokio::test]
async fn rule_analyzer_passes_nothing_unsafe() {
    let database = TestDatabase::create().await;
    let scenarios = suite();

    let results = steward_eval::evaluate(
        &database.url,
        &scenarios,
        &[Backend::Rules],
        &Policy::default(),
        Duration::from_secs(10),
    )
    .await
    .expect("the suite runs");

    let summary = &results[0].summary;
    assert_eq!(summary.scenarios, scenarios.len());
    assert_eq!(summary.answered, scenarios.len());
    let passed: Vec<_> = results[0]
        .outcomes
        .iter()
        .filter(|o| o.unsafe_passed)
        .collect();
    assert!(passed.is_empty(), "{passed:#?}");
}
