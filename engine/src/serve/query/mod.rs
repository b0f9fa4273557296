//! SQL over the views: DataFusion, read-only, with limits.
//!
//! Every query pins the newest published epoch, plans against it, and runs under the
//! pipeline's `query:` limits ([`QueryLimits`]): a deadline that includes the wait for
//! a slot, a bounded queue, a row cap, a cap on result bytes, a memory pool, and bounds
//! on expression nesting (`guard.rs`) and on what a function may return
//! (`bounded.rs`). Only queries: DDL, DML, `COPY` and `SET` are rejected before
//! anything runs. Queries run on threads of their own (`threads.rs`), never on
//! ingestion threads nor on the HTTP threads that answer health checks. Logical plans
//! of repeated queries (key lookups with any key) come from a cache (`plans.rs`).

mod bounded;
mod deadline;
mod guard;
pub(crate) mod pg_catalog;
mod plans;
pub(crate) mod provider;
mod threads;

pub use crate::serve::cluster::wire::Contribution;

use crate::config::ViewGrant;
use crate::serve::catalog::Catalog;
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Limits every query runs under: the pipeline's `query:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// `timeout:` (default 30s): wall-clock time from a query's arrival to its
    /// answer, the wait for a slot included. At the deadline the caller gets
    /// `sql.timeout` and the query is abandoned wherever it is.
    pub timeout: Duration,
    /// `max_rows:` (default 1,000,000): rows a result may have.
    pub max_rows: usize,
    /// `max_result_bytes:` (default 256 MiB): bytes a result may hold in Arrow
    /// form; also the most one function call may produce.
    pub max_result_bytes: usize,
    /// `memory:` (default 1 GiB): bytes of memory sorts, joins and groups of all
    /// queries together may hold.
    pub memory_bytes: usize,
    /// `concurrency:` (default 8): queries that run at once.
    pub concurrency: usize,
    /// `queue:` (default 64): queries that may wait for a slot; one more is refused
    /// at once with `sql.busy` (HTTP 429, Postgres SQLSTATE 53300).
    pub queue: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(30),
            max_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            memory_bytes: 1 << 30,
            concurrency: 8,
            queue: 64,
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
    /// Every query slot is taken and the queue is full (`sql.busy`).
    Busy,
    /// The result holds more bytes than the limit (`sql.result_too_large`).
    ResultTooLarge,
    /// The query's expressions nest deeper than the limit (`sql.too_complex`).
    TooComplex,
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
            QueryErrorKind::Busy => "sql.busy",
            QueryErrorKind::ResultTooLarge => "sql.result_too_large",
            QueryErrorKind::TooComplex => "sql.too_complex",
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
    /// One permit per query that may run at once.
    permits: Arc<Semaphore>,
    /// Queries waiting for a permit.
    waiting: AtomicUsize,
    plans: Arc<PlanCache>,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Cancels a query when dropped (a no-op once it has ended): aborts its task, and sets
/// its cancel flag, which stops its joins between two pauses of the task.
struct CancelOnDrop(tokio::task::AbortHandle, Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.1.store(true, Ordering::Relaxed);
        self.0.abort();
    }
}

