//! Projector's benchmarks, on top of the engine:
//!
//! ```text
//!  harness   `projector bench`: record the input (replay), then throughput, freshness,
//!            SQL latency and memory of a whole pipeline; on Kafka, against the baseline
//!  baseline  a bare rdkafka consumer that only touches the bytes: the Kafka ceiling
//!  replay    recorded input, replayed from memory as fast as polled or at a fixed rate
//!  benches/  criterion micro-benchmarks of the operators, the engine and Nexmark
//!  src/bin/  kafka-bare-consumer, memory-per-row
//! ```

pub mod baseline;
pub mod harness;
pub mod replay;
