//! Recorded input, replayed from memory: what `projector bench` feeds a pipeline so
//! that the time measured is the engine's, not the generator's or the disk's.
//!
//! A [`Recording`] holds every record another source produced, in its order. A
//! [`ReplaySource`] hands them out again, either as fast as they are polled or paced
//! at a fixed rate: record `i` becomes available at `t0 + i / rate`, where `t0` is the
//! first poll. The schedule is the reference for freshness (an event "entered" when it
//! was due, so a pipeline that falls behind is charged for the wait: no coordinated
//! omission).

use projector_connectors::{PartitionInfo, Poll, RawBatch, Resume, Source};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Every record of a source, in memory.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// The records and their bytes (metadata too, when the source had any).
    pub batch: RawBatch,
    /// The recorded source's partitions.
    pub partitions: Vec<PartitionInfo>,
}

impl Recording {
    /// Reads `source` to its end, or until `limit` records. `progress` is called
    /// after each poll with the number of records so far.
    ///
    /// Fails on a source error, or when the source would never end (it stays idle
    /// for 30 s: a live topic, stdin).
    pub fn record(
        source: &mut dyn Source,
        limit: Option<u64>,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<Recording> {
        let mut batch = RawBatch::default();
        let mut idle_since: Option<Instant> = None;
        loop {
            let want = limit.map_or(usize::MAX, |l| {
                l.saturating_sub(batch.len() as u64) as usize
            });
            if want == 0 {
                break;
            }
            let before = batch.len();
            match source.poll(&mut batch, want.min(65_536))? {
                Poll::Exhausted => break,
                Poll::Ready if batch.len() > before => idle_since = None,
                Poll::Ready | Poll::Idle => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(30) {
                        return Err(anyhow::anyhow!(
                            "the source gave nothing for 30 s after {} records: it cannot \
                             be recorded (a benchmark needs an input that ends)",
                            batch.len()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            progress(batch.len() as u64);
        }
        Ok(Recording {
            batch,
            partitions: source.partitions(),
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// When a paced replay started: the moment of its first poll.
pub type ReplayStart = Arc<OnceLock<Instant>>;

/// Replays a [`Recording`], at full speed or at a fixed rate.
#[derive(Debug)]
pub struct ReplaySource {
    recording: Arc<Recording>,
    next: usize,
    /// Records per second, if paced.
    rate: Option<f64>,
    start: ReplayStart,
    /// Per partition, where to resume (records before it are skipped).
    resume: Resume,
}

impl ReplaySource {
    /// A replay of `recording` from its first record (per partition, from `resume`),
    /// unpaced (`rate: None`) or at `rate` records per second from the first poll,
    /// which is stored in `start`.
    pub fn new(
        recording: Arc<Recording>,
        resume: &Resume,
        rate: Option<f64>,
        start: ReplayStart,
    ) -> Self {
        ReplaySource {
            recording,
            next: 0,
            rate: rate.filter(|r| *r > 0.0),
            start,
            resume: resume.clone(),
        }
    }

    /// The moment record `i` is due in a paced replay started at `t0`.
    pub fn due(t0: Instant, i: usize, rate: f64) -> Instant {
        t0 + Duration::from_secs_f64(i as f64 / rate)
    }
}

impl Source for ReplaySource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        self.recording.partitions.clone()
    }

    fn poll(
        &mut self,
        out: &mut RawBatch,
        max_records: usize,
    ) -> projector_connectors::Result<Poll> {
        let all = &self.recording.batch;
        if self.next >= all.len() {
            return Ok(Poll::Exhausted);
        }
        let mut end = all.len().min(self.next.saturating_add(max_records));
        if let Some(rate) = self.rate {
            let t0 = *self.start.get_or_init(Instant::now);
            let due = (t0.elapsed().as_secs_f64() * rate) as usize + 1;
            end = end.min(due);
            if end <= self.next {
                return Ok(Poll::Idle);
            }
        }
        let mut oversize = 0;
        for i in self.next..end {
            let rec = &all.records[i];
            if rec.offset < self.resume.get(&rec.partition).copied().unwrap_or(0) {
                continue;
            }
            out.push(rec.partition, rec.offset, all.bytes(rec));
            if let Some(o) = all.oversize_of(i, &mut oversize) {
                out.oversize.push(projector_connectors::source::Oversize {
                    record: out.records.len() - 1,
                    ..*o
                });
            }
            if let Some(meta) = all.meta.get(i) {
                let headers = all.headers[meta.headers.0..meta.headers.1].iter().map(|h| {
                    let name = std::str::from_utf8(&all.data[h.name.0..h.name.1]).unwrap_or("");
                    (name, h.value.map(|(a, b)| &all.data[a..b]))
                });
                out.push_meta(all.key(i), meta.timestamp, headers);
            }
        }
        self.next = end;
        Ok(Poll::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use projector_connectors::generator::{GeneratorConfig, GeneratorSource, Scenario};

    fn recording(events: u64) -> Arc<Recording> {
        let config = GeneratorConfig {
            scenario: Scenario::Bank,
            events,
            keys: 10,
            seed: 7,
        };
        let mut source = GeneratorSource::new(&config, &Resume::new());
        let mut seen = 0;
        let rec = Recording::record(&mut source, None, |n| seen = n).unwrap();
        assert_eq!(seen, events);
        Arc::new(rec)
    }

    fn drain(source: &mut ReplaySource) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut batch = RawBatch::default();
        loop {
            batch.clear();
            match source.poll(&mut batch, 7).unwrap() {
                Poll::Exhausted => return out,
                Poll::Idle => std::thread::sleep(Duration::from_millis(1)),
                Poll::Ready => out.extend(
                    batch
                        .records
                        .iter()
                        .map(|r| (r.offset, batch.bytes(r).to_vec())),
                ),
            }
        }
    }

    #[test]
    fn a_replay_gives_back_what_the_source_gave() {
        let rec = recording(100);
        let mut fresh = GeneratorSource::new(
            &GeneratorConfig {
                scenario: Scenario::Bank,
                events: 100,
                keys: 10,
                seed: 7,
            },
            &Resume::new(),
        );
        let mut expected = RawBatch::default();
        while fresh.poll(&mut expected, 1000).unwrap() != Poll::Exhausted {}
        let mut replay = ReplaySource::new(rec, &Resume::new(), None, ReplayStart::default());
        let got = drain(&mut replay);
        assert_eq!(got.len(), 100);
        for (i, (offset, bytes)) in got.iter().enumerate() {
            assert_eq!(*offset, i as u64);
            assert_eq!(bytes, expected.bytes(&expected.records[i]));
        }
    }

    #[test]
    fn a_replay_resumes_and_a_limit_stops_the_recording() {
        let rec = recording(50);
        let resume = Resume::from([(0, 40)]);
        let mut replay = ReplaySource::new(rec, &resume, None, ReplayStart::default());
        let got = drain(&mut replay);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (40..50).collect::<Vec<_>>()
        );
        let config = GeneratorConfig {
            scenario: Scenario::Bank,
            events: 1000,
            keys: 10,
            seed: 7,
        };
        let mut source = GeneratorSource::new(&config, &Resume::new());
        let rec = Recording::record(&mut source, Some(123), |_| {}).unwrap();
        assert_eq!(rec.len(), 123);
    }

    #[test]
    fn a_paced_replay_keeps_to_its_schedule() {
        let rec = recording(200);
        let start = ReplayStart::default();
        // 2,000 records/s: 200 records take about 100 ms, never less.
        let mut replay = ReplaySource::new(rec, &Resume::new(), Some(2000.0), start.clone());
        let t = Instant::now();
        let got = drain(&mut replay);
        assert_eq!(got.len(), 200);
        let t0 = *start.get().expect("set at the first poll");
        assert!(t0 >= t);
        assert!(
            t0.elapsed() >= Duration::from_millis(99),
            "ran ahead of its schedule: {:?}",
            t0.elapsed()
        );
    }
}
