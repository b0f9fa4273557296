//! Views as Arrow: schemas, per-worker snapshots, and the published epoch.
//!
//! Fold views are built into one `RecordBatch` per chunk of rows; at each epoch a
//! worker rebuilds only the chunks that changed. Aggregate
//! views publish each worker's partial aggregates; a query merges the partials of all
//! workers (two-phase aggregation), once per epoch, and caches the result. Table views
//! are built incrementally and retained across workers at publish (see [`table`]).

pub(crate) mod columns;
pub(crate) mod table;

use self::columns::{ColumnBuilder, arrow_type};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use projector_operators::aggregate::AggregateSpec;
use projector_operators::park::Parked;
use projector_operators::projection::{AggState, FastMap, PartitionState, ViewState};
use projector_operators::rows::Row;
use projector_operators::value::{ColumnType, Value};
use projector_operators::view::{ViewKind, ViewSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// The Arrow schema of a view.
pub fn view_schema(spec: &ViewSpec) -> SchemaRef {
    let fields: Vec<Field> = match &spec.kind {
        ViewKind::Fold(f) => std::iter::once(Field::new(
            &f.key_column,
            arrow_type(ColumnType::String),
            false,
        ))
        .chain(
            f.columns
                .iter()
                .map(|c| Field::new(&c.name, arrow_type(c.ty), true)),
        )
        .chain(f.parked_column.then(|| {
            Field::new(
                projector_operators::fold::PARKED_COLUMN,
                arrow_type(ColumnType::Bool),
                false,
            )
        }))
        .collect(),
        ViewKind::Aggregate(a) => a
            .group_by
            .iter()
            .map(|g| Field::new(&g.name, arrow_type(g.ty), true))
            .chain(a.columns.iter().map(|c| {
                let counts = matches!(
                    c.func,
                    projector_operators::expr::AggFn::Count
                        | projector_operators::expr::AggFn::CountStar
                );
                Field::new(&c.name, arrow_type(c.ty), !counts)
            }))
            .collect(),
        ViewKind::Table(t) => t
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.ty), true))
            .collect(),
    };
    Arc::new(Schema::new(fields))
}

/// One worker's part of one view at one epoch.
#[derive(Debug, Clone)]
pub enum WorkerViewData {
    /// The rows of the keys this worker owns, one batch per chunk of rows (see
    /// [`projector_operators::rows`]): unchanged chunks are shared between epochs.
    Fold(Vec<FoldChunk>),
    /// This worker's partial aggregates, per source partition.
    Aggregate(Vec<(u32, Arc<AggState>)>),
    /// This worker's table rows, in chunks.
    Table(Arc<table::TablePart>),
}

/// Builds worker `partitions`' part of view number `v` from scratch.
pub fn build_worker_view(
    spec: &ViewSpec,
    v: usize,
    partitions: &BTreeMap<u32, PartitionState>,
) -> WorkerViewData {
    build_worker_view_from(spec, v, partitions, None)
}

/// Builds worker `partitions`' part of view number `v`, reusing what `previous` (this
/// worker's part of the same view at an earlier epoch) holds of it where it can (table
/// views: only the rows appended since are built).
pub(crate) fn build_worker_view_from(
    spec: &ViewSpec,
    v: usize,
    partitions: &BTreeMap<u32, PartitionState>,
    previous: Option<&WorkerViewData>,
) -> WorkerViewData {
    match &spec.kind {
        ViewKind::Table(t) => {
            let previous = match previous {
                Some(WorkerViewData::Table(p)) => Some(&**p),
                _ => None,
            };
            WorkerViewData::Table(Arc::new(table::build(
                t,
                &view_schema(spec),
                v,
                partitions,
                previous,
            )))
        }
        ViewKind::Fold(_) => {
            let schema = view_schema(spec);
            WorkerViewData::Fold(
                partitions
                    .iter()
                    .filter_map(|(id, p)| match &p.views[v] {
                        ViewState::Fold(s) => Some((*id, s, &p.parked)),
                        _ => None,
                    })
                    .flat_map(|(id, s, parked)| {
                        let schema = &schema;
                        (0..s.chunks()).filter_map(move |c| {
                            build_fold_chunk(spec, schema, id, s.chunk(c), parked)
                        })
                    })
                    .collect(),
            )
        }
        ViewKind::Aggregate(_) => WorkerViewData::Aggregate(
            partitions
                .iter()
                .filter_map(|(id, p)| match &p.views[v] {
                    ViewState::Aggregate(s) => Some((*id, Arc::new(s.clone()))),
                    _ => None,
                })
                .collect(),
        ),
    }
}

/// A chunk of a fold view's rows, with an index from key to row, so that a lookup by
/// key does not scan the view.
#[derive(Debug, Clone)]
pub struct FoldChunk {
    /// The source partition the rows' keys belong to.
    pub partition: u32,
    /// The rows; column 0 is the key.
    pub batch: RecordBatch,
    index: Arc<hashbrown::HashTable<u32>>,
}

