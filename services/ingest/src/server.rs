//! The webhook HTTP handler.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use steward_bus::{Bus, Published};
use steward_proto::Message;
use steward_proto::v1::{AlertEvent, AlertStatus};
use steward_telemetry::{Metrics, StatusLabels, error_chain};

use crate::Tokens;
use crate::webhook::{self, Alert};

/// Content type of alert messages on the bus.
const ALERT_CONTENT_TYPE: &str = "application/protobuf; proto=steward.v1.AlertEvent";

/// Publishes of one webhook that wait for their acknowledgement at once.
const MAX_CONCURRENT_PUBLISHES: usize = 256;

/// Shortest time between two log lines about rejected tokens.
const AUTH_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Shared state of the webhook handler.
#[derive(Clone)]
pub struct AppState {
    /// JetStream connection, set once the streams exist.
    pub bus: Arc<OnceLock<Bus>>,
    /// Accepted bearer tokens.
    pub tokens: Arc<Tokens>,
    /// Cluster of alerts with no other cluster.
    pub default_cluster: String,
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Rate limit of the rejected-token warning.
    pub rejected_auth_log: Arc<Mutex<AuthLog>>,
}

/// When a rejected token was last logged, and how many went unlogged since.
#[derive(Debug, Default)]
pub struct AuthLog {
    last: Option<Instant>,
    suppressed: u64,
}

/// Returns the webhook routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/alerts", post(receive))
        .with_state(state)
}

async fn receive(State(state): State<AppState>, request: Request) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let (parts, body) = request.into_parts();
    let response = handle(&state, remote, &parts.headers, body).await;
    state
        .metrics
        .ingest_responses
        .get_or_create(&StatusLabels {
            code: response.status().as_u16(),
        })
        .inc();
    response
}

async fn handle(
    state: &AppState,
    remote: Option<SocketAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let token_cluster = match authorize(state, remote, headers) {
        Ok(cluster) => cluster,
        Err(response) => return *response,
    };

    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > state.max_body_bytes) {
        return too_large(state.max_body_bytes);
    }
    let body = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => return too_large(state.max_body_bytes),
    };

    let payload = match webhook::parse(&body) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::info!(error = %error, ?remote, "webhook payload rejected");
            return error_response(StatusCode::BAD_REQUEST, &error.to_string());
        }
    };
    if payload.truncated_alerts > 0 {
        tracing::warn!(
            truncated = payload.truncated_alerts,
            group_key = %payload.group_key,
            "Alertmanager truncated this group; raise the receiver's max_alerts to send every alert"
        );
    }

    let cluster_of = |alert: &Alert| {
        if let Some(cluster) = &token_cluster {
            return cluster.clone();
        }
        match alert.labels.get("cluster").map(|cluster| cluster.trim()) {
            Some(cluster) if !cluster.is_empty() => cluster.to_owned(),
            _ => state.default_cluster.clone(),
        }
    };
    let events = webhook::to_events(&payload, chrono::Utc::now(), cluster_of);
    let Some(bus) = state.bus.get() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest is not connected to NATS yet; retry later",
        );
    };
    publish_all(bus, events).await
}

/// Checks the bearer token. Returns the cluster the token maps to, or the
/// 401 response.
fn authorize(
    state: &AppState,
    remote: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Option<String>, Box<Response>> {
    if !state.tokens.required() {
        return Ok(None);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    match presented.map(|token| state.tokens.check(token)) {
        Some(Ok(cluster)) => Ok(cluster.map(str::to_owned)),
        outcome => {
            log_rejected_token(state, remote, outcome.is_none());
            let mut response =
                error_response(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            Err(Box::new(response))
        }
    }
}

fn log_rejected_token(state: &AppState, remote: Option<SocketAddr>, missing: bool) {
    let mut log = state
        .rejected_auth_log
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    if log
        .last
        .is_some_and(|last| now.duration_since(last) < AUTH_LOG_INTERVAL)
    {
        log.suppressed += 1;
        return;
    }
    tracing::warn!(
        ?remote,
        token_missing = missing,
        suppressed_since_last = log.suppressed,
        "webhook request rejected: missing or invalid bearer token"
    );
    log.last = Some(now);
    log.suppressed = 0;
}

/// Publishes every event concurrently and responds 200 only when JetStream
/// acknowledged all of them.
async fn publish_all(bus: &Bus, events: Vec<AlertEvent>) -> Response {
    let total = events.len();

    // A message over the server's max_payload makes the server close the
    // connection, and the alert could never be published: reject the group
    // before sending anything.
    let max_payload = bus.client().server_info().max_payload;
    for (index, event) in events.iter().enumerate() {
        let size = event.encoded_len();
        if max_payload > 0 && size > max_payload {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "alerts[{index}] encodes to {size} bytes, over the NATS server's max_payload of {max_payload}; shorten its labels"
                ),
            );
        }
    }

    let messages: Vec<(String, String, Bytes)> = events
        .iter()
        .map(|event| {
            let status = match event.status() {
                AlertStatus::Resolved => "resolved",
                _ => "firing",
            };
            (
                bus.names().alert(&event.cluster),
                format!("alert:{}:{status}", event.correlation_id),
                Bytes::from(event.encode_to_vec()),
            )
        })
        .collect();
    let publishes = messages
        .into_iter()
        .map(|(subject, message_id, payload)| async move {
            bus.publish(subject, "alert", &message_id, ALERT_CONTENT_TYPE, payload)
                .await
        });
    // Bounded, so that a group of thousands of alerts does not flood the
    // connection with unacknowledged publishes.
    let results: Vec<_> = futures::stream::iter(publishes)
        .buffered(MAX_CONCURRENT_PUBLISHES)
        .collect()
        .await;

    let mut stored = 0;
    let mut duplicates = 0;
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(Published {
                duplicate: true, ..
            }) => duplicates += 1,
            Ok(Published {
                duplicate: false, ..
            }) => stored += 1,
            Err(error) => failures.push(error_chain(&error)),
        }
    }

    if let Some(first) = failures.first() {
        tracing::warn!(
            failed = failures.len(),
            total,
            error = %first,
            "failed to publish alerts; answering 503 so that Alertmanager retries"
        );
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "failed to publish {} of {total} alerts to JetStream ({first}); retry later",
                failures.len()
            ),
        );
    }
    tracing::debug!(stored, duplicates, "webhook accepted");
    (
        StatusCode::OK,
        axum::Json(json!({ "accepted": stored, "duplicates": duplicates })),
    )
        .into_response()
}

fn too_large(limit: usize) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "webhook body exceeds the {limit}-byte limit; lower the receiver's max_alerts or raise STEWARD_INGEST_MAX_BODY_BYTES"
        ),
    )
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
