//! Checks that a target names a valid Kubernetes object.

use steward_proto::v1::TargetKind;

/// Why a target cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The namespace is not a DNS-1123 label.
    #[error(
        "namespace {0:?} is not a valid Kubernetes namespace name (lower-case letters, digits and '-', at most 63)"
    )]
    Namespace(String),
    /// The name is not a DNS-1123 subdomain.
    #[error(
        "name {0:?} is not a valid Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253)"
    )]
    Name(String),
    /// A namespaced kind has no namespace, or a cluster-scoped one has one.
    #[error("a {kind} target {problem}")]
    Scope {
        /// Kind label.
        kind: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Checks that a target's namespace and name are valid Kubernetes names,
/// so that no label text reaches a Kubernetes API path unchecked. The
/// unspecified kind (an alert that names no object) passes with empty
/// fields only.
///
/// # Errors
/// Returns the first invalid part.
pub fn validate_target(target: &steward_proto::v1::Target) -> Result<(), TargetError> {
    let kind = target.kind();
    if kind == TargetKind::Unspecified {
        if target.namespace.is_empty() && target.name.is_empty() {
            return Ok(());
        }
        return Err(TargetError::Scope {
            kind: kind.label(),
            problem: "must not name an object",
        });
    }
    let cluster_scoped = kind == TargetKind::Node;
    match (cluster_scoped, target.namespace.is_empty()) {
        (true, false) => {
            return Err(TargetError::Scope {
                kind: kind.label(),
                problem: "is cluster-scoped and takes no namespace",
            });
        }
        (false, true) => {
            return Err(TargetError::Scope {
                kind: kind.label(),
                problem: "needs a namespace",
            });
        }
        (false, false) if !is_dns_label(&target.namespace) => {
            return Err(TargetError::Namespace(target.namespace.clone()));
        }
        _ => {}
    }
    if !is_dns_subdomain(&target.name) {
        return Err(TargetError::Name(target.name.clone()));
    }
    Ok(())
}

/// Returns whether `value` is a DNS-1123 label: lower-case alphanumerics
/// and `-`, starting and ending with an alphanumeric, at most 63
/// characters (the rule for namespace names).
pub fn is_dns_label(value: &str) -> bool {
    value.len() <= 63 && is_dns_name(value, false)
}

/// Returns whether `value` is a DNS-1123 subdomain: lower-case
/// alphanumerics, `-` and `.`, starting and ending with an alphanumeric,
/// at most 253 characters (the rule for most object names).
pub fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && is_dns_name(value, true)
}

fn is_dns_name(value: &str, dots: bool) -> bool {
    let bytes = value.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first())
        && edge(bytes.last())
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || (dots && *b == b'.')
        })
}
