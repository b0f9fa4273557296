//! SQL over the views: DataFusion, read-only, with limits.
//!
//! Every query pins the newest published epoch, plans against it, and runs under a
//! timeout, a row cap, a memory pool and a concurrency limit. Only queries: DDL, DML,
//! `COPY` and `SET` are rejected before anything runs. Queries run on the query
//! runtime, never on ingestion threads. Logical plans of repeated queries (key lookups
//! with any key) come from a cache (`plans.rs`).

mod plans;
pub(crate) mod provider;

pub use crate::serve::cluster::wire::Contribution;

use crate::config::ViewGrant;
use crate::serve::catalog::Catalog;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use futures::StreamExt;
use plans::{Cached, PlanCache, parameterise};
use provider::{PartitionsUnavailable, QueryScope, ViewTable};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Limits every query runs under.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Wall-clock time a query may take.
    pub timeout: Duration,
    /// Rows a result may have.
    pub max_rows: usize,
    /// Bytes of memory the query engine may use for all queries together.
    pub memory_bytes: usize,
    /// Queries that may run at once; others wait.
    pub concurrency: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(30),
            max_rows: 1_000_000,
            memory_bytes: 1 << 30,
            concurrency: 8,
        }
    }
}

/// A query result.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
    /// The epoch of this instance the query read.
    pub epoch: u64,
    /// The partitions whose rows the views read came from, each with the published
    /// epoch and offset of its owner (in partition-name order).
    pub partitions: Vec<Contribution>,
    /// The partitions a partial answer is missing, each with why (empty unless
    /// [`QueryOptions::partial`] was set).
    pub missing: Vec<(String, String)>,
}

/// How one query runs.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Answer without the partitions no instance answers for (and say which), instead
    /// of failing with `query.partition_unavailable`.
    pub partial: bool,
    /// The views the caller may read (`None`: all). A query that reads another one,
    /// directly, through a join or in a subquery, is refused (`auth.forbidden`).
    pub grant: Option<ViewGrant>,
    /// Read only these partitions, and only this instance's (a scan sent by another
    /// instance).
    pub(crate) local_only: Option<BTreeSet<u32>>,
}

/// What went wrong with a query. Each kind has a stable code ([`QueryErrorKind::code`]),
/// which HTTP and the CLI show the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryErrorKind {
    /// The SQL does not parse (`sql.parse`).
    Parse,
    /// The SQL parses but cannot be planned: unknown table or column, wrong types
    /// (`sql.plan`).
    Plan,
    /// A feature DataFusion does not implement (`sql.unsupported`).
    Unsupported,
    /// The query needed more memory than its limit (`sql.resources_exhausted`).
    ResourcesExhausted,
    /// The query failed while running (`sql.execution`).
    Execution,
    /// DDL, DML, COPY or SET: only queries are allowed (`sql.read_only`).
    ReadOnly,
    /// The result has more rows than the limit (`sql.too_many_rows`).
    TooManyRows,
    /// The query ran longer than the limit (`sql.timeout`).
    Timeout,
    /// The query engine is shutting down (`sql.unavailable`).
    Unavailable,
    /// The engine could not be set up (`sql.internal`).
    Internal,
    /// Partitions the query needs have no live owner, or their owner did not answer
    /// in time (`query.partition_unavailable`).
    PartitionUnavailable,
    /// The caller's token may not read a view the query reads (`auth.forbidden`).
    Forbidden,
}

impl QueryErrorKind {
    /// The stable code, e.g. `sql.parse`.
    pub fn code(self) -> &'static str {
        match self {
            QueryErrorKind::Parse => "sql.parse",
            QueryErrorKind::Plan => "sql.plan",
            QueryErrorKind::Unsupported => "sql.unsupported",
            QueryErrorKind::ResourcesExhausted => "sql.resources_exhausted",
            QueryErrorKind::Execution => "sql.execution",
            QueryErrorKind::ReadOnly => "sql.read_only",
            QueryErrorKind::TooManyRows => "sql.too_many_rows",
            QueryErrorKind::Timeout => "sql.timeout",
            QueryErrorKind::Unavailable => "sql.unavailable",
            QueryErrorKind::Internal => "sql.internal",
            QueryErrorKind::PartitionUnavailable => "query.partition_unavailable",
            QueryErrorKind::Forbidden => "auth.forbidden",
        }
    }
}

