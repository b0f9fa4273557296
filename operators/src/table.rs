//! Table views: append-only, one row per matching event, optionally retained by row
//! count and by event-time age.
//!
//! A table's rows are kept per source partition in arrival order, which within a
//! partition is offset order. Retention is defined per source partition: the newest
//! `rows` rows by offset, and the rows whose event time is at most `age` older than the
//! newest event time of any row the table took in from the partition (rows dropped
//! since included; events its filter skipped do not count). A worker holds only its share of a
//! partition, so it trims its own rows by the same rules (it never drops a row the
//! partition-wide rule would keep), and the published view applies the partition-wide
//! rule exactly across workers (see the engine's `view` module). So the table does not
//! depend on the number of workers, nor on where a restart happened.

use crate::expr::Expr;
use crate::value::{ColumnType, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// One column of a table view.
#[derive(Debug, Clone, PartialEq)]
pub struct TableColumn {
    /// Column name.
    pub name: String,
    /// The value of the column for an event.
    pub expr: Expr,
    /// Column type (the value is converted to it; a value that does not convert makes
    /// the event a bad record).
    pub ty: ColumnType,
}

/// How many rows a table keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retain {
    /// Only the newest this many rows taken in from a source partition, by offset.
    pub rows: Option<u64>,
    /// Only rows whose event time is at most this many milliseconds older than the
    /// newest event time of a row taken in from their source partition. Rows without
    /// an event time are not dropped by age.
    pub age_ms: Option<i64>,
}

impl Retain {
    /// True when rows are ever dropped.
    pub fn is_bounded(&self) -> bool {
        self.rows.is_some() || self.age_ms.is_some()
    }
}

/// A compiled table view.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// Only events for which this is true become rows (false and null skip).
    pub filter: Option<Expr>,
    /// The columns, in table order.
    pub columns: Vec<TableColumn>,
    /// Retention.
    pub retain: Retain,
}

/// One row of a table, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// The source offset of the event (its order within the partition).
    pub offset: u64,
    /// The event time (envelope `timestamp`), epoch ms, if the event has one.
    pub time: Option<i64>,
    /// Column values, in [`TableSpec::columns`] order, converted to their types.
    pub values: Box<[Value]>,
}

/// Source of [`TableState::generation`]s: unique within the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// State of one table view for one source partition (this worker's share of it).
#[derive(Debug)]
pub struct TableState {
    /// The rows, oldest (lowest offset) first.
    pub rows: VecDeque<TableRow>,
    /// The newest event time of a row appended to this state, dropped rows included.
    pub max_time: Option<i64>,
    /// Rows ever appended to this state: row `rows[i]` is number
    /// `appended - rows.len() + i`. With [`TableState::generation`], lets a snapshot
    /// builder reuse what it built from the same rows before.
    appended: u64,
    /// Identifies this state object: a new one (also a clone, a restored or a merged
    /// one) gets a new generation, so row numbers are only compared within one.
    generation: u64,
}

