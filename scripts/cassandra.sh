#!/usr/bin/env bash
# One-node Apache Cassandra 5.0 on loopback for the tests (spec decision C5).
#
#   scripts/cassandra.sh start    resolve the jars (Maven Central, cached in ~/.m2), start, wait
#                                 until CQL is served; prints CASSANDRA_NATIVE=host:port and
#                                 CASSANDRA_DIR=dir on stdout (eval-able), progress on stderr
#   scripts/cassandra.sh stop     SIGTERM, up to 30 s, then SIGKILL; removes the work dir
#   scripts/cassandra.sh status   exit 0 and the two lines above when running, else exit 1
#   scripts/cassandra.sh resolve  only resolve the jars
#
# Environment (all optional):
#   BEANS_CASSANDRA_PORT          native (CQL) port, default 9042
#   BEANS_CASSANDRA_STORAGE_PORT  storage (gossip) port, default 7000
#   BEANS_CASSANDRA_AUTH          password (PasswordAuthenticator, superuser cassandra/cassandra;
#                                 default) or none (AllowAllAuthenticator)
#   BEANS_CASSANDRA_AUTHORIZER    default AllowAllAuthorizer (CassandraAuthorizer for GRANT tests)
#   BEANS_CASSANDRA_VERSION       cassandra-all version, default the one in cassandra/pom.xml
#   BEANS_CASSANDRA_HEAP          -Xms/-Xmx, default 768m
#   BEANS_CASSANDRA_DIR           work dir (data, logs, conf); default a fresh mktemp dir
#   BEANS_CASSANDRA_START_TIMEOUT seconds to wait for CQL, default 240
#   BEANS_CASSANDRA_OWNER_PID     stop the instance 5 s after this process has exited (a test
#                                 harness passes its own pid so a killed run leaves no Cassandra
#                                 behind). A start that finds the instance running adds its owner;
#                                 the instance stops when all owners are gone. An instance started
#                                 without an owner is never stopped this way.
#   KEEP_CASSANDRA_DIR=1          stop keeps the work dir (to read its logs)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
POM="$ROOT/cassandra/pom.xml"
TARGET="$ROOT/target"
LIB="$TARGET/cassandra-lib"
# Which instance is running: written by start, read by stop/status (they run in other shells).
STATE="$TARGET/cassandra-run.env"
LOCK="$TARGET/cassandra-run.lock"

PORT=${BEANS_CASSANDRA_PORT:-9042}
STORAGE_PORT=${BEANS_CASSANDRA_STORAGE_PORT:-7000}
AUTH=${BEANS_CASSANDRA_AUTH:-password}
AUTHORIZER=${BEANS_CASSANDRA_AUTHORIZER:-AllowAllAuthorizer}
HEAP=${BEANS_CASSANDRA_HEAP:-768m}
START_TIMEOUT=${BEANS_CASSANDRA_START_TIMEOUT:-240}

say() { echo "cassandra.sh: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

pom_version() {
    sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$POM" | head -n 1
}
VERSION=${BEANS_CASSANDRA_VERSION:-$(pom_version)}

# The jars of cassandra-all and its runtime dependencies, copied from ~/.m2 into $LIB.
resolve() {
    if [[ -f "$LIB/cassandra-all-$VERSION.jar" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (needed to fetch Cassandra from Maven Central)"
    say "resolving org.apache.cassandra:cassandra-all:$VERSION with Maven (first run downloads about 70 MB into ~/.m2)"
    local tmp="$LIB.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$TARGET"
    # Copy into a temp dir and rename, so an interrupted download never looks complete and
    # jars of another version are never mixed into the classpath.
    local log="$TARGET/cassandra-mvn.log"
    if ! mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" -Dcassandra.version="$VERSION" \
        >"$log" 2>&1; then
        rm -rf "$tmp"
        grep -E '\[(ERROR|WARNING)\]' "$log" | tail -n 30 >&2 || tail -n 30 "$log" >&2
        die "maven could not resolve cassandra-all:$VERSION (full output: $log)"
    fi
    [[ -f "$tmp/cassandra-all-$VERSION.jar" ]] || die "maven did not produce cassandra-all-$VERSION.jar"
    rm -rf "$LIB"
    mv "$tmp" "$LIB"
}

# Java 17 needs these for Cassandra's use of JDK internals: the list of Cassandra 5.0's
# conf/jvm17-server.options.
EXPORTS=(
    java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi
    java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql java.base/java.lang.ref
    jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file jdk.attach/sun.tools.attach
)
OPENS=(
    java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref
    java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module
    java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal
    java.base/sun.nio.ch java.base/java.io java.base/java.lang.reflect java.base/java.lang
    java.base/java.util jdk.compiler/com.sun.tools.javac
)

write_config() {
    local d=$1 authenticator role_manager
    case "$AUTH" in
    password) authenticator=PasswordAuthenticator role_manager=CassandraRoleManager ;;
    none) authenticator=AllowAllAuthenticator role_manager=CassandraRoleManager ;;
    *) die "BEANS_CASSANDRA_AUTH must be password or none, not \"$AUTH\"" ;;
    esac
    cat >"$d/conf/cassandra.yaml" <<EOF
# Generated by scripts/cassandra.sh: a throwaway one-node test cluster.
cluster_name: beans-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $PORT
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
data_file_directories: [$d/data]
commitlog_directory: $d/commitlog
saved_caches_directory: $d/saved_caches
hints_directory: $d/hints
cdc_raw_directory: $d/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: $authenticator
authorizer: $AUTHORIZER
role_manager: $role_manager
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
# Small caches and memtables: the machine is shared with builds and other tests.
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
counter_cache_size: 8MiB
# Tests drop and truncate freely; snapshots would only fill the disk.
auto_snapshot: false
hinted_handoff_enabled: false
EOF
    cat >"$d/conf/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$d/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The pid in $1/pid, if that process is the Cassandra of work dir $1 (guards against pid reuse).
live_pid() {
    local d=$1 pid
    [[ -f "$d/pid" ]] || return 1
    pid=$(cat "$d/pid")
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-Dcassandra.config=file://$d/conf/cassandra.yaml" || return 1
    echo "$pid"
}

# True while our child $1 runs. Not live_pid(): right after the fork the child may not have
# exec'd java yet, so its command line is still this script's. A zombie counts as dead.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat%% *}" != Z ]]
}

