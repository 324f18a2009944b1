//! The analyze service: one recommendation per firing alert.
//!
//! For each alert on the alerts stream, analyze resolves the objects the
//! alert names, asks the LLM (when one is configured) or the rule analyzer
//! for one registry action, and publishes the validated recommendation on
//! `<prefix>.remediation.proposed.<cluster>`. Resolved alerts produce a
//! `resolved` event. Postgres records every delivery, so a repeated alert
//! instance is recognised long after JetStream's duplicate window.

pub mod config;
mod handler;
pub mod llm;
pub mod rules;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;

use steward_bus::ConsumerSpec;
use steward_proto::v1::{AlertEvent, Analysis, AnalyzerKind, ParameterValue, Target};
use steward_runtime::Service;
use steward_telemetry::{AnalysisLabels, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, LlmApi, LlmConfig};
pub use handler::AlertHandler;
use llm::LlmClient;
use rules::RuleAnalyzer;

/// An analyzer's choice, before it becomes a proposal.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// One of the objects the alert names.
    pub target: Target,
    /// Registry action name.
    pub action: String,
    /// Action parameters.
    pub parameters: HashMap<String, ParameterValue>,
    /// In [0, 1].
    pub confidence: f64,
    /// Why.
    pub reasoning: String,
}

/// Chooses the analyzer for each alert: the LLM when configured, else the
/// rule analyzer, which also takes over when the LLM fails. The returned
/// [`Analysis`] records which one decided and why.
pub struct Analyzers {
    llm: Option<LlmClient>,
    rules: RuleAnalyzer,
    metrics: Arc<Metrics>,
}

impl Analyzers {
    /// Combines an optional LLM client with the rule analyzer.
    pub fn new(llm: Option<LlmClient>, metrics: Arc<Metrics>) -> Self {
        Self {
            llm,
            rules: RuleAnalyzer,
            metrics,
        }
    }

    /// Recommends an action for a firing alert.
    pub async fn recommend(&self, alert: &AlertEvent) -> (Recommendation, Analysis) {
        let candidates = target::candidates(&alert.labels);

        let Some(llm) = &self.llm else {
            self.count("rules", "decided");
            let analysis = Analysis {
                analyzer: AnalyzerKind::Rules as i32,
                ..Analysis::default()
            };
            return (self.rules.recommend(alert, &candidates), analysis);
        };

        match llm.recommend(alert, &candidates).await {
            Ok((recommendation, usage)) => {
                self.count("llm", "decided");
                let analysis = Analysis {
                    analyzer: AnalyzerKind::Llm as i32,
                    endpoint: llm.endpoint(),
                    model: llm.model().to_owned(),
                    fallback_reason: String::new(),
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    latency_ms: usage.latency_ms,
                };
                (recommendation, analysis)
            }
            Err(error) => {
                let reason = steward_telemetry::error_chain(&error);
                tracing::warn!(error = %reason, "LLM analysis failed; the rule analyzer decides");
                self.count("llm", "fallback");
                let analysis = Analysis {
                    analyzer: AnalyzerKind::Rules as i32,
                    endpoint: llm.endpoint(),
                    model: llm.model().to_owned(),
                    fallback_reason: reason,
                    ..Analysis::default()
                };
                (self.rules.recommend(alert, &candidates), analysis)
            }
        }
    }

    fn count(&self, analyzer: &'static str, outcome: &'static str) {
        self.metrics
            .analyses
            .get_or_create(&AnalysisLabels { analyzer, outcome })
            .inc();
    }
}

/// Runs analyze until `shutdown` is cancelled.
///
/// # Errors
/// Fails when the configuration is invalid or NATS, Postgres or the
/// durable consumer cannot be set up.
pub async fn run(
    config: Config,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let llm = LlmClient::from_config(&config.llm)?;
    match &llm {
        Some(client) => {
            tracing::info!(endpoint = %client.endpoint(), model = client.model(), "LLM analyzer enabled")
        }
        None => tracing::info!("no LLM endpoint configured; the rule analyzer decides"),
    }

    let Some(service) =
        Service::start("analyze", &config.nats, &config.database, admin, shutdown).await?
    else {
        return Ok(());
    };

    let spec = ConsumerSpec {
        stream: service.bus.names().alerts_stream(),
        durable: config.consumer_name.clone(),
        filter: service.bus.names().all_alerts(),
        description: "Steward analyze: recommends an action per alert".to_owned(),
        settings: config.consumer.clone(),
    };
    let handler = Arc::new(AlertHandler::new(
        service.bus.clone(),
        service.store.clone(),
        Analyzers::new(llm, service.metrics.clone()),
        service.metrics.clone(),
    ));
    service.consume(spec, handler).await
}
