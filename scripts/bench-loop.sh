#!/bin/bash
# Projector against the hand-written loop (BENCHMARKS.md, issue 17): the bank pipeline
# from its generator and from an NDJSON file of the same events, with 1 and 2 workers,
# `projector bench --against-loop` (each throughput run followed by a pass of the loop
# over the same recording). Prints per invocation the loop's rate, Projector's, and the
# ratio (median and range of the run-by-run ratios).
# Usage: scripts/bench-loop.sh   (EVENTS=2000000, RUNS=3 by default; needs release
# builds: cargo build --release --bin projector -p projector-benches --bin bank-ndjson)
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PROJECTOR:-target/release/projector}
GEN=${BANK_NDJSON:-target/release/bank-ndjson}
EVENTS=${EVENTS:-2000000} RUNS=${RUNS:-3}
dir=$(mktemp -d "${TMPDIR:-/dev/shm}/bench-loop.XXXX")
trap 'rm -rf "$dir"' EXIT
"$GEN" "$dir/bank.ndjson" --events "$EVENTS"
sed "0,/events: .*/s//events: $EVENTS/" pipelines/bank-accounts.yaml > "$dir/generator.yaml"
python3 - "$dir" <<'PY'
import re, sys
d = sys.argv[1]
text = open(f"{d}/generator.yaml").read()
source = re.search(r"^source:\n(?:  .*\n)+", text, re.M).group(0)
open(f"{d}/file.yaml", "w").write(text.replace(source, f"source:\n  type: file\n  path: {d}/bank.ndjson\n"))
PY
for input in generator file; do
    for workers in 1 2; do
        TMPDIR="$dir" "$P" bench "$dir/$input.yaml" --runs "$RUNS" --workers "$workers" \
            --throughput-only --against-loop --quiet --json "$dir/r.json" > /dev/null
        python3 - "$dir/r.json" "$input" "$workers" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t, l = r["throughput"], r["against_loop"]
print(f"{sys.argv[2]:>9}, {sys.argv[3]} worker(s): Projector {t['median_events_per_s']/1e6:.2f}M "
      f"({t['min_events_per_s']/1e6:.2f}-{t['max_events_per_s']/1e6:.2f}) events/s, "
      f"loop {l['median_events_per_s']/1e6:.2f}M ({min(l['runs'])/1e6:.2f}-{max(l['runs'])/1e6:.2f}), "
      f"ratio {l['ratio']:.2f} ({l['ratio_min']:.2f}-{l['ratio_max']:.2f}), "
      f"{t['median_events_per_s_per_busy_core']/1e6:.2f}M per busy core")
PY
    done
done
