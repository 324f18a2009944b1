//! ingest against a real NATS server: what each webhook body gets, and
//! what reaches the alerts stream.

use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use steward_config::NatsConfig;
use steward_ingest::Config;
use steward_proto::Message;
use steward_proto::v1::{AlertEvent, AlertStatus};
use steward_testkit::{StoredMessage, isolated_nats, stored_messages, wait_for};
use tokio_util::sync::CancellationToken;

/// A running ingest with its own streams.
struct Ingest {
    url: String,
    nats: NatsConfig,
    client: async_nats::Client,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Ingest {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts ingest with extra command-line arguments.
    async fn start_with(args: &[&str]) -> Self {
        let nats = isolated_nats();
        let mut argv = vec!["steward-ingest", "--max-body-bytes", "65536"];
        argv.extend_from_slice(args);
        let mut config = Config::try_parse_from(argv).expect("valid arguments");
        config.nats = nats.clone();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        tokio::spawn(steward_ingest::run(config, listener, shutdown.clone()));

        let http = reqwest::Client::new();
        let readyz = format!("{url}/readyz");
        wait_for(
            "ingest to report ready on /readyz",
            Duration::from_secs(20),
            || {
                let http = http.clone();
                let readyz = readyz.clone();
                async move {
                    let response = http.get(&readyz).send().await.ok()?;
                    response.status().is_success().then_some(())
                }
            },
        )
        .await;

        let client = async_nats::connect(&nats.url)
            .await
            .expect("NATS reachable");
        Self {
            url,
            nats,
            client,
            http,
            shutdown,
        }
    }

    async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_with_token(body, None).await
    }

