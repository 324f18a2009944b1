//! Dead letters: messages a consumer gave up on.

use chrono::{DateTime, Utc};
use steward_bus::{DeadLetter, DeadLetterSink};

use crate::{Store, StoreError};

/// A stored dead letter, for operators.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    /// Row id.
    pub id: i64,
    /// Stream name.
    pub stream: String,
    /// Consumer that gave up.
    pub consumer: String,
    /// Stream sequence of the message.
    pub stream_sequence: i64,
    /// Subject of the message.
    pub subject: String,
    /// Deliveries before it was given up.
    pub deliveries: i64,
    /// The reason it was given up.
    pub reason: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl Store {
    /// Stores a dead letter; a second record of the same message (same
    /// sequence and content) for the same consumer keeps the first.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn insert_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let headers: serde_json::Value = letter
            .headers
            .iter()
            .map(|(name, value)| serde_json::json!([name, value]))
            .collect();
        sqlx::query(
            "INSERT INTO dead_letters
                 (stream, consumer, stream_sequence, subject, deliveries, reason, payload, headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (stream, consumer, stream_sequence, sha256(payload)) DO NOTHING",
        )
        .bind(&letter.stream)
        .bind(&letter.consumer)
        .bind(i64::try_from(letter.stream_sequence).unwrap_or(i64::MAX))
        .bind(&letter.subject)
        .bind(letter.deliveries)
        .bind(&letter.reason)
        .bind(letter.payload.as_ref())
        .bind(headers)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("insert dead letter"))?;
        Ok(())
    }

    /// Returns the most recent dead letters, newest first.
    ///
    /// # Errors
    /// Fails when the database is unreachable.
    pub async fn recent_dead_letters(&self, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        sqlx::query_as(
            "SELECT id, stream, consumer, stream_sequence, subject, deliveries, reason, recorded_at
             FROM dead_letters ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("list dead letters"))
    }
}

impl DeadLetterSink for Store {
    async fn record(&self, letter: &DeadLetter) -> Result<(), String> {
        self.insert_dead_letter(letter)
            .await
            .map_err(|error| steward_telemetry::error_chain(&error))
    }
}
