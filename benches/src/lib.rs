//! Benchmarks for Projector: criterion micro-benchmarks live in `benches/`; the
//! end-to-end harness behind `projector bench` will live here.
