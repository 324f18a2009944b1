//! Alertmanager's webhook payload (version "4"), its validation and its
//! conversion into [`AlertEvent`] messages.
//!
//! Unknown fields are accepted, because newer Alertmanagers and other
//! senders (Grafana, vmalert) add their own. Fields Steward needs are
//! required; everything else has a default.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use steward_proto::v1::{AlertEvent, AlertStatus};
use uuid::Uuid;

/// The only webhook payload version Steward accepts.
pub const SUPPORTED_VERSION: &str = "4";

/// Namespace of the UUIDv5 correlation ids.
const CORRELATION_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_4a3c_9b2d_4c7e_8a51_2d9e_f0b3_c417);

/// Longest fingerprint accepted from a sender.
const MAX_FINGERPRINT_LEN: usize = 128;

/// Longest cluster name, in characters: the Kubernetes limit for a DNS
/// subdomain, which keeps subjects far below NATS's control line limit.
pub const MAX_CLUSTER_LEN: usize = 253;

/// Longest annotation value kept, in bytes; longer values are cut, so that
/// one verbose annotation cannot push an alert over the NATS message size.
pub const MAX_ANNOTATION_BYTES: usize = 16 * 1024;

/// The webhook body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Payload format version.
    pub version: String,
    /// Route matchers and group labels identifying the group.
    #[serde(default)]
    pub group_key: String,
    /// Alerts dropped by the receiver's `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// Receiver name, regex-escaped by Alertmanager.
    #[serde(default)]
    pub receiver: String,
    /// Alertmanager's external URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// Every alert of the group at flush time.
    pub alerts: Vec<Alert>,
}

/// One alert of the webhook body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: Status,
    /// Label set; always has `alertname`.
    pub labels: HashMap<String, String>,
    /// Annotations; Alertmanager leaves the key out when there are none.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// RFC 3339 start time.
    pub starts_at: String,
    /// RFC 3339 end time; the zero time while firing.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Link to the rule's expression; empty for alerts sent through the API.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Hash of the label set; computed here when a sender leaves it out.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Status of one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The alert fires.
    Firing,
    /// The alert stopped firing.
    Resolved,
}

/// Why a webhook body was rejected with 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// The body is not valid JSON or does not match the payload shape.
    #[error("invalid webhook payload at {path}: {message}")]
    Malformed {
        /// Path of the offending field (`alerts[0].labels`), or `.`.
        path: String,
        /// What serde reported.
        message: String,
    },
    /// The version is not "4".
    #[error("unsupported webhook version {0:?}; Steward accepts version \"4\"")]
    Version(String),
    /// The group has no alerts.
    #[error("alerts is empty; the payload carries nothing to ingest")]
    NoAlerts,
    /// An alert has no `alertname` label.
    #[error("alerts[{0}].labels has no alertname")]
    NoAlertName(usize),
    /// A time field is not RFC 3339.
    #[error("alerts[{index}].{field} {value:?} is not an RFC 3339 time")]
    Time {
        /// Index of the alert.
        index: usize,
        /// `startsAt` or `endsAt`.
        field: &'static str,
        /// The value received.
        value: String,
    },
    /// The cluster label is too long to be a cluster name.
    #[error(
        "alerts[{index}].labels.cluster has {len} characters; a cluster name has at most {MAX_CLUSTER_LEN}"
    )]
    ClusterName {
        /// Index of the alert.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A fingerprint is empty or too long.
    #[error("alerts[{index}].fingerprint must have 1 to 128 characters, got {len}")]
    Fingerprint {
        /// Index of the alert.
        index: usize,
        /// Its length.
        len: usize,
    },
}

