//! The projection: applies one decoded event to every view of a pipeline, atomically.
//!
//! Application is two-phase. *Plan* evaluates every expression and checks every type
//! against the current state without changing it; *commit* writes the planned changes.
//! So an event that fails anywhere (a wrong type in the second view, say) changes no
//! view at all, and goes to the dead-letter destination instead.

use crate::aggregate::{Acc, AccError, AggregateSpec};
use crate::dedup::{RecentIds, Window};
use crate::envelope::{Envelope, EnvelopeError, TOMBSTONE_TYPE, key_text, timestamp_millis};
use crate::expr::{AggFn, EvalError, Expr};
use crate::fields::{FieldId, FieldRegistry};
use crate::fold::{FoldSpec, Handler};
use crate::park::Parked;
use crate::table::{TableRow, TableSpec, TableState};
use crate::value::{ColumnType, TypeError, Value};
use crate::view::{ViewKind, ViewSpec};
use std::sync::Arc;

/// 2^63 as a float: the first integer above `i64::MAX`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Hash map used for per-key and per-group state (ahash: fast, DoS-resistant seeds).
pub type FastMap<K, V> = hashbrown::HashMap<K, V, ahash::RandomState>;

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to every view.
    Applied,
    /// Its version was not newer than the last applied for its key: skipped.
    Duplicate,
}

/// Why an event could not be applied. Carries a stable code for dead letters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// An envelope field is missing or malformed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// An expression failed on this event.
    #[error("view '{view}', column '{column}': {source}")]
    Eval {
        /// View name.
        view: String,
        /// Column (or `filter` / group column) name.
        column: String,
        /// The failure.
        source: EvalError,
    },
    /// A value does not fit its column.
    #[error("view '{view}', column '{column}': {source}")]
    Type {
        /// View name.
        view: String,
        /// Column name.
        column: String,
        /// The mismatch.
        source: TypeError,
    },
    /// Arithmetic overflow in `add` or `sum`.
    #[error("view '{view}', column '{column}': {source}")]
    Overflow {
        /// View name.
        view: String,
        /// Column name.
        column: String,
        /// What overflowed.
        source: Overflow,
    },
}

/// An int64 fold `add` or aggregate `sum` that overflows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Overflow {
    /// A fold `add` whose result does not fit in int64.
    #[error("{current} + {value} overflows int64")]
    Add {
        /// The column's value.
        current: i64,
        /// The value added.
        value: i64,
    },
    /// An aggregate `sum`.
    #[error("{0}")]
    Sum(#[from] AccError),
}

impl ApplyError {
    /// Stable error code, e.g. `apply.missing_key`.
    pub fn code(&self) -> &'static str {
        match self {
            ApplyError::Envelope(e) => e.code(),
            ApplyError::Eval { .. } => "apply.expression",
            ApplyError::Type { .. } => "apply.type_mismatch",
            ApplyError::Overflow { .. } => "apply.overflow",
        }
    }
}

pub use crate::rows::FoldState;

/// State of one aggregate view for one source partition: partials per group.
#[derive(Debug, Clone, Default)]
pub struct AggState {
    /// Accumulators (in [`AggregateSpec::columns`] order) by group-by values.
    pub groups: FastMap<Box<[Value]>, Box<[Acc]>>,
}

impl AggState {
    /// Merges another partition's or worker's partials into this one.
    pub fn merge(&mut self, other: &AggState) {
        for (group, accs) in &other.groups {
            match self.groups.get_mut(group) {
                Some(mine) => mine
                    .iter_mut()
                    .zip(accs.iter())
                    .for_each(|(a, b)| a.merge(b)),
                None => {
                    self.groups.insert(group.clone(), accs.clone());
                }
            }
        }
    }
}

/// State of one view.
#[derive(Debug, Clone)]
pub enum ViewState {
    /// A fold view's rows.
    Fold(FoldState),
    /// An aggregate view's partials.
    Aggregate(AggState),
    /// A table view's rows.
    Table(TableState),
}