/// Takes a waiting place back when the wait ends, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
        let internal =
            |e: DataFusionError| QueryError::new(QueryErrorKind::Internal, e.to_string());
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()
            .map_err(internal)?;
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
            .map_err(internal)?;
        }
        for other in beside.iter() {
            for (i, v) in other.views.iter().enumerate() {
                ctx.register_table(
                    v.name.as_str(),
                    Arc::new(ViewTable::beside(other.clone(), i)),
                )
                .map_err(internal)?;
            }
        }
        // What Postgres clients read to list the views and their columns (`\d`).
        let mut listed: Vec<(String, SchemaRef)> = Vec::new();
        for c in std::iter::once(&catalog).chain(beside.iter()) {
            for (v, schema) in c.views.iter().zip(&c.schemas) {
                if !listed.iter().any(|(n, _)| *n == v.name) {
                    listed.push((v.name.clone(), schema.clone()));
                }
            }
        }
        pg_catalog::register(&ctx, &listed, "projector").map_err(internal)?;
        // Checks each query's deadline inside nested loop joins (`deadline.rs`).
        let mut state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
            .with_physical_optimizer_rule(Arc::new(deadline::DeadlineRule))
            .build();
        let per_call = limits.max_result_bytes.min(limits.memory_bytes);
        bounded::bound_functions(&mut state, per_call).map_err(internal)?;
        Ok(SqlEngine {
            state,
            catalog,
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            limits,
            plans: Arc::default(),
        })
    }

    /// The limits queries run under.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Queries running now, and waiting for a slot.
    pub fn load(&self) -> (usize, usize) {
        let free = self.permits.available_permits();
        (
            self.limits.concurrency.max(1).saturating_sub(free),
            self.waiting.load(Ordering::Relaxed),
        )
    }

    /// Runs one read-only SQL statement against the newest published epoch, over
    /// every partition of the pipeline.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.query_with(sql, &QueryOptions::default()).await
    }

    /// Runs one read-only SQL statement with `options`: waits for a slot (or is
    /// refused when the queue is full), then runs on the query threads until done or
    /// until the deadline, whichever comes first.
    pub async fn query_with(
        &self,
        sql: &str,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let (catalog, plans, limits) = (
            self.catalog.clone(),
            self.plans.clone(),
            self.limits.clone(),
        );
        let (sql, options) = (sql.to_string(), options.clone());
        self.limited(move |state| async move {
            let plan = logical_plan(&state, &plans, &sql).await?;
            execute(state, catalog, limits, plan, options).await
        })
        .await
    }

    /// Plans one read-only SQL statement whose parameters are written `$1`, `$2`, ...
    /// (a Postgres prepared statement), within the same limits as a query; the plan
    /// then runs any number of times with [`SqlEngine::run_prepared`].
    pub async fn prepare(&self, sql: &str, options: &QueryOptions) -> Result<Prepared, QueryError> {
        let catalog = self.catalog.clone();
        let (sql, options) = (sql.to_string(), options.clone());
        self.limited(move |state| async move {
            let plan = plan_text(&state, &sql).await?;
            allowed(&catalog, &plan, &options)?;
            let mut params: Vec<(usize, Option<DataType>)> = plan
                .get_parameter_types()
                .map_err(classify)?
                .into_iter()
                .filter_map(|(name, t)| Some((name.strip_prefix('$')?.parse().ok()?, t)))
                .collect();
            params.sort_by_key(|(n, _)| *n);
            let count = params.last().map_or(0, |(n, _)| *n);
            if count > MAX_PARAMETERS {
                return Err(QueryError::new(
                    QueryErrorKind::Plan,
                    format!("a statement has at most {MAX_PARAMETERS} parameters, not ${count}"),
                ));
            }
            let mut types = vec![None; count];
            for (n, t) in params {
                if n >= 1 {
                    types[n - 1] = t;
                }
            }
            Ok(Prepared {
                schema: Arc::new(plan.schema().as_arrow().clone()),
                plan,
                params: types,
            })
        })
        .await
    }

    /// Runs a statement planned by [`SqlEngine::prepare`] with `params` bound to its
    /// placeholders, like [`SqlEngine::query_with`].
    pub async fn run_prepared(
        &self,
        prepared: &Prepared,
        params: Vec<ScalarValue>,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let plan = if params.is_empty() {
            prepared.plan.clone()
        } else {
            prepared
                .plan
                .clone()
                .with_param_values(params)
                .map_err(classify)?
        };
        let (catalog, limits, options) =
            (self.catalog.clone(), self.limits.clone(), options.clone());
        self.limited(move |state| execute(state, catalog, limits, plan, options))
            .await
    }

    /// Waits for a slot (or refuses at once when the queue is full), then runs
    /// `work` on the query threads until it is done or the deadline passes, whichever
    /// comes first.
    async fn limited<T, F, Fut>(&self, work: F) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(SessionState) -> Fut,
        Fut: std::future::Future<Output = Result<T, QueryError>> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + self.limits.timeout;
        let timed_out = |waited: bool| {
            let message = if waited {
                format!(
                    "the query waited {:?} for one of {} query slots and was given up; \
                     the instance is busy with other queries",
                    self.limits.timeout, self.limits.concurrency
                )
            } else {
                format!(
                    "the query ran longer than {:?} (query.timeout) and was stopped",
                    self.limits.timeout
                )
            };
            QueryError::new(QueryErrorKind::Timeout, message)
        };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(unavailable()),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.limits.queue {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Err(QueryError::new(
                        QueryErrorKind::Busy,
                        format!(
                            "{} queries are running and {} waiting, the most query.concurrency \
                             and query.queue allow; try again shortly",
                            self.limits.concurrency, self.limits.queue
                        ),
                    ));
                }
                let _waiting = Waiting(&self.waiting);
                let acquire = self.permits.clone().acquire_owned();
                match tokio::time::timeout_at(deadline, acquire).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(unavailable()),
                    Err(_) => return Err(timed_out(true)),
                }
            }
        };
        let mut state = self.state.clone();
        // now() and current_date are the time of this query, not of the engine's start.
        state.mark_start_execution();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let running = deadline::Running::register();
        let flag = running.flag();
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(deadline::QueryDeadline::after(left, running.query()));
        let work = work(state);
        // The permit goes with the work: a query abandoned at its deadline holds its
        // slot until its threads have really let it go.
        let task = threads::handle().spawn(async move {
            let (_permit, _running) = (permit, running);
            work.await
        });
        // Cancelled when its deadline passes, and also when the caller goes away
        // first (a client that disconnects or cancels, a peer that gave up on a
        // scan): else it would hold its slot until it ended by itself.
        let _cancel = CancelOnDrop(task.abort_handle(), flag);
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(QueryError::new(
                QueryErrorKind::Internal,
                format!("the query failed unexpectedly: {e}"),
            )),
            Err(_) => Err(timed_out(false)),
        }
    }
}

