//! A pool of LLM endpoints serving the same model.
//!
//! Each endpoint has a maximum number of concurrent requests (Ollama's
//! `OLLAMA_NUM_PARALLEL`), a circuit breaker and a health probe. A call goes
//! to the least-loaded endpoint that is healthy and whose circuit is
//! closed; a failure that may pass (a timeout, 503 "server busy", a broken
//! connection) is retried on another endpoint after a short backoff.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steward_telemetry::{LlmRequestLabels, Metrics};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::llm::{ClientSettings, Completion, LlmClient, LlmError};
use crate::prompt::Prompt;

/// How the pool treats its endpoints.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Requests one endpoint serves at once.
    pub max_concurrency: usize,
    /// Endpoints tried per call, counting the first.
    pub attempts: usize,
    /// Consecutive failures that open an endpoint's circuit.
    pub breaker_failures: u32,
    /// Time an open circuit stays open before one trial request.
    pub breaker_cooldown: Duration,
    /// Time between health probes.
    pub probe_interval: Duration,
    /// Delay before the first retry; it doubles per retry.
    pub retry_delay: Duration,
}

/// The endpoint that answered, with its answer.
#[derive(Debug, Clone)]
pub struct PoolAnswer {
    /// The answer.
    pub completion: Completion,
    /// The endpoint's chat URL.
    pub endpoint: String,
}

/// Circuit breaker state of one endpoint.
#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// A trial request after the cooldown is running; others wait for it.
    trial: bool,
}

struct Endpoint {
    client: LlmClient,
    slots: Semaphore,
    in_flight: AtomicUsize,
    /// The last probe succeeded (true until the first probe says otherwise).
    healthy: AtomicBool,
    /// A call has succeeded, so the model is loaded.
    warm: AtomicBool,
    breaker: Mutex<Breaker>,
}

impl Endpoint {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns whether a call may go here now; takes the trial slot of a
    /// circuit whose cooldown has passed.
    fn try_admit(&self, now: Instant) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let mut breaker = self.breaker();
        match breaker.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if breaker.trial => false,
            Some(_) => {
                breaker.trial = true;
                true
            }
        }
    }

    fn record_success(&self) {
        let mut breaker = self.breaker();
        *breaker = Breaker::default();
    }

    fn record_failure(&self, cooldown: Duration, threshold: u32) {
        let mut breaker = self.breaker();
        breaker.consecutive_failures += 1;
        if breaker.trial || breaker.consecutive_failures >= threshold {
            if breaker.open_until.is_none() || breaker.trial {
                tracing::warn!(endpoint = %self.client.endpoint(), failures = breaker.consecutive_failures, ?cooldown, "LLM endpoint circuit opened");
            }
            breaker.open_until = Some(Instant::now() + cooldown);
        }
        breaker.trial = false;
    }

    fn load(&self, max_concurrency: usize) -> f64 {
        self.in_flight.load(Ordering::Relaxed) as f64 / max_concurrency.max(1) as f64
    }
}

/// A pool of endpoints behind one interface.
pub struct Pool {
    endpoints: Vec<Arc<Endpoint>>,
    settings: PoolSettings,
    metrics: Arc<Metrics>,
    /// Rotates the starting point among equally loaded endpoints.
    turn: AtomicUsize,
}

