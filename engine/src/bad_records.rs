//! What happens to a record that cannot be decoded or applied (`on_error`).
//!
//! Dead letters are staged by epoch and appended to the file only when their epoch
//! commits ([`BadRecords::commit`], called by the coordinator before it checkpoints).
//! The ingest thread reads ahead of the epoch being checkpointed; a letter is written
//! only once the epoch of its record is committed.
//!
//! A restart replays each partition from its checkpoint, and letters of records after
//! the checkpoint may be in the file already (their epoch committed, its checkpoint
//! did not happen). The file is shared by every partition, and by every instance
//! sharing the state directory, so it is never cut back: when a partition is restored,
//! the offsets after its checkpoint that already have a letter are remembered
//! ([`BadRecords::already_written`]) and the replay does not write them again.

use crate::config::OnError;
use crate::status::Counters;
use projector_connectors::dead_letter::{DeadLetter, DeadLetterFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by the ingest thread and the workers; bad records are rare, so a mutex is fine.
#[derive(Debug)]
pub struct BadRecords {
    policy: OnError,
    path: PathBuf,
    sink: Mutex<Option<DeadLetterFile>>,
    /// Formatted letters by the epoch their record belongs to, until it commits.
    staged: Mutex<BTreeMap<u64, Vec<u8>>>,
    /// Per partition name: offsets after its checkpoint whose letter is in the file.
    written: Mutex<BTreeMap<String, BTreeSet<u64>>>,
    fatal: Mutex<Option<Fatal>>,
    failed: AtomicBool,
}

/// Why the pipeline stopped; under `on_error: fail`, where.
#[derive(Debug)]
struct Fatal {
    message: String,
    /// The bad record's partition and offset (`on_error: fail`).
    at: Option<(String, u64)>,
}

/// A bad record: where it came from and what is wrong.
#[derive(Debug, Clone, Copy)]
pub struct BadRecord<'a> {
    /// Exactly the bytes read.
    pub raw: &'a [u8],
    /// Stable error code.
    pub code: &'a str,
    /// What is wrong.
    pub message: &'a str,
    /// Partition name.
    pub partition: &'a str,
    /// Offset within the partition.
    pub offset: u64,
}

impl BadRecords {
    /// Bad records under `policy`; dead letters go to `path` (opened on first use).
    pub fn new(policy: OnError, path: PathBuf) -> Self {
        BadRecords {
            policy,
            path,
            sink: Mutex::new(None),
            staged: Mutex::new(BTreeMap::new()),
            written: Mutex::new(BTreeMap::new()),
            fatal: Mutex::new(None),
            failed: AtomicBool::new(false),
        }
    }

    /// Handles one bad record according to the policy; `epoch` is the epoch the record
    /// belongs to (the one its barrier has not been cut for yet).
    pub fn report(&self, counters: &Counters, r: BadRecord<'_>, epoch: u64) {
        match self.policy {
            OnError::Skip => Counters::add(&counters.skipped, 1),
            OnError::Fail => {
                let message = format!(
                    "bad record at {} offset {}: {}: {}",
                    r.partition, r.offset, r.code, r.message
                );
                let mut f = self.fatal.lock().expect("fatal lock");
                // Records are checked out of order (the ingest thread decodes ahead of
                // the workers), so a later record may be reported first: keep the
                // earliest of its partition.
                let earlier = match &*f {
                    None => true,
                    Some(Fatal {
                        at: Some((p, o)), ..
                    }) => p == r.partition && r.offset < *o,
                    Some(_) => false,
                };
                if earlier {
                    let at = Some((r.partition.to_string(), r.offset));
                    *f = Some(Fatal { message, at });
                }
                self.failed.store(true, Ordering::SeqCst);
            }
            OnError::DeadLetter => {
                let written = self.written.lock().expect("dead-letter lock");
                if written
                    .get(r.partition)
                    .is_some_and(|w| w.contains(&r.offset))
                {
                    // Written before a restart; the replay found it bad again.
                    Counters::add(&counters.dead_letters, 1);
                    return;
                }
                drop(written);
                let letter = DeadLetter {
                    raw: r.raw,
                    code: r.code,
                    message: r.message,
                    partition: r.partition,
                    offset: r.offset,
                };
                match DeadLetterFile::line(&letter) {
                    Ok(line) => {
                        let mut staged = self.staged.lock().expect("dead-letter lock");
                        staged.entry(epoch).or_default().extend_from_slice(&line);
                        Counters::add(&counters.dead_letters, 1);
                    }
                    Err(e) => self.cannot_write(e.to_string()),
                }
            }
        }
    }