/// Everything one source partition's events produced: the unit of checkpoint and hand-off.
#[derive(Debug, Clone)]
pub struct PartitionState {
    /// Last applied version per key (only when the envelope maps `version`) of the
    /// partition's first stream: the only one, unless its events come from several
    /// topics (see [`Projection::apply_in`]). Kept apart from the rows, so a deleted
    /// row still remembers it.
    pub versions: FastMap<Arc<str>, i64>,
    /// The same for its other streams (index = stream - 1); empty for one stream.
    pub stream_versions: Vec<FastMap<Arc<str>, i64>>,
    /// Per key, the ids of its recent events (only with `dedup:`).
    pub dedup: FastMap<Arc<str>, RecentIds>,
    /// The parked keys (only with `on_error: park`): the failing event and the
    /// events held since.
    pub parked: FastMap<Arc<str>, Parked>,
    /// Per key, the dead letters replayed into this state (stream, offset), so a
    /// replay applies each once (`projector dead-letters replay`).
    pub redriven: FastMap<Arc<str>, Vec<(u16, u64)>>,
    /// One state per view, in pipeline order.
    pub views: Vec<ViewState>,
}

impl PartitionState {
    /// The versions of `stream` (see [`Projection::apply_in`]).
    fn versions_of(&self, stream: u16) -> &FastMap<Arc<str>, i64> {
        static NONE: std::sync::OnceLock<FastMap<Arc<str>, i64>> = std::sync::OnceLock::new();
        match stream {
            0 => &self.versions,
            s => self
                .stream_versions
                .get(usize::from(s) - 1)
                .unwrap_or_else(|| NONE.get_or_init(FastMap::default)),
        }
    }

    fn versions_of_mut(&mut self, stream: u16) -> &mut FastMap<Arc<str>, i64> {
        match usize::from(stream) {
            0 => &mut self.versions,
            s => {
                if self.stream_versions.len() < s {
                    self.stream_versions.resize_with(s, FastMap::default);
                }
                &mut self.stream_versions[s - 1]
            }
        }
    }
}

/// A pipeline's views, compiled for application.
#[derive(Debug, Clone)]
pub struct Projection {
    envelope: Envelope,
    views: Vec<ViewSpec>,
    names: EnvelopeNames,
    /// Per stream: its events have no version (a topic whose envelope maps none),
    /// so they are not version-guarded. Empty: every stream has one when the
    /// envelope maps it.
    unversioned: Vec<bool>,
    /// `dedup:`: the event ids each key remembers, to drop repeats.
    dedup: Option<Window>,
}

/// The field paths the envelope reads, as written in the pipeline, for error messages.
#[derive(Debug, Clone)]
struct EnvelopeNames {
    key: String,
    event_type: String,
    version: String,
    timestamp: String,
}

/// Reusable buffers for planning, so applying an event does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Per fold view: planned (column, new value) writes.
    fold: Vec<FoldPlan>,
    /// Per aggregate view: group values and per-column inputs.
    agg: Vec<AggPlan>,
    /// Per table view: the planned row.
    table: Vec<TablePlan>,
}

#[derive(Debug, Default)]
struct TablePlan {
    matched: bool,
    values: Vec<Value>,
}

#[derive(Debug, Default)]
struct FoldPlan {
    /// The key's slot in the view's state, found while planning.
    slot: Option<usize>,
    touched: bool,
    delete: bool,
    writes: Vec<(usize, Value)>,
}

#[derive(Debug, Default)]
struct AggPlan {
    matched: bool,
    group: Vec<Value>,
    inputs: Vec<Value>,
}

