//! One partition's checkpoints in a store: checkpoints that are never changed once
//! written, and a head that names them and the partition's owner, replaced only by
//! compare-and-swap.
//!
//! ```text
//! <store>/<partition>/
//!   head.json                                      owner's generation, checkpoints (newest last)
//!   g00000000000000000003-e00000000000000000012/   one checkpoint: generation 3, epoch 12
//!     partition.state
//!     manifest.json                                offset of record, file lengths and crc32s
//!   dead-letters/
//!     g00000000000000000003-e00000000000000000012.ndjson   bad records up to that checkpoint
//! ```
//!
//! **A checkpoint exists once the head names it.** Its files and manifest are written
//! first, under a name no other writer uses (the writer's generation and the epoch);
//! then the head is replaced by one that names it, on condition that the head is still
//! the version this instance last wrote. A crash before that leaves unnamed objects,
//! which the next owner deletes; loading reads only what the head names, verifies every
//! length and checksum, and falls back to an older checkpoint rather than restore
//! damaged state.
//!
//! **Ownership is a generation in the head.** An instance that is given the partition
//! raises the generation by one with a conditional write ([`PartitionLog::acquire`]).
//! From then on every head write of the previous owner fails its condition: an
//! instance that lost the partition (paused past its session, cut off from the group)
//! can neither replace, outrank nor interleave with the new owner's checkpoints; its
//! write fails with [`CheckpointError::Fenced`] and it drops the partition.
//! ARCHITECTURE.md has the whole argument.

use super::CheckpointError;
use super::blobs::{BlobError, Blobs, Version};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The manifest format this code writes and reads.
pub(crate) const MANIFEST_VERSION: u32 = 1;
/// The head format this code writes and reads.
const HEAD_VERSION: u32 = 1;

const HEAD: &str = "head.json";
const MANIFEST: &str = "manifest.json";
const LETTERS: &str = "dead-letters";

/// State files: plain file name and contents, in manifest order.
pub(crate) type StateFiles = Vec<(String, Vec<u8>)>;

/// Where one partition resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartitionOffset {
    /// Partition name.
    pub name: String,
    /// The first offset not yet reflected in the checkpoint's state.
    pub next_offset: u64,
}

/// One state file as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    /// Plain file name inside the checkpoint.
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

/// What a checkpoint holds; `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Format of this manifest ([`MANIFEST_VERSION`] when written by this code).
    pub format_version: u32,
    /// The epoch the checkpoint closes.
    pub epoch: u64,
    /// The writer's generation (see [`Head::generation`]).
    #[serde(default)]
    pub generation: u64,
    /// Name of the pipeline that wrote it.
    pub pipeline: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Offsets of record: where each partition resumes.
    pub partitions: Vec<PartitionOffset>,
    /// The state files, with their lengths and checksums.
    pub files: Vec<FileEntry>,
    /// Anything else the caller wants restored with the checkpoint.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// A checkpoint to write; the state is borrowed, not copied (1M keys are ~80 MB).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewCheckpoint<'a> {
    /// The epoch it closes.
    pub epoch: u64,
    /// Name of the pipeline.
    pub pipeline: String,
    /// Where each partition resumes.
    pub partitions: Vec<PartitionOffset>,
    /// State files: plain file name and contents.
    pub files: Vec<(String, &'a [u8])>,
    /// Anything else to restore with the checkpoint.
    pub extra: serde_json::Value,
}

/// A checkpoint the head names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadEntry {
    /// Its directory below the partition's.
    pub name: String,
    /// The epoch it closes.
    pub epoch: u64,
    /// The generation that wrote it.
    pub generation: u64,
}

/// `head.json`: the partition's owner and its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    /// Format of this head ([`HEAD_VERSION`]).
    pub format_version: u32,
    /// The partition.
    pub partition: String,
    /// Raised by one by every instance that takes the partition over: the fencing token.
    pub generation: u64,
    /// Who took it, for messages: host, process id and a random part.
    pub owner: String,
    /// When, milliseconds since the Unix epoch.
    pub acquired_ms: u64,
    /// The checkpoints, oldest first; at most `keep`.
    pub checkpoints: Vec<HeadEntry>,
    /// The dead-letter segments (below `dead-letters/`), oldest first: each holds the
    /// bad records of the partition since the previous one, and is named here in the
    /// same write as the checkpoint it ends at, so a replay never writes a letter twice.
    #[serde(default)]
    pub dead_letters: Vec<String>,
}

impl Head {
    /// A head read from the store at `at` (for messages), in a format this build reads.
    pub(crate) fn parse(data: &[u8], at: &str) -> Result<Head> {
        let bad = |why: String| CheckpointError::BadHead {
            at: at.to_string(),
            why,
        };
        let head: Head = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
        if head.format_version != HEAD_VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this build reads {HEAD_VERSION})",
                head.format_version
            ))
            .into());
        }
        Ok(head)
    }
}

