#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, every test, and a
# build of every target (benchmarks included). `.ci/run` calls exactly this.
#
#   scripts/test.sh            # everything
#   CARGO_TARGET_DIR=/tmp/t scripts/test.sh   # keep the build outside the clone
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "toolchain"
cargo --version >&2
rustc --version >&2

step "disk"
# A clean build writes several GB; a full disk shows up much later as a linker crash
# ("ld terminated with signal 7 [Bus error]"), so say up front how much room there is.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
df -h "$target_dir" >&2

step "Kafka-compatible test broker (Tansu)"
# The Kafka tests start their own brokers through this script; installing here makes a
# failed install the first, clear error rather than a test failure.
scripts/broker.sh install >&2

step "TLS and SCRAM test broker (Tansu with SQLite storage, built from crates.io)"
# The security tests (cli/tests/kafka_security.rs) need a broker that keeps SCRAM
# credentials; the calfkit build does not (see scripts/broker.sh). A cold build takes
# about eleven minutes, once per clone (or per CARGO_TARGET_DIR).
scripts/broker.sh install-secure >&2

step "independent clients (confluent-kafka and psycopg from PyPI)"
# The tests produce compressed topics, Debezium and CloudEvents records with them, and
# query the Postgres face with psycopg.
scripts/clients.sh install >&2

step "Postgres client (psql)"
# The tests of the Postgres face (cli/tests/pg.rs) drive the real psql; psycopg, the
# other driver they use, comes with the clients above.
scripts/psql.sh install >&2

step "headless Chromium and chromedriver"
# The tests of the web console (cli/tests/console.rs) drive a real browser.
scripts/chromium.sh install >&2

step "S3-compatible test store (moto)"
# The scale-out tests and the S3 variants of the Kafka tests start their own servers
# through this script, like the broker.
scripts/s3.sh install >&2

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "without Kafka (--no-default-features): clippy of connectors and engine, connectors tests"
# An embedder who reads files only leaves librdkafka out; that build must stay clean.
cargo clippy -p projector-connectors -p projector-engine --no-default-features --all-targets \
    --locked -- -D warnings
# The connectors' own tests without Kafka (small: no DataFusion): opening a Kafka source
# must be a clear error, not a missing symbol.
cargo test -p projector-connectors --no-default-features --locked

step "cargo doc --no-deps (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "cargo bench --no-run (dev profile)"
# The benchmarks must build. In the bench profile (release) that is a cold release
# build of DataFusion, 20-45 minutes on 2 cores, so CI builds them in the dev profile;
# `projector bench` itself runs in the tests below (cli/tests/bench.rs), short.
cargo bench --workspace --locked --no-run --profile dev

step "tests"
# Every target. The integration tests run the `projector` binary, so it is built
# before they start.
cargo build --workspace --locked --all-targets
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doctests.
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi

step "deploy/ (Kubernetes and Compose schemas, flags, ports and probes against the binary)"
scripts/deploy-check.sh "$target_dir/debug/projector"

step "ok"
