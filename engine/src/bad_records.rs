//! What happens to a record that cannot be decoded or applied (`on_error`).

use crate::config::OnError;
use crate::status::Counters;
use projector_connectors::dead_letter::{DeadLetter, DeadLetterFile};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by the ingest thread and the workers; bad records are rare, so a mutex is fine.
#[derive(Debug)]
pub struct BadRecords {
    policy: OnError,
    path: PathBuf,
    sink: Mutex<Option<DeadLetterFile>>,
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
            fatal: Mutex::new(None),
            failed: AtomicBool::new(false),
        }
    }

    /// Handles one bad record according to the policy.
    pub fn report(&self, counters: &Counters, r: BadRecord<'_>) {
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
                let letter = DeadLetter {
                    raw: r.raw,
                    code: r.code,
                    message: r.message,
                    partition: r.partition,
                    offset: r.offset,
                };
                let mut sink = self.sink.lock().expect("dead-letter lock");
                let result = match &mut *sink {
                    Some(s) => s.append(&letter),
                    None => DeadLetterFile::open(&self.path).and_then(|mut s| {
                        let r = s.append(&letter);
                        *sink = Some(s);
                        r
                    }),
                };
                match result {
                    Ok(()) => Counters::add(&counters.dead_letters, 1),
                    Err(e) => {
                        // Losing a record silently is worse than stopping.
                        let mut f = self.fatal.lock().expect("fatal lock");
                        if f.is_none() {
                            let message =
                                format!("cannot write dead letter to {}: {e}", self.path.display());
                            *f = Some(Fatal { message, at: None });
                        }
                        self.failed.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// Makes every dead letter so far durable in the file.
    pub fn flush(&self) -> std::io::Result<()> {
        if let Some(s) = &mut *self.sink.lock().expect("dead-letter lock") {
            s.flush().map_err(std::io::Error::other)?;
        }
        Ok(())
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