/// This instance's ownership of a partition: the head as it last wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    head: Head,
    version: Version,
    /// Whether the partition had a head before this instance took it.
    had_head: bool,
}

impl Lease {
    /// The generation this instance holds.
    pub(crate) fn generation(&self) -> u64 {
        self.head.generation
    }

    /// The highest epoch of the partition's checkpoints: the next must be above it.
    pub(crate) fn epoch_floor(&self) -> u64 {
        self.head
            .checkpoints
            .iter()
            .map(|c| c.epoch)
            .max()
            .unwrap_or(0)
    }

    /// Whether the partition had a head before this instance took it over.
    pub(crate) fn had_head(&self) -> bool {
        self.had_head
    }

    /// How many checkpoints the head names.
    pub(crate) fn checkpoints(&self) -> usize {
        self.head.checkpoints.len()
    }
}

/// What [`PartitionLog::load`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Loaded {
    /// The newest checkpoint that verified, with its files (name, contents) in manifest
    /// order; `None` when there is none.
    pub checkpoint: Option<(Manifest, StateFiles)>,
    /// One message per newer checkpoint that was damaged and skipped, newest first.
    pub skipped: Vec<String>,
}

/// One partition's checkpoints.
#[derive(Debug, Clone)]
pub(crate) struct PartitionLog {
    blobs: Arc<dyn Blobs>,
    /// The partition's directory (its name made safe for any store).
    dir: String,
    partition: String,
    keep: usize,
}

impl PartitionLog {
    /// The checkpoints of `partition` in `blobs`, keeping the newest `keep` (at least 1).
    pub(crate) fn new(blobs: Arc<dyn Blobs>, partition: &str, keep: usize) -> Self {
        PartitionLog {
            blobs,
            dir: partition_dir(partition),
            partition: partition.to_string(),
            keep: keep.max(1),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.dir)
    }

    /// Where the partition's head is, for messages.
    pub(crate) fn describe(&self) -> String {
        self.blobs.describe(&self.key(HEAD))
    }

    /// Whether the partition has objects besides its head: checkpoints, named or not.
    pub(crate) fn has_checkpoint_objects(&self) -> Result<bool> {
        let head = self.key(HEAD);
        Ok(self
            .blobs
            .list(&self.dir)
            .map_err(store)?
            .iter()
            .any(|k| *k != head))
    }

    fn read_head(&self) -> Result<Option<(Head, Version)>> {
        let Some(blob) = self.blobs.get(&self.key(HEAD)).map_err(store)? else {
            return Ok(None);
        };
        let head = Head::parse(&blob.data, &self.describe())?;
        if head.partition != self.partition {
            return Err(CheckpointError::BadHead {
                at: self.describe(),
                why: format!(
                    "it is partition '{}''s, not '{}''s",
                    head.partition, self.partition
                ),
            }
            .into());
        }
        Ok(Some((head, blob.version)))
    }

    /// Whether the partition has a head, and the manifest of the newest checkpoint it
    /// names, read without taking the partition over (`None`: no checkpoint, or its
    /// manifest is unreadable: the restore proper finds out why).
    pub(crate) fn peek(&self) -> Result<(bool, Option<Manifest>)> {
        let Some((head, _)) = self.read_head()? else {
            return Ok((false, None));
        };
        let Some(newest) = head.checkpoints.last() else {
            return Ok((true, None));
        };
        let key = format!("{}/{MANIFEST}", self.key(&newest.name));
        let Some(blob) = self.blobs.get(&key).map_err(store)? else {
            return Ok((true, None));
        };
        Ok((true, serde_json::from_slice(&blob.data).ok()))
    }

    /// Takes the partition over for `owner`: raises the generation by one, so that
    /// every later head write of the previous owner fails. Then deletes what no head
    /// names (checkpoints of writers that crashed or were fenced before their head
    /// write).
    pub(crate) fn acquire(&self, owner: &str) -> Result<Lease> {
        let mut attempts = 0;
        let lease = loop {
            attempts += 1;
            let current = self.read_head()?;
            let head = Head {
                format_version: HEAD_VERSION,
                partition: self.partition.clone(),
                generation: current.as_ref().map_or(0, |(h, _)| h.generation) + 1,
                owner: owner.to_string(),
                acquired_ms: now_ms(),
                checkpoints: current
                    .as_ref()
                    .map(|(h, _)| h.checkpoints.clone())
                    .unwrap_or_default(),
                dead_letters: current
                    .as_ref()
                    .map(|(h, _)| h.dead_letters.clone())
                    .unwrap_or_default(),
            };
            let json = encode_head(&head)?;
            let written = match &current {
                None => self.blobs.create(&self.key(HEAD), &json),
                Some((_, v)) => self.blobs.update(&self.key(HEAD), &json, v),
            };
            match written {
                Ok(version) => {
                    break Lease {
                        head,
                        version,
                        had_head: current.is_some(),
                    };
                }
                // Another instance took it between our read and write; the group says
                // it is ours now, so take it from them in turn.
                Err(BlobError::Conflict { .. }) if attempts < 10 => continue,
                Err(e) => return Err(store(e)),
            }
        };
        if let Err(e) = self.sweep(&lease) {
            tracing::warn!(partition = %self.partition, "deleting unnamed checkpoints: {e}");
        }
        Ok(lease)
    }

