#!/usr/bin/env bash
# Projector reading a 4-partition topic versus a bare rdkafka consumer reading the same
# topic, on a local Tansu broker (release builds). Prints each run's summary.
#
#   benches/scripts/kafka-throughput.sh [EVENTS] [RUNS]
#
# Builds the release binaries (slow the first time), starts a broker on a free port,
# produces EVENTS generated bank events (default 1,000,000), then RUNS times (default
# 3) each: kafka-bare-consumer assigned, --group, --split, and `projector run --once`
# on a fresh state directory. Stops the broker it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
events=${1:-1000000}
runs=${2:-3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p projector -p projector-benches --bins >&2
bin="$target/release"
brokers=$(scripts/broker.sh start)
trap 'scripts/broker.sh stop "${brokers##*:}" >&2' EXIT
work=$(mktemp -d)
sed 's/topics: \[bank-events\]/topics: [bench-throughput]/; s/group_id: bank-accounts/group_id: bench-throughput/' \
  pipelines/bank-accounts-kafka.yaml > "$work/kafka.yaml"
export KAFKA_BROKERS=$brokers
"$bin/projector" produce "$work/kafka.yaml" --events "$events" >&2
for i in $(seq "$runs"); do
  for mode in "" --group --split; do
    echo "bare consumer ${mode:-(assigned)}: $("$bin/kafka-bare-consumer" "$brokers" bench-throughput $mode)"
  done
  rm -rf "$work/state"
  /usr/bin/time -f "projector: peak RSS %M KB, user %U s, sys %S s" \
    "$bin/projector" run "$work/kafka.yaml" --once --quiet --state-dir "$work/state" 2>&1 | grep -v '^$'
done
rm -rf "$work"
