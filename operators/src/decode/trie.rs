//! The wanted field paths as a trie of object keys.
//!
//! Node [`Trie::ROOT`] is the record itself; a node's children are the keys under it
//! that lead to a wanted path, and a node where a path ends holds that path's slot. The
//! scanner and the serde_json walk both descend it key by key, so the keys nobody
//! reads are ruled out with one lookup and skipped.

use crate::fields::FieldRegistry;

/// Nodes with more children of one key length than this look keys up in a hash map
/// instead of scanning the children of that length.
const LINEAR_CHILDREN: usize = 8;

/// The paths of a [`FieldRegistry`] as a trie.
#[derive(Debug, Clone)]
pub(super) struct Trie {
    /// The nodes; a child always has a higher index than its parent.
    nodes: Vec<TrieNode>,
}

/// One key of a path (the root: the record).
#[derive(Debug, Clone, Default)]
pub(super) struct TrieNode {
    /// The slot of the path ending here, if it is a registered path.
    pub(super) slot: Option<usize>,
    /// Child key → node index.
    pub(super) children: Vec<(Box<str>, usize)>,
    /// The same as `children`, grouped by key length (`by_len[n]`: the keys of `n`
    /// bytes): most keys of a record are looked up and not wanted, and the length
    /// alone rules them out without comparing bytes or hashing.
    by_len: Vec<Vec<(Box<str>, usize)>>,
    /// The same as `children`, for nodes with many children of one length.
    index: Option<hashbrown::HashMap<Box<str>, usize, ahash::RandomState>>,
    /// Slots of every strict descendant, reset when this node's key is seen again (a
    /// duplicate key replaces the whole earlier value).
    pub(super) descendant_slots: Vec<usize>,
}

impl Trie {
    /// The root node: the record.
    pub(super) const ROOT: usize = 0;

    /// The trie of every path in `fields` but the Kafka metadata paths. Paths are split
    /// on `.`: `payload.amount` is the key `amount` under the top-level key `payload`.
    pub(super) fn new(fields: &FieldRegistry) -> Self {
        let mut nodes = vec![TrieNode::default()];
        for (slot, path) in fields.paths().iter().enumerate() {
            if crate::fields::KafkaField::parse(path).is_some() {
                continue; // record metadata, not JSON
            }
            let mut cur = 0;
            for segment in path.split('.') {
                let found = nodes[cur].children.iter().find(|(k, _)| **k == *segment);
                cur = match found {
                    Some(&(_, child)) => child,
                    None => {
                        let child = nodes.len();
                        nodes.push(TrieNode::default());
                        nodes[cur].children.push((segment.into(), child));
                        child
                    }
                };
            }
            nodes[cur].slot = Some(slot);
        }
        // Children always have higher indices than their parent, so a reverse pass sees
        // every child's descendants before the parent's.
        for n in (0..nodes.len()).rev() {
            let mut below = Vec::new();
            for &(_, c) in &nodes[n].children {
                below.extend(nodes[c].slot);
                below.extend_from_slice(&nodes[c].descendant_slots);
            }
            let node = &mut nodes[n];
            node.descendant_slots = below;
            for (key, child) in &node.children {
                if node.by_len.len() <= key.len() {
                    node.by_len.resize_with(key.len() + 1, Vec::new);
                }
                node.by_len[key.len()].push((key.clone(), *child));
            }
            if node.by_len.iter().any(|keys| keys.len() > LINEAR_CHILDREN) {
                node.index = Some(node.children.iter().cloned().collect());
            }
        }
        Trie { nodes }
    }

    /// Node `node`.
    #[inline]
    pub(super) fn node(&self, node: usize) -> &TrieNode {
        &self.nodes[node]
    }

    /// The child of node `node` under `key`.
    #[inline]
    pub(super) fn child(&self, node: usize, key: &str) -> Option<usize> {
        let n = &self.nodes[node];
        match &n.index {
            Some(index) => index.get(key).copied(),
            None => n
                .by_len
                .get(key.len())?
                .iter()
                .find(|(k, _)| **k == *key)
                .map(|&(_, c)| c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::decode_ok;
    use crate::value::Value;

    #[test]
    fn many_children_use_the_index() {
        let paths: Vec<String> = (0..40).map(|i| format!("p.k{i}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let raw = format!(
            "{{\"p\":{{{}}}}}",
            (0..40)
                .rev()
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let out = decode_ok(&refs, &raw);
        assert_eq!(out, (0..40).map(Value::Int).collect::<Vec<_>>());
    }

    #[test]
    fn many_children_of_different_lengths_are_found_by_length() {
        // 20 wanted keys of lengths 1..=20 (no index), and unwanted keys of the same
        // lengths, of other lengths and longer than any wanted one.
        let paths: Vec<String> = (1..=20).map(|n| "w".repeat(n)).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let mut entries = Vec::new();
        for n in (1..=25).rev() {
            entries.push(format!("\"{}\":-{n}", "u".repeat(n)));
            if n <= 20 {
                entries.push(format!("\"{}\":{n}", "w".repeat(n)));
            }
        }
        let raw = format!("{{{}}}", entries.join(","));
        let out = decode_ok(&refs, &raw);
        assert_eq!(out, (1..=20).map(Value::Int).collect::<Vec<_>>());
        let mut fields = FieldRegistry::new();
        for p in &refs {
            fields.intern(p);
        }
        assert!(Trie::new(&fields).nodes[0].index.is_none());
    }
}