    /// The newest checkpoint the lease's head names whose manifest and files all
    /// verify. Damaged newer ones are described in [`Loaded::skipped`].
    pub(crate) fn load(&self, lease: &Lease) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut reasons = Vec::new();
        for entry in lease.head.checkpoints.iter().rev() {
            match self.verify(entry) {
                Ok(found) => {
                    loaded.checkpoint = Some(found);
                    break;
                }
                Err(Verify::Damaged(why)) => {
                    reasons.push(format!("checkpoint epoch {}: {why}", entry.epoch));
                }
                Err(Verify::Store(e)) => return Err(store(e)),
            }
        }
        let then = if loaded.checkpoint.is_some() {
            "using an older checkpoint"
        } else {
            "no older checkpoint is usable"
        };
        loaded.skipped = reasons
            .into_iter()
            .map(|r| format!("{r}; {then}"))
            .collect();
        Ok(loaded)
    }

    /// Reads and verifies one checkpoint.
    fn verify(&self, entry: &HeadEntry) -> std::result::Result<(Manifest, StateFiles), Verify> {
        let dir = self.key(&entry.name);
        let bytes = self
            .blobs
            .get(&format!("{dir}/{MANIFEST}"))
            .map_err(Verify::Store)?
            .ok_or_else(|| Verify::Damaged("manifest.json is missing".into()))?;
        let manifest: Manifest = serde_json::from_slice(&bytes.data)
            .map_err(|e| Verify::Damaged(format!("manifest.json is not a valid manifest: {e}")))?;
        if manifest.format_version != MANIFEST_VERSION {
            return Err(Verify::Damaged(format!(
                "manifest format version {} is not supported (this build reads {MANIFEST_VERSION})",
                manifest.format_version
            )));
        }
        if manifest.epoch != entry.epoch || manifest.generation != entry.generation {
            return Err(Verify::Damaged(format!(
                "manifest.json is for epoch {} of generation {}, not {} of {}",
                manifest.epoch, manifest.generation, entry.epoch, entry.generation
            )));
        }
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            let name = &f.name;
            // A manifest is input like any other: never read outside the checkpoint.
            check_name(name)
                .map_err(|why| Verify::Damaged(format!("state file {name:?}: {why}")))?;
            let data = self
                .blobs
                .get(&format!("{dir}/{name}"))
                .map_err(Verify::Store)?
                .ok_or_else(|| Verify::Damaged(format!("state file {name}: missing")))?
                .data;
            if data.len() as u64 != f.len {
                return Err(Verify::Damaged(format!(
                    "state file {name}: length mismatch (expected {} bytes, found {})",
                    f.len,
                    data.len()
                )));
            }
            let crc = crc32fast::hash(&data);
            if crc != f.crc32 {
                return Err(Verify::Damaged(format!(
                    "state file {name}: checksum mismatch (expected {:08x}, found {crc:08x})",
                    f.crc32
                )));
            }
            files.push((name.clone(), data.to_vec()));
        }
        Ok((manifest, files))
    }

    /// Writes a checkpoint and makes it the partition's newest by replacing the head,
    /// if this instance still owns the partition; then deletes the checkpoints beyond
    /// `keep`. Fails with [`CheckpointError::Fenced`] when another instance took the
    /// partition over. A store error leaves nothing named: calling again is safe.
    /// `letters` (dead-letter lines, possibly none) become a segment named with it.
    pub(crate) fn commit(
        &self,
        lease: &mut Lease,
        checkpoint: NewCheckpoint<'_>,
        letters: &[u8],
    ) -> Result<Manifest> {
        let NewCheckpoint {
            epoch,
            pipeline,
            partitions,
            files,
            extra,
        } = checkpoint;
        for (i, (name, _)) in files.iter().enumerate() {
            check_name(name).map_err(|why| CheckpointError::BadFileName {
                epoch,
                name: name.clone(),
                why,
            })?;
            if files[..i].iter().any(|(n, _)| n == name) {
                return Err(CheckpointError::DuplicateFile {
                    epoch,
                    name: name.clone(),
                }
                .into());
            }
        }
        let generation = lease.head.generation;
        if lease
            .head
            .checkpoints
            .iter()
            .any(|c| c.epoch == epoch && c.generation == generation)
        {
            return Err(CheckpointError::EpochExists {
                epoch,
                at: self.describe(),
            }
            .into());
        }
        let name = entry_name(generation, epoch);
        let dir = self.key(&name);
        let mut entries = Vec::with_capacity(files.len());
        for (file, bytes) in &files {
            self.blobs
                .put(&format!("{dir}/{file}"), bytes)
                .map_err(store)?;
            entries.push(FileEntry {
                name: file.clone(),
                len: bytes.len() as u64,
                crc32: crc32fast::hash(bytes),
            });
        }
        let manifest = Manifest {
            format_version: MANIFEST_VERSION,
            epoch,
            generation,
            pipeline,
            created_ms: now_ms(),
            partitions,
            files: entries,
            extra,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|source| CheckpointError::EncodeManifest { epoch, source })?;
        self.blobs
            .put(&format!("{dir}/{MANIFEST}"), &json)
            .map_err(store)?;

        let segment = format!("{name}.ndjson");
        if !letters.is_empty() {
            self.blobs
                .put(&self.key(&format!("{LETTERS}/{segment}")), letters)
                .map_err(store)?;
        }
        let entry = HeadEntry {
            name,
            epoch,
            generation,
        };
        // The head to replace, and its version: the one this instance last wrote.
        let (mut base, mut base_version) = (lease.head.clone(), lease.version.clone());
        let mut attempts = 0;
        let dropped = loop {
            attempts += 1;
            if base.checkpoints.contains(&entry) {
                // A write of this very head landed, its answer lost (see below).
                lease.head = base;
                lease.version = base_version;
                break Vec::new();
            }
            let mut head = base.clone();
            if !letters.is_empty() {
                head.dead_letters.push(segment.clone());
            }
            head.checkpoints.push(entry.clone());
            let excess = head.checkpoints.len().saturating_sub(self.keep);
            let dropped: Vec<HeadEntry> = head.checkpoints.drain(..excess).collect();
            let json = encode_head(&head)?;
            match self.blobs.update(&self.key(HEAD), &json, &base_version) {
                Ok(version) => {
                    lease.head = head;
                    lease.version = version;
                    break dropped;
                }
                Err(BlobError::Conflict { .. }) => {}
                Err(e) => return Err(store(e)),
            }
            // Someone changed the head. Only this instance writes heads of its own
            // generation (taking over raises it), so a head of our generation is one
            // of ours whose answer was lost (a timeout, the store cut off mid-request)
            // and that the writer retried: go on from it.
            match self.read_head()? {
                Some((now, version))
                    if attempts < 4
                        && now.generation == generation
                        && now.owner == lease.head.owner =>
                {
                    (base, base_version) = (now, version);
                }
                now => {
                    // Ours no longer: what we wrote is named by no head; delete it.
                    let _ = self.delete_checkpoint(&self.key(&entry.name));
                    let _ = self
                        .blobs
                        .delete(&self.key(&format!("{LETTERS}/{segment}")));
                    let (generation_now, owner) =
                        now.map_or((0, String::new()), |(h, _)| (h.generation, h.owner));
                    return Err(CheckpointError::Fenced {
                        partition: self.partition.clone(),
                        held: generation,
                        generation: generation_now,
                        owner,
                    }
                    .into());
                }
            }
        };
        // The checkpoint is durable: failing to prune must not make the caller think
        // it was lost, so pruning only warns.
        for old in dropped {
            if let Err(e) = self.delete_checkpoint(&self.key(&old.name)) {
                tracing::warn!(partition = %self.partition, "pruning checkpoint {}: {e}", old.name);
            }
        }
        Ok(manifest)
    }

    /// Deletes every object of one checkpoint directory.
    fn delete_checkpoint(&self, dir: &str) -> std::result::Result<(), BlobError> {
        for key in self.blobs.list(dir)? {
            self.blobs.delete(&key)?;
        }
        Ok(())
    }

    /// Deletes checkpoints the head does not name, written by this generation's
    /// predecessors (crashed or fenced before their head write). Later generations'
    /// are left alone: they may be being written by the instance that took over.
    fn sweep(&self, lease: &Lease) -> std::result::Result<(), BlobError> {
        let prefix = format!("{}/", self.dir);
        let mut doomed = std::collections::BTreeSet::new();
        for key in self.blobs.list(&self.dir)? {
            let Some((name, rest)) = key.strip_prefix(&prefix).and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let (entry, named) = if name == LETTERS {
                let segment = rest.strip_suffix(".ndjson").unwrap_or(rest);
                (segment, lease.head.dead_letters.iter().any(|s| s == rest))
            } else {
                (name, lease.head.checkpoints.iter().any(|c| c.name == name))
            };
            let Some((generation, _)) = parse_entry_name(entry) else {
                continue;
            };
            if !named && generation < lease.head.generation {
                doomed.insert(key);
            }
        }
        for key in doomed {
            self.blobs.delete(&key)?;
        }
        Ok(())
    }

    /// Where the newest checkpoint `head` names resumes (each partition it records), if
    /// it verifies.
    pub(crate) fn newest_offsets(&self, head: &Head) -> Result<Option<Vec<PartitionOffset>>> {
        let Some(newest) = head.checkpoints.last() else {
            return Ok(None);
        };
        match self.verify(newest) {
            Ok((manifest, _)) => Ok(Some(manifest.partitions)),
            Err(Verify::Damaged(_)) => Ok(None),
            Err(Verify::Store(e)) => Err(store(e)),
        }
    }

    /// Every dead letter of the partition, oldest first: the segments its head names,
    /// one JSON line per bad record.
    pub(crate) fn dead_letters(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let Some((head, _)) = self.read_head()? else {
            return Ok(out);
        };
        for segment in &head.dead_letters {
            let key = self.key(&format!("{LETTERS}/{segment}"));
            let blob =
                self.blobs
                    .get(&key)
                    .map_err(store)?
                    .ok_or_else(|| CheckpointError::BadHead {
                        at: self.describe(),
                        why: format!("dead-letter segment {segment} is missing"),
                    })?;
            out.extend_from_slice(&blob.data);
        }
        Ok(out)
    }

    /// The head as it is in the store now (`None`: none), for tools and tests.
    #[cfg(test)]
    pub(crate) fn head(&self) -> Result<Option<Head>> {
        Ok(self.read_head()?.map(|(h, _)| h))
    }
}

