//! `projector bench` on a Kafka pipeline: the topic is filled first, then each run
//! reads it twice, once with a bare rdkafka consumer (the baseline) and once with the
//! pipeline, so the report shows Projector's rate as a share of the bare consumer's on
//! the same broker, topic and machine.
//!
//! ```text
//!  bank generator ──produce──▶ fresh topic (4 partitions, N events)
//!  per run: bare consumer (fresh group) ──▶ messages/s from its first message
//!           pipeline (fresh group, fresh state, --once) ──▶ events/s from its first
//!           record to the last event visible and checkpointed
//! ```
//!
//! Both clocks start at the first message, so the consumer-group join (seconds on
//! Tansu, the same for both) is reported apart. Freshness and query latency are
//! measured on recorded input (generator, file, nexmark sources), not here.

use super::{
    BenchOptions, BenchReport, StateDir, ThroughputRun, ViewRows, bar, cpu_times, finish_run,
    median, note, reset_peak_rss, si, summarize, watch_progress,
};
use crate::baseline::{BareRead, bare_read};
use anyhow::{Context, Result, anyhow};
use projector_connectors::SourceConfig;
use projector_connectors::generator::{GeneratorConfig, GeneratorSource, scenario_from_name};
use projector_connectors::kafka::{EventProducer, KafkaConfig, ensure_topic};
use projector_engine::config::PipelineConfig;
use projector_engine::{Pipeline, RunOptions};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Events produced when `--events` is not given.
const DEFAULT_EVENTS: u64 = 1_000_000;
/// Partitions of the benchmark topic.
const PARTITIONS: i32 = 4;
/// Distinct keys of the produced events (`projector produce`'s default).
const KEYS: u64 = 10_000;
/// Seed of the produced events (`projector produce`'s default).
const SEED: u64 = 42;
/// The longest one read of the topic may take.
const READ_TIMEOUT: Duration = Duration::from_secs(600);

/// The Kafka side of a report: the topic and the bare consumer's runs.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaBaseline {
    /// The topic the benchmark filled and read (left on the broker).
    pub topic: String,
    /// Its partitions.
    pub partitions: i32,
    /// Distinct keys of the produced events (the bank generator).
    pub keys: u64,
    /// Seed of the produced events.
    pub seed: u64,
    /// Seconds to fill the topic (not part of any figure).
    pub produce_seconds: f64,
    /// Each bare consumer run, one before each pipeline run.
    pub bare_runs: Vec<BareRun>,
    /// Median messages/s of the bare consumer.
    pub bare_median_events_per_s: f64,
    /// The pipeline's median events/s over the bare consumer's median.
    pub ratio: f64,
    /// Seconds from the pipeline's start to its first record (the group join), per run.
    pub pipeline_first_record_s: Vec<f64>,
}

/// One read of the topic by the bare consumer.
#[derive(Debug, Clone, Serialize)]
pub struct BareRun {
    /// Messages read.
    pub messages: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Seconds until the first message (the group join).
    pub first_message_s: f64,
    /// Seconds from the first message to the end of every partition.
    pub seconds: f64,
    /// Messages per second from the first message on.
    pub events_per_s: f64,
}

impl From<&BareRead> for BareRun {
    fn from(r: &BareRead) -> Self {
        BareRun {
            messages: r.messages,
            bytes: r.bytes,
            first_message_s: r.first_message_s,
            seconds: r.reading_s,
            events_per_s: r.messages_per_s(),
        }
    }
}

