//! HTTP routing and the verbs on whole objects: get, list, create, replace,
//! patch and delete.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Mutation;
use super::discovery;
use super::eviction;
use super::object::{self, UpdateScope};
use super::patch::{self, PatchError, PatchType};
use super::resources::{self, ResourceKind, Subresource};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{self, Shared, Store};
use super::subresources;

/// Builds the router; every path goes to one handler that parses it.
pub(super) fn router(shared: Shared) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A successful response.
pub(super) enum Reply {
    Json(StatusCode, Value),
    Text(String),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Self::Json(code, body) => (code, axum::Json(body)).into_response(),
            Self::Text(text) => {
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
            }
        }
    }
}

/// The query parameters the server reads.
#[derive(Debug, Default)]
pub(super) struct Params {
    /// `dryRun=All`.
    pub dry_run: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    /// `continue`: `namespace/name` of the last object of the previous page.
    pub continue_after: Option<String>,
    pub watch: bool,
    /// `tailLines` of a pod log request.
    pub tail_lines: Option<usize>,
}

impl Params {
    fn parse(uri: &Uri) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|error| ApiError::bad_request(format!("invalid query string: {error}")))?;
        let mut params = Self::default();
        for (key, value) in pairs {
            match key.as_str() {
                "dryRun" => match value.as_str() {
                    "All" => params.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid dryRun value {other:?}: the only supported value is All"
                        )));
                    }
                },
                "labelSelector" => params.label_selector = Some(value),
                "fieldSelector" => params.field_selector = Some(value),
                "limit" => {
                    params.limit = Some(parse_count(&key, &value)?).filter(|limit| *limit > 0)
                }
                "continue" => params.continue_after = Some(value).filter(|token| !token.is_empty()),
                "watch" => params.watch = matches!(value.as_str(), "true" | "1"),
                "tailLines" => params.tail_lines = Some(parse_count(&key, &value)?),
                _ => {}
            }
        }
        Ok(params)
    }
}

fn parse_count(key: &str, value: &str) -> Result<usize, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid {key} value {value:?}: expected a non-negative integer"
        ))
    })
}

/// One request, parsed.
pub(super) struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub params: Params,
    pub content_type: String,
    /// Whether `Accept` requests `PartialObjectMetadata` instead of whole
    /// objects, as `Api::get_metadata` and `Api::list_metadata` do.
    pub metadata_only: bool,
    pub body: Bytes,
}

impl ApiRequest {
    /// Parses the body as JSON, returning a 400 error when it is not.
    pub(super) fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
        })
    }

    /// Parses an optional JSON body, such as `DeleteOptions`; an empty body
    /// is `Value::Null`.
    pub(super) fn optional_json_body(&self) -> Result<Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        self.json_body()
    }
}

/// An object addressed by a request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target<'a> {
    pub kind: &'static ResourceKind,
    /// Empty for cluster-scoped kinds.
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    pub(super) fn not_found(&self) -> ApiError {
        ApiError::not_found(self.kind, self.name)
    }

    /// Returns a copy of the stored object, or the 404 error.
    pub(super) fn load(&self, store: &Store) -> Result<Value, ApiError> {
        store
            .get(self.kind, self.namespace, self.name)
            .cloned()
            .ok_or_else(|| self.not_found())
    }

    /// Builds the mutation log entry for a write to this object.
    pub(super) fn mutation(
        &self,
        verb: &str,
        subresource: Option<Subresource>,
        dry_run: bool,
        patch_type: Option<PatchType>,
        body: Value,
    ) -> Mutation {
        let resource = match subresource {
            Some(subresource) => format!("{}/{}", self.kind.plural, subresource.path_segment()),
            None => self.kind.plural.to_owned(),
        };
        Mutation {
            verb: verb.to_owned(),
            resource,
            namespace: self.namespace.to_owned(),
            name: self.name.to_owned(),
            dry_run,
            patch_type: patch_type.map(|patch_type| patch_type.content_type().to_owned()),
            body,
        }
    }
}