impl Projection {
    /// Compiles the views of a pipeline. `fields` is the registry the envelope and the
    /// views' expressions were interned in; errors name envelope fields by their paths.
    pub fn new(envelope: Envelope, views: Vec<ViewSpec>, fields: &FieldRegistry) -> Self {
        let name = |id: Option<FieldId>| id.map(|f| fields.path(f).to_string()).unwrap_or_default();
        let names = EnvelopeNames {
            key: name(Some(envelope.key)),
            event_type: name(Some(envelope.event_type)),
            version: name(envelope.version),
            timestamp: name(envelope.timestamp),
        };
        Projection {
            envelope,
            views,
            names,
            unversioned: Vec::new(),
            dedup: None,
        }
    }

    /// Drops repeats of an event id within `window` (per key): an event whose id its
    /// key remembers is a duplicate. Needs the envelope's `id` slot.
    pub fn with_dedup(mut self, window: Window) -> Self {
        self.dedup = Some(window);
        self
    }

    /// The dedup window, if events are deduplicated by id.
    pub fn dedup(&self) -> Option<Window> {
        self.dedup
    }

    /// Marks the streams (by index) whose events carry no version although the
    /// envelope maps one: a topic whose envelope says `version: ~`. Their events are
    /// applied without the version guard.
    pub fn with_unversioned_streams(mut self, unversioned: Vec<bool>) -> Self {
        self.unversioned = unversioned;
        self
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The views, in pipeline order.
    pub fn views(&self) -> &[ViewSpec] {
        &self.views
    }

    /// Empty state for a new source partition.
    pub fn new_partition_state(&self) -> PartitionState {
        PartitionState {
            versions: FastMap::default(),
            stream_versions: Vec::new(),
            dedup: FastMap::default(),
            parked: FastMap::default(),
            redriven: FastMap::default(),
            views: self
                .views
                .iter()
                .map(|v| match v.kind {
                    ViewKind::Fold(_) => ViewState::Fold(FoldState::default()),
                    ViewKind::Aggregate(_) => ViewState::Aggregate(AggState::default()),
                    ViewKind::Table(_) => ViewState::Table(TableState::default()),
                })
                .collect(),
        }
    }

    /// Fresh scratch buffers sized for this projection.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            fold: self.views.iter().map(|_| FoldPlan::default()).collect(),
            agg: self.views.iter().map(|_| AggPlan::default()).collect(),
            table: self.views.iter().map(|_| TablePlan::default()).collect(),
        }
    }

    /// Reads the routing key of a decoded event.
    pub fn key<'e>(&self, event: &'e [Value]) -> Result<&'e Value, EnvelopeError> {
        let v = &event[self.envelope.key.index()];
        match v {
            Value::Str(_) | Value::Int(_) => Ok(v),
            Value::Null => Err(EnvelopeError::MissingKey(self.names.key.clone())),
            other => Err(EnvelopeError::BadKey(other.kind())),
        }
    }

    /// Applies one decoded event to every view of `state`, or to none.
    ///
    /// Without a source position, table rows are ordered by arrival in `state` (see
    /// [`Projection::apply_at`]); fine for one state, as in tests and benchmarks.
    pub fn apply(
        &self,
        state: &mut PartitionState,
        scratch: &mut Scratch,
        event: &[Value],
    ) -> Result<Outcome, ApplyError> {
        self.apply_at(state, scratch, event, None)
    }

    /// Applies one decoded event, read at `offset` of its source partition, to every
    /// view of `state`, or to none. The offset orders table rows (retention keeps the
    /// newest by offset); `None` numbers them by arrival in `state`.
    pub fn apply_at(
        &self,
        state: &mut PartitionState,
        scratch: &mut Scratch,
        event: &[Value],
        offset: Option<u64>,
    ) -> Result<Outcome, ApplyError> {
        self.apply_in(state, scratch, event, offset, 0)
    }

    /// Like [`Projection::apply_at`], for an event of `stream`: when one state takes
    /// the events of several topics (partition N of each), each topic is a stream, and
    /// the version guard compares an event's version only with the versions of its own
    /// stream (per key per topic): each topic's producers number their own events.
    pub fn apply_in(
        &self,
        state: &mut PartitionState,
        scratch: &mut Scratch,
        event: &[Value],
        offset: Option<u64>,
        stream: u16,
    ) -> Result<Outcome, ApplyError> {
        // Envelope.
        let key_value = self.key(event)?;
        let key = key_text(key_value).expect("key() checked the kind");
        let event_type: &str = match &event[self.envelope.event_type.index()] {
            Value::Str(s) => s,
            _ => return Err(EnvelopeError::BadType(self.names.event_type.clone()).into()),
        };
        // A tombstone carries only its key: no version to guard, no time.
        let tombstone = event_type == TOMBSTONE_TYPE;
        let version = match self.envelope.version {
            _ if tombstone => None,
            None => None,
            Some(_) if self.unversioned.get(usize::from(stream)) == Some(&true) => None,
            Some(f) => match &event[f.index()] {
                Value::Int(v) => Some(*v),
                // Only floats that are exactly an i64: `as` would saturate, and a
                // saturated version (i64::MAX) would make every later event of the
                // key a duplicate.
                Value::Float(x) if x.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(x) => {
                    Some(*x as i64)
                }
                other => {
                    let found = match other {
                        Value::Float(_) => "a float that is not an int64",
                        v => v.kind(),
                    };
                    let path = self.names.version.clone();
                    return Err(EnvelopeError::BadVersion(path, found).into());
                }
            },
        };
        let mut time = None;
        if let Some(f) = self.envelope.timestamp {
            let v = &event[f.index()];
            if !v.is_null() {
                time = timestamp_millis(v);
                if time.is_none() {
                    let path = self.names.timestamp.clone();
                    return Err(EnvelopeError::BadTimestamp(path, v.to_string()).into());
                }
            }
        }
        if let Some(v) = version
            && let Some(last) = state.versions_of(stream).get(&*key)
            && v <= *last
        {
            return Ok(Outcome::Duplicate);
        }
        // An id the key remembers: a repeat (`dedup:`). Tombstones carry no id.
        let id = match (self.dedup, self.envelope.id) {
            (Some(_), Some(slot)) if !tombstone => match &event[slot.index()] {
                Value::Str(s) => Some(s.clone()),
                Value::Int(i) => Some(Arc::from(i.to_string())),
                _ => None,
            },
            _ => None,
        };
        if let Some(id) = &id
            && state
                .dedup
                .get(&*key)
                .is_some_and(|r| r.contains(id, crate::dedup::id_hash(id)))
        {
            return Ok(Outcome::Duplicate);
        }

        // Plan: evaluate everything, change nothing.
        for (i, view) in self.views.iter().enumerate() {
            match (&view.kind, &state.views[i]) {
                (ViewKind::Fold(spec), ViewState::Fold(fs)) => {
                    let slot = fs.slot_of(&key);
                    scratch.fold[i].slot = slot;
                    let row = slot.map(|s| fs.row(s));
                    plan_fold(
                        &view.name,
                        spec,
                        row,
                        event_type,
                        event,
                        &mut scratch.fold[i],
                    )?;
                }
                (ViewKind::Aggregate(_), ViewState::Aggregate(_)) if tombstone => {
                    scratch.agg[i].matched = false;
                }
                (ViewKind::Table(_), ViewState::Table(_)) if tombstone => {
                    scratch.table[i].matched = false;
                }
                (ViewKind::Aggregate(spec), ViewState::Aggregate(st)) => {
                    plan_aggregate(&view.name, spec, st, event, &mut scratch.agg[i])?;
                }
                (ViewKind::Table(spec), ViewState::Table(_)) => {
                    plan_table(&view.name, spec, event, &mut scratch.table[i])?;
                }
                _ => unreachable!("state built by new_partition_state"),
            }
        }

        // Commit.
        if let (Some(id), Some(window)) = (id, self.dedup) {
            match state.dedup.get_mut(&*key) {
                Some(recent) => {
                    recent.push(id, time, window);
                }
                None => {
                    let mut recent = RecentIds::default();
                    recent.push(id, time, window);
                    state.dedup.insert(owned_key(key_value, &key), recent);
                }
            }
        }
        if let Some(v) = version {
            let versions = state.versions_of_mut(stream);
            match versions.get_mut(&*key) {
                Some(last) => *last = v,
                None => {
                    versions.insert(owned_key(key_value, &key), v);
                }
            }
        }
        for (i, view) in self.views.iter().enumerate() {
            match (&view.kind, &mut state.views[i]) {
                (ViewKind::Fold(spec), ViewState::Fold(fs)) => {
                    let plan = &mut scratch.fold[i];
                    if plan.delete {
                        if let Some(slot) = plan.slot {
                            fs.remove_slot(slot);
                        }
                    } else if plan.touched {
                        let row = match plan.slot {
                            Some(slot) => fs.row_mut(slot),
                            None => fs.insert(owned_key(key_value, &key), default_row(spec)),
                        };
                        for (col, v) in plan.writes.drain(..) {
                            row[col] = v;
                        }
                    }
                }
                (ViewKind::Aggregate(spec), ViewState::Aggregate(st)) => {
                    let plan = &mut scratch.agg[i];
                    if !plan.matched {
                        continue;
                    }
                    let accs = match st.groups.get_mut(&plan.group[..]) {
                        Some(a) => a,
                        None => st
                            .groups
                            .entry(plan.group.clone().into_boxed_slice())
                            .or_insert_with(|| spec.columns.iter().map(Acc::new).collect()),
                    };
                    for (acc, input) in accs.iter_mut().zip(plan.inputs.iter()) {
                        acc.update(input);
                    }
                }
                (ViewKind::Table(spec), ViewState::Table(st)) => {
                    let plan = &mut scratch.table[i];
                    if !plan.matched {
                        continue;
                    }
                    let row = TableRow {
                        offset: offset.unwrap_or(st.next_number()),
                        time,
                        values: plan.values.drain(..).collect(),
                    };
                    st.push(row, &spec.retain);
                }
                _ => unreachable!(),
            }
        }
        Ok(Outcome::Applied)
    }
}

