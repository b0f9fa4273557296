//! Routing: every key goes to exactly one worker, in batches.
//!
//! The worker is chosen by range (`(h * n) >> 64`, in 128 bits), not modulo, so that
//! growing `n` moves contiguous ranges.
//!
//! Nothing outside this process depends on the hash: a checkpoint stores each
//! partition's state whole (one piece per worker, merged on restore) and a restore
//! splits it again with this process's hash, for however many workers it has. That
//! matters, because ahash promises no stable output across its versions or CPU
//! features; the fixed seeds only make a run repeatable on one build and machine.

use super::worker::EventRef;
use crate::runtime::worker::{EventBatch, WorkerMsg};
use crossbeam_channel::Sender;

/// Hashes routing keys to workers (fixed seeds; see the module doc for what may depend
/// on it).
#[derive(Debug, Clone)]
pub(crate) struct KeyHasher(ahash::RandomState);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(ahash::RandomState::with_seeds(
            0x9e37_79b9_7f4a_7c15,
            0xbf58_476d_1ce4_e5b9,
            0x94d0_49bb_1331_11eb,
            0x2545_f491_4f6c_dd1d,
        ))
    }
}

impl KeyHasher {
    /// The 64-bit hash of a key's text.
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.0.hash_one(key)
    }
}

/// The worker that owns hash `h` among `n` workers: worker `w` owns the hashes in
/// `[w * 2^64 / n, (w + 1) * 2^64 / n)`.
///
/// Computed as `(h * n) >> 64` in 128 bits: the same ranges as `h / (2^64 / n)`, but
/// exact for every `n` (`u64::MAX / n + 1` overflows for `n = 1`).
pub(crate) fn worker_for(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

/// Collects routed events into one pending batch per worker and sends full batches.
#[derive(Debug)]
pub struct Router {
    senders: Vec<Sender<WorkerMsg>>,
    pending: Vec<EventBatch>,
    batch_size: usize,
    slots: usize,
    hasher: KeyHasher,
}

impl Router {
    /// A router over one channel per worker.
    pub fn new(senders: Vec<Sender<WorkerMsg>>, slots: usize, batch_size: usize) -> Self {
        let pending = senders
            .iter()
            .map(|_| EventBatch::with_capacity(slots, batch_size))
            .collect();
        Router {
            senders,
            pending,
            batch_size,
            slots,
            hasher: KeyHasher::default(),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// The worker for `key`.
    pub fn worker_of(&self, key: &str) -> usize {
        worker_for(self.hasher.hash(key), self.senders.len())
    }

    /// The pending batch of worker `w`, to append an event to; sends it when full.
    pub fn push(
        &mut self,
        w: usize,
        event: EventRef<'_>,
        values: &mut [projector_operators::value::Value],
        extras: Option<super::worker::Extras>,
    ) -> Result<(), Disconnected> {
        self.pending[w].push(event, values, extras);
        if self.pending[w].len() >= self.batch_size {
            self.send(w)?;
        }
        Ok(())
    }

    fn send(&mut self, w: usize) -> Result<(), Disconnected> {
        let fresh = EventBatch::with_capacity(self.slots, self.batch_size);
        let batch = std::mem::replace(&mut self.pending[w], fresh);
        self.senders[w]
            .send(WorkerMsg::Batch(batch))
            .map_err(|_| Disconnected)
    }

    /// Sends every non-empty pending batch.
    pub fn flush(&mut self) -> Result<(), Disconnected> {
        for w in 0..self.pending.len() {
            if !self.pending[w].is_empty() {
                self.send(w)?;
            }
        }
        Ok(())
    }

    /// True when some worker's channel is full: the next send to it would wait.
    pub fn congested(&self) -> bool {
        self.senders.iter().any(Sender::is_full)
    }

    /// Sends `msg` to worker `w`, behind everything routed to it so far.
    pub fn send_to(&mut self, w: usize, msg: WorkerMsg) -> Result<(), Disconnected> {
        if !self.pending[w].is_empty() {
            self.send(w)?;
        }
        self.senders[w].send(msg).map_err(|_| Disconnected)
    }

    /// Flushes, then sends `msg` to every worker (barriers, stop).
    pub fn broadcast(&mut self, msg: impl Fn() -> WorkerMsg) -> Result<(), Disconnected> {
        self.flush()?;
        for s in &self.senders {
            s.send(msg()).map_err(|_| Disconnected)?;
        }
        Ok(())
    }
}

/// A worker has gone away (it stopped after a fatal error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_all_workers_in_order() {
        assert_eq!(worker_for(0, 4), 0);
        assert_eq!(worker_for(u64::MAX, 4), 3);
        assert_eq!(worker_for(u64::MAX / 2, 2), 0);
        assert_eq!(worker_for(u64::MAX / 2 + 1, 2), 1);
        assert_eq!(worker_for(u64::MAX, 1), 0);
        assert_eq!(worker_for(0, 1), 0);
        for n in 1..=16usize {
            let mut last = 0;
            for i in 0..=1000u64 {
                let w = worker_for(i * (u64::MAX / 1000), n);
                assert!(w < n && w >= last, "n={n} i={i} w={w}");
                last = w;
            }
            assert_eq!(last, n - 1);
        }
    }

    #[test]
    fn hashing_is_stable_across_instances() {
        assert_eq!(
            KeyHasher::default().hash("acc-000001"),
            KeyHasher::default().hash("acc-000001")
        );
    }
}
