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

    /// Language model endpoint.
    #[command(flatten)]
    pub llm: LlmConfig,

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

/// The LLM endpoint. With no URL, the built-in rule analyzer decides.
#[derive(clap::Args, Debug, Clone)]
pub struct LlmConfig {
    /// Base URL of the endpoint, for example `http://127.0.0.1:11434` for
    /// Ollama or `http://127.0.0.1:8080/v1` for an OpenAI-compatible
    /// server. Unset: the rule analyzer decides every alert.
    #[arg(long = "llm-url", env = "STEWARD_LLM_URL")]
    pub url: Option<String>,

    /// API the endpoint speaks.
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

    /// Time one LLM request may take, loading a cold model included.
    #[arg(
        long = "llm-timeout",
        env = "STEWARD_LLM_TIMEOUT",
        default_value = "60s",
        value_parser = humantime::parse_duration
    )]
    pub timeout: Duration,

    /// Maximum tokens the model may generate per answer.
    #[arg(
        long = "llm-max-tokens",
        env = "STEWARD_LLM_MAX_TOKENS",
        default_value_t = 512
    )]
    pub max_tokens: u32,
}

impl LlmConfig {
    /// Returns a configuration without an endpoint: the rule analyzer
    /// decides.
    pub fn disabled() -> Self {
        Self {
            url: None,
            api: LlmApi::Openai,
            model: "granite3.1-dense:2b".to_owned(),
            api_key: None,
            api_key_file: None,
            timeout: Duration::from_secs(60),
            max_tokens: 512,
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

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Config::command().debug_assert();
    }
}