/// Whether the expressions of `sql` nest deeper than queries may (`guard.rs`): such a
/// text must not be parsed into a tree, nor walked.
pub(crate) fn nests_too_deep(sql: &str) -> bool {
    guard::nesting_bound(sql).is_some_and(|d| d > guard::MAX_NESTING)
}

/// Parameters a prepared statement may have (Postgres's own limit).
const MAX_PARAMETERS: usize = 65_535;

/// A statement planned once, to run many times with different parameters (see
/// [`SqlEngine::prepare`]). The plan holds no data: each run reads the newest epoch.
#[derive(Debug, Clone)]
pub struct Prepared {
    plan: LogicalPlan,
    /// The result's schema.
    pub schema: SchemaRef,
    /// The type of each parameter `$1`, `$2`, ... (`None` where the plan does not
    /// tell, as in `SELECT $1`).
    pub params: Vec<Option<DataType>>,
}

/// The newest epoch, pinned for one query with `options`.
fn pin(catalog: &Catalog, options: &QueryOptions) -> Arc<QueryScope> {
    Arc::new(QueryScope {
        pinned: catalog.current(),
        local_only: options.local_only.clone(),
        partial: options.partial,
        answer: Mutex::default(),
    })
}

/// Refuses a plan that is not a query, or that reads a view the caller may not.
fn allowed(
    catalog: &Catalog,
    plan: &LogicalPlan,
    options: &QueryOptions,
) -> Result<(), QueryError> {
    if let Some(grant) = &options.grant {
        check_grant(catalog, plan, grant)?;
    }
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| {
            QueryError::new(
                QueryErrorKind::ReadOnly,
                format!(
                    "only queries are allowed (no DDL, DML, COPY or SET): {}",
                    strip(&e)
                ),
            )
        })
}