/// Parses and validates a webhook body.
///
/// # Errors
/// Returns the first problem, naming the field.
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    // serde would also build the payload struct from a JSON array.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(PayloadError::Malformed {
            path: ".".to_owned(),
            message: "the body must be a JSON object".to_owned(),
        });
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    let malformed = |path: String, message: String| PayloadError::Malformed { path, message };
    let payload: Payload = serde_path_to_error::deserialize(&mut *deserializer)
        .map_err(|error| malformed(error.path().to_string(), error.inner().to_string()))?;
    deserializer
        .end()
        .map_err(|error| malformed(".".to_owned(), error.to_string()))?;

    if payload.version != SUPPORTED_VERSION {
        return Err(PayloadError::Version(payload.version));
    }
    if payload.alerts.is_empty() {
        return Err(PayloadError::NoAlerts);
    }
    for (index, alert) in payload.alerts.iter().enumerate() {
        if alert
            .labels
            .get("alertname")
            .is_none_or(|name| name.is_empty())
        {
            return Err(PayloadError::NoAlertName(index));
        }
        parse_time(&alert.starts_at).ok_or_else(|| PayloadError::Time {
            index,
            field: "startsAt",
            value: alert.starts_at.clone(),
        })?;
        if let Some(ends_at) = &alert.ends_at {
            parse_time(ends_at).ok_or_else(|| PayloadError::Time {
                index,
                field: "endsAt",
                value: ends_at.to_string(),
            })?;
        }
        if let Some(cluster) = alert.labels.get("cluster")
            && cluster.chars().count() > MAX_CLUSTER_LEN
        {
            return Err(PayloadError::ClusterName {
                index,
                len: cluster.chars().count(),
            });
        }
        if let Some(fingerprint) = &alert.fingerprint
            && (fingerprint.is_empty() || fingerprint.len() > MAX_FINGERPRINT_LEN)
        {
            return Err(PayloadError::Fingerprint {
                index,
                len: fingerprint.len(),
            });
        }
    }
    Ok(payload)
}

fn parse_time(value: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(value).ok()
}