print_env() {
    printf 'CASSANDRA_NATIVE=%q\nCASSANDRA_DIR=%q\n' "$1" "$2"
}

show_logs() {
    local d=$1
    say "last lines of $d/logs/system.log:"
    tail -n 50 "$d/logs/system.log" >&2 2>/dev/null || true
    say "last lines of $d/logs/stdout.log:"
    tail -n 20 "$d/logs/stdout.log" >&2 2>/dev/null || true
}

# Reads STATE into CASSANDRA_NATIVE / CASSANDRA_DIR; false when there is none.
load_state() {
    [[ -f "$STATE" ]] || return 1
    CASSANDRA_NATIVE=$(sed -n 's/^CASSANDRA_NATIVE=//p' "$STATE")
    CASSANDRA_DIR=$(sed -n 's/^CASSANDRA_DIR=//p' "$STATE")
    [[ -n "$CASSANDRA_DIR" ]]
}

stop_dir() {
    local d=$1 pid i
    if pid=$(live_pid "$d"); then
        say "stopping pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "still running after 30 s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    if [[ "${KEEP_CASSANDRA_DIR:-0}" == 1 ]]; then
        say "kept $d"
    else
        rm -rf "$d"
    fi
}

cmd_start() {
    mkdir -p "$TARGET"
    # One start at a time: two test binaries starting together must share one instance.
    exec 9>"$LOCK"
    flock 9
    if load_state && live_pid "$CASSANDRA_DIR" >/dev/null; then
        say "already running ($CASSANDRA_NATIVE, $CASSANDRA_DIR)"
        if [[ -n "${BEANS_CASSANDRA_OWNER_PID:-}" && -f "$CASSANDRA_DIR/owners" ]]; then
            echo "$BEANS_CASSANDRA_OWNER_PID" >>"$CASSANDRA_DIR/owners"
        fi
        print_env "$CASSANDRA_NATIVE" "$CASSANDRA_DIR"
        return 0
    fi
    rm -f "$STATE"
    command -v java >/dev/null || die "java not found (JDK 17 is needed)"
    if port_open "$PORT"; then
        die "127.0.0.1:$PORT is already in use; set BEANS_CASSANDRA_PORT to a free port"
    fi
    if port_open "$STORAGE_PORT"; then
        die "127.0.0.1:$STORAGE_PORT is already in use; set BEANS_CASSANDRA_STORAGE_PORT"
    fi
    resolve

    local d
    if [[ -n "${BEANS_CASSANDRA_DIR:-}" ]]; then
        d=$BEANS_CASSANDRA_DIR
        mkdir -p "$d"
        d=$(cd "$d" && pwd)
    else
        d=$(mktemp -d "${TMPDIR:-/tmp}/beans-cassandra.XXXXXX")
    fi
    mkdir -p "$d"/{data,commitlog,saved_caches,hints,cdc_raw,logs,conf,triggers}
    write_config "$d"

    local jvm=(
        "-Xms$HEAP" "-Xmx$HEAP" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled
        -XX:MaxGCPauseMillis=300 -XX:+ExitOnOutOfMemoryError -Djava.net.preferIPv4Stack=true
        -Dcassandra-foreground=yes "-Dcassandra.config=file://$d/conf/cassandra.yaml"
        "-Dcassandra.storagedir=$d" "-Dcassandra.logdir=$d/logs" "-Dcassandra.triggers_dir=$d/triggers"
        "-Dlogback.configurationFile=$d/conf/logback.xml"
        # One node: no need to wait for gossip or delay creating the default superuser.
        -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.superuser_setup_delay_ms=0
        -Djdk.attach.allowAttachSelf=true -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true -Dio.netty.allocator.maxOrder=11
    )
    # jamm measures object sizes for memtable accounting; as an agent it needs no Unsafe tricks.
    local jamm
    jamm=$(find "$LIB" -maxdepth 1 -name 'jamm-*.jar' | head -n 1)
    [[ -n "$jamm" ]] && jvm+=("-javaagent:$jamm")
    local x
    for x in "${EXPORTS[@]}"; do jvm+=(--add-exports "$x=ALL-UNNAMED"); done
    for x in "${OPENS[@]}"; do jvm+=(--add-opens "$x=ALL-UNNAMED"); done

    say "starting Cassandra $VERSION on 127.0.0.1:$PORT (auth: $AUTH), dir $d"
    # setsid: the node must outlive this shell; stdout/stderr go to a file so a caller capturing
    # our stdout with $(...) is not held open by the JVM.
    setsid java "${jvm[@]}" -cp "$d/conf:$LIB/*" org.apache.cassandra.service.CassandraDaemon \
        </dev/null >"$d/logs/stdout.log" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$d/pid"
    {
        echo "CASSANDRA_NATIVE=127.0.0.1:$PORT"
        echo "CASSANDRA_DIR=$d"
    } >"$STATE"

    local t0=$SECONDS ready_line="Starting listening for CQL clients"
    # With PasswordAuthenticator the superuser role is created just after CQL opens; a login
    # before that fails, so wait for it too.
    local role_line="Created default superuser role"
    while :; do
        if ! alive "$pid"; then
            show_logs "$d"
            rm -f "$STATE"
            die "Cassandra exited during startup (logs above; work dir $d kept)"
        fi
        if grep -q "$ready_line" "$d/logs/system.log" 2>/dev/null && port_open "$PORT"; then
            if [[ "$AUTH" != password ]] || grep -q "$role_line" "$d/logs/system.log"; then
                break
            fi
        fi
        if ((SECONDS - t0 > START_TIMEOUT)); then
            show_logs "$d"
            KEEP_CASSANDRA_DIR=1 stop_dir "$d"
            rm -f "$STATE"
            die "Cassandra did not serve CQL within $START_TIMEOUT s (logs above; work dir $d kept)"
        fi
        sleep 0.5
    done
    say "ready after $((SECONDS - t0)) s (pid $pid)"
    if [[ -n "${BEANS_CASSANDRA_OWNER_PID:-}" ]]; then
        # Detached watcher: stops this instance once its owners have exited, however they
        # exited. Started only now: before, the child may not have exec'd java (see alive()).
        echo "$BEANS_CASSANDRA_OWNER_PID" >"$d/owners"
        setsid bash "$0" _watch "$d" </dev/null >/dev/null 2>&1 9>&- &
    fi
    print_env "127.0.0.1:$PORT" "$d"
}

