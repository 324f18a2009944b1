//! The LLM client and pool against local HTTP servers that answer as an
//! OpenAI-compatible server and as Ollama's documented API do: errors,
//! cut-off answers, a busy server, slow answers and a dead endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use steward_analyze::LlmApi;
use steward_analyze::llm::{ClientSettings, LlmClient, LlmError};
use steward_analyze::pool::{Pool, PoolSettings};
use steward_analyze::prompt::{Prompt, parse_answer};
use steward_proto::v1::{AlertEvent, Target, TargetKind};
use steward_telemetry::Metrics;

/// What a mock endpoint answers, and what it saw.
#[derive(Clone)]
struct Mock {
    status: StatusCode,
    reply: Value,
    delay: Duration,
    requests: Arc<Mutex<Vec<Value>>>,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Mock {
    fn new(status: StatusCode, reply: Value) -> Self {
        Self {
            status,
            reply,
            delay: Duration::ZERO,
            requests: Arc::default(),
            active: Arc::default(),
            peak: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    /// Serves the mock on a loopback port and returns its base URL (with
    /// `/v1` for the OpenAI API).
    async fn serve(self, api: LlmApi) -> String {
        let chat = match api {
            LlmApi::Openai => "/v1/chat/completions",
            LlmApi::Ollama => "/api/chat",
        };
        let app = axum::Router::new()
            .route(chat, post(answer))
            .route("/v1/models", get(|| async { Json(json!({"data": []})) }))
            .route(
                "/api/version",
                get(|| async { Json(json!({"version": "0.5.0"})) }),
            )
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        match api {
            LlmApi::Openai => format!("http://{address}/v1"),
            LlmApi::Ollama => format!("http://{address}"),
        }
    }
}

async fn answer(State(mock): State<Mock>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let now = mock.active.fetch_add(1, Ordering::SeqCst) + 1;
    mock.peak.fetch_max(now, Ordering::SeqCst);
    mock.requests.lock().expect("lock").push(body);
    tokio::time::sleep(mock.delay).await;
    mock.active.fetch_sub(1, Ordering::SeqCst);
    (mock.status, Json(mock.reply.clone()))
}

fn settings(api: LlmApi) -> ClientSettings {
    ClientSettings {
        api,
        model: "granite3.1-dense:2b".to_owned(),
        api_key: None,
        timeout: Duration::from_secs(5),
        cold_timeout: Duration::from_secs(5),
        max_tokens: 512,
    }
}

fn pool_settings(max_concurrency: usize) -> PoolSettings {
    PoolSettings {
        max_concurrency,
        attempts: 3,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_secs(60),
        probe_interval: Duration::from_secs(60),
        retry_delay: Duration::from_millis(10),
    }
}

fn checkout() -> Vec<Target> {
    vec![Target {
        kind: TargetKind::Deployment as i32,
        namespace: "shop".into(),
        name: "checkout".into(),
    }]
}

fn prompt() -> Prompt {
    let alert = AlertEvent {
        cluster: "prod".into(),
        labels: HashMap::from([
            (
                "alertname".to_owned(),
                "KubeDeploymentReplicasMismatch".to_owned(),
            ),
            ("namespace".to_owned(), "shop".to_owned()),
            ("deployment".to_owned(), "checkout".to_owned()),
        ]),
        ..AlertEvent::default()
    };
    Prompt::new(&[alert], &checkout(), &[])
}

fn openai_reply(content: &str, finish_reason: &str) -> Value {
    json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 412, "completion_tokens": 38, "total_tokens": 450},
    })
}

fn ollama_reply(content: &str, done_reason: &str) -> Value {
    json!({
        "model": "granite3.1-dense:2b",
        "message": {"role": "assistant", "content": content},
        "done": true,
        "done_reason": done_reason,
        "prompt_eval_count": 398,
        "eval_count": 41,
    })
}

const GOOD_ANSWER: &str = r#"{"action": "restart_deployment", "target": "deployment/shop/checkout",
    "parameters": {}, "confidence": 83, "reasoning": "Pods are stuck; a rollout restart replaces them."}"#;

