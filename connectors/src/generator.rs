//! The built-in synthetic event-sourcing workload.
//!
//! The generator emits compact JSON events, deterministically from a seed: the same
//! [`GeneratorConfig`] always yields byte-identical output, also when resumed at an
//! offset (the skipped events are re-simulated, not formatted).
//!
//! Bank scenario, one event per line-sized record:
//!
//! ```text
//! {"eventId":"evt-7","eventType":"MoneyDeposited","aggregateId":"acc-000042","version":3,"timestamp":1767225600007,"payload":{"amount":250}}
//! ```
//!
//! * `aggregateId`: `acc-` and the key index, zero-padded to 6 digits (more when
//!   `keys` needs more), drawn uniformly among `keys`.
//! * `version`: per key, 1, 2, 3, … (exactly +1 per event of that key).
//! * An account that is not open (never opened, or closed) gets `AccountOpened` with
//!   `{"owner":"<first> <last>"}`; an open one gets `MoneyDeposited` (~52%),
//!   `MoneyWithdrawn` (~48%) with `{"amount":1..=1000}`, or rarely (0.04%)
//!   `AccountClosed` with `{}`.
//! * `timestamp`: epoch milliseconds, 2026-01-01T00:00:00Z plus the offset in ms.

use crate::Result;
use crate::source::{PartitionInfo, Poll, RawBatch, RawRecord, Resume, Source};

/// Which synthetic workload to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Bank accounts: AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed.
    Bank,
}

impl Scenario {
    /// The names accepted in `scenario:`, in the order of the variants.
    pub const NAMES: &'static [&'static str] = &["bank"];

    /// The name used in `scenario:`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Bank => "bank",
        }
    }
}

/// The scenario called `name` in a pipeline's `scenario:` (see [`Scenario::NAMES`]).
pub fn scenario_from_name(name: &str) -> Option<Scenario> {
    match name {
        "bank" => Some(Scenario::Bank),
        _ => None,
    }
}

/// `source: {type: generator, ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// The workload.
    pub scenario: Scenario,
    /// How many events to emit in all.
    pub events: u64,
    /// How many distinct keys (accounts).
    pub keys: u64,
    /// Seed: the same seed gives the same events.
    pub seed: u64,
}

/// 2026-01-01T00:00:00Z in epoch milliseconds: the timestamp of event 0.
const BASE_TIMESTAMP_MS: u64 = 1_767_225_600_000;

/// Per 10 000 events of an open account: how many close it.
const CLOSE_PER_10K: u32 = 4;
/// Per 10 000 events of an open account: below this (and not a close), a deposit.
const DEPOSIT_BELOW: u32 = 5_200;

/// Owners' first names (no JSON escaping needed).
const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Dennis",
    "Frances",
    "John",
    "Radia",
    "Ken",
    "Katherine",
    "Niklaus",
    "Hedy",
    "Tim",
];
/// Owners' last names (no JSON escaping needed).
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Backus",
    "Perlman",
    "Thompson",
    "Johnson",
    "Wirth",
    "Lamarr",
    "Berners-Lee",
];

/// What happened to the account in one event.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Opened { first: usize, last: usize },
    Deposited(u32),
    Withdrawn(u32),
    Closed,
}

/// One simulated event, before formatting.
#[derive(Debug, Clone, Copy)]
struct Event {
    key: u64,
    version: u64,
    kind: Kind,
}

/// Generates JSON events deterministically from a seed. One partition.
#[derive(Debug)]
pub struct GeneratorSource {
    config: GeneratorConfig,
    rng: fastrand::Rng,
    /// Number of distinct keys actually used (`config.keys`, at least 1).
    keys: u64,
    /// Digits in `aggregateId` after `acc-`.
    key_width: usize,
    /// Last version emitted, per key (0: none yet).
    versions: Vec<u64>,
    /// Whether each key's account is open.
    open: Vec<bool>,
    /// Offset of the next event.
    next: u64,
}

