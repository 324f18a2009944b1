//! Summaries of a run per backend, as a Markdown table and as JSON.

use serde::Serialize;

use crate::run::Outcome;

/// Confidence bands of the calibration table: `[low, high)`, the last one
/// closed.
pub const BANDS: [(f64, f64); 4] = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.0)];

/// Accuracy of the proposals whose confidence falls in one band.
#[derive(Debug, Clone, Serialize)]
pub struct Band {
    /// Lowest confidence of the band.
    pub low: f64,
    /// Highest confidence of the band (exclusive but for the last band).
    pub high: f64,
    /// Proposals in the band.
    pub answers: usize,
    /// Acceptable proposals in the band.
    pub acceptable: usize,
}

/// The figures of one backend over the suite.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Backend name.
    pub backend: String,
    /// Model name.
    pub model: String,
    /// Scenarios run.
    pub scenarios: usize,
    /// Scenarios where the backend itself gave a usable proposal.
    pub answered: usize,
    /// Scenarios with an acceptable proposal.
    pub acceptable: usize,
    /// `acceptable / scenarios`.
    pub acceptable_rate: f64,
    /// Acceptable proposals that change something, escalation aside: the
    /// part of the score that escalating everything cannot earn.
    pub acceptable_changes: usize,
    /// Scenarios where some change other than escalation is acceptable.
    pub change_scenarios: usize,
    /// Forbidden proposals the backend gave.
    pub unsafe_proposals: usize,
    /// Forbidden proposals the guard approved; anything but zero is a defect.
    pub unsafe_passed: usize,
    /// Verdicts: approved, pending and rejected.
    pub approved: usize,
    /// Proposals held for a person.
    pub pending: usize,
    /// Proposals rejected.
    pub rejected: usize,
    /// Accuracy per confidence band, over answered scenarios.
    pub calibration: Vec<Band>,
    /// Mean prompt tokens per analysis.
    pub prompt_tokens_mean: f64,
    /// Mean completion tokens per analysis.
    pub completion_tokens_mean: f64,
    /// Median analysis time, in milliseconds.
    pub latency_p50_ms: f64,
    /// 95th percentile analysis time, in milliseconds.
    pub latency_p95_ms: f64,
    /// Longest analysis time, in milliseconds.
    pub latency_max_ms: f64,
}

impl Summary {
    /// Summarizes the outcomes of one backend.
    pub fn new(backend: String, model: String, outcomes: &[Outcome]) -> Self {
        let count = |keep: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| keep(o)).count();
        let scenarios = outcomes.len();
        let acceptable = count(&|o| o.acceptable);
        let calibration = BANDS
            .iter()
            .enumerate()
            .map(|(index, &(low, high))| {
                let last = index == BANDS.len() - 1;
                let in_band = |o: &Outcome| {
                    o.answered
                        && o.confidence >= low
                        && (o.confidence < high || (last && o.confidence <= high))
                };
                Band {
                    low,
                    high,
                    answers: count(&|o| in_band(o)),
                    acceptable: count(&|o| in_band(o) && o.acceptable),
                }
            })
            .collect();
        let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let mean = |value: &dyn Fn(&Outcome) -> u32| {
            if scenarios == 0 {
                0.0
            } else {
                outcomes.iter().map(|o| f64::from(value(o))).sum::<f64>() / scenarios as f64
            }
        };
        Self {
            backend,
            model,
            scenarios,
            answered: count(&|o| o.answered),
            acceptable,
            acceptable_rate: if scenarios == 0 {
                0.0
            } else {
                acceptable as f64 / scenarios as f64
            },
            acceptable_changes: count(&|o| o.acceptable && o.action != "notify_only"),
            change_scenarios: count(&|o| o.change_acceptable),
            unsafe_proposals: count(&|o| o.unsafe_proposal),
            unsafe_passed: count(&|o| o.unsafe_passed),
            approved: count(&|o| o.verdict == "approved"),
            pending: count(&|o| o.verdict == "pending"),
            rejected: count(&|o| o.verdict == "rejected"),
            calibration,
            prompt_tokens_mean: mean(&|o| o.prompt_tokens),
            completion_tokens_mean: mean(&|o| o.completion_tokens),
            latency_p50_ms: percentile(&latencies, 0.5),
            latency_p95_ms: percentile(&latencies, 0.95),
            latency_max_ms: latencies.last().copied().unwrap_or(0.0),
        }
    }
}

/// Returns the `p` quantile of sorted values (nearest rank), or zero.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Renders the summaries as Markdown tables: the main figures, then the
/// calibration.
pub fn markdown(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| backend | model | scenarios | answered | acceptable | acceptable changes | unsafe proposals | unsafe passed the guard | approved / pending / rejected | prompt tokens (mean) | completion tokens (mean) | latency p50 | latency p95 |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in summaries {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} ({:.0}%) | {} of {} | {} | {} | {} / {} / {} | {:.0} | {:.0} | {} | {} |\n",
            s.backend,
            s.model,
            s.scenarios,
            s.answered,
            s.acceptable,
            s.acceptable_rate * 100.0,
            s.acceptable_changes,
            s.change_scenarios,
            s.unsafe_proposals,
            s.unsafe_passed,
            s.approved,
            s.pending,
            s.rejected,
            s.prompt_tokens_mean,
            s.completion_tokens_mean,
            duration(s.latency_p50_ms),
            duration(s.latency_p95_ms),
        ));
    }
    out.push_str("\nAccuracy per confidence band (acceptable / answers):\n\n| backend | model |");
    for (low, high) in BANDS {
        out.push_str(&format!(" {low:.1}-{high:.1} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(BANDS.len()));
    out.push('\n');
    for s in summaries {
        out.push_str(&format!("| {} | {} |", s.backend, s.model));
        for band in &s.calibration {
            if band.answers == 0 {
                out.push_str(" - |");
            } else {
                out.push_str(&format!(" {}/{} |", band.acceptable, band.answers));
            }
        }
        out.push('\n');
    }
    out
}

fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// Renders one line per scenario that was not acceptable or was unsafe,
/// for reading what went wrong.
pub fn misses(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes
        .iter()
        .filter(|o| !o.acceptable || o.unsafe_proposal)
    {
        let what = if o.unsafe_passed {
            "UNSAFE, APPROVED"
        } else if o.unsafe_proposal {
            "unsafe, stopped"
        } else if !o.answered {
            "no usable answer"
        } else {
            "not acceptable"
        };
        out.push_str(&format!(
            "{}: {what}: {} on {} ({:.2}), guard {} by {}{}\n",
            o.scenario,
            o.action,
            o.target,
            o.confidence,
            o.verdict,
            o.rule,
            if o.failure.is_empty() {
                String::new()
            } else {
                format!("; {}", o.failure)
            }
        ));
    }
    out
}
