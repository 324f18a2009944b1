//! Runs the five service binaries as separate processes against the real
//! NATS and Postgres, with a stream prefix and database of their own.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steward_config::NatsConfig;
use steward_testkit::{TestDatabase, free_port, isolated_nats, wait_for};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The services, in pipeline order.
pub const SERVICES: [&str; 5] = ["ingest", "analyze", "guard", "execute", "notify"];

/// Returns the folder holding the workspace's binaries.
///
/// # Panics
/// Panics when the service binaries have not been built.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // Test binaries live in target/<profile>/deps.
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary sits in target/<profile>/deps")
        .to_path_buf();
    for service in SERVICES {
        let binary = dir.join(format!("steward-{service}"));
        assert!(
            binary.exists(),
            "{} is missing; build the services first with `cargo build --workspace --bins`",
            binary.display()
        );
    }
    dir
}

/// One running service process.
struct Process {
    child: Child,
    log: PathBuf,
}

/// The five services, started as processes.
pub struct Stack {
    /// Their NATS configuration.
    pub nats: NatsConfig,
    /// Their database.
    pub database: TestDatabase,
    /// Base URL of ingest.
    pub ingest_url: String,
    /// Lines notify printed, in order.
    pub notifications: Arc<Mutex<Vec<String>>>,
    env: HashMap<&'static str, String>,
    ports: HashMap<&'static str, u16>,
    processes: HashMap<&'static str, Process>,
    log_dir: PathBuf,
    bin: PathBuf,
}

impl Stack {
    /// Starts all five services and waits until each reports ready.
    ///
    /// `extra` adds environment variables for every service, such as
    /// `STEWARD_EXECUTE_MODE`.
    pub async fn start(extra: &[(&'static str, String)]) -> Self {
        let nats = isolated_nats();
        let database = TestDatabase::create().await;
        let log_dir = std::env::temp_dir().join(format!("steward-e2e-{}", nats.subject_prefix));
        std::fs::create_dir_all(&log_dir).expect("log folder");

        let mut env: HashMap<&'static str, String> = HashMap::from([
            ("STEWARD_NATS_URL", nats.url.clone()),
            ("STEWARD_SUBJECT_PREFIX", nats.subject_prefix.clone()),
            ("STEWARD_STREAM_PREFIX", nats.stream_prefix.clone()),
            (
                "STEWARD_STREAM_MAX_BYTES",
                nats.stream_max_bytes.to_string(),
            ),
            ("STEWARD_DATABASE_URL", database.url.clone()),
            // Messages a killed service held come back after the ack wait;
            // keep it short so the tests stay fast.
            ("STEWARD_ACK_WAIT", "3s".to_owned()),
            ("STEWARD_RETRY_BASE_DELAY", "200ms".to_owned()),
            ("STEWARD_RETRY_MAX_DELAY", "2s".to_owned()),
            ("STEWARD_BATCH_WINDOW", "200ms".to_owned()),
            // The in-memory Kubernetes API runs no controllers, so no
            // rollout ever finishes there.
            ("STEWARD_VERIFY_TIMEOUT", "0s".to_owned()),
            ("KUBECONFIG", "/nonexistent/kubeconfig".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]);
        for (name, value) in extra {
            env.insert(name, value.clone());
        }
        let ports: HashMap<&'static str, u16> = SERVICES
            .iter()
            .map(|service| (*service, free_port()))
            .collect();

        let mut stack = Self {
            ingest_url: format!("http://127.0.0.1:{}", ports["ingest"]),
            nats,
            database,
            notifications: Arc::default(),
            env,
            ports,
            processes: HashMap::new(),
            log_dir,
            bin: binary_dir(),
        };
        for service in SERVICES {
            stack.spawn(service);
        }
        for service in SERVICES {
            stack.wait_ready(service).await;
        }
        stack
    }

    fn spawn(&mut self, service: &'static str) {
        let log = self.log_dir.join(format!("{service}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(self.bin.join(format!("steward-{service}")));
        command
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let address = format!("127.0.0.1:{}", self.ports[service]);
        if service == "ingest" {
            command.env("STEWARD_INGEST_LISTEN", address);
        } else {
            command.env("STEWARD_ADMIN_LISTEN", address);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start steward-{service}: {e}"));

        let stdout = child.stdout.take().expect("piped stdout");
        let sink = (service == "notify").then(|| self.notifications.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(sink) = &sink {
                    sink.lock().expect("lock").push(line);
                }
            }
        });
        self.processes.insert(service, Process { child, log });
    }

    async fn wait_ready(&self, service: &'static str) {
        let url = format!("http://127.0.0.1:{}/readyz", self.ports[service]);
        let log = self.processes[service].log.display().to_string();
        wait_for(
            &format!("steward-{service} to become ready (log: {log})"),
            Duration::from_secs(30),
            || async {
                let response = reqwest::get(&url).await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// Kills a service with SIGKILL, as a crash or an OOM kill would.
    pub async fn kill(&mut self, service: &'static str) {
        let mut process = self.processes.remove(service).expect("service is running");
        process.child.start_kill().expect("SIGKILL sent");
        process.child.wait().await.expect("process reaped");
    }

    /// Starts a killed service again and waits until it is ready.
    pub async fn restart(&mut self, service: &'static str) {
        self.spawn(service);
        self.wait_ready(service).await;
    }

    /// Returns the notification lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.notifications.lock().expect("lock").clone()
    }

    /// Waits for a notification line that starts with `stage` and contains
    /// `needle`, and returns it.
    pub async fn wait_for_line(&self, stage: &str, needle: &str) -> String {
        let prefix = format!("{stage}  ");
        wait_for(
            &format!(
                "a {stage} notification containing {needle:?} (logs: {})",
                self.log_dir.display()
            ),
            Duration::from_secs(60),
            || async {
                self.lines()
                    .into_iter()
                    .find(|line| line.starts_with(&prefix) && line.contains(needle))
            },
        )
        .await
    }

    /// Posts a webhook body to ingest and returns the status code.
    pub async fn post_webhook(&self, body: &serde_json::Value) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/api/v1/alerts", self.ingest_url))
            .json(body)
            .send()
            .await
            .expect("ingest answers")
            .status()
            .as_u16()
    }
}