impl GeneratorSource {
    /// A generator starting at the offset in `resume` for partition 0.
    ///
    /// `keys: 0` is treated as 1. The events before the resume offset are simulated
    /// (so the state and the random stream match a fresh run) but not formatted.
    pub fn new(config: &GeneratorConfig, resume: &Resume) -> Self {
        let keys = config.keys.max(1);
        let slots = usize::try_from(keys).expect("generator keys must fit in memory");
        let mut source = GeneratorSource {
            config: config.clone(),
            rng: fastrand::Rng::with_seed(config.seed),
            keys,
            key_width: decimal_digits(keys - 1).max(6),
            versions: vec![0; slots],
            open: vec![false; slots],
            next: 0,
        };
        let start = resume.get(&0).copied().unwrap_or(0).min(config.events);
        while source.next < start {
            source.step();
            source.next += 1;
        }
        source
    }

    /// Simulates the next event: draws from the rng and updates the per-key state.
    /// The sequence of rng calls depends only on the state, never on formatting.
    #[inline]
    fn step(&mut self) -> Event {
        let key = self.rng.u64(0..self.keys);
        let idx = key as usize;
        let version = self.versions[idx] + 1;
        self.versions[idx] = version;
        let kind = match self.config.scenario {
            Scenario::Bank => {
                if !self.open[idx] {
                    self.open[idx] = true;
                    let first = self.rng.usize(..FIRST_NAMES.len());
                    let last = self.rng.usize(..LAST_NAMES.len());
                    Kind::Opened { first, last }
                } else {
                    let r = self.rng.u32(0..10_000);
                    if r < CLOSE_PER_10K {
                        self.open[idx] = false;
                        Kind::Closed
                    } else {
                        let amount = self.rng.u32(1..=1000);
                        if r < DEPOSIT_BELOW {
                            Kind::Deposited(amount)
                        } else {
                            Kind::Withdrawn(amount)
                        }
                    }
                }
            }
        };
        Event { key, version, kind }
    }
}

