#!/usr/bin/env bash
# Runs Steward's tests against real servers: makes sure NATS with
# JetStream, PostgreSQL and Alertmanager are there, and starts the local
# model server (llama-server with SmolLM2, deploy/local/llm.sh) unless one
# already runs. Then it removes the streams and databases earlier test runs
# left behind, builds the service binaries the end-to-end tests start, and
# runs every test of the workspace. Extra arguments go to `cargo test`.
# Last, `steward eval` runs the scenario suite on the rule analyzer and the
# local model (about 5 minutes); STEWARD_SKIP_EVAL=1 skips it.
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

# Decision quality: the scenario suite on the rule analyzer and on the local
# model. It fails when the guard approves an unsafe proposal.
if [ -n "${STEWARD_SKIP_EVAL:-}" ]; then
    exit 0
fi
mkdir -p target/eval
cargo run --quiet --bin steward -- \
    --database-url "${STEWARD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}" \
    eval --backend rules --backend "openai:$STEWARD_TEST_LLM_URL#SmolLM2-135M-Instruct" \
    --json target/eval/results.json | tee target/eval/results.md
