//! Taking checkpoints at epoch barriers, and restoring partitions from them.
//!
//! ```text
//!  barrier(checkpoint) ─▶ every worker encodes its piece of each partition it holds
//!                       ─▶ coordinator: publish the epoch, then for every partition this
//!                          instance owns, a checkpoint in checkpoints/<partition>/:
//!                            state (all workers' pieces) + manifest (next offset)
//!  assign (start, or a consumer-group rebalance)
//!       ─▶ per partition: newest checkpoint whose checksums verify ─▶ pieces merged,
//!          split by key over this run's workers; the source resumes at its offset
//! ```
//!
//! Checkpoints are per source partition because state is: every key's state lives in
//! the partition its events came from, so each partition's state and offset form a
//! consistent pair on their own. That is what lets a partition move between instances
//! sharing a state directory (a consumer-group rebalance) without touching the others,
//! and lets a crash between two partitions' writes of one epoch lose nothing: each
//! resumes from its own newest checkpoint. The operators are deterministic, so a replay
//! from the stored offset rebuilds exactly the state a run without the crash had.
//!
//! Checkpoint directories are numbered by epoch. An instance that takes a partition over
//! first raises its epoch counter above every checkpoint of that partition on disk, so a
//! partition's checkpoints are numbered in the order they were taken, whoever took them.

use super::CheckpointError;
use super::store::{CheckpointStore, NewCheckpoint, PartitionOffset};
use crate::runtime::bad_records::BadRecords;
use crate::{Error, Fatal, Result};
use projector_connectors::Resume;
use projector_operators::codec;
use projector_operators::projection::{PartitionState, Projection};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// Shared view of the newest checkpoint, overall and per partition.
#[derive(Debug, Default)]
pub struct CheckpointStatus {
    newest: Mutex<CheckpointInfo>,
    /// Partition id → (epoch, written at, Unix ms) of its newest checkpoint.
    partitions: Mutex<BTreeMap<u32, (u64, u64)>>,
}

impl CheckpointStatus {
    /// A copy of the newest checkpoint's info.
    pub fn get(&self) -> CheckpointInfo {
        self.newest.lock().expect("checkpoint status lock").clone()
    }

    /// The epoch and write time (Unix ms) of partition `id`'s newest checkpoint.
    pub fn partition(&self, id: u32) -> Option<(u64, u64)> {
        self.partitions
            .lock()
            .expect("checkpoint status lock")
            .get(&id)
            .copied()
    }

    pub(crate) fn set(&self, info: CheckpointInfo) {
        *self.newest.lock().expect("checkpoint status lock") = info;
    }

    pub(crate) fn set_partitions(&self, ids: &[u32], epoch: u64, written_ms: u64) {
        let mut g = self.partitions.lock().expect("checkpoint status lock");
        for id in ids {
            g.insert(*id, (epoch, written_ms));
        }
    }
}

/// Where each partition's checkpoints live: `<checkpoints>/<partition>/`, the name made
/// safe for a file system (`bank-events/3` → `bank-events%2F3`).
pub(crate) fn partition_dir(root: &Path, partition: &str) -> PathBuf {
    let mut name = String::with_capacity(partition.len());
    for b in partition.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.starts_with('.') {
        // Never a hidden name, nor `.` or `..`.
        name.replace_range(0..1, "%2E");
    }
    root.join(name)
}

/// Refuses a checkpoint directory in the layout before per-partition checkpoints (one
/// `epoch-*` directory for all partitions), rather than silently starting over.
pub(crate) fn check_layout(root: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("epoch-") {
            return Err(CheckpointError::OldLayout {
                root: root.to_path_buf(),
            }
            .into());
        }
    }
    Ok(())
}

