#!/usr/bin/env bash
# The 3-node raft-kv cluster on loopback, in one run, with concordkv storage
# (every entry on disk with fdatasync before a node acknowledges it) and
# with in-memory storage (`--store memory`, the same service and wiring
# with no disk): write throughput and latency under CLIENTS concurrent
# clients, the durable cluster's share of the in-memory one's throughput,
# and the logs' fdatasyncs per committed entry. ROUNDS rounds alternate the
# two; the medians are compared. A benchmark, not a test: run it by hand.
#
#   bash benches/raft_compare.sh          # CLIENTS=64 SECONDS_EACH=10 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-64}
SECONDS_EACH=${SECONDS_EACH:-10}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-22100}

cargo build --release -q -p raft-kv
work=$(mktemp -d "$PWD/.raft-compare-XXXXXX")
pids=()
stop_nodes() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_nodes; rm -rf "$work"' EXIT

cat > "$work/node.toml" <<'TOML'
[raft]
heartbeat_interval_ms = 100
election_timeout_min_ms = 1000
election_timeout_max_ms = 2000
TOML

# One round: STORE → prints the bench's RESULT line.
round() {
    local store=$1 dir="$work/$1-$RANDOM" members="" urls=""
    for i in 1 2 3; do
        members+="$i=127.0.0.1:$((BASE_PORT + i)),"
        urls+="http://127.0.0.1:$((BASE_PORT + i)),"
    done
    members=${members%,}
    urls=${urls%,}
    for i in 1 2 3; do
        local init=()
        [ "$i" = 1 ] && init=(--init "$members")
        target/release/raft-kv --config "$work/node.toml" --id "$i" \
            --listen "127.0.0.1:$((BASE_PORT + i))" --data-dir "$dir/$i" \
            --store "$store" "${init[@]}" >"$dir-$i.log" 2>&1 &
        pids+=("$!")
    done
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$((BASE_PORT + 1))/cluster" 2>/dev/null \
            | grep -q '"current_leader":[0-9]' && break
        sleep 0.1
    done
    target/release/raft-kv-bench --nodes "$urls" --clients "$CLIENTS" \
        --seconds "$SECONDS_EACH" | grep '^RESULT'
    stop_nodes
    rm -rf "$dir"
}

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

durable=()
memory=()
for r in $(seq "$ROUNDS"); do
    echo "--- round $r: concordkv" >&2
    durable+=("$(round concordkv)")
    echo "--- round $r: memory" >&2
    memory+=("$(round memory)")
done

echo "every round:"
printf 'concordkv %s\n' "${durable[@]}"
printf 'memory    %s\n' "${memory[@]}"
echo
echo "raft-kv, 3 nodes on 127.0.0.1, $CLIENTS clients, ${SECONDS_EACH}s x $ROUNDS rounds, $(date -u +%F), $(nproc) cores"
printf '%-10s %12s %10s %10s %12s %12s\n' store "writes/s" "p50 us" "p99 us" "syncs/entry" "syncs/write"
for store in concordkv memory; do
    if [ "$store" = concordkv ]; then results=("${durable[@]}"); else results=("${memory[@]}"); fi
    ops=$(printf '%s\n' "${results[@]}" | field ops_per_sec | median)
    p50=$(printf '%s\n' "${results[@]}" | field p50_us | median)
    p99=$(printf '%s\n' "${results[@]}" | field p99_us | median)
    syncs=$(printf '%s\n' "${results[@]}" | field syncs_per_entry | median)
    per_write=$(printf '%s\n' "${results[@]}" | field syncs_per_write | median)
    printf '%-10s %12.0f %10.0f %10.0f %12s %12s\n' "$store" "$ops" "$p50" "$p99" "$syncs" "$per_write"
    eval "ops_$store=$ops"
done
awk -v d="$ops_concordkv" -v m="$ops_memory" 'BEGIN {printf "concordkv / memory throughput: %.2f\n", d / m}'
