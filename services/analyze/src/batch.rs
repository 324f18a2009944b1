//! Groups firing alerts about one workload into one analysis.
//!
//! Alerts that arrive within the batch window and share a key (cluster,
//! namespace and owning workload) wait together; when the window ends, or
//! the batch is full, one analysis covers them all. Each alert's handler
//! waits for the batch's outcome, holding its consumer slot, so memory is
//! bounded by the consume loop's concurrency.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steward_bus::Outcome;
use steward_proto::v1::AlertEvent;
use tokio::sync::{Notify, oneshot};

/// The work done for one batch: analyze the alerts and make the result
/// durable. Its outcome applies to every alert of the batch.
pub type BatchWork = Arc<
    dyn Fn(BatchKey, Vec<AlertEvent>) -> Pin<Box<dyn Future<Output = Outcome> + Send>>
        + Send
        + Sync,
>;

/// What alerts of one batch share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// Cluster name.
    pub cluster: String,
    /// Namespace and owning workload; see [`workload_key`].
    pub workload: String,
}

struct Pending {
    alerts: Vec<AlertEvent>,
    waiters: Vec<oneshot::Sender<Outcome>>,
    full: Arc<Notify>,
}

/// Collects alerts into batches and runs the batch work once per batch.
#[derive(Clone)]
pub struct Batcher {
    pending: Arc<Mutex<HashMap<BatchKey, Pending>>>,
    window: Duration,
    max_alerts: usize,
    work: BatchWork,
}

impl Batcher {
    /// Creates a batcher that waits `window` for more alerts of a key and
    /// runs `work` for at most `max_alerts` alerts at once.
    pub fn new(window: Duration, max_alerts: usize, work: BatchWork) -> Self {
        Self {
            pending: Arc::default(),
            window,
            max_alerts: max_alerts.max(1),
            work,
        }
    }

    /// Adds `alert` to its key's batch and returns the batch's outcome.
    pub async fn submit(&self, key: BatchKey, alert: AlertEvent) -> Outcome {
        let (sender, receiver) = oneshot::channel();
        let started = {
            let mut pending = self.lock();
            match pending.entry(key.clone()) {
                Entry::Occupied(mut entry) => {
                    let batch = entry.get_mut();
                    batch.alerts.push(alert);
                    batch.waiters.push(sender);
                    if batch.alerts.len() >= self.max_alerts {
                        batch.full.notify_one();
                    }
                    None
                }
                Entry::Vacant(entry) => {
                    let full = Arc::new(Notify::new());
                    entry.insert(Pending {
                        alerts: vec![alert],
                        waiters: vec![sender],
                        full: full.clone(),
                    });
                    Some(full)
                }
            }
        };
        if let Some(full) = started {
            let batcher = self.clone();
            tokio::spawn(async move { batcher.run(key, full).await });
        }
        receiver.await.unwrap_or_else(|_| {
            Outcome::Retry("the batch task ended without an outcome".to_owned())
        })
    }

