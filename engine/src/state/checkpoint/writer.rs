//! The checkpoint writer: a thread that writes the checkpoints the coordinator hands
//! it, so that a slow or absent store never holds back publishing.
//!
//! ```text
//!  coordinator ──submit(job)──▶ [one pending job] ──▶ writer thread ──▶ store
//!                 (a newer job replaces an unwritten one, partition by partition)
//! ```
//!
//! While the store is away, each write is retried with backoff and `/health` says
//! `degraded`; the newest state waits in the pending job, so the retry that succeeds
//! writes the newest checkpoint and nothing is lost. Only errors that retrying cannot
//! fix (refused credentials, a store without conditional writes) stop the pipeline.

use super::CheckpointError;
use super::recovery::{CheckpointInfo, CheckpointStatus, Checkpoints, now_ms};
use crate::runtime::bad_records::BadRecords;
use crate::state::units::Units;
use crate::{Error, Fatal};
use projector_connectors::Resume;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a stopping pipeline keeps trying to write its final checkpoint to a store
/// that is away.
const FINAL_WRITE_PATIENCE: Duration = Duration::from_secs(30);
/// The longest wait between two attempts while the store is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One unit's checkpoint, waiting to be written.
#[derive(Debug)]
pub(crate) struct Part {
    /// The epoch it closes.
    pub epoch: u64,
    /// Where each of its partitions resumes (those whose position is known).
    pub offsets: Resume,
    /// The state file: every worker's pieces.
    pub state: Vec<u8>,
}

/// Checkpoints to write, by unit id.
pub(crate) type Job = BTreeMap<u32, Part>;

#[derive(Debug, Default)]
struct Slot {
    pending: Job,
    /// The newest epoch handed over, and the newest whose parts were all written (or
    /// dropped: a partition no longer held).
    submitted: u64,
    done: u64,
    closed: bool,
}

/// The coordinator's side of the writer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl Writer {
    /// Hands over the checkpoints of `epoch`; they replace unwritten ones of the same
    /// partitions.
    pub(crate) fn submit(&self, epoch: u64, job: Job) {
        let mut slot = self.slot.lock().expect("writer lock");
        slot.pending.extend(job);
        slot.submitted = slot.submitted.max(epoch);
        self.changed.notify_all();
    }

    /// No more jobs: the thread writes what is pending and exits.
    pub(crate) fn close(&self) {
        self.slot.lock().expect("writer lock").closed = true;
        self.changed.notify_all();
    }

    /// Waits until every checkpoint up to `epoch` is written or given up (a writer
    /// that stops for good, even by a panic, gives up everything).
    pub(crate) fn wait_for(&self, epoch: u64) {
        let mut slot = self.slot.lock().expect("writer lock");
        while slot.done < epoch {
            slot = self
                .changed
                .wait_timeout(slot, Duration::from_millis(20))
                .expect("writer lock")
                .0;
        }
    }

    /// The pending job (empty when closed and nothing is pending: the thread exits).
    fn take(&self) -> Option<(Job, u64)> {
        let mut slot = self.slot.lock().expect("writer lock");
        loop {
            if !slot.pending.is_empty() {
                return Some((std::mem::take(&mut slot.pending), slot.submitted));
            }
            if slot.closed {
                slot.done = slot.submitted;
                self.changed.notify_all();
                return None;
            }
            if slot.done < slot.submitted {
                // Submitted epochs with nothing to write are done.
                slot.done = slot.submitted;
                self.changed.notify_all();
            }
            slot = self.changed.wait(slot).expect("writer lock");
        }
    }

    /// Puts unwritten parts back, under any newer ones of the same partitions.
    fn give_back(&self, job: Job) {
        let mut slot = self.slot.lock().expect("writer lock");
        for (id, part) in job {
            slot.pending.entry(id).or_insert(part);
        }
    }

    fn has_newer(&self) -> bool {
        !self.slot.lock().expect("writer lock").pending.is_empty()
    }

    fn closed(&self) -> bool {
        self.slot.lock().expect("writer lock").closed
    }

    fn finish(&self, epoch: u64) {
        let mut slot = self.slot.lock().expect("writer lock");
        slot.done = slot.done.max(epoch);
        self.changed.notify_all();
    }
}

/// What the writer thread works with.
pub(crate) struct WriterThread {
    pub writer: Arc<Writer>,
    pub checkpoints: Arc<Checkpoints>,
    pub pipeline: String,
    /// Dead letters, synced before every checkpoint.
    pub bad: Arc<BadRecords>,
    pub status: Arc<CheckpointStatus>,
    /// Checkpoint durations and sizes, for `/metrics`.
    pub metrics: Arc<crate::serve::metrics::Metrics>,
    /// Called with the reason when checkpoints cannot be written at all.
    pub on_error: Box<dyn Fn(Fatal) + Send>,
    /// The offsets of the newest durable checkpoints, for the source to report.
    pub durable: Arc<Mutex<Option<Resume>>>,
    /// Set when the pipeline is stopping.
    pub stop: Arc<AtomicBool>,
}

