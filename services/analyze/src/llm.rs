//! A client for one LLM endpoint.
//!
//! Two APIs are spoken: OpenAI-compatible chat completions with
//! `response_format` set to a JSON schema, and Ollama's native `/api/chat`
//! with `format` set to the schema object. Calls are never streamed, have a
//! timeout and a cap on generated tokens, and an answer cut at that cap is
//! an error, never parsed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::LlmApi;
use crate::prompt::Prompt;

/// Why an LLM call produced no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The request did not complete.
    #[error("request to {url} failed")]
    Transport {
        /// Endpoint URL.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The request exceeded its timeout.
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout {
        /// Endpoint URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// Endpoint URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// The response did not have the API's shape.
    #[error("unexpected response shape: {0}")]
    Shape(String),
    /// Generation stopped at the token limit, leaving partial JSON.
    #[error("the answer was cut off at the token limit ({0} tokens)")]
    Truncated(u32),
    /// The answer is not a JSON object with the required fields.
    #[error("the answer is not valid JSON for the schema: {0}")]
    NotJson(String),
    /// The answer is JSON but chooses something not allowed.
    #[error("the answer was rejected: {0}")]
    Rejected(String),
    /// No endpoint of the pool could take the call.
    #[error("no LLM endpoint is available: {0}")]
    Unavailable(String),
}

impl LlmError {
    /// Returns whether another attempt, on this or another endpoint, may
    /// succeed: true for transport failures, timeouts, 5xx (Ollama answers
    /// 503 when its queue is full), 429, endpoint problems another endpoint
    /// may not share (401, 403, 404, 408) and malformed responses; false for
    /// a request the server found invalid (400, 422) and for answers the
    /// model produced, which the same prompt produces again.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Transport { .. } | LlmError::Timeout { .. } | LlmError::Shape(_) => true,
            LlmError::Status { status, .. } => {
                matches!(*status, 401 | 403 | 404 | 408 | 429) || *status >= 500
            }
            LlmError::Truncated(_)
            | LlmError::NotJson(_)
            | LlmError::Rejected(_)
            | LlmError::Unavailable(_) => false,
        }
    }
}

/// What an endpoint reported besides the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Time the request took, in milliseconds.
    pub latency_ms: u32,
}

/// A model's answer, not yet validated.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The answer text, which should be one JSON object.
    pub content: String,
    /// Token counts and latency.
    pub usage: Usage,
}

/// Settings shared by the clients of one pool.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// API the endpoints speak.
    pub api: LlmApi,
    /// Model name.
    pub model: String,
    /// Bearer token, if any.
    pub api_key: Option<String>,
    /// Timeout of one call.
    pub timeout: Duration,
    /// Timeout of a call that may have to load the model first.
    pub cold_timeout: Duration,
    /// Maximum tokens generated per answer.
    pub max_tokens: u32,
}

/// A client for one LLM endpoint.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    url: String,
    settings: ClientSettings,
}

