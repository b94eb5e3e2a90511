#!/usr/bin/env bash
# What the archive costs and how fast it moves data, on this machine, in one
# run, against moto's S3 server on loopback (from .venv-tests, which
# `bash .ci/run` makes):
#
# 1. Appends quiet vs archiving: `redis-benchmark -t set -d 100 -c 50`
#    against `concordkv serve` without and with an [archive]
#    (max_lag_ms = 1000), ROUNDS rounds each, taking turns at going
#    first; prints the median requests/s and p99 of each, and the ratio.
# 2. Archive throughput, for each archive.concurrency in CONCURRENCIES: a
#    server writes RECORDS records (100-byte values, sync_mode interval)
#    while its archive is down, then moto starts: the time until the
#    archive holds them all, in MB/s of segment bytes (each upload is also
#    read back to verify it).
# 3. Restore: `concordkv restore` of the last archive, in records/s and MB/s.
#
# A benchmark, not a test: run it by hand.
#
#   bash benches/archive_compare.sh   # RECORDS=2000000 REQUESTS=200000 ROUNDS=3 CONCURRENCIES="1 4"
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-2000000}
REQUESTS=${REQUESTS:-200000}
ROUNDS=${ROUNDS:-3}
CONCURRENCIES=${CONCURRENCIES:-"1 4"}
PORT=${PORT:-6393}
MOTO_PORT=${MOTO_PORT:-5093}
MOTO=.venv-tests/bin/moto_server
[ -x "$MOTO" ] || { echo "no $MOTO: run bash .ci/run once (it makes .venv-tests)" >&2; exit 1; }
command -v redis-benchmark >/dev/null 2>&1 || { echo "needs redis-benchmark (Debian's redis-tools)" >&2; exit 1; }
cargo build --release -q -p concordkv-server
BIN=target/release/concordkv

work=$(mktemp -d "$PWD/.archive-compare-XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export CONCORDKV__METRICS__ENABLED=false CONCORDKV__SERVER__LISTEN=127.0.0.1:$PORT
archive_env=(CONCORDKV__ARCHIVE__URL=s3://concordkv-bench/run CONCORDKV__ARCHIVE__ENDPOINT=http://127.0.0.1:$MOTO_PORT
    CONCORDKV__ARCHIVE__ALLOW_HTTP=true CONCORDKV__ARCHIVE__MAX_LAG_MS=1000 CONCORDKV__ARCHIVE__MAX_RETRIES=1
    CONCORDKV__ARCHIVE__RETRY_TIMEOUT_MS=2000)

start_moto() {
    "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
    moto_pid=$!
    pids+=("$moto_pid")
    for _ in $(seq 600); do
        curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" 2>/dev/null && break
        sleep 0.1
    done
    curl -s -X PUT "http://127.0.0.1:$MOTO_PORT/concordkv-bench" >/dev/null
}

# start_server DIR [ENV...]: a server on $PORT, data in DIR.
start_server() {
    local dir=$1
    shift
    env CONCORDKV__DATA_DIR="$dir" "$@" "$BIN" serve >"$work/server.log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 400); do
        [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = "PONG" ] && return 0
        sleep 0.05
    done
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

info() { redis-cli -p "$PORT" info persistence | tr -d '\r' | sed -n "s/^$1://p"; }

# "rps p99" of one SET run.
set_run() {
    redis-benchmark -p "$PORT" -t set -n "$REQUESTS" -c 50 -d 100 -r 100000 --csv 2>/dev/null |
        awk -F'","' '/"SET"/ { gsub(/"/, "", $0); split($0, f, ","); print f[2], f[7] }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

start_moto
echo "== appends quiet vs archiving: redis-benchmark -t set -d 100 -c 50 -n $REQUESTS, $ROUNDS rounds"
: >"$work/quiet" ; : >"$work/archiving"
for round in $(seq "$ROUNDS"); do
    order=("quiet" "archiving")
    [ $((round % 2)) -eq 0 ] && order=("archiving" "quiet")
    for side in "${order[@]}"; do
        rm -rf "$work/data"
        if [ "$side" = quiet ]; then start_server "$work/data"; else start_server "$work/data" "${archive_env[@]}"; fi
        set_run >>"$work/$side"
        stop_server
    done
done
for side in quiet archiving; do
    printf '%-10s rps %s  p99 %s ms\n' "$side" "$(cut -d' ' -f1 "$work/$side" | median)" "$(cut -d' ' -f2 "$work/$side" | median)"
done
awk 'NR == FNR { q[FNR] = $2; next } { print $2 / q[FNR] }' "$work/quiet" "$work/archiving" | median |
    xargs printf 'p99 archiving / quiet (median of the rounds): %s\n'

for concurrency in $CONCURRENCIES; do
    echo "== archive throughput, archive.concurrency = $concurrency: $RECORDS records written while the archive is down, then moto starts"
    kill "$moto_pid"; wait "$moto_pid" 2>/dev/null || true
    rm -rf "$work/data"
    # interval: synced every second (the archive takes only durable records;
    # in `none` the active segment's are durable only once it is sealed).
    start_server "$work/data" "${archive_env[@]}" CONCORDKV__WAL__SYNC_MODE=interval \
        CONCORDKV__ARCHIVE__CONCURRENCY="$concurrency"
    redis-benchmark -p "$PORT" -t set -n "$RECORDS" -c 50 -P 32 -d 100 -r 1000000000 -q >/dev/null 2>&1
    last=$(info wal_last_seq)
    bytes=$(info wal_bytes)
    start_moto
    started=$(date +%s.%N)
    while [ "$(info archive_seq)" -lt "$last" ]; do
        if [ "$(echo "$(date +%s.%N) - $started > 600" | bc)" = 1 ]; then
            echo "the archive holds $(info archive_seq) of $last after 600 s; the server's log:" >&2
            tail -5 "$work/server.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    elapsed=$(echo "$(date +%s.%N) - $started" | bc)
    echo "archived $last records ($bytes bytes of segments) in ${elapsed} s: $(echo "$bytes / $elapsed / 1000000" | bc -l | cut -c1-6) MB/s"
    stop_server
done

echo "== restore of the last archive"
started=$(date +%s.%N)
CONCORDKV__ARCHIVE__URL=s3://concordkv-bench/run CONCORDKV__ARCHIVE__ENDPOINT=http://127.0.0.1:$MOTO_PORT \
    CONCORDKV__ARCHIVE__ALLOW_HTTP=true "$BIN" restore --to "$work/restored"
elapsed=$(echo "$(date +%s.%N) - $started" | bc)
restored=$(du -sb "$work/restored" | cut -f1)
echo "restored $last records ($restored bytes) in ${elapsed} s: $(echo "$last / $elapsed" | bc) records/s, $(echo "$restored / $elapsed / 1000000" | bc -l | cut -c1-6) MB/s"
