//! `steward-bench`: benchmarks that report ratios measured in one run.
//!
//! - `storm`: LLM calls that analyze makes for an alert storm, against a
//!   fake LLM; the ratio is calls per alert.
//! - `pool`: throughput of the LLM pool with 1, 2 and 4 endpoints of a fake
//!   LLM with a fixed latency; the ratio is the speed-up over one endpoint.
//! - `model`: latency and tokens per analysis on a real model server.
//!
//! `storm` needs NATS and Postgres, as the tests do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use steward_analyze::llm::ClientSettings;
use steward_analyze::pool::{Pool, PoolSettings};
use steward_analyze::prompt::{Prompt, parse_answer};
use steward_analyze::{LlmApi, target};
use steward_bus::Bus;
use steward_proto::Message;
use steward_telemetry::Metrics;
use steward_testkit::llm::FakeLlm;
use steward_testkit::{TestDatabase, isolated_nats, storm_alerts};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "steward-bench", about = "Benchmarks of Steward's analysis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// LLM calls for an alert storm, with analyze replicas and a fake LLM.
    Storm {
        /// Firing alerts in the storm.
        #[arg(long, default_value_t = 1000)]
        alerts: usize,
        /// Root causes (workloads) the alerts come from.
        #[arg(long, default_value_t = 20)]
        causes: usize,
        /// Analyze replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
    },
    /// Pool throughput with 1, 2 and 4 endpoints of a fake LLM.
    Pool {
        /// Requests per measurement.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Fake LLM latency, in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        /// Requests each endpoint serves at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Guard decision latency over a large action history, beside a plain
    /// indexed lookup of the target's last action.
    Guard {
        /// Rows of action history to generate.
        #[arg(long, default_value_t = 1_000_000)]
        rows: i64,
        /// Decisions to time.
        #[arg(long, default_value_t = 500)]
        decisions: usize,
        /// Time the decisions on the history this benchmark generated
        /// earlier in the database at this URL, instead of generating one;
        /// loading 10 million rows takes about 15 minutes here.
        #[arg(long)]
        history_url: Option<String>,
    },
    /// Latency and tokens per analysis on a real model server.
    Model {
        /// Base URL of an OpenAI-compatible endpoint.
        #[arg(long, default_value = "http://127.0.0.1:18080/v1")]
        url: String,
        /// Model name sent in requests.
        #[arg(long, default_value = "SmolLM2-135M-Instruct")]
        model: String,
        /// Analyses to run, one at a time.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Storm {
            alerts,
            causes,
            replicas,
        } => storm(alerts, causes, replicas).await,
        Command::Pool {
            requests,
            latency_ms,
            concurrency,
        } => pool(requests, Duration::from_millis(latency_ms), concurrency).await,
        Command::Model { url, model, runs } => real_model(&url, &model, runs).await,
        Command::Guard {
            rows,
            decisions,
            history_url,
        } => guard(rows, decisions, history_url).await,
    }
}

