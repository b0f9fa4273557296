//! Operator micro-benchmarks: JSON decode, and fold and aggregate apply, on the bank
//! workload.
//!
//! Set-up (generating the events, compiling the pipeline) happens outside the
//! measured loops; each group reports events/s through `Throughput::Elements`.
//!
//! ```text
//! cargo bench -p projector-benches --bench operators
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use projector_connectors::generator::{GeneratorConfig, GeneratorSource, Scenario};
use projector_connectors::{RawBatch, Resume, Source};
use projector_operators::decode::JsonDecoder;
use projector_operators::projection::Projection;
use projector_operators::value::Value;
use projector_operators::view::ViewKind;
use std::hint::black_box;
use std::path::Path;

const EVENTS: usize = 100_000;

fn bank_events() -> RawBatch {
    let config = GeneratorConfig {
        scenario: Scenario::Bank,
        events: EVENTS as u64,
        keys: 10_000,
        seed: 42,
    };
    let mut source = GeneratorSource::new(&config, &Resume::new());
    let mut batch = RawBatch::default();
    while batch.len() < EVENTS {
        let wanted = EVENTS - batch.len();
        source
            .poll(&mut batch, wanted)
            .expect("the generator does not fail");
    }
    batch
}

fn pipeline() -> projector_engine::config::PipelineConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/bank-accounts.yaml");
    projector_engine::config::load(&path).expect("the shipped pipeline is valid")
}

fn decode(c: &mut Criterion) {
    let config = pipeline();
    let events = bank_events();
    let decoder = JsonDecoder::new(&config.fields);
    let mut slots = vec![Value::Null; decoder.slots()];
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("bank_json", |b| {
        b.iter(|| {
            for rec in &events.records {
                decoder
                    .decode(events.bytes(rec), &mut slots)
                    .expect("valid event");
                black_box(&slots);
            }
        })
    });
    group.finish();
}

/// The bank events, decoded: `EVENTS` rows of `slots` values.
fn decoded(config: &projector_engine::config::PipelineConfig) -> (Vec<Value>, usize) {
    let events = bank_events();
    let decoder = JsonDecoder::new(&config.fields);
    let slots = decoder.slots();
    let mut decoded = vec![Value::Null; EVENTS * slots];
    for (i, rec) in events.records.iter().enumerate() {
        decoder
            .decode(events.bytes(rec), &mut decoded[i * slots..(i + 1) * slots])
            .expect("valid event");
    }
    (decoded, slots)
}

/// Applying the bank events to the fold view alone, the aggregate view alone, and both.
fn apply(c: &mut Criterion) {
    let config = pipeline();
    let (decoded, slots) = decoded(&config);
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, kind) in [
        ("fold", Some(true)),
        ("aggregate", Some(false)),
        ("fold_and_aggregate", None),
    ] {
        let views = config
            .views
            .iter()
            .filter(|v| match kind {
                Some(fold) => matches!(v.kind, ViewKind::Fold(_)) == fold,
                None => true,
            })
            .cloned()
            .collect();
        let projection = Projection::new(config.envelope.clone(), views, &config.fields);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || (projection.new_partition_state(), projection.scratch()),
                |(state, scratch)| {
                    for event in decoded.chunks_exact(slots) {
                        black_box(projection.apply(state, scratch, event).expect("applies"));
                    }
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decode, apply);
criterion_main!(benches);