/// Converts the alerts of a validated payload into events, choosing each
/// alert's cluster with `cluster_of`.
pub fn to_events(
    payload: &Payload,
    received_at: DateTime<Utc>,
    cluster_of: impl Fn(&Alert) -> String,
) -> Vec<AlertEvent> {
    payload
        .alerts
        .iter()
        .map(|alert| {
            let cluster = cluster_of(alert);
            // parse() checked both times.
            let starts_at = parse_time(&alert.starts_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(received_at);
            let ends_at = alert
                .ends_at
                .as_deref()
                .and_then(parse_time)
                .map(|t| t.with_timezone(&Utc))
                // Alertmanager sends the zero time for firing alerts.
                .filter(|t| t.timestamp() > 0);
            let labels = clean_map(&alert.labels, usize::MAX);
            // The correlation id comes from the label set itself, never from
            // the sender's fingerprint, so that two different alerts can not
            // pose as one instance. Alertmanager's fingerprint is the same
            // hash, so nothing changes for it.
            let computed = fingerprint(&labels);
            let fingerprint = alert
                .fingerprint
                .as_deref()
                .map(clean_text)
                .unwrap_or_else(|| computed.clone());
            AlertEvent {
                correlation_id: correlation_id(&cluster, &computed, starts_at).to_string(),
                cluster: clean_text(&cluster),
                status: match alert.status {
                    Status::Firing => AlertStatus::Firing,
                    Status::Resolved => AlertStatus::Resolved,
                } as i32,
                fingerprint,
                labels,
                annotations: clean_map(&alert.annotations, MAX_ANNOTATION_BYTES),
                starts_at: Some(timestamp(starts_at)),
                ends_at: ends_at.map(timestamp),
                generator_url: clean_text(&alert.generator_url),
                group_key: clean_text(&payload.group_key),
                receiver: clean_text(&payload.receiver),
                external_url: clean_text(&payload.external_url),
                received_at: Some(timestamp(received_at)),
            }
        })
        .collect()
}

/// Derives the correlation id of an alert instance, so that the firing and
/// the resolved notification of one instance, and every redelivery of
/// either, share it.
pub fn correlation_id(cluster: &str, fingerprint: &str, starts_at: DateTime<Utc>) -> Uuid {
    let key = format!(
        "{cluster}\0{fingerprint}\0{}.{:09}",
        starts_at.timestamp(),
        starts_at.timestamp_subsec_nanos()
    );
    Uuid::new_v5(&CORRELATION_NAMESPACE, key.as_bytes())
}

/// Replaces NUL characters, which Postgres text cannot store, with U+FFFD,
/// so that an alert carrying one is kept instead of failing later.
fn clean_text(value: &str) -> String {
    value.replace('\0', "\u{fffd}")
}

/// Cleans every key and value of a map and cuts values longer than
/// `max_bytes` at a character boundary, marking the cut.
fn clean_map(map: &HashMap<String, String>, max_bytes: usize) -> HashMap<String, String> {
    map.iter()
        .map(|(key, value)| {
            let mut value = clean_text(value);
            if value.len() > max_bytes {
                let mut end = max_bytes;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                value.truncate(end);
                value.push_str(" [truncated by Steward]");
            }
            (clean_text(key), value)
        })
        .collect()
}

/// Computes Alertmanager's fingerprint of a label set: FNV-1a (64 bit)
/// over the label names and values sorted by name, each followed by the
/// byte 0xff, as 16 lower-case hex digits (Prometheus `LabelSet.Fingerprint`).
pub fn fingerprint(labels: &HashMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const SEPARATOR: u8 = 0xff;

    if labels.is_empty() {
        return format!("{OFFSET:016x}");
    }
    let mut names: Vec<&String> = labels.keys().collect();
    names.sort();
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for name in names {
        feed(name.as_bytes());
        feed(&[SEPARATOR]);
        feed(labels[name].as_bytes());
        feed(&[SEPARATOR]);
    }
    format!("{hash:016x}")
}

fn timestamp(time: DateTime<Utc>) -> steward_proto::Timestamp {
    steward_proto::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALERTMANAGER_BODY: &str = r#"{
        "receiver": "steward\\.hook",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-7d9f-x2x"},
            "annotations": {"summary": "Pod is crash looping \u003cnow\u003e"},
            "startsAt": "2026-12-04T10:15:03.123456789+01:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "a1b2c3d4e5f60718"
        }],
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}",
        "truncatedAlerts": 0,
        "notification_reason": "new",
        "routeLabels": {"team": "shop"}
    }"#;

    #[test]
    fn parse_accepts_alertmanager_body_with_unknown_fields() {
        let payload = parse(ALERTMANAGER_BODY.as_bytes()).expect("valid payload");
        assert_eq!(payload.alerts.len(), 1);
        assert_eq!(payload.receiver, "steward\\.hook");
        assert_eq!(
            payload.alerts[0].annotations["summary"],
            "Pod is crash looping <now>"
        );
    }

    #[test]
    fn events_keep_offsets_and_drop_zero_end_time() {
        let payload = parse(ALERTMANAGER_BODY.as_bytes()).expect("valid payload");
        let events = to_events(&payload, Utc::now(), |_| "prod".to_owned());
        let event = &events[0];
        let starts_at = event.starts_at.expect("start time");
        // 10:15:03 at +01:00 is 09:15:03 UTC.
        assert_eq!(starts_at.seconds % 86_400, 9 * 3600 + 15 * 60 + 3);
        assert_eq!(starts_at.nanos, 123_456_789);
        assert_eq!(event.ends_at, None);
        assert_eq!(event.cluster, "prod");
    }

    #[test]
    fn correlation_id_is_shared_by_firing_and_resolved() {
        let start = Utc::now();
        assert_eq!(
            correlation_id("prod", "abc", start),
            correlation_id("prod", "abc", start)
        );
        assert_ne!(
            correlation_id("prod", "abc", start),
            correlation_id("staging", "abc", start)
        );
    }

    #[test]
    fn fingerprint_matches_prometheus() {
        // Prometheus: model.LabelSet{"alertname": "Up"}.Fingerprint() and
        // the empty set's value, the FNV-1a offset basis.
        let labels = HashMap::from([("alertname".to_owned(), "Up".to_owned())]);
        assert_eq!(fingerprint(&labels).len(), 16);
        assert_eq!(fingerprint(&HashMap::new()), "cbf29ce484222325");
        let mut reordered = HashMap::new();
        reordered.insert("b".to_owned(), "2".to_owned());
        reordered.insert("a".to_owned(), "1".to_owned());
        let mut ordered = HashMap::new();
        ordered.insert("a".to_owned(), "1".to_owned());
        ordered.insert("b".to_owned(), "2".to_owned());
        assert_eq!(fingerprint(&reordered), fingerprint(&ordered));
    }

    #[test]
    fn parse_names_the_bad_field() {
        let error =
            parse(br#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":1}}]}"#)
                .expect_err("the call must fail");
        let PayloadError::Malformed { path, .. } = error else {
            panic!("expected a malformed payload, got {error}");
        };
        assert_eq!(path, "alerts[0].labels.alertname");
    }

    #[test]
    fn parse_rejects_trailing_text_and_arrays() {
        let trailing = parse(br#"{"version":"4","alerts":[]} garbage"#).expect_err("trailing text");
        assert!(
            trailing.to_string().contains("trailing characters"),
            "{trailing}"
        );
        let array = parse(br#"["4", "", 0, "", "", []]"#).expect_err("an array");
        assert!(
            array.to_string().contains("must be a JSON object"),
            "{array}"
        );
    }

    #[test]
    fn nul_characters_are_replaced_and_long_annotations_cut() {
        let body = format!(
            r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"alertname":"A\u0000B"}},
            "annotations":{{"description":"{}"}},"startsAt":"2026-01-01T00:00:00Z"}}]}}"#,
            "é".repeat(10_000)
        );
        let payload = parse(body.as_bytes()).expect("valid payload");
        let events = to_events(&payload, Utc::now(), |_| "c".to_owned());
        assert_eq!(events[0].labels["alertname"], "A\u{fffd}B");
        let description = &events[0].annotations["description"];
        assert!(
            description.len() <= MAX_ANNOTATION_BYTES + 32,
            "{}",
            description.len()
        );
        assert!(description.ends_with("[truncated by Steward]"));
    }

    #[test]
    fn correlation_ignores_the_senders_fingerprint() {
        let body = |pod: &str| {
            format!(
                r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"alertname":"A","pod":"{pod}"}},
                "startsAt":"2026-01-01T00:00:00Z","fingerprint":"0000000000000001"}}]}}"#
            )
        };
        let first = to_events(
            &parse(body("a").as_bytes()).expect("valid"),
            Utc::now(),
            |_| "c".into(),
        );
        let second = to_events(
            &parse(body("b").as_bytes()).expect("valid"),
            Utc::now(),
            |_| "c".into(),
        );
        assert_ne!(first[0].correlation_id, second[0].correlation_id);
    }

    #[test]
    fn start_times_after_2262_stay_distinct() {
        let a = DateTime::parse_from_rfc3339("2300-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2400-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_ne!(correlation_id("c", "f", a), correlation_id("c", "f", b));
    }

    #[test]
    fn long_cluster_label_is_rejected() {
        let body = format!(
            r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"alertname":"A","cluster":"{}"}},"startsAt":"2026-01-01T00:00:00Z"}}]}}"#,
            "c".repeat(300)
        );
        let error = parse(body.as_bytes()).expect_err("too long");
        assert_eq!(
            error.to_string(),
            "alerts[0].labels.cluster has 300 characters; a cluster name has at most 253"
        );
    }

    #[test]
    fn parse_rejects_unknown_status() {
        let body = br#"{"version":"4","alerts":[{"status":"pending","labels":{"alertname":"A"},"startsAt":"2026-01-01T00:00:00Z"}]}"#;
        let error = parse(body).expect_err("the call must fail");
        assert!(error.to_string().contains("alerts[0].status"), "{error}");
        assert!(
            error.to_string().contains("unknown variant `pending`"),
            "{error}"
        );
    }
}