async fn storm(alerts: usize, causes: usize, replicas: usize) -> anyhow::Result<()> {
    let llm = FakeLlm::start(Duration::from_millis(100)).await?;
    let database = TestDatabase::create().await;
    let mut config = steward_analyze::Config::try_parse_from(["steward-analyze"])?;
    config.nats = isolated_nats();
    config.database = database.config();
    config.llm.urls = vec![llm.url().to_owned()];
    config.llm.api = LlmApi::Openai;
    config.batch.window = Duration::from_millis(300);
    config.consumer.max_in_flight = 64;
    config.consumer.retry_base_delay = Duration::from_millis(200);
    config.consumer.retry_max_delay = Duration::from_secs(1);
    config.consumer.max_deliver = 50;

    let shutdown = CancellationToken::new();
    for _ in 0..replicas.max(1) {
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        tokio::spawn(steward_analyze::run(
            config.clone(),
            admin,
            shutdown.clone(),
        ));
    }
    let bus = Bus::connect_once(&config.nats, "steward-bench").await?;
    bus.ensure_streams().await?;

    let started = Instant::now();
    for (index, alert) in storm_alerts(alerts, causes).iter().enumerate() {
        bus.publish(
            bus.names().alert(&alert.cluster),
            "alert",
            &format!("storm-{index}"),
            "application/protobuf",
            Bytes::from(alert.encode_to_vec()),
        )
        .await?;
    }
    let pool = database.pool().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let handled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM alert_instances WHERE processed_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await?;
        if handled as usize >= alerts {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the storm was not handled within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let analyses: i64 = sqlx::query_scalar("SELECT count(*) FROM analyses")
        .fetch_one(&pool)
        .await?;
    shutdown.cancel();

    println!(
        "| alerts | root causes | analyze replicas | LLM calls | analyses | calls per alert | wall time |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {alerts} | {causes} | {replicas} | {} | {analyses} | {:.3} | {:.1} s |",
        llm.requests(),
        llm.requests() as f64 / alerts as f64,
        elapsed.as_secs_f64()
    );
    Ok(())
}

async fn pool(requests: usize, latency: Duration, concurrency: usize) -> anyhow::Result<()> {
    let fakes = [
        FakeLlm::start(latency).await?,
        FakeLlm::start(latency).await?,
        FakeLlm::start(latency).await?,
        FakeLlm::start(latency).await?,
    ];
    let alert = storm_alerts(1, 1).remove(0);
    let candidates = target::candidates(&alert.labels);
    let prompt = Arc::new(Prompt::new(std::slice::from_ref(&alert), &candidates, &[]));

    println!(
        "| endpoints | requests | latency per call | concurrency per endpoint | throughput | speed-up over 1 endpoint | ideal |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut base = None;
    for endpoints in [1, 2, 4] {
        let urls: Vec<String> = fakes[..endpoints]
            .iter()
            .map(|fake| fake.url().to_owned())
            .collect();
        let pool = Arc::new(Pool::new(
            &urls,
            client_settings(LlmApi::Openai, "fake"),
            PoolSettings {
                max_concurrency: concurrency,
                attempts: 1,
                breaker_failures: 3,
                breaker_cooldown: Duration::from_secs(30),
                probe_interval: Duration::from_secs(60),
                retry_delay: Duration::from_millis(100),
            },
            Arc::new(Metrics::new()),
        )?);
        let started = Instant::now();
        let calls = (0..requests).map(|_| {
            let pool = pool.clone();
            let prompt = prompt.clone();
            async move { pool.complete(&prompt).await }
        });
        let results = futures::future::join_all(calls).await;
        let elapsed = started.elapsed().as_secs_f64();
        let failed = results.iter().filter(|result| result.is_err()).count();
        anyhow::ensure!(failed == 0, "{failed} requests failed");
        let throughput = requests as f64 / elapsed;
        let base = *base.get_or_insert(throughput);
        println!(
            "| {endpoints} | {requests} | {} ms | {concurrency} | {throughput:.1} req/s | {:.2}x | {endpoints}.00x |",
            latency.as_millis(),
            throughput / base
        );
    }
    Ok(())
}

async fn real_model(url: &str, model: &str, runs: usize) -> anyhow::Result<()> {
    let pool = Pool::new(
        &[url.to_owned()],
        client_settings(LlmApi::Openai, model),
        PoolSettings {
            max_concurrency: 1,
            attempts: 1,
            breaker_failures: 100,
            breaker_cooldown: Duration::from_secs(1),
            probe_interval: Duration::from_secs(600),
            retry_delay: Duration::from_millis(100),
        },
        Arc::new(Metrics::new()),
    )?;
    let alerts = model_alerts();
    let mut latencies = Vec::new();
    let mut prompt_tokens = 0u64;
    let mut completion_tokens = 0u64;
    let mut valid = 0;
    for run in 0..runs {
        let alert = &alerts[run % alerts.len()];
        let candidates = target::candidates(&alert.labels);
        let prompt = Prompt::new(std::slice::from_ref(alert), &candidates, &[]);
        let started = Instant::now();
        let answer = pool
            .complete(&prompt)
            .await
            .context("the model server failed")?;
        latencies.push(started.elapsed().as_secs_f64());
        prompt_tokens += u64::from(answer.completion.usage.prompt_tokens);
        completion_tokens += u64::from(answer.completion.usage.completion_tokens);
        if parse_answer(&answer.completion.content, &candidates).is_ok() {
            valid += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let total: f64 = latencies.iter().sum();
    println!(
        "| model | analyses | valid answers | latency p50 | latency p95 | prompt tokens (mean) | completion tokens (mean) | generated tokens/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {model} | {runs} | {valid} | {:.2} s | {:.2} s | {:.0} | {:.0} | {:.1} |",
        percentile(0.5),
        percentile(0.95),
        prompt_tokens as f64 / runs as f64,
        completion_tokens as f64 / runs as f64,
        completion_tokens as f64 / total
    );
    Ok(())
}

fn client_settings(api: LlmApi, model: &str) -> ClientSettings {
    ClientSettings {
        api,
        model: model.to_owned(),
        api_key: None,
        timeout: Duration::from_secs(120),
        cold_timeout: Duration::from_secs(300),
        max_tokens: 256,
    }
}

/// Alerts of five kinds, as kube-prometheus sends them.
fn model_alerts() -> Vec<steward_proto::v1::AlertEvent> {
    let alert = |pairs: &[(&str, &str)]| steward_proto::v1::AlertEvent {
        cluster: "prod".into(),
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..steward_proto::v1::AlertEvent::default()
    };
    vec![
        alert(&[
            ("alertname", "KubeDeploymentReplicasMismatch"),
            ("namespace", "shop"),
            ("deployment", "checkout"),
        ]),
        alert(&[
            ("alertname", "KubePodCrashLooping"),
            ("namespace", "shop"),
            ("pod", "cart-7d9f8b6c5d-x2x4k"),
        ]),
        alert(&[
            ("alertname", "KubePodNotReady"),
            ("namespace", "payments"),
            ("pod", "ledger-5c8d7f9b4-q8r2t"),
        ]),
        alert(&[("alertname", "KubeNodeNotReady"), ("node", "worker-3")]),
        alert(&[
            ("alertname", "KubePersistentVolumeFillingUp"),
            ("namespace", "data"),
            ("persistentvolumeclaim", "postgres-data-0"),
        ]),
    ]
}

/// Targets the generated history is spread over.
const TARGETS: i64 = 5000;

async fn guard(rows: i64, decisions: usize, history_url: Option<String>) -> anyhow::Result<()> {
    if let Some(url) = history_url {
        let config = steward_config::DatabaseConfig::with_url(&url);
        let store = steward_store::Store::connect_once(&config).await?;
        let pool = store.pool().clone();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM actions")
            .fetch_one(&pool)
            .await?;
        return time_decisions(&store, &pool, rows, None, decisions).await;
    }
    let database = TestDatabase::create().await;
    let store = steward_store::Store::connect_once(&database.config()).await?;
    store.migrate().await?;
    let pool = database.pool().await;

    // History over the last 30 days, spread over TARGETS deployments and
    // four actions; a decision row per action, as the guard writes them.
    let started = Instant::now();
    sqlx::raw_sql(&format!(
        "INSERT INTO decisions (proposal_id, correlation_id, cluster, verdict, reasons, event, decided_at)
         SELECT md5('p' || i)::uuid, md5('c' || i)::uuid, 'prod', 'approved', '{{}}', '',
                now() - (i % 2592000) * interval '1 second'
         FROM generate_series(1, {rows}) AS i;
         INSERT INTO actions (action_id, correlation_id, cluster, namespace, target_kind, target_name,
                              action, parameters, confidence, status, mode, approved_at, finished_at,
                              effective, alert_resolved_at)
         SELECT md5('p' || i)::uuid, md5('c' || i)::uuid, 'prod', 'ns-' || (i % 50), 'deployment',
                'app-' || (i % {TARGETS}),
                (ARRAY['restart_deployment', 'scale_deployment', 'increase_resources', 'delete_pod'])[1 + i % 4],
                jsonb_build_object('replicas', 1 + i % 7), 0.9,
                CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, 'live',
                now() - (i % 2592000) * interval '1 second',
                now() - (i % 2592000) * interval '1 second' + interval '1 minute',
                i % 3 <> 0,
                now() - (i % 2592000) * interval '1 second' + interval '5 minutes'
         FROM generate_series(1, {rows}) AS i;
         ANALYZE decisions; ANALYZE actions;"
    ))
    .execute(&pool)
    .await?;
    let loaded = started.elapsed();
    time_decisions(&store, &pool, rows, Some(loaded), decisions).await
}

/// Times `decisions` guard decisions and plain lookups on the generated
/// history and prints the table row.
async fn time_decisions(
    store: &steward_store::Store,
    pool: &sqlx::PgPool,
    rows: i64,
    loaded: Option<Duration>,
    decisions: usize,
) -> anyhow::Result<()> {
    let settings = steward_store::DetectorSettings::default();
    let mut guard_times = Vec::with_capacity(decisions);
    let mut lookup_times = Vec::with_capacity(decisions);
    for run in 0..decisions {
        let target = (run as i64 * 7919) % TARGETS;
        let key = steward_store::TargetKey {
            cluster: "prod".into(),
            namespace: format!("ns-{}", target % 50),
            kind: "deployment".into(),
            name: format!("app-{target}"),
        };

        // The guard's reads for one decision, in its transaction.
        let started = Instant::now();
        let mut tx = store.begin_decision(key.clone()).await?;
        tx.alert_resolved(uuid::Uuid::new_v4()).await?;
        tx.latest_action_within("scale_deployment", Duration::from_secs(300))
            .await?;
        let candidate = steward_store::Candidate {
            action: "scale_deployment",
            replicas: Some(4),
        };
        tx.findings(&candidate, &settings).await?;
        tx.approvals_within(Duration::from_secs(3600), None).await?;
        tx.approvals_within(Duration::from_secs(3600), Some(&key.namespace))
            .await?;
        drop(tx);
        guard_times.push(started.elapsed().as_secs_f64() * 1000.0);

        // A plain indexed lookup of the target's last action.
        let started = Instant::now();
        let _: Option<uuid::Uuid> = sqlx::query_scalar(
            "SELECT action_id FROM actions
             WHERE cluster = $1 AND namespace = $2 AND target_kind = $3 AND target_name = $4
             ORDER BY approved_at DESC LIMIT 1",
        )
        .bind(&key.cluster)
        .bind(&key.namespace)
        .bind(&key.kind)
        .bind(&key.name)
        .fetch_optional(pool)
        .await?;
        lookup_times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let percentile = |times: &mut Vec<f64>, p: f64| {
        times.sort_by(f64::total_cmp);
        times[((times.len() - 1) as f64 * p).round() as usize]
    };
    let guard_p50 = percentile(&mut guard_times, 0.5);
    let guard_p99 = percentile(&mut guard_times, 0.99);
    let lookup_p50 = percentile(&mut lookup_times, 0.5);
    let lookup_p99 = percentile(&mut lookup_times, 0.99);
    println!(
        "| history rows | load time | decisions | guard p50 | guard p99 | indexed lookup p50 | indexed lookup p99 | guard / lookup (p50) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {rows} | {} | {decisions} | {guard_p50:.2} ms | {guard_p99:.2} ms | {lookup_p50:.2} ms | {lookup_p99:.2} ms | {:.1}x |",
        loaded.map_or_else(
            || "reused".to_owned(),
            |l| format!("{:.0} s", l.as_secs_f64())
        ),
        guard_p50 / lookup_p50
    );
    Ok(())
}
