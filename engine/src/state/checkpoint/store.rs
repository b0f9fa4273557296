//! The checkpoint store: one directory per checkpoint, made visible by a rename.
//!
//! ```text
//! <dir>/
//!   epoch-00000000000000000012/    complete: renamed into place after everything was synced
//!     partition-0.state ...
//!     manifest.json                 offsets of record, file lengths and crc32s
//!   .tmp-epoch-00000000000000000013/ being written, or left by a crash: never read
//! ```
//!
//! A checkpoint exists once its directory has its final name, and the rename happens
//! only after every file, the manifest and the directory itself were synced, so a crash
//! leaves either the whole checkpoint or a `.tmp-*` directory. Disks still lie and
//! people still edit files, so loading verifies every length and checksum and falls
//! back to an older checkpoint rather than restoring damaged state.

use super::CheckpointError;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The manifest format this code writes and reads.
pub(crate) const MANIFEST_VERSION: u32 = 1;

const MANIFEST: &str = "manifest.json";
const EPOCH_PREFIX: &str = "epoch-";
const TMP_PREFIX: &str = ".tmp-";
const DEFAULT_KEEP: usize = 3;

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
    /// Plain file name inside the checkpoint directory.
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

/// What a checkpoint holds; `manifest.json`, written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Format of this manifest ([`MANIFEST_VERSION`] when written by this code).
    pub format_version: u32,
    /// The epoch the checkpoint closes.
    pub epoch: u64,
    /// Name of the pipeline that wrote it.
    pub pipeline: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Offsets of record: where each partition resumes.
    pub partitions: Vec<PartitionOffset>,
    /// The state files, with their lengths and checksums.
    pub files: Vec<FileEntry>,
    /// Length of the dead-letter file at the cut, if dead letters are in use.
    #[serde(default)]
    pub dead_letters_len: Option<u64>,
    /// Anything else the caller wants restored with the checkpoint.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// A checkpoint to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewCheckpoint {
    /// The epoch it closes; must not exist yet in the store.
    pub epoch: u64,
    /// Name of the pipeline.
    pub pipeline: String,
    /// Where each partition resumes.
    pub partitions: Vec<PartitionOffset>,
    /// State files: plain file name and contents.
    pub files: StateFiles,
    /// Length of the dead-letter file at the cut, if dead letters are in use.
    pub dead_letters_len: Option<u64>,
    /// Anything else to restore with the checkpoint.
    pub extra: serde_json::Value,
}

/// What [`CheckpointStore::load_latest`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Loaded {
    /// The newest checkpoint that verified, with its files (name, contents) in manifest
    /// order; `None` when there is none.
    pub checkpoint: Option<(Manifest, StateFiles)>,
    /// One message per newer checkpoint that was damaged and skipped, newest first.
    pub skipped: Vec<String>,
}