fn owned_key(value: &Value, text: &str) -> Arc<str> {
    match value {
        Value::Str(s) => s.clone(),
        _ => Arc::from(text),
    }
}

/// A new row: every column at its default (or null).
pub(crate) fn default_row(spec: &FoldSpec) -> Box<[Value]> {
    spec.columns
        .iter()
        .map(|c| c.default.clone().unwrap_or(Value::Null))
        .collect()
}

fn plan_fold(
    view: &str,
    spec: &FoldSpec,
    row: Option<&[Value]>,
    event_type: &str,
    event: &[Value],
    plan: &mut FoldPlan,
) -> Result<(), ApplyError> {
    plan.touched = false;
    plan.delete = false;
    plan.writes.clear();
    if event_type == TOMBSTONE_TYPE {
        // Only `on_tombstone: delete` routes tombstones here; no handler runs.
        plan.delete = true;
        return Ok(());
    }
    let handler = spec.handlers.get(event_type);
    if let Some(h) = handler {
        if h.delete {
            plan.delete = true;
            return Ok(());
        }
        plan_handler(view, spec, row, h, event, plan)?;
    }
    if let Some(star) = &spec.star {
        if star.delete {
            plan.delete = true;
            plan.writes.clear();
            return Ok(());
        }
        plan_handler(view, spec, row, star, event, plan)?;
    }
    Ok(())
}

