# Shared by the bench scripts (sourced): paths, logging, free ports, and the three workloads
# that every comparison runs the same way.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is needed to read the JSON reports"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port nobody listens on, below Linux's ephemeral range so outgoing connections do not
# collide (a racing process could still take it).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        if port_free "$p"; then
            echo "$p"
            return
        fi
    done
}

# run_bench NAME SERVER PORT ARGS… → writes $WORK/NAME.SERVER.json
run_bench() {
    local name=$1 server=$2 port=$3
    shift 3
    log "running $name against $server: beansctl bench --target 127.0.0.1:$port --connections $CONNS --keys $KEYS --value-size $VALUE --duration $DURATION --warmup $WARMUP --seed 1 $*"
    "$BEANSCTL" bench -q --json --target "127.0.0.1:$port" --connections "$CONNS" \
        --keys "$KEYS" --value-size "$VALUE" --duration "$DURATION" --warmup "$WARMUP" \
        --seed 1 "$@" >"$WORK/$name.$server.json"
}

# run_workloads A A_PORT B B_PORT OPEN_DIVISOR: mix, getm20 and the open-loop mix, A and B
# taking turns so drifting background load hits both alike. The first workload preloads every
# key; later ones reuse the key space. Unless OPEN_RATE is set, the open-loop rate is A's mix
# throughput divided by OPEN_DIVISOR. Leaves OPEN_RATE set.
run_workloads() {
    local a=$1 a_port=$2 b=$3 b_port=$4 divisor=$5
    run_bench mix "$a" "$a_port" --rate 0 --mix get:90,set:10
    run_bench mix "$b" "$b_port" --rate 0 --mix get:90,set:10
    run_bench getm20 "$a" "$a_port" --rate 0 --mix getm:1 --getm-keys 20 --no-preload
    run_bench getm20 "$b" "$b_port" --rate 0 --mix getm:1 --getm-keys 20 --no-preload
    if [[ -z "${OPEN_RATE:-}" ]]; then
        OPEN_RATE=$(python3 -c 'import json,sys; print(max(1000, int(json.load(open(sys.argv[1]))["throughput_rps"] / int(sys.argv[2]))))' \
            "$WORK/mix.$a.json" "$divisor")
    fi
    run_bench "mix@$OPEN_RATE" "$a" "$a_port" --rate "$OPEN_RATE" --mix get:90,set:10 --no-preload
    run_bench "mix@$OPEN_RATE" "$b" "$b_port" --rate "$OPEN_RATE" --mix get:90,set:10 --no-preload
}
