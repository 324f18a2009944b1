//! The object store behind the fake API server, and the server-managed
//! metadata it stamps on objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::Mutation;
use super::resources::{ResourceKind, Scope, Subresource};

/// The store shared by the server task and the `FakeKube` handle.
#[derive(Clone, Default)]
pub(super) struct Shared(Arc<Mutex<Store>>);

impl Shared {
    /// Locks the store. A panic while it was locked leaves it usable, because
    /// every write replaces a whole object.
    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Identity of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ObjectKey {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    /// Empty for cluster-scoped kinds.
    namespace: String,
    name: String,
}

impl ObjectKey {
    pub(super) fn new(kind: &ResourceKind, namespace: &str, name: &str) -> Self {
        let namespace = match kind.scope {
            Scope::Namespaced => namespace.to_owned(),
            Scope::Cluster => String::new(),
        };
        Self {
            group: kind.group,
            version: kind.version,
            plural: kind.plural,
            namespace,
            name: name.to_owned(),
        }
    }

    fn is_of(&self, kind: &ResourceKind) -> bool {
        self.group == kind.group && self.version == kind.version && self.plural == kind.plural
    }
}

/// Objects, the global resource version, the mutation log, pod logs and
/// injected failures.
#[derive(Default)]
pub(super) struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    /// The last `metadata.resourceVersion` handed out; one counter for all
    /// kinds, as etcd's revision is.
    resource_version: u64,
    mutations: Vec<Mutation>,
    pod_logs: HashMap<(String, String), String>,
    /// Requests still to fail, and the status code to fail them with.
    injected_failures: Option<(usize, StatusCode)>,
    /// Delay added to every response after the request took effect.
    latency: std::time::Duration,
}

impl Store {
    pub(super) fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&ObjectKey::new(kind, namespace, name))
    }

    /// Returns the objects of `kind`, ordered by namespace and then name; all
    /// namespaces when `namespace` is `None`.
    pub(super) fn list<'a>(
        &'a self,
        kind: &'a ResourceKind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |(key, _)| {
                key.is_of(kind) && namespace.is_none_or(|namespace| key.namespace == namespace)
            })
            .map(|(_, object)| object)
    }

    /// Stores `object`, replacing any object with the same key.
    pub(super) fn put(&mut self, kind: &ResourceKind, object: Value) {
        let key = ObjectKey::new(kind, namespace_of(&object), name_of(&object));
        self.objects.insert(key, object);
    }

    pub(super) fn remove(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let removed = self.objects.remove(&ObjectKey::new(kind, namespace, name));
        if removed.is_some() && kind.has(Subresource::Log) {
            self.pod_logs
                .remove(&(namespace.to_owned(), name.to_owned()));
        }
        removed
    }

    /// Hands out the next resource version.
    pub(super) fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Returns the resource version of the latest write, as lists report it.
    pub(super) fn current_resource_version(&self) -> String {
        self.resource_version.to_string()
    }

    pub(super) fn record(&mut self, mutation: Mutation) {
        self.mutations.push(mutation);
    }

    pub(super) fn mutations(&self) -> &[Mutation] {
        &self.mutations
    }

    pub(super) fn clear_mutations(&mut self) {
        self.mutations.clear();
    }

    pub(super) fn set_pod_log(&mut self, namespace: &str, name: &str, log: String) {
        self.pod_logs
            .insert((namespace.to_owned(), name.to_owned()), log);
    }

    pub(super) fn pod_log(&self, namespace: &str, name: &str) -> Option<&str> {
        self.pod_logs
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(String::as_str)
    }

    pub(super) fn set_latency(&mut self, latency: std::time::Duration) {
        self.latency = latency;
    }

    pub(super) fn latency(&self) -> std::time::Duration {
        self.latency
    }

    pub(super) fn inject_failures(&mut self, count: usize, code: StatusCode) {
        self.injected_failures = (count > 0).then_some((count, code));
    }

    /// Consumes one injected failure, if any are left.
    pub(super) fn take_injected_failure(&mut self) -> Option<StatusCode> {
        let (count, code) = self.injected_failures.as_mut()?;
        let code = *code;
        *count -= 1;
        if *count == 0 {
            self.injected_failures = None;
        }
        Some(code)
    }
}

/// Returns `metadata.name`, or `""` when it is missing.
pub(super) fn name_of(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or_default()
}

/// Returns `metadata.namespace`, or `""` when it is missing.
pub(super) fn namespace_of(object: &Value) -> &str {
    meta_str(object, "namespace").unwrap_or_default()
}

/// Returns `metadata.resourceVersion` unless it is missing or empty.
pub(super) fn resource_version_of(object: &Value) -> Option<&str> {
    meta_str(object, "resourceVersion").filter(|version| !version.is_empty())
}

pub(super) fn uid_of(object: &Value) -> Option<&str> {
    meta_str(object, "uid").filter(|uid| !uid.is_empty())
}

pub(super) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Returns `metadata` as a map, creating it when missing. `object` must be
/// a JSON object.
pub(super) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let root = object
        .as_object_mut()
        .expect("callers check that Kubernetes objects are JSON objects");
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata
        .as_object_mut()
        .expect("metadata was made an object above")
}

/// Returns the current time as `metadata.creationTimestamp` has it.
pub(super) fn now_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Returns whether anything outside `metadata` and `status` differs, which
/// is when the API server bumps `metadata.generation`.
pub(super) fn spec_changed(old: &Value, new: &Value) -> bool {
    let without_meta_and_status = |object: &Value| -> Map<String, Value> {
        object
            .as_object()
            .map(|map| {
                map.iter()
                    .filter(|(key, _)| !matches!(key.as_str(), "metadata" | "status"))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    without_meta_and_status(old) != without_meta_and_status(new)
}
