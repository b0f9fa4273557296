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

/// One key's recent event ids, oldest first: (id, event time, [`id_hash`] of the id).
/// A lookup compares the hashes first, so most events compare no string at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentIds {
    entries: VecDeque<(Arc<str>, Option<i64>, u64)>,
}

/// FNV-1a of an id: computed in every process the same way (the hashes are not
/// stored, only recomputed).
pub fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl RecentIds {
    /// The ids `ids` (with their event times), oldest first (a checkpoint's).
    pub fn from_ids(ids: impl IntoIterator<Item = (Arc<str>, Option<i64>)>) -> Self {
        let entries = ids
            .into_iter()
            .map(|(id, time)| {
                let hash = id_hash(&id);
                (id, time, hash)
            })
            .collect();
        RecentIds { entries }
    }

    /// The ids with their event times, oldest first.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = (Arc<str>, Option<i64>)> + '_ {
        self.entries.iter().map(|(id, time, _)| (id.clone(), *time))
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` (whose [`id_hash`] is `hash`) is remembered.
    pub fn contains(&self, id: &str, hash: u64) -> bool {
        self.entries
            .iter()
            .any(|(i, _, h)| *h == hash && &**i == id)
    }

    /// Remembers `id` (of an event at `time`), forgetting what `window` no longer
    /// keeps. Returns the change in the number of ids kept.
    pub fn push(&mut self, id: Arc<str>, time: Option<i64>, window: Window) -> isize {
        let before = self.entries.len() as isize;
        let hash = id_hash(&id);
        self.entries.push_back((id, time, hash));
        if let (Window::Age { ms, .. }, Some(newest)) = (window, self.newest_time()) {
            let cutoff = newest.saturating_sub(ms);
            self.entries
                .retain(|(_, t, _)| t.is_none_or(|t| t >= cutoff));
        }
        let excess = self.entries.len().saturating_sub(window.limit());
        self.entries.drain(..excess);
        self.entries.len() as isize - before
    }

    fn newest_time(&self) -> Option<i64> {
        self.entries.iter().filter_map(|(_, t, _)| *t).max()
    }

    /// Bytes the ids take (their text), for reporting.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(i, ..)| i.len()).sum()
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
        assert_eq!(r.len(), 3);
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
        assert_eq!(r.len(), 3, "the limit holds");
        assert_eq!(r.bytes(), 3);
        assert_eq!(
            RecentIds::from_ids(r.ids()),
            r,
            "hashes are recomputed alike"
        );
    }
}
