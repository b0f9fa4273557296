#!/bin/bash
# Projector against the hand-written loop (BENCHMARKS.md, issue 17): the bank pipeline,
# 1 and 2 workers, `projector bench --against-loop` (each throughput run followed by a
# pass of the loop over the same recording). Prints per invocation the loop's rate,
# Projector's, and the ratio (median and range of the run-by-run ratios).
#
# `bench` records any source into memory before the clock starts, so a file source
# measured this way is the same condition as the generator (the same bytes replayed);
# a file source as such is `projector run --once` on a file (bank-ndjson writes one).
#
# Usage: scripts/bench-loop.sh   (EVENTS=2000000, RUNS=3 by default; needs a release
# build: cargo build --release -p projector --bin projector; the state goes to TMPDIR,
# /dev/shm by default)
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PROJECTOR:-target/release/projector}
EVENTS=${EVENTS:-2000000} RUNS=${RUNS:-3}
dir=$(mktemp -d "${TMPDIR:-/dev/shm}/bench-loop.XXXX")
trap 'rm -rf "$dir"' EXIT
sed "0,/events: .*/s//events: $EVENTS/" pipelines/bank-accounts.yaml > "$dir/bank.yaml"
for workers in 1 2; do
    TMPDIR="$dir" "$P" bench "$dir/bank.yaml" --runs "$RUNS" --workers "$workers" \
        --throughput-only --against-loop --quiet --json "$dir/r.json" > /dev/null
    python3 - "$dir/r.json" "$workers" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t, l = r["throughput"], r["against_loop"]
print(f"{sys.argv[2]} worker(s): Projector {t['median_events_per_s']/1e6:.2f}M "
      f"({t['min_events_per_s']/1e6:.2f}-{t['max_events_per_s']/1e6:.2f}) events/s, "
      f"loop {l['median_events_per_s']/1e6:.2f}M ({min(l['runs'])/1e6:.2f}-{max(l['runs'])/1e6:.2f}), "
      f"ratio {l['ratio']:.2f} ({l['ratio_min']:.2f}-{l['ratio_max']:.2f}), "
      f"{t['median_events_per_s_per_busy_core']/1e6:.2f}M per busy core")
PY
done
