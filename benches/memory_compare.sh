#!/usr/bin/env bash
# Memory and restart cost of Redis and of `concordkv serve`, on this machine,
# side by side in one run, with the same fsync policy on both sides
# (concordkv wal.sync_mode=interval at 1000 ms vs Redis appendonly yes,
# appendfsync everysec, no RDB saves). For each server in turn:
#   1. load it, starting empty, with
#        redis-benchmark -t set -r KEYSPACE -n REQUESTS -d 100 -P 32 -q
#   2. count the keys (DBSIZE), wait until it is at rest (no AOF rewrite or
#      compaction in progress per INFO persistence, and VmRSS steady for 2 s),
#      read VmRSS and VmHWM (peak) from /proc/PID/status and the data
#      directory's size on disk;
#   3. stop it cleanly (Redis: SHUTDOWN; concordkv: SIGTERM, which drains and
#      syncs), start it again on the same data, and time process start to the
#      first PONG (redis-cli ping every 10 ms); then the keys, VmRSS at rest
#      and the peak VmRSS (VmHWM) of the restarted process.
# Prints a table (redis, concordkv, ratio concordkv / redis), bytes of RSS per
# key, and the commands and settings used. The servers run one after the
# other, never together. A benchmark, not a test: run it by hand.
#
#   bash benches/memory_compare.sh                      # 1,000,000 keys, 2,000,000 SETs
#   KEYSPACE=100000 REQUESTS=200000 bash benches/memory_compare.sh
#
# It installs redis-server and redis-tools from Debian if they are missing,
# builds the release binary (honouring CARGO_TARGET_DIR), listens on
# 127.0.0.1 only (REDIS_PORT, CONCORDKV_PORT), and keeps its data in a
# directory under the repository that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYSPACE=${KEYSPACE:-1000000}
REQUESTS=${REQUESTS:-2000000}
REDIS_PORT=${REDIS_PORT:-6393}
CONCORDKV_PORT=${CONCORDKV_PORT:-6394}
# Longest wait for a server to answer PING, or to come to rest, in seconds.
START_TIMEOUT=${START_TIMEOUT:-600}
REST_TIMEOUT=${REST_TIMEOUT:-600}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
fi
cargo build --release -q -p concordkv-server
concordkv_bin=${CARGO_TARGET_DIR:-target}/release/concordkv

work=$(mktemp -d "$PWD/.memory-compare-XXXXXX")
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; rm -rf "$work"' EXIT

now_ns() { date +%s%N; }

# Seconds, 2 decimals, between two now_ns readings.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }

cli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }

# A field of /proc/$server_pid/status, in kB (VmRSS, VmHWM).
status_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$server_pid/status"; }

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Polls PING every 10 ms until PONG; LOADING and refused connections keep it
# waiting. Fails if the server exits or START_TIMEOUT passes.
wait_pong() {
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ "$(cli ping 2>/dev/null)" != "PONG" ]; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "$name exited before answering PING; its log:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$name did not answer PING within ${START_TIMEOUT}s" >&2
            exit 1
        fi
        sleep 0.01
    done
}

# Background work the server reports in INFO persistence.
busy() {
    local info
    info=$(cli info persistence 2>/dev/null | tr -d '\r') || return 0
    case $name in
    redis) grep -Eq '^(aof_rewrite_in_progress|aof_rewrite_scheduled|rdb_bgsave_in_progress):1' <<<"$info" ;;
    concordkv) grep -q '^compaction_in_progress:1' <<<"$info" ;;
    esac
}

# Waits until the server reports no background work and VmRSS has moved by
# at most 256 kB over the last 2 s (samples every 0.25 s).
wait_rest() {
    local deadline=$((SECONDS + REST_TIMEOUT)) samples=() rss lo hi s
    while :; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "warning: $name not at rest after ${REST_TIMEOUT}s; measuring anyway" >&2
            return
        fi
        if busy; then
            samples=()
            sleep 0.25
            continue
        fi
        rss=$(status_kb VmRSS)
        samples+=("$rss")
        if [ "${#samples[@]}" -gt 9 ]; then
            samples=("${samples[@]:1}")
            lo=${samples[0]} hi=${samples[0]}
            for s in "${samples[@]}"; do
                if [ "$s" -lt "$lo" ]; then lo=$s; fi
                if [ "$s" -gt "$hi" ]; then hi=$s; fi
            done
            if [ $((hi - lo)) -le 256 ]; then return; fi
        fi
        sleep 0.25
    done
}

start() {
    case $name in
    redis)
        redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
            --appendfsync everysec --save '' --logfile "$log" &
        ;;
    concordkv)
        CONCORDKV__DATA_DIR="$dir" CONCORDKV__SERVER__LISTEN="127.0.0.1:$port" \
            CONCORDKV__WAL__SYNC_MODE=interval CONCORDKV__WAL__SYNC_INTERVAL_MS=1000 \
            CONCORDKV__METRICS__ENABLED=false RUST_LOG=warn \
            "$concordkv_bin" serve 2>>"$log" &
        ;;
    esac
    server_pid=$!
}

