#!/usr/bin/env bash
# redis-benchmark against Redis and against `concordkv serve`, on this
# machine, in one run, with the same fsync policy on both sides:
#   concordkv wal.sync_mode=always             vs  Redis appendfsync always
#   concordkv wal.sync_mode=interval (1000 ms) vs  Redis appendfsync everysec
# for SET with 100-byte values over 100,000 random keys, at 50 clients,
# 1 client (latency) and 50 clients pipelining 16; GET, INCR and MSET (10
# keys) at 50 clients; SET with a deadline (`SET key value EX 3600`, the
# `setex` row: compare it with the `set -c 50` row for what expiry costs);
# and MULTI/EXEC of 10 SETs from a pipeline at 50 clients (transactions/s,
# the `multi_exec_load` example: redis-benchmark has no transactions). Prints requests/s and the ratio concordkv / Redis.
# A benchmark, not a test: run it by hand.
#
#   bash benches/redis_compare.sh            # REQUESTS=200000 by default
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-200000}
REDIS_PORT=${REDIS_PORT:-6391}
CONCORDKV_PORT=${CONCORDKV_PORT:-6392}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
fi
cargo build --release -q
cargo build --release -q -p concordkv-server --example multi_exec_load

work=$(mktemp -d "$PWD/.redis-compare-XXXXXX")
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; rm -rf "$work"' EXIT

wait_ready() {
    for _ in $(seq 400); do
        [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ] && return 0
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    exit 1
}

# requests/s of one redis-benchmark run: PORT REQUESTS TEST ARGS...
# (TEST: set, get, incr or mset; transactions/s for multi).
rps() {
    local port=$1 requests=$2 test=$3
    shift 3
    if [ "$test" = multi ]; then
        target/release/examples/multi_exec_load "$port" 50 5
        return
    fi
    local out tests=$test
    if [ "$test" = setex ]; then
        local value
        value=$(printf 'v%.0s' $(seq 100))
        if ! out=$(redis-benchmark -h 127.0.0.1 -p "$port" -r 100000 -n "$requests" "$@" --csv \
            SET key:__rand_int__ "$value" EX 3600 2>>"$work/redis-benchmark.log"); then
            echo "redis-benchmark failed on port $port ($test $*); see its log" >&2
            echo 0
            return
        fi
        awk -F'"' 'NR > 1 { print $4 }' <<<"$out" | tail -1
        return
    fi
    # GET reads what a SET pass just wrote, not an empty keyspace.
    [ "$test" = get ] && tests=set,get
    if ! out=$(redis-benchmark -h 127.0.0.1 -p "$port" -t "$tests" -d 100 -r 100000 -n "$requests" "$@" --csv \
        2>>"$work/redis-benchmark.log"); then
        echo "redis-benchmark failed on port $port ($test $*); see its log" >&2
        tail -3 "$work/redis-benchmark.log" >&2
        echo 0
        return
    fi
    # The CSV's first column: SET, GET, INCR, "MSET (10 keys)".
    awk -F'"' -v t="$test" 'toupper(t) == substr($2, 1, length(t)) { print $4 }' <<<"$out" | tail -1
}

# Every start gets an empty directory of its own: both sides begin empty.
fresh_dir() {
    mktemp -d "$work/$1-XXXXXX"
}

start_redis() {
    local dir
    dir=$(fresh_dir "redis-$1")
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
        --appendfsync "$1" --save "" --logfile "$dir.log" &
    server_pid=$!
    wait_ready "$REDIS_PORT"
}

start_concordkv() {
    local dir
    dir=$(fresh_dir "concordkv-$1")
    CONCORDKV__DATA_DIR="$dir" CONCORDKV__SERVER__LISTEN="127.0.0.1:$CONCORDKV_PORT" \
        CONCORDKV__WAL__SYNC_MODE="$1" CONCORDKV__WAL__SYNC_INTERVAL_MS=1000 CONCORDKV__METRICS__ENABLED=false \
        RUST_LOG=warn target/release/concordkv serve 2>"$dir.log" &
    server_pid=$!
    wait_ready "$CONCORDKV_PORT"
}

printf '%-38s %-7s %-12s %14s %14s %8s\n' "policy" "test" "load" "redis rps" "concordkv rps" "ratio"
for pair in "always always" "everysec interval"; do
    set -- $pair
    redis_policy=$1 concordkv_mode=$2
    for row in "set -c 50" "set -c 1" "set -c 50 -P 16" "get -c 50" "incr -c 50" "mset -c 50" "setex -c 50" "multi -c 50"; do
        set -- $row
        test=$1
        shift
        load="$*"
        requests=$REQUESTS
        [ "$load" = "-c 1" ] && requests=$((REQUESTS / 10))
        start_redis "$redis_policy"
        # shellcheck disable=SC2086
        redis=$(rps "$REDIS_PORT" "$requests" "$test" $load)
        stop_server
        start_concordkv "$concordkv_mode"
        # shellcheck disable=SC2086
        concordkv=$(rps "$CONCORDKV_PORT" "$requests" "$test" $load)
        stop_server
        ratio=$(awk -v a="$concordkv" -v b="$redis" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        printf '%-38s %-7s %-12s %14s %14s %8s\n' "appendfsync $redis_policy / $concordkv_mode" "$test" "$load" "$redis" "$concordkv" "$ratio"
    done
done
