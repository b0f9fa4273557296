//! `projector bench`: how fast a pipeline goes, how fresh its views are, and how fast
//! they answer SQL.
//!
//! The input is recorded into memory first (generated, read from a file), so the
//! clock measures the engine, not the generator or the disk. Then:
//!
//! 1. **Throughput**: the recording is replayed as fast as the pipeline takes it,
//!    `runs` times, each on fresh state; from start to the last event visible to SQL
//!    (its final checkpoint written). CPU time and peak RSS come from the kernel.
//! 2. **Freshness**: the recording is replayed at a fixed rate (default: half the
//!    measured throughput). An event is due at `t0 + i / rate`; it is visible once an
//!    epoch that covers its offset is published. Every event's due-to-visible time goes
//!    into a histogram.
//! 3. **Query latency**: the same replay again, while `C` clients send SQL over HTTP,
//!    each waiting for its answer before the next (closed loop): per view, a key
//!    lookup and an aggregate over all rows. Freshness is measured again under that
//!    load (the clients share the machine with the pipeline).

mod kafka;

pub use kafka::{BareRun, KafkaBaseline};

use crate::config::PipelineConfig;
use crate::http::{AppState, query_runtime, serve};
use crate::pipeline::{Pipeline, RunOptions, Shared};
use crate::query::{QueryLimits, SqlEngine};
use anyhow::{Context, Result, anyhow, bail};
use arrow::datatypes::DataType;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use projector_connectors::replay::{Recording, ReplaySource, ReplayStart};
use projector_connectors::{Resume, Source, SourceConfig};
use projector_operators::view::ViewKind;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Largest latency the histograms hold: one minute, in microseconds.
const MAX_LATENCY_US: u64 = 60_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Events to record (default: what the source produces).
    pub events: Option<u64>,
    /// Input rate of the freshness phase, events/s (default: half the throughput).
    pub rate: Option<f64>,
    /// Concurrent SQL clients in the freshness phase (0: no queries).
    pub query_clients: usize,
    /// Throughput runs (the report gives the median and the spread).
    pub runs: usize,
    /// Worker threads (default as for `projector run`).
    pub workers: Option<usize>,
    /// Keep the last throughput run's state here (must be empty or absent), so its
    /// views can be checked afterwards with `projector run --once --state-dir`.
    pub state_dir: Option<PathBuf>,
    /// Skip the freshness and query phase.
    pub throughput_only: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
}

/// The whole report (also written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Pipeline name.
    pub pipeline: String,
    /// Source kind (`generator`, `file`, ...).
    pub source: String,
    /// Events in the recording.
    pub events: u64,
    /// Worker threads.
    pub workers: usize,
    /// Cores of this machine.
    pub cores: usize,
    /// Seconds spent recording the input (Kafka: producing it; not part of any figure).
    pub record_seconds: f64,
    /// Bytes of recorded input (Kafka: of the produced messages' values).
    pub record_bytes: u64,
    /// Throughput runs and their summary.
    pub throughput: Throughput,
    /// Rows per view at the end of the last throughput run.
    pub views: Vec<ViewRows>,
    /// Freshness at a fixed rate, no queries (absent with `--throughput-only`).
    pub freshness: Option<Freshness>,
    /// Freshness at the same rate while the query clients run.
    pub freshness_under_queries: Option<Freshness>,
    /// Query latency per view and kind, measured during the freshness phase.
    pub queries: Vec<QueryLatency>,
    /// Kafka sources: the topic and the bare consumer it was compared with.
    pub kafka: Option<KafkaBaseline>,
}

/// Throughput runs.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Each run.
    pub runs: Vec<ThroughputRun>,
    /// Median events/s.
    pub median_events_per_s: f64,
    /// Slowest run, events/s.
    pub min_events_per_s: f64,
    /// Fastest run, events/s.
    pub max_events_per_s: f64,
    /// Median events/s per busy core.
    pub median_events_per_s_per_busy_core: f64,
}

