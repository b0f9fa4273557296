//! View specs: what a pipeline materializes.

use crate::aggregate::AggregateSpec;
use crate::fold::FoldSpec;
use crate::table::TableSpec;

/// A view: a name and what computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSpec {
    /// The SQL table name.
    pub name: String,
    /// Its kind.
    pub kind: ViewKind,
}

/// The kinds of view.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewKind {
    /// One row per key.
    Fold(FoldSpec),
    /// Grouped aggregates.
    Aggregate(AggregateSpec),
    /// One row per matching event.
    Table(TableSpec),
}
