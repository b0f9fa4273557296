//! Nexmark micro-benchmarks: the `nexmark` source (generating events, and copying
//! pre-generated ones), and decode + apply of Nexmark q1 (a table view) and q7 (an
//! aggregate by tumbling window), so the generator's cost can be told apart from the
//! engine's.
//!
//! ```text
//! cargo bench -p projector-benches --bench nexmark
//! ```

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use projector_connectors::nexmark::{NexmarkConfig, NexmarkSource};
use projector_connectors::{Poll, RawBatch, Resume, Source};
use projector_operators::decode::JsonDecoder;
use projector_operators::projection::Projection;
use projector_operators::value::Value;
use std::hint::black_box;
use std::path::Path;

const EVENTS: u64 = 100_000;

fn config(pregenerate: bool) -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        pregenerate,
        ..NexmarkConfig::default()
    }
}

/// Reads a whole source, 1024 records per poll (the engine's batch size).
fn drain(source: &mut NexmarkSource, batch: &mut RawBatch) -> usize {
    let mut n = 0;
    loop {
        batch.clear();
        match source.poll(batch, 1024).expect("the source does not fail") {
            Poll::Ready => n += batch.len(),
            _ => return n,
        }
    }
}

fn source(c: &mut Criterion) {
    let mut group = c.benchmark_group("nexmark_source");
    group.throughput(Throughput::Elements(EVENTS));
    let mut batch = RawBatch::default();
    group.bench_function("generate", |b| {
        b.iter_batched_ref(
            || NexmarkSource::new(&config(false), &Resume::new()),
            |s| black_box(drain(s, &mut batch)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("pregenerated", |b| {
        b.iter_batched_ref(
            || NexmarkSource::new(&config(true), &Resume::new()),
            |s| black_box(drain(s, &mut batch)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn apply(c: &mut Criterion) {
    let mut events = RawBatch::default();
    let mut source = NexmarkSource::new(&config(false), &Resume::new());
    while source.poll(&mut events, 4096).expect("no failure") == Poll::Ready {}
    let mut group = c.benchmark_group("nexmark_decode_apply");
    group.throughput(Throughput::Elements(EVENTS));
    for query in ["q1", "q7"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pipelines/nexmark")
            .join(format!("{query}.yaml"));
        let config = projector_engine::config::load(&path).expect("the shipped pipeline is valid");
        let decoder = JsonDecoder::new(&config.fields);
        let projection = Projection::new(
            config.envelope.clone(),
            config.views.clone(),
            &config.fields,
        );
        let mut slots = vec![Value::Null; decoder.slots()];
        group.bench_function(query, |b| {
            b.iter_batched_ref(
                || (projection.new_partition_state(), projection.scratch()),
                |(state, scratch)| {
                    for rec in &events.records {
                        decoder
                            .decode(events.bytes(rec), &mut slots)
                            .expect("valid event");
                        let applied = projection.apply_at(state, scratch, &slots, Some(rec.offset));
                        black_box(applied.expect("applies"));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, source, apply);
criterion_main!(benches);