# A clean stop: Redis flushes its AOF on SHUTDOWN; concordkv drains and
# syncs every acknowledged write on SIGTERM. Fails on a non-zero exit.
stop_clean() {
    local rc=0
    case $name in
    redis) cli shutdown >/dev/null 2>&1 || true ;;
    concordkv) kill -TERM "$server_pid" ;;
    esac
    wait "$server_pid" || rc=$?
    server_pid=""
    if [ "$rc" -ne 0 ]; then
        echo "$name exited with status $rc on a clean stop; its log:" >&2
        tail -20 "$log" >&2
        exit 1
    fi
}

declare -A R
measure() {
    name=$1 port=$2
    dir="$work/$name" log="$work/$name.log"
    mkdir -p "$dir"
    echo "== $name: loading (port $port)" >&2
    start
    wait_pong
    local out t0 t1
    out=$(redis-benchmark -h 127.0.0.1 -p "$port" -t set -r "$KEYSPACE" -n "$REQUESTS" -d 100 -P 32 -q \
        2>>"$work/redis-benchmark.log" | tr '\r' '\n' | grep '^SET:' | tail -1) || true
    R[$name.rps]=$(awk '{ print $2 }' <<<"$out")
    R[$name.keys]=$(cli dbsize)
    echo "== $name: ${R[$name.keys]} keys; waiting until at rest" >&2
    wait_rest
    R[$name.rss]=$(status_kb VmRSS)
    R[$name.hwm]=$(status_kb VmHWM)
    R[$name.disk]=$(du -sk "$dir" | awk '{ print $1 }')
    echo "== $name: stopping and restarting" >&2
    t0=$(now_ns)
    stop_clean
    t1=$(now_ns)
    R[$name.stop]=$(elapsed "$t0" "$t1")
    t0=$(now_ns)
    start
    wait_pong
    t1=$(now_ns)
    R[$name.restart]=$(elapsed "$t0" "$t1")
    R[$name.rkeys]=$(cli dbsize)
    wait_rest
    R[$name.rrss]=$(status_kb VmRSS)
    R[$name.rhwm]=$(status_kb VmHWM)
    stop_clean
}

measure redis "$REDIS_PORT"
measure concordkv "$CONCORDKV_PORT"

# figure, redis value, concordkv value
row() {
    local ratio
    ratio=$(awk -v a="$3" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-36s %14s %14s %8s\n' "$1" "$2" "$3" "$ratio"
}
per_key() { awk -v k="$1" -v n="$2" 'BEGIN { printf "%.0f", (n > 0 ? k * 1024 / n : 0) }'; }

echo
printf '%-36s %14s %14s %8s\n' "figure" "redis" "concordkv" "ratio"
row "SET requests/s during the load" "${R[redis.rps]:-0}" "${R[concordkv.rps]:-0}"
row "keys after the load" "${R[redis.keys]}" "${R[concordkv.keys]}"
row "RSS after the load, at rest (MiB)" "$(mib "${R[redis.rss]}")" "$(mib "${R[concordkv.rss]}")"
row "  bytes of RSS per key" "$(per_key "${R[redis.rss]}" "${R[redis.keys]}")" \
    "$(per_key "${R[concordkv.rss]}" "${R[concordkv.keys]}")"
row "peak RSS during the load (MiB)" "$(mib "${R[redis.hwm]}")" "$(mib "${R[concordkv.hwm]}")"
row "data dir after the load, du (MiB)" "$(mib "${R[redis.disk]}")" "$(mib "${R[concordkv.disk]}")"
row "clean stop (s)" "${R[redis.stop]}" "${R[concordkv.stop]}"
row "restart: start to first PONG (s)" "${R[redis.restart]}" "${R[concordkv.restart]}"
row "keys after the restart" "${R[redis.rkeys]}" "${R[concordkv.rkeys]}"
row "RSS after the restart, at rest (MiB)" "$(mib "${R[redis.rrss]}")" "$(mib "${R[concordkv.rrss]}")"
row "  bytes of RSS per key" "$(per_key "${R[redis.rrss]}" "${R[redis.rkeys]}")" \
    "$(per_key "${R[concordkv.rrss]}" "${R[concordkv.rkeys]}")"
row "peak RSS during the restart (MiB)" "$(mib "${R[redis.rhwm]}")" "$(mib "${R[concordkv.rhwm]}")"

cat <<EOF

load:      redis-benchmark -h 127.0.0.1 -p PORT -t set -r $KEYSPACE -n $REQUESTS -d 100 -P 32 -q
redis:     $(redis-server --version | awk '{ print $3, $5 }')
           redis-server --port $REDIS_PORT --bind 127.0.0.1 --dir DIR --appendonly yes --appendfsync everysec --save ''
           stopped with SHUTDOWN
concordkv: $("$concordkv_bin" --version 2>/dev/null || echo concordkv)
           CONCORDKV__WAL__SYNC_MODE=interval CONCORDKV__WAL__SYNC_INTERVAL_MS=1000 CONCORDKV__METRICS__ENABLED=false
           CONCORDKV__DATA_DIR=DIR CONCORDKV__SERVER__LISTEN=127.0.0.1:$CONCORDKV_PORT concordkv serve
           (other keys at config/default.toml's defaults); stopped with SIGTERM
at rest:   no AOF rewrite/BGSAVE (redis) or compaction (concordkv) in INFO persistence,
           and VmRSS within 256 kB over 2 s; RSS = VmRSS, peak = VmHWM of /proc/PID/status
EOF
