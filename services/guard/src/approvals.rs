//! Settling pending proposals: a person approves or rejects them over an
//! authenticated HTTP endpoint, or they are rejected after the approval
//! timeout. The model can never approve: only a bearer token from the
//! approval token file can, and the token names the person.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use steward_bus::{Bus, Stage, event_id};
use steward_proto::Message;
use steward_proto::v1::{self, Decision, RemediationEvent, remediation_event};
use steward_store::{
    self as store, ActionRecord, DecisionTx, Holding, PendingDecision, Settlement, Store,
    StoreError, TargetKey,
};
use steward_telemetry::{DecisionLabels, Metrics, error_chain};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Moment, Policy, Ruling, evaluate_history, evaluate_static};

/// Longest time between two passes of the timeout and republish loop;
/// short approval timeouts are checked more often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Why settling a proposal failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No proposal with that id was ever put on hold.
    #[error("proposal {0} was never pending")]
    Unknown(Uuid),
    /// It was settled the other way already.
    #[error("proposal {proposal_id} was already {}", settled_text(.verdict, .by, .refusal.as_deref()))]
    AlreadySettled {
        /// Proposal id.
        proposal_id: Uuid,
        /// The verdict it got.
        verdict: String,
        /// The rule's reason when the guard rejected a person's approval.
        refusal: Option<String>,
        /// The person who settled it, or `timeout`.
        by: String,
    },
    /// A person approved it, but the guard's checks, run again, reject it
    /// now; the proposal is settled as rejected.
    #[error("proposal {proposal_id} was rejected at approval: {reason}")]
    Refused {
        /// Proposal id.
        proposal_id: Uuid,
        /// The check that failed, in words.
        reason: String,
    },
    /// Postgres or NATS failed; retrying may work.
    #[error("failed to settle the proposal: {0}")]
    Unavailable(String),
}

/// Describes how a proposal was settled, for an error message.
fn settled_text(verdict: &str, by: &str, refusal: Option<&str>) -> String {
    match refusal {
        Some(reason) => format!(
            "rejected at approval: {by} approved it, but {}",
            reason.trim_start_matches(REFUSAL_PREFIX)
        ),
        None => format!("{verdict} by {by}"),
    }
}

/// Returns the rule's reason when the guard rejected a person's approval.
fn refusal_of(event: &RemediationEvent) -> Option<String> {
    let Some(remediation_event::Body::Rejected(decision)) = &event.body else {
        return None;
    };
    decision
        .reasons
        .last()
        .filter(|reason| reason.starts_with(REFUSAL_PREFIX))
        .cloned()
}

/// Prefix of the reason of a rejected approval.
const REFUSAL_PREFIX: &str = "rejected at approval: ";

/// Approver name recorded when the approval timeout rejects a proposal;
/// the token file may not give it to a person.
const TIMEOUT_APPROVER: &str = "timeout";

/// Returns the stage of a settlement: approved or rejected.
fn settled_stage(approved: bool) -> Stage {
    if approved {
        Stage::Approved
    } else {
        Stage::Rejected
    }
}

/// The result of a settlement that went the requested way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The person who settled it, or `timeout`; another person than the
    /// requester when it was settled the same way before.
    pub by: String,
    /// Whether it was settled before, so this request changed nothing.
    pub repeated: bool,
}

/// Settles pending proposals and publishes the result.
#[derive(Clone)]
pub struct Approvals {
    bus: Bus,
    store: Store,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
}

impl Approvals {
    /// Creates the settler.
    pub fn new(bus: Bus, store: Store, policy: Arc<Policy>, metrics: Arc<Metrics>) -> Self {
        Self {
            bus,
            store,
            policy,
            metrics,
        }
    }

