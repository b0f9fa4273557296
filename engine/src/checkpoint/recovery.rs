//! Taking checkpoints at epoch barriers, and restoring from the newest valid one.
//!
//! ```text
//!  barrier(checkpoint) ─▶ every worker encodes its piece of each partition
//!                       ─▶ coordinator: publish the epoch, then write
//!                            partition-<i>.state (all workers' pieces of partition i)
//!                            + manifest (next offset per partition, dead-letter length)
//!  start ─▶ newest checkpoint whose checksums verify ─▶ pieces merged, split by key
//!           over this run's workers; source resumed at the stored offsets; the
//!           dead-letter file cut back to its length at the cut
//! ```
//!
//! The state and the offsets come from the same epoch, and the operators are
//! deterministic, so replaying from the stored offsets rebuilds exactly the state a run
//! without the crash would have had: every event counts once.

use super::store::{CheckpointStore, NewCheckpoint, PartitionOffset};
use crate::bad_records::BadRecords;
use crate::{Error, Result};
use projector_connectors::{PartitionInfo, Resume};
use projector_operators::projection::{PartitionState, Projection};
use projector_operators::snapshot;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The newest checkpoint, for `/status` and the progress line.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Epoch of the newest checkpoint (0: none yet).
    pub epoch: u64,
    /// When it was written, epoch milliseconds.
    pub written_ms: u64,
    /// How long writing it took.
    pub duration_ms: u64,
    /// Bytes of state it holds.
    pub bytes: u64,
}

/// Shared view of the newest checkpoint.
#[derive(Debug, Default)]
pub struct CheckpointStatus(Mutex<CheckpointInfo>);

impl CheckpointStatus {
    /// A copy of the newest checkpoint's info.
    pub fn get(&self) -> CheckpointInfo {
        self.0.lock().expect("checkpoint status lock").clone()
    }

    pub(crate) fn set(&self, info: CheckpointInfo) {
        *self.0.lock().expect("checkpoint status lock") = info;
    }
}

/// Writes checkpoints; owned by the coordinator thread.
pub struct Checkpointer {
    /// The store.
    pub store: CheckpointStore,
    /// The pipeline's name, recorded in manifests.
    pub pipeline: String,
    /// Source partition names, by partition id.
    pub partitions: Arc<Vec<String>>,
    /// Dead letters, synced at every checkpoint.
    pub bad: Arc<BadRecords>,
    /// Where the newest checkpoint is reported.
    pub status: Arc<CheckpointStatus>,
    /// Called with the reason when a checkpoint cannot be written.
    pub on_error: Box<dyn Fn(String) + Send>,
    /// The offsets of the newest durable checkpoint, for the source to report.
    pub durable: Arc<Mutex<Option<Vec<u64>>>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Writes the checkpoint of `epoch`: `offsets` are the next offsets per partition,
    /// `pieces` every worker's encoded pieces. A failure is handed to `on_error` (it
    /// stops the pipeline: running on without checkpoints would make every restart
    /// replay more and more).
    pub fn write(&self, epoch: u64, offsets: &[u64], pieces: Vec<Vec<(u32, Vec<u8>)>>) {
        let started = Instant::now();
        if let Err(e) = self.try_write(epoch, offsets, pieces, started) {
            (self.on_error)(format!("cannot write checkpoint {epoch}: {e}"));
        }
    }

    fn try_write(
        &self,
        epoch: u64,
        offsets: &[u64],
        pieces: Vec<Vec<(u32, Vec<u8>)>>,
        started: Instant,
    ) -> Result<()> {
        let dead_letters_len = self.bad.sync().map_err(|source| Error::Io {
            context: format!("syncing {}", self.bad.path().display()),
            source,
        })?;
        // One file per partition: the workers' pieces, each prefixed with its length.
        let mut files: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (partition, bytes) in pieces.into_iter().flatten() {
            let file = files.entry(partition).or_default();
            file.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            file.extend_from_slice(&bytes);
        }
        let bytes = files.values().map(|f| f.len() as u64).sum();
        let checkpoint = NewCheckpoint {
            epoch,
            pipeline: self.pipeline.clone(),
            partitions: self
                .partitions
                .iter()
                .zip(offsets)
                .map(|(name, next)| PartitionOffset {
                    name: name.clone(),
                    next_offset: *next,
                })
                .collect(),
            files: files
                .into_iter()
                .map(|(p, data)| (state_file(p), data))
                .collect(),
            dead_letters_len: Some(dead_letters_len),
            extra: serde_json::Value::Null,
        };
        self.store.write(checkpoint)?;
        *self.durable.lock().expect("durable offsets lock") = Some(offsets.to_vec());
        self.status.set(CheckpointInfo {
            epoch,
            written_ms: now_ms(),
            duration_ms: started.elapsed().as_millis() as u64,
            bytes,
        });
        Ok(())
    }
}

