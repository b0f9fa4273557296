//! Live subscriptions: a view's rows, then every change to them as epochs publish.
//!
//! ```text
//!  epoch published ─▶ hub thread: per subscribed view, the rows that changed since the
//!                     previous epoch (fold views: only the chunks that were rebuilt,
//!                     found by identity; aggregates: the merged groups) ─▶ retained
//!                     for resuming ─▶ each subscriber's bounded queue ─▶ SSE (sse.rs)
//! ```
//!
//! A change is an upsert (the key's new row) or a delete, with its epoch. A subscriber
//! first gets the view's rows at one epoch, then the changes of every later epoch; one
//! that resumes (`from_epoch`, or SSE's `Last-Event-ID`) gets the changes after that
//! epoch, if they are still retained. Filters (a key, or a SQL `WHERE` over the
//! view's columns) apply to each change's old and new row: a row that stops matching
//! is a delete. A subscriber whose queue is full is dropped with a message, so that a
//! slow client never slows the hub, let alone ingestion (which never waits for it).

pub(crate) mod sse;

use crate::serve::catalog::Catalog;
use crate::state::view::PublishedView;
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use projector_operators::view::{ViewKind, ViewSpec};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Epochs of changes kept per subscribed view, for subscribers that resume.
pub(crate) const RETAINED_EPOCHS: usize = 1200;
/// Epochs of changes a subscriber may have waiting before it is dropped.
pub(crate) const QUEUE_EPOCHS: usize = 256;

/// One change to a view's row.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The row's key: a fold view's key, an aggregate's group values.
    pub(crate) key: String,
    /// The row before (`None`: it did not exist).
    pub(crate) old: Option<RecordBatch>,
    /// The row after (`None`: deleted).
    pub(crate) new: Option<RecordBatch>,
}

/// The changes of one epoch to one view.
#[derive(Debug)]
pub(crate) struct EpochChanges {
    /// The epoch that published them.
    pub(crate) epoch: u64,
    /// The changes, at most one per key.
    pub(crate) changes: Vec<Change>,
    /// The view's schema.
    schema: SchemaRef,
    /// Each change as JSON, made once for every subscriber: its upsert (when it has a
    /// new row) and its delete.
    json: std::sync::OnceLock<Vec<(Option<String>, String)>>,
}

impl EpochChanges {
    /// Change `i` as a JSON event (`type`, `epoch`, `key`, and `row` for an upsert).
    pub(crate) fn json(&self, i: usize, upsert: bool) -> &str {
        let all = self.json.get_or_init(|| {
            let rows: Vec<RecordBatch> =
                self.changes.iter().filter_map(|c| c.new.clone()).collect();
            let mut rendered = crate::serve::output::render(
                &self.schema,
                &rows,
                crate::serve::output::OutputFormat::Json,
            )
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<serde_json::Value>>(&b).ok())
            .unwrap_or_default()
            .into_iter();
            self.changes
                .iter()
                .map(|c| {
                    let up = c.new.as_ref().map(|_| {
                        serde_json::json!({"type": "upsert", "epoch": self.epoch, "key": c.key,
                            "row": rendered.next().unwrap_or_default()})
                        .to_string()
                    });
                    let delete =
                        serde_json::json!({"type": "delete", "epoch": self.epoch, "key": c.key})
                            .to_string();
                    (up, delete)
                })
                .collect()
        });
        match (&all[i], upsert) {
            ((Some(up), _), true) => up,
            ((_, delete), _) => delete,
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    /// No such view.
    #[error("no view named '{0}'")]
    NoView(String),
    /// A table view (append-only, retained by time or count).
    #[error("view '{0}' is a table view: subscriptions follow fold and aggregate views")]
    Unsupported(String),
    /// The `where` filter does not parse or plan over the view's columns.
    #[error("the filter does not apply to view '{view}': {why}")]
    BadFilter {
        /// The view.
        view: String,
        /// DataFusion's reason.
        why: String,
    },
    /// The epoch to resume from is no longer (or not) retained.
    #[error(
        "epoch {from} of view '{view}' is not retained (this instance keeps the changes \
         after epoch {since}, up to {newest}): subscribe again without from_epoch"
    )]
    NotRetained {
        /// The view.
        view: String,
        /// The epoch asked for.
        from: u64,
        /// The oldest epoch changes are kept after.
        since: u64,
        /// The newest epoch.
        newest: u64,
    },
}

impl SubscribeError {
    /// The stable code, as HTTP errors carry.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SubscribeError::NoView(_) => "subscribe.no_view",
            SubscribeError::Unsupported(_) => "subscribe.unsupported",
            SubscribeError::BadFilter { .. } => "subscribe.bad_filter",
            SubscribeError::NotRetained { .. } => "subscribe.not_retained",
        }
    }
}

