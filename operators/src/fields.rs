//! Field paths: the dotted paths into a JSON event that a pipeline reads.
//!
//! Every path any expression or the envelope mentions is interned once into a
//! [`FieldRegistry`]; the decoder fills one slot per path, and expressions read slots by
//! [`FieldId`]. So a decoded event is a flat `&[Value]`, not a tree.

use crate::value::ColumnType;
use std::collections::HashMap;

/// Paths that start with this name record metadata, not the event's JSON: `$kafka.key`,
/// `$kafka.timestamp`, `$kafka.topic`, `$kafka.partition`, `$kafka.offset` and
/// `$kafka.headers.NAME`. The decoder leaves their slots alone; the engine fills them
/// from the record.
pub(crate) const KAFKA_ROOT: &str = "$kafka";

/// A piece of Kafka record metadata a field path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaField {
    /// The message key (a string when it is UTF-8, else null).
    Key,
    /// The message timestamp, milliseconds since the Unix epoch.
    Timestamp,
    /// The topic.
    Topic,
    /// The partition number.
    Partition,
    /// The offset in the partition.
    Offset,
    /// A header's value (a string when it is UTF-8, else null; null when absent).
    Header(String),
}

impl KafkaField {
    /// What `path` names: `None` when it is not under `$kafka`, an error naming the
    /// fields there are when it is but names none of them.
    pub fn parse(path: &str) -> Option<Result<KafkaField, String>> {
        let rest = path.strip_prefix(KAFKA_ROOT)?;
        let Some(rest) = rest.strip_prefix('.') else {
            return rest.is_empty().then(|| Err(Self::unknown(path)));
        };
        Some(match rest {
            "key" => Ok(KafkaField::Key),
            "timestamp" => Ok(KafkaField::Timestamp),
            "topic" => Ok(KafkaField::Topic),
            "partition" => Ok(KafkaField::Partition),
            "offset" => Ok(KafkaField::Offset),
            _ => match rest.strip_prefix("headers.") {
                Some(name) if !name.is_empty() => Ok(KafkaField::Header(name.to_string())),
                _ => Err(Self::unknown(path)),
            },
        })
    }

    /// The error for a `$kafka` path that names no field.
    pub(crate) fn unknown(path: &str) -> String {
        format!(
            "unknown Kafka field '{path}': use $kafka.key, $kafka.timestamp, $kafka.topic, \
             $kafka.partition, $kafka.offset or $kafka.headers.NAME (quote a name that is \
             not a plain identifier: $kafka.headers.\"trace-id\")"
        )
    }
}

/// Index of an interned field path: the slot the decoder writes it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldId(pub u32);

impl FieldId {
    /// The slot index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Interns dotted field paths (`payload.amount`) into slot numbers, and keeps the types
/// a pipeline declares for event fields (`fields:`).
#[derive(Debug, Clone, Default)]
pub struct FieldRegistry {
    paths: Vec<String>,
    index: HashMap<String, FieldId>,
    /// Declared types by path, whether or not the path is read.
    declared: HashMap<String, ColumnType>,
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

    /// The slots of Kafka metadata paths, with what each names (an unknown `$kafka`
    /// path is left out: the config refuses it).
    pub fn kafka_fields(&self) -> Vec<(usize, KafkaField)> {
        self.paths
            .iter()
            .enumerate()
            .filter_map(|(slot, p)| Some((slot, KafkaField::parse(p)?.ok()?)))
            .collect()
    }

    /// Declares that the event field at `path` holds values of type `ty`: decoding
    /// converts it to that type (or the record is bad), and aggregates over it infer
    /// their column types from it.
    pub fn declare(&mut self, path: &str, ty: ColumnType) {
        self.declared.insert(path.to_string(), ty);
    }

    /// Declares `path`'s type unless it was declared already (a `fields:` block wins
    /// over the types a schema file gives).
    pub fn declare_default(&mut self, path: &str, ty: ColumnType) {
        self.declared.entry(path.to_string()).or_insert(ty);
    }

    /// The declared type of a slot's field, if any.
    pub fn declared_type(&self, id: FieldId) -> Option<ColumnType> {
        self.declared.get(self.path(id)).copied()
    }

    /// The slots whose fields have a declared type, with it, in slot order.
    pub fn declared_slots(&self) -> Vec<(usize, ColumnType)> {
        (0..self.paths.len())
            .filter_map(|i| Some((i, self.declared_type(FieldId(i as u32))?)))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_paths() {
        let parse = |p| KafkaField::parse(p);
        assert_eq!(parse("payload.amount"), None);
        assert_eq!(parse("$kafkaesque"), None);
        assert_eq!(parse("$kafka.key"), Some(Ok(KafkaField::Key)));
        assert_eq!(parse("$kafka.offset"), Some(Ok(KafkaField::Offset)));
        assert_eq!(
            parse("$kafka.headers.trace-id.x"),
            Some(Ok(KafkaField::Header("trace-id.x".into())))
        );
        for bad in [
            "$kafka",
            "$kafka.value",
            "$kafka.headers",
            "$kafka.headers.",
        ] {
            let e = parse(bad).expect("a kafka path").expect_err(bad);
            assert!(e.contains(bad) && e.contains("$kafka.headers.NAME"), "{e}");
        }
    }
}
