#!/usr/bin/env bash
# Runs Steward's tests against real servers: makes sure NATS with
# JetStream, PostgreSQL and Alertmanager are there, removes the streams and
# databases earlier test runs left behind, builds the service binaries the
# end-to-end tests start, and runs every test of the workspace. Extra
# arguments go to `cargo test`.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

bash deploy/local/deps.sh
cargo build --workspace --bins
cargo run --quiet -p steward-testkit --bin steward-test-cleanup
cargo test --workspace "$@"