    async fn post_with_token(
        &self,
        body: impl Into<reqwest::Body>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/api/v1/alerts", self.url))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("ingest answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn stored(&self) -> Vec<StoredMessage> {
        stored_messages(&self.client, &format!("{}_ALERTS", self.nats.stream_prefix)).await
    }

    async fn stored_events(&self) -> Vec<(String, AlertEvent)> {
        self.stored()
            .await
            .into_iter()
            .map(|message| {
                let event =
                    AlertEvent::decode(message.payload.as_slice()).expect("AlertEvent payload");
                (message.subject, event)
            })
            .collect()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn alert(status: &str, labels: Value) -> Value {
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": "test"},
        "startsAt": "2026-12-04T10:00:00.123456789+02:00",
        "endsAt": if status == "resolved" { "2026-12-04T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "0123456789abcdef",
    })
}

fn payload(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "steward",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

fn crashloop() -> Value {
    json!({"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-1"})
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_problem() {
    let ingest = Ingest::start().await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty alerts", payload(vec![]).to_string(), "alerts is empty"),
        ("empty object", "{}".to_owned(), "missing field `version`"),
        ("not JSON", "alerts please".to_owned(), "invalid webhook payload"),
        (
            "version of the wrong type",
            json!({"version": 4, "alerts": []}).to_string(),
            "at version: invalid type: integer `4`, expected a string",
        ),
        (
            "alerts of the wrong type",
            json!({"version": "4", "alerts": "many"}).to_string(),
            "at alerts: invalid type: string",
        ),
        (
            "label value of the wrong type",
            payload(vec![alert("firing", json!({"alertname": "A", "replicas": 3}))]).to_string(),
            "at alerts[0].labels.replicas: invalid type: integer `3`",
        ),
        (
            "unsupported version",
            json!({"version": "3", "alerts": [alert("firing", crashloop())]}).to_string(),
            "unsupported webhook version \"3\"",
        ),
        (
            "missing labels",
            json!({"version": "4", "alerts": [{"status": "firing", "startsAt": "2026-12-04T10:00:00Z"}]}).to_string(),
            "at alerts[0]: missing field `labels`",
        ),
        (
            "missing startsAt",
            json!({"version": "4", "alerts": [{"status": "firing", "labels": crashloop()}]}).to_string(),
            "missing field `startsAt`",
        ),
        (
            "missing alertname",
            payload(vec![alert("firing", json!({"namespace": "shop"}))]).to_string(),
            "alerts[0].labels has no alertname",
        ),
        (
            "unknown status",
            payload(vec![alert("pending", crashloop())]).to_string(),
            "unknown variant `pending`",
        ),
        (
            "start time that is not RFC 3339",
            {
                let mut bad = alert("firing", crashloop());
                bad["startsAt"] = json!("yesterday");
                payload(vec![bad]).to_string()
            },
            "alerts[0].startsAt \"yesterday\" is not an RFC 3339 time",
        ),
    ];

    for (case, body, expected) in cases {
        let (status, answer) = ingest.post(body).await;
        assert_eq!(status, 400, "{case}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{case}: expected {expected:?} in {message:?}"
        );
    }
    assert!(
        ingest.stored().await.is_empty(),
        "a rejected body published something"
    );
}

#[tokio::test]
async fn body_over_the_limit_gets_413() {
    let ingest = Ingest::start().await;
    let mut big = alert("firing", crashloop());
    big["annotations"]["description"] = json!("x".repeat(70_000));

    let (status, answer) = ingest.post(payload(vec![big]).to_string()).await;

    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("65536-byte limit"),
        "{answer}"
    );
    assert!(ingest.stored().await.is_empty());
}

#[tokio::test]
async fn utf8_labels_and_annotations_arrive_unchanged() {
    let ingest = Ingest::start().await;
    let mut unicode = alert(
        "firing",
        json!({"alertname": "KubePodCrashLooping", "namespace": "boutique-é", "pod": "cart-1", "team": "café ☕ 日本語"}),
    );
    unicode["annotations"] = json!({"summary": "Pod \u{003c}cart\u{003e} & ümlaut 🚨"});

    let (status, answer) = ingest.post(payload(vec![unicode]).to_string()).await;

    assert_eq!(status, 200, "{answer}");
    let events = ingest.stored_events().await;
    assert_eq!(events.len(), 1);
    let (_, event) = &events[0];
    assert_eq!(event.labels["team"], "café ☕ 日本語");
    assert_eq!(event.labels["namespace"], "boutique-é");
    assert_eq!(event.annotations["summary"], "Pod <cart> & ümlaut 🚨");
}

#[tokio::test]
async fn alert_without_namespace_is_accepted() {
    let ingest = Ingest::start().await;

    let (status, answer) = ingest
        .post(
            payload(vec![alert(
                "firing",
                json!({"alertname": "NodeDown", "instance": "10.0.0.1:9100"}),
            )])
            .to_string(),
        )
        .await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1);
}

#[tokio::test]
async fn resolved_only_group_publishes_resolved_events() {
    let ingest = Ingest::start().await;

    let (status, answer) = ingest
        .post(payload(vec![alert("resolved", crashloop())]).to_string())
        .await;

    assert_eq!(status, 200, "{answer}");
    let events = ingest.stored_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.status(), AlertStatus::Resolved);
    assert!(
        events[0].1.ends_at.is_some(),
        "a resolved alert keeps its end time"
    );
}

