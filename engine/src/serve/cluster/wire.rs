//! What instances send each other: `POST /cluster/scan` and its answer.
//!
//! The request names the view, the partitions (by name, so instances agree whatever
//! order they list partitions in), the columns and the filters (as SQL) to apply. The
//! answer is an Arrow IPC stream of the rows (`application/vnd.apache.arrow.stream`),
//! or for `partials` an aggregate view's partials in the checkpoint codec's encoding,
//! with two headers: [`COVERED`], the partitions answered for with the epoch and
//! offset each came from, and [`ABSENT`], the ones this instance does not hold.

use serde::{Deserialize, Serialize};

/// Header: a JSON list of [`Contribution`]s.
pub(crate) const COVERED: &str = "x-projector-covered";
/// Header: a JSON list of partition names the instance does not hold.
pub(crate) const ABSENT: &str = "x-projector-absent";

/// A scan of one view on the instance that owns some of its partitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScanRequest {
    /// The pipeline (an instance refuses another pipeline's request).
    pub pipeline: String,
    /// The view.
    pub view: String,
    /// The partitions to read.
    pub partitions: Vec<String>,
    /// The columns to return, in this order.
    pub columns: Vec<String>,
    /// Filters the rows must pass, as SQL expressions (rows).
    pub filters: Vec<String>,
    /// Return an aggregate view's partials instead of rows.
    pub partials: bool,
}

/// One partition of an answer: where its rows came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// The partition.
    pub partition: String,
    /// The published epoch of its owner that the rows come from.
    pub epoch: u64,
    /// The next offset after the events that epoch holds.
    pub offset: u64,
    /// The instance that answered (its advertised address; `local` for this one).
    pub instance: String,
}

/// Quotes an identifier for SQL.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL a peer runs for a rows request.
pub(crate) fn scan_sql(req: &ScanRequest) -> String {
    let columns: Vec<String> = req.columns.iter().map(|c| ident(c)).collect();
    let mut sql = format!("SELECT {} FROM {}", columns.join(", "), ident(&req.view));
    if !req.filters.is_empty() {
        let filters: Vec<String> = req.filters.iter().map(|f| format!("({f})")).collect();
        sql.push_str(" WHERE ");
        sql.push_str(&filters.join(" AND "));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_sql_quotes_names_and_ands_filters() {
        let req = ScanRequest {
            pipeline: "p".into(),
            view: "my \"view\"".into(),
            partitions: vec![],
            columns: vec!["a".into(), "b c".into()],
            filters: vec!["a > 1".into(), "b c = 'x'".into()],
            partials: false,
        };
        assert_eq!(
            scan_sql(&req),
            "SELECT \"a\", \"b c\" FROM \"my \"\"view\"\"\" WHERE (a > 1) AND (b c = 'x')"
        );
    }
}
