//! Configuration of the analyze service.

use std::path::PathBuf;
use std::time::Duration;

use steward_config::{AdminConfig, ConsumerConfig, DatabaseConfig, LogConfig, NatsConfig};

/// Command line and environment of `steward-analyze`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "steward-analyze",
    version,
    about = "Recommends one registry action for each firing alert"
)]
pub struct Config {
    /// Name of the durable consumer that all analyze replicas share.
    #[arg(long, env = "STEWARD_ANALYZE_CONSUMER", default_value = "analyze")]
    pub consumer_name: String,

    /// File of job templates (the same file execute reads): actions that
    /// run a job template are offered only for targets that have one.
    /// Unset: such actions are never offered.
    #[arg(long, env = "STEWARD_JOB_TEMPLATES")]
    pub job_templates: Option<PathBuf>,

    /// Language model endpoints.
    #[command(flatten)]
    pub llm: LlmConfig,

    /// Grouping of alerts.
    #[command(flatten)]
    pub batch: BatchConfig,

    /// NATS connection and naming.
    #[command(flatten)]
    pub nats: NatsConfig,

    /// Consumer concurrency and retries.
    #[command(flatten)]
    pub consumer: ConsumerConfig,

    /// Postgres connection.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Admin endpoints.
    #[command(flatten)]
    pub admin: AdminConfig,

    /// Logs.
    #[command(flatten)]
    pub log: LogConfig,
}

/// Which API an LLM endpoint speaks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmApi {
    /// OpenAI-compatible `POST <url>/chat/completions` (vLLM, llama.cpp
    /// server, LocalAI, hosted APIs); `<url>` usually ends in `/v1`.
    Openai,
    /// Ollama's native `POST <url>/api/chat`.
    Ollama,
}

/// What decides when no LLM endpoint gives a usable answer.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The built-in rule analyzer decides.
    Rules,
    /// Nothing is decided: the alert is escalated to people with
    /// `notify_only`.
    Escalate,
}

/// The LLM endpoints. With none, the built-in rule analyzer decides.
#[derive(clap::Args, Debug, Clone)]
pub struct LlmConfig {
    /// Base URLs of the endpoints, separated by commas, all serving the
    /// same model: for example `http://127.0.0.1:11434` for Ollama or
    /// `http://127.0.0.1:8080/v1` for an OpenAI-compatible server. Unset:
    /// the rule analyzer decides every alert.
    #[arg(long = "llm-url", env = "STEWARD_LLM_URL", value_delimiter = ',')]
    pub urls: Vec<String>,

    /// API the endpoints speak.
    #[arg(long = "llm-api", env = "STEWARD_LLM_API", value_enum, default_value_t = LlmApi::Openai)]
    pub api: LlmApi,

