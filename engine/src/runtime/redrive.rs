//! Dead-letter redrive (`projector dead-letters replay`, `run --replay-dead-letters`):
//! the dead letters of a pipeline go back through it, after a fix, each applied once.
//!
//! ```text
//!  start: every letter of the destination (file, checkpoint store or topic)
//!  a unit is restored ─▶ its partitions' letters before where it resumes (the ones
//!                        after it are read again from the source anyway), in order
//!      ─▶ ingest queue ─▶ decoded and routed by key like records, before any new
//!         record of the source ─▶ worker: unless the key's state lists the letter as
//!         replayed, applied; then listed (`PartitionState::redriven`), in the same
//!         state and checkpoint, so a replay killed midway resumes without a repeat
//! ```
//!
//! A letter that fails again is not written again: it stays where it is, for a later
//! replay after another fix, and the run names it.

use crate::config::PipelineConfig;
use crate::state::units::Units;
use crate::{Error, Result};
use projector_connectors::dead_letter::{StoredDeadLetter, parse_dead_letters};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// The letters not yet handed to the ingest thread, per source partition (index), in
/// the destination's order.
#[derive(Debug, Default)]
pub(crate) struct Redrive {
    waiting: Mutex<BTreeMap<u32, Vec<StoredDeadLetter>>>,
}

impl Redrive {
    /// Every letter of `config`'s dead-letter destination (with state in `state_dir`),
    /// by partition of `units`; letters of partitions the pipeline does not read are
    /// left out (their count is returned).
    pub(crate) fn load(
        config: &PipelineConfig,
        state_dir: &Path,
        units: &Units,
    ) -> Result<(Redrive, usize)> {
        let letters = read_letters(config, state_dir)?;
        let names = units.partition_names();
        let mut waiting: BTreeMap<u32, Vec<StoredDeadLetter>> = BTreeMap::new();
        let mut foreign = 0;
        for letter in letters {
            match names.iter().position(|n| *n == letter.partition) {
                Some(p) => waiting.entry(p as u32).or_default().push(letter),
                None => foreign += 1,
            }
        }
        let redrive = Redrive {
            waiting: Mutex::new(waiting),
        };
        Ok((redrive, foreign))
    }

    /// The letters of `partition` before `resume` (where it resumes from its
    /// checkpoint), taken out: each is handed over once per run.
    pub(crate) fn take(&self, partition: u32, resume: Option<u64>) -> Vec<StoredDeadLetter> {
        let mut waiting = self.waiting.lock().expect("redrive lock");
        let Some(resume) = resume else {
            // No checkpoint: the source reads the partition from its start, bad
            // records included, so none is replayed.
            waiting.remove(&partition);
            return Vec::new();
        };
        let mut letters = waiting.remove(&partition).unwrap_or_default();
        letters.retain(|l| l.offset < resume);
        // In offset order: within an epoch, the ingest thread's letters and the
        // workers' reach the destination in the order they were found.
        letters.sort_by_key(|l| l.offset);
        letters
    }
}

/// Every letter in the pipeline's dead-letter destination, as lines of the dead-letter
/// file: the file's and the store's as they are, a topic's formatted so.
pub fn letter_lines(config: &PipelineConfig, state_dir: &Path) -> Result<Vec<u8>> {
    if config.dead_letter.is_some() {
        let mut out = Vec::new();
        for letter in read_letters(config, state_dir)? {
            out.extend(letter.line().map_err(|source| Error::Io {
                context: "formatting a dead letter".into(),
                source,
            })?);
        }
        return Ok(out);
    }
    if config.checkpoint.store.is_some() {
        return crate::state::checkpoint::recovery::stored_dead_letters(
            &config.checkpoint,
            state_dir,
        );
    }
    let path = state_dir.join("dead-letters.ndjson");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Io {
            context: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// Every letter in the pipeline's dead-letter destination: its topic, else the
/// checkpoint store (with `checkpoint.store`), else `<state_dir>/dead-letters.ndjson`
/// (none when it does not exist).
pub fn read_letters(config: &PipelineConfig, state_dir: &Path) -> Result<Vec<StoredDeadLetter>> {
    if let Some(topic) = &config.dead_letter {
        #[cfg(feature = "kafka")]
        return projector_connectors::kafka::read_letters_in_topic(
            &topic.brokers,
            &topic.properties,
            &topic.topic,
        )
        .map_err(Error::Source);
        #[cfg(not(feature = "kafka"))]
        {
            let _ = topic;
            return Err(Error::Source(projector_connectors::Error::NoKafkaSupport));
        }
    }
    if config.checkpoint.store.is_some() {
        let bytes =
            crate::state::checkpoint::recovery::stored_dead_letters(&config.checkpoint, state_dir)?;
        return parse_dead_letters(&bytes[..], "dead letters in the checkpoint store")
            .map_err(Error::Source);
    }
    let path = state_dir.join("dead-letters.ndjson");
    if !path.exists() {
        return Ok(Vec::new());
    }
    projector_connectors::dead_letter::read_dead_letters(&path).map_err(Error::Source)
}
