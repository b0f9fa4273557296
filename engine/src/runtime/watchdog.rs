//! The stall watchdog: a thread that looks at the pipeline once a second and says so
//! when it has stopped moving without failing.
//!
//! Projection daemons elsewhere went silently stale for days: nothing failed, the
//! views only stopped changing. Three checks, each against `watchdog.stall_after`:
//!
//! * `partition`: a partition with lag (at least 2 records to read: a transaction's
//!   commit marker leaves 1 for good) whose next offset has not moved, once it has
//!   moved in this run (a partition never read yet, say under `start_from: latest`,
//!   has no position to compare);
//! * `epoch`: records were read, but no epoch was published (for the publish interval
//!   plus `stall_after`);
//! * `checkpoint`: epochs were published, but no checkpoint completed (for the
//!   checkpoint interval plus `stall_after`).
//!
//! A stalled check turns `/health` and `/status` to `degraded` with its reason (the
//! views stay queryable, so a liveness probe does not restart the pod), sets
//! `projector_stalled{check}` and counts `projector_stalls_total{check}`; it clears by
//! itself once the pipeline moves again.

use super::pipeline::Shared;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The checks, as named in metrics.
pub(crate) const CHECKS: [&str; 3] = ["partition", "epoch", "checkpoint"];

/// Default `watchdog.stall_after`.
pub(crate) const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(60);

/// What the watchdog found, for `/health`, `/status` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    state: Mutex<Found>,
}

#[derive(Debug, Default)]
struct Found {
    /// Check → why it is stalled.
    stalled: BTreeMap<&'static str, String>,
    /// Per partition: when its next offset last moved, or its lag was last 0 (Unix ms).
    progress_ms: Vec<u64>,
}

impl Watchdog {
    /// Why the pipeline is stalled, if a check finds it so (the first, in check order).
    pub(crate) fn reason(&self) -> Option<String> {
        let found = self.state.lock().expect("watchdog lock");
        CHECKS.iter().find_map(|c| found.stalled.get(c).cloned())
    }

    /// Whether `check` finds the pipeline stalled.
    pub(crate) fn is_stalled(&self, check: &str) -> bool {
        self.state
            .lock()
            .expect("watchdog lock")
            .stalled
            .contains_key(check)
    }

    /// Per partition (by id), when it last made progress (Unix ms; 0: not watched yet).
    pub(crate) fn progress_times(&self) -> Vec<u64> {
        self.state
            .lock()
            .expect("watchdog lock")
            .progress_ms
            .clone()
    }
}

/// What the watchdog compares against.
#[derive(Debug, Clone)]
pub(crate) struct WatchConfig {
    /// `watchdog.stall_after`.
    pub(crate) stall_after: Duration,
    /// `checkpoint.interval`.
    pub(crate) checkpoint_interval: Duration,
    /// `publish_interval`.
    pub(crate) publish_interval: Duration,
    /// Whether the pipeline checkpoints at all.
    pub(crate) checkpoints: bool,
}

/// Watches `shared` until it stops.
pub(crate) fn run(shared: Arc<Shared>, config: WatchConfig) {
    let tick = (config.stall_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let start = Instant::now();
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    // Per partition: its next offset, since when, and whether it moved in this run.
    let mut partitions: Vec<(u64, Instant, bool)> = Vec::new();
    let mut epoch = (shared.progress.get().epoch, start);
    let mut checkpoint = (shared.checkpoints.get().epoch, start);
    let after = config.stall_after;
    let publish_after = config.publish_interval.saturating_add(after);
    let checkpoint_after = config.checkpoint_interval.saturating_add(after);
    {
        // Every partition has a time from the start (for /metrics).
        let n = shared.positions.snapshot().len();
        shared
            .watchdog
            .state
            .lock()
            .expect("watchdog lock")
            .progress_ms = vec![unix_ms(); n];
    }
    while !shared.stop.load(Ordering::Relaxed) {
        // `Pipeline::stop` unparks it: stopping does not wait for a tick.
        std::thread::park_timeout(tick);
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let now_ms = unix_ms();
        let positions = shared.positions.snapshot();
        let progress = shared.progress.get();
        let mut stalled: BTreeMap<&'static str, String> = BTreeMap::new();

        partitions.resize(positions.len(), (u64::MAX, now, false));
        let mut progress_ms = shared.watchdog.progress_times();
        progress_ms.resize(positions.len(), now_ms);
        for (i, p) in positions.iter().enumerate() {
            let lag = p.lag.unwrap_or(0);
            let (offset, since, moved) = partitions[i];
            if offset != p.next_offset || lag < 2 || !p.assigned {
                let moved = moved || (offset != u64::MAX && offset != p.next_offset);
                partitions[i] = (p.next_offset, now, moved && p.assigned);
                progress_ms[i] = now_ms;
            } else if moved && now - since >= after && !stalled.contains_key("partition") {
                stalled.insert(
                    "partition",
                    format!(
                        "partition {} has {lag} records to read and has not moved from \
                         offset {} for {}s (watchdog.stall_after: {})",
                        p.partition,
                        p.next_offset,
                        (now - since).as_secs(),
                        humantime::format_duration(after)
                    ),
                );
            }
        }

        let unpublished = positions
            .iter()
            .any(|p| p.assigned && p.next_offset > p.published_offset);
        // Timed from when records started waiting, not from the last epoch: input
        // after a quiet hour is not a stall.
        if progress.epoch != epoch.0 || !unpublished {
            epoch = (progress.epoch, now);
        }
        if unpublished && !progress.finished && now - epoch.1 >= publish_after {
            stalled.insert(
                "epoch",
                format!(
                    "records were read but no epoch was published for {}s (newest: epoch {}; \
                     publish_interval plus watchdog.stall_after: {})",
                    (now - epoch.1).as_secs(),
                    progress.epoch,
                    humantime::format_duration(publish_after)
                ),
            );
        }

        let newest = shared.checkpoints.get().epoch;
        // Timed from when a checkpoint became due; an instance that holds no partition
        // (a standby, or one that lost them) has none to write.
        let holds = positions.iter().any(|p| p.assigned);
        if newest != checkpoint.0 || progress.epoch <= newest || !holds {
            checkpoint = (newest, now);
        }
        if config.checkpoints && now - checkpoint.1 >= checkpoint_after {
            stalled.insert(
                "checkpoint",
                format!(
                    "no checkpoint completed for {}s (newest: epoch {newest}; published: epoch \
                     {}; checkpoint.interval plus watchdog.stall_after: {})",
                    (now - checkpoint.1).as_secs(),
                    progress.epoch,
                    humantime::format_duration(checkpoint_after)
                ),
            );
        }

        let mut found = shared.watchdog.state.lock().expect("watchdog lock");
        for check in CHECKS {
            match (found.stalled.contains_key(check), stalled.get(check)) {
                (false, Some(why)) => {
                    shared.metrics.stalled(check);
                    tracing::warn!("{}: stalled: {why}", shared.name);
                }
                (true, None) => {
                    tracing::warn!("{}: the {check} check is no longer stalled", shared.name)
                }
                _ => {}
            }
        }
        found.stalled = stalled;
        found.progress_ms = progress_ms;
    }
}
