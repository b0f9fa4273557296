//! The Nexmark benchmark's events (people, auctions, bids), from the `nexmark` crate.
//!
//! One partition, named `nexmark`; the offset of an event is its Nexmark event number,
//! and every event is a pure function of that number (the crate seeds each event's
//! randomness with it), so resuming at offset N regenerates exactly the events from N
//! on, without simulating the ones before. With a fixed `base_time` (the default is
//! fixed too) two runs give byte-identical events.
//!
//! Each event is one flat JSON object, written straight into the batch buffer (no
//! `serde_json::Value`); fields in this order:
//!
//! ```text
//! {"event_id":7,"kind":"person","id":1000,"name":"..","email_address":"..","credit_card":"..","city":"..","state":"..","date_time":1767225600000,"extra":".."}
//! {"event_id":1,"kind":"auction","id":1000,"item_name":"..","description":"..","initial_bid":..,"reserve":..,"date_time":..,"expires":..,"seller":..,"category":..,"extra":".."}
//! {"event_id":3,"kind":"bid","auction":1000,"bidder":1001,"price":..,"channel":"..","url":"..","date_time":..,"extra":".."}
//! ```
//!
//! * `event_id`: the offset (unique, dense): the natural envelope key for views that
//!   keep every event (tables) or group by something else (aggregates).
//! * `kind`: `person`, `auction` or `bid` (1 : 3 : 46, the standard proportions).
//! * `date_time`, `expires`: event time in epoch milliseconds: `base_time` plus the
//!   event number divided by `rate` (events per second of event time).
//! * Every other field is the crate's, under its Nexmark name; prices are in cents.

use crate::Result;
use crate::generator::push_u64;
use crate::source::{PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source};
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig as CrateConfig;
use nexmark::event::Event;

/// 2026-01-01T00:00:00Z in epoch milliseconds: the default `base_time`.
pub const DEFAULT_BASE_TIME_MS: u64 = 1_767_225_600_000;

/// The standard Nexmark event rate: 10,000 events per second of event time.
pub const DEFAULT_RATE: u64 = 10_000;

/// `source: {type: nexmark, ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    /// How many events to emit in all.
    pub events: u64,
    /// Events per second of event time: sets how far apart `date_time`s are.
    pub rate: u64,
    /// The event time (epoch ms) of event 0. Fixed by default, so runs are reproducible.
    pub base_time_ms: u64,
    /// Generate every event when the source opens (before the run's clock starts) and
    /// only copy them out while running, so throughput measures the engine, not the
    /// generator (~0.5 µs per event in release). Costs the events' bytes in memory.
    pub pregenerate: bool,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 1_000_000,
            rate: DEFAULT_RATE,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            pregenerate: false,
        }
    }
}

/// Events generated ahead: their JSON back to back, and where each ends.
#[derive(Debug, Default)]
struct Pregenerated {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Index (into `ends`) of the next event to hand out.
    at: usize,
}

/// The `nexmark` source: see the module docs.
#[derive(Debug)]
pub struct NexmarkSource {
    events: u64,
    generator: EventGenerator,
    next: u64,
    pregenerated: Option<Pregenerated>,
}

impl NexmarkSource {
    /// A source starting at the offset in `resume` for partition 0 (or at 0).
    pub fn new(config: &NexmarkConfig, resume: &Resume) -> Self {
        let rate = usize::try_from(config.rate.max(1)).unwrap_or(usize::MAX);
        // `EventGenerator::default()` has no proportions set up and repeats one event:
        // build it from a full configuration.
        let crate_config = CrateConfig {
            base_time: config.base_time_ms,
            first_rate: rate,
            next_rate: rate,
            ..CrateConfig::default()
        };
        let next = resume.get(&0).copied().unwrap_or(0).min(config.events);
        let mut generator = EventGenerator::new(crate_config).with_offset(next);
        let pregenerated = config.pregenerate.then(|| {
            let n = usize::try_from(config.events - next).expect("events fit in memory");
            let mut p = Pregenerated {
                data: Vec::with_capacity(n.saturating_mul(160)),
                ends: Vec::with_capacity(n),
                at: 0,
            };
            for offset in next..config.events {
                let event = generator.next().expect("the Nexmark generator never ends");
                write_event(&mut p.data, offset, &event);
                p.ends.push(p.data.len());
            }
            p
        });
        NexmarkSource {
            events: config.events,
            generator,
            next,
            pregenerated,
        }
    }
}