/// Writes checkpoints; owned by the coordinator thread.
pub(crate) struct Checkpointer {
    /// The `checkpoints` directory; each partition has a store below it.
    pub root: PathBuf,
    /// Checkpoints kept per partition.
    pub keep: usize,
    /// The pipeline's name, recorded in manifests.
    pub pipeline: String,
    /// Source partition names, by partition id.
    pub partitions: Arc<Vec<String>>,
    /// Dead letters, synced at every checkpoint.
    pub bad: Arc<BadRecords>,
    /// Where the newest checkpoint is reported.
    pub status: Arc<CheckpointStatus>,
    /// Called with the reason when a checkpoint cannot be written.
    pub on_error: Box<dyn Fn(Fatal) + Send>,
    /// The offsets of the newest durable checkpoint, for the source to report.
    pub durable: Arc<Mutex<Option<Resume>>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Writes the checkpoint of `epoch` for every partition in `offsets` (the ones this
    /// instance owns and knows the position of: partition id → next offset); `pieces`
    /// are every worker's encoded pieces. A failure is handed to `on_error` (it stops
    /// the pipeline: running on without checkpoints would make every restart replay
    /// more and more).
    pub(crate) fn write(&self, epoch: u64, offsets: &Resume, pieces: Vec<Vec<(u32, Vec<u8>)>>) {
        let started = Instant::now();
        if let Err(e) = self.try_write(epoch, offsets, pieces, started) {
            (self.on_error)(Fatal::Checkpoint {
                epoch,
                source: Arc::new(e),
            });
        }
    }

    fn try_write(
        &self,
        epoch: u64,
        offsets: &Resume,
        pieces: Vec<Vec<(u32, Vec<u8>)>>,
        started: Instant,
    ) -> Result<()> {
        // Letters of the records before the cut must be durable before the cut is.
        self.bad.sync().map_err(|source| Error::Io {
            context: format!("syncing dead letters to {}", self.bad.destination()),
            source,
        })?;
        // One file per partition: the workers' pieces, each prefixed with its length.
        let mut files: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (partition, bytes) in pieces.into_iter().flatten() {
            let file = files.entry(partition).or_default();
            file.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            file.extend_from_slice(&bytes);
        }
        let mut bytes = 0;
        let mut written = Vec::with_capacity(offsets.len());
        for (&id, &next) in offsets {
            let name = &self.partitions[id as usize];
            let data = files.remove(&id).unwrap_or_default();
            bytes += data.len() as u64;
            let store =
                CheckpointStore::open(&partition_dir(&self.root, name))?.with_keep(self.keep);
            store.write(NewCheckpoint {
                epoch,
                pipeline: self.pipeline.clone(),
                partitions: vec![PartitionOffset {
                    name: name.clone(),
                    next_offset: next,
                }],
                files: vec![(STATE_FILE.to_string(), data)],
                dead_letters_len: None,
                extra: serde_json::Value::Null,
            })?;
            written.push(id);
        }
        *self.durable.lock().expect("durable offsets lock") = Some(offsets.clone());
        let now = now_ms();
        self.status.set(CheckpointInfo {
            epoch,
            written_ms: now,
            duration_ms: started.elapsed().as_millis() as u64,
            bytes,
        });
        self.status.set_partitions(&written, epoch, now);
        Ok(())
    }
}

/// The state file in each partition checkpoint.
const STATE_FILE: &str = "partition.state";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One partition as restored from its newest valid checkpoint.
#[derive(Debug, Default)]
pub(crate) struct RestoredPartition {
    /// Where it resumes (`None`: it has no checkpoint; start where the source starts).
    pub resume: Option<u64>,
    /// The epoch of the checkpoint (0: none).
    pub epoch: u64,
    /// The highest epoch of this partition on disk, damaged checkpoints included: the
    /// next checkpoint must be numbered above it.
    pub epoch_floor: u64,
    /// When the checkpoint was written, Unix milliseconds (0: none).
    pub written_ms: u64,
    /// Its state, split over the workers by key (index = worker).
    pub workers: Vec<PartitionState>,
    /// Damaged checkpoints that were skipped, for the log.
    pub skipped: Vec<String>,
}

/// Loads the newest valid checkpoint of partition `name` under `root` and splits its
/// state over `workers` workers, routing each key with `route`.
pub(crate) fn restore_partition(
    root: &Path,
    name: &str,
    projection: &Projection,
    workers: usize,
    route: impl Fn(&str) -> usize,
) -> Result<RestoredPartition> {
    let dir = partition_dir(root, name);
    let empty = |floor| RestoredPartition {
        epoch_floor: floor,
        workers: (0..workers)
            .map(|_| projection.new_partition_state())
            .collect(),
        ..RestoredPartition::default()
    };
    if !dir.exists() {
        return Ok(empty(0));
    }
    let store = CheckpointStore::open(&dir)?;
    let loaded = store.load_latest()?;
    let mut restored = empty(store.list()?.last().copied().unwrap_or(0));
    restored.skipped = loaded
        .skipped
        .into_iter()
        .map(|s| format!("partition {name}: {s}"))
        .collect();
    let Some((manifest, files)) = loaded.checkpoint else {
        return Ok(restored);
    };
    let at = format!("checkpoint {} in {}", manifest.epoch, dir.display());
    let [offset] = manifest.partitions.as_slice() else {
        return Err(CheckpointError::PartitionCount {
            at,
            found: manifest.partitions.len(),
        }
        .into());
    };
    if offset.name != name {
        return Err(CheckpointError::WrongPartition {
            at,
            found: offset.name.clone(),
            expected: name.to_string(),
        }
        .into());
    }
    let mut state = projection.new_partition_state();
    for (file, data) in files {
        if file != STATE_FILE {
            return Err(CheckpointError::UnexpectedFile { at, file }.into());
        }
        let pieces = pieces(&data).map_err(|source| CheckpointError::Pieces {
            at: at.clone(),
            file: file.clone(),
            source,
        })?;
        for piece in pieces {
            let decoded =
                codec::decode(projection, piece).map_err(|source| CheckpointError::Decode {
                    at: at.clone(),
                    file: file.clone(),
                    source,
                })?;
            codec::merge(&mut state, decoded);
        }
    }
    restored.workers = codec::split(projection, state, workers, &route);
    restored.resume = Some(offset.next_offset);
    restored.epoch = manifest.epoch;
    restored.written_ms = manifest.created_ms;
    Ok(restored)
}

/// A state file whose length-prefixed pieces do not add up.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    /// The file ends inside a piece's length.
    #[error("truncated piece length")]
    TruncatedLength,
    /// A length that does not fit in memory.
    #[error("piece too long")]
    TooLong,
    /// The file ends inside a piece.
    #[error("truncated piece: {announced} bytes announced, {left} left")]
    Truncated {
        /// The piece's length.
        announced: usize,
        /// The bytes left in the file.
        left: usize,
    },
}

/// Splits a state file into its length-prefixed pieces.
fn pieces(mut data: &[u8]) -> std::result::Result<Vec<&[u8]>, PieceError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some((len, rest)) = data.split_first_chunk::<8>() else {
            return Err(PieceError::TruncatedLength);
        };
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| PieceError::TooLong)?;
        if rest.len() < len {
            return Err(PieceError::Truncated {
                announced: len,
                left: rest.len(),
            });
        }
        let (piece, rest) = rest.split_at(len);
        out.push(piece);
        data = rest;
    }
    Ok(out)
}