    /// Appends the staged letters of every epoch up to `epoch` to the file (buffered;
    /// [`BadRecords::sync`] makes them durable).
    pub fn commit(&self, epoch: u64) {
        let lines: Vec<u8> = {
            let mut staged = self.staged.lock().expect("dead-letter lock");
            let later = match epoch.checked_add(1) {
                Some(next) => staged.split_off(&next),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut *staged, later)
                .into_values()
                .flatten()
                .collect()
        };
        if lines.is_empty() {
            return;
        }
        let mut sink = self.sink.lock().expect("dead-letter lock");
        let result = match &mut *sink {
            Some(s) => s.append_lines(&lines),
            None => DeadLetterFile::open(&self.path).and_then(|mut s| {
                let r = s.append_lines(&lines);
                *sink = Some(s);
                r
            }),
        };
        if let Err(e) = result {
            self.cannot_write(e.to_string());
        }
    }

    /// Remembers which records of `partition` from offset `from` on (where a restored
    /// partition resumes) already have a letter in the file, so the replay does not
    /// write them twice.
    pub fn already_written(&self, partition: &str, from: u64) -> std::io::Result<()> {
        if self.policy != OnError::DeadLetter {
            return Ok(());
        }
        let found =
            projector_connectors::dead_letter::letters_at_or_after(&self.path, partition, from)
                .map_err(std::io::Error::other)?;
        let mut written = self.written.lock().expect("dead-letter lock");
        if found.is_empty() {
            written.remove(partition);
        } else {
            written.insert(partition.to_string(), found);
        }
        Ok(())
    }

    /// Forgets [`BadRecords::already_written`] of a partition this instance gave up.
    pub fn forget(&self, partition: &str) {
        self.written
            .lock()
            .expect("dead-letter lock")
            .remove(partition);
    }

    /// Losing a record silently is worse than stopping.
    fn cannot_write(&self, e: String) {
        let mut f = self.fatal.lock().expect("fatal lock");
        if f.is_none() {
            let message = format!("cannot write dead letter to {}: {e}", self.path.display());
            *f = Some(Fatal { message, at: None });
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Makes every dead letter so far durable in the file.
    pub fn flush(&self) -> std::io::Result<()> {
        if let Some(s) = &mut *self.sink.lock().expect("dead-letter lock") {
            s.flush().map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Makes every dead letter so far durable and returns the file's length (0 when
    /// none was written in this run and the file does not exist).
    pub fn sync(&self) -> std::io::Result<u64> {
        match &mut *self.sink.lock().expect("dead-letter lock") {
            Some(s) => s.sync().map_err(std::io::Error::other),
            None => match std::fs::metadata(&self.path) {
                Ok(m) => Ok(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            },
        }
    }

    /// True once the pipeline must stop (`on_error: fail`, or a dead letter could not be written).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Why the pipeline stopped, if it did.
    pub fn fatal(&self) -> Option<String> {
        self.fatal
            .lock()
            .expect("fatal lock")
            .as_ref()
            .map(|f| f.message.clone())
    }

    /// Whether the event at `offset` of `partition` must still be applied: always
    /// before a failure; after one, only the events of the failing partition before the
    /// bad record (so that an earlier bad record is still found and named).
    pub fn should_apply(&self, partition: &str, offset: u64) -> bool {
        if !self.failed() {
            return true;
        }
        match &*self.fatal.lock().expect("fatal lock") {
            Some(Fatal {
                at: Some((p, o)), ..
            }) => p == partition && offset < *o,
            _ => false,
        }
    }

    /// Where dead letters go.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
