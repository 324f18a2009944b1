#!/usr/bin/env bash
# Runs Steward's tests against real servers: makes sure NATS with
# JetStream, PostgreSQL and Alertmanager are there, and starts the local
# model server (llama-server with SmolLM2, deploy/local/llm.sh) unless one
# already runs. Then it removes the streams and databases earlier test runs
# left behind, builds the service binaries the end-to-end tests start, and
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
port=${STEWARD_LLM_PORT:-18080}

bash deploy/local/deps.sh

# A model server this script starts is stopped when it ends.
if ! curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"ok"'; then
    bash deploy/local/llm.sh
    trap 'kill "$(cat "$root/.steward/llm/llama-server.pid")" 2>/dev/null || true' EXIT
fi
export STEWARD_TEST_LLM_URL=${STEWARD_TEST_LLM_URL:-http://127.0.0.1:$port/v1}

cargo build --workspace --bins
cargo run --quiet -p steward-testkit --bin steward-test-cleanup
cargo test --workspace "$@"
