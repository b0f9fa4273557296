//! Benchmarks for Projector: criterion micro-benchmarks live in `benches/`, the bare
//! Kafka consumer baseline in `src/bin/`. The end-to-end harness behind `projector
//! bench` lives in the engine (`engine/src/bench.rs`), since the binary runs it.