/// Runs the Kafka benchmark of `cfg` (whose source is `kafka`).
pub(super) fn run(
    options: &BenchOptions,
    cfg: &PipelineConfig,
    kafka: &KafkaConfig,
    base: &RunOptions,
    cores: usize,
) -> Result<BenchReport> {
    let events = options.events.unwrap_or(DEFAULT_EVENTS);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let topic = format!("projector-bench-{}-{stamp}", cfg.name);

    // Fill the topic.
    let started = Instant::now();
    ensure_topic(&kafka.brokers, &kafka.properties, &topic, PARTITIONS)
        .with_context(|| format!("creating topic '{topic}' on {}", kafka.brokers))?;
    let producer = EventProducer::new(&kafka.brokers, &kafka.properties, &topic)?;
    let generator = GeneratorConfig {
        scenario: scenario_from_name("bank").expect("the bank scenario exists"),
        events,
        keys: KEYS,
        seed: SEED,
    };
    let mut source = GeneratorSource::new(&generator, &projector_connectors::Resume::new());
    let fill = bar(options.progress, Some(events), "filling the topic");
    let sent = producer
        .send_all(&mut source, |n| fill.set_position(n))
        .with_context(|| format!("producing to '{topic}'"))?;
    fill.finish_and_clear();
    drop(producer);
    let produce_seconds = started.elapsed().as_secs_f64();
    note(
        options,
        &format!(
            "{}: produced {sent} events to {topic} ({PARTITIONS} partitions) on {} in {produce_seconds:.1} s; {} worker(s) on {cores} cores",
            cfg.name, kafka.brokers, base.workers
        ),
    );

    let (mut runs, mut bare_runs, mut joins) = (Vec::new(), Vec::new(), Vec::new());
    let mut views = Vec::new();
    let mut bytes = 0;
    let total = options.runs.max(1);
    for i in 0..total {
        let spinner = bar(options.progress, None, "bare consumer");
        spinner.enable_steady_tick(Duration::from_millis(100));
        let bare = bare_read(
            &kafka.brokers,
            &kafka.properties,
            &topic,
            &format!("{topic}-bare-{i}"),
            READ_TIMEOUT,
        )
        .context("the bare consumer")?;
        spinner.finish_and_clear();
        if bare.messages != sent {
            return Err(anyhow!(
                "the bare consumer read {} of the {sent} messages of '{topic}'",
                bare.messages
            ));
        }
        bytes = bare.bytes;
        note(
            options,
            &format!(
                "{}: run {}/{total}: bare consumer {} events/s",
                cfg.name,
                i + 1,
                si(bare.messages_per_s())
            ),
        );
        bare_runs.push(BareRun::from(&bare));

        let last = i + 1 == total;
        let dir = match (&options.state_dir, last) {
            (Some(d), true) => StateDir::keep(d.clone()),
            _ => StateDir::temporary(&cfg.name)?,
        };
        let mut opts = base.clone();
        opts.state_dir = dir.path().to_path_buf();
        let mut run_cfg = cfg.clone();
        let SourceConfig::Kafka(k) = &mut run_cfg.source else {
            unreachable!("the caller passes Kafka pipelines only");
        };
        k.topics = vec![topic.clone()];
        k.group_id = format!("{topic}-pipeline-{i}");
        k.stop_at_end = true;
        let label = format!("pipeline run {}/{total}", i + 1);
        let (run, join, rows) = pipeline_run(&run_cfg, &opts, sent, options, &label)?;
        note(
            options,
            &format!(
                "{}: {label}: {} events/s ({:.0} % of the bare consumer; {:.2} s, {:.2} busy cores, group join {join:.1} s)",
                cfg.name,
                si(run.events_per_s),
                100.0 * run.events_per_s / bare.messages_per_s().max(1e-9),
                run.seconds,
                run.busy_cores,
            ),
        );
        runs.push(run);
        joins.push(join);
        views = rows;
    }
    let throughput = summarize(runs);
    let mut bare_rates: Vec<f64> = bare_runs.iter().map(|r| r.events_per_s).collect();
    bare_rates.sort_by(f64::total_cmp);
    let bare_median = median(&bare_rates);
    Ok(BenchReport {
        pipeline: cfg.name.clone(),
        source: "kafka".into(),
        events: sent,
        workers: base.workers,
        cores,
        record_seconds: produce_seconds,
        record_bytes: bytes,
        against_loop: None,
        kafka: Some(KafkaBaseline {
            topic,
            partitions: PARTITIONS,
            keys: KEYS,
            seed: SEED,
            produce_seconds,
            ratio: throughput.median_events_per_s / bare_median.max(1e-9),
            bare_runs,
            bare_median_events_per_s: bare_median,
            pipeline_first_record_s: joins,
        }),
        throughput,
        views,
        freshness: None,
        freshness_under_queries: None,
        queries: Vec::new(),
    })
}

/// One pipeline run over the whole topic: from its first record to the last event
/// visible and checkpointed. Returns the run, the seconds before the first record, and
/// the views' rows.
fn pipeline_run(
    cfg: &PipelineConfig,
    opts: &RunOptions,
    events: u64,
    options: &BenchOptions,
    label: &str,
) -> Result<(ThroughputRun, f64, Vec<ViewRows>)> {
    let rss_before = reset_peak_rss();
    let started = Instant::now();
    let pipeline = Pipeline::start(cfg, opts).context("starting the pipeline")?;
    let shared = pipeline.shared().clone();
    let watch = watch_progress(options.progress, &shared, events, label);
    // The clock (and the CPU count) starts at the first record.
    let (first, cpu_before) = loop {
        if shared.first_read_us.load(Ordering::Relaxed) != 0 {
            break (Instant::now(), cpu_times()?);
        }
        if let Some(e) = shared.fatal() {
            watch.stop();
            return Err(anyhow!("the pipeline failed: {e}"));
        }
        if started.elapsed() > READ_TIMEOUT {
            watch.stop();
            return Err(anyhow!("no record arrived within {READ_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let join = first.duration_since(started).as_secs_f64();
    let (run, views, _) = finish_run(pipeline, watch, first, cpu_before, rss_before)?;
    if run.events != events {
        return Err(anyhow!(
            "the pipeline read {} of the {events} events",
            run.events
        ));
    }
    Ok((run, join, views))
}
