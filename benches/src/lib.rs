//! Projector's benchmarks, on top of the engine:
//!
//! ```text
//!  harness   `projector bench`: record the input (replay), then throughput, freshness,
//!            SQL latency and memory of a whole pipeline; on Kafka, against the baseline
//!  baseline  a bare rdkafka consumer that only touches the bytes: the Kafka ceiling
//!  handwritten  the bank pipeline as a one-thread serde + HashMap loop: what Projector
//!            must beat (`projector bench --against-loop`)
//!  replay    recorded input, replayed from memory as fast as polled or at a fixed rate
//!  benches/  criterion micro-benchmarks of the operators, the engine and Nexmark
//!  src/bin/  kafka-bare-consumer, memory-per-row
//! ```

pub mod baseline;
pub mod handwritten;
pub mod harness;
pub mod replay;
