//! Every metric Steward exports, defined in one place.
//!
//! Label values come from bounded sets (consumer names from configuration,
//! stages, outcomes, action names from the registry), never from object or
//! alert names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a durable consumer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// Durable consumer name.
    pub consumer: String,
}

/// Labels of a handled message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// Durable consumer name.
    pub consumer: String,
    /// `ack`, `retry`, `dead_letter`, or `dead_letter_failed` when the
    /// dead letter could not be stored and the message was nak'ed.
    pub outcome: &'static str,
}

/// Labels of a JetStream publish.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    /// Subject kind: `alert` or a remediation stage.
    pub kind: &'static str,
    /// `stored`, `duplicate` or `error`.
    pub result: &'static str,
}

/// Labels of an ingest HTTP response.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// HTTP status code.
    pub code: u16,
}

/// Labels of an analysis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnalysisLabels {
    /// `rules`, `llm` or `escalation`.
    pub analyzer: &'static str,
    /// `decided` or `fallback`.
    pub outcome: &'static str,
}

/// Labels of an LLM request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmRequestLabels {
    /// Chat URL of the endpoint, from the configuration.
    pub endpoint: String,
    /// `ok`, `retryable_error` or `bad_answer`.
    pub result: &'static str,
}

/// Labels of a guard decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `approved`, `rejected` or `pending`.
    pub verdict: &'static str,
    /// The rule that decided, as the guard's `Verdict::rule` names it.
    pub rule: &'static str,
}

/// Labels of an execution.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecutionLabels {
    /// Registry action name.
    pub action: String,
    /// `dry_run` or `live`.
    pub mode: &'static str,
    /// `succeeded`, `failed` or `skipped`.
    pub outcome: &'static str,
}

/// Labels of a notification.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Remediation stage.
    pub stage: &'static str,
}

/// All of Steward's metrics and the registry that exports them.
///
/// Each service creates one and only updates the families it uses, so one
/// scrape configuration fits every service.
pub struct Metrics {
    registry: Registry,
    /// Messages handled, by consumer and outcome.
    pub messages: Family<MessageLabels, Counter>,
    /// Time spent handling one message, by consumer.
    pub handling_seconds: Family<ConsumerLabels, Histogram>,
    /// Messages currently being handled, by consumer.
    pub in_flight: Family<ConsumerLabels, Gauge>,
    /// Pull requests that failed, by consumer.
    pub pull_errors: Family<ConsumerLabels, Counter>,
    /// JetStream publishes, by subject kind and result.
    pub published: Family<PublishLabels, Counter>,
    /// Ingest HTTP responses, by status code.
    pub ingest_responses: Family<StatusLabels, Counter>,
    /// Alert deliveries that analyze had already handled.
    pub duplicate_alerts: Counter,
    /// Analyses, by analyzer and outcome.
    pub analyses: Family<AnalysisLabels, Counter>,
    /// LLM requests, by endpoint and result.
    pub llm_requests: Family<LlmRequestLabels, Counter>,
    /// Firing alerts covered by an analysis of the same workload, without
    /// an analysis of their own.
    pub coalesced_alerts: Counter,
    /// Guard decisions, by verdict and deciding rule.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Failed Postgres operations in any service.
    pub database_errors: Counter,
    /// Executions, by action, mode and outcome.
    pub executions: Family<ExecutionLabels, Counter>,
    /// Notifications sent, by stage.
    pub notifications: Family<StageLabels, Counter>,
}

impl Metrics {
    /// Creates every metric and registers it under the `steward` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("steward");
        let metrics = Self {
            messages: Family::default(),
            handling_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 18))
            }),
            in_flight: Family::default(),
            pull_errors: Family::default(),
            published: Family::default(),
            ingest_responses: Family::default(),
            duplicate_alerts: Counter::default(),
            analyses: Family::default(),
            llm_requests: Family::default(),
            coalesced_alerts: Counter::default(),
            decisions: Family::default(),
            database_errors: Counter::default(),
            executions: Family::default(),
            notifications: Family::default(),
            registry: Registry::default(),
        };

        registry.register(
            "messages",
            "JetStream messages handled, by consumer and outcome",
            metrics.messages.clone(),
        );
        registry.register(
            "message_handling_seconds",
            "Time spent handling one JetStream message",
            metrics.handling_seconds.clone(),
        );
        registry.register(
            "messages_in_flight",
            "JetStream messages being handled now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "pull_errors",
            "Failed JetStream pull requests",
            metrics.pull_errors.clone(),
        );
        registry.register(
            "published",
            "JetStream publishes, by subject kind and result",
            metrics.published.clone(),
        );
        registry.register(
            "ingest_responses",
            "Webhook responses sent by ingest, by HTTP status",
            metrics.ingest_responses.clone(),
        );
        registry.register(
            "duplicate_alerts",
            "Alert deliveries that had already been handled",
            metrics.duplicate_alerts.clone(),
        );
        registry.register(
            "analyses",
            "Alert analyses, by analyzer and outcome",
            metrics.analyses.clone(),
        );
        registry.register(
            "llm_requests",
            "LLM requests, by endpoint and result",
            metrics.llm_requests.clone(),
        );
        registry.register(
            "coalesced_alerts",
            "Firing alerts covered by an analysis of the same workload",
            metrics.coalesced_alerts.clone(),
        );
        registry.register(
            "guard_decisions",
            "Guard decisions, by verdict and deciding rule",
            metrics.decisions.clone(),
        );
        registry.register(
            "database_errors",
            "Failed Postgres operations",
            metrics.database_errors.clone(),
        );
        registry.register(
            "executions",
            "Action executions, by action, mode and outcome",
            metrics.executions.clone(),
        );
        registry.register(
            "notifications",
            "Notifications sent, by remediation stage",
            metrics.notifications.clone(),
        );

        Self {
            registry,
            ..metrics
        }
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_includes_prefixed_families() {
        let metrics = Metrics::new();
        metrics
            .messages
            .get_or_create(&MessageLabels {
                consumer: "guard".into(),
                outcome: "ack",
            })
            .inc();

        let text = metrics.encode();

        assert!(
            text.contains(r#"steward_messages_total{consumer="guard",outcome="ack"} 1"#),
            "{text}"
        );
    }
}
