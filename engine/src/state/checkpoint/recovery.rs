//! Taking checkpoints at epoch barriers, and restoring partitions from them.
//!
//! ```text
//!  barrier(checkpoint) ─▶ every worker encodes its piece of each partition it holds
//!                       ─▶ coordinator: publish the epoch, hand the pieces to the writer
//!                       ─▶ writer thread: per partition this instance owns, a checkpoint
//!                          in the store (state + manifest, then the head), retried while
//!                          the store is away
//!  assign (start, or a consumer-group rebalance)
//!       ─▶ per partition: take it over in the store (raise its generation), then its
//!          newest checkpoint whose checksums verify ─▶ pieces merged, split by key over
//!          this run's workers; the source resumes at its offset
//! ```
//!
//! Checkpoints are per source partition because state is: every key's state lives in
//! the partition its events came from, so each partition's state and offset form a
//! consistent pair on their own. That is what lets a partition move between instances
//! sharing a store (a consumer-group rebalance) without touching the others, and lets a
//! crash between two partitions' writes of one epoch lose nothing: each resumes from
//! its own newest checkpoint. The operators are deterministic, so a replay from the
//! stored offset rebuilds exactly the state a run without the crash had.

use super::CheckpointError;
use super::blobs::{Blobs, Local, Object};
use super::store::{Lease, Manifest, NewCheckpoint, PartitionLog, PartitionOffset};
use crate::config::{CheckpointConfig, Logic};
use crate::state::units::Units;
use crate::{Error, Result};
use projector_connectors::Resume;
use projector_operators::codec;
use projector_operators::projection::{PartitionState, Projection};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Shared view of the checkpoints: the newest overall and per partition, damaged ones
/// skipped at restore, and whether the store is away.
#[derive(Debug, Default)]
pub struct CheckpointStatus {
    newest: Mutex<CheckpointInfo>,
    /// Partition id → (epoch, written at, Unix ms) of its newest checkpoint.
    partitions: Mutex<BTreeMap<u32, (u64, u64)>>,
    /// Damaged checkpoints skipped when partitions were restored, oldest first.
    skipped: Mutex<Vec<String>>,
    /// Why checkpoints cannot be written right now (the store is away), if so.
    degraded: Mutex<Option<String>>,
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

    /// Damaged checkpoints skipped at restore (newest 100), each with its reason.
    pub fn skipped(&self) -> Vec<String> {
        self.skipped.lock().expect("checkpoint status lock").clone()
    }

    /// Why checkpoints cannot be written right now, if so.
    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .expect("checkpoint status lock")
            .clone()
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

    pub(crate) fn add_skipped(&self, reasons: &[String]) {
        let mut g = self.skipped.lock().expect("checkpoint status lock");
        g.extend_from_slice(reasons);
        let excess = g.len().saturating_sub(100);
        g.drain(..excess);
    }

    pub(crate) fn set_degraded(&self, why: Option<String>) {
        *self.degraded.lock().expect("checkpoint status lock") = why;
    }
}

/// The run's checkpoint store and the partitions this instance holds in it.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    blobs: Arc<dyn Blobs>,
    /// The store, for messages: a path or a URL.
    pub(crate) location: String,
    keep: usize,
    /// Who this instance is, in the heads it writes.
    owner: String,
    /// The units checkpoints are kept for (ids and names), with their partitions.
    units: Arc<Units>,
    /// Replay a partition whose every checkpoint is damaged instead of refusing to.
    replay_if_damaged: bool,
    /// What shapes each view's state: recorded in every checkpoint, compared on restore.
    logic: Logic,
    /// The pipeline file's text, recorded in every checkpoint (a rebuild runs the old
    /// views from it).
    definition: String,
    /// The partitions this instance holds, with the head it last wrote.
    leases: Mutex<BTreeMap<u32, Arc<Mutex<Lease>>>>,
    /// The generation each lease was taken at (read without waiting for a commit).
    generations: Mutex<BTreeMap<u32, u64>>,
    /// Partitions another instance took over, for the ingest thread to drop.
    fenced: Mutex<Vec<u32>>,
}

