//! The analyze service: one recommendation per root cause.
//!
//! For each firing alert on the alerts stream, analyze resolves the objects
//! the alert names and the workload it is about. Alerts about one workload
//! that arrive within the batch window share one analysis, and later alerts
//! about a workload that is already being analyzed or remediated are
//! covered by that analysis instead of analyzed again. An analysis asks the
//! pool of LLM endpoints (when configured) or the rule analyzer for one
//! registry action and publishes the validated recommendation on
//! `<prefix>.remediation.proposed.<cluster>`. Resolved alerts produce a
//! `resolved` event. Postgres records every delivery, so a repeated alert
//! instance is recognised long after JetStream's duplicate window.

pub mod batch;
pub mod config;
mod handler;
pub mod llm;
pub mod pool;
pub mod prompt;
pub mod rules;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use steward_bus::ConsumerSpec;
use steward_proto::v1::{AlertEvent, Analysis, AnalyzerKind, ParameterValue, Target};
use steward_runtime::Service;
use steward_telemetry::{AnalysisLabels, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{BatchConfig, Config, Fallback, LlmApi, LlmConfig};
pub use handler::{AlertHandler, candidates_of, history_lines};
use llm::ClientSettings;
use pool::{Pool, PoolSettings};
use prompt::{HistoryLine, Prompt};
use rules::RuleAnalyzer;
use steward_actions::jobs::JobTemplates;

/// An analyzer's choice, before it becomes a proposal.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// One of the objects the alerts name.
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

/// Chooses how each analysis is decided: by the LLM pool when one is
/// configured, else by the rule analyzer; when the pool gives no usable
/// answer, by the configured fallback. The returned [`Analysis`] records
/// which one decided and why.
pub struct Analyzers {
    pool: Option<Arc<Pool>>,
    rules: RuleAnalyzer,
    fallback: Fallback,
    templates: JobTemplates,
    metrics: Arc<Metrics>,
}

impl Analyzers {
    /// Combines an optional LLM pool with the rule analyzer.
    pub fn new(pool: Option<Arc<Pool>>, fallback: Fallback, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            rules: RuleAnalyzer,
            fallback,
            templates: JobTemplates::default(),
            metrics,
        }
    }

    /// Offers the actions of `templates` for the targets that have one.
    pub fn with_job_templates(mut self, templates: JobTemplates) -> Self {
        self.templates = templates;
        self
    }

    /// Builds the analyzers from the configuration, starting the pool's
    /// health probes.
    ///
    /// # Errors
    /// Fails when the API key cannot be read or a client cannot be built.
    pub fn from_config(
        config: &LlmConfig,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        if config.urls.is_empty() {
            tracing::info!("no LLM endpoint configured; the rule analyzer decides");
            return Ok(Self::new(None, config.fallback, metrics));
        }
        let client = ClientSettings {
            api: config.api,
            model: config.model.clone(),
            api_key: config.load_api_key()?,
            timeout: config.timeout,
            cold_timeout: config.cold_timeout,
            max_tokens: config.max_tokens,
        };
        let settings = PoolSettings {
            max_concurrency: config.max_concurrency,
            attempts: config.attempts,
            breaker_failures: config.breaker_failures,
            breaker_cooldown: config.breaker_cooldown,
            probe_interval: config.probe_interval,
            retry_delay: Duration::from_millis(200),
        };
        let pool = Arc::new(Pool::new(&config.urls, client, settings, metrics.clone())?);
        tracing::info!(endpoints = ?pool.endpoints(), model = pool.model(), capacity = pool.capacity(), "LLM pool enabled");
        pool.spawn_probes(shutdown.clone());
        Ok(Self::new(Some(pool), config.fallback, metrics))
    }

    /// Recommends one action for alerts that share a root cause, choosing
    /// among `candidates`.
    pub async fn recommend(
        &self,
        alerts: &[AlertEvent],
        candidates: &[Target],
        history: &[HistoryLine],
    ) -> (Recommendation, Analysis) {
        let Some(pool) = &self.pool else {
            self.count("rules", "decided");
            let analysis = Analysis {
                analyzer: AnalyzerKind::Rules as i32,
                ..Analysis::default()
            };
            return (self.rules.recommend(&alerts[0], candidates), analysis);
        };

        let prompt = Prompt::with_templates(alerts, candidates, history, &self.templates);
        let failure = match pool.complete(&prompt).await {
            Ok(answer) => {
                let usage = answer.completion.usage.clone();
                let mut analysis = Analysis {
                    analyzer: AnalyzerKind::Llm as i32,
                    endpoint: answer.endpoint.clone(),
                    model: pool.model().to_owned(),
                    fallback_reason: String::new(),
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    latency_ms: usage.latency_ms,
                };
                match prompt::parse_answer(&answer.completion.content, candidates) {
                    Ok(recommendation) => {
                        self.count("llm", "decided");
                        return (recommendation, analysis);
                    }
                    Err(error) => {
                        analysis.fallback_reason = steward_telemetry::error_chain(&error);
                        analysis
                    }
                }
            }
            Err(error) => Analysis {
                endpoint: pool.endpoints().join(","),
                model: pool.model().to_owned(),
                fallback_reason: steward_telemetry::error_chain(&error),
                ..Analysis::default()
            },
        };
        tracing::warn!(reason = %failure.fallback_reason, fallback = ?self.fallback, "LLM analysis failed");
        self.fallback(alerts, candidates, failure)
    }

    fn fallback(
        &self,
        alerts: &[AlertEvent],
        candidates: &[Target],
        failure: Analysis,
    ) -> (Recommendation, Analysis) {
        match self.fallback {
            Fallback::Rules => {
                self.count("rules", "fallback");
                let analysis = Analysis {
                    analyzer: AnalyzerKind::Rules as i32,
                    ..failure
                };
                (self.rules.recommend(&alerts[0], candidates), analysis)
            }
            Fallback::Escalate => {
                self.count("escalation", "fallback");
                let recommendation = Recommendation {
                    target: candidates
                        .first()
                        .cloned()
                        .unwrap_or_else(target::unresolved),
                    action: steward_actions::NOTIFY_ONLY.to_owned(),
                    parameters: HashMap::new(),
                    confidence: 1.0,
                    reasoning: format!(
                        "no LLM endpoint gave a usable answer ({}); escalating to people as configured",
                        failure.fallback_reason
                    ),
                };
                let analysis = Analysis {
                    analyzer: AnalyzerKind::Escalation as i32,
                    ..failure
                };
                (recommendation, analysis)
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
    let Some(service) = Service::start(
        "analyze",
        &config.nats,
        &config.database,
        admin,
        shutdown.clone(),
    )
    .await?
    else {
        return Ok(());
    };
    let templates = match &config.job_templates {
        Some(path) => JobTemplates::load(path).map_err(anyhow::Error::msg)?,
        None => JobTemplates::default(),
    };
    let analyzers = Analyzers::from_config(&config.llm, service.metrics.clone(), &shutdown)?
        .with_job_templates(templates);

    let spec = ConsumerSpec {
        stream: service.bus.names().alerts_stream(),
        durable: config.consumer_name.clone(),
        filter: service.bus.names().all_alerts(),
        description: "Steward analyze: recommends an action per root cause".to_owned(),
        settings: config.consumer.clone(),
    };
    // A workload claim outlives a slow analysis: every LLM attempt at the
    // longer of the two timeouts (none without endpoints), plus the batch
    // window. NOTE: time spent waiting for a free endpoint slot is not
    // bounded; an analysis that outlives its claim can overlap another
    // replica's analysis of the workload, and the guard's cooldown then
    // rejects the second proposal.
    let llm_time = if config.llm.urls.is_empty() {
        Duration::ZERO
    } else {
        config
            .llm
            .timeout
            .max(config.llm.cold_timeout)
            .saturating_mul(config.llm.attempts.max(1) as u32)
    };
    let claim_lease = llm_time + config.batch.window + Duration::from_secs(30);
    let handler = Arc::new(AlertHandler::new(
        service.bus.clone(),
        service.store.clone(),
        analyzers,
        config.batch.clone(),
        claim_lease,
        service.metrics.clone(),
    ));
    service.consume(spec, handler).await
}