#[tokio::test]
async fn firing_and_resolved_in_one_group_publish_both() {
    let ingest = Ingest::start().await;
    let mut resolved = alert(
        "resolved",
        json!({"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "cart-2"}),
    );
    resolved["fingerprint"] = json!("fedcba9876543210");

    let (status, answer) = ingest
        .post(payload(vec![alert("firing", crashloop()), resolved]).to_string())
        .await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    let statuses: Vec<AlertStatus> = ingest
        .stored_events()
        .await
        .iter()
        .map(|(_, e)| e.status())
        .collect();
    assert_eq!(statuses, [AlertStatus::Firing, AlertStatus::Resolved]);
}

#[tokio::test]
async fn repeated_delivery_is_deduplicated() {
    let ingest = Ingest::start().await;
    let body = payload(vec![alert("firing", crashloop())]).to_string();

    let (first, _) = ingest.post(body.clone()).await;
    let (second, answer) = ingest.post(body).await;

    assert_eq!(first, 200);
    assert_eq!(second, 200);
    assert_eq!(answer["accepted"], 0, "{answer}");
    assert_eq!(answer["duplicates"], 1, "{answer}");
    let stored = ingest.stored().await;
    assert_eq!(stored.len(), 1, "the repeated delivery was stored again");
    let message_id = stored[0].message_id.clone().unwrap_or_default();
    assert!(
        message_id.starts_with("alert:") && message_id.ends_with(":firing"),
        "{message_id}"
    );
}

#[tokio::test]
async fn alerts_are_published_per_cluster_label() {
    let ingest = Ingest::start().await;
    let mut labelled = crashloop();
    labelled["cluster"] = json!("eu.prod");

    let (status, _) = ingest
        .post(
            payload(vec![
                alert("firing", labelled),
                alert("firing", json!({"alertname": "Other"})),
            ])
            .to_string(),
        )
        .await;

    assert_eq!(status, 200);
    let subjects: Vec<String> = ingest
        .stored_events()
        .await
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    let prefix = &ingest.nats.subject_prefix;
    assert!(
        subjects.contains(&format!("{prefix}.alerts.eu_prod")),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&format!("{prefix}.alerts.default")),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn wrong_or_missing_token_gets_401() {
    let dir = std::env::temp_dir().join(steward_testkit::unique_name("tokens-"));
    std::fs::write(&dir, "# cluster tokens\nsecret-a prod-eu\nsecret-b\n")
        .expect("write token file");
    let ingest = Ingest::start_with(&["--token-file", dir.to_str().expect("utf-8 path")]).await;
    let body = payload(vec![alert("firing", crashloop())]).to_string();

    let (missing, answer) = ingest.post(body.clone()).await;
    assert_eq!(missing, 401, "{answer}");
    assert_eq!(answer["error"], "missing or invalid bearer token");
    let (wrong, _) = ingest.post_with_token(body.clone(), Some("secret-c")).await;
    assert_eq!(wrong, 401);
    assert!(ingest.stored().await.is_empty());

    let (mapped, _) = ingest.post_with_token(body.clone(), Some("secret-a")).await;
    assert_eq!(mapped, 200);
    let events = ingest.stored_events().await;
    assert_eq!(
        events[0].1.cluster, "prod-eu",
        "a mapped token decides the cluster"
    );

    let _ = std::fs::remove_file(dir);
}

#[tokio::test]
async fn unavailable_stream_gets_503_and_nothing_is_acknowledged() {
    let ingest = Ingest::start().await;
    let jetstream = async_nats::jetstream::new(ingest.client.clone());
    jetstream
        .delete_stream(format!("{}_ALERTS", ingest.nats.stream_prefix))
        .await
        .expect("delete the alerts stream");

    let (status, answer) = ingest
        .post(payload(vec![alert("firing", crashloop())]).to_string())
        .await;

    assert_eq!(status, 503, "{answer}");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("failed to publish 1 of 1 alerts"),
        "{message}"
    );
    assert!(message.contains("retry later"), "{message}");
}

#[tokio::test]
async fn metrics_count_responses_by_status() {
    let ingest = Ingest::start().await;
    ingest.post("{}").await;

    let metrics = ingest
        .http
        .get(format!("{}/metrics", ingest.url))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");

    assert!(
        metrics.contains(r#"steward_ingest_responses_total{code="400"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn health_answers_before_nats_is_reachable() {
    let mut nats = isolated_nats();
    nats.url = format!("nats://127.0.0.1:{}", steward_testkit::free_port());
    let mut config = Config::try_parse_from(["steward-ingest"]).expect("defaults parse");
    config.nats = nats;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    tokio::spawn(steward_ingest::run(config, listener, shutdown.clone()));
    let http = reqwest::Client::new();

    let health = wait_for(
        "ingest to answer /healthz",
        Duration::from_secs(20),
        || async { http.get(format!("{url}/healthz")).send().await.ok() },
    )
    .await;
    let ready = http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("readyz answers");
    let webhook = http
        .post(format!("{url}/api/v1/alerts"))
        .body(payload(vec![alert("firing", crashloop())]).to_string())
        .send()
        .await
        .expect("webhook answers");

    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(
        webhook.status().as_u16(),
        503,
        "Alertmanager must retry, not drop the alert"
    );
    let body: Value = webhook.json().await.expect("JSON error");
    assert_eq!(
        body["error"],
        "ingest is not connected to NATS yet; retry later"
    );
    shutdown.cancel();
}