impl Checkpoints {
    /// The store `config` names, or `<state_dir>/checkpoints`.
    pub(crate) fn open(
        config: &CheckpointConfig,
        state_dir: &Path,
        units: Arc<Units>,
        replay_if_damaged: bool,
        logic: Logic,
        definition: String,
    ) -> Result<Self> {
        let blobs = open_blobs(config, state_dir)?;
        Ok(Checkpoints {
            definition,
            location: blobs.describe(""),
            blobs,
            keep: config.keep,
            owner: instance_id(),
            units,
            replay_if_damaged,
            logic,
            leases: Mutex::new(BTreeMap::new()),
            generations: Mutex::new(BTreeMap::new()),
            fenced: Mutex::new(Vec::new()),
        })
    }

    /// The units, with their partitions.
    pub(crate) fn units(&self) -> &Units {
        &self.units
    }

    fn log(&self, id: u32) -> PartitionLog {
        PartitionLog::new(self.blobs.clone(), self.units.name(id), self.keep)
    }

    /// Takes unit `id` over in the store and loads its newest valid checkpoint,
    /// split over `workers` workers by `route`.
    pub(crate) fn restore(
        &self,
        id: u32,
        projection: &Projection,
        workers: usize,
        route: impl Fn(&str) -> usize,
    ) -> Result<RestoredPartition> {
        let name = self.units.name(id).to_string();
        let log = self.log(id);
        // Before taking the unit over: a refused restore must not fence the instance
        // that runs the old logic.
        match log.peek()? {
            (_, Some(manifest)) => self.check_logic(&manifest, &log)?,
            (false, None) => self.check_no_other_units(id)?,
            (true, None) => {}
        }
        let lease = log.acquire(&self.owner)?;
        if !lease.had_head() && !self.replay_if_damaged && log.has_checkpoint_objects()? {
            // Someone deleted the head: the checkpoints are there, but which is newest
            // and whose is unknown.
            return Err(CheckpointError::NothingUsable {
                partition: name.clone(),
                reasons: format!(
                    "{} is missing but checkpoint files are there",
                    log.describe()
                ),
            }
            .into());
        }
        let loaded = log.load(&lease)?;
        let mut restored = RestoredPartition {
            epoch_floor: lease.epoch_floor(),
            workers: (0..workers)
                .map(|_| projection.new_partition_state())
                .collect(),
            skipped: loaded
                .skipped
                .iter()
                .map(|s| format!("partition {name}: {s}"))
                .collect(),
            ..RestoredPartition::default()
        };
        let checkpoint = match loaded.checkpoint {
            Some(c) => c,
            None if lease.checkpoints() > 0 && !self.replay_if_damaged => {
                return Err(CheckpointError::NothingUsable {
                    partition: name.clone(),
                    reasons: loaded.skipped.join("; "),
                }
                .into());
            }
            None => {
                self.hold(id, lease);
                return Ok(restored);
            }
        };
        let (manifest, files) = checkpoint;
        let at = format!("checkpoint {} of {}", manifest.epoch, log.describe());
        self.check_logic(&manifest, &log)?;
        // One offset per partition of the unit (those whose position was known).
        let members = self.units.members(id).len();
        if manifest.partitions.is_empty() || manifest.partitions.len() > members {
            return Err(CheckpointError::PartitionCount {
                at,
                found: manifest.partitions.len(),
                expected: members,
            }
            .into());
        }
        let mut resume = Resume::new();
        for offset in &manifest.partitions {
            let Some(p) = self.units.member_named(id, &offset.name) else {
                return Err(CheckpointError::WrongPartition {
                    at,
                    found: offset.name.clone(),
                    expected: name.clone(),
                }
                .into());
            };
            resume.insert(p, offset.next_offset);
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
        restored.resume = Some(resume);
        restored.epoch = manifest.epoch;
        restored.written_ms = manifest.created_ms;
        self.hold(id, lease);
        Ok(restored)
    }

    /// Refuses a checkpoint written by other logic than the running pipeline's (one
    /// written before logic was recorded has none: taken as unchanged).
    fn check_logic(&self, manifest: &Manifest, log: &PartitionLog) -> Result<()> {
        let Some(stored) = manifest.extra.get("logic").and_then(Logic::from_json) else {
            return Ok(());
        };
        let changes = self.logic.changes_from(&stored);
        if changes.is_empty() {
            return Ok(());
        }
        Err(CheckpointError::LogicChanged {
            at: format!("checkpoint {} of {}", manifest.epoch, log.describe()),
            store: self.location.clone(),
            changes,
        }
        .into())
    }

    /// Refuses to start unit `id` empty when the store holds checkpoints of units that
    /// share a partition with it: the topics read together changed (a topic added or
    /// removed, or checkpoints from before topics were read as units), and starting
    /// empty would silently drop what they hold.
    fn check_no_other_units(&self, id: u32) -> Result<()> {
        let name = self.units.name(id);
        let Some((topics, number)) = name.rsplit_once('/') else {
            return Ok(());
        };
        let mine: Vec<&str> = topics.split('+').collect();
        let mut others = Vec::new();
        for key in self.blobs.list("").map_err(CheckpointError::Store)? {
            let Some(dir) = key.strip_suffix("/head.json").filter(|d| !d.contains('/')) else {
                continue;
            };
            let Some(other) = super::store::partition_of_dir(dir) else {
                continue;
            };
            let Some((their_topics, their_number)) = other.rsplit_once('/') else {
                continue;
            };
            let overlaps = their_topics.split('+').any(|t| mine.contains(&t));
            if other != name && their_number == number && overlaps {
                others.push(other);
            }
        }
        if others.is_empty() {
            return Ok(());
        }
        Err(CheckpointError::OtherUnits {
            unit: name.to_string(),
            found: others,
            store: self.location.clone(),
        }
        .into())
    }

    fn hold(&self, id: u32, lease: Lease) {
        self.generations
            .lock()
            .expect("generations lock")
            .insert(id, lease.generation());
        self.leases
            .lock()
            .expect("leases lock")
            .insert(id, Arc::new(Mutex::new(lease)));
    }

    /// Whether this instance holds partition `id` in the store.
    pub(crate) fn holds(&self, id: u32) -> bool {
        self.leases.lock().expect("leases lock").contains_key(&id)
    }

    /// The partitions this instance holds, with the generation it holds each at.
    pub(crate) fn held(&self) -> Vec<(u32, u64)> {
        let generations = self.generations.lock().expect("generations lock");
        generations.iter().map(|(id, g)| (*id, *g)).collect()
    }

    /// The store itself, for other records than checkpoints (the cluster's members).
    pub(crate) fn blobs(&self) -> Arc<dyn Blobs> {
        self.blobs.clone()
    }

    /// Who this instance is in the heads it writes.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// Forgets partition `id` (given up, or taken over by another instance).
    pub(crate) fn release(&self, id: u32) {
        self.leases.lock().expect("leases lock").remove(&id);
        self.generations
            .lock()
            .expect("generations lock")
            .remove(&id);
    }

    /// Writes unit `id`'s checkpoint of `epoch` (its state file and where each of its
    /// partitions resumes), if this instance still holds it. `Ok(false)`: it does not.
    pub(crate) fn commit(
        &self,
        id: u32,
        epoch: u64,
        pipeline: &str,
        offsets: &Resume,
        state: &[u8],
        letters: &[u8],
    ) -> Result<bool> {
        let Some(lease) = self.leases.lock().expect("leases lock").get(&id).cloned() else {
            return Ok(false);
        };
        let mut lease = lease.lock().expect("lease lock");
        let checkpoint = self.checkpoint(
            epoch,
            pipeline,
            offsets,
            state,
            &self.logic,
            &self.definition,
        );
        let written = self.log(id).commit(&mut lease, checkpoint, letters);
        match written {
            Ok(_) => Ok(true),
            Err(e @ Error::Checkpoint(CheckpointError::Fenced { .. })) => {
                drop(lease);
                self.release(id);
                self.fenced.lock().expect("fenced lock").push(id);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes unit `id`'s checkpoint of `epoch` for other logic than this store was
    /// opened with: the switch of a rebuild writes the new pipeline's first checkpoints
    /// (its `logic` and `definition`) from the old and the rebuilt state.
    /// `(logic, definition)`: the new pipeline's; `switched`: the rebuild's id, recorded
    /// in the checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rewrite(
        &self,
        id: u32,
        epoch: u64,
        pipeline: &str,
        offsets: &Resume,
        state: &[u8],
        (logic, definition): (&Logic, &str),
        switched: &str,
    ) -> Result<()> {
        let Some(lease) = self.leases.lock().expect("leases lock").get(&id).cloned() else {
            return Err(CheckpointError::NothingUsable {
                partition: self.units.name(id).to_string(),
                reasons: "it is not held by this instance".into(),
            }
            .into());
        };
        let mut lease = lease.lock().expect("lease lock");
        let mut checkpoint = self.checkpoint(epoch, pipeline, offsets, state, logic, definition);
        checkpoint.extra["switched"] = switched.into();
        self.log(id).commit(&mut lease, checkpoint, &[])?;
        Ok(())
    }

    /// A checkpoint of `epoch` with `state`, resuming at `offsets`, recording `logic`
    /// and the pipeline's `definition`.
    fn checkpoint<'a>(
        &self,
        epoch: u64,
        pipeline: &str,
        offsets: &Resume,
        state: &'a [u8],
        logic: &Logic,
        definition: &str,
    ) -> NewCheckpoint<'a> {
        NewCheckpoint {
            epoch,
            pipeline: pipeline.to_string(),
            partitions: offsets
                .iter()
                .map(|(&p, &next_offset)| PartitionOffset {
                    name: self.units.partition_name(p).to_string(),
                    next_offset,
                })
                .collect(),
            files: vec![(STATE_FILE.to_string(), state)],
            extra: serde_json::json!({
                "logic": logic.to_json(),
                "definition": definition,
            }),
        }
    }

    /// Partitions taken over by another instance since the last call.
    pub(crate) fn take_fenced(&self) -> Vec<u32> {
        std::mem::take(&mut *self.fenced.lock().expect("fenced lock"))
    }
}

/// The store `config` names, or `<state_dir>/checkpoints`.
fn open_blobs(config: &CheckpointConfig, state_dir: &Path) -> Result<Arc<dyn Blobs>> {
    let bad = |url: &str, why: String| CheckpointError::BadStore {
        url: url.to_string(),
        why,
    };
    Ok(match &config.store {
        None => {
            let root = state_dir.join("checkpoints");
            check_layout(&root)?;
            Arc::new(Local::new(&root))
        }
        Some(store) => {
            let url = url::Url::parse(&store.url).map_err(|e| bad(&store.url, e.to_string()))?;
            if url.scheme() == "file" {
                let root = url
                    .to_file_path()
                    .map_err(|()| bad(&store.url, "not a local path".into()))?;
                check_layout(&root)?;
                Arc::new(Local::new(&root))
            } else {
                Arc::new(Object::open(&url, store).map_err(|why| bad(&store.url, why))?)
            }
        }
    })
}

/// One partition's checkpoints as the store holds them (`projector checkpoints`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoredPartition {
    /// The partition.
    pub partition: String,
    /// Its owner's generation: raised by every instance that took it over.
    pub generation: u64,
    /// The instance that took it last (host:pid:random).
    pub owner: String,
    /// When, milliseconds since the Unix epoch.
    pub acquired_ms: u64,
    /// The checkpoints its head names, oldest first: (epoch, generation that wrote it).
    pub checkpoints: Vec<(u64, u64)>,
    /// Where the newest checkpoint resumes, for a unit of one partition (`None`: no
    /// checkpoint, or it does not verify, or the unit has several partitions).
    pub next_offset: Option<u64>,
    /// Where the newest checkpoint resumes, per partition of the unit (empty: no
    /// checkpoint, or it does not verify).
    pub offsets: BTreeMap<String, u64>,
    /// Dead-letter segments kept with its checkpoints.
    pub dead_letter_segments: usize,
}

