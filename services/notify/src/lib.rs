//! The notify service: tells people what Steward did and why.
//!
//! It consumes every remediation event and writes one readable line per
//! event to stdout, the default notifier. Delivery is at least once: a
//! redelivered event is printed again.

pub mod config;
pub mod format;

use std::io::Write;
use std::sync::{Arc, Mutex};

use steward_bus::{ConsumerSpec, Handler, Outcome};
use steward_proto::Message;
use steward_proto::v1::RemediationEvent;
use steward_runtime::Service;
use steward_telemetry::{Metrics, StageLabels};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Where notifications go.
pub trait Notifier: Send + Sync + 'static {
    /// Delivers one line.
    ///
    /// # Errors
    /// Fails when the line could not be delivered; the event is retried.
    fn send(&self, line: &str) -> Result<(), String>;
}

/// Writes each line to a writer (stdout by default) and flushes it.
pub struct WriterNotifier {
    out: Mutex<Box<dyn Write + Send>>,
}

impl WriterNotifier {
    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }

    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

impl Notifier for WriterNotifier {
    fn send(&self, line: &str) -> Result<(), String> {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|error| format!("failed to write the notification: {error}"))
    }
}

/// Renders and delivers remediation events.
pub struct EventHandler<N> {
    notifier: N,
    bus_names: steward_bus::Names,
    metrics: Arc<Metrics>,
}

impl<N: Notifier> EventHandler<N> {
    /// Creates the handler.
    pub fn new(notifier: N, bus_names: steward_bus::Names, metrics: Arc<Metrics>) -> Self {
        Self {
            notifier,
            bus_names,
            metrics,
        }
    }
}

impl<N: Notifier> Handler for EventHandler<N> {
    async fn handle(
        &self,
        message: &async_nats::jetstream::Message,
        _delivery: steward_bus::Delivery,
    ) -> Outcome {
        let event = match RemediationEvent::decode(message.payload.as_ref()) {
            Ok(event) => event,
            Err(error) => {
                return Outcome::Reject(format!(
                    "payload is not a steward.v1.RemediationEvent: {error}"
                ));
            }
        };
        let Some(line) = format::render(&event) else {
            return Outcome::Reject("remediation event has no body".to_owned());
        };
        if let Err(error) = self.notifier.send(&line) {
            return Outcome::Retry(error);
        }
        if let Some(stage) = self.bus_names.stage_of(&message.subject) {
            self.metrics
                .notifications
                .get_or_create(&StageLabels {
                    stage: stage.as_str(),
                })
                .inc();
        }
        Outcome::Done
    }
}

/// Runs notify until `shutdown` is cancelled, delivering to `notifier`.
///
/// # Errors
/// Fails when NATS, Postgres or the durable consumer cannot be set up.
pub async fn run<N: Notifier>(
    config: Config,
    notifier: N,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(service) =
        Service::start("notify", &config.nats, &config.database, admin, shutdown).await?
    else {
        return Ok(());
    };

    let spec = ConsumerSpec {
        stream: service.bus.names().remediation_stream(),
        durable: config.consumer_name.clone(),
        filter: service.bus.names().all_remediation(),
        description: "Steward notify: one line per remediation event".to_owned(),
        settings: config.consumer.clone(),
    };
    let handler = Arc::new(EventHandler::new(
        notifier,
        service.bus.names().clone(),
        service.metrics.clone(),
    ));
    service.consume(spec, handler).await
}