impl Default for TableState {
    fn default() -> Self {
        TableState {
            rows: VecDeque::new(),
            max_time: None,
            appended: 0,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Clone for TableState {
    fn clone(&self) -> Self {
        TableState::from_rows(self.rows.clone(), self.max_time)
    }
}

impl TableState {
    /// A state holding `rows` (in offset order), under a new generation.
    pub(crate) fn from_rows(rows: VecDeque<TableRow>, max_time: Option<i64>) -> Self {
        TableState {
            appended: rows.len() as u64,
            rows,
            max_time,
            ..TableState::default()
        }
    }

    /// Identifies this state object (see the field's docs).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The number of the first row in [`TableState::rows`] (rows are numbered in the
    /// order they were appended to this state).
    pub fn first_number(&self) -> u64 {
        self.appended - self.rows.len() as u64
    }

    /// The number the next appended row will get.
    pub fn next_number(&self) -> u64 {
        self.appended
    }

    /// Appends a row and drops what `retain` no longer keeps.
    pub fn push(&mut self, row: TableRow, retain: &Retain) {
        if let Some(t) = row.time {
            self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
        }
        self.rows.push_back(row);
        self.appended += 1;
        self.trim(retain);
    }

    /// Drops the oldest rows beyond `retain.rows`. Without `rows`, also drops old rows
    /// from the front while they are older than `retain.age_ms` (a late row behind a
    /// newer front row waits until the front goes; the published view filters it out
    /// meanwhile). With `rows`, age is only applied when publishing: a row dropped for
    /// its age here would no longer count among the newest rows of its partition, and
    /// `rows` bounds the memory anyway.
    pub fn trim(&mut self, retain: &Retain) {
        if let Some(max) = retain.rows {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if self.rows.len() > max {
                self.rows.drain(..self.rows.len() - max);
            }
            return;
        }
        if let (Some(age), Some(newest)) = (retain.age_ms, self.max_time) {
            let cutoff = newest.saturating_sub(age);
            while self
                .rows
                .front()
                .is_some_and(|r| r.time.is_some_and(|t| t < cutoff))
            {
                self.rows.pop_front();
            }
        }
    }

    /// Takes another worker's share of the same partition: rows are merged in offset
    /// order, the newest time is the newer one. The result has a new generation.
    pub fn merge(&mut self, other: TableState) {
        let mut rows: Vec<TableRow> = std::mem::take(&mut self.rows)
            .into_iter()
            .chain(other.rows)
            .collect();
        rows.sort_by_key(|r| r.offset);
        let max_time = match (self.max_time, other.max_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        *self = TableState::from_rows(rows.into(), max_time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: u64, time: Option<i64>) -> TableRow {
        TableRow {
            offset,
            time,
            values: Box::new([Value::Int(offset as i64)]),
        }
    }

    fn offsets(s: &TableState) -> Vec<u64> {
        s.rows.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn rows_keeps_the_newest() {
        let retain = Retain {
            rows: Some(3),
            age_ms: None,
        };
        let mut s = TableState::default();
        for o in 0..10 {
            s.push(row(o, Some(o as i64)), &retain);
        }
        assert_eq!(offsets(&s), [7, 8, 9]);
        assert_eq!((s.first_number(), s.next_number()), (7, 10));
        assert_eq!(s.max_time, Some(9));
    }

    #[test]
    fn age_drops_old_rows_from_the_front() {
        let retain = Retain {
            rows: None,
            age_ms: Some(10),
        };
        let mut s = TableState::default();
        for (o, t) in [(0, 0), (1, 5), (2, 12), (3, 1), (4, 14)] {
            s.push(row(o, Some(t)), &retain);
        }
        // cutoff 14 - 10 = 4: offset 0 (t=0) goes; offset 1 (t=5) stays, and so does
        // the late offset 3 (t=1) behind it until offset 1 goes.
        assert_eq!(offsets(&s), [1, 2, 3, 4]);
        s.push(row(5, Some(16)), &retain);
        assert_eq!(offsets(&s), [2, 3, 4, 5]);
        s.push(row(6, None), &retain);
        s.push(row(7, Some(30)), &retain);
        // cutoff 20: 2 (12), 3 (1), 4 (14), 5 (16) go; the row without a time stays.
        assert_eq!(offsets(&s), [6, 7]);
        let unbounded = Retain::default();
        assert!(!unbounded.is_bounded());
        s.push(row(8, Some(0)), &unbounded);
        assert_eq!(offsets(&s), [6, 7, 8]);
    }

    #[test]
    fn with_rows_age_waits_for_the_publish() {
        let retain = Retain {
            rows: Some(3),
            age_ms: Some(1),
        };
        let mut s = TableState::default();
        for o in 0..6 {
            s.push(row(o, Some(o as i64 * 10)), &retain);
        }
        // Only `rows` trims here: offsets 3 and 4 stay although they are too old, so
        // that they still count among the newest three.
        assert_eq!(offsets(&s), [3, 4, 5]);
    }

    #[test]
    fn merge_orders_by_offset_and_clones_are_new_generations() {
        let mut a = TableState::default();
        let mut b = TableState::default();
        for o in [0, 2, 5] {
            a.push(row(o, Some(1)), &Retain::default());
        }
        for o in [1, 3, 4] {
            b.push(row(o, Some(7)), &Retain::default());
        }
        let before = a.generation();
        let copy = a.clone();
        assert_ne!(copy.generation(), before);
        assert_eq!(offsets(&copy), offsets(&a));
        a.merge(b);
        assert_eq!(offsets(&a), [0, 1, 2, 3, 4, 5]);
        assert_eq!(a.max_time, Some(7));
        assert_ne!(a.generation(), before);
        assert_eq!((a.first_number(), a.next_number()), (0, 6));
    }

    /// A table view next to a view that fails on some events: a failing event adds no
    /// row (application is all-or-nothing), a filtered one neither, and rows carry
    /// the offset and event time they were applied with.
    #[test]
    fn a_failing_event_adds_no_row() {
        use crate::aggregate::{AggColumn, AggregateSpec};
        use crate::envelope::Envelope;
        use crate::expr::{AggFn, Expr};
        use crate::fields::FieldRegistry;
        use crate::projection::{Projection, ViewState};
        use crate::view::{ViewKind, ViewSpec};

        let mut fields = FieldRegistry::new();
        let (k, t, ts) = (fields.intern("k"), fields.intern("t"), fields.intern("ts"));
        let n = Expr::parse("n", &mut fields).unwrap();
        let table = TableSpec {
            filter: Some(Expr::parse("t <> 'skip'", &mut fields).unwrap()),
            columns: vec![TableColumn {
                name: "n".into(),
                expr: n.clone(),
                ty: ColumnType::Float64,
            }],
            retain: Retain::default(),
        };
        let sum = AggregateSpec {
            filter: None,
            group_by: vec![],
            columns: vec![AggColumn {
                name: "total".into(),
                func: AggFn::Sum,
                arg: Some(n),
                ty: ColumnType::Int64,
            }],
        };
        let envelope = Envelope {
            id: None,
            event_type: t,
            key: k,
            version: None,
            timestamp: Some(ts),
            correlation_id: None,
            causation_id: None,
        };
        let views = vec![
            ViewSpec {
                name: "rows".into(),
                kind: ViewKind::Table(table),
            },
            ViewSpec {
                name: "sum".into(),
                kind: ViewKind::Aggregate(sum),
            },
        ];
        let p = Projection::new(envelope, views, &fields);
        let mut state = p.new_partition_state();
        let mut scratch = p.scratch();
        let slots = fields.len();
        let event = |ty: &str, n: Value, time: i64| {
            let mut e = vec![Value::Null; slots];
            e[k.index()] = Value::Str("a".into());
            e[t.index()] = Value::Str(ty.into());
            e[ts.index()] = Value::Int(time);
            e[fields.get("n").unwrap().index()] = n;
            e
        };
        p.apply_at(
            &mut state,
            &mut scratch,
            &event("x", Value::Int(1), 10),
            Some(7),
        )
        .unwrap();
        // 1.5 is a float64 for the table but not an int64 for the sum: no row.
        assert!(
            p.apply_at(
                &mut state,
                &mut scratch,
                &event("x", Value::Float(1.5), 20),
                Some(8)
            )
            .is_err()
        );
        p.apply_at(
            &mut state,
            &mut scratch,
            &event("skip", Value::Int(2), 30),
            Some(9),
        )
        .unwrap();
        p.apply(&mut state, &mut scratch, &event("x", Value::Int(3), 40))
            .unwrap();
        let ViewState::Table(rows) = &state.views[0] else {
            panic!("a table state")
        };
        let got: Vec<_> = rows
            .rows
            .iter()
            .map(|r| (r.offset, r.time, r.values[0].clone()))
            .collect();
        assert_eq!(
            got,
            [
                (7, Some(10), Value::Float(1.0)),
                // Without an offset, rows are numbered by arrival in the state.
                (1, Some(40), Value::Float(3.0)),
            ]
        );
        assert_eq!(rows.max_time, Some(40));
    }
}
