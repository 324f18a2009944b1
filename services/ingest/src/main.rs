//! `steward-ingest`: receives Alertmanager webhooks and publishes each alert
//! to JetStream.

use std::process::ExitCode;

use clap::Parser;
use steward_ingest::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    steward_telemetry::init_tracing(config.log.format);

    let shutdown = steward_telemetry::shutdown_on_signal();

    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(address = %config.listen, error = %error, "failed to bind the webhook listener");
            return ExitCode::FAILURE;
        }
    };

    match steward_ingest::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %steward_telemetry::error_chain(error.as_ref()), "ingest failed");
            ExitCode::FAILURE
        }
    }
}