cmd_stop() {
    local d
    if load_state; then
        d=$CASSANDRA_DIR
    elif [[ -n "${CASSANDRA_DIR:-}" ]]; then
        d=$CASSANDRA_DIR
    else
        say "not running"
        return 0
    fi
    stop_dir "$d"
    rm -f "$STATE"
}

cmd_status() {
    if load_state && pid=$(live_pid "$CASSANDRA_DIR"); then
        say "running, pid $pid"
        print_env "$CASSANDRA_NATIVE" "$CASSANDRA_DIR"
        return 0
    fi
    say "not running"
    return 1
}

any_owner_alive() {
    local o
    while read -r o; do
        [[ -n "$o" ]] && kill -0 "$o" 2>/dev/null && return 0
    done <"$1/owners"
    return 1
}

# Internal: stop the instance of work dir $1 once every pid in $1/owners has been gone for 5 s
# (the grace lets the next test binary of the same cargo run join before the node stops).
cmd_watch() {
    local d=$1 gone_since=
    while live_pid "$d" >/dev/null; do
        if any_owner_alive "$d"; then
            gone_since=
        elif [[ -z "$gone_since" ]]; then
            gone_since=$SECONDS
        elif ((SECONDS - gone_since >= 5)); then
            exec 9>"$LOCK"
            flock 9
            # Re-check under the lock: a start may just have added an owner.
            if any_owner_alive "$d"; then
                flock -u 9
                gone_since=
                continue
            fi
            if load_state && [[ "$CASSANDRA_DIR" == "$d" ]]; then
                rm -f "$STATE"
            fi
            stop_dir "$d"
            return 0
        fi
        sleep 1
    done
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
resolve) resolve ;;
_watch) cmd_watch "$2" ;;
*)
    echo "usage: $0 start|stop|status|resolve" >&2
    exit 2
    ;;
esac
