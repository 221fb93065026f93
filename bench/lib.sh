# Shared by the bench scripts (sourced): paths, logging, free ports, and the three workloads
# that every comparison runs the same way.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is needed to read the JSON reports"

# Rounds of each workload per server; the report takes medians (bench/report.py).
REPEAT=${REPEAT:-3}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer, got '$REPEAT'"

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

# CPU time (clock ticks, user + system) used so far by the given processes.
cpu_ticks() {
    local pid total=0 f
    for pid in "$@"; do
        # Fields 14 and 15 of /proc/PID/stat; the command name (field 2) has no spaces here.
        read -r -a f <"/proc/$pid/stat" || continue
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}

# Processes whose CPU counts for a server: CPU_PIDS_<server> (space-separated), set by the
# scripts once the servers run.
server_pids() {
    local var="CPU_PIDS_$1"
    echo "${!var:-}"
}

# run_bench NAME SERVER PORT ROUND ARGS… → writes $WORK/NAME.SERVER.rROUND.json, and
# NAME.SERVER.rROUND.cpu: the server's and the load generator's CPU seconds during the run.
run_bench() {
    local name=$1 server=$2 port=$3 round=$4 before after pids
    shift 4
    pids=$(server_pids "$server")
    log "running $name (round $round/$REPEAT) against $server: beansctl bench --target 127.0.0.1:$port --connections $CONNS --keys $KEYS --value-size $VALUE --duration $DURATION --warmup $WARMUP --seed 1 $*"
    # shellcheck disable=SC2086 # pids is a list
    before=$(cpu_ticks $pids)
    local TIMEFORMAT='%U %S'
    if ! { time "$BEANSCTL" bench -q --json --target "127.0.0.1:$port" --connections "$CONNS" \
        --keys "$KEYS" --value-size "$VALUE" --duration "$DURATION" --warmup "$WARMUP" \
        --seed 1 "$@" >"$WORK/$name.$server.r$round.json" 2>"$WORK/$name.$server.r$round.err"; } \
        2>"$WORK/$name.$server.r$round.time"; then
        cat "$WORK/$name.$server.r$round.err" >&2
        die "beansctl bench failed ($name against $server)"
    fi
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    local user sys
    read -r user sys <"$WORK/$name.$server.r$round.time"
    python3 -c 'import sys; t, hz, u, s = map(float, sys.argv[1:]); print("%.3f %.3f" % (t / hz, u + s))' \
        "$((after - before))" "$(getconf CLK_TCK)" "$user" "$sys" >"$WORK/$name.$server.r$round.cpu"
    cat "$WORK/$name.$server.r$round.err" >&2
}

# run_workloads A A_PORT B B_PORT OPEN_DIVISOR: mix, getm20 and the open-loop mix, REPEAT rounds
# each (NAME.SERVER.rN.json), A and B taking turns so drifting background load hits both alike.
# The first mix run of each server preloads every key; later ones reuse the key space. Unless
# OPEN_RATE is set, the open-loop rate is A's median mix throughput divided by OPEN_DIVISOR.
# Leaves OPEN_RATE set.
run_workloads() {
    local a=$1 a_port=$2 b=$3 b_port=$4 divisor=$5 r
    local -a preload=()
    for r in $(seq 1 "$REPEAT"); do
        run_bench mix "$a" "$a_port" "$r" --rate 0 --mix get:90,set:10 "${preload[@]}"
        run_bench mix "$b" "$b_port" "$r" --rate 0 --mix get:90,set:10 "${preload[@]}"
        preload=(--no-preload)
    done
    for r in $(seq 1 "$REPEAT"); do
        run_bench getm20 "$a" "$a_port" "$r" --rate 0 --mix getm:1 --getm-keys 20 --no-preload
        run_bench getm20 "$b" "$b_port" "$r" --rate 0 --mix getm:1 --getm-keys 20 --no-preload
    done
    if [[ -z "${OPEN_RATE:-}" ]]; then
        OPEN_RATE=$(python3 - "$WORK" "$a" "$divisor" <<'PY'
import glob, json, statistics, sys
work, a, divisor = sys.argv[1], sys.argv[2], int(sys.argv[3])
rates = [json.load(open(f))["throughput_rps"] for f in glob.glob(f"{work}/mix.{a}.r*.json")]
print(max(1000, int(statistics.median_low(rates) / divisor)))
PY
)
    fi
    for r in $(seq 1 "$REPEAT"); do
        run_bench "mix@$OPEN_RATE" "$a" "$a_port" "$r" --rate "$OPEN_RATE" --mix get:90,set:10 --no-preload
        run_bench "mix@$OPEN_RATE" "$b" "$b_port" "$r" --rate "$OPEN_RATE" --mix get:90,set:10 --no-preload
    done
}
