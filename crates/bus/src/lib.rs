//! Steward's NATS JetStream plumbing: the streams and subjects of the bus
//! contract, deduplicated publishing, and the consume loop that turns a
//! handler's outcome into an ack, a delayed redelivery or a dead letter.

mod consume;
mod subjects;

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use steward_config::NatsConfig;
use steward_telemetry::{Metrics, PublishLabels};
use tokio_util::sync::CancellationToken;

pub use steward_telemetry::error_chain;

pub use consume::{
    ConsumerSpec, DeadLetter, DeadLetterSink, Delivery, Handler, Outcome, consume, redelivery_delay,
};
pub use subjects::{Names, Stage, subject_token};

/// Header naming the protobuf message type of a payload.
pub const CONTENT_TYPE: &str = "Content-Type";

/// Content type of every message on the remediation stream.
pub const REMEDIATION_CONTENT_TYPE: &str =
    "application/protobuf; proto=steward.v1.RemediationEvent";

/// Returns the id of the `stage` event derived from `base` (a proposal id,
/// or the correlation id for `resolved`). The same inputs always give the
/// same id, so a retried publish carries the same `Nats-Msg-Id`.
pub fn event_id(base: &uuid::Uuid, stage: Stage) -> uuid::Uuid {
    uuid::Uuid::new_v5(base, stage.as_str().as_bytes())
}

