//! The rows of a fold view: a keyed slab that remembers which chunks changed.
//!
//! Rows live in slots of a `Vec`, found by key through a hash index that holds only
//! slot numbers (4 bytes per entry; the key is read from the slot). Slots are grouped
//! in chunks of [`CHUNK_ROWS`]; every write marks its chunk dirty. The engine keeps one
//! Arrow batch per chunk and, at each epoch, rebuilds only the dirty ones, so the cost
//! of a snapshot follows what changed, not how many rows the view holds. A deleted
//! row's slot is reused by the next new key, which keeps chunks dense.

use crate::value::Value;
use hashbrown::HashTable;
use std::sync::Arc;

/// Rows per chunk: the unit of snapshot rebuilds.
pub const CHUNK_ROWS: usize = 4096;

/// One row: its key and its column values (in [`crate::fold::FoldSpec::columns`] order).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The key.
    pub key: Arc<str>,
    /// The column values.
    pub values: Box<[Value]>,
}

/// State of one fold view for one source partition: a row of column values per key.
#[derive(Debug, Clone, Default)]
pub struct FoldState {
    /// The slot of every key, hashed by the key in the slot (not stored twice).
    index: HashTable<u32>,
    hasher: ahash::RandomState,
    slots: Vec<Option<Row>>,
    free: Vec<u32>,
    /// Per chunk: changed since the last [`FoldState::take_dirty`].
    dirty: Vec<bool>,
}

impl FoldState {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Makes room for `additional` more rows without growing (restoring a checkpoint).
    pub fn reserve(&mut self, additional: usize) {
        let FoldState {
            index,
            hasher,
            slots,
            ..
        } = self;
        index.reserve(additional, |&id| hasher.hash_one(slot_key(slots, id)));
        slots.reserve(additional);
    }

    /// The row of `key`.
    pub fn get(&self, key: &str) -> Option<&[Value]> {
        let slot = self.find(key)?;
        self.slots[slot].as_ref().map(|r| &r.values[..])
    }

    /// The row of `key`, to change in place (its chunk becomes dirty).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut [Value]> {
        let slot = self.find(key)?;
        self.mark(slot);
        self.slots[slot].as_mut().map(|r| &mut r.values[..])
    }

    /// Sets the row of `key` (replacing any), and returns it for changes.
    pub fn insert(&mut self, key: Arc<str>, values: Box<[Value]>) -> &mut [Value] {
        let slot = match self.find(&key) {
            Some(s) => s,
            None => {
                let s = match self.free.pop() {
                    Some(s) => s as usize,
                    None => {
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                let id = u32::try_from(s).expect("fewer than 2^32 rows per view and partition");
                let FoldState {
                    index,
                    hasher,
                    slots,
                    ..
                } = self;
                index.insert_unique(hasher.hash_one(&*key), id, |&other| {
                    hasher.hash_one(slot_key(slots, other))
                });
                s
            }
        };
        self.mark(slot);
        &mut self.slots[slot].insert(Row { key, values }).values
    }

    /// Removes the row of `key`, returning its values.
    pub fn remove(&mut self, key: &str) -> Option<Box<[Value]>> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        let (slot, _) = self
            .index
            .find_entry(hash, |&id| slot_key(slots, id) == key)
            .ok()?
            .remove();
        let slot = slot as usize;
        self.mark(slot);
        self.free.push(slot as u32);
        self.slots[slot].take().map(|r| r.values)
    }

    /// The slot holding the row of `key`: found once, then used with
    /// [`FoldState::row`], [`FoldState::row_mut`] or [`FoldState::remove_slot`] while
    /// nothing else changes the state (one hash lookup per event instead of two).
    pub(crate) fn slot_of(&self, key: &str) -> Option<usize> {
        self.find(key)
    }

    /// The row in `slot` (from [`FoldState::slot_of`]).
    pub(crate) fn row(&self, slot: usize) -> &[Value] {
        self.slots[slot].as_ref().map_or(&[], |r| &r.values[..])
    }

    /// The row in `slot`, to change in place (its chunk becomes dirty).
    pub(crate) fn row_mut(&mut self, slot: usize) -> &mut [Value] {
        self.mark(slot);
        self.slots[slot]
            .as_mut()
            .map_or(&mut [], |r| &mut r.values[..])
    }

    /// Removes the row in `slot`, returning its values.
    pub(crate) fn remove_slot(&mut self, slot: usize) -> Option<Box<[Value]>> {
        let key = self.slots.get(slot)?.as_ref()?.key.clone();
        self.remove(&key)
    }

    /// The slot of `key`.
    fn find(&self, key: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&id| slot_key(&self.slots, id) == key)
            .map(|&id| id as usize)
    }

    /// Every row, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Row> {
        self.slots.iter().flatten()
    }

    /// Every row, by value.
    pub(crate) fn into_rows(self) -> impl Iterator<Item = Row> {
        self.slots.into_iter().flatten()
    }

    /// Number of chunks (some may be empty).
    pub fn chunks(&self) -> usize {
        self.slots.len().div_ceil(CHUNK_ROWS)
    }

    /// The rows of chunk `c`, in slot order.
    pub fn chunk(&self, c: usize) -> impl Iterator<Item = &Row> + Clone {
        let start = (c * CHUNK_ROWS).min(self.slots.len());
        let end = (start + CHUNK_ROWS).min(self.slots.len());
        self.slots[start..end].iter().flatten()
    }

    /// The chunks changed since the last call, in order; clears the marks.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let out = self
            .dirty
            .iter()
            .enumerate()
            .filter_map(|(c, d)| d.then_some(c))
            .collect();
        self.dirty.iter_mut().for_each(|d| *d = false);
        out
    }

    fn mark(&mut self, slot: usize) {
        let c = slot / CHUNK_ROWS;
        if c >= self.dirty.len() {
            self.dirty.resize(c + 1, false);
        }
        self.dirty[c] = true;
    }
}

