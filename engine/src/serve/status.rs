//! Counters and positions, shared by the ingest thread, workers and the HTTP face.

use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals of a pipeline.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read from the source (good and bad).
    pub read: AtomicU64,
    /// Events applied to the views.
    pub applied: AtomicU64,
    /// Events skipped because their version was not newer than the key's last one.
    pub duplicates: AtomicU64,
    /// Bad records written to the dead-letter destination.
    pub dead_letters: AtomicU64,
    /// Bad records skipped (`on_error: skip`).
    pub skipped: AtomicU64,
    /// Records left alone by design: tombstones and Debezium deletes under
    /// `on_tombstone: ignore`, and Debezium's tombstones after its deletes.
    pub ignored: AtomicU64,
    /// Times the source was paused because a worker's channel was full.
    pub pauses: AtomicU64,
    /// 1 while the source is paused (backpressure), else 0.
    pub paused: AtomicU64,
    /// Event ids the keys remember (`dedup:`), as of each worker's last checkpoint.
    pub dedup_ids: AtomicU64,
    /// Bytes of those ids' text.
    pub dedup_bytes: AtomicU64,
    /// Events that parked their key, or were held for a parked key (`on_error: park`).
    pub parked: AtomicU64,
    /// Dead letters replayed: what became of them (see `RedriveCounts`).
    pub redrive: RedriveCounters,
    /// Partition assignments and revocations (a consumer-group rebalance gives one
    /// or both).
    pub rebalances: AtomicU64,
}

/// What became of the dead letters a run replays.
#[derive(Debug, Default)]
pub struct RedriveCounters {
    /// Handed to the ingest thread, to replay.
    pub queued: AtomicU64,
    /// Applied to the views.
    pub applied: AtomicU64,
    /// Dropped as duplicates (version or id) or by design (an upcaster, an ignored
    /// tombstone).
    pub dropped: AtomicU64,
    /// Replayed by an earlier run into the same state: not applied again.
    pub before: AtomicU64,
    /// Failed again: left as they are.
    pub failed: AtomicU64,
    /// The first failures, `partition offset: code: message`.
    pub failures: Mutex<Vec<String>>,
}

/// Most failures [`RedriveCounters::failures`] keeps.
const MAX_FAILURES: usize = 20;

impl RedriveCounters {
    /// Counts a letter that failed again, keeping the first few reasons.
    pub fn fail(&self, partition: &str, offset: u64, code: &str, message: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().expect("failures lock");
        if f.len() < MAX_FAILURES {
            f.push(format!("{partition} offset {offset}: {code}: {message}"));
        }
    }

    /// A copy for reports.
    pub fn snapshot(&self) -> RedriveCounts {
        RedriveCounts {
            queued: self.queued.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            before: self.before.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failures: self.failures.lock().expect("failures lock").clone(),
        }
    }
}

/// Plain copy of [`RedriveCounters`].
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RedriveCounts {
    /// Letters handed over to replay.
    pub queued: u64,
    /// Applied.
    pub applied: u64,
    /// Dropped as duplicates or by design.
    pub dropped: u64,
    /// Replayed by an earlier run.
    pub before: u64,
    /// Failed again.
    pub failed: u64,
    /// The first failures.
    pub failures: Vec<String>,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A consistent-enough copy for reports.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            read: self.read.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
        }
    }
}

/// Plain copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Records read from the source.
    pub read: u64,
    /// Events applied.
    pub applied: u64,
    /// Duplicates skipped.
    pub duplicates: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Bad records skipped.
    pub skipped: u64,
    /// Records left alone by design (tombstones under `on_tombstone: ignore`).
    pub ignored: u64,
}

/// Where one source partition stands.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionPosition {
    /// Partition name, e.g. `generator` or `file:events.ndjson`.
    pub partition: String,
    /// Next offset the source will read.
    pub next_offset: u64,
    /// Next offset after the last event visible to SQL (the newest published epoch).
    pub published_offset: u64,
    /// Whether this instance owns the partition now (a consumer group shares them).
    pub assigned: bool,
    /// The partition's end as last seen (Kafka), if known.
    pub high_watermark: Option<u64>,
    /// Records between the read position and the end (while assigned and the end is
    /// known).
    pub lag: Option<u64>,
    /// How many times this instance was given the partition (and restored it): a
    /// partition that stays through a rebalance is not given again.
    pub assignments: u64,
}

/// Per-partition positions.
#[derive(Debug, Default)]
pub struct Positions {
    inner: Mutex<Vec<PartitionPosition>>,
}

impl Positions {
    /// Starts tracking the named partitions, none of them assigned yet.
    pub fn init(&self, names: Vec<String>) {
        let mut g = self.inner.lock().expect("positions lock");
        *g = names
            .into_iter()
            .map(|partition| PartitionPosition {
                partition,
                next_offset: 0,
                published_offset: 0,
                assigned: false,
                high_watermark: None,
                lag: None,
                assignments: 0,
            })
            .collect();
    }

    /// Records that partitions `ids` were assigned (or given up), at `next[id]`.
    pub fn set_owned(&self, ids: &[u32], assigned: bool, next: &[u64]) {
        let mut g = self.inner.lock().expect("positions lock");
        for &id in ids {
            if let Some(p) = g.get_mut(id as usize) {
                p.assigned = assigned;
                if assigned {
                    p.assignments += 1;
                    p.next_offset = next[id as usize];
                    p.published_offset = next[id as usize];
                }
            }
        }
    }

    /// Records the read position of every partition.
    pub fn set_read(&self, next: &[u64]) {
        let mut g = self.inner.lock().expect("positions lock");
        for (p, n) in g.iter_mut().zip(next) {
            p.next_offset = *n;
        }
    }

    /// Records the position of the newest published epoch.
    pub fn set_published(&self, next: &[u64]) {
        let mut g = self.inner.lock().expect("positions lock");
        for (p, n) in g.iter_mut().zip(next) {
            p.published_offset = *n;
        }
    }

    /// Records the partitions' ends as the source last saw them.
    pub fn set_high_watermarks(&self, marks: &projector_connectors::Resume) {
        let mut g = self.inner.lock().expect("positions lock");
        for (id, hi) in marks {
            if let Some(p) = g.get_mut(*id as usize) {
                p.high_watermark = Some(*hi);
            }
        }
    }

    /// A copy of every partition's position (with its lag worked out).
    pub fn snapshot(&self) -> Vec<PartitionPosition> {
        let mut all = self.inner.lock().expect("positions lock").clone();
        for p in &mut all {
            p.lag = p
                .high_watermark
                .filter(|_| p.assigned)
                .map(|hi| hi.saturating_sub(p.next_offset));
        }
        all
    }
}
