//! The dead-letter file: one JSON line per bad record.
//!
//! ```text
//! {"raw":"{\"amount\":","error":{"code":"decode.invalid_json","message":"..."},"source":{"partition":"file:events.ndjson","offset":41},"time":"2026-01-01T00:00:00.123Z"}
//! ```
//!
//! `raw` holds the record's bytes when they are valid UTF-8; otherwise `raw_base64`
//! holds them in standard base64. Either way the exact bytes are recoverable
//! ([`read_dead_letters`]).

use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    /// The event's ids, when the record decoded far enough to read them.
    pub ids: &'a EventIds,
}

/// An event's ids as the envelope maps them, for a dead letter: its own id, the
/// correlation id (the request or conversation) and the causation id (the message
/// that caused it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventIds {
    /// The event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The causation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

impl EventIds {
    /// True when no id is known.
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.correlation_id.is_none() && self.causation_id.is_none()
    }
}

/// The JSON line of one dead letter.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    raw: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
    #[serde(borrow)]
    error: LineError<'a>,
    #[serde(borrow)]
    source: LineSource<'a>,
    /// The event's ids (`event: {id, correlation_id, causation_id}`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<EventIds>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
struct LineError<'a> {
    #[serde(borrow)]
    code: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
struct LineSource<'a> {
    #[serde(borrow)]
    partition: std::borrow::Cow<'a, str>,
    offset: u64,
}

/// Appends dead letters to `<state_dir>/dead-letters.ndjson`.
pub struct DeadLetterFile {
    path: PathBuf,
    file: File,
}