#[tokio::test]
async fn openai_request_carries_the_schema_object() {
    let mock = Mock::new(StatusCode::OK, openai_reply(GOOD_ANSWER, "stop"));
    let url = mock.clone().serve(LlmApi::Openai).await;
    let client = LlmClient::new(&url, settings(LlmApi::Openai)).expect("client");

    let completion = client.complete(&prompt(), false).await.expect("an answer");
    let recommendation = parse_answer(&completion.content, &checkout()).expect("valid answer");

    assert_eq!(recommendation.action, "restart_deployment");
    assert_eq!(recommendation.confidence, 0.83);
    assert_eq!(completion.usage.prompt_tokens, 412);
    assert_eq!(completion.usage.completion_tokens, 38);
    let requests = mock.requests.lock().expect("lock");
    let body = &requests[0];
    assert_eq!(body["stream"], false);
    assert_eq!(body["max_tokens"], 512);
    let schema = &body["response_format"]["json_schema"]["schema"];
    assert!(
        schema["anyOf"].is_array(),
        "the schema must be an object with anyOf, got {schema}"
    );
}

#[tokio::test]
async fn openai_answer_cut_at_the_token_limit_fails() {
    let mock = Mock::new(
        StatusCode::OK,
        openai_reply(r#"{"action": "restart_deploy"#, "length"),
    );
    let url = mock.serve(LlmApi::Openai).await;

    let error = LlmClient::new(&url, settings(LlmApi::Openai))
        .expect("client")
        .complete(&prompt(), false)
        .await
        .expect_err("a cut-off answer");

    assert!(matches!(error, LlmError::Truncated(512)), "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn ollama_request_sends_schema_object_and_sized_context() {
    let mock = Mock::new(StatusCode::OK, ollama_reply(GOOD_ANSWER, "stop"));
    let url = mock.clone().serve(LlmApi::Ollama).await;

    let completion = LlmClient::new(&url, settings(LlmApi::Ollama))
        .expect("client")
        .complete(&prompt(), false)
        .await
        .expect("an answer");

    assert_eq!(completion.usage.prompt_tokens, 398);
    assert_eq!(completion.usage.completion_tokens, 41);
    let requests = mock.requests.lock().expect("lock");
    let body = &requests[0];
    assert!(
        body["format"].is_object(),
        "format must be the schema object, got {}",
        body["format"]
    );
    assert_eq!(body["stream"], false);
    let num_ctx = body["options"]["num_ctx"].as_u64().unwrap_or(0);
    assert!(
        num_ctx >= 2048 && num_ctx % 1024 == 0,
        "{}",
        body["options"]
    );
    assert_eq!(body["options"]["num_predict"], 512);
    assert!(body["keep_alive"].is_string());
}

#[tokio::test]
async fn ollama_done_reason_length_fails() {
    let mock = Mock::new(StatusCode::OK, ollama_reply("{\"action\":", "length"));
    let url = mock.serve(LlmApi::Ollama).await;

    let error = LlmClient::new(&url, settings(LlmApi::Ollama))
        .expect("client")
        .complete(&prompt(), false)
        .await
        .expect_err("a cut-off answer");

    assert!(matches!(error, LlmError::Truncated(_)), "{error}");
}

#[tokio::test]
async fn ollama_empty_object_after_cold_load_is_not_a_decision() {
    let mock = Mock::new(StatusCode::OK, ollama_reply("{}", "stop"));
    let url = mock.serve(LlmApi::Ollama).await;

    let completion = LlmClient::new(&url, settings(LlmApi::Ollama))
        .expect("client")
        .complete(&prompt(), true)
        .await
        .expect("an answer");
    let error = parse_answer(&completion.content, &checkout()).expect_err("no decision");

    assert!(
        error.to_string().contains("the answer has no action"),
        "{error}"
    );
}

#[tokio::test]
async fn ollama_server_busy_is_retryable() {
    let mock = Mock::new(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "server busy, please try again.  maximum pending requests exceeded"}),
    );
    let url = mock.serve(LlmApi::Ollama).await;

    let error = LlmClient::new(&url, settings(LlmApi::Ollama))
        .expect("client")
        .complete(&prompt(), false)
        .await
        .expect_err("busy");

    assert!(
        matches!(error, LlmError::Status { status: 503, .. }),
        "{error}"
    );
    assert!(error.is_retryable());
    assert!(error.to_string().contains("server busy"), "{error}");
}

