//! Checkpoints: the engine's state and the offsets of record, made durable together.

pub(crate) mod recovery;
pub(crate) mod store;

use projector_operators::codec::CodecError;
use std::path::PathBuf;

/// Why a checkpoint could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A state file name that is not a plain file name.
    #[error("epoch {epoch}: state file {name:?}: {why}")]
    BadFileName {
        /// The checkpoint's epoch.
        epoch: u64,
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The same state file given twice.
    #[error("epoch {epoch}: state file {name:?} given twice")]
    DuplicateFile {
        /// The checkpoint's epoch.
        epoch: u64,
        /// The name given twice.
        name: String,
    },
    /// A checkpoint of this epoch exists already.
    #[error("epoch {epoch} already exists in {}", dir.display())]
    EpochExists {
        /// The epoch.
        epoch: u64,
        /// The store's directory.
        dir: PathBuf,
    },
    /// The manifest could not be encoded.
    #[error("epoch {epoch}: encoding manifest: {source}")]
    EncodeManifest {
        /// The checkpoint's epoch.
        epoch: u64,
        /// The cause.
        source: serde_json::Error,
    },
    /// The directory holds checkpoints in the layout before per-partition checkpoints.
    #[error(
        "{} holds checkpoints in an older layout (one directory for all partitions); \
         this version keeps one directory per partition. Remove {} to start over",
        root.display(),
        root.display()
    )]
    OldLayout {
        /// The checkpoints directory.
        root: PathBuf,
    },
    /// A partition's checkpoint records the offsets of more or fewer than one partition.
    #[error("{at}: expected the offset of one partition, found {found}")]
    PartitionCount {
        /// Which checkpoint.
        at: String,
        /// How many it records.
        found: usize,
    },
    /// A partition's directory holds another partition's checkpoint.
    #[error("{at} is for partition '{found}', not '{expected}'")]
    WrongPartition {
        /// Which checkpoint.
        at: String,
        /// The partition it records.
        found: String,
        /// The partition of the directory.
        expected: String,
    },
    /// A state file the engine does not write.
    #[error("{at}: unexpected state file {file}")]
    UnexpectedFile {
        /// Which checkpoint.
        at: String,
        /// The file.
        file: String,
    },
    /// A state file whose pieces are cut short.
    #[error("{at}: {file}: {source}")]
    Pieces {
        /// Which checkpoint.
        at: String,
        /// The file.
        file: String,
        /// What is wrong.
        source: recovery::PieceError,
    },
    /// A piece of state that does not decode.
    #[error("{at}: {file}: {source}")]
    Decode {
        /// Which checkpoint.
        at: String,
        /// The file.
        file: String,
        /// What is wrong.
        source: CodecError,
    },
}

impl CheckpointError {
    /// The stable code of this kind of failure, e.g. `checkpoint.epoch_exists`.
    pub fn code(&self) -> &'static str {
        match self {
            CheckpointError::BadFileName { .. } => "checkpoint.bad_file_name",
            CheckpointError::DuplicateFile { .. } => "checkpoint.duplicate_file",
            CheckpointError::EpochExists { .. } => "checkpoint.epoch_exists",
            CheckpointError::EncodeManifest { .. } => "checkpoint.encode_manifest",
            CheckpointError::OldLayout { .. } => "checkpoint.old_layout",
            CheckpointError::PartitionCount { .. } => "checkpoint.partition_count",
            CheckpointError::WrongPartition { .. } => "checkpoint.wrong_partition",
            CheckpointError::UnexpectedFile { .. } => "checkpoint.unexpected_file",
            CheckpointError::Pieces { .. } => "checkpoint.damaged",
            CheckpointError::Decode { .. } => "checkpoint.damaged",
        }
    }
}
