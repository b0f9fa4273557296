//! Newline-delimited JSON from a file or stdin.
//!
//! One record per line: the line's bytes without the trailing `\n`, byte for byte
//! otherwise (a `\r` before the `\n` stays, invalid UTF-8 passes through). Lines that
//! are empty or only ASCII whitespace give no record but still count, so a record's
//! offset is always its 0-based line number in the input.
//!
//! A line longer than `max_record_bytes` is not held whole: the source keeps its first
//! [`PREFIX_BYTES`], its size and its SHA-256 ([`Oversize`]), and the engine sends that
//! to the dead letters. A 100 MB line once took 1.85 GB, a 1.5 GB one ~20 GB.

use crate::source::{Oversize, PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source};
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Read buffer size.
const BUFFER_BYTES: usize = 256 * 1024;

/// Default `max_record_bytes`: 8 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 8 << 20;

/// Bytes of an oversize record kept for its dead letter.
pub const PREFIX_BYTES: usize = 4096;

/// `source: {type: file, path: ..., max_record_bytes: ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    /// Path to a newline-delimited JSON file, one event per line; `-` reads stdin.
    pub path: PathBuf,
    /// The most bytes one line may have (without its `\n`); a longer one is a bad
    /// record (`record.too_large`) whose dead letter keeps a prefix and a hash.
    pub max_record_bytes: usize,
}

impl FileConfig {
    /// Reads `path` with the default `max_record_bytes`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileConfig {
            path: path.into(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// True when the path is `-` (read stdin).
    pub fn is_stdin(&self) -> bool {
        self.path == Path::new("-")
    }
}

/// Reads one event per line. One partition; the offset is the 0-based line number.
pub struct FileSource {
    config: FileConfig,
    reader: BufReader<Box<dyn Read + Send>>,
    /// Line number of the next line to read.
    next_line: u64,
    /// Lines before this one are skipped (resume point).
    skip_before: u64,
    /// End of input reached.
    eof: bool,
    /// Reads may block for a long time (stdin, a pipe): hand out records read so far
    /// instead of waiting to fill a batch.
    may_block: bool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("config", &self.config)
            .field("next_line", &self.next_line)
            .field("skip_before", &self.skip_before)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Opens the file (or stdin), skipping to the line in `resume` for partition 0.
    ///
    /// The skipped lines are read (and dropped) by the first polls, not here, so
    /// opening stdin never blocks.
    pub fn open(config: &FileConfig, resume: &Resume) -> Result<Self> {
        let reader: Box<dyn Read + Send> = if config.is_stdin() {
            Box::new(std::io::stdin())
        } else {
            let file = File::open(&config.path).map_err(|source| Error::Io {
                context: format!("opening {}", config.path.display()),
                source,
            })?;
            Box::new(file)
        };
        let mut source = Self::from_reader(config, reader, resume);
        source.may_block = config.is_stdin()
            || std::fs::metadata(&config.path)
                .map(|m| !m.is_file())
                .unwrap_or(true);
        Ok(source)
    }

    /// A source reading `reader` as if it were `config`'s file (used for tests and
    /// for callers that already hold an open stream).
    pub fn from_reader(config: &FileConfig, reader: Box<dyn Read + Send>, resume: &Resume) -> Self {
        FileSource {
            config: config.clone(),
            reader: BufReader::with_capacity(BUFFER_BYTES, reader),
            may_block: true,
            next_line: 0,
            skip_before: resume.get(&0).copied().unwrap_or(0),
            eof: false,
        }
    }
}

impl Source for FileSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        let name = if self.config.is_stdin() {
            "stdin".to_owned()
        } else {
            format!("file:{}", self.config.path.display())
        };
        vec![PartitionInfo::single(0, name)]
    }

    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll> {
        if self.eof {
            return Ok(Poll::Exhausted);
        }
        let mut appended = 0;
        while appended < max_records {
            // Hand out what we have rather than block for more: on a pipe or a
            // terminal, the next line may come much later, and records held here are
            // in no epoch (not visible to SQL, not covered by a checkpoint).
            if appended > 0 && self.may_block && self.reader.buffer().is_empty() {
                break;
            }
            // Read straight into the batch buffer; drop the bytes again if the line
            // gives no record.
            let start = out.data.len();
            let max = self.config.max_record_bytes;
            let (read, oversize) = match read_line(&mut self.reader, &mut out.data, max) {
                Ok(read) => read,
                Err(source) => {
                    out.data.truncate(start);
                    let context = if self.config.is_stdin() {
                        "reading stdin".to_owned()
                    } else {
                        format!("reading {}", self.config.path.display())
                    };
                    return Err(Error::Io { context, source });
                }
            };
            if read == 0 {
                self.eof = true;
                break;
            }
            if out.data.last() == Some(&b'\n') && oversize.is_none() {
                out.data.pop();
            }
            let offset = self.next_line;
            self.next_line += 1;
            let line = &out.data[start..];
            let blank = oversize.is_none() && line.iter().all(u8::is_ascii_whitespace);
            if offset < self.skip_before || blank {
                out.data.truncate(start);
                continue;
            }
            if let Some((bytes, sha256)) = oversize {
                out.oversize.push(Oversize {
                    record: out.records.len(),
                    bytes,
                    sha256,
                    limit: max as u64,
                });
            }
            out.records.push(RawRecord {
                partition: 0,
                offset,
                start,
                end: out.data.len(),
                tombstone: false,
            });
            appended += 1;
        }
        if appended == 0 && self.eof {
            Ok(Poll::Exhausted)
        } else {
            Ok(Poll::Ready)
        }
    }
}