/// Which rows a subscriber wants.
#[derive(Clone, Default)]
pub(crate) struct Filter {
    /// Only this key.
    key: Option<String>,
    /// Only rows for which this is true.
    predicate: Option<Arc<dyn PhysicalExpr>>,
}

impl Filter {
    /// The rows of `batch` the filter keeps.
    fn keep(&self, batch: &RecordBatch, key_of: impl Fn(usize) -> String) -> Vec<bool> {
        let n = batch.num_rows();
        let mut keep = vec![true; n];
        if let Some(k) = &self.key {
            for (i, slot) in keep.iter_mut().enumerate() {
                *slot = key_of(i) == *k;
            }
        }
        if let Some(p) = &self.predicate {
            let mask = p
                .evaluate(batch)
                .and_then(|v| v.into_array(n))
                .ok()
                .and_then(|a| a.as_boolean_opt().cloned())
                .unwrap_or_else(|| BooleanArray::from(vec![false; n]));
            for (i, slot) in keep.iter_mut().enumerate() {
                *slot &= mask.is_valid(i) && mask.value(i);
            }
        }
        keep
    }

    /// Whether the filter keeps the one row of `row` with key `key`.
    fn keeps(&self, row: &RecordBatch, key: &str) -> bool {
        match (&self.key, &self.predicate) {
            (None, None) => true,
            (Some(k), None) => k == key,
            _ => self.keep(row, |_| key.to_string())[0],
        }
    }
}

/// What a subscriber receives.
pub(crate) struct Subscription {
    /// The view's schema.
    pub(crate) schema: SchemaRef,
    /// The view's rows (filtered) at `after`, unless resuming.
    pub(crate) snapshot: Option<Vec<RecordBatch>>,
    /// The epoch the snapshot is of, or resumed from: changes come after it.
    pub(crate) after: u64,
    /// Changes, per epoch (unfiltered: see [`Subscription::filter`]).
    pub(crate) changes: tokio::sync::mpsc::Receiver<Arc<EpochChanges>>,
    /// Set when the hub dropped this subscriber for reading too slowly.
    pub(crate) dropped: Arc<AtomicBool>,
    /// Which rows it wants.
    filter: Filter,
}

impl Subscription {
    /// The changes of `epoch` this subscriber wants: each its index, and whether it is
    /// an upsert (else a delete: the row is gone, or no longer matches).
    pub(crate) fn wanted(&self, epoch: &EpochChanges) -> Vec<(usize, bool)> {
        epoch
            .changes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let now = c.new.as_ref().is_some_and(|r| self.filter.keeps(r, &c.key));
                let before = c.old.as_ref().is_some_and(|r| self.filter.keeps(r, &c.key));
                match (now, before) {
                    (true, _) => Some((i, true)),
                    (false, true) => Some((i, false)),
                    (false, false) => None,
                }
            })
            .collect()
    }
}

/// A subscriber as the hub keeps it.
struct Subscriber {
    tx: tokio::sync::mpsc::Sender<Arc<EpochChanges>>,
    dropped: Arc<AtomicBool>,
}

/// The changes of one subscribed view.
struct Feed {
    /// The published view the next changes are computed against.
    base: Arc<crate::state::view::Published>,
    /// Changes are complete after this epoch.
    since: u64,
    /// The latest changes, oldest first.
    retained: VecDeque<Arc<EpochChanges>>,
    subscribers: Vec<Subscriber>,
}