fn plan_handler(
    view: &str,
    spec: &FoldSpec,
    row: Option<&[Value]>,
    h: &Handler,
    event: &[Value],
    plan: &mut FoldPlan,
) -> Result<(), ApplyError> {
    plan.touched = true;
    for (col, expr) in &h.set {
        let c = &spec.columns[*col];
        let v = eval_into(view, &c.name, c.ty, expr, event)?;
        push_write(plan, *col, v);
    }
    for (col, expr) in &h.add {
        let c = &spec.columns[*col];
        let v = eval_into(view, &c.name, c.ty, expr, event)?;
        if v.is_null() {
            continue;
        }
        let current = match plan.writes.iter().rev().find(|(i, _)| i == col) {
            Some((_, v)) => v.clone(),
            None => match row {
                Some(r) => r[*col].clone(),
                None => c.default.clone().unwrap_or(Value::Null),
            },
        };
        let sum = match (c.ty, &current, &v) {
            (ColumnType::Int64, Value::Null, Value::Int(b)) => Value::Int(*b),
            (ColumnType::Int64, Value::Int(a), Value::Int(b)) => match a.checked_add(*b) {
                Some(s) => Value::Int(s),
                None => {
                    return Err(ApplyError::Overflow {
                        view: view.into(),
                        column: c.name.clone(),
                        source: Overflow::Add {
                            current: *a,
                            value: *b,
                        },
                    });
                }
            },
            (ColumnType::Float64, Value::Null, Value::Float(b)) => Value::Float(*b),
            (ColumnType::Float64, Value::Float(a), Value::Float(b)) => Value::Float(a + b),
            _ => unreachable!("config only allows add on numeric columns; coerce checked v"),
        };
        push_write(plan, *col, sum);
    }
    Ok(())
}

