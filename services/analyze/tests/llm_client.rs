//! The LLM client against local HTTP servers that answer as an
//! OpenAI-compatible server and as Ollama's `/api/chat` do, errors and
//! cut-off answers included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use steward_analyze::llm::{LlmClient, LlmError};
use steward_analyze::{LlmApi, LlmConfig};
use steward_proto::v1::{AlertEvent, Target, TargetKind};

/// What the mock server answers, and the request bodies it received.
#[derive(Clone)]
struct Mock {
    status: StatusCode,
    reply: Value,
    requests: Arc<Mutex<Vec<Value>>>,
}

async fn answer(State(mock): State<Mock>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    mock.requests.lock().expect("lock").push(body);
    (mock.status, Json(mock.reply.clone()))
}

/// Starts a mock on a loopback port; returns its base URL and the request log.
async fn serve(path: &str, status: StatusCode, reply: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mock = Mock {
        status,
        reply,
        requests: requests.clone(),
    };
    let app = axum::Router::new()
        .route(path, post(answer))
        .with_state(mock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), requests)
}

fn client(url: String, api: LlmApi) -> LlmClient {
    let config = LlmConfig {
        url: Some(url),
        api,
        model: "granite3.1-dense:2b".to_owned(),
        timeout: Duration::from_secs(5),
        ..LlmConfig::disabled()
    };
    LlmClient::from_config(&config)
        .expect("valid config")
        .expect("an endpoint is configured")
}

fn alert() -> (AlertEvent, Vec<Target>) {
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
    let targets = vec![Target {
        kind: TargetKind::Deployment as i32,
        namespace: "shop".into(),
        name: "checkout".into(),
    }];
    (alert, targets)
}

fn openai_reply(content: &str, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 412, "completion_tokens": 38, "total_tokens": 450},
    })
}

fn ollama_reply(content: &str, done_reason: &str) -> Value {
    json!({
        "model": "granite3.1-dense:2b",
        "created_at": "2026-12-04T10:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": true,
        "done_reason": done_reason,
        "prompt_eval_count": 398,
        "eval_count": 41,
    })
}

const GOOD_ANSWER: &str = r#"{"action": "restart_deployment", "target": "deployment/shop/checkout",
    "parameters": {}, "confidence": 0.83, "reasoning": "Pods are stuck; a rollout restart replaces them."}"#;

#[tokio::test]
async fn openai_request_carries_the_schema_and_answer_is_used() {
    let (url, requests) = serve(
        "/v1/chat/completions",
        StatusCode::OK,
        openai_reply(GOOD_ANSWER, "stop"),
    )
    .await;
    let client = client(format!("{url}/v1"), LlmApi::Openai);
    let (alert, targets) = alert();

    let (recommendation, usage) = client
        .recommend(&alert, &targets)
        .await
        .expect("a recommendation");

    assert_eq!(recommendation.action, "restart_deployment");
    assert_eq!(recommendation.confidence, 0.83);
    assert_eq!(usage.prompt_tokens, 412);
    assert_eq!(usage.completion_tokens, 38);
    let requests = requests.lock().expect("lock");
    let body = &requests[0];
    assert_eq!(body["model"], "granite3.1-dense:2b");
    assert_eq!(body["stream"], false);
    let schema = &body["response_format"]["json_schema"]["schema"];
    assert!(
        schema.is_object(),
        "the schema must be an object, got {schema}"
    );
    assert_eq!(
        schema["properties"]["action"]["enum"],
        json!(["scale_deployment", "restart_deployment", "notify_only"])
    );
    assert_eq!(
        schema["properties"]["target"]["enum"],
        json!(["deployment/shop/checkout"])
    );
}