    /// Approves or rejects a pending proposal on behalf of `by`. Settling it
    /// again the same way publishes the stored result again, so a retried
    /// request is safe.
    ///
    /// An approval runs the guard's checks again first (freeze windows,
    /// namespaces, allowed actions, thresholds, the resolved alert, the
    /// cooldown, the oscillation detectors and the rate limits), because
    /// the history may have changed while the proposal waited. When one
    /// fails, the proposal is settled as rejected with that reason, and the
    /// result is [`ApprovalError::Refused`].
    ///
    /// # Errors
    /// Fails when the proposal is unknown, was settled the other way, the
    /// checks reject it, or Postgres or NATS failed.
    pub async fn settle(
        &self,
        proposal_id: Uuid,
        approve: bool,
        by: &str,
        comment: &str,
    ) -> Result<Settled, ApprovalError> {
        let unavailable =
            |error: &dyn std::error::Error| ApprovalError::Unavailable(error.to_string());
        let requested = settled_stage(approve).as_str();
        let Some(pending) = self
            .store
            .pending_decision(proposal_id)
            .await
            .map_err(|e| unavailable(&e))?
        else {
            // Settled before, or decided by the guard without a hold: only
            // a held proposal can be settled, or answered again.
            let Some(Holding::SettledBy(settled_by)) = self
                .store
                .holding(proposal_id)
                .await
                .map_err(|e| unavailable(&e))?
            else {
                return Err(ApprovalError::Unknown(proposal_id));
            };
            let Some(stored) = self
                .store
                .stored_decision(proposal_id)
                .await
                .map_err(|e| unavailable(&e))?
            else {
                return Err(ApprovalError::Unknown(proposal_id));
            };
            let event = RemediationEvent::decode(stored.as_slice()).map_err(|error| {
                ApprovalError::Unavailable(format!("the stored decision does not decode: {error}"))
            })?;
            let verdict = match &event.body {
                Some(remediation_event::Body::Approved(_)) => "approved",
                Some(remediation_event::Body::Rejected(_)) => "rejected",
                _ => "pending",
            };
            if verdict != requested {
                return Err(ApprovalError::AlreadySettled {
                    proposal_id,
                    verdict: verdict.to_owned(),
                    refusal: refusal_of(&event),
                    by: settled_by,
                });
            }
            let cluster = event.cluster.clone();
            self.publish(&cluster, proposal_id, stored).await?;
            return Ok(Settled {
                by: settled_by,
                repeated: true,
            });
        };
        let note = if comment.is_empty() {
            format!("{requested} by {by}")
        } else {
            format!("{requested} by {by}: {comment}")
        };
        self.settle_pending(&pending, approve, by, note).await
    }