/// Hashes keys for the chunk indexes.
fn key_hash(key: &str) -> u64 {
    static STATE: OnceLock<ahash::RandomState> = OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new).hash_one(key)
}

impl FoldChunk {
    fn new(partition: u32, batch: RecordBatch) -> Self {
        let keys = batch
            .column(0)
            .as_string_opt::<i32>()
            .expect("column 0 of a fold view is its string key");
        let mut index = hashbrown::HashTable::with_capacity(keys.len());
        for (row, key) in keys.iter().enumerate() {
            let key = key.expect("keys are never null");
            index.insert_unique(key_hash(key), row as u32, |&r| {
                key_hash(keys.value(r as usize))
            });
        }
        FoldChunk {
            partition,
            batch,
            index: Arc::new(index),
        }
    }

    /// The row of `key` (whose [`key_hash`] is `hash`) in this chunk, if it is here.
    fn lookup(&self, key: &str, hash: u64) -> Option<RecordBatch> {
        let keys = self.batch.column(0).as_string_opt::<i32>()?;
        self.index
            .find(hash, |&r| keys.value(r as usize) == key)
            .map(|&r| self.batch.slice(r as usize, 1))
    }
}

/// One chunk of a fold view's rows of source partition `partition` (`None` when the
/// chunk has no rows); `schema` is the view's ([`view_schema`]), made once by the
/// caller for all its chunks. `parked`: the partition's parked keys, whose rows the
/// `_parked` column marks (when the view has it).
pub fn build_fold_chunk<'a>(
    spec: &ViewSpec,
    schema: &SchemaRef,
    partition: u32,
    rows: impl Iterator<Item = &'a Row> + Clone,
    parked: &FastMap<Arc<str>, Parked>,
) -> Option<FoldChunk> {
    let ViewKind::Fold(f) = &spec.kind else {
        return None;
    };
    // Sizes first, so no builder grows (and copies) while it is filled.
    let (mut n, mut key_bytes) = (0, 0);
    let mut str_bytes = vec![0usize; f.columns.len()];
    for r in rows.clone() {
        n += 1;
        key_bytes += r.key.len();
        for (b, v) in str_bytes.iter_mut().zip(r.values.iter()) {
            if let Value::Str(s) = v {
                *b += s.len();
            }
        }
    }
    if n == 0 {
        return None;
    }
    let mut key = ColumnBuilder::with_bytes(ColumnType::String, n, key_bytes);
    let mut cols: Vec<ColumnBuilder> = f
        .columns
        .iter()
        .zip(&str_bytes)
        .map(|(c, b)| ColumnBuilder::with_bytes(c.ty, n, *b))
        .collect();
    let mut marks = f
        .parked_column
        .then(|| ColumnBuilder::new(ColumnType::Bool, n));
    for r in rows {
        key.append_str(&r.key);
        for (b, val) in cols.iter_mut().zip(r.values.iter()) {
            b.append(val);
        }
        if let Some(m) = &mut marks {
            m.append(&Value::Bool(parked.contains_key(&r.key)));
        }
    }
    let arrays = std::iter::once(key.finish())
        .chain(cols.into_iter().map(ColumnBuilder::finish))
        .chain(marks.map(ColumnBuilder::finish))
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays).expect("columns match the schema");
    Some(FoldChunk::new(partition, batch))
}

/// Finishes merged partials into the rows of an aggregate view.
///
/// A view without `group_by` is a global aggregate: like SQL's `SELECT count(*) FROM t`,
/// it has exactly one row, also before any event matched (counts 0, the rest null).
///
/// Fails when a merged value does not fit its column (an int64 `sum` over int64).
pub(crate) fn finish_aggregate(
    spec: &ViewSpec,
    agg: &AggregateSpec,
    state: &AggState,
) -> Result<RecordBatch, String> {
    if agg.group_by.is_empty() && state.groups.is_empty() {
        let mut empty = AggState::default();
        let accs = agg
            .columns
            .iter()
            .map(projector_operators::aggregate::Acc::new)
            .collect();
        empty.groups.insert(Box::default(), accs);
        return finish_aggregate(spec, agg, &empty);
    }
    let rows = state.groups.len();
    let mut groups: Vec<ColumnBuilder> = agg
        .group_by
        .iter()
        .map(|g| ColumnBuilder::new(g.ty, rows))
        .collect();
    let mut cols: Vec<ColumnBuilder> = agg
        .columns
        .iter()
        .map(|c| ColumnBuilder::new(c.ty, rows))
        .collect();
    for (g, accs) in &state.groups {
        for (b, v) in groups.iter_mut().zip(g.iter()) {
            b.append(v);
        }
        for (i, (b, acc)) in cols.iter_mut().zip(accs.iter()).enumerate() {
            let v = acc.finish().map_err(|e| {
                format!(
                    "view '{}', column '{}': {e}",
                    spec.name, agg.columns[i].name
                )
            })?;
            b.append(&v);
        }
    }
    let arrays = groups
        .into_iter()
        .chain(cols)
        .map(ColumnBuilder::finish)
        .collect();
    Ok(RecordBatch::try_new(view_schema(spec), arrays).expect("columns match the schema"))
}

