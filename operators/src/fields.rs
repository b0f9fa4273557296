//! Field paths: the dotted paths into a JSON event that a pipeline reads.
//!
//! Every path any expression or the envelope mentions is interned once into a
//! [`FieldRegistry`]; the decoder fills one slot per path, and expressions read slots by
//! [`FieldId`]. So a decoded event is a flat `&[Value]`, not a tree.

use std::collections::HashMap;

/// Index of an interned field path: the slot the decoder writes it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldId(pub u32);

impl FieldId {
    /// The slot index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Interns dotted field paths (`payload.amount`) into slot numbers.
#[derive(Debug, Clone, Default)]
pub struct FieldRegistry {
    paths: Vec<String>,
    index: HashMap<String, FieldId>,
}

impl FieldRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the id of `path`, adding it if it is new.
    pub fn intern(&mut self, path: &str) -> FieldId {
        if let Some(id) = self.index.get(path) {
            return *id;
        }
        let id = FieldId(self.paths.len() as u32);
        self.paths.push(path.to_string());
        self.index.insert(path.to_string(), id);
        id
    }

    /// The id of `path`, if it was interned.
    pub fn get(&self, path: &str) -> Option<FieldId> {
        self.index.get(path).copied()
    }

    /// All paths, in slot order.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The path of a slot.
    pub fn path(&self, id: FieldId) -> &str {
        &self.paths[id.index()]
    }

    /// Number of slots a decoded event has.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True when no path was interned.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}
