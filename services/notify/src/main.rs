//! `steward-notify`: prints one readable line per remediation event.

use std::process::ExitCode;

use clap::Parser;
use steward_notify::{Config, WriterNotifier};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    steward_telemetry::init_tracing(config.log.format);

    let shutdown = steward_telemetry::shutdown_on_signal();

    let admin = match tokio::net::TcpListener::bind(config.admin.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(address = %config.admin.listen, error = %error, "failed to bind the admin listener");
            return ExitCode::FAILURE;
        }
    };

    match steward_notify::run(config, WriterNotifier::stdout(), admin, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %steward_telemetry::error_chain(error.as_ref()), "notify failed");
            ExitCode::FAILURE
        }
    }
}
