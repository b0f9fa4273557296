//! Engine micro-benchmarks: routing events to workers in channel batches, publishing a
//! fold view's snapshot, and SQL on a 1M-row view (a key lookup and an aggregate over
//! all rows).
//!
//! Set-up (events, states, the published view) happens outside the measured loops;
//! each group reports elements/s through `Throughput::Elements`.
//!
//! ```text
//! cargo bench -p projector-benches --bench engine
//! ```

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use projector_connectors::generator::{GeneratorConfig, GeneratorSource, Scenario};
use projector_connectors::{RawBatch, Resume, Source};
use projector_engine::config::PipelineConfig;
use projector_engine::internals::Router;
use projector_engine::internals::{EventRef, WorkerMsg};
use projector_engine::internals::{
    Published, PublishedView, build_fold_chunk, build_worker_view, view_schema,
};
use projector_engine::{Catalog, QueryLimits, SqlEngine};
use projector_operators::decode::JsonDecoder;
use projector_operators::envelope::key_text;
use projector_operators::projection::{PartitionState, Projection, ViewState};
use projector_operators::rows::{CHUNK_ROWS, FoldState};
use projector_operators::value::Value;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const EVENTS: usize = 100_000;
const ROWS: usize = 1_000_000;

fn pipeline() -> PipelineConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/bank-accounts.yaml");
    projector_engine::config::load(&path).expect("the shipped pipeline is valid")
}

/// The pipeline's views, compiled.
fn projection(config: &PipelineConfig) -> Projection {
    Projection::new(
        config.envelope.clone(),
        config.views.clone(),
        &config.fields,
    )
}

/// Routing: key hash → worker, append to that worker's batch, send full batches of
/// 1,024 over bounded crossbeam channels to 2 workers that drop them.
fn route(c: &mut Criterion) {
    let config = pipeline();
    let mut source = GeneratorSource::new(
        &GeneratorConfig {
            scenario: Scenario::Bank,
            events: EVENTS as u64,
            keys: 10_000,
            seed: 42,
        },
        &Resume::new(),
    );
    let mut raw = RawBatch::default();
    while raw.len() < EVENTS {
        let wanted = EVENTS - raw.len();
        source.poll(&mut raw, wanted).expect("generates");
    }
    let decoder = JsonDecoder::new(&config.fields);
    let slots = decoder.slots();
    let mut decoded = vec![Value::Null; EVENTS * slots];
    for (i, rec) in raw.records.iter().enumerate() {
        decoder
            .decode(raw.bytes(rec), &mut decoded[i * slots..(i + 1) * slots])
            .expect("valid event");
    }
    let projection = projection(&config);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| crossbeam_channel::bounded::<WorkerMsg>(16))
        .unzip();
    let sinks: Vec<_> = receivers
        .into_iter()
        .map(|rx| std::thread::spawn(move || while rx.recv().is_ok() {}))
        .collect();
    let mut router = Router::new(senders, slots, 1024);
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("bank_2_workers", |b| {
        b.iter_batched_ref(
            || decoded.clone(),
            |values| {
                for (i, event) in values.chunks_exact_mut(slots).enumerate() {
                    let key = key_text(projection.key(event).expect("keyed")).expect("text");
                    let w = router.worker_of(&key);
                    let rec = &raw.records[i];
                    let record = EventRef {
                        partition: 0,
                        offset: rec.offset,
                        raw: raw.bytes(rec),
                        key: None,
                        letter: false,
                        lettered: false,
                    };
                    router.push(w, record, event, None).expect("sinks run");
                }
                router.flush().expect("sinks run");
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    drop(router);
    sinks.into_iter().for_each(|s| s.join().expect("sink"));
}

/// A bank `accounts` state of `ROWS` rows (one partition).
fn big_state(projection: &Projection) -> PartitionState {
    let mut state = projection.new_partition_state();
    let names = ["Ada", "Grace", "Edsger", "Barbara", "Tony"];
    let rows: FoldState = (0..ROWS)
        .map(|i| {
            let key: Arc<str> = Arc::from(format!("acc-{i:07}"));
            let values = vec![
                Value::Str(Arc::from(names[i % names.len()])),
                Value::Int((i as i64 * 37) % 10_000),
                Value::Int((i % 50) as i64),
                Value::Int((i % 7) as i64 + 1),
            ]
            .into_boxed_slice();
            (key, values)
        })
        .collect();
    state.views[0] = ViewState::Fold(rows);
    state
}

/// Publishing a fold view: all 1M rows from scratch, and one chunk (what an epoch
/// rebuilds per chunk that changed).
fn snapshot(c: &mut Criterion) {
    let config = pipeline();
    let projection = projection(&config);
    let partitions = BTreeMap::from([(0u32, big_state(&projection))]);
    let spec = &config.views[0];
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("fold_1m_rows_full", |b| {
        b.iter(|| black_box(build_worker_view(spec, 0, &partitions)))
    });
    group.throughput(Throughput::Elements(CHUNK_ROWS as u64));
    let ViewState::Fold(rows) = &partitions[&0].views[0] else {
        unreachable!("view 0 is the fold")
    };
    let schema = view_schema(spec);
    group.bench_function("fold_one_chunk", |b| {
        let parked = &partitions[&0].parked;
        b.iter(|| black_box(build_fold_chunk(spec, &schema, 0, rows.chunk(7), parked)))
    });
    group.finish();
}

/// SQL over a published 1M-row `accounts` view: a lookup by key (answered from the
/// chunk indexes) and an aggregate over every row; parse, plan and execute each time.
fn sql(c: &mut Criterion) {
    let config = pipeline();
    let projection = projection(&config);
    let partitions = BTreeMap::from([(0u32, big_state(&projection))]);
    let catalog = Arc::new(Catalog::new(
        config.views.clone(),
        vec!["generator".into()],
        1,
    ));
    catalog.publish(Published {
        epoch: 1,
        views: config
            .views
            .iter()
            .enumerate()
            .map(|(v, spec)| PublishedView::new(vec![build_worker_view(spec, v, &partitions)]))
            .collect(),
        offsets: vec![ROWS as u64],
        present: [0].into(),
    });
    let engine = SqlEngine::new(catalog, QueryLimits::default()).expect("engine");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("sql_1m_rows");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("key_lookup", |b| {
        b.iter(|| {
            i = (i + 7919) % ROWS as u64;
            let q = format!("SELECT * FROM accounts WHERE account_id = 'acc-{i:07}'");
            let r = rt.block_on(engine.query(&q)).expect("answers");
            assert_eq!(r.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        })
    });
    group.sample_size(20);
    group.bench_function("aggregate_all_rows", |b| {
        b.iter(|| {
            let q = "SELECT count(*), sum(balance), max(deposits) FROM accounts";
            black_box(rt.block_on(engine.query(q)).expect("answers"))
        })
    });
    group.finish();
}

criterion_group!(benches, route, snapshot, sql);
criterion_main!(benches);
