//! Error responses as Kubernetes `Status` objects, which kube-rs turns into
//! `kube::Error::Api` carrying the code, reason and message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::ResourceKind;

/// A failed request, sent to the client as a `Status` body.
#[derive(Clone, Debug)]
pub(super) struct ApiError {
    pub code: StatusCode,
    /// The `reason` field, such as `NotFound` or `Conflict`.
    pub reason: &'static str,
    pub message: String,
    /// The `details` field: name, group, kind (the plural) and causes.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_object(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.details = Some(json!({ "name": name, "group": kind.group, "kind": kind.plural }));
        self
    }

    /// Adds one entry to `details.causes`.
    pub(super) fn with_cause(mut self, reason: &str, message: &str, field: Option<&str>) -> Self {
        let details = self.details.get_or_insert_with(|| json!({}));
        let mut cause = json!({ "reason": reason, "message": message });
        if let Some(field) = field {
            cause["field"] = Value::from(field);
        }
        match details.get_mut("causes").and_then(Value::as_array_mut) {
            Some(causes) => causes.push(cause),
            None => details["causes"] = json!([cause]),
        }
        self
    }

    /// Builds the error for a status code given to `FakeKube::fail_next`.
    pub(super) fn injected(code: StatusCode) -> Self {
        Self::new(
            code,
            reason_for(code),
            format!("injected failure with status {}", code.as_u16()),
        )
    }

    pub(super) fn not_found(kind: &ResourceKind, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", kind.group_resource());
        Self::new(StatusCode::NOT_FOUND, "NotFound", message).with_object(kind, name)
    }

    /// Builds the error for a path that names no served resource.
    pub(super) fn unknown_resource() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub(super) fn already_exists(kind: &ResourceKind, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", kind.group_resource());
        Self::new(StatusCode::CONFLICT, "AlreadyExists", message).with_object(kind, name)
    }

    /// Builds the error for a stale `resourceVersion` on an update or patch.
    pub(super) fn modified(kind: &ResourceKind, name: &str) -> Self {
        Self::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(super) fn conflict(kind: &ResourceKind, name: &str, detail: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {detail}",
            kind.group_resource()
        );
        Self::new(StatusCode::CONFLICT, "Conflict", message).with_object(kind, name)
    }

    /// Builds the error for an object that fails validation, naming the field.
    pub(super) fn invalid(kind: &ResourceKind, name: &str, field: &str, problem: &str) -> Self {
        let message = format!(
            "{} \"{name}\" is invalid: {field}: {problem}",
            kind.group_kind()
        );
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            .with_object(kind, name)
            .with_cause("FieldValueInvalid", problem, Some(field))
    }

    /// Builds the error for a JSON patch operation that failed, such as a `test`.
    pub(super) fn patch_failed(kind: &ResourceKind, name: &str, problem: &str) -> Self {
        let message = format!(
            "the JSON patch for {} \"{name}\" failed: {problem}",
            kind.group_resource()
        );
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message).with_object(kind, name)
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(super) fn method_not_allowed(method: &str, path: &str) -> Self {
        let message = format!("{method} is not supported on {path}");
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub(super) fn unsupported_media_type(content_type: &str) -> Self {
        let message = format!(
            "the body of the request was in an unknown format ({content_type:?}); accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, \
             application/apply-patch+yaml"
        );
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    pub(super) fn too_many_requests(kind: &ResourceKind, name: &str, message: &str) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message).with_object(kind, name)
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Returns the `Status` object sent as the body.
    pub(super) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(
            self.code,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let mut response = (self.code, axum::Json(self.to_status())).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Returns the `reason` the API server gives with a status code.
fn reason_for(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}