impl std::fmt::Debug for DeadLetterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DeadLetterFile {
    /// Opens (creating, appending) the dead-letter file at `path`, creating its
    /// parent directories.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                context: format!("creating directory {}", parent.display()),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Io {
                context: format!("opening dead-letter file {}", path.display()),
                source,
            })?;
        let mut file = file;
        end_with_newline(&mut file).map_err(|source| Error::Io {
            context: format!("repairing the last line of {}", path.display()),
            source,
        })?;
        Ok(DeadLetterFile {
            path: path.to_owned(),
            file,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one dead letter.
    pub fn append(&mut self, letter: &DeadLetter<'_>) -> Result<()> {
        let bytes = Self::line(letter).map_err(|e| self.io_error("writing", e))?;
        self.append_lines(&bytes)
    }

    /// Appends lines made by [`DeadLetterFile::line`] with one write to a file opened
    /// for appending, so that whole lines land together even when other instances
    /// sharing the state directory append to the same file.
    pub fn append_lines(&mut self, lines: &[u8]) -> Result<()> {
        self.file
            .write_all(lines)
            .map_err(|e| self.io_error("writing", e))
    }

    /// The line (with its `\n`) that [`DeadLetterFile::append`] writes for `letter`:
    /// callers that must hold letters back (until their epoch commits) format them
    /// early and append them later.
    pub fn line(letter: &DeadLetter<'_>) -> std::io::Result<Vec<u8>> {
        let (raw, raw_base64) = match std::str::from_utf8(letter.raw) {
            Ok(text) => (Some(text.into()), None),
            Err(_) => (None, Some(BASE64.encode(letter.raw))),
        };
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let line = Line {
            raw,
            raw_base64,
            error: LineError {
                code: letter.code.into(),
                message: letter.message.into(),
            },
            source: LineSource {
                partition: letter.partition.into(),
                offset: letter.offset,
            },
            event: (!letter.ids.is_empty()).then(|| letter.ids.clone()),
            time: time.into(),
        };
        // Serialize to a line first so a failure never leaves half a line behind.
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Nothing is buffered: every append is one write. Kept for callers that flush.
    pub fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Fsyncs the file and returns its length.
    pub fn sync(&mut self) -> Result<u64> {
        self.file
            .sync_data()
            .map_err(|e| self.io_error("syncing", e))?;
        let len = self
            .file
            .metadata()
            .map_err(|e| self.io_error("reading the length of", e))?
            .len();
        Ok(len)
    }

    fn io_error(&self, doing: &str, source: std::io::Error) -> Error {
        Error::Io {
            context: format!("{doing} dead-letter file {}", self.path.display()),
            source,
        }
    }
}

/// A crash in the middle of a write (power loss; a killed process cannot tear one
/// write) may leave a last line without its newline: end it, so the next letter starts
/// a line of its own. Bytes are never removed.
fn end_with_newline(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut reader = &*file;
    reader.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    reader.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// A dead letter as read back from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// Exactly the bytes of the bad record.
    pub raw: Vec<u8>,
    /// The error code.
    pub code: String,
    /// The error message.
    pub message: String,
    /// The partition name.
    pub partition: String,
    /// The offset within the partition.
    pub offset: u64,
    /// The record's message key (a dead-letter topic keeps it; the file does not).
    pub key: Option<Vec<u8>>,
}

impl StoredDeadLetter {
    /// The letter as a line of the dead-letter file (with its newline; the time is
    /// now, and the event's ids are not known).
    pub fn line(&self) -> std::io::Result<Vec<u8>> {
        DeadLetterFile::line(&DeadLetter {
            raw: &self.raw,
            code: &self.code,
            message: &self.message,
            partition: &self.partition,
            offset: self.offset,
            ids: &EventIds::default(),
        })
    }
}

/// Reads all dead letters of a file written by [`DeadLetterFile`] (blank lines are
/// ignored), for tests and tools.
pub fn read_dead_letters(path: &Path) -> Result<Vec<StoredDeadLetter>> {
    let what = format!("dead-letter file {}", path.display());
    let file = File::open(path).map_err(|source| Error::Io {
        context: format!("reading {what}"),
        source,
    })?;
    parse_dead_letters(BufReader::new(file), &what)
}

/// Reads dead letters in the file's format (one JSON line each, blank lines ignored)
/// from `input`, which is `what` in errors (`dead-letter file x`).
pub fn parse_dead_letters(input: impl BufRead, what: &str) -> Result<Vec<StoredDeadLetter>> {
    let context = |line: Option<usize>| match line {
        Some(n) => format!("reading {what} line {n}"),
        None => format!("reading {what}"),
    };
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let mut letters = Vec::new();
    for (i, text) in input.lines().enumerate() {
        let text = text.map_err(|source| Error::Io {
            context: context(None),
            source,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::Io {
            context: context(Some(i + 1)),
            source: invalid(msg),
        };
        let line: Line<'_> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let raw = match (line.raw, line.raw_base64) {
            (Some(raw), None) => raw.into_owned().into_bytes(),
            (None, Some(b64)) => BASE64
                .decode(b64)
                .map_err(|e| bad(format!("raw_base64: {e}")))?,
            _ => return Err(bad("expected exactly one of `raw` and `raw_base64`".into())),
        };
        letters.push(StoredDeadLetter {
            raw,
            code: line.error.code.into_owned(),
            message: line.error.message.into_owned(),
            partition: line.source.partition.into_owned(),
            offset: line.source.offset,
            key: None,
        });
    }
    Ok(letters)
}

/// Letters already in a dead-letter destination: per partition name, the offsets (at or
/// after the partition's `from`) that have one.
pub type Written = std::collections::BTreeMap<String, std::collections::BTreeSet<u64>>;

/// The letters of the given partitions (name, from offset) that are already in the file
/// at `path` (none when it does not exist), in one pass. Lines that do not parse are
/// passed over: this looks for letters a replay would write again, and a damaged line
/// cannot be matched anyway.
pub fn letters_at_or_after(path: &Path, partitions: &[(&str, u64)]) -> Result<Written> {
    let mut found = Written::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(source) => {
            let context = format!("reading dead-letter file {}", path.display());
            return Err(Error::Io { context, source });
        }
    };
    #[derive(Deserialize)]
    struct Where<'a> {
        #[serde(borrow)]
        source: LineSource<'a>,
    }
    for text in BufReader::new(file).split(b'\n') {
        let text = text.map_err(|source| Error::Io {
            context: format!("reading dead-letter file {}", path.display()),
            source,
        })?;
        if let Ok(w) = serde_json::from_slice::<Where<'_>>(&text) {
            let name = w.source.partition.as_ref();
            if let Some((_, from)) = partitions.iter().find(|(p, _)| *p == name)
                && w.source.offset >= *from
            {
                found
                    .entry(name.to_string())
                    .or_default()
                    .insert(w.source.offset);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter<'a>(raw: &'a [u8], offset: u64) -> DeadLetter<'a> {
        DeadLetter {
            raw,
            code: "decode.invalid_json",
            message: "expected value at line 1 column 1 \"here\"",
            partition: "file:events.ndjson",
            offset,
            ids: &NO_IDS,
        }
    }

    static NO_IDS: EventIds = EventIds {
        id: None,
        correlation_id: None,
        causation_id: None,
    };

    #[test]
    fn a_letter_carries_the_event_ids_it_knows() {
        let ids = EventIds {
            id: Some("e-7".into()),
            correlation_id: Some("c-1".into()),
            causation_id: None,
        };
        let mut l = letter(b"{}", 3);
        let line = DeadLetterFile::line(&l).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert!(v.get("event").is_none(), "no ids, no event: {v}");
        l.ids = &ids;
        let v: serde_json::Value =
            serde_json::from_slice(&DeadLetterFile::line(&l).unwrap()).unwrap();
        assert_eq!(
            v["event"],
            serde_json::json!({"id": "e-7", "correlation_id": "c-1"})
        );
    }

    #[test]
    fn round_trip_utf8_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/nested/dead-letters.ndjson");
        let raws: Vec<Vec<u8>> = vec![
            b"{\"amount\":".to_vec(),
            b"quotes \" and \\ backslashes \\\" \\n literal".to_vec(),
            b"control \x00\x01\x07\x08\t\x0b\x0c\r\x1b\x1f\x7f chars".to_vec(),
            "unicode é ü 漢字 🦀 \u{2028}\u{2029}".as_bytes().to_vec(),
            b"{\"a\":1}\r".to_vec(),
            b"\xff\xfe invalid \xc3\x28 utf8 \" \\ \x00".to_vec(),
            (0u8..=255).filter(|b| *b != b'\n').collect(),
            Vec::new(),
        ];
        let mut file = DeadLetterFile::open(&path).unwrap();
        assert_eq!(file.path(), path);
        for (i, raw) in raws.iter().enumerate() {
            file.append(&letter(raw, i as u64)).unwrap();
        }
        file.flush().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), raws.len(), "one line per letter");
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["raw"], "{\"amount\":");
        assert_eq!(first["error"]["code"], "decode.invalid_json");
        assert_eq!(first["source"]["partition"], "file:events.ndjson");
        assert_eq!(first["source"]["offset"], 0);
        let time = first["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        let binary: serde_json::Value = serde_json::from_str(text.lines().nth(5).unwrap()).unwrap();
        assert!(binary.get("raw").is_none() && binary["raw_base64"].is_string());

        let stored = read_dead_letters(&path).unwrap();
        let expected: Vec<StoredDeadLetter> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| StoredDeadLetter {
                raw: raw.clone(),
                code: "decode.invalid_json".into(),
                message: "expected value at line 1 column 1 \"here\"".into(),
                partition: "file:events.ndjson".into(),
                offset: i as u64,
                key: None,
            })
            .collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.ndjson");
        for offset in 0..3 {
            let mut file = DeadLetterFile::open(&path).unwrap();
            file.append(&letter(b"x", offset)).unwrap();
            file.flush().unwrap();
        }
        let offsets: Vec<u64> = read_dead_letters(&path)
            .unwrap()
            .iter()
            .map(|l| l.offset)
            .collect();
        assert_eq!(offsets, [0, 1, 2]);
    }

    #[test]
    fn a_torn_last_line_is_ended_and_letters_are_found_by_partition_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.ndjson");
        let mut file = DeadLetterFile::open(&path).unwrap();
        file.append(&letter(b"a", 3)).unwrap();
        file.append(&letter(b"b", 9)).unwrap();
        drop(file);
        // A write cut short (power loss): half a line, no newline.
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(b"{\"raw\":\"tor");
        std::fs::write(&path, &bytes).unwrap();

        let mut file = DeadLetterFile::open(&path).unwrap();
        file.append(&letter(b"c", 12)).unwrap();
        drop(file);
        let text = std::fs::read(&path).unwrap();
        assert_eq!(&text[..whole], &bytes[..whole], "nothing before is touched");
        assert!(text.ends_with(b"\n"));
        let offsets = |from| {
            let found = letters_at_or_after(&path, &[("file:events.ndjson", from), ("b", 0)]);
            let found = found.unwrap();
            assert!(!found.contains_key("b"));
            found["file:events.ndjson"]
                .iter()
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(offsets(0), [3, 9, 12]);
        assert_eq!(offsets(9), [9, 12]);
        assert!(
            letters_at_or_after(&path, &[("other", 0)])
                .unwrap()
                .is_empty()
        );
        let missing = dir.path().join("none.ndjson");
        assert!(
            letters_at_or_after(&missing, &[("x", 0)])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn reading_rejects_malformed_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.ndjson");
        std::fs::write(&path, "\n{\"nope\":1}\n").unwrap();
        let err = read_dead_letters(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(read_dead_letters(&dir.path().join("missing")).is_err());
    }
}
