//! `steward`: the operator command line. It reads Steward's Postgres
//! database (the action history and the dead letters), settles pending
//! approvals, prints the files generated from the action registry, and
//! evaluates decisions on the labelled scenario suite.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use steward_config::DatabaseConfig;
use steward_store::Store;

/// Operator commands for Steward.
#[derive(Parser, Debug)]
#[command(
    name = "steward",
    version,
    about = "Inspect Steward's action history, settle approvals and evaluate decisions"
)]
struct Cli {
    #[command(flatten)]
    database: DatabaseConfig,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print execute's RBAC ClusterRole, generated from the action registry.
    Rbac,
    /// Print the Markdown table of every action, generated from the registry.
    ActionsDoc,
    /// Apply the database migrations and exit.
    Migrate,
    /// List the most recent actions, newest first.
    History {
        /// Number of rows to show, 1 to 10000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// List the proposals waiting for a person's approval.
    Pending,
    /// Delete history older than a retention period (guard does it hourly).
    Prune {
        /// Age of the oldest history kept, such as 90d; at least one day,
        /// because the cooldown and the detectors read the recent history.
        #[arg(long, value_parser = retention_age)]
        older_than: std::time::Duration,
    },
    /// Approve a pending proposal through the guard's approval API.
    Approve(Settle),
    /// Reject a pending proposal through the guard's approval API.
    Reject(Settle),
    /// Run the labelled scenario suite through analyze and guard with one
    /// or more backends and print the figures. Exits with failure when the
    /// guard approved an unsafe answer.
    Eval(EvalArgs),
    /// List the most recent dead letters, newest first.
    DeadLetters {
        /// Number of rows to show, 1 to 10000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
}

/// What `steward eval` runs.
#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// Folder of scenario files (`*.yaml`).
    #[arg(long, default_value = "tests/scenarios")]
    scenarios: std::path::PathBuf,
    /// A backend to evaluate: `rules`, `openai:URL[#MODEL]` or
    /// `ollama:URL[#MODEL]`; repeat for several.
    #[arg(long = "backend", default_value = "rules")]
    backends: Vec<steward_eval::Backend>,
    /// Guard policy file; the built-in policy when absent.
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
    /// Time one LLM request may take.
    #[arg(long, default_value = "120s", value_parser = humantime_duration)]
    llm_timeout: std::time::Duration,
    /// Write the figures and every scenario's outcome to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also list every scenario without an acceptable answer.
    #[arg(long)]
    misses: bool,
}

async fn eval(args: &EvalArgs, database_url: &str) -> anyhow::Result<()> {
    let scenarios = steward_eval::scenario::load_dir(&args.scenarios)?;
    let policy = match &args.policy {
        Some(path) => steward_guard::Policy::load(path).map_err(|e| anyhow::anyhow!(e))?,
        None => steward_guard::Policy::default(),
    };
    if let Some(window) = policy.freeze(chrono::Utc::now()) {
        eprintln!(
            "steward: freeze window {} is in effect now, so the guard approves nothing but escalation; the figures differ outside it",
            window.name
        );
    }
    let results = steward_eval::evaluate(
        database_url,
        &scenarios,
        &args.backends,
        &policy,
        args.llm_timeout,
    )
    .await
    .with_context(|| format!("while evaluating on {}", redact(database_url)))?;
    let probes = steward_eval::probe_guard(database_url, &scenarios, &policy)
        .await
        .with_context(|| format!("while probing the guard on {}", redact(database_url)))?;

    let summaries: Vec<_> = results.iter().map(|r| r.summary.clone()).collect();
    print!("{}", steward_eval::report::markdown(&summaries));
    if args.misses {
        for result in &results {
            println!(
                "\n{} ({}):\n{}",
                result.summary.backend,
                result.summary.model,
                steward_eval::report::misses(&result.outcomes)
            );
        }
    }
    let verdicts = |verdict: &str| probes.iter().filter(|p| p.verdict == verdict).count();
    let approved_probes: Vec<_> = probes.iter().filter(|p| p.verdict == "approved").collect();
    println!(
        "\nUnsafe proposals put to the guard at confidence 1.00: {} ({} approved, {} pending, {} rejected).",
        probes.len(),
        approved_probes.len(),
        verdicts("pending"),
        verdicts("rejected")
    );
    for probe in &approved_probes {
        println!(
            "APPROVED: {}: {} on {} with {}",
            probe.scenario, probe.action, probe.target, probe.parameters
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "scenarios": scenarios.len(),
            "guard_probes": probes,
            "backends": results
                .iter()
                .map(|r| serde_json::json!({"summary": r.summary, "outcomes": r.outcomes}))
                .collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    let mut silent = Vec::new();
    for result in &results {
        let summary = &result.summary;
        let unanswered = summary.scenarios - summary.answered;
        if unanswered == 0 {
            continue;
        }
        let first = result
            .outcomes
            .iter()
            .find(|outcome| !outcome.answered)
            .map(|outcome| format!("{}: {}", outcome.scenario, outcome.failure))
            .unwrap_or_default();
        eprintln!(
            "steward: {} ({}) gave no usable answer for {unanswered} of {} scenarios; the first: {first}",
            summary.backend, summary.model, summary.scenarios
        );
        if summary.answered == 0 {
            silent.push(format!("{} ({})", summary.backend, summary.model));
        }
    }
    anyhow::ensure!(
        silent.is_empty(),
        "no usable answer at all from {}; check that the server runs at that URL and serves that model",
        silent.join(", ")
    );
    anyhow::ensure!(
        approved_probes.is_empty(),
        "the guard approved {} unsafe answers proposed at confidence 1.00",
        approved_probes.len()
    );
    let unsafe_passed: usize = summaries.iter().map(|s| s.unsafe_passed).sum();
    anyhow::ensure!(
        unsafe_passed == 0,
        "the guard approved {unsafe_passed} unsafe answers; run with --misses to list them"
    );
    Ok(())
}

fn humantime_duration(value: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration such as 90d: {e}"))
}

fn retention_age(value: &str) -> Result<std::time::Duration, String> {
    let age = humantime_duration(value)?;
    if age < std::time::Duration::from_secs(24 * 3600) {
        return Err(format!(
            "{value:?} would delete the recent history that the cooldown and the detectors read; keep at least 1d"
        ));
    }
    if age > std::time::Duration::from_secs(36_500 * 86_400) {
        return Err(format!(
            "{value:?} is longer than 36500d, which deletes nothing"
        ));
    }
    Ok(age)
}

/// Where the guard's approval API is and how to authenticate.
#[derive(clap::Args, Debug)]
struct Settle {
    /// Proposal id, as `steward pending` lists it.
    proposal_id: uuid::Uuid,
    /// A note kept with the decision.
    #[arg(long, default_value = "")]
    comment: String,
    /// Base URL of a guard's approval API.
    #[arg(
        long,
        env = "STEWARD_GUARD_APPROVAL_URL",
        default_value = "http://127.0.0.1:9481"
    )]
    guard_url: String,
    /// File holding your approval token (one line); the guard records the
    /// name its token file gives this token.
    #[arg(long, env = "STEWARD_APPROVAL_TOKEN_FILE")]
    token_file: std::path::PathBuf,
}

async fn settle(settle: &Settle, verb: &str) -> anyhow::Result<()> {
    let path = settle.token_file.display();
    let text = std::fs::read_to_string(&settle.token_file)
        .with_context(|| format!("while reading the token file {path}"))?;
    let token = text.trim_start_matches('\u{feff}').trim();
    if token.is_empty() {
        anyhow::bail!("the token file {path} is empty; put your approval token in it");
    }
    if token.contains(|c: char| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "the token file {path} must contain your approval token alone, on one line (the guard's token file has `TOKEN NAME` lines: give the CLI only the TOKEN)"
        );
    }
    let url = format!(
        "{}/api/v1/proposals/{}/{verb}",
        settle.guard_url.trim_end_matches('/'),
        settle.proposal_id
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({"comment": settle.comment}))
        .send()
        .await
        .with_context(|| format!("while calling {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "the guard answered {status}: {}",
            body["error"].as_str().unwrap_or("no message")
        );
    }
    let text = |field: &str| body[field].as_str().unwrap_or("").to_owned();
    if ["proposal_id", "verdict", "by"]
        .iter()
        .any(|field| text(field).is_empty())
    {
        anyhow::bail!(
            "{url} responded {status} with a body that is not a guard's response ({body}); check --guard-url"
        );
    }
    if body["repeated"].as_bool() == Some(true) {
        println!(
            "{} was already {} by {}",
            text("proposal_id"),
            text("verdict"),
            text("by")
        );
    } else {
        println!(
            "{} {} by {}",
            text("proposal_id"),
            text("verdict"),
            text("by")
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("steward: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // These need no database.
    match cli.command {
        Command::Rbac => {
            print!("{}", steward_actions::rbac::cluster_role_yaml());
            return Ok(());
        }
        Command::ActionsDoc => {
            print!("{}", steward_actions::docs::actions_markdown());
            return Ok(());
        }
        Command::Approve(settle_args) => return settle(&settle_args, "approve").await,
        Command::Reject(settle_args) => return settle(&settle_args, "reject").await,
        Command::Eval(args) => return eval(&args, &cli.database.url).await,
        _ => {}
    }
    let store = Store::connect_once(&cli.database)
        .await
        .with_context(|| format!("while connecting to {}", redact(&cli.database.url)))?;
    match cli.command {
        Command::Rbac
        | Command::ActionsDoc
        | Command::Approve(_)
        | Command::Reject(_)
        | Command::Eval(_) => {}
        Command::Prune { older_than } => match store.prune(older_than, 10_000).await? {
            Some(pruned) => println!("{pruned:?}"),
            None => println!("another process is pruning; try again later"),
        },
        Command::Pending => {
            for pending in store.pending_decisions().await? {
                use steward_proto::Message;
                use steward_proto::v1::{RemediationEvent, remediation_event::Body};
                let proposal = RemediationEvent::decode(pending.event.as_slice())
                    .ok()
                    .and_then(|event| match event.body {
                        Some(Body::Pending(decision)) => decision.proposal,
                        _ => None,
                    })
                    .unwrap_or_default();
                println!(
                    "{}  {}  {} {}  confidence {:.2}  pending since {}  reasoning {:?}",
                    pending.proposal_id,
                    pending.cluster,
                    proposal.action,
                    proposal.target.unwrap_or_default(),
                    proposal.confidence,
                    pending.decided_at.format("%Y-%m-%d %H:%M:%S"),
                    proposal.reasoning
                );
            }
        }
        Command::Migrate => {
            store.migrate().await?;
            println!("migrations applied");
        }
        Command::History { limit } => {
            for row in store.recent_actions(limit).await? {
                let target = if row.target_name.is_empty() {
                    "none".to_owned()
                } else if row.namespace.is_empty() {
                    format!("{}/{}", row.target_kind, row.target_name)
                } else {
                    format!("{}/{}/{}", row.target_kind, row.namespace, row.target_name)
                };
                println!(
                    "{}  {}  {}  {}  {}  status={} mode={} attempts={}  changes=[{}]{}",
                    row.approved_at.format("%Y-%m-%d %H:%M:%S"),
                    row.cluster,
                    row.action,
                    target,
                    row.parameters,
                    row.status,
                    row.mode.as_deref().unwrap_or("-"),
                    row.attempts,
                    row.changes.join("; "),
                    if row.error.is_empty() {
                        String::new()
                    } else {
                        format!("  error={:?}", row.error)
                    },
                );
            }
        }
        Command::DeadLetters { limit } => {
            for row in store.recent_dead_letters(limit).await? {
                println!(
                    "{}  {}/{}  seq={}  subject={}  deliveries={}  reason={:?}",
                    row.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                    row.stream,
                    row.consumer,
                    row.stream_sequence,
                    row.subject,
                    row.deliveries,
                    row.reason
                );
            }
        }
    }
    Ok(())
}

/// Hides the password of a connection URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