/// A query that was refused or failed: its kind, and a message that says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct QueryError {
    /// What went wrong.
    pub kind: QueryErrorKind,
    /// Details, for the user.
    pub message: String,
    /// DataFusion's error, when the failure was DataFusion's.
    #[source]
    source: Option<Arc<DataFusionError>>,
}

impl QueryError {
    fn new(kind: QueryErrorKind, message: impl Into<String>) -> Self {
        QueryError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The stable code of the error's kind, e.g. `sql.parse`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

/// Runs SQL against a pipeline's catalog.
pub struct SqlEngine {
    state: SessionState,
    catalog: Arc<Catalog>,
    limits: QueryLimits,
    permits: Semaphore,
    plans: PlanCache,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl SqlEngine {
    /// An engine with one table per view of `catalog`.
    pub fn new(catalog: Arc<Catalog>, limits: QueryLimits) -> Result<Self, QueryError> {
        Self::with_beside(catalog, None, limits)
    }

    /// An engine with one table per view of `catalog` and of `beside` (views rebuilt
    /// beside the pipeline's, each read at its own newest epoch).
    pub fn with_beside(
        catalog: Arc<Catalog>,
        beside: Option<Arc<Catalog>>,
        limits: QueryLimits,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()
            .map_err(|e| QueryError::new(QueryErrorKind::Internal, e.to_string()))?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            );
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for (i, v) in catalog.views.iter().enumerate() {
            ctx.register_table(
                v.name.as_str(),
                Arc::new(ViewTable::new(catalog.clone(), i)),
            )
            .map_err(|e| QueryError::new(QueryErrorKind::Internal, e.to_string()))?;
        }
        for other in beside.iter() {
            for (i, v) in other.views.iter().enumerate() {
                ctx.register_table(
                    v.name.as_str(),
                    Arc::new(ViewTable::beside(other.clone(), i)),
                )
                .map_err(|e| QueryError::new(QueryErrorKind::Internal, e.to_string()))?;
            }
        }
        Ok(SqlEngine {
            state: ctx.state(),
            catalog,
            permits: Semaphore::new(limits.concurrency.max(1)),
            limits,
            plans: PlanCache::default(),
        })
    }

    /// Runs one read-only SQL statement against the newest published epoch, over
    /// every partition of the pipeline.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.query_with(sql, &QueryOptions::default()).await
    }

    /// Runs one read-only SQL statement with `options`.
    pub async fn query_with(
        &self,
        sql: &str,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let _permit = self.permits.acquire().await.map_err(|_| {
            QueryError::new(
                QueryErrorKind::Unavailable,
                "the query engine is shutting down",
            )
        })?;
        let pinned = self.catalog.current();
        let epoch = pinned.epoch;
        let mut state = self.state.clone();
        let scope = Arc::new(QueryScope {
            pinned,
            local_only: options.local_only.clone(),
            partial: options.partial,
            answer: Mutex::default(),
        });
        state.config_mut().set_extension(scope.clone());
        let limits = self.limits.clone();
        let plans = &self.plans;
        let catalog = &self.catalog;
        let work = async move {
            let plan = logical_plan(&state, plans, sql).await?;
            if let Some(grant) = &options.grant {
                check_grant(catalog, &plan, grant)?;
            }
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)
                .map_err(|e| {
                    QueryError::new(
                        QueryErrorKind::ReadOnly,
                        format!(
                            "only queries are allowed (no DDL, DML, COPY or SET): {}",
                            strip(&e)
                        ),
                    )
                })?;
            let df = DataFrame::new(state, plan);
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            // The row cap is checked while the result streams in, not added to the plan
            // as a LIMIT: DataFusion refuses a LIMIT above an EXPLAIN, and streaming
            // stops as early as a LIMIT would.
            let mut stream = df.execute_stream().await.map_err(classify)?;
            let (mut batches, mut rows) = (Vec::new(), 0usize);
            // Another instance's scan feeds a query that is capped where it runs.
            let max_rows = match options.local_only {
                Some(_) => usize::MAX,
                None => limits.max_rows,
            };
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(classify)?;
                rows += batch.num_rows();
                if rows > max_rows {
                    return Err(QueryError::new(
                        QueryErrorKind::TooManyRows,
                        format!(
                            "the result has more than {} rows; add a LIMIT or an aggregate",
                            limits.max_rows
                        ),
                    ));
                }
                batches.push(batch);
            }
            let answer = std::mem::take(&mut *scope.answer.lock().expect("answer lock"));
            Ok(QueryResult {
                schema,
                batches,
                epoch,
                partitions: answer.covered.into_values().collect(),
                missing: answer.missing.into_iter().collect(),
            })
        };
        match tokio::time::timeout(self.limits.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(QueryError::new(
                QueryErrorKind::Timeout,
                format!(
                    "the query ran longer than {:?} and was stopped",
                    self.limits.timeout
                ),
            )),
        }
    }
}

