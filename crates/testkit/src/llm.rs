//! A fake OpenAI-compatible chat completions server that answers every
//! request after a fixed latency with a schema-valid choice, and counts
//! the requests and the most it served at once.
//!
//! It reads the answer schema a request carries (an `anyOf` of one branch
//! per action) and picks the first branch that is not `notify_only`, its
//! first target, and each required parameter at its minimum, so the
//! answer is valid for whatever alert the request is about.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
    active: AtomicUsize,
    peak: AtomicUsize,
}

#[derive(Clone)]
struct Shared {
    latency: Duration,
    counters: Arc<Counters>,
}

/// A running fake LLM endpoint.
pub struct FakeLlm {
    url: String,
    counters: Arc<Counters>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Starts a fake endpoint on a loopback port that answers after
    /// `latency`.
    ///
    /// # Errors
    /// Fails when no port can be bound.
    pub async fn start(latency: Duration) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": []})) }),
            )
            .with_state(Shared {
                latency,
                counters: counters.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(error = %error, "fake LLM server stopped");
            }
        });
        Ok(Self {
            url,
            counters,
            server,
        })
    }

    /// Returns the base URL, ending in `/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the chat requests served so far.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Returns the most requests it served at once.
    pub fn peak_concurrency(&self) -> usize {
        self.counters.peak.load(Ordering::SeqCst)
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn complete(State(shared): State<Shared>, Json(request): Json<Value>) -> Json<Value> {
    let counters = &shared.counters;
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let now = counters.active.fetch_add(1, Ordering::SeqCst) + 1;
    counters.peak.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(shared.latency).await;
    counters.active.fetch_sub(1, Ordering::SeqCst);

    let content = choose(&request["response_format"]["json_schema"]["schema"]).to_string();
    Json(json!({
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 400, "completion_tokens": 40, "total_tokens": 440},
    }))
}

/// Returns a valid answer for the schema.
fn choose(schema: &Value) -> Value {
    let branches = schema["anyOf"].as_array().cloned().unwrap_or_default();
    let branch = branches
        .iter()
        .find(|branch| branch["properties"]["action"]["enum"][0] != "notify_only")
        .or(branches.first())
        .cloned()
        .unwrap_or(Value::Null);
    let properties = &branch["properties"];
    let mut parameters = Map::new();
    if let Some(required) = properties["parameters"]["required"].as_array() {
        for name in required.iter().filter_map(Value::as_str) {
            let minimum = properties["parameters"]["properties"][name]["minimum"].clone();
            parameters.insert(name.to_owned(), minimum);
        }
    }
    json!({
        "action": properties["action"]["enum"][0],
        "target": properties["target"]["enum"][0],
        "parameters": parameters,
        "confidence": 80,
        "reasoning": "The fake model chooses the first offered action.",
    })
}