#[tokio::test]
async fn slow_answer_times_out() {
    let mut mock = Mock::new(StatusCode::OK, openai_reply(GOOD_ANSWER, "stop"));
    mock.delay = Duration::from_secs(3);
    let url = mock.serve(LlmApi::Openai).await;
    let mut quick = settings(LlmApi::Openai);
    quick.timeout = Duration::from_millis(300);

    let error = LlmClient::new(&url, quick)
        .expect("client")
        .complete(&prompt(), false)
        .await
        .expect_err("too slow");

    assert!(matches!(error, LlmError::Timeout { .. }), "{error}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn pool_retries_on_another_endpoint() {
    let busy = Mock::new(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "server busy"}),
    );
    let healthy = Mock::new(StatusCode::OK, openai_reply(GOOD_ANSWER, "stop"));
    let urls = vec![
        busy.clone().serve(LlmApi::Openai).await,
        healthy.clone().serve(LlmApi::Openai).await,
    ];
    let pool = Pool::new(
        &urls,
        settings(LlmApi::Openai),
        pool_settings(2),
        Arc::new(Metrics::new()),
    )
    .expect("pool");

    for _ in 0..4 {
        let answer = pool
            .complete(&prompt())
            .await
            .expect("the healthy endpoint answers");
        assert!(answer.endpoint.starts_with(&urls[1]), "{}", answer.endpoint);
    }

    assert_eq!(healthy.calls(), 4);
    // After two failures the busy endpoint's circuit opens, and it gets no
    // further requests during the cooldown.
    assert_eq!(busy.calls(), 2);
}

#[tokio::test]
async fn pool_with_every_endpoint_down_fails() {
    let dead = format!("http://127.0.0.1:{}/v1", steward_testkit::free_port());
    let pool = Pool::new(
        &[dead],
        settings(LlmApi::Openai),
        pool_settings(2),
        Arc::new(Metrics::new()),
    )
    .expect("pool");

    let first = pool.complete(&prompt()).await.expect_err("nothing answers");
    let later = pool
        .complete(&prompt())
        .await
        .expect_err("the circuit is open");

    assert!(matches!(first, LlmError::Transport { .. }), "{first}");
    assert!(matches!(later, LlmError::Unavailable(_)), "{later}");
}

#[tokio::test]
async fn pool_bounds_concurrency_per_endpoint() {
    let mut slow = Mock::new(StatusCode::OK, openai_reply(GOOD_ANSWER, "stop"));
    slow.delay = Duration::from_millis(200);
    let url = slow.clone().serve(LlmApi::Openai).await;
    let pool = Arc::new(
        Pool::new(
            &[url],
            settings(LlmApi::Openai),
            pool_settings(2),
            Arc::new(Metrics::new()),
        )
        .expect("pool"),
    );

    let calls = (0..6).map(|_| {
        let pool = pool.clone();
        async move { pool.complete(&prompt()).await }
    });
    let results = futures::future::join_all(calls).await;

    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        slow.peak.load(Ordering::SeqCst),
        2,
        "the endpoint saw more than its concurrency"
    );
}

#[tokio::test]
async fn pool_spreads_calls_over_endpoints() {
    let mut a = Mock::new(StatusCode::OK, openai_reply(GOOD_ANSWER, "stop"));
    a.delay = Duration::from_millis(100);
    let mut b = a.clone();
    b.requests = Arc::default();
    b.active = Arc::default();
    b.peak = Arc::default();
    let urls = vec![
        a.clone().serve(LlmApi::Openai).await,
        b.clone().serve(LlmApi::Openai).await,
    ];
    let pool = Arc::new(
        Pool::new(
            &urls,
            settings(LlmApi::Openai),
            pool_settings(2),
            Arc::new(Metrics::new()),
        )
        .expect("pool"),
    );

    let calls = (0..8).map(|_| {
        let pool = pool.clone();
        async move { pool.complete(&prompt()).await }
    });
    futures::future::join_all(calls).await;

    assert_eq!(a.calls() + b.calls(), 8);
    assert_eq!(
        a.calls(),
        4,
        "least-loaded routing must split evenly between idle endpoints"
    );
}
