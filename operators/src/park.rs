//! Per-key parking (`on_error: park`): when an event of a key fails, the key is parked.
//! Its later events are held, not applied, while every other key goes on; once the
//! pipeline is fixed, `retry` applies the failing event and the held ones in order, and
//! `skip` drops the failing event and applies the held ones.
//!
//! Held events are kept as the records they were read from (value, message key,
//! Kafka timestamp and headers, partition and offset), not as decoded values, so a
//! retry decodes them again with the pipeline as it is then: a fix to an upcaster or a
//! declared type applies to them as much as a fix to a handler.
//!
//! Kept per key beside the key's state (routed, checkpointed, split and merged with
//! it), so parked keys survive restarts and move with their partition.

use std::collections::VecDeque;
use std::sync::Arc;

/// A record header: its name and value (`None`: a null value).
pub type Header = (Box<str>, Option<Box<[u8]>>);

/// One record as read from its source, enough to decode it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRecord {
    /// The source partition's name (`topic/3`, `file`).
    pub partition: Arc<str>,
    /// Its offset in that partition.
    pub offset: u64,
    /// The record's value (`None`: a tombstone).
    pub value: Option<Box<[u8]>>,
    /// The message key (Kafka).
    pub key: Option<Box<[u8]>>,
    /// The Kafka timestamp, in milliseconds.
    pub timestamp: Option<i64>,
    /// The Kafka headers, in order.
    pub headers: Vec<Header>,
}

impl HeldRecord {
    /// Bytes this record holds, roughly (for the memory it reports).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.value.as_ref().map_or(0, |v| v.len())
            + self.key.as_ref().map_or(0, |k| k.len())
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.as_ref().map_or(0, |v| v.len()) + 40)
                .sum::<usize>()
    }
}

/// A parked key: the event that failed, why, and the events held since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The failure's stable code (`apply.type_mismatch`, `upcast.failed`, ...).
    pub code: Arc<str>,
    /// What failed.
    pub message: Arc<str>,
    /// When the key was parked, in milliseconds since the Unix epoch (wall clock).
    pub since_ms: i64,
    /// The event that failed.
    pub failing: HeldRecord,
    /// The key's events read since, oldest first.
    pub held: VecDeque<HeldRecord>,
}

impl Parked {
    /// A key parked on `failing`, now.
    pub fn new(code: &str, message: &str, failing: HeldRecord) -> Self {
        let since_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Parked {
            code: code.into(),
            message: message.into(),
            since_ms,
            failing,
            held: VecDeque::new(),
        }
    }

    /// Bytes this entry holds, roughly.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.code.len()
            + self.message.len()
            + self.failing.bytes()
            + self.held.iter().map(HeldRecord::bytes).sum::<usize>()
    }

    /// The failing event and the held ones, oldest first, taking them out.
    pub fn into_records(self) -> impl Iterator<Item = HeldRecord> {
        std::iter::once(self.failing).chain(self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64) -> HeldRecord {
        HeldRecord {
            partition: "file".into(),
            offset,
            value: Some(b"{}"[..].into()),
            key: None,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn records_come_back_failing_first_then_in_order() {
        let mut p = Parked::new("apply.expression", "boom", record(3));
        p.held.push_back(record(5));
        p.held.push_back(record(9));
        let offsets: Vec<u64> = p.into_records().map(|r| r.offset).collect();
        assert_eq!(offsets, [3, 5, 9]);
    }

    #[test]
    fn bytes_count_what_is_held() {
        let mut p = Parked::new("c", "m", record(1));
        let before = p.bytes();
        p.held.push_back(HeldRecord {
            value: Some(vec![0u8; 1000].into()),
            ..record(2)
        });
        assert!(p.bytes() >= before + 1000);
    }
}
