//! The epoch coordinator: turns per-worker snapshots into one published epoch.
//!
//! The ingest side announces each epoch (with the source offsets it covers) and then
//! sends a barrier down every worker channel, behind the events of that epoch. Each
//! worker answers with its snapshot. When every worker has answered, the epoch is
//! published as a whole: a query sees all of an epoch or none of it.

use crate::runtime::bad_records::BadRecords;
use crate::runtime::worker::WorkerSnapshot;
use crate::serve::catalog::Catalog;
use crate::serve::status::Positions;
use crate::state::checkpoint::writer::{self, Writer};
use crate::state::units::Units;
use crate::state::view::{Published, PublishedView, WorkerViewData};
use crossbeam_channel::Receiver;
use projector_connectors::Resume;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};

/// Messages to the coordinator.
#[derive(Debug)]
pub(crate) enum CoordMsg {
    /// A new epoch begins: the offsets it covers, and whether the input ended.
    Epoch {
        /// Epoch number.
        epoch: u64,
        /// Next offset per partition.
        offsets: Vec<u64>,
        /// The partitions a checkpoint of this epoch covers (owned by this instance,
        /// position known), with their next offsets.
        owned: Resume,
        /// The units this instance owns when the epoch is cut (also those whose
        /// position is not known yet): the ones whose rows the epoch holds.
        present: BTreeSet<u32>,
        /// True for the epoch cut at the end of the input.
        last: bool,
        /// Whether the epoch is checkpointed.
        checkpoint: bool,
    },
    /// A worker's snapshot for an epoch.
    Snapshot(WorkerSnapshot),
    /// Stop.
    Stop,
}

/// Publication progress, for waiters (e.g. `--once`).
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<ProgressState>,
    changed: Condvar,
}

/// What has been published so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProgressState {
    /// Newest published epoch.
    pub epoch: u64,
    /// True when the epoch at the end of the input has been published.
    pub finished: bool,
}

impl Progress {
    /// The current state.
    pub fn get(&self) -> ProgressState {
        *self.state.lock().expect("progress lock")
    }

    /// Waits up to `timeout` for a change; returns the state.
    pub fn wait(&self, timeout: std::time::Duration) -> ProgressState {
        let g = self.state.lock().expect("progress lock");
        let (g, _) = self
            .changed
            .wait_timeout(g, timeout)
            .expect("progress lock");
        *g
    }

    fn set(&self, epoch: u64, finished: bool) {
        let mut g = self.state.lock().expect("progress lock");
        g.epoch = epoch;
        g.finished |= finished;
        self.changed.notify_all();
    }
}

/// What the ingest side said of an epoch: offsets, owned, present, last, checkpoint.
type EpochInfo = (Vec<u64>, Resume, BTreeSet<u32>, bool, bool);

struct Pending {
    info: Option<EpochInfo>,
    /// When the epoch was cut (its info arrived).
    cut: Option<std::time::Instant>,
    parts: Vec<Option<Vec<WorkerViewData>>>,
    pieces: Vec<Vec<(u32, Vec<u8>)>>,
    answered: usize,
}

/// Where the coordinator publishes a complete epoch.
pub(crate) struct Publishing {
    /// The views SQL reads.
    pub(crate) catalog: Arc<Catalog>,
    /// The published offsets, per partition.
    pub(crate) positions: Arc<Positions>,
    /// The newest published epoch.
    pub(crate) progress: Arc<Progress>,
    /// The epoch's dead letters, committed as it publishes.
    pub(crate) bad: Arc<BadRecords>,
    /// How long publishing took.
    pub(crate) metrics: Arc<crate::serve::metrics::Metrics>,
}

/// Runs the coordinator until [`CoordMsg::Stop`] or until every sender is gone.
pub(crate) fn run_coordinator(
    inbox: Receiver<CoordMsg>,
    workers: usize,
    publishing: Publishing,
    writer: Option<(Arc<Writer>, Arc<Units>)>,
) {
    let Publishing {
        catalog,
        positions,
        progress,
        bad,
        metrics,
    } = publishing;
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    while let Ok(msg) = inbox.recv() {
        let epoch = match msg {
            CoordMsg::Stop => return,
            CoordMsg::Epoch {
                epoch,
                offsets,
                owned,
                present,
                last,
                checkpoint,
            } => {
                let p = entry(&mut pending, epoch, workers);
                p.info = Some((offsets, owned, present, last, checkpoint));
                p.cut = Some(std::time::Instant::now());
                epoch
            }
            CoordMsg::Snapshot(s) => {
                let p = entry(&mut pending, s.epoch, workers);
                p.parts[s.worker] = Some(s.views);
                p.pieces.push(s.pieces);
                p.answered += 1;
                s.epoch
            }
        };
        let complete = pending
            .get(&epoch)
            .is_some_and(|p| p.info.is_some() && p.answered == workers);
        if complete {
            let p = pending.remove(&epoch).expect("checked above");
            let (offsets, owned, present, last, checkpoint) = p.info.expect("checked above");
            let mut per_worker: Vec<std::vec::IntoIter<WorkerViewData>> = p
                .parts
                .into_iter()
                .map(|v| v.expect("all answered").into_iter())
                .collect();
            let views = (0..catalog.views.len())
                .map(|_| {
                    PublishedView::new(
                        per_worker
                            .iter_mut()
                            .map(|it| it.next().expect("one per view"))
                            .collect(),
                    )
                })
                .collect();
            positions.set_published(&offsets);
            // The epoch's dead letters go to the file before its checkpoint syncs it.
            bad.commit(epoch);
            // Published before its checkpoint is written: the views are correct either
            // way (a crash replays to the same state), and freshness should not wait
            // for an fsync.
            catalog.publish(Published {
                epoch,
                views,
                offsets,
                present,
            });
            if let Some(cut) = p.cut {
                metrics.epoch_published(cut.elapsed());
            }
            if checkpoint && let Some((writer, units)) = &writer {
                // Written on the writer's thread: a slow store does not hold back the
                // next epochs (see writer.rs).
                writer.submit(epoch, writer::job(epoch, &owned, p.pieces, units));
                if last {
                    // `--once` exits when it sees the final epoch, which must be durable.
                    writer.wait_for(epoch);
                }
            }
            progress.set(epoch, last);
        }
    }
}

fn entry(pending: &mut BTreeMap<u64, Pending>, epoch: u64, workers: usize) -> &mut Pending {
    pending.entry(epoch).or_insert_with(|| Pending {
        info: None,
        cut: None,
        parts: (0..workers).map(|_| None).collect(),
        pieces: Vec::new(),
        answered: 0,
    })
}
