//! Views as Arrow: schemas, per-worker snapshots, and the published epoch.
//!
//! Fold views are built into one `RecordBatch` per worker at each epoch. Aggregate
//! views publish each worker's partial aggregates; a query merges the partials of all
//! workers (two-phase aggregation), once per epoch, and caches the result. Table views
//! are built incrementally and retained across workers at publish (see [`table`]).

pub mod arrow;
pub mod table;

use self::arrow::{ColumnBuilder, arrow_type};
use ::arrow::array::RecordBatch;
use ::arrow::datatypes::{Field, Schema, SchemaRef};
use projector_operators::aggregate::AggregateSpec;
use projector_operators::projection::{AggState, PartitionState, ViewState};
use projector_operators::value::ColumnType;
use projector_operators::view::{ViewKind, ViewSpec};
use std::collections::BTreeMap;
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
    /// The rows of the keys this worker owns.
    Fold(RecordBatch),
    /// This worker's partial aggregates, all its partitions merged.
    Aggregate(Arc<AggState>),
    /// This worker's table rows, in chunks.
    Table(Arc<table::TablePart>),
}

/// Builds worker `partitions`' part of view number `v`.
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
pub fn build_worker_view_from(
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
        ViewKind::Fold(f) => {
            let rows: usize = partitions
                .values()
                .map(|p| match &p.views[v] {
                    ViewState::Fold(s) => s.rows.len(),
                    _ => 0,
                })
                .sum();
            let mut key = ColumnBuilder::new(ColumnType::String, rows);
            let mut cols: Vec<ColumnBuilder> = f
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(c.ty, rows))
                .collect();
            for p in partitions.values() {
                if let ViewState::Fold(s) = &p.views[v] {
                    for (k, row) in &s.rows {
                        key.append(&projector_operators::value::Value::Str(k.clone()));
                        for (b, val) in cols.iter_mut().zip(row.iter()) {
                            b.append(val);
                        }
                    }
                }
            }
            let arrays = std::iter::once(key.finish())
                .chain(cols.into_iter().map(ColumnBuilder::finish))
                .collect();
            WorkerViewData::Fold(
                RecordBatch::try_new(view_schema(spec), arrays).expect("columns match the schema"),
            )
        }
        ViewKind::Aggregate(_) => {
            let mut merged = AggState::default();
            for p in partitions.values() {
                if let ViewState::Aggregate(s) = &p.views[v] {
                    merged.merge(s);
                }
            }
            WorkerViewData::Aggregate(Arc::new(merged))
        }
    }
}

/// Finishes merged partials into the rows of an aggregate view.
///
/// A view without `group_by` is a global aggregate: like SQL's `SELECT count(*) FROM t`,
/// it has exactly one row, also before any event matched (counts 0, the rest null).
///
/// Fails when a merged value does not fit its column (an int64 `sum` over int64).
pub fn finish_aggregate(
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
    /// A table view's rows, retention applied across workers (built on first use).
    retained: OnceLock<Vec<Vec<RecordBatch>>>,
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

    /// The view's rows as partitions for a scan: one per worker for folds, a single
    /// merged partition for aggregates (merged on first use, then cached).
    ///
    /// Fails when merged aggregates do not fit their columns (see [`finish_aggregate`]).
    pub fn partitions(&self, spec: &ViewSpec) -> Result<Vec<Vec<RecordBatch>>, String> {
        Ok(match &spec.kind {
            ViewKind::Fold(_) => self
                .parts
                .iter()
                .map(|p| match p {
                    WorkerViewData::Fold(b) => vec![b.clone()],
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
                .clone(),
            ViewKind::Aggregate(a) => {
                let batch = self.merged.get_or_init(|| {
                    let mut all = AggState::default();
                    for p in &self.parts {
                        if let WorkerViewData::Aggregate(s) = p {
                            all.merge(s);
                        }
                    }
                    finish_aggregate(spec, a, &all)
                });
                vec![vec![batch.clone()?]]
            }
        })
    }

    /// Number of rows (`None` when the view cannot be built, see [`Self::partitions`]).
    pub fn row_count(&self, spec: &ViewSpec) -> Option<usize> {
        let parts = self.partitions(spec).ok()?;
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
}