    /// Model name, for example `granite3.1-dense:2b`.
    #[arg(
        long = "llm-model",
        env = "STEWARD_LLM_MODEL",
        default_value = "granite3.1-dense:2b"
    )]
    pub model: String,

    /// API key sent as a bearer token. Prefer `--llm-api-key-file`.
    #[arg(
        long = "llm-api-key",
        env = "STEWARD_LLM_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// File holding the API key; surrounding whitespace is ignored.
    #[arg(long = "llm-api-key-file", env = "STEWARD_LLM_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Time one LLM request may take.
    #[arg(
        long = "llm-timeout",
        env = "STEWARD_LLM_TIMEOUT",
        default_value = "60s",
        value_parser = humantime::parse_duration
    )]
    pub timeout: Duration,

    /// Time a request may take while the endpoint has not answered yet and
    /// may still be loading the model; a shorter timeout would abort the
    /// load itself.
    #[arg(
        long = "llm-cold-timeout",
        env = "STEWARD_LLM_COLD_TIMEOUT",
        default_value = "5m",
        value_parser = humantime::parse_duration
    )]
    pub cold_timeout: Duration,

    /// Maximum tokens the model may generate per answer.
    #[arg(
        long = "llm-max-tokens",
        env = "STEWARD_LLM_MAX_TOKENS",
        default_value_t = 512
    )]
    pub max_tokens: u32,

    /// Requests one endpoint serves at once (Ollama's
    /// `OLLAMA_NUM_PARALLEL`); more wait in analyze, not in the server.
    #[arg(
        long = "llm-max-concurrency",
        env = "STEWARD_LLM_MAX_CONCURRENCY",
        default_value_t = 4
    )]
    pub max_concurrency: usize,

    /// Endpoints tried per analysis, counting the first, when a call fails
    /// in a way that may pass.
    #[arg(
        long = "llm-attempts",
        env = "STEWARD_LLM_ATTEMPTS",
        default_value_t = 3
    )]
    pub attempts: usize,

    /// Consecutive failures that open an endpoint's circuit breaker.
    #[arg(
        long = "llm-breaker-failures",
        env = "STEWARD_LLM_BREAKER_FAILURES",
        default_value_t = 3
    )]
    pub breaker_failures: u32,

    /// Time an open circuit stays open before one trial request.
    #[arg(
        long = "llm-breaker-cooldown",
        env = "STEWARD_LLM_BREAKER_COOLDOWN",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub breaker_cooldown: Duration,

    /// Time between health probes of each endpoint.
    #[arg(
        long = "llm-probe-interval",
        env = "STEWARD_LLM_PROBE_INTERVAL",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub probe_interval: Duration,

    /// What decides when no endpoint gives a usable answer: `rules` or
    /// `escalate` (notify people only). The event records which.
    #[arg(long = "llm-fallback", env = "STEWARD_LLM_FALLBACK", value_enum, default_value_t = Fallback::Rules)]
    pub fallback: Fallback,
}

impl LlmConfig {
    /// Returns a configuration without endpoints: the rule analyzer
    /// decides.
    pub fn disabled() -> Self {
        Self {
            urls: Vec::new(),
            api: LlmApi::Openai,
            model: "granite3.1-dense:2b".to_owned(),
            api_key: None,
            api_key_file: None,
            timeout: Duration::from_secs(60),
            cold_timeout: Duration::from_secs(300),
            max_tokens: 512,
            max_concurrency: 4,
            attempts: 3,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(30),
            probe_interval: Duration::from_secs(10),
            fallback: Fallback::Rules,
        }
    }

    /// Returns the API key from the file or the option, if any.
    ///
    /// # Errors
    /// Fails when the key file cannot be read or is empty.
    pub fn load_api_key(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.api_key_file {
            let key = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("failed to read LLM API key file {}: {e}", path.display())
            })?;
            let key = key.trim();
            anyhow::ensure!(
                !key.is_empty(),
                "LLM API key file {} is empty",
                path.display()
            );
            return Ok(Some(key.to_owned()));
        }
        Ok(self.api_key.clone().filter(|key| !key.is_empty()))
    }
}

/// How alerts are grouped before analysis.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchConfig {
    /// Time alerts about one workload wait for more of its alerts, so that
    /// one analysis covers them all.
    #[arg(
        long = "batch-window",
        env = "STEWARD_BATCH_WINDOW",
        default_value = "2s",
        value_parser = humantime::parse_duration
    )]
    pub window: Duration,

    /// Maximum alerts in one analysis; a full batch is analyzed at once.
    #[arg(
        long = "batch-max-alerts",
        env = "STEWARD_BATCH_MAX_ALERTS",
        default_value_t = 50
    )]
    pub max_alerts: usize,

    /// Time after an analysis during which further firing alerts about the
    /// same workload are covered by it instead of analyzed again, unless
    /// the guard rejected it or its action failed.
    #[arg(
        long = "coalesce-window",
        env = "STEWARD_COALESCE_WINDOW",
        default_value = "10m",
        value_parser = humantime::parse_duration
    )]
    pub coalesce_window: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(2),
            max_alerts: 50,
            coalesce_window: Duration::from_secs(600),
        }
    }
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Config::command().debug_assert();
    }
}
