#!/usr/bin/env bash
# concordkv against its peers on this machine, in one sitting, on the same
# disk: the raw fdatasync floor, `concordkv bench` in each sync mode,
# okaywal 0.3 (benches/okaywal-bench) and RocksDB 7's own db_bench
# (Debian's rocksdb-tools: fillrandom, 16-byte keys, 100-byte values).
# Each figure is printed beside its peer's, with the ratio (throughput:
# concordkv / peer, above 1 is better; latency: peer / concordkv, above 1
# is better). ROUNDS rounds of each; medians. A benchmark, not a test: run
# it by hand.
#
#   bash benches/peers.sh            # SECONDS_EACH=10 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${SECONDS_EACH:-10}
ROUNDS=${ROUNDS:-3}

if ! command -v db_bench >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends rocksdb-tools >/dev/null
fi
cargo build --release -q -p concordkv-server -p okaywal-bench

work=$(mktemp -d "$PWD/.peers-XXXXXX")
trap 'rm -rf "$work"' EXIT

# One JSON object per line from each tool: {"ops_per_sec":…,"p50_us":…,"p99_us":…}
concordkv() { # MODE WRITERS
    local dir="$work/ckv-$RANDOM"
    target/release/concordkv bench --dir "$dir" --sync-mode "$1" --writers "$2" \
        --seconds "$SECONDS_EACH" --json
    rm -rf "$dir"
}
okaywal() { # THREADS
    local dir="$work/okaywal-$RANDOM"
    target/release/okaywal-bench --dir "$dir" --threads "$1" --seconds "$SECONDS_EACH"
    rm -rf "$dir"
}
rocksdb() { # SYNC THREADS
    local dir="$work/rocksdb-$RANDOM" out
    out=$(db_bench --benchmarks=fillrandom --db="$dir" --sync="$1" --threads="$2" \
        --value_size=100 --key_size=16 --duration="$SECONDS_EACH" --num=1000000000 \
        --histogram=1 2>&1)
    rm -rf "$dir"
    awk '/^fillrandom/ {ops=$5} /^Percentiles:/ {p50=$3; p99=$7}
         END {printf "{\"ops_per_sec\":%s,\"p50_us\":%s,\"p99_us\":%s}\n", ops, p50, p99}' <<<"$out"
}

field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

declare -A runs
record() { # NAME COMMAND...
    local name=$1
    shift
    echo "--- $name" >&2
    runs[$name]+="$("$@")"$'\n'
}
for r in $(seq "$ROUNDS"); do
    echo "=== round $r" >&2
    record ckv_always_1 concordkv always 1
    record ckv_always_64 concordkv always 64
    record ckv_batch_64 concordkv batch 64
    record ckv_none_64 concordkv none 64
    record okaywal_1 okaywal 1
    record okaywal_64 okaywal 64
    record rocksdb_sync_1 rocksdb 1 1
    record rocksdb_sync_64 rocksdb 1 64
    record rocksdb_nosync_64 rocksdb 0 64
done

get() { printf '%s' "${runs[$1]}" | field "$2" | median; }

echo
echo "peers, $(date -u +%F), $(nproc) cores, $(df -h --output=source . | tail -1), ${SECONDS_EACH}s x $ROUNDS rounds, medians"
printf 'raw fdatasync (as measured by concordkv bench, same directory): p50 %s us, p99 %s us\n' \
    "$(get ckv_always_1 fsync_p50_us)" "$(get ckv_always_1 fsync_p99_us)"
printf '%-34s %14s %14s %8s\n' figure concordkv peer ratio
row() { # LABEL OURS PEERS FIELD KIND(ops|latency)
    local ours peers
    ours=$(get "$2" "$4")
    peers=$(get "$3" "$4")
    awk -v l="$1" -v a="$ours" -v b="$peers" -v k="$5" 'BEGIN {
        r = (k == "ops") ? a / b : b / a
        printf "%-34s %14.0f %14.0f %8.2f\n", l, a, b, r }'
}
row "always 64 vs okaywal 64, ops/s" ckv_always_64 okaywal_64 ops_per_sec ops
row "always 64 vs okaywal 64, p99 us" ckv_always_64 okaywal_64 p99_us latency
row "always 64 vs RocksDB sync 64, ops/s" ckv_always_64 rocksdb_sync_64 ops_per_sec ops
row "always 64 vs RocksDB sync 64, p99" ckv_always_64 rocksdb_sync_64 p99_us latency
row "always 1 vs okaywal 1, p50 us" ckv_always_1 okaywal_1 p50_us latency
row "always 1 vs RocksDB sync 1, p50 us" ckv_always_1 rocksdb_sync_1 p50_us latency
row "batch 64 vs RocksDB nosync 64, ops/s" ckv_batch_64 rocksdb_nosync_64 ops_per_sec ops
row "none 64 vs RocksDB nosync 64, ops/s" ckv_none_64 rocksdb_nosync_64 ops_per_sec ops
awk -v a="$(get ckv_always_1 p50_us)" -v f="$(get ckv_always_1 fsync_p50_us)" \
    'BEGIN {printf "%-34s %14.0f %14.0f %8.2f\n", "always 1 p50 vs raw fdatasync p50", a, f, f / a}'
