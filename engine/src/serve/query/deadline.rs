//! A query's deadline, where an operator can compute for hours without pausing.
//!
//! A query past its deadline is abandoned by its caller at once (`mod.rs`), and its task
//! is cancelled, which takes effect the next time the task pauses. A nested loop join probes its whole buffered side against
//! each batch of the other in one go, pausing only when an output batch fills. With a
//! selective filter (`WHERE a.x + b.x + c.x = 7` over three 20,000-row views) nothing
//! fills for hours, and the query held both cores and its slot long after its answer
//! was sent. So the join's filter is wrapped in an expression that fails once the
//! deadline has passed: it is evaluated every few thousand rows, and the query stops
//! within milliseconds of its deadline.
//!
//! A query whose caller goes away (a client that disconnects or sends a Postgres cancel
//! request) is cancelled the same way: its task is aborted, and the same expression
//! fails once the query's cancel flag (`Running`) is set, since one probe of a
//! four-way join can take minutes before the task pauses.
//!
//! Other operators pause only when an input makes them wait, and views in memory never
//! do: an aggregate over the cross join `a, b, c` consumed trillions of rows in one
//! poll and could not be cancelled at all. So every join's output (rows multiply
//! there) is wrapped in DataFusion's `CooperativeExec`, which spends the task's
//! scheduling budget per batch and makes it pause when the budget is spent.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, extensions_options};
use datafusion::config::ConfigExtension;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{NestedLoopJoinExec, NestedLoopJoinExecBuilder};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

extensions_options! {
    /// The deadline of the query being planned, set on each query's copy of the
    /// session's options.
    pub(crate) struct QueryDeadline {
        /// Milliseconds since the Unix epoch; 0: none.
        pub(crate) at_unix_ms: u64, default = 0
        /// The query's number in the registry of running queries (`Running`).
        pub(crate) query: u64, default = 0
    }
}

/// The cancel flags of the queries running now, by number: set when a query's caller
/// goes away, read by its joins' filters.
static RUNNING: std::sync::LazyLock<Mutex<HashMap<u64, Arc<AtomicBool>>>> =
    std::sync::LazyLock::new(Mutex::default);
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A query's entry in the registry of running queries, removed when dropped (when the
/// query's task ends, however it ends).
pub(crate) struct Running {
    query: u64,
    cancelled: Arc<AtomicBool>,
}

impl Running {
    /// Registers a new query.
    pub(crate) fn register() -> Self {
        let query = NEXT.fetch_add(1, Ordering::Relaxed);
        let cancelled = Arc::new(AtomicBool::new(false));
        RUNNING
            .lock()
            .expect("running queries lock")
            .insert(query, cancelled.clone());
        Running { query, cancelled }
    }

    /// Its number, for [`QueryDeadline::query`].
    pub(crate) fn query(&self) -> u64 {
        self.query
    }

    /// Its cancel flag: set it to stop the query's joins.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.cancelled.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .expect("running queries lock")
            .remove(&self.query);
    }
}

/// The cancel flag of query `query` (a flag never set if it is not running).
fn flag_of(query: u64) -> Arc<AtomicBool> {
    RUNNING
        .lock()
        .expect("running queries lock")
        .get(&query)
        .cloned()
        .unwrap_or_default()
}

impl ConfigExtension for QueryDeadline {
    const PREFIX: &'static str = "projector_deadline";
}

impl QueryDeadline {
    /// The deadline `after` from now, of the query registered as `query`.
    pub(crate) fn after(after: std::time::Duration, query: u64) -> Self {
        QueryDeadline {
            at_unix_ms: now_ms().saturating_add(after.as_millis() as u64),
            query,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Wraps the filter of every nested loop join of a plan in [`Checked`], with the
/// deadline of the query's [`QueryDeadline`], and every join in a `CooperativeExec`.
#[derive(Debug, Default)]
pub(crate) struct DeadlineRule;

impl PhysicalOptimizerRule for DeadlineRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some((at, query)) = config
            .extensions
            .get::<QueryDeadline>()
            .map(|d| (d.at_unix_ms, d.query))
            .filter(|&(at, _)| at > 0)
        else {
            return Ok(plan);
        };
        let cancelled = flag_of(query);
        plan.transform_up(|node| {
            // Joins are where rows multiply; each pauses once its budget is spent.
            if !node.name().contains("Join") {
                return Ok(Transformed::no(node));
            }
            let node = match node.downcast_ref::<NestedLoopJoinExec>() {
                Some(join) => match join.filter() {
                    Some(filter) if !filter.expression().is::<Checked>() => {
                        let checked = JoinFilter::new(
                            Arc::new(Checked {
                                inner: filter.expression().clone(),
                                at_unix_ms: at,
                                cancelled: cancelled.clone(),
                            }),
                            filter.column_indices().to_vec(),
                            filter.schema().clone(),
                        );
                        let rebuilt = NestedLoopJoinExecBuilder::from(join)
                            .with_filter(Some(checked))
                            .build()?;
                        Arc::new(rebuilt) as Arc<dyn ExecutionPlan>
                    }
                    _ => node,
                },
                None => node,
            };
            let pausing = CooperativeExec::new(node);
            Ok(Transformed::yes(Arc::new(pausing) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "projector_deadline"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The error a [`Checked`] expression gives past the deadline (a `sql.timeout`).
#[derive(Debug, thiserror::Error)]
#[error("the query ran past its deadline (query.timeout) and was stopped")]
pub(crate) struct DeadlinePassed;

/// An expression that is `inner`, until the deadline or a cancel: then an error.
#[derive(Debug)]
struct Checked {
    inner: Arc<dyn PhysicalExpr>,
    at_unix_ms: u64,
    cancelled: Arc<AtomicBool>,
}

// By hand: deriving them for a field of `Arc<dyn …>` does not compile
// (rust-lang/rust#78808).
impl PartialEq for Checked {
    fn eq(&self, other: &Self) -> bool {
        self.inner.eq(&other.inner) && self.at_unix_ms == other.at_unix_ms
    }
}

impl Eq for Checked {}

impl std::hash::Hash for Checked {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.at_unix_ms.hash(state);
    }
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl PhysicalExpr for Checked {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.inner.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.inner.nullable(input_schema)
    }

    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.inner.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        if now_ms() > self.at_unix_ms || self.cancelled.load(Ordering::Relaxed) {
            return Err(DataFusionError::External(Box::new(DeadlinePassed)));
        }
        self.inner.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let inner = children.into_iter().next().ok_or_else(|| {
            DataFusionError::Internal("a checked expression has one child".into())
        })?;
        Ok(Arc::new(Checked {
            inner,
            at_unix_ms: self.at_unix_ms,
            cancelled: self.cancelled.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt_sql(f)
    }
}
