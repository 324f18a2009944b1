//! Configuration of the ingest service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use steward_config::{LogConfig, NatsConfig};

/// Command line and environment of `steward-ingest`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "steward-ingest",
    version,
    about = "Receives Alertmanager webhooks and publishes each alert to JetStream"
)]
pub struct Config {
    /// Address of the webhook endpoint `POST /api/v1/alerts`; `/healthz`,
    /// `/readyz` and `/metrics` are served on it too.
    #[arg(long, env = "STEWARD_INGEST_LISTEN", default_value = "127.0.0.1:9095")]
    pub listen: SocketAddr,

    /// Largest accepted webhook body, in bytes; larger bodies get 413.
    #[arg(long, env = "STEWARD_INGEST_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Time a webhook request may take, reading its body included; slower
    /// requests get 408.
    #[arg(
        long,
        env = "STEWARD_INGEST_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub request_timeout: std::time::Duration,

    /// Cluster name for alerts that carry no `cluster` label and arrive
    /// with a token that maps to no cluster.
    #[arg(long, env = "STEWARD_DEFAULT_CLUSTER", default_value = "default")]
    pub default_cluster: String,

    /// A bearer token every webhook request must present. Unset, with no
    /// token file either, accepts requests without a token.
    #[arg(long, env = "STEWARD_INGEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File of accepted bearer tokens, one per line: `TOKEN` or
    /// `TOKEN CLUSTER`. A token with a cluster assigns that cluster to
    /// every alert it delivers, whatever the alert's labels say. Blank
    /// lines and lines starting with `#` are skipped.
    #[arg(long, env = "STEWARD_INGEST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// NATS connection and naming.
    #[command(flatten)]
    pub nats: NatsConfig,

    /// Logs.
    #[command(flatten)]
    pub log: LogConfig,
}

/// Accepted bearer tokens and the cluster each one stands for.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: HashMap<String, Option<String>>,
}

impl Tokens {
    /// Builds the token table from the configuration.
    ///
    /// # Errors
    /// Fails when the token file cannot be read or has a malformed line,
    /// naming the file and line.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let mut tokens = HashMap::new();
        if let Some(token) = &config.token {
            anyhow::ensure!(
                !token.trim().is_empty(),
                "STEWARD_INGEST_TOKEN is set but empty"
            );
            tokens.insert(token.trim().to_owned(), None);
        }
        if let Some(path) = &config.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("failed to read token file {}: {e}", path.display())
            })?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut fields = line.split_whitespace();
                let token = fields.next().unwrap_or_default();
                let cluster = fields.next().map(str::to_owned);
                anyhow::ensure!(
                    fields.next().is_none(),
                    "token file {} line {}: expected `TOKEN` or `TOKEN CLUSTER`, found more fields",
                    path.display(),
                    number + 1
                );
                anyhow::ensure!(
                    tokens.insert(token.to_owned(), cluster).is_none(),
                    "token file {} line {}: the token appears on an earlier line too; each token may map to one cluster",
                    path.display(),
                    number + 1
                );
            }
            anyhow::ensure!(
                !tokens.is_empty(),
                "token file {} contains no tokens; add one per line (`TOKEN` or `TOKEN CLUSTER`) or unset STEWARD_INGEST_TOKEN_FILE",
                path.display()
            );
        }
        Ok(Self { tokens })
    }

    /// Builds a table from pairs, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        Self {
            tokens: pairs
                .into_iter()
                .map(|(token, cluster)| (token.to_owned(), cluster.map(str::to_owned)))
                .collect(),
        }
    }

    /// Returns whether requests must present a token.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks a presented token; returns the cluster it maps to (which may
    /// be none).
    ///
    /// # Errors
    /// Fails when the token is not accepted.
    pub fn check(&self, presented: &str) -> Result<Option<&str>, UnknownToken> {
        // Compare against every token in constant time per token, so the
        // time taken does not reveal how much of a token matched.
        let mut found = None;
        for (token, cluster) in &self.tokens {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(cluster.as_deref());
            }
        }
        found.ok_or(UnknownToken)
    }
}

/// A presented bearer token matches none of the configured tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bearer token not accepted")]
pub struct UnknownToken;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_maps_tokens_to_clusters() {
        let tokens = Tokens::from_pairs([("t1", Some("prod")), ("t2", None)]);
        assert_eq!(tokens.check("t1"), Ok(Some("prod")));
        assert_eq!(tokens.check("t2"), Ok(None));
        assert_eq!(tokens.check("t3"), Err(UnknownToken));
        assert_eq!(tokens.check(""), Err(UnknownToken));
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

#[cfg(test)]
mod token_file_tests {
    use clap::Parser;

    use super::*;

    fn load(text: &str) -> anyhow::Result<Tokens> {
        let path = std::env::temp_dir().join(format!("steward-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).expect("write token file");
        let mut config = Config::try_parse_from(["steward-ingest"]).expect("defaults parse");
        config.token_file = Some(path.clone());
        let tokens = Tokens::load(&config);
        let _ = std::fs::remove_file(path);
        tokens
    }

    #[test]
    fn token_file_without_tokens_is_an_error() {
        let error = load("# only a comment\n\n").expect_err("no tokens");
        assert!(error.to_string().contains("contains no tokens"), "{error}");
    }

    #[test]
    fn repeated_token_is_an_error() {
        let error = load("dup prod\ndup staging\n").expect_err("repeated token");
        assert!(
            error
                .to_string()
                .contains("line 2: the token appears on an earlier line"),
            "{error}"
        );
    }
}