/// Why a checkpoint could not be loaded.
enum Verify {
    /// Damaged: skip it and try an older one.
    Damaged(String),
    /// The store failed: try again later, do not skip.
    Store(BlobError),
}

fn store(e: BlobError) -> crate::Error {
    CheckpointError::Store(e).into()
}

fn encode_head(head: &Head) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(head).map_err(|source| {
        CheckpointError::EncodeManifest {
            epoch: head.checkpoints.last().map_or(0, |c| c.epoch),
            source,
        }
        .into()
    })
}

/// A checkpoint's directory name: its writer's generation and its epoch.
fn entry_name(generation: u64, epoch: u64) -> String {
    format!("g{generation:020}-e{epoch:020}")
}

fn parse_entry_name(name: &str) -> Option<(u64, u64)> {
    let (g, e) = name.strip_prefix('g')?.split_once("-e")?;
    // Exactly our own spelling, so that one checkpoint has one name.
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(g) || !digits(e) {
        return None;
    }
    Some((g.parse().ok()?, e.parse().ok()?))
}

/// A partition's directory: its name with every byte but ASCII letters, digits, `-`,
/// `_` and `.` written as `=XX` (`bank-events/3` → `bank-events=2F3`), a spelling every
/// file system and object store keeps as it is. Never hidden, `.` or `..`.
pub(crate) fn partition_dir(partition: &str) -> String {
    let mut name = String::with_capacity(partition.len());
    for (i, b) in partition.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b"_-".contains(&b) || (b == b'.' && i > 0) {
            name.push(b as char);
        } else {
            name.push_str(&format!("={b:02X}"));
        }
    }
    name
}

