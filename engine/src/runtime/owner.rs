//! Partition ownership: which partitions this instance owns, restoring them when they
//! arrive and checkpointing and dropping them when they leave.

use super::ingest::Ingress;
use super::pipeline::Shared;
use crate::runtime::router::{KeyHasher, worker_for};
use crate::runtime::worker::WorkerMsg;
use crate::state::checkpoint::recovery::{self, Checkpoints};
use crate::{Error, Result};
use projector_connectors::{AssignmentError, AssignmentListener, Resume};
use projector_operators::projection::Projection;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The engine's side of partition ownership: restores partitions that become this
/// instance's and checkpoints and drops the ones it gives up. Called at start for
/// sources that always read every partition, and by a consumer-group source on every
/// rebalance (on the ingest thread, inside its poll).
#[derive(Clone)]
pub(super) struct Owner {
    pub(super) ingress: Arc<Mutex<Ingress>>,
    pub(super) shared: Arc<Shared>,
    pub(super) projection: Arc<Projection>,
    /// The checkpoint store (`None`: checkpoints are off).
    pub(super) checkpoints: Option<Arc<Checkpoints>>,
    pub(super) names: Arc<Vec<String>>,
    pub(super) workers: usize,
}

impl Owner {
    /// Restores `ids` from their newest valid checkpoints and makes them this
    /// instance's; returns where each restored one resumes.
    pub(super) fn assign(&self, ids: &[u32]) -> Result<Resume> {
        let hasher = KeyHasher::default();
        let route = |k: &str| worker_for(hasher.hash(k), self.workers);
        let mut restored = Vec::with_capacity(ids.len());
        let mut floor = 0;
        let mut resume = Resume::new();
        for &id in ids {
            let name = &self.names[id as usize];
            let r = match &self.checkpoints {
                Some(c) => c.restore(id, &self.projection, self.workers, route)?,
                None => recovery::RestoredPartition {
                    workers: (0..self.workers)
                        .map(|_| self.projection.new_partition_state())
                        .collect(),
                    ..Default::default()
                },
            };
            for s in &r.skipped {
                eprintln!("{}: warning: {s}", self.shared.name);
            }
            self.shared.checkpoints.add_skipped(&r.skipped);
            if let Some(next) = r.resume {
                eprintln!(
                    "{}: {name}: resuming from checkpoint {} at offset {next}",
                    self.shared.name, r.epoch
                );
                resume.insert(id, next);
                self.shared
                    .checkpoints
                    .set_partitions(&[id], r.epoch, r.written_ms);
                self.shared
                    .restored_epoch
                    .fetch_max(r.epoch, Ordering::Relaxed);
            }
            floor = floor.max(r.epoch_floor);
            restored.push((id, r));
        }
        // Letters of records after each checkpoint may be written already.
        if self.checkpoints.is_some() {
            let from: Vec<(&str, u64)> = restored
                .iter()
                .map(|(id, r)| (self.names[*id as usize].as_str(), r.resume.unwrap_or(0)))
                .collect();
            self.shared
                .bad
                .already_written(&from)
                .map_err(|e| Error::Io {
                    context: format!(
                        "reading dead letters from {}",
                        self.shared.bad.destination()
                    ),
                    source: e,
                })?;
        }
        let mut ing = self.ingress.lock().expect("ingress lock");
        for (id, r) in restored {
            let p = id as usize;
            for (w, state) in r.workers.into_iter().enumerate() {
                ing.router
                    .send_to(
                        w,
                        WorkerMsg::Restore {
                            partition: id,
                            state,
                        },
                    )
                    .map_err(|_| Error::Stopped)?;
            }
            ing.owned[p] = true;
            ing.known[p] = r.resume.is_some();
            ing.offsets[p] = r.resume.unwrap_or(0);
            ing.cut_offsets[p] = ing.offsets[p];
        }
        // This instance's next checkpoint of these partitions must be numbered above
        // every one on disk, whoever wrote them.
        ing.epoch = ing.epoch.max(floor);
        ing.force = true;
        self.shared.positions.set_owned(ids, true, &ing.offsets);
        drop(ing);
        self.tell_the_cluster();
        Ok(resume)
    }

