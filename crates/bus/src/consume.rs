//! The consume loop shared by every service that reads a durable consumer.
//!
//! The loop pulls only as many messages as it has free handler slots, runs
//! each handler in its own task while sending in-progress acknowledgements,
//! and acts on the handler's [`Outcome`]: ack, nak with an increasing
//! delay, or record a dead letter and terminate.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use steward_config::ConsumerConfig;
use steward_telemetry::{ConsumerLabels, MessageLabels, Metrics};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Bus, BusError, error_chain};

/// How long one pull request waits for messages before it is renewed.
const PULL_EXPIRY: Duration = Duration::from_secs(5);

/// A handler's verdict on a message, from which the acknowledgement follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The message's effect is durable (published and acknowledged, or
    /// committed): acknowledge it.
    Done,
    /// A failure that may pass (a dependency is down): redeliver after a
    /// delay that grows with each delivery. The text is the error chain.
    Retry(String),
    /// The message can never be handled (it does not decode): record it as
    /// a dead letter and terminate it. The text is the reason.
    Reject(String),
}

/// Where a delivery stands among the attempts a message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// This delivery's number, from 1.
    pub attempt: i64,
    /// This is the last attempt: a [`Outcome::Retry`] now makes the
    /// message a dead letter, so a handler with state to settle (an action
    /// left running) settles it instead.
    pub last: bool,
}

/// Handles one message of a durable consumer.
pub trait Handler: Send + Sync + 'static {
    /// Handles `message` and returns what should happen to it.
    ///
    /// A redelivered message may already have had its effect, so the
    /// handler must be idempotent.
    fn handle(
        &self,
        message: &jetstream::Message,
        delivery: Delivery,
    ) -> impl Future<Output = Outcome> + Send;
}

/// A message that will not be delivered again, with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Stream that stored the message.
    pub stream: String,
    /// Durable consumer that gave up on it.
    pub consumer: String,
    /// Stream sequence of the message.
    pub stream_sequence: u64,
    /// Subject the message was published on.
    pub subject: String,
    /// How many times it was delivered.
    pub deliveries: i64,
    /// The last error, or why it was rejected.
    pub reason: String,
    /// The message body.
    pub payload: Bytes,
    /// The message headers, as name and value pairs.
    pub headers: Vec<(String, String)>,
}

/// Durable storage for dead letters.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Stores `letter`; recording the same stream sequence twice for one
    /// consumer must keep a single record.
    fn record(&self, letter: &DeadLetter) -> impl Future<Output = Result<(), String>> + Send;
}

/// Which consumer to read and how.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Stream name.
    pub stream: String,
    /// Durable consumer name, shared by all replicas of a service.
    pub durable: String,
    /// Subject filter.
    pub filter: String,
    /// Shown by `nats consumer info`.
    pub description: String,
    /// Concurrency, ack wait, retries and drain.
    pub settings: ConsumerConfig,
}

/// Returns the redelivery delay after the `delivered`-th failed delivery:
/// the base delay doubled per earlier delivery, capped at the maximum.
pub fn redelivery_delay(settings: &ConsumerConfig, delivered: i64) -> Duration {
    let doublings = delivered.saturating_sub(1).clamp(0, 20) as u32;
    settings
        .retry_base_delay
        .saturating_mul(1 << doublings)
        .min(settings.retry_max_delay)
}

