#!/bin/bash
# The rate of a rebuild (a view's new version read from the start of a topic) while the
# old version keeps ingesting new records, on a local Tansu broker (BENCHMARKS.md).
#   N1 events are in the topic and applied by version 1; then N2 more are produced while
#   version 2 of `accounts` is rebuilt beside it. Prints /status every 0.5 s: the old
#   version's records read, the rebuild's read, lag and rate.
# Usage: scripts/bench-rebuild.sh   (N1=2000000 N2=1000000 by default; needs a release
# build: cargo build --release --bin projector)
set -e
P=${PROJECTOR:-target/release/projector}
cd "$(dirname "$0")/.."
B=$(scripts/broker.sh start 19092)
trap 'scripts/broker.sh stop 19092 >/dev/null 2>&1 || true' EXIT
echo "broker $B"
W=$(mktemp -d)
sed -e "s/topics: \[bank-events\]/topics: [rbb]/" -e 's/${KAFKA_BROKERS:-127.0.0.1:9092}/127.0.0.1:19092/' pipelines/bank-accounts-kafka.yaml > $W/p.yaml
$P produce rbb --brokers 127.0.0.1:19092 --partitions 4 --events ${N1:-2000000} --keys 10000 --seed 1 > /dev/null 2>&1
$P run $W/p.yaml --once --quiet --state-dir $W/st 2>&1 | tail -2
python3 - $W/p.yaml <<'PY'
import sys; p=sys.argv[1]; s=open(p).read()
s=s.replace("  - name: accounts\n","  - name: accounts\n    version: 2\n",1)
s=s.replace("deposits: 1 }","deposits: 2 }",1)
open(p,'w').write(s)
PY
( sleep 1; $P produce rbb --brokers 127.0.0.1:19092 --partitions 4 --events ${N2:-1000000} --keys 10000 --seed 2 > /dev/null 2>&1; echo "produced more at $(date +%s.%N)" ) &
$P run $W/p.yaml --state-dir $W/st --http 127.0.0.1:18080 > $W/run.log 2>&1 &
PID=$!
start=$(date +%s.%N)
for i in $(seq 1 400); do
  sleep 0.5
  s=$(curl -s 127.0.0.1:18080/status || true)
  python3 -c "
import json,sys
try: s=json.loads(sys.argv[1])
except Exception: sys.exit(0)
r=s.get('rebuild') or {}
print('%.1f' % ($(date +%s.%N)-$start), 'old read', s['events']['read'], 'rebuild read', r.get('read'), 'lag', r.get('lag'), 'rate', r.get('rate'), 'state', r.get('state'))
" "$s"
  if grep -q "switched" $W/run.log; then break; fi
done
sleep 2
grep -E "rebuilding|switch" $W/run.log | head -50
kill $PID 2>/dev/null || true; wait $PID || true
echo "work directory: $W"