    async fn run(&self, key: BatchKey, full: Arc<Notify>) {
        if self.max_alerts > 1 {
            tokio::select! {
                _ = tokio::time::sleep(self.window) => {}
                _ = full.notified() => {}
            }
        }
        let Some(batch) = self.lock().remove(&key) else {
            return;
        };
        let span = tracing::info_span!(
            "batch",
            cluster = %key.cluster,
            workload = %key.workload,
            lead = batch.alerts.first().map(|alert| alert.correlation_id.as_str()).unwrap_or(""),
            alerts = batch.alerts.len(),
        );
        let outcome = tracing::Instrument::instrument((self.work)(key, batch.alerts), span).await;
        for waiter in batch.waiters {
            // A waiter whose handler was cancelled at shutdown is gone;
            // its message is redelivered.
            let _ = waiter.send(outcome.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BatchKey, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns the namespace and owning workload an alert is about, the key
/// under which alerts share one analysis.
///
/// A `deployment`, `statefulset` or `daemonset` label names the workload.
/// A `pod` label is mapped to its owner by the names controllers give
/// pods: `<deployment>-<replicaset hash>-<5 characters>`,
/// `<statefulset>-<ordinal>`, and `<daemonset>-<5 characters>` (Job pods
/// look the same and share the key of a DaemonSet of their name).
/// NOTE: these are naming conventions, not owner references; a pod named
/// otherwise is its own key. Volumes and nodes are their own keys; an alert
/// naming no object falls back to Alertmanager's group key, then to its
/// fingerprint.
pub fn workload_key(alert: &AlertEvent) -> String {
    let label = |name: &str| {
        alert
            .labels
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let namespace = label("namespace").unwrap_or("");
    for kind in ["deployment", "statefulset", "daemonset"] {
        if let Some(name) = label(kind) {
            return format!("{namespace}/{kind}/{name}");
        }
    }
    if let Some(pod) = label("pod") {
        return format!("{namespace}/{}", pod_owner(pod));
    }
    if let Some(claim) = label("persistentvolumeclaim") {
        return format!("{namespace}/persistentvolumeclaim/{claim}");
    }
    if let Some(node) = label("node") {
        return format!("node/{node}");
    }
    if !alert.group_key.is_empty() {
        return format!("group/{}", alert.group_key);
    }
    format!("alert/{}", alert.fingerprint)
}

fn pod_owner(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    let hashlike = |part: &str, min: usize, max: usize| {
        (min..=max).contains(&part.len())
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let n = parts.len();
    if n >= 3 && hashlike(parts[n - 1], 5, 5) && hashlike(parts[n - 2], 6, 10) {
        return format!("deployment/{}", parts[..n - 2].join("-"));
    }
    if n >= 2 && parts[n - 1].bytes().all(|b| b.is_ascii_digit()) && !parts[n - 1].is_empty() {
        return format!("statefulset/{}", parts[..n - 1].join("-"));
    }
    // DaemonSet pods (and Job pods) end in five random characters; the
    // key is shared with alerts that carry the `daemonset` label.
    if n >= 2 && hashlike(parts[n - 1], 5, 5) {
        return format!("daemonset/{}", parts[..n - 1].join("-"));
    }
    format!("pod/{pod}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn alert(pairs: &[(&str, &str)]) -> AlertEvent {
        AlertEvent {
            labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..AlertEvent::default()
        }
    }

    #[test]
    fn pods_map_to_their_owning_workload() {
        let cases = [
            ("checkout-7d9f8b6c5d-x2x4k", "shop/deployment/checkout"),
            ("postgres-2", "shop/statefulset/postgres"),
            ("fluentd-x7k2p", "shop/daemonset/fluentd"),
            ("standalone", "shop/pod/standalone"),
        ];
        for (pod, expected) in cases {
            assert_eq!(
                workload_key(&alert(&[("namespace", "shop"), ("pod", pod)])),
                expected,
                "{pod}"
            );
        }
    }

    #[test]
    fn deployment_label_and_its_pods_share_a_key() {
        let deployment = alert(&[("namespace", "shop"), ("deployment", "checkout")]);
        let pod = alert(&[("namespace", "shop"), ("pod", "checkout-7d9f8b6c5d-x2x4k")]);
        assert_eq!(workload_key(&deployment), workload_key(&pod));
    }

    #[tokio::test]
    async fn alerts_of_one_key_share_one_run() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let work: BatchWork = Arc::new(move |_, alerts| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                assert_eq!(alerts.len(), 3);
                Outcome::Done
            })
        });
        let batcher = Batcher::new(Duration::from_secs(60), 3, work);
        let key = BatchKey {
            cluster: "c".into(),
            workload: "shop/deployment/checkout".into(),
        };

        // The third alert fills the batch, so nothing waits for the window.
        let outcomes = futures::future::join_all(
            (0..3).map(|_| batcher.submit(key.clone(), AlertEvent::default())),
        )
        .await;

        assert_eq!(outcomes, vec![Outcome::Done; 3]);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
