#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, every test, and a
# build of the benchmarks. `.ci/run` calls exactly this.
#
#   scripts/test.sh            # everything
#   CARGO_TARGET_DIR=/tmp/t scripts/test.sh   # keep the build outside the clone
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "toolchain"
cargo --version >&2
rustc --version >&2

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# The integration tests run the `projector` binary; build it first so that its build
# time is not mistaken for a hung test.
cargo build --workspace --locked --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doctests.
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi

step "benchmarks build"
cargo bench --workspace --locked --no-run

step "ok"
