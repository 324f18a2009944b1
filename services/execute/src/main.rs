//! `steward-execute`: applies approved actions through the Kubernetes API.

use std::process::ExitCode;

use clap::Parser;
use steward_execute::Config;

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

    match steward_execute::run(config, admin, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %steward_telemetry::error_chain(error.as_ref()), "execute failed");
            ExitCode::FAILURE
        }
    }
}