/// Refuses a plan that reads a view `grant` does not cover, wherever in the plan
/// (joins, subqueries, `EXPLAIN`).
fn check_grant(catalog: &Catalog, plan: &LogicalPlan, grant: &ViewGrant) -> Result<(), QueryError> {
    let mut denied = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = &scan.table_name;
            let ours = matches!(name.schema(), None | Some("public"));
            if ours && catalog.index_of(name.table()).is_some() && !grant.allows(name.table()) {
                denied.insert(name.table().to_string());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if denied.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = denied.into_iter().collect();
    Err(QueryError::new(
        QueryErrorKind::Forbidden,
        format!(
            "this token may not read {} '{}'",
            if names.len() == 1 { "view" } else { "views" },
            names.join("', '")
        ),
    ))
}

/// The logical plan of `sql`: from the plan cache where it has one (binding the key
/// lookup's literals into a copy), otherwise parsed and planned, and cached.
async fn logical_plan(
    state: &SessionState,
    cache: &PlanCache,
    sql: &str,
) -> Result<LogicalPlan, QueryError> {
    if let Some((shape, params)) = parameterise(sql) {
        let cached = match cache.get(&shape) {
            Some(c) => c,
            None => {
                let c = match state.create_logical_plan(&shape).await {
                    Ok(plan) => Cached::Plan(plan),
                    Err(_) => Cached::Unparameterisable,
                };
                cache.put(shape.clone(), c.clone());
                c
            }
        };
        if let Cached::Plan(plan) = cached {
            match plan.with_param_values(params) {
                Ok(bound) => return Ok(bound),
                Err(_) => cache.put(shape, Cached::Unparameterisable),
            }
        }
        // Planned from its text, exactly as without the cache (errors included).
        return state.create_logical_plan(sql).await.map_err(classify);
    }
    if let Some(Cached::Plan(plan)) = cache.get(sql) {
        return Ok(plan);
    }
    let plan = state.create_logical_plan(sql).await.map_err(classify)?;
    cache.put(sql.to_string(), Cached::Plan(plan.clone()));
    Ok(plan)
}

fn strip(e: &DataFusionError) -> String {
    let s = e.to_string();
    s.strip_prefix("Error during planning: ")
        .map(str::to_string)
        .unwrap_or(s)
}

fn classify(e: DataFusionError) -> QueryError {
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(u) = inner.downcast_ref::<PartitionsUnavailable>()
    {
        return QueryError::new(QueryErrorKind::PartitionUnavailable, u.to_string());
    }
    // A pattern that does not compile is the query's fault; DataFusion reports it as
    // an internal error with a request to file a bug.
    let text = e.to_string();
    if let Some(at) = text.find("Regular expression did not compile: ") {
        let detail = text[at + "Regular expression did not compile: ".len()..]
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches('.');
        let why = match detail {
            d if d.starts_with("CompiledTooBig") => {
                "it is too large once compiled (at most 10 MiB)".to_string()
            }
            d => d.to_string(),
        };
        return QueryError {
            kind: QueryErrorKind::Execution,
            message: format!("a regular expression in the query does not compile: {why}"),
            source: Some(Arc::new(e)),
        };
    }
    let kind = match e.find_root() {
        DataFusionError::SQL(..) => QueryErrorKind::Parse,
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => QueryErrorKind::Plan,
        DataFusionError::NotImplemented(_) => QueryErrorKind::Unsupported,
        DataFusionError::ResourcesExhausted(_) => QueryErrorKind::ResourcesExhausted,
        _ => QueryErrorKind::Execution,
    };
    QueryError {
        kind,
        message: strip(&e),
        source: Some(Arc::new(e)),
    }
}
