//! Newline-delimited JSON from a file or stdin (HELPER B implements this file).

use crate::source::{PartitionInfo, Poll, RawBatch, Resume, Source};
use crate::Result;
use std::path::PathBuf;

/// `source: {type: file, path: ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    /// Path to a newline-delimited JSON file, one event per line; `-` reads stdin.
    pub path: PathBuf,
}

/// Reads one event per line. One partition; the offset is the 0-based line number.
pub struct FileSource {
    config: FileConfig,
}

impl FileSource {
    /// Opens the file (or stdin), skipping to the line in `resume` for partition 0.
    pub fn open(config: &FileConfig, resume: &Resume) -> Result<Self> {
        let _ = resume;
        Ok(FileSource { config: config.clone() })
    }
}

impl Source for FileSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        vec![PartitionInfo { id: 0, name: format!("file:{}", self.config.path.display()) }]
    }

    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll> {
        let _ = (out, max_records);
        todo!()
    }
}
