//! `on_error: park` in the engine: what a worker tells the HTTP face about its parked
//! keys, and how `retry` and `skip` reach the worker that holds a key.
//!
//! ```text
//!  worker: event of key K fails ─▶ K parked in its unit's state (failing record)
//!          later events of K     ─▶ held beside it (at most park.max_held)
//!          each epoch            ─▶ ParkBoard: this worker's parked keys, for /parked
//!  POST /parked/retry?key=K ─▶ ParkRequest to every worker ─▶ the one holding K
//!          decodes its records again and applies them in order; replies Resolved
//! ```

use crossbeam_channel::Sender;
use projector_operators::park::Parked;
use serde::Serialize;
use std::sync::Mutex;

/// One parked key, as `/parked` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ParkedInfo {
    /// The key.
    pub key: String,
    /// The unit of state it is parked in.
    pub unit: String,
    /// The failing event's partition.
    pub partition: String,
    /// The failing event's offset.
    pub offset: u64,
    /// Why it failed: a stable code.
    pub code: String,
    /// Why it failed.
    pub message: String,
    /// Events of the key held since.
    pub held: usize,
    /// Bytes the entry holds, roughly.
    pub bytes: usize,
    /// When the key was parked, ms since the Unix epoch.
    pub since_ms: i64,
}

impl ParkedInfo {
    /// The entry of `key`, parked in `unit`.
    pub(crate) fn of(key: &str, unit: &str, p: &Parked) -> Self {
        ParkedInfo {
            key: key.to_string(),
            unit: unit.to_string(),
            partition: p.failing.partition.to_string(),
            offset: p.failing.offset,
            code: p.code.to_string(),
            message: p.message.to_string(),
            held: p.held.len(),
            bytes: p.bytes(),
            since_ms: p.since_ms,
        }
    }
}

/// Every worker's parked keys as of its last epoch.
#[derive(Debug, Default)]
pub struct ParkBoard {
    per_worker: Mutex<Vec<Vec<ParkedInfo>>>,
}

impl ParkBoard {
    /// Worker `worker`'s parked keys are now `keys`.
    pub(crate) fn set(&self, worker: usize, keys: Vec<ParkedInfo>) {
        let mut g = self.per_worker.lock().expect("park board lock");
        if g.len() <= worker {
            g.resize_with(worker + 1, Vec::new);
        }
        g[worker] = keys;
    }

    /// Every parked key, sorted by key then unit.
    pub fn list(&self) -> Vec<ParkedInfo> {
        let g = self.per_worker.lock().expect("park board lock");
        let mut all: Vec<ParkedInfo> = g.iter().flatten().cloned().collect();
        all.sort_by(|a, b| (&a.key, &a.unit).cmp(&(&b.key, &b.unit)));
        all
    }

    /// How many keys are parked and how many events they hold.
    pub fn totals(&self) -> (usize, usize) {
        let g = self.per_worker.lock().expect("park board lock");
        g.iter()
            .flatten()
            .fold((0, 0), |(k, h), p| (k + 1, h + p.held + 1))
    }
}

/// `retry` or `skip` of a parked key, sent to every worker.
#[derive(Debug)]
pub struct ParkRequest {
    /// The key.
    pub key: String,
    /// Drop the failing event (to the dead-letter destination) instead of retrying it.
    pub skip: bool,
    /// Where the worker holding the key answers (the others answer `None`).
    pub reply: Sender<Option<Resolved>>,
}

/// What a retry or skip did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Resolved {
    /// The key.
    pub key: String,
    /// Its events applied (the failing one on retry, and the held ones).
    pub applied: u64,
    /// Its events dropped as duplicates (version or id) or by design (an upcaster).
    pub dropped: u64,
    /// The offset of the failing event that `skip` sent to the dead letters.
    pub skipped: Option<u64>,
    /// Still parked: an event failed again (it and the events after it stay held).
    pub parked: Option<ParkedInfo>,
}