/// The destination of a request path.
enum Route {
    Version,
    CoreApiVersions,
    ApiGroups,
    ResourceList {
        group: String,
        version: String,
    },
    Collection {
        kind: &'static ResourceKind,
        namespace: Option<String>,
    },
    Object {
        kind: &'static ResourceKind,
        namespace: String,
        name: String,
        subresource: Option<Subresource>,
    },
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let accept = header_text(header::ACCEPT);
    let content_type = header_text(header::CONTENT_TYPE);

    let (outcome, latency) = {
        let mut store = shared.lock();
        let latency = store.latency();
        let outcome = match store.take_injected_failure() {
            Some(code) => Err(ApiError::injected(code)),
            None => Params::parse(&uri).and_then(|params| {
                let request = ApiRequest {
                    method: method.clone(),
                    path: uri.path().to_owned(),
                    params,
                    content_type,
                    metadata_only: accept.contains("as=PartialObjectMetadata"),
                    body,
                };
                serve(&mut store, &request)
            }),
        };
        (outcome, latency)
    };
    // The request has taken effect; a client that dies during this delay
    // has changed the cluster without seeing the answer.
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    match outcome {
        Ok(reply) => {
            let response = reply.into_response();
            let status = response.status().as_u16();
            tracing::debug!(%method, %uri, status, "fake Kubernetes API request served");
            response
        }
        Err(error) => {
            tracing::debug!(
                %method,
                %uri,
                status = error.code.as_u16(),
                reason = error.reason,
                message = %error.message,
                "fake Kubernetes API request failed"
            );
            error.into_response()
        }
    }
}

fn serve(store: &mut Store, request: &ApiRequest) -> Result<Reply, ApiError> {
    let method = &request.method;
    let not_allowed = || ApiError::method_not_allowed(method.as_str(), &request.path);
    match route(&request.path)? {
        Route::Version if method == Method::GET => {
            Ok(Reply::Json(StatusCode::OK, discovery::version()))
        }
        Route::CoreApiVersions if method == Method::GET => {
            Ok(Reply::Json(StatusCode::OK, discovery::core_api_versions()))
        }
        Route::ApiGroups if method == Method::GET => {
            Ok(Reply::Json(StatusCode::OK, discovery::api_groups()))
        }
        Route::ResourceList { group, version } if method == Method::GET => Ok(Reply::Json(
            StatusCode::OK,
            discovery::resource_list(&group, &version),
        )),
        Route::Version | Route::CoreApiVersions | Route::ApiGroups | Route::ResourceList { .. } => {
            Err(not_allowed())
        }

        Route::Collection { kind, namespace } => match (method.clone(), namespace) {
            // NOTE: watches are not served, so kube-runtime watchers and
            // reflectors cannot run against this server.
            (Method::GET, _) if request.params.watch => {
                Err(ApiError::method_not_allowed("watch", &request.path))
            }
            (Method::GET, namespace) => list(store, request, kind, namespace.as_deref()),
            (Method::POST, Some(namespace)) => create(store, request, kind, &namespace),
            (Method::POST, None) if !kind.is_namespaced() => create(store, request, kind, ""),
            (Method::DELETE, Some(namespace)) => {
                delete_collection(store, request, kind, &namespace)
            }
            (Method::DELETE, None) if !kind.is_namespaced() => {
                delete_collection(store, request, kind, "")
            }
            _ => Err(not_allowed()),
        },

        Route::Object {
            kind,
            namespace,
            name,
            subresource,
        } => {
            let target = Target {
                kind,
                namespace: &namespace,
                name: &name,
            };
            match (method.clone(), subresource) {
                (Method::GET, None | Some(Subresource::Status)) => get(store, request, &target),
                (Method::PUT, None) => replace(store, request, &target, UpdateScope::Object),
                (Method::PUT, Some(Subresource::Status)) => {
                    replace(store, request, &target, UpdateScope::Status)
                }
                (Method::PATCH, None) => patch(store, request, &target, UpdateScope::Object),
                (Method::PATCH, Some(Subresource::Status)) => {
                    patch(store, request, &target, UpdateScope::Status)
                }
                (Method::DELETE, None) => delete(store, request, &target),
                (Method::GET, Some(Subresource::Scale)) => subresources::get_scale(store, &target),
                (Method::PUT, Some(Subresource::Scale)) => {
                    subresources::replace_scale(store, request, &target)
                }
                (Method::PATCH, Some(Subresource::Scale)) => {
                    subresources::patch_scale(store, request, &target)
                }
                (Method::POST, Some(Subresource::Eviction)) => {
                    eviction::evict(store, request, &target)
                }
                (Method::GET, Some(Subresource::Log)) => {
                    subresources::pod_log(store, request, &target)
                }
                _ => Err(not_allowed()),
            }
        }
    }
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => Ok(Route::Version),
        ["api"] => Ok(Route::CoreApiVersions),
        ["apis"] => Ok(Route::ApiGroups),
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => Err(ApiError::unknown_resource()),
    }
}