/// Errors of the bus layer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS server could not be reached or refused the connection.
    #[error("failed to connect to NATS at {url}")]
    Connect {
        /// Server URL from the configuration.
        url: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The credentials file could not be read.
    #[error("failed to read NATS credentials file {path}")]
    Credentials {
        /// Path from the configuration.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stream could not be created or inspected.
    #[error("failed to set up stream {stream}")]
    Stream {
        /// Stream name.
        stream: String,
        /// JetStream's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A durable consumer could not be created or looked up.
    #[error("failed to set up durable consumer {consumer} on stream {stream}")]
    Consumer {
        /// Stream name.
        stream: String,
        /// Durable consumer name.
        consumer: String,
        /// JetStream's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A publish was not acknowledged by JetStream.
    #[error("failed to publish to {subject}")]
    Publish {
        /// Subject of the message.
        subject: String,
        /// JetStream's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Start-up was cancelled by a shutdown signal.
    #[error("shutdown requested while connecting to NATS")]
    Cancelled,
}

/// JetStream's acknowledgement of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence of the stored message (of the earlier copy for a
    /// duplicate).
    pub sequence: u64,
    /// The stream already held a message with the same `Nats-Msg-Id`.
    pub duplicate: bool,
}

/// A connection to NATS with JetStream and the names of Steward's streams.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: Names,
    config: NatsConfig,
    metrics: Option<Arc<Metrics>>,
}

impl Bus {
    /// Connects to NATS, retrying with backoff until it succeeds or
    /// `shutdown` is cancelled. Each failed attempt is logged.
    ///
    /// # Errors
    /// Fails when the credentials file is unreadable or shutdown was
    /// requested before a connection was made.
    pub async fn connect(
        config: &NatsConfig,
        client_name: &str,
        shutdown: &CancellationToken,
    ) -> Result<Self, BusError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match Self::connect_once(config, client_name).await {
                Ok(bus) => return Ok(bus),
                Err(error @ BusError::Credentials { .. }) => return Err(error),
                Err(error) => {
                    tracing::warn!(
                        error = %error_chain(&error),
                        retry_in = ?delay,
                        "NATS is not reachable yet"
                    );
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(BusError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Makes one connection attempt.
    ///
    /// # Errors
    /// Fails when the server is unreachable or rejects the connection.
    pub async fn connect_once(config: &NatsConfig, client_name: &str) -> Result<Self, BusError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    other => tracing::info!(event = %other, "NATS client event"),
                }
            });
        if let Some(path) = &config.credentials {
            options =
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| BusError::Credentials {
                        path: path.display().to_string(),
                        source,
                    })?;
        }
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|source| BusError::Connect {
                url: config.url.clone(),
                source,
            })?;
        Ok(Self::from_client(client, config))
    }

    /// Wraps an existing client.
    pub fn from_client(client: async_nats::Client, config: &NatsConfig) -> Self {
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.publish_timeout);
        Self {
            client,
            jetstream,
            names: Names::new(config),
            config: config.clone(),
            metrics: None,
        }
    }

    /// Counts every publish in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Returns the stream and subject names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Returns the underlying NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Returns the JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Returns whether the client is connected now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates the alerts and remediation streams, or updates their limits
    /// to match the configuration. Safe to call from every replica at once.
    ///
    /// The alerts stream has work-queue retention: an alert stays until
    /// analyze acknowledges it, whether or not a consumer exists yet. The
    /// remediation stream keeps events for `remediation_max_age`, so that
    /// consumers added by users can read them. Both reject new messages when
    /// full rather than drop stored ones.
    ///
    /// # Errors
    /// Fails when JetStream is disabled or refuses the configuration.
    pub async fn ensure_streams(&self) -> Result<(), BusError> {
        let alerts = stream::Config {
            name: self.names.alerts_stream(),
            description: Some("Steward: alerts received from Alertmanager".to_owned()),
            subjects: vec![self.names.all_alerts()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_bytes: self.config.stream_max_bytes,
            duplicate_window: self.config.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let remediation = stream::Config {
            name: self.names.remediation_stream(),
            description: Some("Steward: remediation events of every stage".to_owned()),
            subjects: vec![self.names.all_remediation()],
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            max_bytes: self.config.stream_max_bytes,
            max_age: self.config.remediation_max_age,
            duplicate_window: self.config.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        for config in [alerts, remediation] {
            self.ensure_stream(config).await?;
        }
        Ok(())
    }

    async fn ensure_stream(&self, wanted: stream::Config) -> Result<(), BusError> {
        let name = wanted.name.clone();
        let stream_error = |source: Box<dyn std::error::Error + Send + Sync>| BusError::Stream {
            stream: name.clone(),
            source,
        };
        let mut stream = self
            .jetstream
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| stream_error(e.into()))?;
        let info = stream.info().await.map_err(|e| stream_error(e.into()))?;
        let current = &info.config;
        let drifted = current.subjects != wanted.subjects
            || current.max_bytes != wanted.max_bytes
            || current.max_age != wanted.max_age
            || current.duplicate_window != wanted.duplicate_window
            || current.discard != wanted.discard;
        if drifted {
            tracing::info!(stream = %name, "updating stream limits to match the configuration");
            let update = stream::Config {
                // Retention and storage cannot change on an existing stream.
                retention: current.retention,
                storage: current.storage,
                ..wanted
            };
            self.jetstream
                .update_stream(update)
                .await
                .map_err(|e| stream_error(e.into()))?;
        }
        Ok(())
    }

    /// Creates the durable pull consumer described by `spec`, or updates
    /// the existing one to match it, so that N replicas share one consumer
    /// and a changed setting (the ack wait, say) reaches the server.
    ///
    /// # Errors
    /// Fails when the stream does not exist or JetStream refuses the
    /// consumer, for example a change to a field that cannot be edited.
    pub async fn durable_consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, BusError> {
        let consumer_error =
            |source: Box<dyn std::error::Error + Send + Sync>| BusError::Consumer {
                stream: spec.stream.clone(),
                consumer: spec.durable.clone(),
                source,
            };
        let stream = self
            .jetstream
            .get_stream(&spec.stream)
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let config = consumer::pull::Config {
            durable_name: Some(spec.durable.clone()),
            description: Some(spec.description.clone()),
            filter_subject: spec.filter.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: spec.settings.ack_wait,
            // The consume loop enforces max_deliver itself and records a
            // dead letter first; a server-side limit would drop the message
            // with only an advisory.
            max_deliver: -1,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        // Creating a durable that exists with other editable settings
        // updates it; identical settings return it unchanged.
        stream
            .create_consumer(config)
            .await
            .map_err(|e| consumer_error(e.into()))
    }

    /// Publishes an encoded `RemediationEvent` on the subject of `stage`
    /// and `cluster`, with its event id as `Nats-Msg-Id`.
    ///
    /// # Errors
    /// Fails as [`Bus::publish`] does.
    pub async fn publish_event(
        &self,
        stage: Stage,
        cluster: &str,
        event_id: &str,
        payload: Bytes,
    ) -> Result<Published, BusError> {
        let subject = self.names.remediation(stage, cluster);
        self.publish(
            subject,
            stage.as_str(),
            event_id,
            REMEDIATION_CONTENT_TYPE,
            payload,
        )
        .await
    }

    /// Publishes `payload` with a `Nats-Msg-Id`, waits for JetStream's
    /// acknowledgement and reports whether it was a duplicate. `kind`
    /// labels the publish in the metrics (`alert` or a stage).
    ///
    /// # Errors
    /// Fails when JetStream does not acknowledge the message in time or
    /// rejects it (stream full, no stream for the subject).
    pub async fn publish(
        &self,
        subject: String,
        kind: &'static str,
        message_id: &str,
        content_type: &str,
        payload: Bytes,
    ) -> Result<Published, BusError> {
        let result = self
            .publish_uncounted(subject, message_id, content_type, payload)
            .await;
        if let Some(metrics) = &self.metrics {
            let result = match &result {
                Ok(published) if published.duplicate => "duplicate",
                Ok(_) => "stored",
                Err(_) => "error",
            };
            metrics
                .published
                .get_or_create(&PublishLabels { kind, result })
                .inc();
        }
        result
    }

    async fn publish_uncounted(
        &self,
        subject: String,
        message_id: &str,
        content_type: &str,
        payload: Bytes,
    ) -> Result<Published, BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        headers.insert(CONTENT_TYPE, content_type);
        let publish_error = |source: Box<dyn std::error::Error + Send + Sync>| BusError::Publish {
            subject: subject.clone(),
            source,
        };
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| publish_error(e.into()))?
            .await
            .map_err(|e| publish_error(e.into()))?;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_causes() {
        let io = std::io::Error::other("disk full");
        let error = BusError::Credentials {
            path: "/x".into(),
            source: io,
        };
        assert_eq!(
            error_chain(&error),
            "failed to read NATS credentials file /x: disk full"
        );
    }
}