/// One view at one published epoch.
#[derive(Debug)]
pub struct PublishedView {
    /// Per worker, that worker's part.
    pub parts: Vec<WorkerViewData>,
    merged: OnceLock<Result<RecordBatch, String>>,
    /// A table view's rows with their source partitions, retention applied across
    /// workers (built on first use).
    retained: OnceLock<Vec<Vec<(u32, RecordBatch)>>>,
}

/// Which source partitions a read takes rows from: `None` for all of them.
pub type Only<'a> = Option<&'a BTreeSet<u32>>;

fn wanted(only: Only<'_>, partition: u32) -> bool {
    only.is_none_or(|o| o.contains(&partition))
}

impl PublishedView {
    /// A view made of the workers' parts.
    pub fn new(parts: Vec<WorkerViewData>) -> Self {
        PublishedView {
            parts,
            merged: OnceLock::new(),
            retained: OnceLock::new(),
        }
    }

    /// The view's rows of the source partitions `only` names (all when `None`) as
    /// partitions for a scan: one per worker for folds and tables, a single merged
    /// partition for aggregates (merged on first use and cached when all partitions
    /// are read).
    ///
    /// Fails when merged aggregates do not fit their columns (see `finish_aggregate`).
    pub fn partitions(
        &self,
        spec: &ViewSpec,
        only: Only<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, String> {
        Ok(match &spec.kind {
            ViewKind::Fold(_) => self
                .parts
                .iter()
                .map(|p| match p {
                    WorkerViewData::Fold(b) => b
                        .iter()
                        .filter(|c| wanted(only, c.partition))
                        .map(|c| c.batch.clone())
                        .collect(),
                    _ => vec![],
                })
                .collect(),
            ViewKind::Table(t) => self
                .retained
                .get_or_init(|| {
                    let parts: Vec<&table::TablePart> = self
                        .parts
                        .iter()
                        .filter_map(|p| match p {
                            WorkerViewData::Table(t) => Some(&**t),
                            _ => None,
                        })
                        .collect();
                    table::publish(t, &parts)
                })
                .iter()
                .map(|worker| {
                    worker
                        .iter()
                        .filter(|(p, _)| wanted(only, *p))
                        .map(|(_, b)| b.clone())
                        .collect()
                })
                .collect(),
            ViewKind::Aggregate(a) => {
                let batch = match only {
                    None => self
                        .merged
                        .get_or_init(|| finish_aggregate(spec, a, &self.partials(None)))
                        .clone()?,
                    Some(_) => finish_aggregate(spec, a, &self.partials(only))?,
                };
                vec![vec![batch]]
            }
        })
    }

    /// An aggregate view's partials of the partitions `only` names, merged (empty for
    /// other views).
    pub fn partials(&self, only: Only<'_>) -> AggState {
        let mut all = AggState::default();
        for p in &self.parts {
            if let WorkerViewData::Aggregate(parts) = p {
                for (_, s) in parts.iter().filter(|(id, _)| wanted(only, *id)) {
                    all.merge(s);
                }
            }
        }
        all
    }

    /// The rows whose key (column 0) is `key` among the partitions `only` names, for
    /// a fold view: found through the chunk indexes, without a scan. `None` for an
    /// aggregate view.
    pub fn lookup(&self, key: &str, only: Only<'_>) -> Option<Vec<RecordBatch>> {
        let mut out = Vec::new();
        // Hashed once for every chunk's index.
        let hash = key_hash(key);
        for p in &self.parts {
            match p {
                WorkerViewData::Fold(chunks) => out.extend(
                    chunks
                        .iter()
                        .filter(|c| wanted(only, c.partition))
                        .filter_map(|c| c.lookup(key, hash)),
                ),
                _ => return None,
            }
        }
        Some(out)
    }

    /// Number of rows (`None` when the view cannot be built, see [`Self::partitions`]).
    pub fn row_count(&self, spec: &ViewSpec) -> Option<usize> {
        let parts = self.partitions(spec, None).ok()?;
        Some(parts.iter().flatten().map(|b| b.num_rows()).sum())
    }
}

/// Every view at one epoch: what SQL reads. Immutable once published.
#[derive(Debug)]
pub struct Published {
    /// The epoch number (0 = nothing published yet).
    pub epoch: u64,
    /// One entry per view, in pipeline order.
    pub views: Vec<PublishedView>,
    /// Next offset per source partition covered by this epoch.
    pub offsets: Vec<u64>,
    /// The source partitions whose rows this epoch holds: the ones this instance owned
    /// when the epoch was cut. A query needs the others from the instances that own
    /// them.
    pub present: BTreeSet<u32>,
}