/// Evaluates `expr` and converts the result to the type of column `column`.
fn eval_into(
    view: &str,
    column: &str,
    ty: ColumnType,
    expr: &Expr,
    event: &[Value],
) -> Result<Value, ApplyError> {
    let v = expr.eval(event).map_err(|source| ApplyError::Eval {
        view: view.into(),
        column: column.into(),
        source,
    })?;
    v.coerce(ty).map_err(|source| ApplyError::Type {
        view: view.into(),
        column: column.into(),
        source,
    })
}

fn push_write(plan: &mut FoldPlan, col: usize, v: Value) {
    match plan.writes.iter_mut().find(|(i, _)| *i == col) {
        Some(w) => w.1 = v,
        None => plan.writes.push((col, v)),
    }
}

/// The value of a view's `filter` for an event: false and null skip it.
fn passes(view: &str, filter: Option<&Expr>, event: &[Value]) -> Result<bool, ApplyError> {
    let Some(filter) = filter else {
        return Ok(true);
    };
    let keep = filter.eval(event).map_err(|source| ApplyError::Eval {
        view: view.into(),
        column: "filter".into(),
        source,
    })?;
    match keep {
        Value::Bool(b) => Ok(b),
        Value::Null => Ok(false),
        other => Err(ApplyError::Type {
            view: view.into(),
            column: "filter".into(),
            source: TypeError {
                expected: ColumnType::Bool,
                found: other.kind(),
                value: other.to_string(),
            },
        }),
    }
}

fn plan_table(
    view: &str,
    spec: &TableSpec,
    event: &[Value],
    plan: &mut TablePlan,
) -> Result<(), ApplyError> {
    plan.matched = false;
    plan.values.clear();
    if !passes(view, spec.filter.as_ref(), event)? {
        return Ok(());
    }
    for c in &spec.columns {
        plan.values
            .push(eval_into(view, &c.name, c.ty, &c.expr, event)?);
    }
    plan.matched = true;
    Ok(())
}