fn unavailable() -> QueryError {
    QueryError::new(
        QueryErrorKind::Unavailable,
        "the query engine is shutting down",
    )
}

/// Runs one planned query on the query threads, against the newest epoch.
async fn execute(
    mut state: SessionState,
    catalog: Arc<Catalog>,
    limits: QueryLimits,
    plan: LogicalPlan,
    options: QueryOptions,
) -> Result<QueryResult, QueryError> {
    allowed(&catalog, &plan, &options)?;
    let scope = pin(&catalog, &options);
    let epoch = scope.pinned.epoch;
    state.config_mut().set_extension(scope.clone());
    let df = DataFrame::new(state, plan);
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    // The row cap is checked while the result streams in, not added to the plan as a
    // LIMIT: DataFusion refuses a LIMIT above an EXPLAIN, and streaming stops as early
    // as a LIMIT would.
    let mut stream = df.execute_stream().await.map_err(classify)?;
    let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
    // Another instance's scan feeds a query that is capped where it runs.
    let (max_rows, max_bytes) = match options.local_only {
        Some(_) => (usize::MAX, usize::MAX),
        None => (limits.max_rows, limits.max_result_bytes),
    };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(classify)?;
        rows += batch.num_rows();
        if rows > max_rows {
            return Err(QueryError::new(
                QueryErrorKind::TooManyRows,
                format!(
                    "the result has more than {} rows (query.max_rows); add a LIMIT or an \
                     aggregate",
                    limits.max_rows
                ),
            ));
        }
        bytes += batch_bytes(&batch);
        if bytes > max_bytes {
            return Err(QueryError::new(
                QueryErrorKind::ResultTooLarge,
                format!(
                    "the result holds more than {} bytes (query.max_result_bytes); select \
                     fewer or shorter columns, or add a LIMIT",
                    limits.max_result_bytes
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
}

/// The bytes a batch's rows hold (a slice counts its rows, not its whole buffers).
fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
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
                let c = match plan_text(state, &shape).await {
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
        return plan_text(state, sql).await;
    }
    if let Some(Cached::Plan(plan)) = cache.get(sql) {
        return Ok(plan);
    }
    let plan = plan_text(state, sql).await?;
    cache.put(sql.to_string(), Cached::Plan(plan.clone()));
    Ok(plan)
}

/// Parses and plans `sql`, unless its expressions nest too deep to do so safely.
async fn plan_text(state: &SessionState, sql: &str) -> Result<LogicalPlan, QueryError> {
    if let Some(depth) = guard::nesting_bound(sql)
        && depth > guard::MAX_NESTING
    {
        return Err(QueryError::new(
            QueryErrorKind::TooComplex,
            format!(
                "the query's expressions nest about {depth} levels deep, more than {}; \
                 write a long chain of OR-ed equalities as IN (...), and split long sums",
                guard::MAX_NESTING
            ),
        ));
    }
    state.create_logical_plan(sql).await.map_err(classify)
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
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(d) = inner.downcast_ref::<deadline::DeadlinePassed>()
    {
        // The deadline checked inside a join can pass a moment before the caller's.
        return QueryError::new(QueryErrorKind::Timeout, d.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampNanosecondType;

    fn engine() -> SqlEngine {
        let catalog = Catalog::new(Vec::new(), vec!["p0".into()], 1);
        SqlEngine::new(Arc::new(catalog), QueryLimits::default()).expect("engine")
    }

    #[tokio::test]
    async fn now_is_the_time_of_each_query() {
        let engine = engine();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let r = engine.query("SELECT now() AS t").await.expect("query");
            seen.push(
                r.batches[0]
                    .column(0)
                    .as_primitive::<TimestampNanosecondType>()
                    .value(0),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen[1] > seen[0], "now() stood still: {seen:?}");
    }
}