/// The subscriptions of one pipeline's views.
pub(crate) struct Hub {
    /// Weak: the catalog keeps its hub.
    catalog: std::sync::Weak<Catalog>,
    feeds: Mutex<HashMap<usize, Feed>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// The hub of `catalog`, with its thread (which follows the catalog's epochs for as
    /// long as the hub lives).
    pub(crate) fn start(catalog: &Arc<Catalog>) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            catalog: Arc::downgrade(catalog),
            feeds: Mutex::default(),
        });
        let weak = Arc::downgrade(&hub);
        let mut epochs = catalog.epochs();
        let spawned = std::thread::Builder::new()
            .name("subscriptions".into())
            .spawn(move || {
                while futures::executor::block_on(epochs.changed()).is_ok() {
                    let Some(hub) = weak.upgrade() else { return };
                    hub.publish();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("starting the subscriptions thread: {e}");
        }
        hub
    }

    /// Subscribes to view `name`, with `key` and `filter` (SQL over its columns), from
    /// now (a snapshot first) or after epoch `from`.
    pub(crate) fn subscribe(
        &self,
        name: &str,
        key: Option<String>,
        filter: Option<&str>,
        from: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let Some(catalog) = self.catalog.upgrade() else {
            return Err(SubscribeError::NoView(name.to_string()));
        };
        let v = catalog
            .index_of(name)
            .ok_or_else(|| SubscribeError::NoView(name.to_string()))?;
        let spec = &catalog.views[v];
        if matches!(spec.kind, ViewKind::Table(_)) {
            return Err(SubscribeError::Unsupported(name.to_string()));
        }
        let schema = catalog.schemas[v].clone();
        let predicate = match filter {
            None => None,
            Some(sql) => {
                Some(
                    predicate(&schema, sql).map_err(|why| SubscribeError::BadFilter {
                        view: name.to_string(),
                        why,
                    })?,
                )
            }
        };
        let filter = Filter { key, predicate };
        let dropped = Arc::new(AtomicBool::new(false));
        let mut feeds = self.feeds.lock().expect("subscription feeds lock");
        let feed = feeds.entry(v).or_insert_with(|| {
            let base = catalog.current();
            Feed {
                since: base.epoch,
                base,
                retained: VecDeque::new(),
                subscribers: Vec::new(),
            }
        });
        let newest = feed.base.epoch;
        let mut pending = Vec::new();
        let (snapshot, after) = match from {
            None => {
                let rows = rows(spec, &feed.base.views[v]);
                let kept = rows
                    .into_iter()
                    .filter_map(|b| {
                        // Keys are formatted only for a key filter.
                        let keys = filter.key.is_some().then(|| keys_of(spec, &b));
                        let keep = filter.keep(&b, |i| {
                            keys.as_ref().map_or_else(String::new, |k| k[i].clone())
                        });
                        let mask = BooleanArray::from(keep);
                        arrow::compute::filter_record_batch(&b, &mask).ok()
                    })
                    .filter(|b| b.num_rows() > 0)
                    .collect();
                (Some(kept), newest)
            }
            Some(from) => {
                if from < feed.since || from > newest {
                    return Err(SubscribeError::NotRetained {
                        view: name.to_string(),
                        from,
                        since: feed.since,
                        newest,
                    });
                }
                pending.extend(feed.retained.iter().filter(|e| e.epoch > from).cloned());
                (None, from)
            }
        };
        // Room for the retained epochs it resumes with, and its own queue.
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE_EPOCHS + pending.len());
        for e in pending {
            let _ = tx.try_send(e);
        }
        feed.subscribers.push(Subscriber {
            tx,
            dropped: dropped.clone(),
        });
        Ok(Subscription {
            schema,
            snapshot,
            after,
            changes: rx,
            dropped,
            filter,
        })
    }

    /// Subscribers now (for /metrics and the bench).
    pub(crate) fn subscribers(&self) -> usize {
        let feeds = self.feeds.lock().expect("subscription feeds lock");
        feeds.values().map(|f| f.subscribers.len()).sum()
    }

    /// Computes and sends the changes of the newest epoch to every subscribed view.
    fn publish(&self) {
        let Some(catalog) = self.catalog.upgrade() else {
            return;
        };
        let current = catalog.current();
        let mut feeds = self.feeds.lock().expect("subscription feeds lock");
        feeds.retain(|_, f| {
            f.subscribers.retain(|s| !s.tx.is_closed());
            !f.subscribers.is_empty() || !f.retained.is_empty()
        });
        for (&v, feed) in feeds.iter_mut() {
            if current.epoch <= feed.base.epoch {
                continue;
            }
            let spec = &catalog.views[v];
            let changes = Arc::new(EpochChanges {
                epoch: current.epoch,
                changes: diff(spec, &feed.base.views[v], &current.views[v]),
                schema: catalog.schemas[v].clone(),
                json: std::sync::OnceLock::new(),
            });
            feed.base = current.clone();
            feed.retained.push_back(changes.clone());
            while feed.retained.len() > RETAINED_EPOCHS {
                if let Some(gone) = feed.retained.pop_front() {
                    feed.since = gone.epoch;
                }
            }
            feed.subscribers
                .retain(|s| match s.tx.try_send(changes.clone()) {
                    Ok(()) => true,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        // Too slow: it reads what is queued, then learns it was dropped.
                        s.dropped.store(true, Ordering::Relaxed);
                        false
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                });
        }
    }
}

/// The SQL `filter` as an expression over a view's columns.
fn predicate(schema: &SchemaRef, filter: &str) -> Result<Arc<dyn PhysicalExpr>, String> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(|e| e.to_string())?;
    let ctx = SessionContext::new();
    let expr = ctx
        .parse_sql_expr(filter, &df_schema)
        .map_err(|e| e.to_string())?;
    ctx.create_physical_expr(expr, &df_schema)
        .map_err(|e| e.to_string())
}

