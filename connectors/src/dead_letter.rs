//! The dead-letter file: one JSON line per bad record (HELPER B implements this file).

use crate::Result;
use std::path::Path;

/// A bad record on its way to the dead-letter destination.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// Exactly the bytes read from the source.
    pub raw: &'a [u8],
    /// Stable error code, e.g. `decode.invalid_json`.
    pub code: &'a str,
    /// Human-readable error.
    pub message: &'a str,
    /// Partition name, e.g. `file:events.ndjson`.
    pub partition: &'a str,
    /// Offset within the partition.
    pub offset: u64,
}

/// Appends dead letters to `<state_dir>/dead-letters.ndjson`.
pub struct DeadLetterFile {
    _private: (),
}

impl DeadLetterFile {
    /// Opens (creating, appending) the dead-letter file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let _ = path;
        todo!()
    }

    /// Appends one dead letter (buffered; call [`DeadLetterFile::flush`]).
    pub fn append(&mut self, letter: &DeadLetter<'_>) -> Result<()> {
        let _ = letter;
        todo!()
    }

    /// Flushes buffered letters to the file.
    pub fn flush(&mut self) -> Result<()> {
        todo!()
    }
}
