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
    /// List the most recent dead letters, newest first.
    DeadLetters {
        /// Number of rows to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
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
        _ => {}
    }
    let store = Store::connect_once(&cli.database)
        .await
        .with_context(|| format!("while connecting to {}", redact(&cli.database.url)))?;
    match cli.command {
        Command::Rbac | Command::ActionsDoc => {}
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