/// A view's rows at one epoch.
fn rows(spec: &ViewSpec, view: &PublishedView) -> Vec<RecordBatch> {
    view.partitions(spec, None)
        .map(|p| p.into_iter().flatten().collect())
        .unwrap_or_default()
}

/// The key of each row of `batch`: a fold view's key column, an aggregate's group
/// values (separated by U+001F).
fn keys_of(spec: &ViewSpec, batch: &RecordBatch) -> Vec<String> {
    let columns = match &spec.kind {
        ViewKind::Aggregate(a) => a.group_by.len(),
        _ => 1,
    };
    let options = FormatOptions::default().with_null("");
    let formatters: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .take(columns)
        .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
        .collect();
    (0..batch.num_rows())
        .map(|r| {
            formatters
                .iter()
                .map(|f| f.value(r).to_string())
                .collect::<Vec<_>>()
                .join("\u{1f}")
        })
        .collect()
}

/// The rows that differ between two epochs of a view, by key.
fn diff(spec: &ViewSpec, old: &PublishedView, new: &PublishedView) -> Vec<Change> {
    match &spec.kind {
        ViewKind::Fold(_) => fold_diff(old, new),
        _ => keyed_diff(spec, &rows(spec, old), &rows(spec, new)),
    }
}

/// Identity of a fold chunk: its key column's allocation (unchanged chunks are shared
/// between epochs, so they keep it).
fn chunk_id(batch: &RecordBatch) -> usize {
    Arc::as_ptr(batch.column(0)) as *const () as usize
}

fn fold_chunks(view: &PublishedView) -> Vec<&RecordBatch> {
    view.parts
        .iter()
        .flat_map(|p| match p {
            crate::state::view::WorkerViewData::Fold(chunks) => {
                chunks.iter().map(|c| &c.batch).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// A fold view's changes: the rows of the chunks rebuilt since `old`, compared by key.
fn fold_diff(old: &PublishedView, new: &PublishedView) -> Vec<Change> {
    let (old_chunks, new_chunks) = (fold_chunks(old), fold_chunks(new));
    let old_ids: HashSet<usize> = old_chunks.iter().map(|b| chunk_id(b)).collect();
    let new_ids: HashSet<usize> = new_chunks.iter().map(|b| chunk_id(b)).collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for b in new_chunks
        .iter()
        .filter(|b| !old_ids.contains(&chunk_id(b)))
    {
        let Some(keys) = b.column(0).as_string_opt::<i32>() else {
            continue;
        };
        for r in 0..b.num_rows() {
            let key = keys.value(r);
            let row = b.slice(r, 1);
            let before = old.lookup(key, None).and_then(|v| v.into_iter().next());
            if before.as_ref() != Some(&row) {
                seen.insert(key.to_string());
                out.push(Change {
                    key: key.to_string(),
                    old: before,
                    new: Some(row),
                });
            }
        }
    }
    for b in old_chunks
        .iter()
        .filter(|b| !new_ids.contains(&chunk_id(b)))
    {
        let Some(keys) = b.column(0).as_string_opt::<i32>() else {
            continue;
        };
        for r in 0..b.num_rows() {
            let key = keys.value(r);
            let gone = new.lookup(key, None).is_none_or(|v| v.is_empty());
            if gone && !seen.contains(key) {
                out.push(Change {
                    key: key.to_string(),
                    old: Some(b.slice(r, 1)),
                    new: None,
                });
            }
        }
    }
    out
}

/// Changes between two small keyed row sets (an aggregate's groups).
fn keyed_diff(spec: &ViewSpec, old: &[RecordBatch], new: &[RecordBatch]) -> Vec<Change> {
    let index = |batches: &[RecordBatch]| -> HashMap<String, RecordBatch> {
        batches
            .iter()
            .flat_map(|b| {
                keys_of(spec, b)
                    .into_iter()
                    .enumerate()
                    .map(|(r, k)| (k, b.slice(r, 1)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (before, after) = (index(old), index(new));
    let mut out: Vec<Change> = after
        .iter()
        .filter(|(k, row)| before.get(*k) != Some(row))
        .map(|(k, row)| Change {
            key: k.clone(),
            old: before.get(k).cloned(),
            new: Some(row.clone()),
        })
        .collect();
    out.extend(
        before
            .iter()
            .filter(|(k, _)| !after.contains_key(*k))
            .map(|(k, row)| Change {
                key: k.clone(),
                old: Some(row.clone()),
                new: None,
            }),
    );
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}
