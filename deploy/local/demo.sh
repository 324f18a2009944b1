#!/usr/bin/env bash
# Runs Steward on this machine and sends it one real alert through a real
# Alertmanager: starts NATS and PostgreSQL when needed, builds and starts
# the five services, posts an alert to Alertmanager's API, and prints the
# notifications the alert produces. Execution is dry-run: nothing changes
# in any cluster.
#
# Usage: deploy/local/demo.sh [--keep]
#   --keep   leave the services and Alertmanager running afterwards
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
keep=0
[ "${1:-}" = "--keep" ] && keep=1

run_dir="$root/.steward/demo"
profile_dir=debug
ingest_port=${STEWARD_DEMO_INGEST_PORT:-9095}
alertmanager_port=${STEWARD_DEMO_ALERTMANAGER_PORT:-19093}
admin_base=${STEWARD_DEMO_ADMIN_BASE_PORT:-19464}
database=steward

say() { printf '\033[1m%s\033[0m\n' "$*"; }

say "1/5 checking NATS, PostgreSQL and Alertmanager"
bash "$root/deploy/local/deps.sh"
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $database"
fi

say "2/5 building Steward (the first build takes a few minutes)"
cargo build --quiet --workspace --bins

say "3/5 starting the five services (logs in $run_dir)"
rm -rf "$run_dir"
mkdir -p "$run_dir"
pids=()
cleanup() {
    if [ "$keep" -eq 1 ]; then
        say "services keep running: kill ${pids[*]} to stop them"
        return
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

export STEWARD_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
# Dry-run without reading a cluster: point kube-rs at no kubeconfig. Set
# STEWARD_KUBECONFIG to let dry-run read (and server-side validate) real
# objects.
export KUBECONFIG=/nonexistent

start() {
    local name=$1
    shift
    "$root/target/$profile_dir/steward-$name" "$@" >"$run_dir/$name.out" 2>"$run_dir/$name.log" &
    pids+=($!)
}
start ingest --listen "127.0.0.1:$ingest_port"
start analyze --admin-listen "127.0.0.1:$admin_base"
start guard --admin-listen "127.0.0.1:$((admin_base + 1))"
start execute --admin-listen "127.0.0.1:$((admin_base + 2))" --cluster demo
start notify --admin-listen "127.0.0.1:$((admin_base + 3))"

ready() { curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }
for port in "$ingest_port" "$admin_base" "$((admin_base + 1))" "$((admin_base + 2))" "$((admin_base + 3))"; do
    for attempt in $(seq 1 300); do
        ready "$port" && break
        if [ "$attempt" -eq 300 ]; then
            echo "a service on port $port did not become ready; its log is in $run_dir" >&2
            exit 1
        fi
        sleep 0.1
    done
done

say "4/5 starting Alertmanager with a webhook receiver pointing at ingest"
cat >"$run_dir/alertmanager.yml" <<YAML
route:
  receiver: steward
  group_by: [alertname, namespace]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 4h
receivers:
  - name: steward
    webhook_configs:
      - url: http://127.0.0.1:$ingest_port/api/v1/alerts
        send_resolved: true
YAML
alertmanager=$(command -v prometheus-alertmanager || command -v alertmanager)
"$alertmanager" --config.file="$run_dir/alertmanager.yml" --storage.path="$run_dir/alertmanager-data" \
    --web.listen-address="127.0.0.1:$alertmanager_port" --cluster.listen-address= \
    >"$run_dir/alertmanager.log" 2>&1 &
pids+=($!)
for attempt in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$alertmanager_port/-/ready" >/dev/null 2>&1 && break
    [ "$attempt" -eq 100 ] && { echo "Alertmanager did not start; see $run_dir/alertmanager.log" >&2; exit 1; }
    sleep 0.1
done

say "5/5 firing KubeDeploymentReplicasMismatch for deployment shop/checkout"
fired_at=$(psql -h 127.0.0.1 -U postgres -d "$database" -tAc "SELECT now()")
curl -fsS -XPOST -H 'Content-Type: application/json' "http://127.0.0.1:$alertmanager_port/api/v2/alerts" -d '[{
  "labels": {"alertname": "KubeDeploymentReplicasMismatch", "severity": "warning", "cluster": "demo",
             "namespace": "shop", "deployment": "checkout"},
  "annotations": {"summary": "Deployment shop/checkout has not matched the expected number of replicas for 15 minutes."}
}]'

# Find this alert's correlation id, then wait for its last notification:
# executed, or rejected (a second run within the guard's 5-minute cooldown
# is rejected, which shows the guard at work).
correlation=
for attempt in $(seq 1 300); do
    correlation=$(psql -h 127.0.0.1 -U postgres -d "$database" -tAc \
        "SELECT correlation_id FROM alert_instances WHERE cluster = 'demo' AND first_seen_at >= '$fired_at' LIMIT 1")
    [ -n "$correlation" ] && grep -Eq "^(executed|rejected) .*correlation=$correlation" "$run_dir/notify.out" && break
    if [ "$attempt" -eq 300 ]; then
        echo "no notification within 30 seconds; logs are in $run_dir" >&2
        exit 1
    fi
    sleep 0.1
done
echo
say "notifications for the alert (steward-notify's stdout):"
grep "correlation=$correlation" "$run_dir/notify.out"
echo
say "action history (steward history):"
"$root/target/$profile_dir/steward" history --limit 3
