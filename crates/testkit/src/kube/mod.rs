//! An in-memory Kubernetes API server over HTTP, for tests of code that
//! talks to a cluster through kube-rs.
//!
//! [`FakeKube`] serves the REST paths kube-rs requests (`/api/v1/...` and
//! `/apis/{group}/{version}/...`) on a loopback port and keeps objects as
//! JSON in memory. It is a store, not a cluster: no controllers run, so a
//! Deployment never gets pods and a deleted object is gone at once.
//!
//! What it serves:
//! - the kinds listed in `resources.rs`, namespaced or cluster-scoped;
//! - get, list (label selectors, field selectors on any field path, `limit`
//!   and `continue`), create, replace, delete and delete-collection;
//! - JSON patch (RFC 6902), merge patch (RFC 7386), strategic merge patch
//!   (lists of objects merge on their merge key, usually `name`) and
//!   server-side apply, which is handled as a strategic merge;
//! - `metadata.resourceVersion` from one global counter, with 409 Conflict
//!   for a stale version on replace or patch, `uid`, `creationTimestamp`,
//!   and `generation` bumped when anything outside metadata and status
//!   changes;
//! - `dryRun=All` on every write;
//! - the `status`, `scale` (Deployment, StatefulSet, ReplicaSet),
//!   `eviction` (checked against PodDisruptionBudgets) and `log`
//!   subresources;
//! - discovery documents and `/version`;
//! - errors as `Status` objects, which kube-rs returns as
//!   `kube::Error::Api` with the same code and reason.
//!
//! What it does not serve: watches (rejected with 405), authentication
//! and authorization, admission, field managers, defaulting beyond
//! `spec.replicas`, and validation beyond object names and replica counts.
//! Namespaces need not exist before objects are created in them.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use k8s_openapi::api::apps::v1::Deployment;
//! use kube::api::{Api, Patch, PatchParams};
//! use steward_testkit::kube::FakeKube;
//!
//! let fake = FakeKube::start().await?;
//! fake.insert(serde_json::json!({
//!     "apiVersion": "apps/v1",
//!     "kind": "Deployment",
//!     "metadata": { "name": "web", "namespace": "shop" },
//!     "spec": { "replicas": 2 },
//! }))?;
//! let deployments: Api<Deployment> = Api::namespaced(fake.client(), "shop");
//! let patch = serde_json::json!({ "spec": { "replicas": 3 } });
//! deployments.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await?;
//! assert_eq!(fake.mutations().len(), 1);
//! # Ok(())
//! # }
//! ```

mod discovery;
mod eviction;
mod object;
mod patch;
mod resources;
mod selector;
mod server;
mod status;
mod store;
mod subresources;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use resources::ResourceKind;
use store::Shared;

/// Connect, read and write timeout of [`FakeKube::client`]. The server
/// responds from memory, so any request that takes this long is stuck.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`FakeKube::shutdown`] waits for open connections to finish.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A write the server accepted, in the order received.
///
/// Requests that failed (404, 409, 422, injected failures and so on) are
/// not recorded. Dry runs are, with `dry_run` set.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    /// `create`, `update` (PUT), `patch`, `delete` or `evict`.
    pub verb: String,
    /// The plural, followed by the subresource when there is one:
    /// `deployments`, `deployments/scale`, `pods/eviction`, `pods/status`.
    pub resource: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    /// The object's name; for a create, the name it was given.
    pub name: String,
    /// Whether the request carried `dryRun=All`, so nothing was stored.
    pub dry_run: bool,
    /// The patch media type of a `patch`, such as
    /// `application/merge-patch+json`.
    pub patch_type: Option<String>,
    /// The request body as sent: the object, the patch document, the
    /// `DeleteOptions` (`Value::Null` when none were sent) or the Eviction.
    pub body: Value,
}

/// An in-memory Kubernetes API server listening on `127.0.0.1`.
///
/// Dropping it, or calling [`FakeKube::shutdown`], stops the server.
pub struct FakeKube {
    address: SocketAddr,
    shared: Shared,
    /// Sending on it, or dropping it with the `FakeKube`, stops the server.
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Binds a free loopback port and serves the API in a background task
    /// of the current tokio runtime.
    ///
    /// # Errors
    /// Fails when no loopback port can be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("failed to bind a loopback port for the fake Kubernetes API server")?;
        let address = listener
            .local_addr()
            .context("failed to read the address of the fake Kubernetes API server")?;