    /// Rejects the proposals that waited longer than the approval timeout
    /// and publishes settled proposals whose publish failed, until
    /// `shutdown`.
    pub async fn sweep(self, shutdown: CancellationToken) {
        let interval =
            (self.policy.approval_timeout / 4).clamp(Duration::from_millis(100), SWEEP_INTERVAL);
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.sweep_once().await {
                tracing::warn!(error = %error, "approval sweep failed; it runs again shortly");
            }
        }
    }

    /// One pass of [`Approvals::sweep`].
    ///
    /// # Errors
    /// Fails when Postgres or NATS failed.
    pub async fn sweep_once(&self) -> Result<(), ApprovalError> {
        let unavailable =
            |error: &dyn std::error::Error| ApprovalError::Unavailable(error.to_string());
        let expired = self
            .store
            .expired_pending(self.policy.approval_timeout)
            .await
            .map_err(|e| unavailable(&e))?;
        for pending in expired {
            let note = format!(
                "no one approved within {}; rejected",
                humantime::format_duration(self.policy.approval_timeout)
            );
            match self
                .settle_pending(&pending, false, TIMEOUT_APPROVER, note)
                .await
            {
                Ok(_) | Err(ApprovalError::AlreadySettled { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        for (proposal_id, cluster, event) in self
            .store
            .unpublished_decisions()
            .await
            .map_err(|e| unavailable(&e))?
        {
            self.publish(&cluster, proposal_id, event).await?;
        }
        Ok(())
    }

    async fn settle_pending(
        &self,
        pending: &PendingDecision,
        approve: bool,
        by: &str,
        note: String,
    ) -> Result<Settled, ApprovalError> {
        let event = RemediationEvent::decode(pending.event.as_slice()).map_err(|error| {
            ApprovalError::Unavailable(format!("the stored pending event does not decode: {error}"))
        })?;
        let Some(remediation_event::Body::Pending(decision)) = event.body else {
            return Err(ApprovalError::Unavailable(
                "the stored event is not a pending decision".to_owned(),
            ));
        };
        let proposal = decision.proposal.clone().unwrap_or_default();
        let target = proposal.target.clone().unwrap_or_default();
        let key = TargetKey {
            cluster: pending.cluster.clone(),
            namespace: target.namespace.clone(),
            kind: target.kind().label().to_owned(),
            name: target.name.clone(),
        };
        let unavailable = |error: StoreError| ApprovalError::Unavailable(error_chain(&error));
        let mut tx = self
            .store
            .begin_decision(key.clone())
            .await
            .map_err(unavailable)?;
        let mut refusal = None;
        if approve
            && tx
                .is_pending(pending.proposal_id)
                .await
                .map_err(unavailable)?
        {
            refusal = self
                .recheck(&mut tx, &proposal, &target, pending)
                .await
                .map_err(unavailable)?;
        }
        let requested = settled_stage(approve);
        let approved = approve && refusal.is_none();
        let stage = settled_stage(approved);
        let mut reasons = decision.reasons.clone();
        reasons.push(note);
        if let Some((_, reason)) = &refusal {
            reasons.push(format!("{REFUSAL_PREFIX}{reason}"));
        }
        let settled = Decision {
            proposal: Some(proposal.clone()),
            verdict: if approved {
                v1::Verdict::Approved
            } else {
                v1::Verdict::Rejected
            } as i32,
            reasons: reasons.clone(),
            decided_at: Some(steward_proto::now()),
        };
        let new_event = RemediationEvent {
            event_id: event_id(&pending.proposal_id, stage).to_string(),
            correlation_id: pending.correlation_id.to_string(),
            cluster: pending.cluster.clone(),
            occurred_at: settled.decided_at,
            body: Some(if approved {
                remediation_event::Body::Approved(settled)
            } else {
                remediation_event::Body::Rejected(settled)
            }),
        };
        let encoded = new_event.encode_to_vec();
        let settlement = Settlement {
            verdict: stage.as_str(),
            reasons,
            by,
            event: encoded.clone(),
            target: key,
            action: approved.then(|| ActionRecord {
                action: proposal.action.clone(),
                parameters: steward_actions::parameters_to_json(&proposal.parameters),
                confidence: proposal.confidence,
            }),
        };
        match tx
            .settle(pending.proposal_id, &settlement)
            .await
            .map_err(unavailable)?
        {
            store::Settled::Now => {
                let rule = match (&refusal, by) {
                    (Some((rule, _)), _) => *rule,
                    (None, TIMEOUT_APPROVER) => "approval_timeout",
                    (None, _) => "person",
                };
                self.metrics
                    .decisions
                    .get_or_create(&DecisionLabels {
                        verdict: stage.as_str(),
                        rule,
                    })
                    .inc();
                tracing::info!(
                    proposal_id = %pending.proposal_id,
                    verdict = stage.as_str(),
                    rule,
                    by,
                    "pending proposal settled"
                );
                self.publish(&pending.cluster, pending.proposal_id, encoded)
                    .await?;
                match refusal {
                    Some((_, reason)) => Err(ApprovalError::Refused {
                        proposal_id: pending.proposal_id,
                        reason,
                    }),
                    None => Ok(Settled {
                        by: by.to_owned(),
                        repeated: false,
                    }),
                }
            }
            store::Settled::Before { verdict, event, by } if verdict == requested.as_str() => {
                self.publish(&pending.cluster, pending.proposal_id, event)
                    .await?;
                Ok(Settled { by, repeated: true })
            }
            store::Settled::Before { verdict, by, event } => Err(ApprovalError::AlreadySettled {
                proposal_id: pending.proposal_id,
                verdict,
                refusal: RemediationEvent::decode(event.as_slice())
                    .ok()
                    .and_then(|event| refusal_of(&event)),
                by,
            }),
            store::Settled::Unknown => Err(ApprovalError::Unknown(pending.proposal_id)),
        }
    }

    /// Runs the guard's checks again for a proposal a person approves.
    /// Returns the deciding rule and its reason when they reject it now.
    async fn recheck(
        &self,
        tx: &mut DecisionTx,
        proposal: &v1::Proposal,
        target: &v1::Target,
        pending: &PendingDecision,
    ) -> Result<Option<(&'static str, String)>, StoreError> {
        let verdict = match evaluate_static(proposal, &pending.cluster, &self.policy, Utc::now()) {
            Ok(verdict) => verdict,
            Err(reasons) => {
                evaluate_history(
                    tx,
                    &self.policy,
                    proposal,
                    target,
                    pending.correlation_id,
                    reasons,
                    Moment::Approval,
                )
                .await?
            }
        };
        Ok(match verdict.ruling {
            Ruling::Approved => None,
            Ruling::Rejected | Ruling::Pending => Some((
                verdict.rule,
                verdict.reasons.last().cloned().unwrap_or_default(),
            )),
        })
    }

    async fn publish(
        &self,
        cluster: &str,
        proposal_id: Uuid,
        event: Vec<u8>,
    ) -> Result<(), ApprovalError> {
        let decoded = RemediationEvent::decode(event.as_slice()).map_err(|error| {
            ApprovalError::Unavailable(format!("the stored decision does not decode: {error}"))
        })?;
        let stage = match decoded.body {
            Some(remediation_event::Body::Approved(_)) => Stage::Approved,
            _ => Stage::Rejected,
        };
        self.bus
            .publish_event(stage, cluster, &decoded.event_id, Bytes::from(event))
            .await
            .map_err(|error| ApprovalError::Unavailable(error_chain(&error)))?;
        self.store
            .mark_published(proposal_id)
            .await
            .map_err(|error| ApprovalError::Unavailable(error_chain(&error)))
    }
}

/// Approval tokens, each naming the person who holds it.
#[derive(Debug, Clone, Default)]
pub struct ApproverTokens(HashMap<String, String>);

impl ApproverTokens {
    /// Reads a token file: one `TOKEN NAME` per line; blank lines and lines
    /// starting with `#` are skipped.
    ///
    /// # Errors
    /// Fails when the file cannot be read, a line lacks a name, a token
    /// repeats, or there is no token, naming the file and line.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "failed to read the approval token file {}: {e}",
                path.display()
            )
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut tokens = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((token, name)) = line.split_once(char::is_whitespace) else {
                return Err(format!(
                    "approval token file {} line {}: expected `TOKEN NAME`",
                    path.display(),
                    number + 1
                ));
            };
            let name = name.trim();
            if name == TIMEOUT_APPROVER {
                return Err(format!(
                    "approval token file {} line {}: the name `timeout` is reserved for proposals the approval timeout rejects; choose another",
                    path.display(),
                    number + 1
                ));
            }
            if tokens.insert(token.to_owned(), name.to_owned()).is_some() {
                return Err(format!(
                    "approval token file {} line {}: the token appears on an earlier line too",
                    path.display(),
                    number + 1
                ));
            }
        }
        if tokens.is_empty() {
            return Err(format!(
                "approval token file {} contains no tokens",
                path.display()
            ));
        }
        Ok(Self(tokens))
    }

    /// Returns the person holding `token`.
    fn person(&self, token: &str) -> Option<&str> {
        // Constant time per token, so timing does not reveal a prefix.
        let mut found = None;
        for (known, name) in &self.0 {
            let equal = known.len() == token.len()
                && known
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0;
            if equal {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[derive(Clone)]
struct ApiState {
    approvals: Approvals,
    tokens: Arc<ApproverTokens>,
}

/// The optional body of an approve or reject request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    comment: String,
}

impl Body {
    /// Reads the body: empty, or a JSON object with an optional `comment`.
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let invalid = |problem: String| {
            format!(
                "invalid request body: {problem}; send nothing, or a JSON object such as {{\"comment\": \"checked the dashboards\"}}"
            )
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|error| invalid(error.to_string()))?;
        if !value.is_object() {
            return Err(invalid("it is not a JSON object".to_owned()));
        }
        serde_json::from_value(value).map_err(|error| invalid(error.to_string()))
    }
}

/// Serves the approval API on `listener` until `shutdown`:
/// `GET /api/v1/pending`, `POST /api/v1/proposals/{id}/approve` and
/// `POST /api/v1/proposals/{id}/reject` (JSON body `{"comment": "..."}`,
/// optional), each with a bearer token from the approval token file.
///
/// # Errors
/// Fails when the server stops with an I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    approvals: Approvals,
    tokens: ApproverTokens,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?address, "approval API listening");
    let app = axum::Router::new()
        .route("/api/v1/pending", get(list_pending))
        .route("/api/v1/proposals/{id}/approve", post(approve))
        .route("/api/v1/proposals/{id}/reject", post(reject))
        .with_state(ApiState {
            approvals,
            tokens: Arc::new(tokens),
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Returns the person holding the request's bearer token, or the 401
/// response.
fn authenticate(state: &ApiState, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let person = token
        .and_then(|token| state.tokens.person(token))
        .map(str::to_owned);
    if person.is_none() {
        tracing::warn!("approval request rejected: missing or invalid bearer token");
    }
    person
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn list_pending(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if authenticate(&state, &headers).is_none() {
        return unauthorized();
    }
    match state.approvals.store.pending_decisions().await {
        Ok(pending) => {
            let items: Vec<serde_json::Value> = pending
                .iter()
                .map(|pending| {
                    let proposal = RemediationEvent::decode(pending.event.as_slice())
                        .ok()
                        .and_then(|event| match event.body {
                            Some(remediation_event::Body::Pending(decision)) => decision.proposal,
                            _ => None,
                        })
                        .unwrap_or_default();
                    json!({
                        "proposal_id": pending.proposal_id,
                        "cluster": pending.cluster,
                        "action": proposal.action,
                        "target": proposal.target.unwrap_or_default().to_string(),
                        "confidence": proposal.confidence,
                        "reasoning": proposal.reasoning,
                        "pending_since": pending.decided_at,
                    })
                })
                .collect();
            Json(json!({"pending": items})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &error_chain(&e)),
    }
}

async fn approve(
    state: State<ApiState>,
    headers: HeaderMap,
    id: UrlPath<String>,
    body: Bytes,
) -> Response {
    settle(state, headers, id, body, true).await
}

async fn reject(
    state: State<ApiState>,
    headers: HeaderMap,
    id: UrlPath<String>,
    body: Bytes,
) -> Response {
    settle(state, headers, id, body, false).await
}

async fn settle(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
    approve: bool,
) -> Response {
    let Some(person) = authenticate(&state, &headers) else {
        return unauthorized();
    };
    let Ok(proposal_id) = Uuid::parse_str(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{id:?} is not a proposal id (a UUID)"),
        );
    };
    let comment = match Body::parse(&body) {
        Ok(body) => body.comment,
        Err(message) => {
            tracing::warn!(%proposal_id, %person, %message, "approval request rejected");
            return error(StatusCode::BAD_REQUEST, &message);
        }
    };
    match state
        .approvals
        .settle(proposal_id, approve, &person, comment.trim())
        .await
    {
        Ok(settled) => Json(json!({
            "proposal_id": proposal_id,
            "verdict": settled_stage(approve).as_str(),
            "by": settled.by,
            "repeated": settled.repeated,
        }))
        .into_response(),
        Err(e @ ApprovalError::Unknown(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ (ApprovalError::AlreadySettled { .. } | ApprovalError::Refused { .. })) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e @ ApprovalError::Unavailable(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApproverTokens;

    fn load(text: &str) -> Result<ApproverTokens, String> {
        let path = std::env::temp_dir().join(format!("steward-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).expect("token file");
        let tokens = ApproverTokens::load(&path);
        let _ = std::fs::remove_file(&path);
        tokens
    }

    #[test]
    fn token_file_skips_a_byte_order_mark() {
        let tokens = load("\u{feff}secret-alice alice\n").expect("valid file");
        assert_eq!(tokens.person("secret-alice"), Some("alice"));
    }

    #[test]
    fn token_file_reserves_the_timeout_name() {
        let error = load("secret-t timeout\n").expect_err("reserved name");
        assert!(
            error.contains("line 1: the name `timeout` is reserved"),
            "{error}"
        );
    }
}
