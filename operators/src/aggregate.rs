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