/// Routes the part of a path after `/api/v1` or `/apis/{group}/{version}`.
fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    if !resources::serves_group_version(group, version) {
        return Err(ApiError::unknown_resource());
    }
    let namespaced_kind =
        |plural: &str| resources::find(group, version, plural).filter(|kind| kind.is_namespaced());
    match rest {
        [] => Ok(Route::ResourceList {
            group: group.to_owned(),
            version: version.to_owned(),
        }),
        // `/namespaces/{name}/status` is a namespace's own subresource, so a
        // third segment leads into the namespace only when it names a kind.
        ["namespaces", namespace, plural, tail @ ..] if namespaced_kind(plural).is_some() => {
            let kind = namespaced_kind(plural).ok_or_else(ApiError::unknown_resource)?;
            object_route(kind, Some(namespace), tail)
        }
        [plural, tail @ ..] => {
            let kind =
                resources::find(group, version, plural).ok_or_else(ApiError::unknown_resource)?;
            object_route(kind, None, tail)
        }
    }
}

fn object_route(
    kind: &'static ResourceKind,
    namespace: Option<&str>,
    tail: &[&str],
) -> Result<Route, ApiError> {
    if namespace.is_none() && kind.is_namespaced() && !tail.is_empty() {
        return Err(ApiError::unknown_resource());
    }
    let namespace = namespace.map(str::to_owned);
    match tail {
        [] => Ok(Route::Collection { kind, namespace }),
        [name, rest @ ..] if rest.len() <= 1 => {
            let subresource = match rest.first() {
                Some(segment) => Some(
                    kind.subresource(segment)
                        .ok_or_else(ApiError::unknown_resource)?,
                ),
                None => None,
            };
            Ok(Route::Object {
                kind,
                namespace: namespace.unwrap_or_default(),
                name: (*name).to_owned(),
                subresource,
            })
        }
        _ => Err(ApiError::unknown_resource()),
    }
}

fn get(store: &Store, request: &ApiRequest, target: &Target<'_>) -> Result<Reply, ApiError> {
    let object = target.load(store)?;
    let object = if request.metadata_only {
        partial_metadata(&object)
    } else {
        object
    };
    Ok(Reply::Json(StatusCode::OK, object))
}

fn list(
    store: &Store,
    request: &ApiRequest,
    kind: &ResourceKind,
    namespace: Option<&str>,
) -> Result<Reply, ApiError> {
    let matching = select(store, request, kind, namespace)?;

    let after = request
        .params
        .continue_after
        .as_deref()
        .map(|token| token.split_once('/').unwrap_or(("", token)));
    let mut page: Vec<&Value> = matching
        .into_iter()
        .filter(|object| {
            after.is_none_or(|after| (store::namespace_of(object), store::name_of(object)) > after)
        })
        .collect();
    let mut list_metadata = json!({ "resourceVersion": store.current_resource_version() });
    if let Some(limit) = request.params.limit.filter(|limit| *limit < page.len()) {
        let remaining = page.len() - limit;
        page.truncate(limit);
        if let Some(last) = page.last() {
            list_metadata["continue"] = Value::from(format!(
                "{}/{}",
                store::namespace_of(last),
                store::name_of(last)
            ));
            list_metadata["remainingItemCount"] = Value::from(remaining);
        }
    }

    let list = if request.metadata_only {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": list_metadata,
            "items": page.into_iter().map(partial_metadata).collect::<Vec<_>>(),
        })
    } else {
        json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind),
            "metadata": list_metadata,
            "items": page,
        })
    };
    Ok(Reply::Json(StatusCode::OK, list))
}