/// The partition name of a directory [`partition_dir`] spelled (`None`: not one).
pub(crate) fn partition_of_dir(dir: &str) -> Option<String> {
    let mut out = Vec::with_capacity(dir.len());
    let mut bytes = dir.bytes();
    while let Some(b) = bytes.next() {
        if b == b'=' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// A state file name must stay inside its checkpoint directory and not shadow the
/// manifest.
fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        Err("not a file name")
    } else if name.contains(['/', '\\', '\0']) {
        Err("must be a plain file name (no path separators)")
    } else if name == MANIFEST {
        Err("manifest.json is reserved")
    } else {
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::blobs::Local;
    use super::*;
    use crate::Error;

    /// A [`NewCheckpoint`] that owns its files.
    struct Owned {
        epoch: u64,
        pipeline: String,
        partitions: Vec<PartitionOffset>,
        files: StateFiles,
        extra: serde_json::Value,
    }

    impl PartitionLog {
        fn commit_plain(&self, lease: &mut Lease, c: Owned) -> Result<Manifest> {
            self.commit(lease, c.borrowed(), b"")
        }
    }

    impl Owned {
        fn borrowed(&self) -> NewCheckpoint<'_> {
            NewCheckpoint {
                epoch: self.epoch,
                pipeline: self.pipeline.clone(),
                partitions: self.partitions.clone(),
                files: self
                    .files
                    .iter()
                    .map(|(n, d)| (n.clone(), d.as_slice()))
                    .collect(),
                extra: self.extra.clone(),
            }
        }
    }

    fn checkpoint(epoch: u64) -> Owned {
        Owned {
            epoch,
            pipeline: "orders".into(),
            partitions: vec![PartitionOffset {
                name: "orders/0".into(),
                next_offset: epoch * 10,
            }],
            files: vec![
                (
                    "partition.state".into(),
                    format!("state {epoch}").into_bytes(),
                ),
                ("extra.state".into(), vec![epoch as u8; 64]),
            ],
            extra: serde_json::json!({ "watermark": epoch }),
        }
    }

    fn log() -> (tempfile::TempDir, PartitionLog) {
        let tmp = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn Blobs> = Arc::new(Local::new(&tmp.path().join("checkpoints")));
        (tmp, PartitionLog::new(blobs, "orders/0", 3))
    }

    fn file_of(
        tmp: &tempfile::TempDir,
        generation: u64,
        epoch: u64,
        name: &str,
    ) -> std::path::PathBuf {
        tmp.path()
            .join("checkpoints/orders=2F0")
            .join(entry_name(generation, epoch))
            .join(name)
    }

    fn loaded_epoch(loaded: &Loaded) -> Option<u64> {
        loaded.checkpoint.as_ref().map(|(m, _)| m.epoch)
    }

    #[test]
    fn round_trip() {
        let (_tmp, log) = log();
        let mut lease = log.acquire("a").unwrap();
        assert_eq!(lease.generation(), 1);
        assert_eq!(log.load(&lease).unwrap(), Loaded::default());
        let written = log.commit_plain(&mut lease, checkpoint(7)).unwrap();
        assert_eq!(written.format_version, MANIFEST_VERSION);
        assert_eq!(written.generation, 1);
        assert_eq!(written.files[0].len, 7);
        assert_eq!(written.files[0].crc32, crc32fast::hash(b"state 7"));

        let lease = log.acquire("b").unwrap();
        assert_eq!(lease.generation(), 2);
        assert_eq!(lease.epoch_floor(), 7);
        let loaded = log.load(&lease).unwrap();
        assert!(loaded.skipped.is_empty());
        let (manifest, files) = loaded.checkpoint.unwrap();
        assert_eq!(manifest, written);
        assert_eq!(manifest.partitions[0].next_offset, 70);
        assert_eq!(manifest.extra, serde_json::json!({ "watermark": 7 }));
        assert_eq!(files, checkpoint(7).files);
    }

    #[test]
    fn keeps_the_newest_three() {
        let (tmp, log) = log();
        let mut lease = log.acquire("a").unwrap();
        for epoch in 1..=5 {
            log.commit_plain(&mut lease, checkpoint(epoch)).unwrap();
        }
        let head = log.head().unwrap().unwrap();
        let epochs: Vec<u64> = head.checkpoints.iter().map(|c| c.epoch).collect();
        assert_eq!(epochs, [3, 4, 5]);
        assert!(
            !file_of(&tmp, 1, 2, MANIFEST).exists(),
            "pruned checkpoint left"
        );
        assert!(file_of(&tmp, 1, 3, MANIFEST).exists());
        assert_eq!(loaded_epoch(&log.load(&lease).unwrap()), Some(5));
    }

    #[test]
    fn a_fenced_writer_cannot_commit_and_leaves_nothing_named() {
        let (tmp, log) = log();
        let mut zombie = log.acquire("zombie").unwrap();
        log.commit_plain(&mut zombie, checkpoint(1)).unwrap();
        // The group gives the partition to another instance while the zombie sleeps.
        let mut owner = log.acquire("owner").unwrap();
        log.commit_plain(&mut owner, checkpoint(2)).unwrap();

        let err = log.commit_plain(&mut zombie, checkpoint(3)).unwrap_err();
        match &err {
            Error::Checkpoint(
                e @ CheckpointError::Fenced {
                    held,
                    generation,
                    owner,
                    ..
                },
            ) => {
                assert_eq!((*held, *generation, owner.as_str()), (1, 2, "owner"));
                assert_eq!(e.code(), "checkpoint.fenced");
            }
            other => panic!("{other}"),
        }
        // The zombie's objects are gone and the owner's checkpoints are untouched.
        assert!(!file_of(&tmp, 1, 3, MANIFEST).exists());
        let head = log.head().unwrap().unwrap();
        assert_eq!((head.generation, head.owner.as_str()), (2, "owner"));
        let names: Vec<(u64, u64)> = head
            .checkpoints
            .iter()
            .map(|c| (c.generation, c.epoch))
            .collect();
        assert_eq!(names, [(1, 1), (2, 2)]);
        log.commit_plain(&mut owner, checkpoint(4)).unwrap();
        assert_eq!(loaded_epoch(&log.load(&owner).unwrap()), Some(4));
    }

    /// A store whose next head update lands but answers with an error, as when the
    /// connection drops before the answer arrives.
    #[derive(Debug)]
    struct LostAnswer {
        inner: Local,
        lose_next_update: std::sync::atomic::AtomicBool,
    }

    impl Blobs for LostAnswer {
        fn describe(&self, key: &str) -> String {
            self.inner.describe(key)
        }
        fn get(&self, key: &str) -> Result<Option<super::super::blobs::Blob>, BlobError> {
            self.inner.get(key)
        }
        fn put(&self, key: &str, data: &[u8]) -> Result<(), BlobError> {
            self.inner.put(key, data)
        }
        fn create(&self, key: &str, data: &[u8]) -> Result<Version, BlobError> {
            self.inner.create(key, data)
        }
        fn update(&self, key: &str, data: &[u8], v: &Version) -> Result<Version, BlobError> {
            let written = self.inner.update(key, data, v)?;
            if self
                .lose_next_update
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(BlobError::Unavailable {
                    op: "updating",
                    key: key.into(),
                    message: "connection reset".into(),
                });
            }
            Ok(written)
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<(), BlobError> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn a_head_write_whose_answer_was_lost_is_not_taken_for_fencing() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Arc::new(LostAnswer {
            inner: Local::new(tmp.path()),
            lose_next_update: false.into(),
        });
        let log = PartitionLog::new(blobs.clone(), "orders/0", 3);
        let mut lease = log.acquire("a").unwrap();
        log.commit_plain(&mut lease, checkpoint(1)).unwrap();

        // Epoch 2's head lands, its answer is lost; the writer retries with epoch 3.
        blobs
            .lose_next_update
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = log.commit_plain(&mut lease, checkpoint(2)).unwrap_err();
        assert!(matches!(&err, Error::Checkpoint(CheckpointError::Store(e)) if e.is_transient()));
        log.commit_plain(&mut lease, checkpoint(3)).unwrap();
        // Or retries the same epoch.
        blobs
            .lose_next_update
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(log.commit_plain(&mut lease, checkpoint(4)).is_err());
        log.commit_plain(&mut lease, checkpoint(4)).unwrap();
        log.commit_plain(&mut lease, checkpoint(5)).unwrap();

        let epochs: Vec<u64> = log
            .head()
            .unwrap()
            .unwrap()
            .checkpoints
            .iter()
            .map(|c| c.epoch)
            .collect();
        assert_eq!(epochs, [3, 4, 5]);
        assert_eq!(loaded_epoch(&log.load(&lease).unwrap()), Some(5));
    }

    #[test]
    fn unnamed_checkpoints_of_earlier_generations_are_swept() {
        let (tmp, log) = log();
        let mut first = log.acquire("a").unwrap();
        log.commit_plain(&mut first, checkpoint(1)).unwrap();
        // What a crash between the files and the head write leaves.
        std::fs::create_dir_all(file_of(&tmp, 1, 2, "")).unwrap();
        std::fs::write(file_of(&tmp, 1, 2, "partition.state"), b"half").unwrap();
        // And a later generation's write in progress, which must survive.
        std::fs::create_dir_all(file_of(&tmp, 9, 5, "")).unwrap();
        std::fs::write(file_of(&tmp, 9, 5, "partition.state"), b"theirs").unwrap();

        let lease = log.acquire("b").unwrap();
        assert!(!file_of(&tmp, 1, 2, "partition.state").exists());
        assert!(file_of(&tmp, 1, 1, MANIFEST).exists());
        assert!(file_of(&tmp, 9, 5, "partition.state").exists());
        assert_eq!(loaded_epoch(&log.load(&lease).unwrap()), Some(1));
    }

    #[test]
    fn dead_letters_are_named_with_their_checkpoint_only() {
        let (tmp, log) = log();
        let mut zombie = log.acquire("zombie").unwrap();
        log.commit(&mut zombie, checkpoint(1).borrowed(), b"{\"offset\":3}\n")
            .unwrap();
        log.commit(&mut zombie, checkpoint(2).borrowed(), b"")
            .unwrap();
        let mut owner = log.acquire("owner").unwrap();
        // The zombie's letters of epoch 3 are not named, and are gone.
        assert!(
            log.commit(&mut zombie, checkpoint(3).borrowed(), b"{\"offset\":8}\n")
                .is_err()
        );
        let segments = tmp.path().join("checkpoints/orders=2F0/dead-letters");
        assert_eq!(std::fs::read_dir(&segments).unwrap().count(), 1);
        // The new owner replays from epoch 2 and finds the same bad record.
        log.commit(&mut owner, checkpoint(4).borrowed(), b"{\"offset\":8}\n")
            .unwrap();
        assert_eq!(
            log.dead_letters().unwrap(),
            b"{\"offset\":3}\n{\"offset\":8}\n".to_vec()
        );
        // An unnamed segment of an earlier generation (a crash before the head write)
        // is swept by the next owner.
        std::fs::write(segments.join(format!("{}.ndjson", entry_name(2, 9))), b"x").unwrap();
        log.acquire("third").unwrap();
        assert_eq!(std::fs::read_dir(&segments).unwrap().count(), 2);
        assert_eq!(log.dead_letters().unwrap().len(), 26);
    }

    #[test]
    fn truncated_state_file_falls_back() {
        let (tmp, log) = log();
        let mut lease = log.acquire("a").unwrap();
        log.commit_plain(&mut lease, checkpoint(1)).unwrap();
        log.commit_plain(&mut lease, checkpoint(2)).unwrap();
        std::fs::write(file_of(&tmp, 1, 2, "extra.state"), vec![2u8; 10]).unwrap();

        let loaded = log.load(&lease).unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        assert_eq!(
            loaded.skipped,
            vec![
                "checkpoint epoch 2: state file extra.state: length mismatch \
                 (expected 64 bytes, found 10); using an older checkpoint"
                    .to_string()
            ]
        );
    }

    #[test]
    fn flipped_byte_is_caught_by_the_checksum() {
        let (tmp, log) = log();
        let mut lease = log.acquire("a").unwrap();
        log.commit_plain(&mut lease, checkpoint(1)).unwrap();
        log.commit_plain(&mut lease, checkpoint(2)).unwrap();
        let path = file_of(&tmp, 1, 2, "partition.state");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();

        let loaded = log.load(&lease).unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        let msg = &loaded.skipped[0];
        assert!(
            msg.starts_with("checkpoint epoch 2: state file partition.state: checksum mismatch"),
            "{msg}"
        );
        let expected = format!("expected {:08x}", crc32fast::hash(b"state 2"));
        assert!(msg.contains(&expected), "{msg}");
    }

    #[test]
    fn missing_or_corrupt_manifests_are_skipped() {
        let (tmp, log) = log();
        let mut lease = log.acquire("a").unwrap();
        for epoch in 1..=3 {
            log.commit_plain(&mut lease, checkpoint(epoch)).unwrap();
        }
        std::fs::write(file_of(&tmp, 1, 3, MANIFEST), b"{ not json").unwrap();
        std::fs::remove_file(file_of(&tmp, 1, 2, MANIFEST)).unwrap();

        let loaded = log.load(&lease).unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        assert_eq!(loaded.skipped.len(), 2);
        assert!(
            loaded.skipped[0].starts_with("checkpoint epoch 3: manifest.json is not a valid"),
            "{:?}",
            loaded.skipped
        );
        assert_eq!(
            loaded.skipped[1],
            "checkpoint epoch 2: manifest.json is missing; using an older checkpoint"
        );

        std::fs::remove_file(file_of(&tmp, 1, 1, "partition.state")).unwrap();
        let loaded = log.load(&lease).unwrap();
        assert!(loaded.checkpoint.is_none());
        assert_eq!(
            loaded.skipped[2],
            "checkpoint epoch 1: state file partition.state: missing; no older checkpoint is usable"
        );
    }

    #[test]
    fn existing_epoch_and_bad_file_names_are_errors() {
        let (_tmp, log) = log();
        let mut lease = log.acquire("a").unwrap();
        log.commit_plain(&mut lease, checkpoint(4)).unwrap();
        let err = log.commit_plain(&mut lease, checkpoint(4)).unwrap_err();
        assert!(err.to_string().contains("epoch 4 already exists"), "{err}");
        for bad in ["", ".", "..", "../escape", "a/b", "a\\b", "manifest.json"] {
            let mut c = checkpoint(5);
            c.files.push((bad.to_string(), b"x".to_vec()));
            let err = log.commit_plain(&mut lease, c).unwrap_err();
            assert!(matches!(err, Error::Checkpoint(_)), "{bad:?}: {err}");
        }
        let mut twice = checkpoint(5);
        twice.files.push(twice.files[0].clone());
        assert!(matches!(
            log.commit_plain(&mut lease, twice),
            Err(Error::Checkpoint(_))
        ));
        assert_eq!(lease.checkpoints(), 1);
    }

    #[test]
    fn partition_dirs_are_plain_names() {
        assert_eq!(partition_dir("bank-events/3"), "bank-events=2F3");
        assert_eq!(partition_dir("file:a b.ndjson"), "file=3Aa=20b.ndjson");
        assert_eq!(partition_dir(".."), "=2E.");
        assert_eq!(partition_dir("a=b"), "a=3Db");
        assert_eq!(parse_entry_name(&entry_name(3, 12)), Some((3, 12)));
        assert_eq!(parse_entry_name("g1-e2"), None);
    }
}
