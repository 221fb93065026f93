#!/usr/bin/env bash
# Compare a beansdb node with memcached under the same `beansctl bench` load.
#
# Builds release binaries, installs Debian's memcached if it is missing, starts both servers
# on free loopback ports, and runs the same workloads against each (100-byte values,
# 32 connections, the same prefilled key space):
#   mix      90% get / 10% set, closed loop (throughput and latency at saturation)
#   getm20   multi-gets of 20 keys, closed loop
#   mix@R    the mix again open loop at rate R (latency below saturation)
# It prints throughput, latency percentiles and the beansdb/memcached ratio per workload,
# checked against the goals. All processes it starts are stopped on exit.
#
# Environment: DURATION (10s), WARMUP (2s), CONNS (32), KEYS (100000), VALUE (100),
# OPEN_RATE (default: a third of memcached's closed-loop mix throughput), SKIP_BUILD=1,
# KEEP=1 (keep the temp dir), MEMCACHED_THREADS (2).
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-32}
KEYS=${KEYS:-100000}
VALUE=${VALUE:-100}
MEMCACHED_THREADS=${MEMCACHED_THREADS:-2}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BEANSDB=$TARGET_DIR/release/beansdb
BEANSCTL=$TARGET_DIR/release/beansctl

if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building release binaries…"
    (cd "$ROOT" && cargo build --release -p beansdb-node -p beansdb-ctl) >&2
fi
[[ -x $BEANSDB && -x $BEANSCTL ]] || die "release binaries missing in $TARGET_DIR/release"

if ! command -v memcached >/dev/null; then
    log "installing memcached…"
    # Keep the package from starting a system-wide daemon that this script would not own.
    added_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt-get install -y memcached >&2 || { apt-get update >&2 && apt-get install -y memcached >&2; }
    [[ -n $added_policy ]] && rm -f /usr/sbin/policy-rc.d
fi
MEMCACHED=$(command -v memcached) || die "memcached not available"

WORK=$(mktemp -d -t node-vs-memcached.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "${KEEP:-}" ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nobody listens on (checked by connecting; a racing process could still take it).
# Waits until `get @` (beansdb) or `version` (memcached) answers on the port.
probe() {
    local port=$1 probe=$2 line
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s\r\n' "$probe" >&3
    read -r -t 2 line <&3 || return 1
    [[ $line == VALUE* || $line == END* || $line == VERSION* ]]
}
wait_ready() {
    local port=$1 probe=$2 name=$3 pid=$4
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        # A subshell, so a failed connect cannot end the script and the socket closes.
        if (probe "$port" "$probe") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name not ready on port $port after 30s"
}

# start NAME PROBE LOG COMMAND… : starts a server on $PORT (retrying on a new port if it
# exits, e.g. because another process took the port), leaves its pid in PIDS.
start() {
    local name=$1 probe=$2 logf=$3
    shift 3
    for _ in 1 2 3; do
        "$@" >"$logf" 2>&1 &
        PIDS+=($!)
        if wait_ready "$PORT" "$probe" "$name" "${PIDS[-1]}"; then
            return 0
        fi
        log "$name exited during startup:"
        tail -n 20 "$logf" >&2 || true
        PORT=$(free_port)
    done
    die "$name did not start"
}

PORT=$(free_port)
MC_USER=()
[[ $(id -u) -eq 0 ]] && MC_USER=(-u root)
mc_cmd() { exec "$MEMCACHED" -l 127.0.0.1 -p "$PORT" -U 0 -t "$MEMCACHED_THREADS" -m 1024 "${MC_USER[@]}"; }
start memcached version "$WORK/memcached.log" mc_cmd
MC_PORT=$PORT
CPU_PIDS_memcached=${PIDS[-1]}

mkdir -p "$WORK/conf" "$WORK/home"
write_node_conf() {
    cat >"$WORK/conf/global.yaml" <<EOF
server:
  hostname: 127.0.0.1
  listen: 127.0.0.1
  port: $PORT
  webport: $((PORT + 3))
  errorlog: $WORK/beansdb.log
hstore:
  local:
    home: $WORK/home
EOF
    cat >"$WORK/conf/route.yaml" <<EOF
numbucket: 16
main:
- addr: 127.0.0.1:$PORT
  buckets: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
EOF
}
# The conf names the port, so it is rewritten for each attempt.
node_cmd() { write_node_conf && cd "$WORK" && exec "$BEANSDB" -confdir "$WORK/conf"; }
PORT=$(free_port)
start beansdb 'get @' "$WORK/beansdb.out" node_cmd
NODE_PORT=$PORT
CPU_PIDS_beansdb=${PIDS[-1]}

log "$("$MEMCACHED" -V 2>/dev/null | head -1) on 127.0.0.1:$MC_PORT (-t $MEMCACHED_THREADS)"
log "$("$BEANSDB" -version 2>/dev/null | head -1) on 127.0.0.1:$NODE_PORT"
log "load: $CONNS connections, $VALUE-byte values, $KEYS keys, $DURATION (+$WARMUP warmup) per run"
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

run_workloads memcached "$MC_PORT" beansdb "$NODE_PORT" 3

python3 "$(dirname "${BASH_SOURCE[0]}")/report.py" "$WORK" "$OPEN_RATE" --servers memcached,beansdb \
    --subject beansdb --baseline memcached --mix-ratio 0.8 --getm-ratio 0.6 --p99-ms 2 --conns "$CONNS"