/// Returns the objects of `kind` in `namespace` that match the request's
/// label and field selectors.
fn select<'a>(
    store: &'a Store,
    request: &ApiRequest,
    kind: &'a ResourceKind,
    namespace: Option<&'a str>,
) -> Result<Vec<&'a Value>, ApiError> {
    let labels = match &request.params.label_selector {
        Some(text) => LabelSelector::parse(text).map_err(ApiError::bad_request)?,
        None => LabelSelector::default(),
    };
    let fields = match &request.params.field_selector {
        Some(text) => FieldSelector::parse(text).map_err(ApiError::bad_request)?,
        None => FieldSelector::default(),
    };
    Ok(store
        .list(kind, namespace)
        .filter(|object| labels.matches_object(object) && fields.matches(object))
        .collect())
}

fn partial_metadata(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn create(
    store: &mut Store,
    request: &ApiRequest,
    kind: &'static ResourceKind,
    namespace: &str,
) -> Result<Reply, ApiError> {
    let body = request.json_body()?;
    let object = create_object(store, kind, namespace, body.clone(), request.params.dry_run)?;
    let target = Target {
        kind,
        namespace,
        name: store::name_of(&object),
    };
    let mutation = target.mutation("create", None, request.params.dry_run, None, body);
    store.record(mutation);
    Ok(Reply::Json(StatusCode::CREATED, object))
}

/// Checks, stamps and stores a new object sent through the API.
///
/// NOTE: `.status` is dropped for kinds with a status subresource, as the
/// real API server does; no controller fills it in afterwards. Seed status
/// with `FakeKube::insert` or a write to the status subresource.
fn create_object(
    store: &mut Store,
    kind: &'static ResourceKind,
    namespace: &str,
    body: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let mut object = object::check_create(store, kind, namespace, body)?;
    if kind.has(Subresource::Status) {
        if let Some(root) = object.as_object_mut() {
            root.remove("status");
        }
    }
    object::stamp_new(kind, &mut object);
    Ok(object::commit(store, kind, object, dry_run))
}

fn replace(
    store: &mut Store,
    request: &ApiRequest,
    target: &Target<'_>,
    scope: UpdateScope,
) -> Result<Reply, ApiError> {
    let old = target.load(store)?;
    let body = request.json_body()?;
    let updated = object::check_update(target.kind, &old, body.clone(), scope)?;
    let object = object::commit(store, target.kind, updated, request.params.dry_run);
    let subresource = (scope == UpdateScope::Status).then_some(Subresource::Status);
    store.record(target.mutation("update", subresource, request.params.dry_run, None, body));
    Ok(Reply::Json(StatusCode::OK, object))
}

/// Reads the patch type from `Content-Type` and the patch document from the
/// body.
pub(super) fn read_patch(request: &ApiRequest) -> Result<(PatchType, Value), ApiError> {
    let patch_type = PatchType::from_content_type(&request.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&request.content_type))?;
    let document = request.json_body().map_err(|error| match patch_type {
        // NOTE: apply patches are read as JSON only, which is what kube-rs
        // sends; a YAML document from another client is rejected.
        PatchType::Apply => {
            ApiError::bad_request(format!("{}; send the apply patch as JSON", error.message))
        }
        _ => error,
    })?;
    Ok((patch_type, document))
}

/// Applies a patch document, returning a 400 error for a malformed patch and 422
/// for a JSON patch operation that fails.
pub(super) fn apply_patch(
    target: &Target<'_>,
    patch_type: PatchType,
    object: &mut Value,
    document: &Value,
) -> Result<(), ApiError> {
    patch::apply(patch_type, object, document).map_err(|error| match error {
        PatchError::Malformed(message) => ApiError::bad_request(message),
        PatchError::Failed(message) => ApiError::patch_failed(target.kind, target.name, &message),
    })
}

