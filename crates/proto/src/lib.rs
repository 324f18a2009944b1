//! Protobuf messages of the `steward.v1` package, generated from `proto/`
//! at build time, plus small helpers that every service needs.

#[allow(
    missing_docs,
    reason = "generated code documents what the .proto files document"
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/steward.v1.rs"));
}

use std::time::{SystemTime, UNIX_EPOCH};

pub use prost::Message;
pub use prost_types::Timestamp;

/// Converts a UTC instant given as nanoseconds since the Unix epoch into a
/// protobuf timestamp.
pub fn timestamp_from_unix_nanos(nanos: i128) -> Timestamp {
    let seconds = nanos.div_euclid(1_000_000_000);
    let subsec = nanos.rem_euclid(1_000_000_000);
    Timestamp {
        seconds: seconds as i64,
        // rem_euclid by 1e9 always fits in i32.
        nanos: subsec as i32,
    }
}

/// Returns the current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
    }
}

impl v1::TargetKind {
    /// Returns the Kubernetes kind name (`Deployment`, `Pod`, ...).
    pub fn kube_kind(self) -> &'static str {
        match self {
            Self::Unspecified => "Unknown",
            Self::Pod => "Pod",
            Self::Deployment => "Deployment",
            Self::Statefulset => "StatefulSet",
            Self::Daemonset => "DaemonSet",
            Self::Node => "Node",
            Self::PersistentVolumeClaim => "PersistentVolumeClaim",
            Self::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Self::Job => "Job",
            Self::Secret => "Secret",
        }
    }

    /// Returns the lower-case resource name that Alertmanager labels and
    /// `kubectl` use (`deployment`, `persistentvolumeclaim`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Self::Unspecified => "unknown",
            Self::Pod => "pod",
            Self::Deployment => "deployment",
            Self::Statefulset => "statefulset",
            Self::Daemonset => "daemonset",
            Self::Node => "node",
            Self::PersistentVolumeClaim => "persistentvolumeclaim",
            Self::HorizontalPodAutoscaler => "horizontalpodautoscaler",
            Self::Job => "job",
            Self::Secret => "secret",
        }
    }

    /// Parses a label produced by [`Self::label`].
    pub fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "pod" => Self::Pod,
            "deployment" => Self::Deployment,
            "statefulset" => Self::Statefulset,
            "daemonset" => Self::Daemonset,
            "node" => Self::Node,
            "persistentvolumeclaim" => Self::PersistentVolumeClaim,
            "horizontalpodautoscaler" => Self::HorizontalPodAutoscaler,
            "job" => Self::Job,
            "secret" => Self::Secret,
            _ => return None,
        })
    }
}

impl v1::TargetKind {
    /// Every kind an action can target, in the order analyzers prefer them
    /// when an alert names several objects.
    pub const OBJECTS: [v1::TargetKind; 9] = [
        v1::TargetKind::PersistentVolumeClaim,
        v1::TargetKind::Pod,
        v1::TargetKind::Job,
        v1::TargetKind::HorizontalPodAutoscaler,
        v1::TargetKind::Deployment,
        v1::TargetKind::Statefulset,
        v1::TargetKind::Daemonset,
        v1::TargetKind::Secret,
        v1::TargetKind::Node,
    ];
}

impl std::fmt::Display for v1::Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind().label();
        if self.namespace.is_empty() {
            write!(f, "{kind}/{}", self.name)
        } else {
            write!(f, "{kind}/{}/{}", self.namespace, self.name)
        }
    }
}

impl std::fmt::Display for v1::ParameterValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use v1::parameter_value::Kind;
        match &self.kind {
            Some(Kind::IntValue(v)) => write!(f, "{v}"),
            Some(Kind::NumberValue(v)) => write!(f, "{v}"),
            Some(Kind::StringValue(v)) => write!(f, "{v:?}"),
            Some(Kind::BoolValue(v)) => write!(f, "{v}"),
            None => f.write_str("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_handles_negative_nanos() {
        let ts = timestamp_from_unix_nanos(-1);
        assert_eq!(ts.seconds, -1);
        assert_eq!(ts.nanos, 999_999_999);
    }

    #[test]
    fn target_kind_labels_round_trip() {
        for kind in [
            v1::TargetKind::Pod,
            v1::TargetKind::Deployment,
            v1::TargetKind::Statefulset,
            v1::TargetKind::Daemonset,
            v1::TargetKind::Node,
            v1::TargetKind::PersistentVolumeClaim,
            v1::TargetKind::HorizontalPodAutoscaler,
            v1::TargetKind::Job,
            v1::TargetKind::Secret,
        ] {
            assert_eq!(v1::TargetKind::from_label(kind.label()), Some(kind));
        }
    }

    #[test]
    fn remediation_event_round_trips() {
        let event = v1::RemediationEvent {
            event_id: "e".into(),
            correlation_id: "c".into(),
            cluster: "prod".into(),
            occurred_at: Some(now()),
            body: Some(v1::remediation_event::Body::Resolved(v1::Resolution {
                alert: Some(v1::AlertEvent::default()),
            })),
        };
        let bytes = event.encode_to_vec();
        let decoded = v1::RemediationEvent::decode(bytes.as_slice()).expect("valid encoding");
        assert_eq!(decoded, event);
    }
}
