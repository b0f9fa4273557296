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
//!
//! With `--against-loop`, each throughput run is followed by a pass of the hand-written
//! loop ([`crate::handwritten`]) over the same recording, and Projector's rate is given
//! as a ratio of the loop's; the views of the last run must equal the loop's.

mod freshness;
mod kafka;
mod queries;
mod report;
mod system;

pub use kafka::{BareRun, KafkaBaseline};
pub use report::{render_table, si};

use crate::replay::{Recording, ReplaySource, ReplayStart};
use anyhow::{Context, Result, anyhow, bail};
use freshness::paced_run;
use projector_connectors::{Resume, Source, SourceConfig};
use projector_engine::config::PipelineConfig;
use projector_engine::{Pipeline, RunOptions, Shared};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use system::{StateDir, Watch, bar, cpu_times, note, peak_rss, reset_peak_rss, watch_progress};

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
    /// How the clients ask: over HTTP, or over the Postgres protocol with prepared
    /// statements.
    pub query_face: QueryFace,
    /// Throughput runs (the report gives the median and the spread).
    pub runs: usize,
    /// Worker threads (default as for `projector run`).
    pub workers: Option<usize>,
    /// Keep the last throughput run's state here (must be empty or absent), so its
    /// views can be checked afterwards with `projector run --once --state-dir`.
    pub state_dir: Option<PathBuf>,
    /// Skip the freshness and query phase.
    pub throughput_only: bool,
    /// After each throughput run, fold the same recording with the hand-written loop
    /// (the bank pipeline's views only) and report Projector's rate as a ratio of it.
    pub against_loop: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
}

/// How the benchmark's SQL clients reach the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryFace {
    /// `POST /sql`, each query as text with its key as a literal.
    #[default]
    Http,
    /// The Postgres protocol (tokio-postgres): each query prepared once per client,
    /// a key lookup run with its key as a parameter.
    Pg,
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
    /// With `--against-loop`: the hand-written loop's rates and Projector's ratio.
    pub against_loop: Option<LoopComparison>,
}

/// Projector against the hand-written loop, run after run on the same recording.
#[derive(Debug, Clone, Serialize)]
pub struct LoopComparison {
    /// The loop's events/s, one per throughput run (after it).
    pub runs: Vec<f64>,
    /// Median of the loop's events/s.
    pub median_events_per_s: f64,
    /// Projector's events/s over the loop's, run by run: the median.
    pub ratio: f64,
    /// The lowest of the run-by-run ratios.
    pub ratio_min: f64,
    /// The highest of the run-by-run ratios.
    pub ratio_max: f64,
    /// A summary of the views both computed (equal row by row, or the bench fails).
    pub digest: crate::handwritten::Digest,
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
    /// How they asked.
    pub face: QueryFace,
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
    let mut cfg = projector_engine::config::load(&options.pipeline).map_err(|errors| {
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
    if options.against_loop {
        if matches!(cfg.source, SourceConfig::Kafka(_)) {
            bail!(
                "--against-loop replays a recorded input (a generator or a file source); a \
                 Kafka pipeline is compared with the bare consumer instead"
            );
        }
        crate::handwritten::check_pipeline(&cfg)?;
    }
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
    let mut loops = Vec::new();
    let mut both_views = None;
    for i in 0..options.runs.max(1) {
        let last = i + 1 == options.runs.max(1);
        let dir = match (&options.state_dir, last) {
            (Some(d), true) => StateDir::keep(d.clone()),
            _ => StateDir::temporary(&cfg.name)?,
        };
        let mut opts = base.clone();
        opts.state_dir = dir.path().to_path_buf();
        let label = format!("throughput run {}/{}", i + 1, options.runs.max(1));
        let (run, rows, shared) = throughput_run(&cfg, &opts, &recording, options, &label)?;
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
        if options.against_loop {
            let mut pass = crate::handwritten::run(&recording);
            note(
                options,
                &format!(
                    "{}: hand-written loop after run {}: {} events/s ({:.2} s, 1 thread): Projector at {:.2}x",
                    cfg.name,
                    i + 1,
                    si(pass.events_per_s),
                    pass.seconds,
                    run.events_per_s / pass.events_per_s.max(1e-9)
                ),
            );
            // The last run's views are compared (only they are kept: 1M keys are
            // ~100 MB a copy).
            let views = std::mem::take(&mut pass.views);
            if last {
                both_views = Some((crate::handwritten::views_of(&shared)?, views));
            }
            loops.push(pass);
        }
        runs.push(run);
        views = rows;
    }
    let against_loop = match both_views {
        None => None,
        Some((projector, handwritten)) => {
            if let Some(difference) = projector.first_difference(&handwritten) {
                bail!(
                    "the hand-written loop and the pipeline disagree, so their rates cannot be \
                     compared (is this the bank pipeline's logic, on clean input?): {difference} \
                     (the pipeline's row first)\n  pipeline: {:?}\n  loop:     {:?}",
                    projector.digest(),
                    handwritten.digest()
                );
            }
            Some(compare(&runs, &loops, projector.digest()))
        }
    };
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
        against_loop,
    })
}

/// Projector's runs against the loop's passes, pair by pair.
fn compare(
    runs: &[ThroughputRun],
    loops: &[crate::handwritten::LoopRun],
    digest: crate::handwritten::Digest,
) -> LoopComparison {
    let mut rates: Vec<f64> = loops.iter().map(|l| l.events_per_s).collect();
    let mut ratios: Vec<f64> = runs
        .iter()
        .zip(loops)
        .map(|(r, l)| r.events_per_s / l.events_per_s.max(1e-9))
        .collect();
    let by_rate = rates.clone();
    rates.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    LoopComparison {
        runs: by_rate,
        median_events_per_s: median(&rates),
        ratio: median(&ratios),
        ratio_min: ratios[0],
        ratio_max: ratios[ratios.len() - 1],
        digest,
    }
}

fn throughput_run(
    cfg: &PipelineConfig,
    opts: &RunOptions,
    recording: &Arc<Recording>,
    options: &BenchOptions,
    label: &str,
) -> Result<(ThroughputRun, Vec<ViewRows>, Arc<Shared>)> {
    let rss_before = reset_peak_rss();
    let cpu_before = cpu_times()?;
    let started = Instant::now();
    let pipeline = start_replay(cfg, opts, recording, None, &ReplayStart::default())?;
    let shared = pipeline.shared().clone();
    let watch = watch_progress(options.progress, &shared, recording.len() as u64, label);
    finish_run(pipeline, watch, started, cpu_before, rss_before)
}

/// Waits for a throughput run to finish and measures it from `started` (and the CPU
/// times and RSS taken then); returns the run, the views' rows, and what the stopped
/// pipeline shares (its last published views stay readable).
fn finish_run(
    pipeline: Pipeline,
    watch: Watch,
    started: Instant,
    cpu_before: (f64, f64),
    rss_before: u64,
) -> Result<(ThroughputRun, Vec<ViewRows>, Arc<Shared>)> {
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
        shared,
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