/// The partitions in the checkpoint store `config` names (or
/// `<state_dir>/checkpoints`), in name order, with their heads.
fn stored_heads(
    config: &CheckpointConfig,
    state_dir: &Path,
) -> Result<(Arc<dyn Blobs>, Vec<super::store::Head>)> {
    let blobs = open_blobs(config, state_dir)?;
    let mut keys: Vec<String> = blobs
        .list("")
        .map_err(CheckpointError::Store)?
        .into_iter()
        .filter(|k| k.ends_with("/head.json") && k.matches('/').count() == 1)
        .collect();
    keys.sort();
    let mut heads = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(blob) = blobs.get(&key).map_err(CheckpointError::Store)? else {
            continue;
        };
        heads.push(super::store::Head::parse(
            &blob.data,
            &blobs.describe(&key),
        )?);
    }
    Ok((blobs, heads))
}

/// The manifest of every unit's newest checkpoint in the store `config` names (or
/// `<state_dir>/checkpoints`), by unit name (`None`: it has none).
pub(crate) fn stored_manifests(
    config: &CheckpointConfig,
    state_dir: &Path,
) -> Result<Vec<(String, Option<super::store::Manifest>)>> {
    let (blobs, heads) = stored_heads(config, state_dir)?;
    let mut out = Vec::with_capacity(heads.len());
    for head in heads {
        let log = PartitionLog::new(blobs.clone(), &head.partition, config.keep);
        out.push((head.partition.clone(), log.peek()?.1));
    }
    Ok(out)
}