impl Source for NexmarkSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        vec![PartitionInfo::single(0, "nexmark")]
    }

    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll> {
        let remaining = self.events - self.next;
        if remaining == 0 {
            return Ok(Poll::Exhausted);
        }
        let n = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(max_records);
        if n == 0 {
            return Ok(Poll::Ready);
        }
        out.records.reserve(n);
        if let Some(p) = &mut self.pregenerated {
            let start = if p.at == 0 { 0 } else { p.ends[p.at - 1] };
            let end = p.ends[p.at + n - 1];
            let base = out.data.len();
            out.data.extend_from_slice(&p.data[start..end]);
            let mut from = start;
            for i in p.at..p.at + n {
                out.records.push(RawRecord {
                    partition: 0,
                    offset: self.next,
                    start: base + from - start,
                    end: base + p.ends[i] - start,
                    tombstone: false,
                });
                from = p.ends[i];
                self.next += 1;
            }
            p.at += n;
            return Ok(Poll::Ready);
        }
        out.data.reserve(n.saturating_mul(200));
        for _ in 0..n {
            let event = self
                .generator
                .next()
                .expect("the Nexmark generator never ends");
            let offset = self.next;
            let start = out.data.len();
            write_event(&mut out.data, offset, &event);
            out.records.push(RawRecord {
                partition: 0,
                offset,
                start,
                end: out.data.len(),
                tombstone: false,
            });
            self.next += 1;
        }
        Ok(Poll::Ready)
    }
}

/// Appends the flat JSON of `event` (number `offset`) to `buf`.
pub(crate) fn write_event(buf: &mut Vec<u8>, offset: u64, event: &Event) {
    buf.extend_from_slice(b"{\"event_id\":");
    push_u64(buf, offset);
    match event {
        Event::Person(p) => {
            buf.extend_from_slice(b",\"kind\":\"person\",\"id\":");
            push_u64(buf, p.id as u64);
            push_str_field(buf, b"name", &p.name);
            push_str_field(buf, b"email_address", &p.email_address);
            push_str_field(buf, b"credit_card", &p.credit_card);
            push_str_field(buf, b"city", &p.city);
            push_str_field(buf, b"state", &p.state);
            push_u64_field(buf, b"date_time", p.date_time);
            push_str_field(buf, b"extra", &p.extra);
        }
        Event::Auction(a) => {
            buf.extend_from_slice(b",\"kind\":\"auction\",\"id\":");
            push_u64(buf, a.id as u64);
            push_str_field(buf, b"item_name", &a.item_name);
            push_str_field(buf, b"description", &a.description);
            push_u64_field(buf, b"initial_bid", a.initial_bid as u64);
            push_u64_field(buf, b"reserve", a.reserve as u64);
            push_u64_field(buf, b"date_time", a.date_time);
            push_u64_field(buf, b"expires", a.expires);
            push_u64_field(buf, b"seller", a.seller as u64);
            push_u64_field(buf, b"category", a.category as u64);
            push_str_field(buf, b"extra", &a.extra);
        }
        Event::Bid(b) => {
            buf.extend_from_slice(b",\"kind\":\"bid\",\"auction\":");
            push_u64(buf, b.auction as u64);
            push_u64_field(buf, b"bidder", b.bidder as u64);
            push_u64_field(buf, b"price", b.price as u64);
            push_str_field(buf, b"channel", &b.channel);
            push_str_field(buf, b"url", &b.url);
            push_u64_field(buf, b"date_time", b.date_time);
            push_str_field(buf, b"extra", &b.extra);
        }
    }
    buf.push(b'}');
}

/// Appends `,"name":n`.
#[inline]
fn push_u64_field(buf: &mut Vec<u8>, name: &[u8], n: u64) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(name);
    buf.extend_from_slice(b"\":");
    push_u64(buf, n);
}

/// Appends `,"name":"s"`, escaping `s` for JSON.
#[inline]
fn push_str_field(buf: &mut Vec<u8>, name: &[u8], s: &str) {
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(name);
    buf.extend_from_slice(b"\":\"");
    push_escaped(buf, s);
    buf.push(b'"');
}