/// The state file of partition `id`.
fn state_file(id: u32) -> String {
    format!("partition-{id}.state")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a run starts from.
#[derive(Debug, Default)]
pub struct Restored {
    /// The epoch of the checkpoint (0 when starting empty).
    pub epoch: u64,
    /// The highest epoch on disk, damaged checkpoints included: this run's epochs
    /// start above it, so a new checkpoint never collides with a skipped one.
    pub epoch_floor: u64,
    /// Where each source partition resumes.
    pub resume: Resume,
    /// Per worker: the state of its keys, by partition.
    pub workers: Vec<BTreeMap<u32, PartitionState>>,
    /// Length to cut the dead-letter file back to (`None`: no checkpoint).
    pub dead_letters_len: Option<u64>,
    /// Damaged checkpoints that were skipped, for the log.
    pub skipped: Vec<String>,
    /// The newest checkpoint's info, for `/status`.
    pub info: CheckpointInfo,
}

/// Loads the newest valid checkpoint in `store` and prepares it for `workers` workers,
/// routing each key with `route`. `partitions` are the source's partitions: a
/// checkpoint naming a partition the source does not have is refused (it belongs to
/// another source; restoring only part of it would lose or double events).
pub fn restore(
    store: &CheckpointStore,
    projection: &Projection,
    partitions: &[PartitionInfo],
    workers: usize,
    route: impl Fn(&str) -> usize,
) -> Result<Restored> {
    let loaded = store.load_latest()?;
    let mut restored = Restored {
        workers: (0..workers).map(|_| BTreeMap::new()).collect(),
        skipped: loaded.skipped,
        epoch_floor: store.list()?.last().copied().unwrap_or(0),
        ..Restored::default()
    };
    let Some((manifest, files)) = loaded.checkpoint else {
        return Ok(restored);
    };
    let at = format!("checkpoint {} in {}", manifest.epoch, store.dir().display());
    let mut ids = BTreeMap::new();
    for p in &manifest.partitions {
        let Some(info) = partitions.iter().find(|i| i.name == p.name) else {
            let known: Vec<&str> = partitions.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::Checkpoint(format!(
                "{at} is for source partition '{}', which this source does not have \
                 (it has: {}); point --state-dir elsewhere or remove the checkpoints",
                p.name,
                known.join(", ")
            )));
        };
        restored.resume.insert(info.id, p.next_offset);
        ids.insert(state_file(info.id), info.id);
    }
    for (name, data) in files {
        let Some(&id) = ids.get(&name) else {
            return Err(Error::Checkpoint(format!(
                "{at}: unexpected state file {name}"
            )));
        };
        let mut state = projection.new_partition_state();
        for piece in pieces(&data).map_err(|e| Error::Checkpoint(format!("{at}: {name}: {e}")))? {
            let decoded = snapshot::decode(projection, piece)
                .map_err(|e| Error::Checkpoint(format!("{at}: {name}: {e}")))?;
            snapshot::merge(&mut state, decoded);
        }
        for (w, piece) in snapshot::split(projection, state, workers, &route)
            .into_iter()
            .enumerate()
        {
            restored.workers[w].insert(id, piece);
        }
    }
    restored.epoch = manifest.epoch;
    restored.dead_letters_len = manifest.dead_letters_len;
    restored.info = CheckpointInfo {
        epoch: manifest.epoch,
        written_ms: manifest.created_ms,
        duration_ms: 0,
        bytes: 0,
    };
    Ok(restored)
}

/// Splits a state file into its length-prefixed pieces.
fn pieces(mut data: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some((len, rest)) = data.split_first_chunk::<8>() else {
            return Err("truncated piece length".into());
        };
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| "piece too long")?;
        if rest.len() < len {
            return Err(format!(
                "truncated piece: {len} bytes announced, {} left",
                rest.len()
            ));
        }
        let (piece, rest) = rest.split_at(len);
        out.push(piece);
        data = rest;
    }
    Ok(out)
}
