//! Checkpoints: the engine's state and the offsets of record, made durable together.

pub(crate) mod blobs;
pub(crate) mod recovery;
pub(crate) mod store;
pub(crate) mod writer;

pub use blobs::BlobError;

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
    #[error("epoch {epoch} already exists in {at}")]
    EpochExists {
        /// The epoch.
        epoch: u64,
        /// The partition's head.
        at: String,
    },
    /// The checkpoint store failed (away, or refused the request).
    #[error("checkpoint store: {0}")]
    Store(BlobError),
    /// Another instance took the partition over: this one may no longer write it.
    #[error(
        "partition {partition}: taken over by {owner} (generation {generation}; this \
         instance held generation {held}): its checkpoints are no longer written here"
    )]
    Fenced {
        /// The partition.
        partition: String,
        /// The generation this instance held.
        held: u64,
        /// The generation in the store now.
        generation: u64,
        /// Who holds it now.
        owner: String,
    },
    /// A partition's `head.json` that cannot be read.
    #[error("{at}: {why}")]
    BadHead {
        /// Where the head is.
        at: String,
        /// What is wrong with it.
        why: String,
    },
    /// Every checkpoint of a partition is damaged: replaying from the start of the
    /// input could silently lose what the source no longer holds.
    #[error(
        "partition {partition}: no checkpoint is usable ({reasons}); refusing to replay it \
         from the start, which loses whatever the source no longer retains. Run with \
         --replay-if-damaged to replay it anyway"
    )]
    NothingUsable {
        /// The partition.
        partition: String,
        /// Why each checkpoint was skipped.
        reasons: String,
    },
    /// Another process runs on this state directory.
    #[error(
        "state directory {} is in use by another projector process ({holder}); \
         give each instance its own --state-dir",
        dir.display()
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// The checkpoint store's URL or options are not usable.
    #[error("checkpoint store {url}: {why}")]
    BadStore {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
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
    /// The pipeline's logic of some views changed since the checkpoint was written:
    /// their state was built by other logic, and resuming would mix the two.
    #[error(
        "{at} was written by other logic for view(s) {}:\n{}\nResuming would give rows \
         that neither the old logic nor the new one computes. Either run the pipeline \
         as it was, or rebuild the views from the start of the input with an empty \
         state (another --state-dir, or remove {store}), or, when the change is safe \
         for the state built so far (it only changes what failed, before retrying \
         parked keys), resume with --accept-logic-change VIEW",
        changes.iter().map(|c| c.view.as_str()).collect::<Vec<_>>().join(", "),
        changes.iter().flat_map(|c| c.lines.iter().map(move |l| format!("  {}: {l}", c.view))).collect::<Vec<_>>().join("\n")
    )]
    LogicChanged {
        /// Which checkpoint.
        at: String,
        /// The checkpoint store.
        store: String,
        /// What changed, per view.
        changes: Vec<crate::config::LogicChange>,
    },
    /// A unit without checkpoints while the store holds checkpoints of units sharing a
    /// partition with it: the topics read together changed.
    #[error(
        "{unit} has no checkpoint, but {store} holds checkpoints of {}, which share its \
         partitions: the topics the pipeline reads together changed (a topic added or \
         removed, or checkpoints from before several topics were read as one unit), and \
         their state does not carry over. Run the pipeline with its former topics, or \
         rebuild the views from the start of the input with an empty checkpoint store",
        found.join(", ")
    )]
    OtherUnits {
        /// The unit being restored.
        unit: String,
        /// The units found.
        found: Vec<String>,
        /// The checkpoint store.
        store: String,
    },
    /// A checkpoint records no offset, or more than its unit has partitions.
    #[error("{at}: expected the offsets of 1 to {expected} partition(s), found {found}")]
    PartitionCount {
        /// Which checkpoint.
        at: String,
        /// How many it records.
        found: usize,
        /// How many partitions the unit has.
        expected: usize,
    },
    /// A unit's directory holds a checkpoint of a partition not in the unit.
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
            CheckpointError::Store(BlobError::Denied { .. }) => "checkpoint.store_denied",
            CheckpointError::Store(BlobError::Unsupported { .. }) => "checkpoint.store_unsupported",
            CheckpointError::Store(_) => "checkpoint.store_unavailable",
            CheckpointError::Fenced { .. } => "checkpoint.fenced",
            CheckpointError::BadHead { .. } => "checkpoint.bad_head",
            CheckpointError::NothingUsable { .. } => "checkpoint.nothing_usable",
            CheckpointError::Locked { .. } => "checkpoint.state_dir_locked",
            CheckpointError::BadStore { .. } => "checkpoint.bad_store",
            CheckpointError::EncodeManifest { .. } => "checkpoint.encode_manifest",
            CheckpointError::OldLayout { .. } => "checkpoint.old_layout",
            CheckpointError::PartitionCount { .. } => "checkpoint.partition_count",
            CheckpointError::LogicChanged { .. } => "checkpoint.logic_changed",
            CheckpointError::OtherUnits { .. } => "checkpoint.topics_changed",
            CheckpointError::WrongPartition { .. } => "checkpoint.wrong_partition",
            CheckpointError::UnexpectedFile { .. } => "checkpoint.unexpected_file",
            CheckpointError::Pieces { .. } => "checkpoint.damaged",
            CheckpointError::Decode { .. } => "checkpoint.damaged",
        }
    }
}