impl WriterThread {
    /// Writes jobs until the writer is closed and nothing is pending.
    pub(crate) fn run(self) {
        /// However this thread ends (a panic included), nobody waits for it any more.
        struct Done(Arc<Writer>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.finish(u64::MAX);
            }
        }
        let _done = Done(self.writer.clone());
        while let Some((job, epoch)) = self.writer.take() {
            match self.write(job) {
                Ok(()) => self.writer.finish(epoch),
                Err(fatal) => {
                    (self.on_error)(fatal);
                    // Waiters must not wait for what will never be written.
                    self.writer.finish(u64::MAX);
                    return;
                }
            }
        }
    }

    /// Writes every part of `job`, retrying while the store is away; a newer job for
    /// the same partitions takes over from parts not yet written.
    fn write(&self, mut job: Job) -> std::result::Result<(), Fatal> {
        let started = Instant::now();
        // Letters of the records before the cut must be durable before the cut is.
        self.bad.sync().map_err(|source| Fatal::Checkpoint {
            epoch: job.values().map(|p| p.epoch).max().unwrap_or(0),
            source: Arc::new(Error::Io {
                context: format!("syncing dead letters to {}", self.bad.destination()),
                source,
            }),
        })?;
        let mut backoff = Duration::from_millis(100);
        let mut away_since: Option<Instant> = None;
        let (mut bytes, mut newest, mut durable) = (0, 0, Resume::new());
        while let Some((&id, part)) = job.iter().next() {
            let units = self.checkpoints.units();
            let members: Vec<&str> = units
                .members(id)
                .iter()
                .map(|&p| units.partition_name(p))
                .collect();
            let letters = match self.bad.in_store() {
                true => self.bad.letters_until(&members, part.epoch),
                false => Vec::new(),
            };
            let committed = self.checkpoints.commit(
                id,
                part.epoch,
                &self.pipeline,
                &part.offsets,
                &part.state,
                &letters,
            );
            match committed {
                Ok(written) => {
                    let part = job.remove(&id).expect("just seen");
                    if written {
                        self.bad.saved(&members, part.epoch);
                        bytes += part.state.len() as u64;
                        newest = newest.max(part.epoch);
                        durable.extend(&part.offsets);
                        self.status.set_partitions(&[id], part.epoch, now_ms());
                    }
                    if away_since.take().is_some() {
                        self.status.set_degraded(None);
                        eprintln!("{}: checkpoint store is back", self.pipeline);
                    }
                    backoff = Duration::from_millis(100);
                }
                Err(Error::Checkpoint(e @ CheckpointError::Fenced { .. })) => {
                    eprintln!("{}: error: {e}", self.pipeline);
                    job.remove(&id);
                }
                Err(Error::Checkpoint(CheckpointError::Store(e))) if e.is_transient() => {
                    let since = *away_since.get_or_insert_with(Instant::now);
                    let why = format!(
                        "checkpoint store {} unavailable for {}s, retrying: {e}",
                        self.checkpoints.location,
                        since.elapsed().as_secs()
                    );
                    if self.status.degraded().is_none() {
                        eprintln!("{}: warning: {why}", self.pipeline);
                    }
                    self.status.set_degraded(Some(why));
                    if (self.writer.closed() || self.stop.load(Ordering::Relaxed))
                        && since.elapsed() > FINAL_WRITE_PATIENCE
                    {
                        eprintln!(
                            "{}: warning: giving up on the checkpoints of {} partition(s): the \
                             store stayed away; the next start replays them from their \
                             previous checkpoints",
                            self.pipeline,
                            job.len()
                        );
                        return Ok(());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if self.writer.has_newer() {
                        // Newer state of these partitions is waiting: write that instead.
                        self.writer.give_back(std::mem::take(&mut job));
                        if let Some((newer, _)) = self.writer.take() {
                            job = newer;
                        }
                    }
                }
                Err(e) => {
                    return Err(Fatal::Checkpoint {
                        epoch: part.epoch,
                        source: Arc::new(e),
                    });
                }
            }
        }
        if !durable.is_empty() {
            let mut d = self.durable.lock().expect("durable offsets lock");
            d.get_or_insert_with(Resume::new).extend(durable);
            self.metrics.checkpoint_written(started.elapsed(), bytes);
            self.status.set(CheckpointInfo {
                epoch: newest,
                written_ms: now_ms(),
                duration_ms: started.elapsed().as_millis() as u64,
                bytes,
            });
        }
        Ok(())
    }
}

/// The checkpoints of `epoch` for the units of the partitions in `owned` (partition
/// id → next offset): one state file per unit, every worker's piece (`pieces`, by
/// unit) prefixed with its length.
pub(crate) fn job(
    epoch: u64,
    owned: &Resume,
    pieces: Vec<Vec<(u32, Vec<u8>)>>,
    units: &Units,
) -> Job {
    let mut files: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (unit, bytes) in pieces.into_iter().flatten() {
        let file = files.entry(unit).or_default();
        file.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        file.extend_from_slice(&bytes);
    }
    let mut job = Job::new();
    for (&p, &next_offset) in owned {
        let unit = units.of(p);
        job.entry(unit)
            .or_insert_with(|| Part {
                epoch,
                offsets: Resume::new(),
                state: files.remove(&unit).unwrap_or_default(),
            })
            .offsets
            .insert(p, next_offset);
    }
    job
}