/// Checkpoints in a directory. One writer at a time: the engine's coordinator.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// The store in `dir`, created if missing; keeps the newest 3 checkpoints.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            keep: DEFAULT_KEEP,
        })
    }

    /// Keeps the newest `n` checkpoints (at least 1: the one just written must survive).
    pub(crate) fn with_keep(self, n: usize) -> Self {
        CheckpointStore {
            keep: n.max(1),
            ..self
        }
    }

    /// The store's directory.
    #[cfg(test)]
    fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a checkpoint durably, then prunes old checkpoints and stale temporary
    /// directories. Returns the manifest written.
    pub(crate) fn write(&self, checkpoint: NewCheckpoint) -> Result<Manifest> {
        let NewCheckpoint {
            epoch,
            pipeline,
            partitions,
            files,
            dead_letters_len,
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
        let dir_name = epoch_dir_name(epoch);
        let final_dir = self.dir.join(&dir_name);
        if final_dir.exists() {
            return Err(CheckpointError::EpochExists {
                epoch,
                dir: self.dir.clone(),
            }
            .into());
        }

        // Only a crashed write of this same epoch can have left this name; its
        // contents are unknown, so start over.
        let tmp = self.dir.join(format!("{TMP_PREFIX}{dir_name}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| io(format!("removing stale {}", tmp.display()), e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| io(format!("creating {}", tmp.display()), e))?;

        let mut entries = Vec::with_capacity(files.len());
        for (name, bytes) in &files {
            write_synced(&tmp.join(name), bytes)?;
            entries.push(FileEntry {
                name: name.clone(),
                len: bytes.len() as u64,
                crc32: crc32fast::hash(bytes),
            });
        }
        let manifest = Manifest {
            format_version: MANIFEST_VERSION,
            epoch,
            pipeline,
            created_ms: now_ms(),
            partitions,
            files: entries,
            dead_letters_len,
            extra,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|source| CheckpointError::EncodeManifest { epoch, source })?;
        write_synced(&tmp.join(MANIFEST), &json)?;
        // The directory entries must be durable before the rename publishes them.
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, &final_dir).map_err(|e| {
            io(
                format!("renaming {} to {}", tmp.display(), final_dir.display()),
                e,
            )
        })?;
        sync_dir(&self.dir)?;

        // The checkpoint is durable: failing to prune must not make the caller think
        // it was lost, so pruning only warns.
        if let Err(e) = self.prune() {
            tracing::warn!(dir = %self.dir.display(), "pruning old checkpoints: {e}");
        }
        Ok(manifest)
    }

    /// The newest checkpoint whose manifest and files all verify. Damaged newer ones
    /// are described in [`Loaded::skipped`]; `.tmp-*` directories are never read.
    pub(crate) fn load_latest(&self) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut reasons = Vec::new();
        for epoch in self.list()?.into_iter().rev() {
            match self.verify(epoch) {
                Ok(found) => {
                    loaded.checkpoint = Some(found);
                    break;
                }
                Err(why) => reasons.push(format!("checkpoint epoch {epoch}: {why}")),
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

    /// Epochs of the complete (renamed into place) checkpoints, ascending. Complete
    /// is not verified: a damaged one is listed, so a caller picking its next epoch
    /// after a fallback must start above the last one listed here.
    pub(crate) fn list(&self) -> Result<Vec<u64>> {
        let mut epochs: Vec<u64> = self
            .entries()?
            .into_iter()
            .filter_map(|name| parse_epoch_dir(&name))
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Reads and verifies one checkpoint; the error is the reason to skip it.
    fn verify(&self, epoch: u64) -> Result<(Manifest, StateFiles), String> {
        let dir = self.dir.join(epoch_dir_name(epoch));
        let bytes = std::fs::read(dir.join(MANIFEST)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "manifest.json is missing".to_string(),
            _ => format!("reading manifest.json: {e}"),
        })?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest.json is not a valid manifest: {e}"))?;
        if manifest.format_version != MANIFEST_VERSION {
            return Err(format!(
                "manifest format version {} is not supported (this build reads {MANIFEST_VERSION})",
                manifest.format_version
            ));
        }
        if manifest.epoch != epoch {
            return Err(format!(
                "manifest.json is for epoch {}, not {epoch}",
                manifest.epoch
            ));
        }
        let mut files = Vec::with_capacity(manifest.files.len());
        for entry in &manifest.files {
            let name = &entry.name;
            // A manifest is input like any other: never read outside the checkpoint.
            check_name(name).map_err(|why| format!("state file {name:?}: {why}"))?;
            let data = std::fs::read(dir.join(name)).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("state file {name}: missing"),
                _ => format!("state file {name}: {e}"),
            })?;
            if data.len() as u64 != entry.len {
                return Err(format!(
                    "state file {name}: length mismatch (expected {} bytes, found {})",
                    entry.len,
                    data.len()
                ));
            }
            let crc = crc32fast::hash(&data);
            if crc != entry.crc32 {
                return Err(format!(
                    "state file {name}: checksum mismatch (expected {:08x}, found {crc:08x})",
                    entry.crc32
                ));
            }
            files.push((name.clone(), data));
        }
        Ok((manifest, files))
    }

    /// Deletes all but the newest `keep` checkpoints, and every `.tmp-*` directory.
    fn prune(&self) -> Result<()> {
        let names = self.entries()?;
        let epochs = self.list()?;
        let old = epochs.len().saturating_sub(self.keep);
        let doomed = epochs[..old]
            .iter()
            .map(|&e| epoch_dir_name(e))
            .chain(names.into_iter().filter(|n| n.starts_with(TMP_PREFIX)));
        for name in doomed {
            let path = self.dir.join(&name);
            std::fs::remove_dir_all(&path)
                .map_err(|e| io(format!("removing {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Names of the directories in the store.
    fn entries(&self) -> Result<Vec<String>> {
        let context = || format!("listing {}", self.dir.display());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(context(), e))? {
            let entry = entry.map_err(|e| io(context(), e))?;
            let is_dir = entry.file_type().map_err(|e| io(context(), e))?.is_dir();
            // Names that are not UTF-8 are not ours.
            if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
                names.push(name);
            }
        }
        Ok(names)
    }
}

fn epoch_dir_name(epoch: u64) -> String {
    format!("{EPOCH_PREFIX}{epoch:020}")
}

fn parse_epoch_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(EPOCH_PREFIX)?;
    // Exactly our own spelling, so that one epoch has one directory.
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A state file name must stay inside its checkpoint directory and not shadow the
/// manifest.
fn check_name(name: &str) -> Result<(), &'static str> {
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

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let context = || format!("writing {}", path.display());
    let mut f = File::create(path).map_err(|e| io(context(), e))?;
    f.write_all(bytes).map_err(|e| io(context(), e))?;
    f.sync_all().map_err(|e| io(context(), e))
}

/// Makes a directory's entries (creations, renames) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    // Only Unix can open a directory to fsync it; elsewhere the rename is the best we have.
    if cfg!(unix) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(format!("syncing {}", dir.display()), e))?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(epoch: u64) -> NewCheckpoint {
        NewCheckpoint {
            epoch,
            pipeline: "orders".into(),
            partitions: vec![PartitionOffset {
                name: "p0".into(),
                next_offset: epoch * 10,
            }],
            files: vec![
                (
                    "partition-0.state".into(),
                    format!("state {epoch}").into_bytes(),
                ),
                ("partition-1.state".into(), vec![epoch as u8; 64]),
            ],
            dead_letters_len: Some(epoch),
            extra: serde_json::json!({ "watermark": epoch }),
        }
    }

    fn store() -> (tempfile::TempDir, CheckpointStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&tmp.path().join("checkpoints")).unwrap();
        (tmp, store)
    }

    fn file_of(store: &CheckpointStore, epoch: u64, name: &str) -> PathBuf {
        store.dir().join(epoch_dir_name(epoch)).join(name)
    }

    fn loaded_epoch(loaded: &Loaded) -> Option<u64> {
        loaded.checkpoint.as_ref().map(|(m, _)| m.epoch)
    }

    #[test]
    fn round_trip() {
        let (_tmp, store) = store();
        assert_eq!(store.load_latest().unwrap(), Loaded::default());
        let written = store.write(checkpoint(7)).unwrap();
        assert_eq!(written.format_version, MANIFEST_VERSION);
        assert_eq!(written.files[0].len, 7);
        assert_eq!(written.files[0].crc32, crc32fast::hash(b"state 7"));

        let loaded = store.load_latest().unwrap();
        assert!(loaded.skipped.is_empty());
        let (manifest, files) = loaded.checkpoint.unwrap();
        assert_eq!(manifest, written);
        assert_eq!(manifest.partitions[0].next_offset, 70);
        assert_eq!(manifest.dead_letters_len, Some(7));
        assert_eq!(manifest.extra, serde_json::json!({ "watermark": 7 }));
        assert_eq!(files, checkpoint(7).files);
        assert_eq!(store.list().unwrap(), vec![7]);
    }

    #[test]
    fn keeps_the_newest_three() {
        let (_tmp, store) = store();
        for epoch in 1..=5 {
            store.write(checkpoint(epoch)).unwrap();
        }
        assert_eq!(store.list().unwrap(), vec![3, 4, 5]);
        assert_eq!(loaded_epoch(&store.load_latest().unwrap()), Some(5));

        let store = store.with_keep(1);
        store.write(checkpoint(6)).unwrap();
        assert_eq!(store.list().unwrap(), vec![6]);
    }

    #[test]
    fn stale_tmp_is_ignored_then_removed() {
        let (_tmp, store) = store();
        store.write(checkpoint(1)).unwrap();
        // What a crash in the middle of writing epoch 2 leaves.
        let stale = store.dir().join(format!(".tmp-{}", epoch_dir_name(2)));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("partition-0.state"), b"half").unwrap();

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        assert!(loaded.skipped.is_empty());
        assert_eq!(store.list().unwrap(), vec![1]);

        let other = store.dir().join(".tmp-something-else");
        std::fs::create_dir(&other).unwrap();
        store.write(checkpoint(2)).unwrap();
        assert!(!stale.exists());
        assert!(!other.exists());
        assert_eq!(loaded_epoch(&store.load_latest().unwrap()), Some(2));
    }

    #[test]
    fn truncated_state_file_falls_back() {
        let (_tmp, store) = store();
        store.write(checkpoint(1)).unwrap();
        store.write(checkpoint(2)).unwrap();
        let path = file_of(&store, 2, "partition-1.state");
        std::fs::write(&path, vec![2u8; 10]).unwrap();

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        assert_eq!(
            loaded.skipped,
            vec![
                "checkpoint epoch 2: state file partition-1.state: length mismatch \
                 (expected 64 bytes, found 10); using an older checkpoint"
                    .to_string()
            ]
        );
    }

    #[test]
    fn flipped_byte_is_caught_by_the_checksum() {
        let (_tmp, store) = store();
        store.write(checkpoint(1)).unwrap();
        store.write(checkpoint(2)).unwrap();
        let path = file_of(&store, 2, "partition-0.state");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        assert_eq!(loaded.skipped.len(), 1);
        let msg = &loaded.skipped[0];
        assert!(
            msg.starts_with("checkpoint epoch 2: state file partition-0.state: checksum mismatch"),
            "{msg}"
        );
        let expected = format!("expected {:08x}", crc32fast::hash(b"state 2"));
        assert!(msg.contains(&expected), "{msg}");
    }

    #[test]
    fn missing_manifest_skips_the_checkpoint() {
        let (_tmp, store) = store();
        store.write(checkpoint(1)).unwrap();
        store.write(checkpoint(2)).unwrap();
        std::fs::remove_file(file_of(&store, 2, MANIFEST)).unwrap();

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        assert_eq!(
            loaded.skipped,
            vec![
                "checkpoint epoch 2: manifest.json is missing; using an older checkpoint"
                    .to_string()
            ]
        );
    }

    #[test]
    fn corrupt_manifest_skips_the_checkpoint() {
        let (_tmp, store) = store();
        store.write(checkpoint(1)).unwrap();
        store.write(checkpoint(2)).unwrap();
        store.write(checkpoint(3)).unwrap();
        std::fs::write(file_of(&store, 3, MANIFEST), b"{ not json").unwrap();
        std::fs::remove_file(file_of(&store, 2, "partition-0.state")).unwrap();

        let loaded = store.load_latest().unwrap();
        assert_eq!(loaded_epoch(&loaded), Some(1));
        assert_eq!(loaded.skipped.len(), 2);
        assert!(
            loaded.skipped[0].starts_with("checkpoint epoch 3: manifest.json is not a valid"),
            "{:?}",
            loaded.skipped
        );
        assert_eq!(
            loaded.skipped[1],
            "checkpoint epoch 2: state file partition-0.state: missing; using an older checkpoint"
        );
    }

    #[test]
    fn nothing_usable_is_none_with_reasons() {
        let (_tmp, store) = store();
        store.write(checkpoint(1)).unwrap();
        std::fs::remove_file(file_of(&store, 1, MANIFEST)).unwrap();
        let loaded = store.load_latest().unwrap();
        assert!(loaded.checkpoint.is_none());
        assert_eq!(
            loaded.skipped,
            vec![
                "checkpoint epoch 1: manifest.json is missing; no older checkpoint is usable"
                    .to_string()
            ]
        );
    }

    #[test]
    fn existing_epoch_is_an_error() {
        let (_tmp, store) = store();
        store.write(checkpoint(4)).unwrap();
        let err = store.write(checkpoint(4)).unwrap_err();
        assert!(
            matches!(&err, Error::Checkpoint(e) if e.to_string().contains("epoch 4 already exists")),
            "{err}"
        );
        assert_eq!(store.list().unwrap(), vec![4]);
    }

    #[test]
    fn bad_file_names_are_rejected() {
        let (_tmp, store) = store();
        for bad in ["", ".", "..", "../escape", "a/b", "a\\b", "manifest.json"] {
            let mut c = checkpoint(1);
            c.files.push((bad.to_string(), b"x".to_vec()));
            let err = store.write(c).unwrap_err();
            assert!(matches!(err, Error::Checkpoint(_)), "{bad:?}: {err}");
        }
        let mut twice = checkpoint(1);
        twice.files.push(twice.files[0].clone());
        assert!(matches!(store.write(twice), Err(Error::Checkpoint(_))));
        // Nothing was created by the refused writes.
        assert_eq!(store.list().unwrap(), Vec::<u64>::new());
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
    }
}
