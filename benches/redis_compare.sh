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
# the `multi_exec_load` example: redis-benchmark has no transactions).
#
# ROUNDS rounds of every row, the two servers taking turns at going first;
# prints the median requests/s of each side, the median of the rounds'
# ratios concordkv / Redis, and the median CPU share (100% = one core) of
# the client and of the server on each side: a client near 100% is the
# bottleneck, and a ratio near 1.0 there says little about the servers.
# A benchmark, not a test: run it by hand.
#
#   bash benches/redis_compare.sh            # REQUESTS=200000 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-200000}
ROUNDS=${ROUNDS:-3}
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

# CPU ticks (user + system) a process has used so far.
ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
hz=$(getconf CLK_TCK)

# One run against the server on PORT: prints "rps client% server%".
measure() { # PORT REQUESTS TEST LOAD...
    local port=$1 before start end client rps
    before=$(ticks "$server_pid")
    start=$(date +%s.%N)
    TIMEFORMAT=%P
    { time rps "$@" >"$work/rps"; } 2>"$work/client-cpu"
    end=$(date +%s.%N)
    rps=$(cat "$work/rps")
    client=$(tail -1 "$work/client-cpu")
    awk -v r="$rps" -v c="$client" -v b="$before" -v a="$(ticks "$server_pid")" \
        -v s="$start" -v e="$end" -v hz="$hz" \
        'BEGIN { printf "%s %.0f %.0f\n", r, c, (a - b) / hz / (e - s) * 100 }'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# The median of field K of the runs' lines: RUNS K.
med() { printf '%s' "$1" | awk -v k="$2" '{ print $k }' | median; }

printf '%-30s %-6s %-16s %11s %11s %6s %13s %13s\n' "policy" "test" "load" "redis rps" "ckv rps" "ratio" "redis cli/srv" "ckv cli/srv"
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
        redis_runs="" concordkv_runs="" ratios=""
        for round in $(seq "$ROUNDS"); do
            order="redis concordkv"
            [ $((round % 2)) -eq 0 ] && order="concordkv redis"
            for side in $order; do
                if [ "$side" = redis ]; then
                    start_redis "$redis_policy"
                    # shellcheck disable=SC2086
                    run=$(measure "$REDIS_PORT" "$requests" "$test" $load)
                    redis_runs+="$run"$'\n'
                    redis_rps=${run%% *}
                else
                    start_concordkv "$concordkv_mode"
                    # shellcheck disable=SC2086
                    run=$(measure "$CONCORDKV_PORT" "$requests" "$test" $load)
                    concordkv_runs+="$run"$'\n'
                    concordkv_rps=${run%% *}
                fi
                stop_server
            done
            ratios+="$(awk -v a="$concordkv_rps" -v b="$redis_rps" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"$'\n'
        done
        printf '%-30s %-6s %-16s %11.0f %11.0f %6.2f %13s %13s\n' \
            "appendfsync $redis_policy / $concordkv_mode" "$test" "$load" \
            "$(med "$redis_runs" 1)" "$(med "$concordkv_runs" 1)" "$(printf '%s' "$ratios" | median)" \
            "$(med "$redis_runs" 2)%/$(med "$redis_runs" 3)%" "$(med "$concordkv_runs" 2)%/$(med "$concordkv_runs" 3)%"
    done
done
