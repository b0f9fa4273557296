//! State units: the source partitions whose events share one state.
//!
//! ```text
//!  source partitions (offsets)      units (state, checkpoints, ownership, queries)
//!  orders/0   ─┐
//!  payments/0 ─┴──────────────▶     orders+payments/0
//!  orders/1   ─┐
//!  payments/1 ─┴──────────────▶     orders+payments/1
//!  bank/0     ────────────────▶     bank/0            (one topic: unit = partition)
//! ```
//!
//! Offsets are per source partition; everything keyed state is per unit: the workers'
//! `PartitionState`s, checkpoints (one per unit, recording every member's offset),
//! ownership (a unit is restored and revoked whole), published chunks and the
//! cluster's roster. With one topic a unit is its partition under the same name, so
//! nothing about single-topic pipelines changes.

use projector_connectors::PartitionInfo;

/// The source's partitions grouped into units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Units {
    /// Per unit: its name.
    names: Vec<String>,
    /// Per unit: its source partitions, in stream order.
    members: Vec<Vec<u32>>,
    /// Per source partition: its unit.
    of: Vec<u32>,
    /// Per source partition: its stream (topic) within the unit.
    streams: Vec<u16>,
    /// Per source partition: its name.
    partition_names: Vec<String>,
}

impl Units {
    /// The units of `partitions` (ids `0..n`, units `0..m`, as sources number them).
    pub(crate) fn new(partitions: &[PartitionInfo]) -> Self {
        let count = partitions
            .iter()
            .map(|p| p.unit as usize + 1)
            .max()
            .unwrap_or(0);
        let mut names = vec![String::new(); count];
        let mut members = vec![Vec::new(); count];
        for p in partitions {
            names[p.unit as usize].clone_from(&p.unit_name);
            members[p.unit as usize].push(p.id);
        }
        for m in &mut members {
            m.sort_by_key(|&id| partitions[id as usize].stream);
        }
        Units {
            names,
            members,
            of: partitions.iter().map(|p| p.unit).collect(),
            streams: partitions.iter().map(|p| p.stream).collect(),
            partition_names: partitions.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// Every unit's name, by id.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Unit `unit`'s name.
    pub(crate) fn name(&self, unit: u32) -> &str {
        &self.names[unit as usize]
    }

    /// Unit `unit`'s source partitions.
    pub(crate) fn members(&self, unit: u32) -> &[u32] {
        &self.members[unit as usize]
    }

    /// The unit of source partition `partition`.
    pub(crate) fn of(&self, partition: u32) -> u32 {
        self.of[partition as usize]
    }

    /// Which stream of its unit source partition `partition` is.
    pub(crate) fn stream(&self, partition: u32) -> u16 {
        self.streams[partition as usize]
    }

    /// Source partition `partition`'s name.
    pub(crate) fn partition_name(&self, partition: u32) -> &str {
        &self.partition_names[partition as usize]
    }

    /// Every source partition's name, by id.
    pub(crate) fn partition_names(&self) -> &[String] {
        &self.partition_names
    }

    /// The source partition of unit `unit` named `name`.
    pub(crate) fn member_named(&self, unit: u32, name: &str) -> Option<u32> {
        self.members(unit)
            .iter()
            .copied()
            .find(|&p| self.partition_name(p) == name)
    }

    /// The units `partitions` make up, in order; an error names the partitions a unit
    /// misses when `partitions` holds only some of its members (a consumer group
    /// that splits a unit between instances).
    pub(crate) fn whole(&self, partitions: &[u32]) -> Result<Vec<u32>, String> {
        let mut units: Vec<u32> = partitions.iter().map(|&p| self.of(p)).collect();
        units.sort_unstable();
        units.dedup();
        for &u in &units {
            let missing: Vec<&str> = self
                .members(u)
                .iter()
                .filter(|p| !partitions.contains(p))
                .map(|&p| self.partition_name(p))
                .collect();
            if !missing.is_empty() {
                let given: Vec<&str> = self
                    .members(u)
                    .iter()
                    .filter(|p| partitions.contains(p))
                    .map(|&p| self.partition_name(p))
                    .collect();
                return Err(format!(
                    "{} came without {}: the partitions of one unit ({}) hold one state and \
                     must move together (keep partition.assignment.strategy 'range', and the \
                     topics co-partitioned)",
                    given.join(", "),
                    missing.join(", "),
                    self.name(u)
                ));
            }
        }
        Ok(units)
    }

    /// Every source partition of `units`.
    pub(crate) fn partitions_of(&self, units: &[u32]) -> Vec<u32> {
        units
            .iter()
            .flat_map(|&u| self.members(u).iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_topics() -> Units {
        let p = |id, name: &str, unit, stream| PartitionInfo {
            id,
            name: name.into(),
            unit,
            unit_name: format!("orders+payments/{unit}"),
            stream,
        };
        Units::new(&[
            p(0, "orders/0", 0, 0),
            p(1, "orders/1", 1, 0),
            p(2, "payments/0", 0, 1),
            p(3, "payments/1", 1, 1),
        ])
    }

    #[test]
    fn one_topic_units_are_its_partitions() {
        let u = Units::new(&[
            PartitionInfo::single(0, "bank/0"),
            PartitionInfo::single(1, "bank/1"),
        ]);
        assert_eq!(u.names(), ["bank/0", "bank/1"]);
        assert_eq!(u.members(1), [1]);
        assert_eq!(u.whole(&[1]), Ok(vec![1]));
        assert_eq!(u.of(1), 1);
    }

    #[test]
    fn partition_n_of_each_topic_makes_unit_n() {
        let u = two_topics();
        assert_eq!(u.names(), ["orders+payments/0", "orders+payments/1"]);
        assert_eq!(u.members(1), [1, 3]);
        assert_eq!((u.of(3), u.stream(3), u.stream(1)), (1, 1, 0));
        assert_eq!(u.whole(&[3, 1, 0, 2]), Ok(vec![0, 1]));
        assert_eq!(u.partitions_of(&[1]), [1, 3]);
        assert_eq!(u.member_named(1, "payments/1"), Some(3));
        assert_eq!(u.member_named(1, "payments/0"), None);
    }

    #[test]
    fn half_a_unit_is_an_error_naming_what_is_missing() {
        let e = two_topics().whole(&[0, 2, 1]).unwrap_err();
        assert!(e.starts_with("orders/1 came without payments/1"), "{e}");
        assert!(e.contains("orders+payments/1"), "{e}");
    }
}