        let shared = Shared::default();
        let app = server::router(shared.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let stop = async {
                // An error means the sender was dropped, which also means stop.
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(%address, %error, "fake Kubernetes API server failed");
            }
        });
        tracing::debug!(%address, "fake Kubernetes API server started");

        Ok(Self {
            address,
            shared,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    /// Returns the base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Builds a kube-rs client for this server, with default namespace
    /// `default`, no TLS and no credentials. Requests time out after ten
    /// seconds, so a hung request fails the test instead of stalling it.
    ///
    /// # Panics
    /// Panics when called outside a tokio runtime, as `kube::Client::new` does.
    pub fn client(&self) -> ::kube::Client {
        let url = self
            .url()
            .parse()
            .expect("an http URL with a loopback socket address is a valid URI");
        let mut config = ::kube::Config::new(url);
        // The server speaks plain HTTP. An empty set of root certificates
        // keeps kube-rs from loading the system's CA bundle, which would fail
        // on a machine that has none.
        config.root_cert = Some(Vec::new());
        config.connect_timeout = Some(CLIENT_TIMEOUT);
        config.read_timeout = Some(CLIENT_TIMEOUT);
        config.write_timeout = Some(CLIENT_TIMEOUT);
        ::kube::Client::try_from(config).expect(
            "a config with an http URL, no credentials and no certificates always builds a client",
        )
    }

    /// Writes a kubeconfig file (JSON, which YAML parsers read) with one
    /// cluster, user and context named `steward-fake`, pointing at this
    /// server with namespace `default`, so that a program started with
    /// `KUBECONFIG=path` talks to it.
    ///
    /// NOTE: kube-rs (with rustls) loads the system's CA certificates for
    /// any kubeconfig without a CA, even for a plain HTTP server, so a
    /// client built from this file fails on a machine that has none.
    ///
    /// # Errors
    /// Fails when the file cannot be written.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "steward-fake", "cluster": { "server": self.url() } }],
            "users": [{ "name": "steward-fake", "user": {} }],
            "contexts": [{
                "name": "steward-fake",
                "context": { "cluster": "steward-fake", "user": "steward-fake", "namespace": "default" },
            }],
            "current-context": "steward-fake",
            "preferences": {},
        });
        let text = serde_json::to_string_pretty(&kubeconfig)
            .context("failed to serialize the kubeconfig")?;
        std::fs::write(path, text)
            .with_context(|| format!("failed to write the kubeconfig to {}", path.display()))
    }

    /// Stores `object` as if it had been created, replacing any object of
    /// the same kind, namespace and name, and returns what was stored.
    ///
    /// Unlike a create through the API, the object keeps its `status`,
    /// `uid`, `creationTimestamp` and `generation` when it has them, and
    /// nothing is recorded in [`FakeKube::mutations`]. A namespaced object
    /// without `metadata.namespace` goes to `default`.
    ///
    /// # Errors
    /// Fails when `apiVersion`, `kind` or `metadata.name` is missing, or the
    /// kind is not served.
    pub fn insert(&self, object: Value) -> anyhow::Result<Value> {
        let mut object = object;
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .context("the object has no apiVersion")?;
        let kind_name = object
            .get("kind")
            .and_then(Value::as_str)
            .context("the object has no kind")?;
        let kind = served_kind(api_version, kind_name)?;
        anyhow::ensure!(
            !store::name_of(&object).is_empty(),
            "the {kind_name} has no metadata.name"
        );

        let metadata = store::metadata_mut(&mut object);
        if kind.is_namespaced() {
            let namespace = metadata
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if namespace.is_empty() {
                metadata.insert("namespace".to_owned(), Value::from("default"));
            }
        } else {
            metadata.remove("namespace");
        }
        let generation = metadata.get("generation").cloned();
        object::stamp_new(kind, &mut object);
        if let Some(generation) = generation {
            store::metadata_mut(&mut object).insert("generation".to_owned(), generation);
        }

        let mut store = self.shared.lock();
        Ok(object::commit(&mut store, kind, object, false))
    }

    /// Stores a typed object, such as a `k8s_openapi` Deployment, like
    /// [`FakeKube::insert`], and returns what was stored.
    ///
    /// # Errors
    /// Fails as [`FakeKube::insert`] does, or when the object does not
    /// convert to and from JSON.
    pub fn insert_resource<K>(&self, object: &K) -> anyhow::Result<K>
    where
        K: ::kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let mut value = serde_json::to_value(object).context("failed to serialize the object")?;
        let root = value
            .as_object_mut()
            .context("the object does not serialize to a JSON object")?;
        root.entry("apiVersion")
            .or_insert_with(|| Value::from(K::api_version(&()).into_owned()));
        root.entry("kind")
            .or_insert_with(|| Value::from(K::kind(&()).into_owned()));
        let stored = self.insert(value)?;
        serde_json::from_value(stored).context("failed to read back the stored object")
    }

    /// Returns a copy of a stored object. `api_version` is as in objects
    /// (`v1`, `apps/v1`); `kind_or_plural` is `Deployment` or `deployments`;
    /// `namespace` is ignored for cluster-scoped kinds.
    ///
    /// # Panics
    /// Panics when the kind is not served, which is a mistake in the test.
    pub fn get_json(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let kind = expect_served(api_version, kind_or_plural);
        self.shared.lock().get(kind, namespace, name).cloned()
    }

    /// Returns a copy of a stored object as a typed resource.
    ///
    /// # Panics
    /// Panics when `K` is not served or the stored object does not
    /// deserialize as `K`.
    pub fn get_resource<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: ::kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let object = self.get_json(&K::api_version(&()), &K::kind(&()), namespace, name)?;
        match serde_json::from_value(object) {
            Ok(resource) => Some(resource),
            Err(error) => panic!(
                "the stored {} {namespace}/{name} is not a valid {}: {error}",
                K::kind(&()),
                K::kind(&())
            ),
        }
    }

    /// Returns copies of the stored objects of a kind, ordered by namespace
    /// and name; every namespace when `namespace` is `None`.
    ///
    /// # Panics
    /// Panics when the kind is not served.
    pub fn list_json(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let kind = expect_served(api_version, kind_or_plural);
        self.shared.lock().list(kind, namespace).cloned().collect()
    }

    /// Removes a stored object without recording a mutation, as a
    /// controller outside the code under test would, and returns it.
    ///
    /// # Panics
    /// Panics when the kind is not served.
    pub fn remove(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let kind = expect_served(api_version, kind_or_plural);
        let mut store = self.shared.lock();
        let removed = store.remove(kind, namespace, name);
        if removed.is_some() {
            store.next_resource_version();
        }
        removed
    }

    /// Sets the text that `pods/{name}/log` returns for a pod. The log is
    /// dropped when the pod is deleted.
    pub fn set_pod_log(&self, namespace: &str, name: &str, log: impl Into<String>) {
        self.shared.lock().set_pod_log(namespace, name, log.into());
    }

    /// Returns the writes accepted so far, oldest first.
    pub fn mutations(&self) -> Vec<Mutation> {
        self.shared.lock().mutations().to_vec()
    }

    /// Empties the mutation log, for example after a test's setup.
    pub fn clear_mutations(&self) {
        self.shared.lock().clear_mutations();
    }

    /// Makes the next `count` requests, of any kind, fail with `status_code`
    /// and a `Status` body, without touching the store. Replaces any
    /// failures still pending; a `count` of 0 cancels them.
    ///
    /// # Panics
    /// Panics when `status_code` is not an HTTP error status (400 to 599).
    pub fn fail_next(&self, count: usize, status_code: u16) {
        let code = StatusCode::from_u16(status_code)
            .ok()
            .filter(|code| code.is_client_error() || code.is_server_error())
            .unwrap_or_else(|| {
                panic!("fail_next needs an HTTP error status from 400 to 599, got {status_code}")
            });
        self.shared.lock().inject_failures(count, code);
    }

    /// Delays every response by `latency` after its request took effect,
    /// as a slow or distant API server would; zero turns the delay off.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().set_latency(latency);
    }

    /// Stops accepting connections and waits up to five seconds for open
    /// ones to finish.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let Some(mut server) = self.server.take() else {
            return;
        };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut server)
            .await
            .is_err()
        {
            tracing::warn!(address = %self.address, "fake Kubernetes API server did not stop in time; aborting it");
            server.abort();
        }
    }
}

fn served_kind(api_version: &str, kind_or_plural: &str) -> anyhow::Result<&'static ResourceKind> {
    resources::find_by_api_version(api_version, kind_or_plural).with_context(|| {
        format!("{kind_or_plural} in {api_version} is not served by the fake API server; add it to the table in resources.rs")
    })
}

fn expect_served(api_version: &str, kind_or_plural: &str) -> &'static ResourceKind {
    served_kind(api_version, kind_or_plural).unwrap_or_else(|error| panic!("{error}"))
}