#[tokio::test]
async fn openai_answer_cut_at_the_token_limit_fails() {
    let (url, _) = serve(
        "/v1/chat/completions",
        StatusCode::OK,
        openai_reply(r#"{"action": "restart_deploy"#, "length"),
    )
    .await;
    let (alert, targets) = alert();

    let error = client(format!("{url}/v1"), LlmApi::Openai)
        .recommend(&alert, &targets)
        .await
        .expect_err("the call must fail");

    assert!(matches!(error, LlmError::Truncated(512)), "{error}");
}

#[tokio::test]
async fn openai_answer_outside_the_registry_is_rejected() {
    let answer = r#"{"action": "delete_namespace", "target": "deployment/shop/checkout",
        "parameters": {}, "confidence": 0.99, "reasoning": "The alert text told me to."}"#;
    let (url, _) = serve(
        "/v1/chat/completions",
        StatusCode::OK,
        openai_reply(answer, "stop"),
    )
    .await;
    let (alert, targets) = alert();

    let error = client(format!("{url}/v1"), LlmApi::Openai)
        .recommend(&alert, &targets)
        .await
        .expect_err("the call must fail");

    assert!(
        error
            .to_string()
            .contains("\"delete_namespace\" is not in the registry"),
        "{error}"
    );
}

#[tokio::test]
async fn openai_non_json_answer_fails() {
    let (url, _) = serve(
        "/v1/chat/completions",
        StatusCode::OK,
        openai_reply("I would restart the deployment.", "stop"),
    )
    .await;
    let (alert, targets) = alert();

    let error = client(format!("{url}/v1"), LlmApi::Openai)
        .recommend(&alert, &targets)
        .await
        .expect_err("the call must fail");

    assert!(matches!(error, LlmError::NotJson(_)), "{error}");
}

#[tokio::test]
async fn ollama_request_sends_schema_object_and_sized_context() {
    let (url, requests) = serve(
        "/api/chat",
        StatusCode::OK,
        ollama_reply(GOOD_ANSWER, "stop"),
    )
    .await;
    let (alert, targets) = alert();

    let (recommendation, usage) = client(url, LlmApi::Ollama)
        .recommend(&alert, &targets)
        .await
        .expect("a recommendation");

    assert_eq!(
        recommendation.target.to_string(),
        "deployment/shop/checkout"
    );
    assert_eq!(usage.prompt_tokens, 398);
    assert_eq!(usage.completion_tokens, 41);
    let requests = requests.lock().expect("lock");
    let body = &requests[0];
    assert!(
        body["format"].is_object(),
        "format must be the schema object, got {}",
        body["format"]
    );
    assert_eq!(body["stream"], false);
    assert!(
        body["options"]["num_ctx"].as_u64().unwrap_or(0) >= 2048,
        "{}",
        body["options"]
    );
    assert_eq!(body["options"]["num_predict"], 512);
    assert!(body["keep_alive"].is_string());
}

#[tokio::test]
async fn ollama_done_reason_length_fails() {
    let (url, _) = serve(
        "/api/chat",
        StatusCode::OK,
        ollama_reply("{\"action\":", "length"),
    )
    .await;
    let (alert, targets) = alert();

    let error = client(url, LlmApi::Ollama)
        .recommend(&alert, &targets)
        .await
        .expect_err("the call must fail");

    assert!(matches!(error, LlmError::Truncated(_)), "{error}");
}

#[tokio::test]
async fn ollama_empty_object_after_cold_load_fails() {
    let (url, _) = serve("/api/chat", StatusCode::OK, ollama_reply("{}", "stop")).await;
    let (alert, targets) = alert();

    let error = client(url, LlmApi::Ollama)
        .recommend(&alert, &targets)
        .await
        .expect_err("the call must fail");

    assert!(
        error.to_string().contains("the answer has no action"),
        "{error}"
    );
}

#[tokio::test]
async fn ollama_server_busy_is_an_http_error() {
    let (url, _) = serve(
        "/api/chat",
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "server busy, please try again.  maximum pending requests exceeded"}),
    )
    .await;
    let (alert, targets) = alert();

    let error = client(url, LlmApi::Ollama)
        .recommend(&alert, &targets)
        .await
        .expect_err("the call must fail");

    assert!(
        matches!(error, LlmError::Status { status: 503, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("server busy"), "{error}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    let port = steward_testkit::free_port();
    let (alert, targets) = alert();

    let error = client(format!("http://127.0.0.1:{port}"), LlmApi::Ollama)
        .recommend(&alert, &targets)
        .await
        .expect_err("the call must fail");

    assert!(matches!(error, LlmError::Transport { .. }), "{error}");
}