/// Appends `s` as the inside of a JSON string. The crate's strings are plain ASCII,
/// so this is a copy; anything else is escaped all the same.
#[inline]
fn push_escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b if b < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            }
            b => buf.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn config(events: u64) -> NexmarkConfig {
        NexmarkConfig {
            events,
            ..NexmarkConfig::default()
        }
    }

    #[test]
    fn pregenerated_events_are_the_same() {
        let cfg = config(3_000);
        let fresh = run(&cfg, 0, 128);
        let pre = NexmarkConfig {
            pregenerate: true,
            ..cfg
        };
        assert_eq!(run(&pre, 0, 100), fresh);
        assert_eq!(run(&pre, 1_234, 7), fresh[1_234..]);
        assert!(run(&pre, 3_000, 10).is_empty());
        let mut source = NexmarkSource::new(&pre, &Resume::new());
        let mut batch = RawBatch::default();
        assert_eq!(source.poll(&mut batch, 0).unwrap(), Poll::Ready);
        assert!(batch.is_empty());
    }

    /// All events (offset, bytes) from `resume`, polling `chunk` at a time.
    fn run(config: &NexmarkConfig, resume: u64, chunk: usize) -> Vec<(u64, Vec<u8>)> {
        let mut source = NexmarkSource::new(config, &Resume::from([(0, resume)]));
        let mut events = Vec::new();
        let mut batch = RawBatch::default();
        loop {
            batch.clear();
            match source.poll(&mut batch, chunk).unwrap() {
                Poll::Ready => {
                    assert!(!batch.is_empty() && batch.len() <= chunk);
                    for r in &batch.records {
                        assert_eq!(r.partition, 0);
                        events.push((r.offset, batch.bytes(r).to_vec()));
                    }
                }
                Poll::Exhausted => break,
                Poll::Idle => panic!("the nexmark source never idles"),
            }
        }
        events
    }

    fn parse(bytes: &[u8]) -> serde_json::Map<String, Value> {
        match serde_json::from_slice(bytes).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn same_config_same_bytes_and_resume_is_a_suffix() {
        let cfg = config(2_000);
        let fresh = run(&cfg, 0, 128);
        assert_eq!(fresh.len(), 2_000);
        assert!(fresh.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
        assert_eq!(run(&cfg, 0, 999), fresh);
        for resume in [1, 50, 1_337, 1_999] {
            assert_eq!(run(&cfg, resume, 77), fresh[resume as usize..], "{resume}");
        }
        assert!(run(&cfg, 2_000, 10).is_empty());
        assert!(run(&cfg, 5_000, 10).is_empty());
        let other_base = NexmarkConfig {
            base_time_ms: 0,
            ..cfg.clone()
        };
        assert_ne!(run(&other_base, 0, 128), fresh);
    }

    #[test]
    fn events_are_flat_json_with_the_documented_fields() {
        let cfg = NexmarkConfig {
            events: 5_000,
            rate: 1_000,
            ..NexmarkConfig::default()
        };
        let (mut people, mut auctions, mut bids) = (0, 0, 0);
        let mut last_time = 0;
        for (offset, bytes) in run(&cfg, 0, 512) {
            let m = parse(&bytes);
            assert_eq!(m["event_id"].as_u64(), Some(offset));
            let time = m["date_time"].as_u64().unwrap();
            // 1,000 events per second of event time, from the base time.
            assert_eq!(time, DEFAULT_BASE_TIME_MS + offset, "{offset}");
            assert!(time >= last_time);
            last_time = time;
            let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let expected: &[&str] = match m["kind"].as_str().unwrap() {
                "person" => {
                    people += 1;
                    &[
                        "city",
                        "credit_card",
                        "date_time",
                        "email_address",
                        "event_id",
                        "extra",
                        "id",
                        "kind",
                        "name",
                        "state",
                    ]
                }
                "auction" => {
                    auctions += 1;
                    assert!(m["expires"].as_u64().unwrap() > time);
                    assert!(m["reserve"].as_u64() >= m["initial_bid"].as_u64());
                    &[
                        "category",
                        "date_time",
                        "description",
                        "event_id",
                        "expires",
                        "extra",
                        "id",
                        "initial_bid",
                        "item_name",
                        "kind",
                        "reserve",
                        "seller",
                    ]
                }
                "bid" => {
                    bids += 1;
                    assert!(m["auction"].as_u64().unwrap() >= 1_000);
                    assert!(m["url"].as_str().unwrap().starts_with("https://"));
                    &[
                        "auction",
                        "bidder",
                        "channel",
                        "date_time",
                        "event_id",
                        "extra",
                        "kind",
                        "price",
                        "url",
                    ]
                }
                other => panic!("unexpected kind {other}"),
            };
            assert_eq!(keys, expected, "{}", String::from_utf8_lossy(&bytes));
        }
        // The standard 1 : 3 : 46 proportions, exactly, per 50 events.
        assert_eq!((people, auctions, bids), (100, 300, 4_600));
    }

    #[test]
    fn strings_are_escaped() {
        let mut buf = Vec::new();
        push_escaped(&mut buf, "plain");
        push_escaped(&mut buf, " \"q\" \\ \n\t\u{1}é");
        let text = format!("\"{}\"", String::from_utf8(buf).unwrap());
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, "plain \"q\" \\ \n\t\u{1}é");
    }
}