/// A line over the limit: its size and SHA-256.
type TooLong = (u64, [u8; 32]);

/// Reads one line (with its `\n`, if it has one) onto `out`, and returns the bytes
/// read (0 at the end of the input). A line of more than `max` bytes (without its
/// `\n`) is not kept whole: `out` gets its first [`PREFIX_BYTES`] only, and the size
/// and SHA-256 of all its bytes come back.
fn read_line(
    reader: &mut impl BufRead,
    out: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, Option<TooLong>)> {
    let start = out.len();
    let prefix = PREFIX_BYTES.min(max.max(1));
    let mut read = 0usize;
    // Once the line is known to be too long: its hash so far and its size.
    let mut over: Option<(Sha256, u64)> = None;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let used = chunk.len();
        let content = &chunk[..used - usize::from(done)];
        match &mut over {
            Some((hash, size)) => {
                hash.update(content);
                *size += content.len() as u64;
            }
            None if out.len() - start + content.len() > max => {
                let mut hash = Sha256::new();
                hash.update(&out[start..]);
                hash.update(content);
                let size = (out.len() - start + content.len()) as u64;
                let keep = prefix.saturating_sub(out.len() - start).min(content.len());
                out.extend_from_slice(&content[..keep]);
                out.truncate(start + prefix.min(out.len() - start));
                over = Some((hash, size));
            }
            None => out.extend_from_slice(chunk),
        }
        read += used;
        reader.consume(used);
        if done {
            break;
        }
    }
    Ok((
        read,
        over.map(|(hash, size)| (size, hash.finalize().into())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_line_over_the_limit_keeps_a_prefix_its_size_and_hash() {
        let long: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = b"first\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nlast");
        for capacity in [7, 4096, 1 << 20] {
            let reader = BufReader::with_capacity(capacity, std::io::Cursor::new(input.clone()));
            let mut source = FileSource::from_reader(
                &FileConfig {
                    path: "x".into(),
                    max_record_bytes: 1_000,
                },
                Box::new(reader),
                &Resume::new(),
            );
            let mut batch = RawBatch::default();
            while source.poll(&mut batch, 10).unwrap() != Poll::Exhausted {}
            let lines: Vec<&[u8]> = batch.records.iter().map(|r| batch.bytes(r)).collect();
            assert_eq!(
                lines,
                [&b"first"[..], &long[..1_000], b"last"],
                "{capacity}"
            );
            let offsets: Vec<u64> = batch.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, [0, 1, 2]);
            let hash: [u8; 32] = Sha256::digest(&long).into();
            assert_eq!(
                batch.oversize,
                [Oversize {
                    record: 1,
                    bytes: 10_000,
                    sha256: hash,
                    limit: 1_000,
                }]
            );
            let mut cursor = 0;
            assert!(batch.oversize_of(0, &mut cursor).is_none());
            assert!(batch.oversize_of(1, &mut cursor).is_some());
            assert!(batch.oversize_of(2, &mut cursor).is_none());
        }
    }

    fn write_file(bytes: &[u8]) -> (tempfile::TempDir, FileConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        File::create(&path).unwrap().write_all(bytes).unwrap();
        (dir, FileConfig::new(path))
    }

    /// All (offset, bytes) records, polling `chunk` at a time.
    fn read_all(source: &mut FileSource, chunk: usize) -> Vec<(u64, Vec<u8>)> {
        let mut records = Vec::new();
        let mut batch = RawBatch::default();
        loop {
            batch.clear();
            match source.poll(&mut batch, chunk).unwrap() {
                Poll::Ready => {
                    assert!(batch.len() <= chunk);
                    for r in &batch.records {
                        assert_eq!(r.partition, 0);
                        records.push((r.offset, batch.bytes(r).to_vec()));
                    }
                }
                Poll::Exhausted => {
                    assert!(batch.is_empty());
                    break;
                }
                Poll::Idle => panic!("a file never idles"),
            }
        }
        assert_eq!(source.poll(&mut batch, chunk).unwrap(), Poll::Exhausted);
        records
    }

    fn read_file(bytes: &[u8], resume: u64, chunk: usize) -> Vec<(u64, Vec<u8>)> {
        let (_dir, config) = write_file(bytes);
        let mut source = FileSource::open(&config, &Resume::from([(0, resume)])).unwrap();
        read_all(&mut source, chunk)
    }

    fn rec(offset: u64, bytes: &[u8]) -> (u64, Vec<u8>) {
        (offset, bytes.to_vec())
    }

    #[test]
    fn one_record_per_line() {
        let input = b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n";
        let expected = vec![
            rec(0, b"{\"a\":1}"),
            rec(1, b"{\"a\":2}"),
            rec(2, b"{\"a\":3}"),
        ];
        for chunk in [1, 2, 3, 100] {
            assert_eq!(read_file(input, 0, chunk), expected);
        }
    }

    #[test]
    fn blank_lines_are_skipped_but_counted() {
        let input = b"\n{\"a\":1}\n   \n\t \r\n\n{\"a\":2}\n\n";
        assert_eq!(
            read_file(input, 0, 10),
            vec![rec(1, b"{\"a\":1}"), rec(5, b"{\"a\":2}")]
        );
        assert!(read_file(b"\n\n \n", 0, 10).is_empty());
        assert!(read_file(b"", 0, 10).is_empty());
    }

    #[test]
    fn crlf_and_other_bytes_are_kept_exactly() {
        let input = b"{\"a\":1}\r\n  {\"b\":\"\xff\xfe\"}  \n\x00x\r\r\n";
        assert_eq!(
            read_file(input, 0, 10),
            vec![
                rec(0, b"{\"a\":1}\r"),
                rec(1, b"  {\"b\":\"\xff\xfe\"}  "),
                rec(2, b"\x00x\r\r")
            ]
        );
    }

    #[test]
    fn last_line_without_newline_is_a_record() {
        assert_eq!(
            read_file(b"{\"a\":1}\n{\"a\":2}", 0, 10),
            vec![rec(0, b"{\"a\":1}"), rec(1, b"{\"a\":2}")]
        );
        assert_eq!(read_file(b"x", 0, 10), vec![rec(0, b"x")]);
    }

    #[test]
    fn resume_skips_earlier_lines() {
        let input = b"a\nb\n\nd\ne";
        assert_eq!(
            read_file(input, 1, 10),
            vec![rec(1, b"b"), rec(3, b"d"), rec(4, b"e")]
        );
        assert_eq!(read_file(input, 2, 1), vec![rec(3, b"d"), rec(4, b"e")]);
        assert_eq!(read_file(input, 4, 10), vec![rec(4, b"e")]);
        assert!(read_file(input, 5, 10).is_empty());
        assert!(read_file(input, 100, 10).is_empty());
    }

    #[test]
    fn long_lines_cross_buffer_boundaries() {
        let long = vec![b'x'; BUFFER_BYTES * 2 + 17];
        let mut input = long.clone();
        input.extend_from_slice(b"\nshort\n");
        input.extend_from_slice(&long);
        assert_eq!(
            read_file(&input, 0, 2),
            vec![(0, long.clone()), rec(1, b"short"), (2, long)]
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.ndjson");
        let err = FileSource::open(&FileConfig::new(path.clone()), &Resume::new()).unwrap_err();
        match &err {
            Error::Io { context, source } => {
                assert_eq!(context, &format!("opening {}", path.display()));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("opening {}: ", path.display()))
        );
    }

    #[test]
    fn partition_names() {
        let (_dir, config) = write_file(b"");
        let source = FileSource::open(&config, &Resume::new()).unwrap();
        assert_eq!(
            source.partitions(),
            vec![PartitionInfo::single(
                0,
                format!("file:{}", config.path.display())
            )]
        );
        let stdin = FileConfig::new("-");
        let source = FileSource::from_reader(&stdin, Box::new(&b"a\n"[..]), &Resume::new());
        assert_eq!(source.partitions(), vec![PartitionInfo::single(0, "stdin")]);
    }

    #[test]
    fn from_reader_and_appending_to_a_non_empty_batch() {
        let config = FileConfig::new("-");
        let mut source =
            FileSource::from_reader(&config, Box::new(&b"a\n\nbc\n"[..]), &Resume::new());
        let mut batch = RawBatch::default();
        batch.push(7, 3, b"earlier");
        assert_eq!(source.poll(&mut batch, 10).unwrap(), Poll::Ready);
        let got: Vec<_> = batch
            .records
            .iter()
            .map(|r| (r.offset, batch.bytes(r)))
            .collect();
        assert_eq!(got, vec![(3, &b"earlier"[..]), (0, b"a"), (2, b"bc")]);
        assert_eq!(batch.data, b"earlierabc");
        assert_eq!(source.poll(&mut batch, 10).unwrap(), Poll::Exhausted);
    }

    /// A reader that hands out one chunk per read, then blocks "forever" (fails the
    /// test) if asked for more: a pipe whose writer went quiet.
    struct Trickle(Vec<&'static [u8]>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let chunk = self.0.pop().expect("the source blocked on a quiet pipe");
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn a_quiet_pipe_does_not_hold_back_lines_already_read() {
        let config = FileConfig::new("-");
        let reader = Trickle(vec![b"c\n", b"a\nb\n"]);
        let mut source = FileSource::from_reader(&config, Box::new(reader), &Resume::new());
        let mut batch = RawBatch::default();
        assert_eq!(source.poll(&mut batch, 10).unwrap(), Poll::Ready);
        assert_eq!(batch.data, b"ab");
        assert_eq!(source.poll(&mut batch, 10).unwrap(), Poll::Ready);
        assert_eq!(batch.data, b"abc");
    }

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<FileSource>();
    }
}