/// Runs the consume loop until `shutdown` is cancelled, then waits up to
/// the drain timeout for in-flight handlers.
///
/// Pull failures are logged, counted and retried; the loop only returns an
/// error when the consumer cannot be set up at start. `on_ready` runs once
/// the durable consumer exists.
///
/// # Errors
/// Fails when the durable consumer cannot be created.
pub async fn consume<H: Handler, D: DeadLetterSink>(
    bus: &Bus,
    spec: ConsumerSpec,
    handler: Arc<H>,
    dead_letters: Arc<D>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(),
) -> Result<(), BusError> {
    let mut consumer = bus.durable_consumer(&spec).await?;
    on_ready();
    let spec = Arc::new(spec);
    let slots = Arc::new(Semaphore::new(spec.settings.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut pull_failures: u32 = 0;
    let labels = ConsumerLabels {
        consumer: spec.durable.clone(),
    };
    tracing::info!(
        stream = %spec.stream,
        consumer = %spec.durable,
        filter = %spec.filter,
        max_in_flight = spec.settings.max_in_flight,
        "consuming"
    );

    'pull: loop {
        reap(&mut tasks);

        let first_slot = tokio::select! {
            _ = shutdown.cancelled() => break 'pull,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break 'pull,
            },
        };
        let wanted = 1 + slots.available_permits();

        let batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => {
                pull_failures = 0;
                batch
            }
            Err(error) => {
                drop(first_slot);
                pull_failures += 1;
                metrics.pull_errors.get_or_create(&labels).inc();
                let delay = Duration::from_millis(250 * u64::from(pull_failures.min(40)));
                tracing::warn!(
                    consumer = %spec.durable,
                    error = %error_chain(&error),
                    retry_in = ?delay,
                    "pull request failed"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break 'pull,
                    _ = tokio::time::sleep(delay) => {}
                }
                // The consumer may have been deleted; recreating it is
                // idempotent when it still exists.
                match bus.durable_consumer(&spec).await {
                    Ok(recreated) => consumer = recreated,
                    Err(error) => tracing::warn!(
                        consumer = %spec.durable,
                        error = %error_chain(&error),
                        "durable consumer lookup failed"
                    ),
                }
                continue 'pull;
            }
        };

        let mut slot = Some(first_slot);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => {
                    release_buffered(&mut batch).await;
                    break 'pull;
                }
                next = batch.next() => next,
            };
            let message = match next {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    metrics.pull_errors.get_or_create(&labels).inc();
                    tracing::warn!(
                        consumer = %spec.durable,
                        error = %error_chain(error.as_ref()),
                        "pull batch ended with an error"
                    );
                    break;
                }
            };
            let permit = match slot.take() {
                Some(permit) => permit,
                // The batch asked for no more messages than there were free
                // slots, and only this loop takes slots, so one is free.
                None => match slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break 'pull,
                },
            };
            tasks.spawn(process(
                message,
                permit,
                spec.clone(),
                handler.clone(),
                dead_letters.clone(),
                metrics.clone(),
            ));
        }
    }

    drain(tasks, &spec).await;
    Ok(())
}

/// Naks the messages a batch already delivered to the client but that no
/// handler took, so that another replica gets them at once instead of
/// after the ack wait.
async fn release_buffered(batch: &mut async_nats::jetstream::consumer::pull::Batch) {
    use futures::FutureExt;
    while let Some(Some(Ok(message))) = batch.next().now_or_never() {
        if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(error = %error, "failed to release a message at shutdown");
        }
    }
}

fn reap(tasks: &mut JoinSet<()>) {
    while let Some(result) = tasks.try_join_next() {
        if let Err(error) = result {
            tracing::error!(error = %error, "message handler task panicked");
        }
    }
}

async fn drain(mut tasks: JoinSet<()>, spec: &ConsumerSpec) {
    let in_flight = tasks.len();
    if in_flight == 0 {
        tracing::info!(consumer = %spec.durable, "consumer stopped");
        return;
    }
    tracing::info!(consumer = %spec.durable, in_flight, "draining in-flight messages");
    let finished = tokio::time::timeout(spec.settings.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            consumer = %spec.durable,
            unfinished = tasks.len(),
            "drain timed out; unfinished messages will be redelivered"
        );
        tasks.abort_all();
    } else {
        tracing::info!(consumer = %spec.durable, "consumer drained");
    }
}