/// One throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRun {
    /// Events read.
    pub events: u64,
    /// Wall seconds from start to the last event visible (and checkpointed).
    pub seconds: f64,
    /// Events per second.
    pub events_per_s: f64,
    /// User CPU seconds of the process during the run.
    pub cpu_user_s: f64,
    /// System CPU seconds of the process during the run.
    pub cpu_sys_s: f64,
    /// CPU seconds per wall second: how many cores were busy on average.
    pub busy_cores: f64,
    /// Events per second per busy core.
    pub events_per_s_per_busy_core: f64,
    /// Resident memory before the run (the recording is most of it).
    pub rss_before_bytes: u64,
    /// Peak resident memory during the run.
    pub peak_rss_bytes: u64,
}

/// Rows in one view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewRows {
    /// View name.
    pub view: String,
    /// Rows at the end.
    pub rows: u64,
}

/// Due-to-visible time of every event at a fixed input rate.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// The input rate, events/s.
    pub rate: f64,
    /// The rate actually achieved (events over the phase's wall time).
    pub achieved_rate: f64,
    /// Events measured (every event of the recording).
    pub samples: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: f64,
    /// Maximum, milliseconds.
    pub max_ms: f64,
}

/// Latency of one kind of query on one view.
#[derive(Debug, Clone, Serialize)]
pub struct QueryLatency {
    /// View name.
    pub view: String,
    /// `key_lookup` or `aggregate`.
    pub kind: String,
    /// An example of the SQL sent (key lookups vary the key).
    pub sql: String,
    /// Concurrent clients (all views and kinds share them).
    pub clients: usize,
    /// Answers received.
    pub count: u64,
    /// Answers that were errors.
    pub errors: u64,
    /// The first error's body, if any.
    pub first_error: Option<String>,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Maximum, milliseconds.
    pub max_ms: f64,
}