/// Every partition's checkpoints in the store `config` names (or
/// `<state_dir>/checkpoints`).
pub fn stored_checkpoints(
    config: &CheckpointConfig,
    state_dir: &Path,
) -> Result<Vec<StoredPartition>> {
    let (blobs, heads) = stored_heads(config, state_dir)?;
    let mut out = Vec::with_capacity(heads.len());
    for head in heads {
        let log = PartitionLog::new(blobs.clone(), &head.partition, config.keep);
        let offsets: BTreeMap<String, u64> = log
            .newest_offsets(&head)?
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name, p.next_offset))
            .collect();
        out.push(StoredPartition {
            next_offset: match offsets.len() {
                1 => offsets.values().next().copied(),
                _ => None,
            },
            offsets,
            partition: head.partition,
            generation: head.generation,
            owner: head.owner,
            acquired_ms: head.acquired_ms,
            checkpoints: head
                .checkpoints
                .iter()
                .map(|c| (c.epoch, c.generation))
                .collect(),
            dead_letter_segments: head.dead_letters.len(),
        });
    }
    Ok(out)
}

/// Every dead letter kept in the checkpoint store `config` names (or
/// `<state_dir>/checkpoints`), partition by partition, oldest first within each: one
/// JSON line per bad record, as in a dead-letter file.
pub fn stored_dead_letters(config: &CheckpointConfig, state_dir: &Path) -> Result<Vec<u8>> {
    let (blobs, heads) = stored_heads(config, state_dir)?;
    let mut out = Vec::new();
    for head in heads {
        out.extend(PartitionLog::new(blobs.clone(), &head.partition, config.keep).dead_letters()?);
    }
    Ok(out)
}

