//! The guard's oscillation detectors, run in the decision transaction.
//!
//! The detectors are Postgres functions (`migrations/*_guard_detectors.sql`);
//! this module passes them the candidate and the configured windows and
//! thresholds, and collects their findings.

use std::time::Duration;

use uuid::Uuid;

use crate::{DecisionTx, StoreError};

/// Windows and thresholds of the detectors.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    /// Scale oscillation: window and direction changes that block.
    pub scale_window: Duration,
    /// Direction changes that block; one fewer warns.
    pub scale_min_changes: i32,
    /// Resource thrashing: window.
    pub thrashing_window: Duration,
    /// Alternations that block; one fewer warns.
    pub thrashing_min_alternations: i32,
    /// Ineffective loop: window.
    pub ineffective_window: Duration,
    /// Ineffective runs that block; one fewer warns.
    pub ineffective_min_repeats: i32,
    /// Time after an action before its effect is judged.
    pub settle: Duration,
    /// Cascading failure: window.
    pub cascade_window: Duration,
    /// New alert names that block; one fewer warns.
    pub cascade_min_new_alerts: i32,
    /// Consecutive failures that block.
    pub failure_threshold: i32,
    /// Time the block lasts after the latest failure.
    pub failure_block: Duration,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            scale_window: Duration::from_secs(3600),
            scale_min_changes: 2,
            thrashing_window: Duration::from_secs(45 * 60),
            thrashing_min_alternations: 2,
            ineffective_window: Duration::from_secs(2 * 3600),
            ineffective_min_repeats: 3,
            settle: Duration::from_secs(10 * 60),
            cascade_window: Duration::from_secs(30 * 60),
            cascade_min_new_alerts: 2,
            failure_threshold: 3,
            failure_block: Duration::from_secs(3600),
        }
    }
}

/// The proposal the detectors judge.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Registry action name.
    pub action: &'a str,
    /// The `replicas` parameter of a scale action.
    pub replicas: Option<i32>,
}

/// What a detector found.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Finding {
    /// Detector name.
    pub detector: String,
    /// `warning` or `block`.
    pub severity: String,
    /// A sentence for people.
    pub detail: String,
    /// The actions that are the evidence.
    pub evidence: Vec<Uuid>,
}

impl Finding {
    /// Returns whether the finding blocks the proposal.
    pub fn blocks(&self) -> bool {
        self.severity == "block"
    }
}

fn interval(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl DecisionTx {
    /// Runs every detector that applies to the candidate on its target.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn findings(
        &mut self,
        candidate: &Candidate<'_>,
        settings: &DetectorSettings,
    ) -> Result<Vec<Finding>, StoreError> {
        let target = self.target().clone();
        let query = "
            SELECT detector, severity, detail, coalesce(evidence, '{}') AS evidence FROM (
                SELECT (f).* FROM steward_scale_oscillation($1, $2, $3, $4, $6,
                    make_interval(secs => $7), $8) f
                UNION ALL
                SELECT (f).* FROM steward_resource_thrashing($1, $2, $3, $4, $5,
                    make_interval(secs => $9), $10) f
                UNION ALL
                SELECT (f).* FROM steward_ineffective_loop($1, $2, $3, $4, $5,
                    make_interval(secs => $11), $12, make_interval(secs => $13)) f
                UNION ALL
                SELECT (f).* FROM steward_cascading_failure($1, $2,
                    make_interval(secs => $14), $15) f
                UNION ALL
                SELECT (f).* FROM steward_consecutive_failures($1, $2, $3, $4, $5,
                    $16, make_interval(secs => $17)) f
            ) findings
            ORDER BY severity = 'block' DESC, detector";
        sqlx::query_as(query)
            .bind(&target.cluster)
            .bind(&target.namespace)
            .bind(&target.kind)
            .bind(&target.name)
            .bind(candidate.action)
            .bind(candidate.replicas)
            .bind(interval(settings.scale_window))
            .bind(settings.scale_min_changes)
            .bind(interval(settings.thrashing_window))
            .bind(settings.thrashing_min_alternations)
            .bind(interval(settings.ineffective_window))
            .bind(settings.ineffective_min_repeats)
            .bind(interval(settings.settle))
            .bind(interval(settings.cascade_window))
            .bind(settings.cascade_min_new_alerts)
            .bind(settings.failure_threshold)
            .bind(interval(settings.failure_block))
            .fetch_all(self.connection())
            .await
            .map_err(StoreError::query("run detectors"))
    }
}
