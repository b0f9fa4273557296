//! Aggregate views: grouped count/sum/min/max/avg over events.

use crate::expr::{AggFn, Expr};
use crate::value::ColumnType;

/// One group-by column.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupColumn {
    /// Column name.
    pub name: String,
    /// Expression over the event.
    pub expr: Expr,
    /// Column type (default string).
    pub ty: ColumnType,
}

/// One aggregate column.
#[derive(Debug, Clone, PartialEq)]
pub struct AggColumn {
    /// Column name.
    pub name: String,
    /// The function.
    pub func: AggFn,
    /// Its argument; `None` only for `count(*)`.
    pub arg: Option<Expr>,
    /// Output type: int64 for counts, float64 for avg, and for sum/min/max float64
    /// unless the pipeline file says otherwise.
    pub ty: ColumnType,
}

/// A compiled aggregate view.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSpec {
    /// Only events for which this is true are aggregated.
    pub filter: Option<Expr>,
    /// Group-by columns, in view order.
    pub group_by: Vec<GroupColumn>,
    /// Aggregate columns, in view order after the group-by columns.
    pub columns: Vec<AggColumn>,
}

use crate::value::Value;
use std::cmp::Ordering;
use std::num::TryFromIntError;

/// A partial aggregate: mergeable, so workers keep partials and queries merge them.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    /// `count(*)` / `count(x)`.
    Count(i64),
    /// `sum(x)` into an int64 column; `None` until a non-null value arrives.
    ///
    /// Held in 128 bits: an event is only applied when it keeps the partial of one
    /// source partition within int64 (the event that would overflow it is a bad
    /// record, [`AccError::SumOverflow`]), but merged partials of several partitions
    /// may still exceed int64, which [`Acc::finish`] reports instead of wrapping.
    SumInt(Option<i128>),
    /// `sum(x)` into a float64 column.
    SumFloat(Option<f64>),
    /// `min(x)`.
    Min(Value),
    /// `max(x)`.
    Max(Value),
    /// `avg(x)`: running sum and count of non-null values.
    Avg {
        /// Sum of values.
        sum: f64,
        /// Number of values.
        count: i64,
    },
}

/// A value that cannot be aggregated (e.g. an int64 sum overflowing).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccError {
    /// Adding a value would take one source partition's int64 sum out of int64 (the
    /// event is a bad record).
    #[error("sum overflows int64 ({sum} + {value})")]
    SumOverflow {
        /// The sum so far.
        sum: i128,
        /// The value to add.
        value: i64,
        /// The conversion of the new sum to int64 that failed.
        source: TryFromIntError,
    },
    /// The int64 sum of merged partials does not fit in int64.
    #[error("the sum {sum} does not fit in int64; declare the column float64")]
    SumOutOfRange {
        /// The sum.
        sum: i128,
        /// The conversion to int64 that failed.
        source: TryFromIntError,
    },
}

impl Acc {
    /// The empty accumulator for a column.
    pub fn new(column: &AggColumn) -> Acc {
        match (column.func, column.ty) {
            (AggFn::CountStar | AggFn::Count, _) => Acc::Count(0),
            (AggFn::Sum, ColumnType::Int64) => Acc::SumInt(None),
            (AggFn::Sum, _) => Acc::SumFloat(None),
            (AggFn::Min, _) => Acc::Min(Value::Null),
            (AggFn::Max, _) => Acc::Max(Value::Null),
            (AggFn::Avg, _) => Acc::Avg { sum: 0.0, count: 0 },
        }
    }

    /// Checks that `v` (already coerced to the column's input type) can be added,
    /// without changing the accumulator. Lets an event be applied to all views or none.
    pub(crate) fn check(&self, v: &Value) -> Result<(), AccError> {
        if let (Acc::SumInt(Some(s)), Value::Int(i)) = (self, v)
            && let Err(source) = i64::try_from(s + i128::from(*i))
        {
            return Err(AccError::SumOverflow {
                sum: *s,
                value: *i,
                source,
            });
        }
        Ok(())
    }