/// This process, as the heads it writes name it: host, process id, a random part.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

/// Refuses a checkpoint directory in a layout this version does not read (one
/// `epoch-*` directory per checkpoint, for all partitions or per partition), rather
/// than silently starting over.
pub(crate) fn check_layout(root: &Path) -> Result<()> {
    let old = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("epoch-"))
        })
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let mut found = old(root);
    for entry in entries.flatten() {
        found |= entry.file_type().is_ok_and(|t| t.is_dir()) && old(&entry.path());
    }
    if found {
        return Err(CheckpointError::OldLayout {
            root: root.to_path_buf(),
        }
        .into());
    }
    Ok(())
}

/// The state file in each partition checkpoint.
const STATE_FILE: &str = "partition.state";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One unit as restored from its newest valid checkpoint.
#[derive(Debug, Default)]
pub(crate) struct RestoredPartition {
    /// Where each of its partitions resumes (`None`: it has no checkpoint; start where
    /// the source starts; a partition missing from it, which had no known position at
    /// the checkpoint, also does).
    pub resume: Option<Resume>,
    /// The epoch of the checkpoint (0: none).
    pub epoch: u64,
    /// The highest epoch of this partition's checkpoints, damaged ones included: the
    /// next checkpoint must be numbered above it.
    pub epoch_floor: u64,
    /// When the checkpoint was written, Unix milliseconds (0: none).
    pub written_ms: u64,
    /// Its state, split over the workers by key (index = worker).
    pub workers: Vec<PartitionState>,
    /// Damaged checkpoints that were skipped, for the log.
    pub skipped: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PipelineConfig, load_str};
    use projector_connectors::PartitionInfo;

    fn pipeline(handler: &str) -> PipelineConfig {
        let text = format!(
            "name: t\nsource: {{ type: generator, scenario: bank }}\n\
             envelope: {{ id: eventId, type: eventType, key: aggregateId }}\n\
             views:\n  - name: v\n    fold:\n      columns: {{ n: int64 }}\n      \
             on: {{ MoneyDeposited: {{ set: {{ n: {handler} }} }} }}\n"
        );
        load_str(&text, Path::new("t.yaml")).expect("pipeline")
    }

    fn checkpoints(dir: &Path, units: Units, config: &PipelineConfig) -> Checkpoints {
        let c = CheckpointConfig::default();
        Checkpoints::open(
            &c,
            dir,
            Arc::new(units),
            false,
            config.logic.clone(),
            config.text.clone(),
        )
        .expect("open")
    }

    fn projection(config: &PipelineConfig) -> Projection {
        Projection::new(
            config.envelope.clone(),
            config.views.clone(),
            &config.fields,
        )
    }

    /// A state file holding one empty piece.
    fn state_file(p: &Projection) -> Vec<u8> {
        let mut piece = Vec::new();
        codec::encode(p, &p.new_partition_state(), &mut piece);
        let mut file = (piece.len() as u64).to_le_bytes().to_vec();
        file.extend(piece);
        file
    }

    fn orders() -> Units {
        Units::new(&[PartitionInfo::single(0, "orders/0")])
    }

    /// `orders` and `payments`: unit 0 of both.
    fn orders_and_payments() -> Units {
        let p = |id, name: &str, stream| PartitionInfo {
            id,
            name: name.into(),
            unit: 0,
            unit_name: "orders+payments/0".into(),
            stream,
        };
        Units::new(&[p(0, "orders/0", 0), p(1, "payments/0", 1)])
    }

    #[test]
    fn changed_logic_is_refused_before_the_unit_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = pipeline("payload.amount");
        let running = checkpoints(dir.path(), orders(), &old);
        let p = projection(&old);
        running.restore(0, &p, 1, |_| 0).expect("restore");
        let offsets = Resume::from([(0, 10)]);
        assert!(
            running
                .commit(0, 1, "t", &offsets, &state_file(&p), b"")
                .unwrap()
        );

        let new = pipeline("\"payload.amount*100\"");
        let redeployed = checkpoints(dir.path(), orders(), &new);
        let e = redeployed
            .restore(0, &projection(&new), 1, |_| 0)
            .expect_err("other logic");
        assert!(
            e.to_string()
                .contains("v: fold.on.MoneyDeposited.set.n: \"payload.amount\""),
            "{e}"
        );
        // The running instance was not fenced: it still commits.
        assert!(
            running
                .commit(0, 2, "t", &offsets, &state_file(&p), b"")
                .unwrap()
        );
    }

    #[test]
    fn a_unit_whose_partitions_had_checkpoints_of_their_own_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = pipeline("payload.amount");
        let p = projection(&config);
        let alone = checkpoints(dir.path(), orders(), &config);
        alone.restore(0, &p, 1, |_| 0).expect("restore");
        let offsets = Resume::from([(0, 10)]);
        assert!(
            alone
                .commit(0, 1, "t", &offsets, &state_file(&p), b"")
                .unwrap()
        );

        let together = checkpoints(dir.path(), orders_and_payments(), &config);
        let e = together
            .restore(0, &p, 1, |_| 0)
            .expect_err("topics changed");
        let Error::Checkpoint(e) = e else {
            panic!("{e}")
        };
        assert_eq!(e.code(), "checkpoint.topics_changed");
        assert!(
            e.to_string()
                .starts_with("orders+payments/0 has no checkpoint"),
            "{e}"
        );
        assert!(e.to_string().contains("checkpoints of orders/0"), "{e}");
        // Another topic's units are none of its business.
        let bank = Units::new(&[PartitionInfo::single(0, "bank/0")]);
        checkpoints(dir.path(), bank, &config)
            .restore(0, &p, 1, |_| 0)
            .expect("a unit of its own");
    }
}