impl Source for GeneratorSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        vec![PartitionInfo::single(0, "generator")]
    }

    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll> {
        let remaining = self.config.events - self.next;
        if remaining == 0 {
            return Ok(Poll::Exhausted);
        }
        let n = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(max_records);
        out.records.reserve(n);
        out.data.reserve(n.saturating_mul(150));
        for _ in 0..n {
            let event = self.step();
            let offset = self.next;
            let start = out.data.len();
            write_event(&mut out.data, offset, self.key_width, &event);
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

/// Appends the JSON of `event` at `offset` to `buf`.
fn write_event(buf: &mut Vec<u8>, offset: u64, key_width: usize, event: &Event) {
    buf.extend_from_slice(b"{\"eventId\":\"evt-");
    push_u64(buf, offset);
    buf.extend_from_slice(match event.kind {
        Kind::Opened { .. } => b"\",\"eventType\":\"AccountOpened\",\"aggregateId\":\"acc-",
        Kind::Deposited(_) => b"\",\"eventType\":\"MoneyDeposited\",\"aggregateId\":\"acc-",
        Kind::Withdrawn(_) => b"\",\"eventType\":\"MoneyWithdrawn\",\"aggregateId\":\"acc-",
        Kind::Closed => b"\",\"eventType\":\"AccountClosed\",\"aggregateId\":\"acc-",
    });
    push_padded(buf, event.key, key_width);
    buf.extend_from_slice(b"\",\"version\":");
    push_u64(buf, event.version);
    buf.extend_from_slice(b",\"timestamp\":");
    push_u64(buf, BASE_TIMESTAMP_MS + offset);
    buf.extend_from_slice(b",\"payload\":{");
    match event.kind {
        Kind::Opened { first, last } => {
            buf.extend_from_slice(b"\"owner\":\"");
            buf.extend_from_slice(FIRST_NAMES[first].as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(LAST_NAMES[last].as_bytes());
            buf.extend_from_slice(b"\"}}");
        }
        Kind::Deposited(amount) | Kind::Withdrawn(amount) => {
            buf.extend_from_slice(b"\"amount\":");
            push_u64(buf, u64::from(amount));
            buf.extend_from_slice(b"}}");
        }
        Kind::Closed => buf.extend_from_slice(b"}}"),
    }
}

/// Number of decimal digits of `n` (1 for 0).
fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Two-digit pairs "00".."99" for fast formatting.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n` in decimal into the end of `tmp`, returning where its digits start.
#[inline]
fn format_u64(tmp: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = tmp.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        tmp[i] = b'0' + n as u8;
    }
    i
}

/// Appends `n` in decimal.
#[inline]
pub(crate) fn push_u64(buf: &mut Vec<u8>, n: u64) {
    let mut tmp = [0u8; 20];
    let start = format_u64(&mut tmp, n);
    buf.extend_from_slice(&tmp[start..]);
}

/// Appends `n` in decimal, left-padded with zeros to `width` digits.
#[inline]
fn push_padded(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut tmp = [0u8; 20];
    let start = format_u64(&mut tmp, n);
    let digits = tmp.len() - start;
    buf.resize(buf.len() + width.saturating_sub(digits), b'0');
    buf.extend_from_slice(&tmp[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::HashMap;

    fn config(events: u64, keys: u64, seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            scenario: Scenario::Bank,
            events,
            keys,
            seed,
        }
    }

    /// All events (offset, bytes) from `resume`, polling `chunk` at a time.
    fn run(config: &GeneratorConfig, resume: u64, chunk: usize) -> Vec<(u64, Vec<u8>)> {
        let mut source = GeneratorSource::new(config, &Resume::from([(0, resume)]));
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
                Poll::Exhausted => {
                    assert!(batch.is_empty());
                    break;
                }
                Poll::Idle => panic!("generator never idles"),
            }
        }
        assert_eq!(source.poll(&mut batch, chunk).unwrap(), Poll::Exhausted);
        events
    }

    fn parse(events: &[(u64, Vec<u8>)]) -> Vec<Value> {
        events
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }

    #[test]
    fn same_seed_same_bytes_different_seed_differs() {
        let a = run(&config(2_000, 50, 7), 0, 100);
        let b = run(&config(2_000, 50, 7), 0, 333);
        let c = run(&config(2_000, 50, 8), 0, 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn exact_event_count_and_offsets() {
        for (events, chunk) in [(0, 10), (1, 10), (999, 7), (1_000, 1_000), (1_000, 5_000)] {
            let out = run(&config(events, 20, 1), 0, chunk);
            assert_eq!(out.len() as u64, events);
            assert!(out.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
        }
    }

    #[test]
    fn zero_max_records_appends_nothing() {
        let mut source = GeneratorSource::new(&config(5, 2, 1), &Resume::new());
        let mut batch = RawBatch::default();
        assert_eq!(source.poll(&mut batch, 0).unwrap(), Poll::Ready);
        assert!(batch.is_empty());
        assert_eq!(run(&config(5, 2, 1), 0, 1).len(), 5);
    }

    #[test]
    fn events_are_json_with_exact_fields() {
        let events = run(&config(5_000, 100, 3), 0, 256);
        for ((offset, bytes), v) in events.iter().zip(parse(&events)) {
            let obj = v.as_object().unwrap();
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                [
                    "aggregateId",
                    "eventId",
                    "eventType",
                    "payload",
                    "timestamp",
                    "version"
                ]
            );
            assert_eq!(v["eventId"], format!("evt-{offset}"));
            assert_eq!(v["timestamp"].as_u64().unwrap(), BASE_TIMESTAMP_MS + offset);
            let id = v["aggregateId"].as_str().unwrap();
            assert!(id.starts_with("acc-") && id.len() == 10, "{id}");
            assert!(id[4..].parse::<u64>().unwrap() < 100);
            assert!(v["version"].as_u64().unwrap() >= 1);
            let payload = v["payload"].as_object().unwrap();
            match v["eventType"].as_str().unwrap() {
                "AccountOpened" => {
                    let owner = payload["owner"].as_str().unwrap();
                    let (first, last) = owner.split_once(' ').unwrap();
                    assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
                    assert_eq!(payload.len(), 1);
                }
                "MoneyDeposited" | "MoneyWithdrawn" => {
                    let amount = payload["amount"].as_u64().unwrap();
                    assert!((1..=1000).contains(&amount));
                    assert_eq!(payload.len(), 1);
                }
                "AccountClosed" => assert!(payload.is_empty()),
                other => panic!("unexpected event type {other}"),
            }
            // Compact: no whitespace outside the owner's name, one line.
            assert!(!bytes.contains(&b' ') || v["eventType"] == "AccountOpened");
            assert!(!bytes.contains(&b'\n'));
        }
    }

    #[test]
    fn versions_and_lifecycle_per_key() {
        let events = parse(&run(&config(200_000, 50, 11), 0, 4096));
        let mut state: HashMap<String, (u64, bool)> = HashMap::new(); // version, open
        let (mut closes, mut reopens) = (0, 0);
        for v in &events {
            let id = v["aggregateId"].as_str().unwrap().to_owned();
            let version = v["version"].as_u64().unwrap();
            let kind = v["eventType"].as_str().unwrap();
            let entry = state.entry(id);
            let existed = matches!(entry, std::collections::hash_map::Entry::Occupied(_));
            let (last, open) = entry.or_insert((0, false));
            assert_eq!(version, *last + 1, "versions increase by exactly 1");
            *last = version;
            if !existed {
                assert_eq!(kind, "AccountOpened", "first event of a key opens it");
            }
            if *open {
                assert_ne!(kind, "AccountOpened", "no re-open of an open account");
            } else {
                assert_eq!(kind, "AccountOpened", "no activity on a closed account");
                if existed {
                    reopens += 1;
                }
            }
            *open = kind != "AccountClosed";
            closes += usize::from(kind == "AccountClosed");
        }
        assert_eq!(state.len(), 50);
        assert!(
            closes > 20 && reopens > 10,
            "closes {closes}, reopens {reopens}"
        );
    }

    #[test]
    fn event_mix_is_roughly_as_documented() {
        let events = parse(&run(&config(100_000, 1_000, 5), 0, 10_000));
        let count = |t: &str| events.iter().filter(|v| v["eventType"] == t).count();
        let (deposits, withdrawals) = (count("MoneyDeposited"), count("MoneyWithdrawn"));
        assert!((45_000..57_000).contains(&deposits), "{deposits}");
        assert!((40_000..52_000).contains(&withdrawals), "{withdrawals}");
        assert!(count("AccountClosed") < 200);
    }

    #[test]
    fn resume_equals_suffix_of_fresh_run() {
        let cfg = config(3_000, 40, 99);
        let fresh = run(&cfg, 0, 128);
        for resume in [1, 137, 1_500, 2_999] {
            assert_eq!(
                run(&cfg, resume, 50),
                fresh[resume as usize..],
                "resume at {resume}"
            );
        }
        assert!(run(&cfg, 3_000, 10).is_empty());
        assert!(run(&cfg, 10_000, 10).is_empty());
    }

    #[test]
    fn wide_keys_are_padded_to_the_needed_width() {
        let events = parse(&run(&config(50, 2_000_000, 1), 0, 50));
        for v in &events {
            let id = v["aggregateId"].as_str().unwrap();
            assert_eq!(id.len(), 4 + 7, "{id}");
        }
        let mut buf = Vec::new();
        push_padded(&mut buf, 42, 6);
        buf.push(b' ');
        push_padded(&mut buf, 1_234_567, 6);
        buf.push(b' ');
        push_u64(&mut buf, 0);
        buf.push(b' ');
        push_u64(&mut buf, u64::MAX);
        assert_eq!(buf, format!("000042 1234567 0 {}", u64::MAX).into_bytes());
        assert_eq!(decimal_digits(999_999), 6);
        assert_eq!(decimal_digits(1_000_000), 7);
    }

    #[test]
    fn single_key_and_zero_keys() {
        let events = parse(&run(&config(10, 0, 1), 0, 10));
        assert_eq!(events.len(), 10);
        assert!(events.iter().all(|v| v["aggregateId"] == "acc-000000"));
        assert_eq!(events[9]["version"], 10);
    }

    #[test]
    fn scenario_names() {
        assert_eq!(scenario_from_name("bank"), Some(Scenario::Bank));
        assert_eq!(scenario_from_name("Bank"), None);
        for name in Scenario::NAMES {
            assert_eq!(scenario_from_name(name).unwrap().name(), *name);
        }
    }
}