/// The key of an occupied slot (every slot in the index is).
fn slot_key(slots: &[Option<Row>], id: u32) -> &str {
    slots[id as usize].as_ref().map_or("", |r| &r.key)
}

impl FromIterator<(Arc<str>, Box<[Value]>)> for FoldState {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, Box<[Value]>)>>(iter: I) -> Self {
        let mut s = FoldState::default();
        for (k, v) in iter {
            s.insert(k, v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: i64) -> Box<[Value]> {
        vec![Value::Int(v)].into_boxed_slice()
    }

    #[test]
    fn writes_mark_their_chunk_and_slots_are_reused() {
        let mut s = FoldState::default();
        for i in 0..(CHUNK_ROWS as i64 * 2 + 1) {
            s.insert(Arc::from(format!("k{i}")), row(i));
        }
        assert_eq!(s.len(), CHUNK_ROWS * 2 + 1);
        assert_eq!(s.chunks(), 3);
        assert_eq!(s.take_dirty(), vec![0, 1, 2]);
        assert!(s.take_dirty().is_empty(), "marks are cleared");

        s.get_mut(&format!("k{}", CHUNK_ROWS + 5)).unwrap()[0] = Value::Int(-1);
        assert_eq!(s.take_dirty(), vec![1]);
        assert_eq!(s.get(&format!("k{}", CHUNK_ROWS + 5)), Some(&row(-1)[..]));
        assert!(s.get("nope").is_none());

        assert_eq!(s.remove("k3"), Some(row(3)));
        assert!(s.remove("k3").is_none());
        assert_eq!(s.take_dirty(), vec![0]);
        assert_eq!(s.chunk(0).count(), CHUNK_ROWS - 1);
        // The freed slot goes to the next new key: chunk 0 again, the slab does not grow.
        s.insert(Arc::from("new"), row(9));
        assert_eq!(s.take_dirty(), vec![0]);
        assert_eq!(s.chunks(), 3);
        assert_eq!(s.chunk(0).count(), CHUNK_ROWS);
        // Re-inserting an existing key replaces its row in place.
        s.insert(Arc::from("new"), row(10));
        assert_eq!(s.get("new"), Some(&row(10)[..]));
        assert_eq!(s.len(), CHUNK_ROWS * 2 + 1);
        let mut keys: Vec<String> = s.iter().map(|r| r.key.to_string()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), s.len());
    }
}
