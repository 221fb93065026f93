#!/usr/bin/env bash
# Compare beansproxy in front of a production-shaped cluster with one beansdb node under the
# same `beansctl bench` load.
#
# Builds release binaries and starts two targets on free loopback ports:
#   proxy   `beansctl dev-cluster`: 5 nodes, 16 buckets each on 3 nodes (no node holds every
#           bucket), 1 backup, and the proxy with N=3 W=2 R=1
#   direct  one separate beansdb node serving all 16 buckets, so it can answer every key alone
#           (same node settings as the cluster's nodes)
# Then runs the same workloads against each (100-byte values, 32 connections, the same key
# space, prefilled through each target before its first measured run):
#   mix      90% get / 10% set, closed loop (throughput and latency at saturation)
#   getm20   multi-gets of 20 keys, closed loop
#   mix@R    the mix again open loop at rate R (latency below saturation)
# It prints throughput, latency percentiles and the proxy/direct ratio per workload, checked
# against the goals. All processes it starts are stopped on exit.
#
# Environment: DURATION (10s), WARMUP (2s), CONNS (32), KEYS (100000), VALUE (100),
# OPEN_RATE (default: half of the proxy's closed-loop mix throughput), SKIP_BUILD=1,
# KEEP=1 (keep the temp dir with the JSON reports and logs).
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-32}
KEYS=${KEYS:-100000}
VALUE=${VALUE:-100}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=$TARGET_DIR/release
BEANSDB=$BIN/beansdb
BEANSCTL=$BIN/beansctl

if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building release binaries…"
    (cd "$ROOT" && cargo build --release -p beansdb-node -p beansdb-proxy -p beansdb-ctl) >&2
fi
[[ -x $BEANSDB && -x $BIN/beansproxy && -x $BEANSCTL ]] || die "release binaries missing in $BIN"

WORK=$(mktemp -d -t proxy-vs-node.XXXXXX)
PIDS=()
cleanup() {
    # dev-cluster stops its own children (proxy first, then the nodes) on SIGTERM.
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

# True when nothing listens on the port (checked by connecting).
# ----- the cluster behind the proxy

# dev-cluster prints one JSON line once every process answers; it checks the ports itself and
# exits 3 when one is taken, so a few bases are tried.
CLUSTER_PID=""
for _ in 1 2 3 4 5; do
    base=$((20000 + (RANDOM % 1100) * 10))
    rm -rf "$WORK/cluster"
    "$BEANSCTL" dev-cluster --json --dir "$WORK/cluster" --base-port "$base" \
        >"$WORK/dev-cluster.json" 2>"$WORK/dev-cluster.log" &
    CLUSTER_PID=$!
    for _ in $(seq 1 600); do
        [[ -s $WORK/dev-cluster.json ]] && break
        kill -0 "$CLUSTER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -s $WORK/dev-cluster.json ]]; then
        PIDS+=("$CLUSTER_PID")
        break
    fi
    wait "$CLUSTER_PID" 2>/dev/null || true
    log "dev-cluster did not start on base port $base:"
    tail -n 20 "$WORK/dev-cluster.log" >&2 || true
    CLUSTER_PID=""
done
[[ -n $CLUSTER_PID ]] || die "the cluster did not start"
PROXY_ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxy"]["addr"])' \
    "$WORK/dev-cluster.json")
PROXY_PORT=${PROXY_ADDR##*:}
# The proxy's CPU counts together with that of every node and backup behind it.
CPU_PIDS_proxy=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(" ".join(str(p["pid"]) for p in [c["proxy"]] + c["nodes"] + c["backups"]))' \
    "$WORK/dev-cluster.json")

# ----- the direct node: all 16 buckets, the cluster nodes' settings otherwise

probe() {
    local port=$1 line
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'get @\r\n' >&3
    read -r -t 2 line <&3 || return 1
    [[ $line == VALUE* ]]
}
NODE_DIR=$WORK/direct
mkdir -p "$NODE_DIR/conf" "$NODE_DIR/data"
NODE_PID=""
for _ in 1 2 3; do
    NODE_PORT=$(free_port)
    # Copy the cluster's node0 config with the ports, paths and route changed: same threads,
    # fsync and defaults as the nodes behind the proxy.
    sed -e "s/^  port: .*/  port: $NODE_PORT/" -e "s/^  webport: .*/  webport: $((NODE_PORT + 3))/" \
        -e "s|^  errorlog: .*|  errorlog: \"$NODE_DIR/beansdb.log\"|" \
        -e "s|^    home: .*|    home: \"$NODE_DIR/data\"|" \
        "$WORK/cluster/node0/conf/global.yaml" >"$NODE_DIR/conf/global.yaml"
    cat >"$NODE_DIR/conf/route.yaml" <<EOF
numbucket: 16
main:
- addr: 127.0.0.1:$NODE_PORT
  buckets: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
EOF
    (cd "$NODE_DIR" && exec "$BEANSDB" -confdir "$NODE_DIR/conf") >"$NODE_DIR/stdout.log" 2>&1 &
    NODE_PID=$!
    for _ in $(seq 1 300); do
        kill -0 "$NODE_PID" 2>/dev/null || break
        (probe "$NODE_PORT") 2>/dev/null && break
        sleep 0.1
    done
    if kill -0 "$NODE_PID" 2>/dev/null && (probe "$NODE_PORT") 2>/dev/null; then
        PIDS+=("$NODE_PID")
        break
    fi
    kill "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
    log "direct node did not start on port $NODE_PORT:"
    tail -n 20 "$NODE_DIR/stdout.log" "$NODE_DIR/beansdb.log" >&2 2>/dev/null || true
    NODE_PID=""
done
[[ -n $NODE_PID ]] || die "the direct node did not start"
CPU_PIDS_direct=$NODE_PID

log "$("$BIN/beansproxy" -version 2>/dev/null | head -1) on $PROXY_ADDR (cluster in $WORK/cluster: 5 nodes x 3 replicas of 16 buckets, 1 backup)"
log "$("$BEANSDB" -version 2>/dev/null | head -1) direct on 127.0.0.1:$NODE_PORT (all 16 buckets)"
log "load: $CONNS connections, $VALUE-byte values, $KEYS keys, $DURATION (+$WARMUP warmup) per run"
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The proxy preloads through itself (it writes 3 replicas).
run_workloads proxy "$PROXY_PORT" direct "$NODE_PORT" 2

python3 "$(dirname "${BASH_SOURCE[0]}")/report.py" "$WORK" "$OPEN_RATE" --servers proxy,direct \
    --subject proxy --baseline direct --mix-ratio 0.4 --getm-ratio 0.4 --p99-ms 3 --getm-p99 --conns "$CONNS"
