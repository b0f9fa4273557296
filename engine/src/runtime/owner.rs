//! Partition ownership: which partitions this instance owns, restoring them when they
//! arrive and checkpointing and dropping them when they leave. State is per unit
//! (`state/units.rs`), so partitions come and go a whole unit at a time.

use super::ingest::Ingress;
use super::pipeline::Shared;
use crate::runtime::redrive::Redrive;
use crate::runtime::router::{KeyHasher, worker_for};
use crate::runtime::worker::WorkerMsg;
use crate::serve::status::Counters;
use crate::state::checkpoint::recovery::{self, Checkpoints};
use crate::state::units::Units;
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
    pub(super) units: Arc<Units>,
    pub(super) workers: usize,
    /// Dead letters to replay (`--replay-dead-letters`), handed over per partition as
    /// its unit is restored.
    pub(super) redrive: Option<Arc<Redrive>>,
}

impl Owner {
    /// The units of partitions `ids`, which must hold every partition of each.
    fn whole_units(&self, ids: &[u32]) -> Result<Vec<u32>> {
        self.units.whole(ids).map_err(|why| {
            Error::Source(projector_connectors::Error::Assignment(
                AssignmentError::new(why),
            ))
        })
    }

    /// Restores the units of partitions `ids` (whole units only) from their newest
    /// valid checkpoints and makes them this instance's; returns where each restored
    /// partition resumes.
    pub(super) fn assign(&self, ids: &[u32]) -> Result<Resume> {
        let units = self.whole_units(ids)?;
        let hasher = KeyHasher::default();
        let route = |k: &str| worker_for(hasher.hash(k), self.workers);
        let mut restored = Vec::with_capacity(units.len());
        let mut floor = 0;
        let mut resume = Resume::new();
        for &unit in &units {
            let name = self.units.name(unit);
            let r = match &self.checkpoints {
                Some(c) => c.restore(unit, &self.projection, self.workers, route)?,
                None => recovery::RestoredPartition {
                    workers: (0..self.workers)
                        .map(|_| self.projection.new_partition_state())
                        .collect(),
                    ..Default::default()
                },
            };
            let parked: usize = r.workers.iter().map(|w| w.parked.len()).sum();
            if parked > 0 && !self.shared.bad.parks() {
                return Err(Error::Io {
                    context: format!("restoring {name}"),
                    source: std::io::Error::other(format!(
                        "its checkpoint holds {parked} parked key(s), and on_error is not \
                         park any more: their held events would never be applied. Run with \
                         on_error: park and retry or skip them (projector parked), then \
                         change on_error"
                    )),
                });
            }
            for s in &r.skipped {
                eprintln!("{}: warning: {s}", self.shared.name);
            }
            self.shared.checkpoints.add_skipped(&r.skipped);
            if let Some(next) = &r.resume {
                let at = match (self.units.members(unit), next.first_key_value()) {
                    ([_], Some((_, offset))) => format!("offset {offset}"),
                    _ => next
                        .iter()
                        .map(|(&p, o)| format!("{} {o}", self.units.partition_name(p)))
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                eprintln!(
                    "{}: {name}: resuming from checkpoint {} at {at}",
                    self.shared.name, r.epoch
                );
                resume.extend(next);
                self.shared
                    .checkpoints
                    .set_partitions(&[unit], r.epoch, r.written_ms);
                self.shared
                    .restored_epoch
                    .fetch_max(r.epoch, Ordering::Relaxed);
            }
            floor = floor.max(r.epoch_floor);
            restored.push((unit, r));
        }
        let partitions = self.units.partitions_of(&units);
        // Letters of records after each checkpoint may be written already.
        if self.checkpoints.is_some() {
            let from: Vec<(&str, u64)> = partitions
                .iter()
                .map(|&p| {
                    (
                        self.units.partition_name(p),
                        resume.get(&p).copied().unwrap_or(0),
                    )
                })
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
        for (unit, r) in restored {
            for (w, state) in r.workers.into_iter().enumerate() {
                ing.router
                    .send_to(
                        w,
                        WorkerMsg::Restore {
                            partition: unit,
                            state: Box::new(state),
                        },
                    )
                    .map_err(|_| Error::Stopped)?;
            }
        }
        if let Some(redrive) = &self.redrive {
            for &p in &partitions {
                let letters = redrive.take(p, resume.get(&p).copied());
                Counters::add(&self.shared.counters.redrive.queued, letters.len() as u64);
                ing.letters.extend(letters.into_iter().map(|l| (p, l)));
            }
        }
        for &p in &partitions {
            let i = p as usize;
            ing.owned[i] = true;
            ing.known[i] = resume.contains_key(&p);
            ing.offsets[i] = resume.get(&p).copied().unwrap_or(0);
            ing.cut_offsets[i] = ing.offsets[i];
        }
        // This instance's next checkpoint of these units must be numbered above
        // every one on disk, whoever wrote them.
        ing.epoch = ing.epoch.max(floor);
        ing.force = true;
        self.shared
            .positions
            .set_owned(&partitions, true, &ing.offsets);
        drop(ing);
        self.tell_the_cluster();
        Ok(resume)
    }

    /// Gives up the units of partitions `ids` (whole units only): unless `lost`,
    /// checkpoints them first and waits until that checkpoint is durable; then drops
    /// their state. Returns the offsets checkpointed.
    pub(super) fn revoke(&self, ids: &[u32], lost: bool) -> Result<Resume> {
        let units = self.whole_units(ids)?;
        let partitions = self.units.partitions_of(&units);
        let mut checkpointed = Resume::new();
        let wait_for = {
            let mut ing = self.ingress.lock().expect("ingress lock");
            let checkpoint = !lost
                && !ing.finished
                && ing.checkpoint_every.is_some()
                && self.shared.fatal().is_none()
                && partitions.iter().any(|&p| ing.owned[p as usize]);
            if checkpoint {
                ing.barrier(false, true)?;
                for &p in &partitions {
                    if ing.owned[p as usize] && ing.known[p as usize] {
                        checkpointed.insert(p, ing.offsets[p as usize]);
                    }
                }
            }
            for &p in &partitions {
                ing.owned[p as usize] = false;
                ing.known[p as usize] = false;
            }
            ing.router
                .broadcast(|| WorkerMsg::Release(units.clone()))
                .map_err(|_| Error::Stopped)?;
            // Publish the views without them.
            ing.force = true;
            self.shared
                .positions
                .set_owned(&partitions, false, &ing.offsets);
            checkpoint.then_some(ing.epoch)
        };
        self.tell_the_cluster();
        for &p in &partitions {
            let name = self.units.partition_name(p);
            self.shared.bad.forget(name);
            if lost {
                // Whoever owns it now replays those records and writes their letters.
                self.shared.bad.drop_staged(name);
            }
        }
        if let Some(epoch) = wait_for {
            let started = Instant::now();
            // Until each unit's checkpoint of that epoch is durable, or the unit was
            // taken over (its checkpoint cannot be written by us).
            let durable = |u: &u32| {
                !self
                    .units
                    .members(*u)
                    .iter()
                    .any(|p| checkpointed.contains_key(p))
                    || self
                        .shared
                        .checkpoints
                        .partition(*u)
                        .is_some_and(|(e, _)| e >= epoch)
                    || self.checkpoints.as_ref().is_some_and(|c| !c.holds(*u))
            };
            while !units.iter().all(durable) {
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
            for &u in &units {
                c.release(u);
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
        let names: Vec<&str> = fenced.iter().map(|&u| self.units.name(u)).collect();
        eprintln!(
            "{}: error: partition(s) {} taken over by another instance; dropped here",
            self.shared.name,
            names.join(", ")
        );
        self.revoke(&self.units.partitions_of(&fenced), true)
            .map(|_| ())
    }
}

impl AssignmentListener for Owner {
    fn assigned(&mut self, partitions: &[u32]) -> std::result::Result<Resume, AssignmentError> {
        let rebalances = &self.shared.counters.rebalances;
        rebalances.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Owner::assign(self, partitions).map_err(AssignmentError::new)
    }

    fn revoked(
        &mut self,
        partitions: &[u32],
        lost: bool,
    ) -> std::result::Result<Resume, AssignmentError> {
        let rebalances = &self.shared.counters.rebalances;
        rebalances.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Owner::revoke(self, partitions, lost).map_err(AssignmentError::new)
    }
}