    /// Adds one input. For `count(*)` pass any non-null value. Nulls are ignored
    /// (except by `count(*)`, whose callers pass `Value::Bool(true)`).
    pub(crate) fn update(&mut self, v: &Value) {
        if v.is_null() {
            return;
        }
        match self {
            Acc::Count(c) => *c += 1,
            Acc::SumInt(s) => {
                if let Value::Int(i) = v {
                    *s = Some(s.unwrap_or(0).saturating_add(i128::from(*i)));
                }
            }
            Acc::SumFloat(s) => {
                if let Some(f) = as_f64(v) {
                    *s = Some(s.unwrap_or(0.0) + f);
                }
            }
            Acc::Min(m) => {
                if m.is_null() || compare(v, m) == Ordering::Less {
                    *m = v.clone();
                }
            }
            Acc::Max(m) => {
                if m.is_null() || compare(v, m) == Ordering::Greater {
                    *m = v.clone();
                }
            }
            Acc::Avg { sum, count } => {
                if let Some(f) = as_f64(v) {
                    *sum += f;
                    *count += 1;
                }
            }
        }
    }

    /// Folds another partial of the same column into this one (two-phase aggregation).
    pub(crate) fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumInt(a), Acc::SumInt(b)) => {
                if let Some(b) = b {
                    *a = Some(a.unwrap_or(0).saturating_add(*b));
                }
            }
            (Acc::SumFloat(a), Acc::SumFloat(b)) => {
                if let Some(b) = b {
                    *a = Some(a.unwrap_or(0.0) + b);
                }
            }
            (a @ Acc::Min(_), Acc::Min(b)) | (a @ Acc::Max(_), Acc::Max(b)) => a.update(b),
            (Acc::Avg { sum, count }, Acc::Avg { sum: s2, count: c2 }) => {
                *sum += s2;
                *count += c2;
            }
            (a, b) => debug_assert!(false, "merging different accumulators {a:?} {b:?}"),
        }
    }

    /// The final value of the column; an error when an int64 `sum` of merged partials
    /// does not fit in int64.
    pub fn finish(&self) -> Result<Value, AccError> {
        Ok(match self {
            Acc::Count(c) => Value::Int(*c),
            Acc::SumInt(None) => Value::Null,
            Acc::SumInt(Some(s)) => Value::Int(
                i64::try_from(*s).map_err(|source| AccError::SumOutOfRange { sum: *s, source })?,
            ),
            Acc::SumFloat(s) => s.map(Value::Float).unwrap_or(Value::Null),
            Acc::Min(v) | Acc::Max(v) => v.clone(),
            Acc::Avg { sum, count } => {
                if *count == 0 {
                    Value::Null
                } else {
                    Value::Float(sum / *count as f64)
                }
            }
        })
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Orders two non-null values of one column type.
pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::Int(x), Value::Float(y)) => (*x as f64).total_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.total_cmp(&(*y as f64)),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_sums_that_overflow_when_merged_are_errors_not_wrapped() {
        let column = AggColumn {
            name: "total".into(),
            func: AggFn::Sum,
            arg: None,
            ty: ColumnType::Int64,
        };
        let big = Value::Int(5_000_000_000_000_000_000);
        let (mut a, mut b) = (Acc::new(&column), Acc::new(&column));
        a.update(&big);
        b.update(&big);
        assert!(
            a.check(&big).is_err(),
            "one partition's sum stays within int64"
        );
        a.merge(&b);
        let err = a.finish().unwrap_err();
        assert!(err.to_string().contains("does not fit in int64"), "{err}");
        b.merge(&Acc::SumInt(Some(-5_000_000_000_000_000_000)));
        assert_eq!(b.finish(), Ok(Value::Int(0)));
    }
}
