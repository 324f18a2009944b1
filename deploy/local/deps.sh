#!/usr/bin/env bash
# Makes sure the servers Steward needs on this machine are installed and
# running: NATS with JetStream on 127.0.0.1:4222, PostgreSQL on
# 127.0.0.1:5432, and the Alertmanager binary. Missing ones are installed
# from the distribution's packages (Debian or Ubuntu) and started.
set -euo pipefail

log() { printf 'deps: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
install_packages() {
    if ! command -v apt-get >/dev/null; then
        log "cannot install $* automatically: apt-get not found; install them with your package manager"
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    log "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() {
    local port=$1 name=$2
    for _ in $(seq 1 100); do
        port_open "$port" && return 0
        sleep 0.1
    done
    log "$name did not start listening on 127.0.0.1:$port; see its log"
    exit 1
}

# PostgreSQL
if ! port_open 5432; then
    if ! command -v pg_ctlcluster >/dev/null; then
        install_packages postgresql
    fi
    log "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
    wait_for_port 5432 PostgreSQL
fi

# NATS with JetStream
if ! port_open 4222; then
    if [ ! -x /usr/sbin/nats-server ]; then
        install_packages nats-server
    fi
    log "starting NATS with JetStream"
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_for_port 4222 "NATS (log: /var/log/nats-server.log)"
fi

# Alertmanager, used by the demo and the end-to-end test
if [ ! -x /usr/bin/prometheus-alertmanager ] && ! command -v alertmanager >/dev/null; then
    install_packages prometheus-alertmanager
fi

# A PostgreSQL role for the current user is not assumed: Steward connects
# as postgres over TCP, which the distribution's trust or peer settings
# must allow.
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    log "cannot connect to PostgreSQL as postgres at 127.0.0.1:5432; allow it in pg_hba.conf (trust or a password in STEWARD_DATABASE_URL)"
    exit 1
fi
log "NATS, PostgreSQL and Alertmanager are ready"
