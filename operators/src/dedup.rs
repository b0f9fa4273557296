//! Idempotency without versions: each key remembers the ids of its recent events, and
//! an event whose id is among them is a duplicate.
//!
//! Kept per key, beside the key's state (so it is routed, checkpointed, split and
//! merged with it, and the result does not depend on the number of workers), and
//! bounded per key: the last `count` ids, or the ids within `age` of the key's newest
//! event time, at most `limit`.

use std::collections::VecDeque;
use std::sync::Arc;

/// `dedup: {by: id, window}`: which ids a key remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last this many ids of each key.
    Count(usize),
    /// The ids whose event time is within `ms` of the key's newest, at most `limit`.
    Age {
        /// The window, in milliseconds of event time.
        ms: i64,
        /// The most ids a key keeps, whatever their time.
        limit: usize,
    },
}

impl Window {
    /// The most ids one key keeps.
    pub fn limit(self) -> usize {
        match self {
            Window::Count(n) => n,
            Window::Age { limit, .. } => limit,
        }
    }
}

/// One key's recent event ids, oldest first, each with its event time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentIds {
    /// (id, event time).
    pub ids: VecDeque<(Arc<str>, Option<i64>)>,
    /// Each id's [`id_hash`] (same order): a lookup compares these first, so most
    /// events compare no string at all.
    hashes: VecDeque<u64>,
}

/// FNV-1a of an id: computed in every process the same way (the hashes are not
/// stored, only recomputed).
pub fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl RecentIds {
    /// The ids `ids`, oldest first (a checkpoint's).
    pub fn from_ids(ids: VecDeque<(Arc<str>, Option<i64>)>) -> Self {
        let hashes = ids.iter().map(|(i, _)| id_hash(i)).collect();
        RecentIds { ids, hashes }
    }

    /// Whether `id` (whose [`id_hash`] is `hash`) is remembered.
    pub fn contains(&self, id: &str, hash: u64) -> bool {
        self.hashes
            .iter()
            .zip(&self.ids)
            .any(|(h, (i, _))| *h == hash && &**i == id)
    }

    /// Remembers `id` (of an event at `time`), forgetting what `window` no longer
    /// keeps. Returns the change in the number of ids kept.
    pub fn push(&mut self, id: Arc<str>, time: Option<i64>, window: Window) -> isize {
        let before = self.ids.len() as isize;
        self.hashes.push_back(id_hash(&id));
        self.ids.push_back((id, time));
        if let (Window::Age { ms, .. }, Some(newest)) = (window, self.newest_time()) {
            let cutoff = newest.saturating_sub(ms);
            let keep: Vec<bool> = self
                .ids
                .iter()
                .map(|(_, t)| t.is_none_or(|t| t >= cutoff))
                .collect();
            let mut k = keep.iter();
            self.ids.retain(|_| *k.next().expect("one per id"));
            let mut k = keep.iter();
            self.hashes.retain(|_| *k.next().expect("one per id"));
        }
        let excess = self.ids.len().saturating_sub(window.limit());
        self.ids.drain(..excess);
        self.hashes.drain(..excess);
        self.ids.len() as isize - before
    }

    fn newest_time(&self) -> Option<i64> {
        self.ids.iter().filter_map(|(_, t)| *t).max()
    }

    /// Bytes the ids take (their text), for reporting.
    pub fn bytes(&self) -> usize {
        self.ids.iter().map(|(i, _)| i.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_window_keeps_the_last_ids() {
        let mut r = RecentIds::default();
        for i in 0..5 {
            r.push(format!("e{i}").into(), None, Window::Count(3));
        }
        let has = |id: &str| r.contains(id, id_hash(id));
        assert!(!has("e1") && has("e2") && has("e4"));
        assert_eq!(r.ids.len(), 3);
    }

    #[test]
    fn an_age_window_keeps_recent_ids_up_to_its_limit() {
        let w = Window::Age { ms: 100, limit: 3 };
        let mut r = RecentIds::default();
        r.push("a".into(), Some(1_000), w);
        r.push("b".into(), Some(1_050), w);
        assert_eq!(r.push("c".into(), Some(1_120), w), 0, "a left, c came");
        let has = |r: &RecentIds, id: &str| r.contains(id, id_hash(id));
        assert!(!has(&r, "a") && has(&r, "b") && has(&r, "c"));
        // A late event does not move the window back.
        r.push("d".into(), Some(900), w);
        assert!(!has(&r, "d"));
        r.push("e".into(), Some(1_121), w);
        r.push("f".into(), Some(1_122), w);
        assert_eq!(r.ids.len(), 3, "the limit holds");
        assert_eq!(r.bytes(), 3);
        assert_eq!(
            RecentIds::from_ids(r.ids.clone()),
            r,
            "hashes are recomputed alike"
        );
    }
}