fn patch(
    store: &mut Store,
    request: &ApiRequest,
    target: &Target<'_>,
    scope: UpdateScope,
) -> Result<Reply, ApiError> {
    let (patch_type, document) = read_patch(request)?;
    let dry_run = request.params.dry_run;
    let subresource = (scope == UpdateScope::Status).then_some(Subresource::Status);

    let Some(old) = store
        .get(target.kind, target.namespace, target.name)
        .cloned()
    else {
        // Server-side apply creates the object when it does not exist.
        if patch_type == PatchType::Apply && scope == UpdateScope::Object {
            let mut body = document.clone();
            if body.is_object() {
                store::metadata_mut(&mut body)
                    .entry("name")
                    .or_insert_with(|| Value::from(target.name));
            }
            let object = create_object(store, target.kind, target.namespace, body, dry_run)?;
            store.record(target.mutation("patch", None, dry_run, Some(patch_type), document));
            return Ok(Reply::Json(StatusCode::CREATED, object));
        }
        return Err(target.not_found());
    };

    let mut patched = old.clone();
    apply_patch(target, patch_type, &mut patched, &document)?;
    let updated = object::check_update(target.kind, &old, patched, scope)?;
    let object = object::commit(store, target.kind, updated, dry_run);
    store.record(target.mutation("patch", subresource, dry_run, Some(patch_type), document));
    Ok(Reply::Json(StatusCode::OK, object))
}

/// Returns whether `DeleteOptions` request a dry run (`dryRun: ["All"]`).
pub(super) fn options_dry_run(options: &Value) -> bool {
    options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|values| values.iter().any(|value| value == "All"))
}

/// Checks `preconditions.uid` and `preconditions.resourceVersion` of
/// `DeleteOptions` against the stored object, returning a 409
/// error on a mismatch.
pub(super) fn check_preconditions(
    target: &Target<'_>,
    object: &Value,
    options: &Value,
) -> Result<(), ApiError> {
    let Some(preconditions) = options.get("preconditions") else {
        return Ok(());
    };
    let checks = [
        ("uid", "UID", store::uid_of(object)),
        (
            "resourceVersion",
            "ResourceVersion",
            store::resource_version_of(object),
        ),
    ];
    for (field, label, actual) in checks {
        let Some(expected) = preconditions.get(field).and_then(Value::as_str) else {
            continue;
        };
        if Some(expected) != actual {
            let actual = actual.unwrap_or_default();
            let detail = format!(
                "Precondition failed: {label} in precondition: {expected}, {label} in object meta: {actual}"
            );
            return Err(ApiError::conflict(target.kind, target.name, &detail));
        }
    }
    Ok(())
}

/// Deletes one object, as [`object::delete`] describes, and returns it.
///
/// NOTE: there is no garbage collection of dependents or of a namespace's
/// contents.
fn delete(store: &mut Store, request: &ApiRequest, target: &Target<'_>) -> Result<Reply, ApiError> {
    let options = request.optional_json_body()?;
    let dry_run = request.params.dry_run || options_dry_run(&options);
    let object = target.load(store)?;
    check_preconditions(target, &object, &options)?;
    let object = object::delete(store, target.kind, object, dry_run);
    store.record(target.mutation("delete", None, dry_run, None, options));
    Ok(Reply::Json(StatusCode::OK, object))
}

/// Deletes the objects that match the request's selectors, logging one
/// `delete` mutation each, and returns the list of deleted objects.
fn delete_collection(
    store: &mut Store,
    request: &ApiRequest,
    kind: &'static ResourceKind,
    namespace: &str,
) -> Result<Reply, ApiError> {
    let options = request.optional_json_body()?;
    let dry_run = request.params.dry_run || options_dry_run(&options);
    let namespace_filter = kind.is_namespaced().then_some(namespace);
    let selected: Vec<Value> = select(store, request, kind, namespace_filter)?
        .into_iter()
        .cloned()
        .collect();
    let mut deleted = Vec::with_capacity(selected.len());
    for object in selected {
        let object = object::delete(store, kind, object, dry_run);
        let target = Target {
            kind,
            namespace: store::namespace_of(&object),
            name: store::name_of(&object),
        };
        store.record(target.mutation("delete", None, dry_run, None, options.clone()));
        deleted.push(object);
    }
    let list = json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind),
        "metadata": { "resourceVersion": store.current_resource_version() },
        "items": deleted,
    });
    Ok(Reply::Json(StatusCode::OK, list))
}
