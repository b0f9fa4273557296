#!/bin/bash
# Key lookups and aggregates over the Postgres protocol (prepared statements) next to
# HTTP (BENCHMARKS.md): the 1M-key bank view, `projector bench` with 2 query clients
# while ingesting, RUNS invocations per face, interleaved (http, pg, http, pg, ...).
# Prints each invocation's ingest rate under queries and each query kind's p50/p99.
# Usage: scripts/bench-pg.sh   (RUNS=3, EVENTS=2000000 by default; needs a release
# build: cargo build --release --bin projector)
set -euo pipefail
P=${PROJECTOR:-target/release/projector}
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} EVENTS=${EVENTS:-2000000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed '0,/events: .*/s//events: 3000000/; 0,/keys: .*/s//keys: 1000000/' \
    pipelines/bank-accounts.yaml > "$dir/big.yaml"
for run in $(seq "$RUNS"); do
    for face in http pg; do
        TMPDIR=${TMPDIR:-/dev/shm} "$P" bench "$dir/big.yaml" --events "$EVENTS" --runs 1 \
            --query-clients 2 --query-face "$face" --quiet --json "$dir/$face-$run.json" > /dev/null
        python3 - "$dir/$face-$run.json" "$face" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
loaded = r["freshness_under_queries"]
print(f"run {sys.argv[3]} {sys.argv[2]:>4}: ingest {loaded['achieved_rate']/1e3:.0f}K/s", end="")
for q in r["queries"]:
    if q["view"] == "accounts":
        print(f" | {q['kind']} p50 {q['p50_ms']:.2f} p99 {q['p99_ms']:.2f} ms ({q['count']}, {q['errors']} errors)", end="")
print()
PY
    done
done