/// Runs the benchmark.
pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    let mut cfg = crate::config::load(&options.pipeline).map_err(|errors| {
        let text: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        anyhow!("{}", text.join("\n"))
    })?;
    if let Some(dir) = &options.state_dir
        && dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "--state-dir {} is not empty: a benchmark starts from nothing (remove it or pick another)",
            dir.display()
        );
    }
    let source_kind = match &cfg.source {
        SourceConfig::Generator(_) => "generator",
        SourceConfig::File(f) if f.is_stdin() => {
            bail!("bench cannot replay stdin: save the input to a file and use a file source")
        }
        SourceConfig::File(_) => "file",
        SourceConfig::Nexmark(_) => "nexmark",
        SourceConfig::Kafka(_) => "kafka",
    };
    match (options.events, &mut cfg.source) {
        (Some(n), SourceConfig::Generator(g)) => g.events = n,
        (Some(n), SourceConfig::Nexmark(x)) => {
            x.events = n;
            // Recorded before the clock starts anyway.
            x.pregenerate = false;
        }
        _ => {}
    }
    let mut base = RunOptions::resolve(&cfg, None);
    if let Some(w) = options.workers {
        base.workers = w.max(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let SourceConfig::Kafka(k) = &cfg.source {
        return kafka::run(options, &cfg, k, &base, cores);
    }

    // Record the input.
    let started = Instant::now();
    let mut source = projector_connectors::open(&cfg.source, &Resume::new())
        .map_err(|e| anyhow!("opening the source: {e}"))?;
    let bar = bar(options.progress, options.events, "recording input");
    let recording = Recording::record(source.as_mut(), options.events, |n| bar.set_position(n))
        .map_err(|e| anyhow!("recording the input: {e}"))?;
    bar.finish_and_clear();
    drop(source);
    if recording.is_empty() {
        bail!("the source produced no events: nothing to measure");
    }
    let recording = Arc::new(recording);
    let events = recording.len() as u64;
    let record_seconds = started.elapsed().as_secs_f64();
    note(
        options,
        &format!(
            "{}: recorded {} events ({:.1} MB) in {record_seconds:.1} s; {} worker(s) on {cores} cores",
            cfg.name,
            events,
            recording.batch.data.len() as f64 / 1e6,
            base.workers
        ),
    );

    // 1. Throughput.
    let mut runs = Vec::new();
    let mut views = Vec::new();
    for i in 0..options.runs.max(1) {
        let last = i + 1 == options.runs.max(1);
        let dir = match (&options.state_dir, last) {
            (Some(d), true) => StateDir::keep(d.clone()),
            _ => StateDir::temporary(&cfg.name)?,
        };
        let mut opts = base.clone();
        opts.state_dir = dir.path().to_path_buf();
        let label = format!("throughput run {}/{}", i + 1, options.runs.max(1));
        let (run, rows) = throughput_run(&cfg, &opts, &recording, options, &label)?;
        note(
            options,
            &format!(
                "{}: {label}: {} events/s ({:.2} s, {:.2} busy cores, peak RSS {} MB)",
                cfg.name,
                si(run.events_per_s),
                run.seconds,
                run.busy_cores,
                run.peak_rss_bytes / 1_000_000
            ),
        );
        runs.push(run);
        views = rows;
    }
    let throughput = summarize(runs);

    // 2. Freshness and query latency at a fixed rate.
    let (mut freshness, mut queries, mut loaded) = (None, Vec::new(), None);
    if !options.throughput_only {
        let rate = options
            .rate
            .unwrap_or(throughput.median_events_per_s / 2.0)
            .max(1.0);
        // Freshness alone first, then again with the query clients adding their load.
        let dir = StateDir::temporary(&cfg.name)?;
        let mut opts = base.clone();
        opts.state_dir = dir.path().to_path_buf();
        freshness = Some(paced_run(&cfg, &opts, &recording, rate, 0, options)?.0);
        drop(dir);
        if options.query_clients > 0 {
            let dir = StateDir::temporary(&cfg.name)?;
            opts.state_dir = dir.path().to_path_buf();
            let (f, q) = paced_run(
                &cfg,
                &opts,
                &recording,
                rate,
                options.query_clients,
                options,
            )?;
            (loaded, queries) = (Some(f), q);
        }
    }

    Ok(BenchReport {
        pipeline: cfg.name.clone(),
        source: source_kind.into(),
        events,
        workers: base.workers,
        cores,
        record_seconds,
        record_bytes: recording.batch.data.len() as u64,
        throughput,
        views,
        freshness,
        freshness_under_queries: loaded,
        queries,
        kafka: None,
    })
}

fn throughput_run(
    cfg: &PipelineConfig,
    opts: &RunOptions,
    recording: &Arc<Recording>,
    options: &BenchOptions,
    label: &str,
) -> Result<(ThroughputRun, Vec<ViewRows>)> {
    let rss_before = reset_peak_rss();
    let cpu_before = cpu_times()?;
    let started = Instant::now();
    let pipeline = start_replay(cfg, opts, recording, None, &ReplayStart::default())?;
    let shared = pipeline.shared().clone();
    let watch = watch_progress(options.progress, &shared, recording.len() as u64, label);
    finish_run(pipeline, watch, started, cpu_before, rss_before)
}

/// Waits for a throughput run to finish and measures it from `started` (and the CPU
/// times and RSS taken then); returns the run and the views' rows.
fn finish_run(
    pipeline: Pipeline,
    watch: Watch,
    started: Instant,
    cpu_before: (f64, f64),
    rss_before: u64,
) -> Result<(ThroughputRun, Vec<ViewRows>)> {
    let finished = pipeline.wait_until_finished();
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_times()?;
    let peak = peak_rss();
    watch.stop();
    let shared = pipeline.shared().clone();
    let views = view_rows(&shared);
    let read = shared.counters.snapshot().read;
    pipeline.stop().context("stopping the pipeline")?;
    finished.map_err(|e| anyhow!("the pipeline failed: {e}"))?;
    Ok((
        ThroughputRun::new(read, seconds, cpu_before, cpu_after, rss_before, peak),
        views,
    ))
}

impl ThroughputRun {
    /// A run of `events` in `seconds`, from the process's (user, system) CPU seconds
    /// before and after, and its RSS before and at the peak.
    fn new(
        events: u64,
        seconds: f64,
        cpu_before: (f64, f64),
        cpu_after: (f64, f64),
        rss_before: u64,
        peak: u64,
    ) -> ThroughputRun {
        let (user, sys) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
        let busy = (user + sys) / seconds.max(1e-9);
        let events_per_s = events as f64 / seconds.max(1e-9);
        ThroughputRun {
            events,
            seconds,
            events_per_s,
            cpu_user_s: user,
            cpu_sys_s: sys,
            busy_cores: busy,
            events_per_s_per_busy_core: events_per_s / busy.max(1e-9),
            rss_before_bytes: rss_before,
            peak_rss_bytes: peak.max(rss_before),
        }
    }
}

/// Starts the pipeline reading `recording` (paced at `rate`, if given) instead of its
/// configured source.
fn start_replay(
    cfg: &PipelineConfig,
    opts: &RunOptions,
    recording: &Arc<Recording>,
    rate: Option<f64>,
    start: &ReplayStart,
) -> Result<Pipeline> {
    Pipeline::start_with(cfg, opts, &|resume| {
        Ok(Box::new(ReplaySource::new(
            recording.clone(),
            resume,
            rate,
            start.clone(),
        )) as Box<dyn Source>)
    })
    .context("starting the pipeline")
}

fn summarize(runs: Vec<ThroughputRun>) -> Throughput {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.events_per_s).collect();
    rates.sort_by(f64::total_cmp);
    let mut per_core: Vec<f64> = runs.iter().map(|r| r.events_per_s_per_busy_core).collect();
    per_core.sort_by(f64::total_cmp);
    Throughput {
        median_events_per_s: median(&rates),
        min_events_per_s: rates[0],
        max_events_per_s: rates[rates.len() - 1],
        median_events_per_s_per_busy_core: median(&per_core),
        runs,
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn view_rows(shared: &Shared) -> Vec<ViewRows> {
    let published = shared.catalog.current();
    shared
        .catalog
        .views
        .iter()
        .zip(&published.views)
        .map(|(spec, v)| ViewRows {
            view: spec.name.clone(),
            rows: v.row_count(spec).unwrap_or(0) as u64,
        })
        .collect()
}

fn paced_run(
    cfg: &PipelineConfig,
    opts: &RunOptions,
    recording: &Arc<Recording>,
    rate: f64,
    query_clients: usize,
    options: &BenchOptions,
) -> Result<(Freshness, Vec<QueryLatency>)> {
    let runtime = query_runtime().context("starting the query runtime")?;
    let start = ReplayStart::default();
    let pipeline = start_replay(cfg, opts, recording, Some(rate), &start)?;
    let shared = pipeline.shared().clone();
    let sql = Arc::new(SqlEngine::new(
        shared.catalog.clone(),
        QueryLimits::default(),
    )?);
    let state = AppState {
        shared: shared.clone(),
        sql: sql.clone(),
    };
    let addr = serve(&runtime, "127.0.0.1:0", state).context("binding the HTTP API")?;

    let label = if query_clients > 0 {
        format!("{query_clients} SQL clients at {} ev/s", si(rate))
    } else {
        format!("freshness at {} events/s", si(rate))
    };
    let watch = watch_progress(options.progress, &shared, recording.len() as u64, &label);
    let done = Arc::new(AtomicBool::new(false));
    let clients = if query_clients > 0 {
        let queries = prepare_queries(&shared, &sql, &runtime, &done)?;
        start_clients(&format!("http://{addr}"), queries, query_clients, &done)
    } else {
        Clients::default()
    };

    let measured = measure_freshness(&shared, recording, rate, &start);
    let finished = pipeline.wait_until_finished();
    done.store(true, Ordering::SeqCst);
    let wall = start.get().map_or(0.0, |t0| t0.elapsed().as_secs_f64());
    watch.stop();
    let latencies = clients.finish(query_clients);
    let hist = measured
        .join()
        .map_err(|_| anyhow!("freshness thread panicked"))?;
    pipeline.stop().context("stopping the pipeline")?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    finished.map_err(|e| anyhow!("the pipeline failed: {e}"))?;
    let hist = hist?;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok((
        Freshness {
            rate,
            achieved_rate: recording.len() as f64 / wall.max(1e-9),
            samples: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
        },
        latencies,
    ))
}

/// Watches publications: each event is visible from the first published epoch whose
/// offsets cover it, and was due at `t0 + i / rate`.
fn measure_freshness(
    shared: &Arc<Shared>,
    recording: &Arc<Recording>,
    rate: f64,
    start: &ReplayStart,
) -> std::thread::JoinHandle<Result<Histogram<u64>>> {
    let (shared, recording, start) = (shared.clone(), recording.clone(), start.clone());
    std::thread::spawn(move || {
        let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
        // Per partition: (offset, index in the recording), in offset order.
        let parts = recording.partitions.len().max(1);
        let mut by_partition: Vec<Vec<(u64, usize)>> = vec![Vec::new(); parts];
        for (i, r) in recording.batch.records.iter().enumerate() {
            by_partition[r.partition as usize].push((r.offset, i));
        }
        let mut cursor = vec![0usize; parts];
        let total = recording.len() as u64;
        let mut seen_epoch = 0;
        let deadline_idle = Duration::from_secs(120);
        let mut last_change = Instant::now();
        while hist.len() < total {
            shared.progress.wait(Duration::from_millis(5));
            let published = shared.catalog.current();
            let now = Instant::now();
            if published.epoch == seen_epoch {
                if shared.fatal().is_some() || last_change.elapsed() > deadline_idle {
                    bail!("stopped measuring: no new epoch for a long time or the pipeline failed");
                }
                continue;
            }
            seen_epoch = published.epoch;
            last_change = now;
            let Some(t0) = start.get().copied() else {
                continue;
            };
            for (p, list) in by_partition.iter().enumerate() {
                let upto = published.offsets.get(p).copied().unwrap_or(0);
                while cursor[p] < list.len() && list[cursor[p]].0 < upto {
                    let due = ReplaySource::due(t0, list[cursor[p]].1, rate);
                    let us = now.saturating_duration_since(due).as_micros() as u64;
                    hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
                    cursor[p] += 1;
                }
            }
        }
        Ok(hist)
    })
}

/// One kind of query against one view: the SQL for the i-th request.
struct QueryKind {
    view: String,
    kind: &'static str,
    make: Box<dyn Fn(u64) -> String + Send + Sync>,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn sql_literal(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

/// For every view: a lookup of one key (the fold key, or an aggregate's first group
/// column; keys sampled from the view once it has rows) and an aggregate over all rows.
fn prepare_queries(
    shared: &Arc<Shared>,
    sql: &Arc<SqlEngine>,
    runtime: &tokio::runtime::Runtime,
    done: &AtomicBool,
) -> Result<Vec<Arc<QueryKind>>> {
    // Keys to look up: wait (within the run) until every view that will have rows has some.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let published = shared.catalog.current();
        let filled = shared
            .catalog
            .views
            .iter()
            .zip(&published.views)
            .all(|(spec, v)| v.row_count(spec).unwrap_or(0) > 0);
        if filled || Instant::now() > deadline || done.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = Vec::new();
    for (v, spec) in shared.catalog.views.iter().enumerate() {
        let schema = &shared.catalog.schemas[v];
        let table = quote_ident(&spec.name);
        let key_col = match &spec.kind {
            ViewKind::Fold(_) => Some(schema.field(0).name().clone()),
            ViewKind::Aggregate(a) => a.group_by.first().map(|g| g.name.clone()),
            // Append-only: no key; the aggregate over all rows is its query.
            ViewKind::Table(_) => None,
        };
        if let Some(col) = key_col {
            let q = format!(
                "SELECT {c} FROM {table} WHERE {c} IS NOT NULL LIMIT 1000",
                c = quote_ident(&col)
            );
            let result = runtime
                .block_on(sql.query(&q))
                .map_err(|e| anyhow!("sampling keys of {}: {e}", spec.name))?;
            let bytes = crate::output::render(
                &result.schema,
                &result.batches,
                crate::output::OutputFormat::Json,
            )?;
            let rows: Vec<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&bytes)?;
            let keys: Vec<String> = rows
                .iter()
                .filter_map(|r| r.get(&col).map(sql_literal))
                .collect();
            if !keys.is_empty() {
                let (c, t) = (quote_ident(&col), table.clone());
                out.push(Arc::new(QueryKind {
                    view: spec.name.clone(),
                    kind: "key_lookup",
                    make: Box::new(move |i| {
                        let k = &keys[(i as usize).wrapping_mul(7919) % keys.len()];
                        format!("SELECT * FROM {t} WHERE {c} = {k}")
                    }),
                }));
            }
        }
        let mut exprs = vec!["count(*) AS n".to_string()];
        for f in schema.fields() {
            let c = quote_ident(f.name());
            match f.data_type() {
                DataType::Int64 | DataType::Float64 => exprs.push(format!("sum({c})")),
                _ => exprs.push(format!("count({c})")),
            }
        }
        let q = format!("SELECT {} FROM {table}", exprs.join(", "));
        out.push(Arc::new(QueryKind {
            view: spec.name.clone(),
            kind: "aggregate",
            make: Box::new(move |_| q.clone()),
        }));
    }
    Ok(out)
}

#[derive(Default)]
struct Clients {
    threads: Vec<std::thread::JoinHandle<Vec<ClientResult>>>,
    kinds: Vec<Arc<QueryKind>>,
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn start_clients(
    base: &str,
    kinds: Vec<Arc<QueryKind>>,
    n: usize,
    done: &Arc<AtomicBool>,
) -> Clients {
    let counter = Arc::new(AtomicU64::new(0));
    let threads = (0..n)
        .map(|_| {
            let (kinds, done, counter) = (kinds.clone(), done.clone(), counter.clone());
            let url = format!("{base}/sql?format=json");
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut results: Vec<ClientResult> = kinds
                    .iter()
                    .map(|_| ClientResult {
                        hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                            .expect("valid bounds"),
                        errors: 0,
                        first_error: None,
                    })
                    .collect();
                if kinds.is_empty() {
                    return results;
                }
                while !done.load(Ordering::Relaxed) {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let k = (i as usize) % kinds.len();
                    let sql = (kinds[k].make)(i / kinds.len() as u64);
                    let t = Instant::now();
                    let answer = agent
                        .post(&url)
                        .header("content-type", "text/plain")
                        .send(&sql)
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| {
                            let ok = r.status().is_success();
                            let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                            if ok { Ok(()) } else { Err(body) }
                        });
                    let us = t.elapsed().as_micros() as u64;
                    let r = &mut results[k];
                    match answer {
                        Ok(()) => r.hist.saturating_record(us.clamp(1, MAX_LATENCY_US)),
                        Err(e) => {
                            r.errors += 1;
                            r.first_error.get_or_insert(e);
                        }
                    }
                }
                results
            })
        })
        .collect();
    Clients { threads, kinds }
}

impl Clients {
    fn finish(self, clients: usize) -> Vec<QueryLatency> {
        let mut merged: Vec<ClientResult> = self
            .kinds
            .iter()
            .map(|_| ClientResult {
                hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
                errors: 0,
                first_error: None,
            })
            .collect();
        for t in self.threads {
            let Ok(results) = t.join() else { continue };
            for (m, r) in merged.iter_mut().zip(results) {
                let _ = m.hist.add(&r.hist);
                m.errors += r.errors;
                if m.first_error.is_none() {
                    m.first_error = r.first_error;
                }
            }
        }
        let ms = |us: u64| us as f64 / 1000.0;
        self.kinds
            .iter()
            .zip(merged)
            .map(|(k, m)| QueryLatency {
                view: k.view.clone(),
                kind: k.kind.into(),
                sql: (k.make)(0),
                clients,
                count: m.hist.len(),
                errors: m.errors,
                first_error: m.first_error,
                p50_ms: ms(m.hist.value_at_quantile(0.5)),
                p99_ms: ms(m.hist.value_at_quantile(0.99)),
                max_ms: ms(m.hist.max()),
            })
            .collect()
    }
}

/// A state directory: temporary (removed when dropped) or kept.
struct StateDir {
    path: PathBuf,
    remove: bool,
}

impl StateDir {
    fn temporary(name: &str) -> Result<StateDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "projector-bench-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(StateDir { path, remove: true })
    }

    fn keep(path: PathBuf) -> StateDir {
        StateDir {
            path,
            remove: false,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// (user, system) CPU seconds of this process so far.
fn cpu_times() -> Result<(f64, f64)> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok((secs(u.user_time()), secs(u.system_time())))
}

/// Resets the kernel's peak-RSS mark of this process (Linux: `5` to
/// `/proc/self/clear_refs`) and returns the current RSS in bytes (0 where unknown).
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    proc_status_kb("VmRSS:") * 1024
}

/// Peak RSS since the last reset, in bytes (0 where unknown).
fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn bar(visible: bool, len: Option<u64>, label: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {human_pos}/{human_len} events · {per_sec} · {elapsed}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A progress bar over the events read, refreshed from the counters.
fn watch_progress(visible: bool, shared: &Arc<Shared>, total: u64, label: &str) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    if !visible {
        return Watch { stop, thread: None };
    }
    let b = bar(true, Some(total), label);
    let (flag, shared) = (stop.clone(), shared.clone());
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            b.set_position(shared.counters.read.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        b.finish_and_clear();
    });
    Watch {
        stop,
        thread: Some(thread),
    }
}

