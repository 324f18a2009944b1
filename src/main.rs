//! `steward`: the operator command line. It reads Steward's Postgres
//! database (the action history and the dead letters) and prints the
//! files generated from the action registry.

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
    about = "Inspect Steward's action history and dead letters"
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
        /// Number of rows to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// List the proposals waiting for a person's approval.
    Pending,
    /// Delete history older than a retention period (guard does it hourly).
    Prune {
        /// Age of the oldest history kept, such as 90d.
        #[arg(long, value_parser = humantime_duration)]
        older_than: std::time::Duration,
    },
    /// Approve a pending proposal through the guard's approval API.
    Approve(Settle),
    /// Reject a pending proposal through the guard's approval API.
    Reject(Settle),
    /// List the most recent dead letters, newest first.
    DeadLetters {
        /// Number of rows to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

fn humantime_duration(value: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration such as 90d: {e}"))
}

/// Where the guard's approval API is and how to authenticate.
#[derive(clap::Args, Debug)]
struct Settle {
    /// Proposal id, as `steward pending` lists it.
    proposal_id: String,
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
    let token = std::fs::read_to_string(&settle.token_file).with_context(|| {
        format!(
            "while reading the token file {}",
            settle.token_file.display()
        )
    })?;
    let url = format!(
        "{}/api/v1/proposals/{}/{verb}",
        settle.guard_url.trim_end_matches('/'),
        settle.proposal_id
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.trim())
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
    println!(
        "{} {} by {}",
        body["proposal_id"].as_str().unwrap_or(""),
        body["verdict"].as_str().unwrap_or(""),
        body["by"].as_str().unwrap_or("")
    );
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
        _ => {}
    }
    let store = Store::connect_once(&cli.database)
        .await
        .with_context(|| format!("while connecting to {}", redact(&cli.database.url)))?;
    match cli.command {
        Command::Rbac | Command::ActionsDoc | Command::Approve(_) | Command::Reject(_) => {}
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