fn plan_aggregate(
    view: &str,
    spec: &AggregateSpec,
    state: &AggState,
    event: &[Value],
    plan: &mut AggPlan,
) -> Result<(), ApplyError> {
    plan.matched = false;
    plan.group.clear();
    plan.inputs.clear();
    if !passes(view, spec.filter.as_ref(), event)? {
        return Ok(());
    }
    for g in &spec.group_by {
        plan.group
            .push(eval_into(view, &g.name, g.ty, &g.expr, event)?);
    }
    let existing = state.groups.get(&plan.group[..]);
    for (i, c) in spec.columns.iter().enumerate() {
        let v = match (&c.arg, c.func) {
            (None, _) => Value::Bool(true),
            (Some(e), f) => {
                let v = e.eval(event).map_err(|source| ApplyError::Eval {
                    view: view.into(),
                    column: c.name.clone(),
                    source,
                })?;
                let input_ty = match f {
                    AggFn::Count | AggFn::CountStar => None,
                    AggFn::Avg => Some(ColumnType::Float64),
                    AggFn::Sum | AggFn::Min | AggFn::Max => Some(c.ty),
                };
                match input_ty {
                    None => v,
                    Some(ty) => v.coerce(ty).map_err(|source| ApplyError::Type {
                        view: view.into(),
                        column: c.name.clone(),
                        source,
                    })?,
                }
            }
        };
        if let Some(accs) = existing {
            accs[i].check(&v).map_err(|e| ApplyError::Overflow {
                view: view.into(),
                column: c.name.clone(),
                source: e.into(),
            })?;
        }
        plan.inputs.push(v);
    }
    plan.matched = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{AggColumn, AggregateSpec};
    use crate::expr::AggFn;
    use crate::fields::FieldRegistry;

    /// A count of applied events, keyed by `k`, versioned by `v`.
    fn counted() -> (Projection, FieldRegistry) {
        let mut fields = FieldRegistry::new();
        let (k, t, v) = (fields.intern("k"), fields.intern("t"), fields.intern("v"));
        let envelope = Envelope {
            id: None,
            event_type: t,
            key: k,
            version: Some(v),
            timestamp: None,
            correlation_id: None,
            causation_id: None,
        };
        let count = AggregateSpec {
            filter: None,
            group_by: vec![],
            columns: vec![AggColumn {
                name: "n".into(),
                func: AggFn::Count,
                arg: None,
                ty: ColumnType::Int64,
            }],
        };
        let views = vec![ViewSpec {
            name: "n".into(),
            kind: ViewKind::Aggregate(count),
        }];
        (Projection::new(envelope, views, &fields), fields)
    }

    fn event(fields: &FieldRegistry, version: Value) -> Vec<Value> {
        let mut e = vec![Value::Null; fields.len()];
        e[fields.get("k").unwrap().index()] = Value::Str("order-1".into());
        e[fields.get("t").unwrap().index()] = Value::Str("T".into());
        e[fields.get("v").unwrap().index()] = version;
        e
    }

    #[test]
    fn each_stream_guards_its_own_versions() {
        let (p, fields) = counted();
        let mut state = p.new_partition_state();
        let mut scratch = p.scratch();
        let mut apply = |version: i64, stream: u16| {
            p.apply_in(
                &mut state,
                &mut scratch,
                &event(&fields, Value::Int(version)),
                None,
                stream,
            )
            .unwrap()
        };
        assert_eq!(apply(3, 0), Outcome::Applied);
        // Another topic numbers its events of the same key from 1.
        assert_eq!(apply(1, 1), Outcome::Applied);
        assert_eq!(apply(2, 1), Outcome::Applied);
        assert_eq!(apply(2, 1), Outcome::Duplicate);
        assert_eq!(apply(3, 0), Outcome::Duplicate);
        assert_eq!(apply(4, 0), Outcome::Applied);
        assert_eq!(state.versions.get("order-1"), Some(&4));
        assert_eq!(state.stream_versions[0].get("order-1"), Some(&2));
    }

    #[test]
    fn an_unversioned_stream_is_not_guarded() {
        let (p, fields) = counted();
        let p = p.with_unversioned_streams(vec![false, true]);
        let mut state = p.new_partition_state();
        let mut scratch = p.scratch();
        for _ in 0..2 {
            let e = event(&fields, Value::Null);
            assert_eq!(
                p.apply_in(&mut state, &mut scratch, &e, None, 1),
                Ok(Outcome::Applied)
            );
        }
        // The versioned stream still wants its version.
        let e = event(&fields, Value::Null);
        assert!(p.apply_in(&mut state, &mut scratch, &e, None, 0).is_err());
    }
}