async fn process<H: Handler, D: DeadLetterSink>(
    message: jetstream::Message,
    _slot: OwnedSemaphorePermit,
    spec: Arc<ConsumerSpec>,
    handler: Arc<H>,
    dead_letters: Arc<D>,
    metrics: Arc<Metrics>,
) {
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(error) => {
            // Only a message that did not come from JetStream lacks the
            // reply subject that carries this metadata.
            tracing::error!(subject = %message.subject, error = %error, "message without JetStream metadata");
            return;
        }
    };
    let span = tracing::info_span!(
        "message",
        consumer = %spec.durable,
        subject = %message.subject,
        stream_sequence,
        delivered,
    );
    let labels = ConsumerLabels {
        consumer: spec.durable.clone(),
    };
    let gauge = metrics.in_flight.get_or_create(&labels).clone();
    gauge.inc();

    async {
        let started = Instant::now();
        let outcome = if delivered > spec.settings.max_deliver {
            // A message that crashed the process on every earlier delivery
            // never got an outcome; stop before handling it again.
            Outcome::Reject(format!(
                "delivered {delivered} times, more than max_deliver {}",
                spec.settings.max_deliver
            ))
        } else {
            let delivery = Delivery {
                attempt: delivered,
                last: delivered >= spec.settings.max_deliver,
            };
            with_progress(
                &message,
                handler.handle(&message, delivery),
                spec.settings.ack_wait / 3,
            )
            .await
        };
        metrics
            .handling_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());

        let (label, result) = match outcome {
            Outcome::Done => ("ack", message.ack().await),
            Outcome::Retry(error) if delivered >= spec.settings.max_deliver => {
                let reason = format!("gave up after {delivered} deliveries: {error}");
                dead_letter(&message, &spec, &*dead_letters, stream_sequence, delivered, reason).await
            }
            Outcome::Retry(error) => {
                let delay = redelivery_delay(&spec.settings, delivered);
                tracing::warn!(error = %error, retry_in = ?delay, "handling failed; message will be redelivered");
                ("retry", message.ack_with(AckKind::Nak(Some(delay))).await)
            }
            Outcome::Reject(reason) => {
                dead_letter(&message, &spec, &*dead_letters, stream_sequence, delivered, reason).await
            }
        };
        metrics
            .messages
            .get_or_create(&MessageLabels {
                consumer: spec.durable.clone(),
                outcome: label,
            })
            .inc();
        if let Err(error) = result {
            tracing::warn!(error = %error, "acknowledgement failed; JetStream will redeliver after ack wait");
        }
    }
    .instrument(span)
    .await;

    gauge.dec();
}

/// Awaits `work` while telling JetStream every `interval` that the message
/// is still being handled, so that a long handler does not outlive AckWait.
async fn with_progress(
    message: &jetstream::Message,
    work: impl Future<Output = Outcome>,
    interval: Duration,
) -> Outcome {
    let interval = interval.max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = ticker.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %error, "in-progress acknowledgement failed");
                }
            }
        }
    }
}

/// Records a dead letter and terminates the message. When recording fails
/// the message is nak'ed instead, so it comes back and nothing is lost.
/// Returns the metric outcome and the acknowledgement's result.
async fn dead_letter<D: DeadLetterSink>(
    message: &jetstream::Message,
    spec: &ConsumerSpec,
    sink: &D,
    stream_sequence: u64,
    delivered: i64,
    reason: String,
) -> (&'static str, Result<(), async_nats::Error>) {
    let headers = message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    let letter = DeadLetter {
        stream: spec.stream.clone(),
        consumer: spec.durable.clone(),
        stream_sequence,
        subject: message.subject.to_string(),
        deliveries: delivered,
        reason,
        payload: message.payload.clone(),
        headers,
    };
    match sink.record(&letter).await {
        Ok(()) => {
            tracing::error!(reason = %letter.reason, "message recorded as a dead letter and terminated");
            ("dead_letter", message.ack_with(AckKind::Term).await)
        }
        Err(error) => {
            let delay = redelivery_delay(&spec.settings, delivered);
            tracing::error!(
                error = %error,
                reason = %letter.reason,
                retry_in = ?delay,
                "failed to record a dead letter; message will be redelivered"
            );
            (
                "dead_letter_failed",
                message.ack_with(AckKind::Nak(Some(delay))).await,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_delay_doubles_up_to_the_cap() {
        let settings = ConsumerConfig {
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(10),
            ..ConsumerConfig::default()
        };
        assert_eq!(redelivery_delay(&settings, 1), Duration::from_secs(1));
        assert_eq!(redelivery_delay(&settings, 2), Duration::from_secs(2));
        assert_eq!(redelivery_delay(&settings, 4), Duration::from_secs(8));
        assert_eq!(redelivery_delay(&settings, 5), Duration::from_secs(10));
        assert_eq!(redelivery_delay(&settings, 1000), Duration::from_secs(10));
    }
}
