//! Fold views: one row per key, updated by per-event-type handlers.

use crate::expr::Expr;
use crate::projection::FastMap;
use crate::value::{ColumnType, Value};

/// One column of a fold view (the key column is not listed here).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: ColumnType,
    /// Value a new row starts with; `None` means null.
    pub default: Option<Value>,
}

/// What one event type does to a row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Handler {
    /// `set: {column: expr}`: (column index, expression).
    pub set: Vec<(usize, Expr)>,
    /// `add: {column: expr}`: (column index, expression); null counts as 0.
    pub add: Vec<(usize, Expr)>,
    /// `delete`: remove the row.
    pub delete: bool,
}

/// A compiled fold view.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldSpec {
    /// Name of the key column in the Arrow view (a string column).
    pub key_column: String,
    /// The other columns, in view order.
    pub columns: Vec<ColumnSpec>,
    /// Handlers by event type.
    pub handlers: FastMap<String, Handler>,
    /// The `"*"` handler, run for every event after its own handler unless that deleted the row.
    pub star: Option<Handler>,
    /// The view has a `_parked` column, true on the rows of parked keys (with
    /// `on_error: park`; see [`crate::park`]). It is not state: the engine fills it
    /// from the parked keys when it builds the view's Arrow rows.
    pub parked_column: bool,
}

/// The name of the column that marks parked keys' rows (see [`FoldSpec::parked_column`]).
pub const PARKED_COLUMN: &str = "_parked";