    /// Gives `ids` up: unless `lost`, checkpoints them first and waits until that
    /// checkpoint is durable; then drops their state. Returns the offsets checkpointed.
    pub(super) fn revoke(&self, ids: &[u32], lost: bool) -> Result<Resume> {
        let mut checkpointed = Resume::new();
        let wait_for = {
            let mut ing = self.ingress.lock().expect("ingress lock");
            let checkpoint = !lost
                && !ing.finished
                && ing.checkpoint_every.is_some()
                && self.shared.fatal().is_none()
                && ids.iter().any(|&p| ing.owned[p as usize]);
            if checkpoint {
                ing.barrier(false, true)?;
                for &p in ids {
                    if ing.owned[p as usize] && ing.known[p as usize] {
                        checkpointed.insert(p, ing.offsets[p as usize]);
                    }
                }
            }
            for &p in ids {
                ing.owned[p as usize] = false;
                ing.known[p as usize] = false;
            }
            ing.router
                .broadcast(|| WorkerMsg::Release(ids.to_vec()))
                .map_err(|_| Error::Stopped)?;
            // Publish the views without them.
            ing.force = true;
            self.shared.positions.set_owned(ids, false, &ing.offsets);
            checkpoint.then_some(ing.epoch)
        };
        self.tell_the_cluster();
        for &p in ids {
            let name = &self.names[p as usize];
            self.shared.bad.forget(name);
            if lost {
                // Whoever owns it now replays those records and writes their letters.
                self.shared.bad.drop_staged(name);
            }
        }
        if let Some(epoch) = wait_for {
            let started = Instant::now();
            // Until each partition's checkpoint of that epoch is durable, or the
            // partition was taken over (its checkpoint cannot be written by us).
            let durable = |p: &u32| {
                !checkpointed.contains_key(p)
                    || self
                        .shared
                        .checkpoints
                        .partition(*p)
                        .is_some_and(|(e, _)| e >= epoch)
                    || self.checkpoints.as_ref().is_some_and(|c| !c.holds(*p))
            };
            while !ids.iter().all(durable) {
                if let Some(e) = self.shared.fatal() {
                    return Err(Error::Fatal(e));
                }
                // A stop that gave up waiting for this thread stops the workers too.
                if self.shared.stop.load(Ordering::Relaxed)
                    && started.elapsed() > Duration::from_secs(10)
                {
                    return Err(Error::Stopped);
                }
                self.shared.progress.wait(Duration::from_millis(20));
            }
        }
        if let Some(c) = &self.checkpoints {
            for &p in ids {
                c.release(p);
            }
        }
        Ok(checkpointed)
    }
}

impl Owner {
    /// Other instances learn at once that this instance's partitions changed.
    fn tell_the_cluster(&self) {
        if let Some(cluster) = self.shared.catalog.cluster() {
            cluster.nudge();
        }
    }

    /// Drops the partitions another instance took over in the checkpoint store (this
    /// one was fenced: paused or cut off past its session): no more checkpoints or
    /// published rows for them here.
    pub(super) fn drop_fenced(&self) -> Result<()> {
        let Some(c) = &self.checkpoints else {
            return Ok(());
        };
        let fenced = c.take_fenced();
        if fenced.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = fenced
            .iter()
            .map(|&p| self.names[p as usize].as_str())
            .collect();
        eprintln!(
            "{}: error: partition(s) {} taken over by another instance; dropped here",
            self.shared.name,
            names.join(", ")
        );
        self.revoke(&fenced, true).map(|_| ())
    }
}

impl AssignmentListener for Owner {
    fn assigned(&mut self, partitions: &[u32]) -> std::result::Result<Resume, AssignmentError> {
        Owner::assign(self, partitions).map_err(AssignmentError::new)
    }

    fn revoked(
        &mut self,
        partitions: &[u32],
        lost: bool,
    ) -> std::result::Result<Resume, AssignmentError> {
        Owner::revoke(self, partitions, lost).map_err(AssignmentError::new)
    }
}
