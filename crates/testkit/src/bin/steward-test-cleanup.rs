//! Deletes what earlier test runs left behind on the shared servers: the
//! JetStream streams made by `isolated_nats` and the `steward_test_*` and
//! `steward_eval_*` databases, once they are an hour old, so that test runs going on at the
//! same time keep theirs. It touches nothing else.

use std::process::ExitCode;

use futures::TryStreamExt;

/// Age after which a test's stream or database counts as left behind.
const MIN_AGE_SECONDS: u64 = 3600;
use sqlx::Connection;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match clean().await {
        Ok((streams, databases)) => {
            println!("removed {streams} test streams and {databases} test databases");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("steward-test-cleanup: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn clean() -> anyhow::Result<(usize, usize)> {
    let nats_url = steward_testkit::nats_url();
    let client = async_nats::connect(&nats_url)
        .await
        .map_err(|e| anyhow::anyhow!("failed to connect to NATS at {nats_url}: {e}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let names: Vec<String> = jetstream
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!("failed to list streams: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let old = |created: u64| now.saturating_sub(created) >= MIN_AGE_SECONDS;
    let mut streams = 0;
    let stale = names
        .iter()
        .filter(|name| steward_testkit::test_stream_created_at(name).is_some_and(old));
    for name in stale {
        jetstream
            .delete_stream(name)
            .await
            .map_err(|e| anyhow::anyhow!("failed to delete stream {name}: {e}"))?;
        streams += 1;
    }

    let admin_url = steward_testkit::postgres_admin_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .map_err(|e| anyhow::anyhow!("failed to connect to Postgres at {admin_url}: {e}"))?;
    let databases: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database
         WHERE datname LIKE 'steward\\_test\\_%' OR datname LIKE 'steward\\_eval\\_%'",
    )
    .fetch_all(&mut admin)
    .await?;
    // `steward eval` names its databases the same way and drops them when
    // it finishes; these are left by runs that were killed.
    let databases: Vec<String> = databases
        .into_iter()
        .filter(|name| {
            ["steward_test_", "steward_eval_"]
                .iter()
                .any(|prefix| steward_testkit::created_at(name, prefix).is_some_and(old))
        })
        .collect();
    for name in &databases {
        // Names come from pg_database and match the pattern above, which
        // allows only the characters unique_name produces.
        anyhow::ensure!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "unexpected database name {name:?}"
        );
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    Ok((streams, databases.len()))
}