impl LlmClient {
    /// Creates a client for the endpoint at `url`.
    ///
    /// # Errors
    /// Fails when the HTTP client cannot be built.
    pub fn new(url: &str, settings: ClientSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("failed to build the LLM HTTP client: {e}"))?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            settings,
        })
    }

    /// Returns the chat endpoint's URL.
    pub fn endpoint(&self) -> String {
        match self.settings.api {
            LlmApi::Openai => format!("{}/chat/completions", self.url),
            LlmApi::Ollama => format!("{}/api/chat", self.url),
        }
    }

    /// Returns the model name.
    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// Sends `prompt` and returns the model's answer. `cold` gives the call
    /// the longer timeout for an endpoint whose model may still load.
    ///
    /// # Errors
    /// Fails when the request fails or times out, the server answers an
    /// error status or an unexpected shape, or the answer was cut off.
    pub async fn complete(&self, prompt: &Prompt, cold: bool) -> Result<Completion, LlmError> {
        let body = match self.settings.api {
            LlmApi::Openai => self.openai_body(prompt),
            LlmApi::Ollama => self.ollama_body(prompt),
        };
        let timeout = if cold {
            self.settings.cold_timeout
        } else {
            self.settings.timeout
        };

        let url = self.endpoint();
        let started = Instant::now();
        let mut request = self.http.post(&url).timeout(timeout).json(&body);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|source| transport_error(&url, timeout, source))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|source| transport_error(&url, timeout, source))?;
        if !status.is_success() {
            return Err(LlmError::Status {
                url,
                status: status.as_u16(),
                body: text.chars().take(300).collect(),
            });
        }
        let reply: Value = serde_json::from_str(&text)
            .map_err(|e| LlmError::Shape(format!("body is not JSON: {e}")))?;

        let mut completion = match self.settings.api {
            LlmApi::Openai => self.read_openai(&reply)?,
            LlmApi::Ollama => self.read_ollama(&reply)?,
        };
        completion.usage.latency_ms =
            u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        Ok(completion)
    }

    /// Checks that the endpoint answers: Ollama's `/api/version`, or the
    /// OpenAI-compatible `/models`. Any answer below 500 counts, because a
    /// server without `/models` (404) or with a key-protected one (401) is
    /// still up.
    ///
    /// # Errors
    /// Fails when the request fails or the server answers 5xx.
    pub async fn probe(&self, timeout: Duration) -> Result<(), LlmError> {
        let url = match self.settings.api {
            LlmApi::Openai => format!("{}/models", self.url),
            LlmApi::Ollama => format!("{}/api/version", self.url),
        };
        let mut request = self.http.get(&url).timeout(timeout);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|source| transport_error(&url, timeout, source))?;
        if !response.status().is_server_error() {
            return Ok(());
        }
        Err(LlmError::Status {
            url,
            status: response.status().as_u16(),
            body: String::new(),
        })
    }

    /// Asks Ollama to load the model now, so that the first alert does not
    /// wait for the load; an empty chat request loads a model without
    /// generating. OpenAI-compatible servers load at start and need none.
    ///
    /// # Errors
    /// Fails when the load request fails or times out.
    pub async fn warm(&self) -> Result<(), LlmError> {
        if self.settings.api != LlmApi::Ollama {
            return Ok(());
        }
        let url = self.endpoint();
        let body = json!({"model": self.settings.model, "messages": [], "keep_alive": "30m"});
        let response = self
            .http
            .post(&url)
            .timeout(self.settings.cold_timeout)
            .json(&body)
            .send()
            .await
            .map_err(|source| transport_error(&url, self.settings.cold_timeout, source))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(LlmError::Status {
            url,
            status: response.status().as_u16(),
            body: response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect(),
        })
    }

    fn openai_body(&self, prompt: &Prompt) -> Value {
        json!({
            "model": self.settings.model,
            "messages": prompt.messages(),
            "temperature": 0,
            "max_tokens": self.settings.max_tokens,
            "stream": false,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "remediation", "strict": true, "schema": prompt.schema},
            },
        })
    }

    fn ollama_body(&self, prompt: &Prompt) -> Value {
        // Ollama cuts prompts longer than num_ctx from the start without an
        // error, so the context is sized to the prompt plus the answer.
        let needed = prompt.estimated_tokens() + self.settings.max_tokens as usize;
        let num_ctx = needed.div_ceil(1024).max(2) * 1024;
        json!({
            "model": self.settings.model,
            "messages": prompt.messages(),
            "stream": false,
            // The schema goes in as an object; a string holding JSON would
            // leave decoding unconstrained.
            "format": prompt.schema,
            "keep_alive": "30m",
            "options": {"temperature": 0, "num_ctx": num_ctx, "num_predict": self.settings.max_tokens},
        })
    }

    fn read_openai(&self, reply: &Value) -> Result<Completion, LlmError> {
        let choice = reply
            .pointer("/choices/0")
            .ok_or_else(|| LlmError::Shape("no choices in the reply".to_owned()))?;
        if choice.get("finish_reason").and_then(Value::as_str) == Some("length") {
            return Err(LlmError::Truncated(self.settings.max_tokens));
        }
        let content = choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::Shape("choices[0].message.content is missing".to_owned()))?;
        Ok(Completion {
            content: content.to_owned(),
            usage: Usage {
                prompt_tokens: read_u32(reply.pointer("/usage/prompt_tokens")),
                completion_tokens: read_u32(reply.pointer("/usage/completion_tokens")),
                latency_ms: 0,
            },
        })
    }

    fn read_ollama(&self, reply: &Value) -> Result<Completion, LlmError> {
        if let Some(error) = reply.get("error").and_then(Value::as_str) {
            return Err(LlmError::Shape(format!(
                "Ollama reported an error: {error}"
            )));
        }
        if reply.get("done_reason").and_then(Value::as_str) == Some("length") {
            return Err(LlmError::Truncated(self.settings.max_tokens));
        }
        let content = reply
            .pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::Shape("message.content is missing".to_owned()))?;
        Ok(Completion {
            content: content.to_owned(),
            usage: Usage {
                prompt_tokens: read_u32(reply.get("prompt_eval_count")),
                completion_tokens: read_u32(reply.get("eval_count")),
                latency_ms: 0,
            },
        })
    }
}

fn transport_error(url: &str, timeout: Duration, source: reqwest::Error) -> LlmError {
    if source.is_timeout() {
        LlmError::Timeout {
            url: url.to_owned(),
            timeout,
        }
    } else {
        LlmError::Transport {
            url: url.to_owned(),
            source,
        }
    }
}

fn read_u32(value: Option<&Value>) -> u32 {
    value
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0)
}