fn note(options: &BenchOptions, line: &str) {
    if options.progress {
        eprintln!("{line}");
    }
}

/// `1.23M`, `456.7K`, `89`.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The report as a table for people.
pub fn render_table(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "projector bench: {} · {} events from {} ({:.1} MB {}) · {} worker(s) · {} cores",
        r.pipeline,
        r.events,
        r.source,
        r.record_bytes as f64 / 1e6,
        if r.kafka.is_some() {
            "produced"
        } else {
            "recorded"
        },
        r.workers,
        r.cores
    );
    let t = &r.throughput;
    let _ = writeln!(
        out,
        "\nthroughput   {} events/s median of {} (range {} - {}) · {} events/s per busy core",
        si(t.median_events_per_s),
        t.runs.len(),
        si(t.min_events_per_s),
        si(t.max_events_per_s),
        si(t.median_events_per_s_per_busy_core)
    );
    for (i, run) in t.runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  run {:<2} {:>9} events/s  {:>6.2} s  cpu {:.2} s user + {:.2} s sys = {:.2} busy cores  peak RSS {} MB (input {} MB)",
            i + 1,
            si(run.events_per_s),
            run.seconds,
            run.cpu_user_s,
            run.cpu_sys_s,
            run.busy_cores,
            run.peak_rss_bytes / 1_000_000,
            run.rss_before_bytes / 1_000_000,
        );
    }
    if let Some(k) = &r.kafka {
        let _ = writeln!(
            out,
            "\nkafka        topic {} ({} partitions, filled in {:.1} s) · bare rdkafka consumer {} events/s median of {} · pipeline at {:.0} % of it",
            k.topic,
            k.partitions,
            k.produce_seconds,
            si(k.bare_median_events_per_s),
            k.bare_runs.len(),
            100.0 * k.ratio
        );
        for (i, (bare, join)) in k
            .bare_runs
            .iter()
            .zip(&k.pipeline_first_record_s)
            .enumerate()
        {
            let _ = writeln!(
                out,
                "  run {:<2} bare {:>9} events/s  {:>6.2} s (group join {:.1} s) · pipeline group join {:.1} s",
                i + 1,
                si(bare.events_per_s),
                bare.seconds,
                bare.first_message_s,
                join
            );
        }
        let _ = writeln!(
            out,
            "  (both clocks start at the first message; freshness and queries are measured on recorded input)"
        );
    }
    let _ = writeln!(out, "\nviews");
    for v in &r.views {
        let _ = writeln!(out, "  {:<28} {:>12} rows", v.view, v.rows);
    }
    for (label, f) in [
        ("\nfreshness   ", &r.freshness),
        ("  with SQL  ", &r.freshness_under_queries),
    ] {
        if let Some(f) = f {
            let _ = writeln!(
                out,
                "{label} at {} events/s (achieved {}): p50 {:.1} ms · p99 {:.1} ms · p99.9 {:.1} ms · max {:.1} ms ({} events)",
                si(f.rate),
                si(f.achieved_rate),
                f.p50_ms,
                f.p99_ms,
                f.p999_ms,
                f.max_ms,
                f.samples
            );
        }
    }
    if !r.queries.is_empty() {
        let _ = writeln!(
            out,
            "\nqueries      over HTTP while ingesting, {} client(s)",
            r.queries[0].clients
        );
        for q in &r.queries {
            let _ = writeln!(
                out,
                "  {:<24} {:<10} {:>7} answers  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms{}",
                q.view,
                q.kind,
                q.count,
                q.p50_ms,
                q.p99_ms,
                q.max_ms,
                if q.errors > 0 {
                    format!(
                        "  {} ERRORS: {}",
                        q.errors,
                        q.first_error.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    out
}
