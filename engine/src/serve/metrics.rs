//! `GET /metrics`: the pipeline in the Prometheus text format (0.0.4).
//!
//! Almost everything is read at scrape time from what the pipeline keeps anyway (its
//! counters, positions, checkpoint status, parked keys, the watchdog's findings), so
//! ingestion pays nothing for being watched. Only what has no other home is recorded
//! as it happens, in [`Metrics`]: how long epochs take to publish and checkpoints to
//! write, how large checkpoints are, queries per face, and stalls. Every series has the
//! label `pipeline`. docs/metrics.md lists them all.

use crate::runtime::pipeline::Shared;
use crate::serve::query::SqlEngine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The media type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What is recorded as it happens (everything else is read at scrape time).
#[derive(Debug)]
pub(crate) struct Metrics {
    epoch_publish: Histogram,
    checkpoint_duration: Histogram,
    checkpoint_bytes: Histogram,
    queries: Family<Vec<(&'static str, String)>, Counter>,
    query_duration: Family<Vec<(&'static str, String)>, Histogram>,
    stalls: Family<Vec<(&'static str, String)>, Counter>,
    /// When the pipeline started (Unix seconds), fixed once.
    started_unix: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        // 1 ms to ~65 s: epochs publish every 50 ms, a slow store takes seconds.
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let stalls: Family<Vec<(&'static str, String)>, Counter> = Family::default();
        // Every check's count is there from the start, at 0.
        for check in crate::runtime::watchdog::CHECKS {
            let _ = stalls.get_or_create(&vec![("check", check.to_string())]);
        }
        Metrics {
            epoch_publish: seconds(),
            checkpoint_duration: seconds(),
            // 1 KiB to 64 GiB.
            checkpoint_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 14)),
            queries: Family::default(),
            query_duration: Family::new_with_constructor(|| {
                // 100 µs to ~105 s.
                Histogram::new(exponential_buckets(0.0001, 2.0, 21))
            }),
            stalls,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

impl Metrics {
    /// An epoch was published `took` after it was cut.
    pub(crate) fn epoch_published(&self, took: Duration) {
        self.epoch_publish.observe(took.as_secs_f64());
    }

    /// A checkpoint of `bytes` took `took` to write.
    pub(crate) fn checkpoint_written(&self, took: Duration, bytes: u64) {
        self.checkpoint_duration.observe(took.as_secs_f64());
        self.checkpoint_bytes.observe(bytes as f64);
    }

    /// A query over `face` (`http`, `cluster`, `pg`) ended with `code` (`ok`, or its
    /// error's code) after `took`.
    pub(crate) fn query(&self, face: &str, code: &str, took: Duration) {
        self.queries
            .get_or_create(&vec![
                ("face", face.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
        self.query_duration
            .get_or_create(&vec![("face", face.to_string())])
            .observe(took.as_secs_f64());
    }

    /// The watchdog found `check` (`partition`, `epoch`, `checkpoint`) stalled.
    pub(crate) fn stalled(&self, check: &str) {
        self.stalls
            .get_or_create(&vec![("check", check.to_string())])
            .inc();
    }
}

/// The metrics of `shared`, with those of its SQL engine, as Prometheus text.
pub(crate) fn render(shared: &Arc<Shared>, sql: &Arc<SqlEngine>) -> String {
    let mut registry = Registry::with_labels(
        [(Cow::Borrowed("pipeline"), Cow::Owned(shared.name.clone()))].into_iter(),
    );
    let m = &shared.metrics;
    registry.register(
        "projector_epoch_publish_seconds",
        "Time from an epoch's cut to its publication to queries",
        m.epoch_publish.clone(),
    );
    registry.register(
        "projector_checkpoint_duration_seconds",
        "Time to write a checkpoint (every unit's state and offsets)",
        m.checkpoint_duration.clone(),
    );
    registry.register(
        "projector_checkpoint_size_bytes",
        "Bytes of state a checkpoint wrote",
        m.checkpoint_bytes.clone(),
    );
    registry.register(
        "projector_queries",
        "SQL queries answered, by face and outcome (ok, or the error code)",
        m.queries.clone(),
    );
    registry.register(
        "projector_query_duration_seconds",
        "Time from a query's arrival to its answer, by face",
        m.query_duration.clone(),
    );
    registry.register(
        "projector_stalls",
        "Times the watchdog found a check stalled (partition, epoch, checkpoint)",
        m.stalls.clone(),
    );
    registry.register_collector(Box::new(Scrape {
        shared: shared.clone(),
        sql: sql.clone(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String does not fail");
    out
}

/// Reads the pipeline at scrape time.
struct Scrape {
    shared: Arc<Shared>,
    sql: Arc<SqlEngine>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

/// Writes one series without labels.
fn one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let help = format!("{help}.");
    let e = encoder.encode_descriptor(name, &help, None, metric.metric_type())?;
    metric.encode(e)
}

/// Writes one series per `(label value, metric)`, labelled `label`.
fn each<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    label: &'static str,
    series: impl IntoIterator<Item = (String, M)>,
) -> Result<(), std::fmt::Error> {
    let help = format!("{help}.");
    let mut e = encoder.encode_descriptor(name, &help, None, metric_type)?;
    for (value, metric) in series {
        let labels = [(label, value)];
        metric.encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.shared;
        let c = &s.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 9] = [
            (
                "projector_records_read",
                "Records read from the source, good and bad",
                load(&c.read),
            ),
            (
                "projector_events_applied",
                "Events applied to the views",
                load(&c.applied),
            ),
            (
                "projector_duplicate_events",
                "Events dropped as repeats (an older version, or an id seen before)",
                load(&c.duplicates),
            ),
            (
                "projector_dead_letters",
                "Bad records sent to the dead letters",
                load(&c.dead_letters),
            ),
            (
                "projector_bad_records_skipped",
                "Bad records skipped (on_error: skip)",
                load(&c.skipped),
            ),
            (
                "projector_records_ignored",
                "Records left alone by design (ignored tombstones, dropped by an upcaster)",
                load(&c.ignored),
            ),
            (
                "projector_parked_events",
                "Events that parked their key or were held for a parked key",
                load(&c.parked),
            ),
            (
                "projector_backpressure_pauses",
                "Times reading paused because a worker's queue was full",
                load(&c.pauses),
            ),
            (
                "projector_rebalances",
                "Partition assignments and revocations this instance took part in",
                load(&c.rebalances),
            ),
        ];
        for (name, help, value) in counters {
            one(&mut e, name, help, ConstCounter::new(value))?;
        }
        let (keys, held) = s.parked.totals();
        let progress = s.progress.get();
        let checkpoint = s.checkpoints.get();
        let (running, waiting) = self.sql.load();
        let gauges: [(&str, &str, i64); 8] = [
            (
                "projector_parked_keys",
                "Keys parked now (on_error: park)",
                keys as i64,
            ),
            (
                "projector_parked_held_events",
                "Events the parked keys hold",
                held as i64,
            ),
            (
                "projector_backpressure_paused",
                "1 while reading is paused by backpressure",
                load(&c.paused) as i64,
            ),
            (
                "projector_epoch",
                "The newest epoch published to queries",
                progress.epoch as i64,
            ),
            (
                "projector_checkpoint_epoch",
                "The epoch of the newest checkpoint (0: none yet)",
                checkpoint.epoch as i64,
            ),
            (
                "projector_query_running",
                "Queries running now",
                running as i64,
            ),
            (
                "projector_query_waiting",
                "Queries waiting for a slot",
                waiting as i64,
            ),
            (
                "projector_degraded",
                "1 while the pipeline is degraded (see /health for why)",
                i64::from(s.degraded().is_some()),
            ),
        ];
        for (name, help, value) in gauges {
            one(&mut e, name, help, ConstGauge::new(value))?;
        }
        one(
            &mut e,
            "projector_failed",
            "1 once the pipeline stopped on an error (see /health)",
            ConstGauge::new(i64::from(s.fatal().is_some())),
        )?;
        one(
            &mut e,
            "projector_checkpoint_last_success_timestamp_seconds",
            "When the newest checkpoint was written (Unix time; 0: none yet)",
            ConstGauge::new(checkpoint.written_ms as f64 / 1000.0),
        )?;

        // Only the partitions this instance reads: with many partitions and instances,
        // every instance's stale copy of every partition would multiply the series.
        let watched = s.watchdog.progress_times();
        let (positions, watched): (Vec<_>, Vec<_>) = s
            .positions
            .snapshot()
            .into_iter()
            .enumerate()
            .filter(|(_, p)| p.assigned)
            .map(|(i, p)| (p, watched.get(i).copied().unwrap_or(0)))
            .unzip();
        each(
            &mut e,
            "projector_partition_lag",
            "Records of a partition not read yet (high watermark minus next offset)",
            MetricType::Gauge,
            "partition",
            positions.iter().filter_map(|p| {
                p.lag
                    .map(|l| (p.partition.clone(), ConstGauge::new(l as i64)))
            }),
        )?;
        each(
            &mut e,
            "projector_partition_next_offset",
            "The next offset this instance reads in a partition",
            MetricType::Gauge,
            "partition",
            positions
                .iter()
                .map(|p| (p.partition.clone(), ConstGauge::new(p.next_offset as i64))),
        )?;
        each(
            &mut e,
            "projector_partition_published_offset",
            "The offset of a partition the newest published epoch covers",
            MetricType::Gauge,
            "partition",
            positions.iter().map(|p| {
                (
                    p.partition.clone(),
                    ConstGauge::new(p.published_offset as i64),
                )
            }),
        )?;
        each(
            &mut e,
            "projector_partition_assigned",
            "1 for each partition this instance reads",
            MetricType::Gauge,
            "partition",
            positions
                .iter()
                .map(|p| (p.partition.clone(), ConstGauge::new(i64::from(p.assigned)))),
        )?;
        each(
            &mut e,
            "projector_partition_last_progress_timestamp_seconds",
            "When a partition's next offset last moved, or its lag was last 0 (Unix time)",
            MetricType::Gauge,
            "partition",
            positions
                .iter()
                .zip(&watched)
                .map(|(p, at)| (p.partition.clone(), ConstGauge::new(*at as f64 / 1000.0))),
        )?;
        each(
            &mut e,
            "projector_stalled",
            "1 while the watchdog finds a check stalled (partition, epoch, checkpoint)",
            MetricType::Gauge,
            "check",
            crate::runtime::watchdog::CHECKS.iter().map(|&check| {
                let stalled = s.watchdog.is_stalled(check);
                (check.to_string(), ConstGauge::new(i64::from(stalled)))
            }),
        )?;
        let published = s.catalog.current();
        each(
            &mut e,
            "projector_view_rows",
            "Rows of a fold view in the newest published epoch",
            MetricType::Gauge,
            "view",
            // Fold views only: their count is kept; other views' would be computed
            // from their rows on every scrape.
            s.catalog.views.iter().enumerate().filter_map(|(i, v)| {
                let fold = matches!(v.kind, projector_operators::view::ViewKind::Fold(_));
                fold.then(|| published.views[i].row_count(v))
                    .flatten()
                    .map(|n| (v.name.clone(), ConstGauge::new(n as i64)))
            }),
        )?;
        process(&mut e, s)
    }
}

/// The process's CPU time, memory, open files and start time (Linux).
fn process(e: &mut DescriptorEncoder<'_>, shared: &Shared) -> Result<(), std::fmt::Error> {
    use nix::sys::resource::{UsageWho, getrusage};
    if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        one(
            e,
            "process_cpu_seconds",
            "User and system CPU time the process used",
            ConstCounter::new(secs(usage.user_time()) + secs(usage.system_time())),
        )?;
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        };
        if let Some(rss) = kb("VmRSS:") {
            one(
                e,
                "process_resident_memory_bytes",
                "Resident memory of the process",
                ConstGauge::new(rss * 1024),
            )?;
        }
        if let Some(size) = kb("VmSize:") {
            one(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory of the process",
                ConstGauge::new(size * 1024),
            )?;
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        one(
            e,
            "process_open_fds",
            "Open file descriptors of the process",
            ConstGauge::new(fds.count() as i64),
        )?;
    }
    one(
        e,
        "process_start_time_seconds",
        "When the pipeline started (Unix time)",
        ConstGauge::new(shared.metrics.started_unix),
    )
}