impl Pool {
    /// Creates a pool of `urls`, all serving `client.model`.
    ///
    /// # Errors
    /// Fails when a client cannot be built.
    pub fn new(
        urls: &[String],
        client: ClientSettings,
        settings: PoolSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let endpoints = urls
            .iter()
            .map(|url| {
                let client = LlmClient::new(url, client.clone())?;
                Ok(Arc::new(Endpoint {
                    client,
                    slots: Semaphore::new(settings.max_concurrency.max(1)),
                    in_flight: AtomicUsize::new(0),
                    healthy: AtomicBool::new(true),
                    warm: AtomicBool::new(false),
                    breaker: Mutex::new(Breaker::default()),
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            settings,
            metrics,
            turn: AtomicUsize::new(0),
        })
    }

    /// Returns the requests the pool serves at once.
    pub fn capacity(&self) -> usize {
        self.endpoints.len() * self.settings.max_concurrency.max(1)
    }

    /// Returns the model name.
    pub fn model(&self) -> &str {
        self.endpoints
            .first()
            .map(|endpoint| endpoint.client.model())
            .unwrap_or_default()
    }

    /// Returns the chat URLs of the endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.client.endpoint()).collect()
    }

    /// Warms every endpoint's model, then probes each endpoint every
    /// probe interval until `shutdown`, marking failing ones unhealthy.
    pub fn spawn_probes(self: &Arc<Self>, shutdown: CancellationToken) {
        for endpoint in &self.endpoints {
            let endpoint = endpoint.clone();
            let interval = self.settings.probe_interval;
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                match endpoint.client.warm().await {
                    Ok(()) => endpoint.warm.store(true, Ordering::Relaxed),
                    Err(error) => tracing::warn!(
                        endpoint = %endpoint.client.endpoint(),
                        error = %steward_telemetry::error_chain(&error),
                        "failed to load the model at start; the first call will wait for it"
                    ),
                }
                let mut ticker = tokio::time::interval(interval);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = ticker.tick() => {}
                    }
                    let healthy = endpoint
                        .client
                        .probe(interval.min(Duration::from_secs(5)))
                        .await
                        .is_ok();
                    if endpoint.healthy.swap(healthy, Ordering::Relaxed) != healthy {
                        if healthy {
                            tracing::info!(endpoint = %endpoint.client.endpoint(), "LLM endpoint healthy again");
                        } else {
                            tracing::warn!(endpoint = %endpoint.client.endpoint(), "LLM endpoint failed its health probe");
                        }
                    }
                }
            });
        }
    }

    /// Sends `prompt` to the least-loaded available endpoint, retrying a
    /// failure that may pass on another endpoint.
    ///
    /// # Errors
    /// Returns the last error when every attempt failed, a model-output
    /// error at once (the same prompt gives the same answer), or
    /// [`LlmError::Unavailable`] when no endpoint is available.
    pub async fn complete(&self, prompt: &Prompt) -> Result<PoolAnswer, LlmError> {
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = None;
        for attempt in 0..self.settings.attempts.max(1) {
            if attempt > 0 {
                let delay = self
                    .settings
                    .retry_delay
                    .saturating_mul(1 << (attempt - 1).min(10));
                tokio::time::sleep(delay).await;
            }
            let Some(index) = self.pick(&tried) else {
                break;
            };
            tried.push(index);
            let endpoint = &self.endpoints[index];

            let result = {
                // The semaphore lives as long as the pool and is never closed.
                let _slot = endpoint.slots.acquire().await;
                endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
                let cold = !endpoint.warm.load(Ordering::Relaxed);
                let result = endpoint.client.complete(prompt, cold).await;
                endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
                result
            };

            match result {
                Ok(completion) => {
                    endpoint.record_success();
                    endpoint.warm.store(true, Ordering::Relaxed);
                    self.count(endpoint, "ok");
                    return Ok(PoolAnswer {
                        completion,
                        endpoint: endpoint.client.endpoint(),
                    });
                }
                Err(error) if error.is_retryable() => {
                    endpoint.record_failure(
                        self.settings.breaker_cooldown,
                        self.settings.breaker_failures,
                    );
                    self.count(endpoint, "retryable_error");
                    tracing::warn!(
                        endpoint = %endpoint.client.endpoint(),
                        attempt = attempt + 1,
                        error = %steward_telemetry::error_chain(&error),
                        "LLM call failed; trying another endpoint"
                    );
                    last_error = Some(error);
                }
                Err(error) => {
                    // The server answered; the answer itself is unusable.
                    endpoint.record_success();
                    self.count(endpoint, "bad_answer");
                    return Err(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            LlmError::Unavailable(
                "every endpoint failed its health probe or has an open circuit".to_owned(),
            )
        }))
    }

    /// Returns the least-loaded available endpoint, preferring ones not yet
    /// tried for this call.
    fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let count = self.endpoints.len();
        if count == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % count;
        let mut order: Vec<usize> = (0..count).map(|offset| (start + offset) % count).collect();
        order.sort_by(|a, b| {
            let key = |i: &usize| {
                (
                    tried.contains(i),
                    self.endpoints[*i].load(self.settings.max_concurrency),
                )
            };
            let (a, b) = (key(a), key(b));
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
        });
        order
            .into_iter()
            .find(|index| self.endpoints[*index].try_admit(now))
    }

    fn count(&self, endpoint: &Endpoint, result: &'static str) {
        self.metrics
            .llm_requests
            .get_or_create(&LlmRequestLabels {
                endpoint: endpoint.client.endpoint(),
                result,
            })
            .inc();
    }
}
