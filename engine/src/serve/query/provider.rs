//! A DataFusion table over a view: this instance's partitions from its pinned epoch,
//! the others' from the instances that own them (see `serve/cluster`).

use crate::serve::catalog::Catalog;
use crate::serve::cluster::peers;
use crate::serve::cluster::wire::{Contribution, ScanRequest};
use crate::state::view::{Published, finish_aggregate};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use projector_operators::view::ViewKind;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// One query's view of the pipeline (a session-config extension): the epoch it pinned
/// (so every view it touches comes from the same epoch of this instance), which
/// partitions it may read, and what it has read.
#[derive(Debug)]
pub(crate) struct QueryScope {
    /// This instance's epoch.
    pub pinned: Arc<Published>,
    /// A scan another instance sent: only these partitions, and only this instance's.
    pub local_only: Option<BTreeSet<u32>>,
    /// The client accepts an answer without the partitions no one answered for.
    pub partial: bool,
    /// What the scans read.
    pub answer: Mutex<Answer>,
}

/// Where a query's rows came from.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// Per partition name, the epoch and offset its rows came from.
    pub covered: BTreeMap<String, Contribution>,
    /// Per partition name, why it is not in the answer.
    pub missing: BTreeMap<String, String>,
}

/// Partitions no instance answered for, in a query that needed them.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "partitions unavailable: {}; retry when they have an owner again, or ask for a \
     partial answer (?partial=true)",
    .0.iter().map(|(p, why)| format!("{p} ({why})")).collect::<Vec<_>>().join(", ")
)]
pub(crate) struct PartitionsUnavailable(pub Vec<(String, String)>);

/// One view as a table: one scan partition per worker (fold views), or the merged
/// aggregate (aggregate views).
#[derive(Debug)]
pub(crate) struct ViewTable {
    catalog: Arc<Catalog>,
    index: usize,
    /// The catalog is not the one the query pinned an epoch of (views rebuilt beside
    /// the pipeline's): scans read its own newest epoch.
    own_epoch: bool,
}

impl ViewTable {
    /// The table for view number `index`.
    pub(crate) fn new(catalog: Arc<Catalog>, index: usize) -> Self {
        ViewTable {
            catalog,
            index,
            own_epoch: false,
        }
    }

    /// The table for view number `index` of a catalog beside the query's.
    pub(crate) fn beside(catalog: Arc<Catalog>, index: usize) -> Self {
        ViewTable {
            catalog,
            index,
            own_epoch: true,
        }
    }

    /// The key of a `key = 'literal'` filter on a fold view's key column: such a
    /// filter is answered from the chunk indexes instead of a scan.
    fn key_filter<'e>(&self, e: &'e Expr) -> Option<&'e str> {
        if !matches!(self.catalog.views[self.index].kind, ViewKind::Fold(_)) {
            return None;
        }
        let Expr::BinaryExpr(b) = e else {
            return None;
        };
        if b.op != Operator::Eq {
            return None;
        }
        let (col, lit) = match (&*b.left, &*b.right) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                (c, v)
            }
            _ => return None,
        };
        if col.name != *self.catalog.schemas[self.index].field(0).name() {
            return None;
        }
        match lit {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Some(s.as_str()),
            _ => None,
        }
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.catalog.schemas[self.index].clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Key filters are answered exactly (from the chunk indexes); the others are
        // sent to the instances that own other partitions, to cut what they send, and
        // applied again here.
        Ok(filters
            .iter()
            .map(|f| match self.key_filter(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let fallback;
        let pinned = match self.own_epoch {
            true => None,
            false => state.config().get_extension::<QueryScope>(),
        };
        let scope = match pinned {
            Some(s) => s,
            None => {
                fallback = Arc::new(QueryScope {
                    pinned: self.catalog.current(),
                    local_only: None,
                    partial: false,
                    answer: Mutex::default(),
                });
                fallback
            }
        };
        let published = &scope.pinned;
        let spec = &self.catalog.views[self.index];
        let view = &published.views[self.index];
        let schema = self.schema();
        let keys: Vec<&str> = filters.iter().filter_map(|f| self.key_filter(f)).collect();
        // `key = 'a' AND key = 'b'` matches nothing unless a == b.
        let key = match keys.first() {
            Some(first) if keys.iter().all(|k| k == first) => Some(Some(*first)),
            Some(_) => Some(None),
            None => None,
        };
        let cluster = self.catalog.cluster();
        let all: BTreeSet<u32> = (0..self.catalog.partition_names().len() as u32).collect();
        let needed: BTreeSet<u32> = match (
            &scope.local_only,
            key,
            cluster.and_then(|c| c.keys.as_ref()),
        ) {
            (Some(only), _, _) => only.clone(),
            (None, Some(None), _) => BTreeSet::new(),
            (None, Some(Some(k)), Some(kp)) => kp.of(k).into_iter().collect(),
            _ => all.clone(),
        };
        let local: BTreeSet<u32> = needed.intersection(&published.present).copied().collect();
        let remote: Vec<u32> = needed.difference(&local).copied().collect();
        // The columns to read: the projection's, or for none (`count(*)`) one column
        // to count rows by, a fixed-width one where there is one (less to send).
        let want: Vec<usize> = match projection {
            Some(p) if p.is_empty() => vec![
                schema
                    .fields()
                    .iter()
                    .position(|f| f.data_type().is_primitive())
                    .unwrap_or(0),
            ],
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let names = self.catalog.partition_names();
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut covered: Vec<Contribution> = local
            .iter()
            .flat_map(|&u| self.catalog.contributions(u, published, "local"))
            .collect();
        let aggregate = matches!(spec.kind, ViewKind::Aggregate(_));
        let mut remote_rows: Vec<RecordBatch> = Vec::new();
        let mut remote_partials = Vec::new();
        match (&scope.local_only, cluster) {
            _ if remote.is_empty() => {}
            (Some(_), _) => missing.extend(
                remote
                    .iter()
                    .map(|&p| (names[p as usize].clone(), "not held here".to_string())),
            ),
            (None, None) => missing.extend(remote.iter().map(|&p| {
                (
                    names[p as usize].clone(),
                    "another instance owns it and this one does not know the others \
                     (give every instance the same checkpoint store)"
                        .to_string(),
                )
            })),
            (None, Some(cluster)) => {
                let roster = cluster.roster.load();
                let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for &p in &remote {
                    let name = names[p as usize].clone();
                    match roster.owners.get(&p) {
                        Some(o) => by_owner.entry(o.address.clone()).or_default().push(name),
                        None => missing.push((
                            name,
                            "no live instance owns it in the checkpoint store's member records"
                                .to_string(),
                        )),
                    }
                }
                if !by_owner.is_empty() && (missing.is_empty() || scope.partial) {
                    let request = ScanRequest {
                        pipeline: cluster.pipeline.clone(),
                        view: spec.name.clone(),
                        partitions: Vec::new(),
                        columns: want
                            .iter()
                            .map(|&i| schema.field(i).name().clone())
                            .collect(),
                        filters: filters.iter().filter_map(pushable).collect(),
                        partials: aggregate,
                    };
                    let answer = peers::scan(cluster, &request, by_owner)
                        .await
                        .map_err(DataFusionError::Execution)?;
                    remote_rows = answer.batches;
                    if let ViewKind::Aggregate(a) = &spec.kind {
                        for bytes in &answer.partials {
                            remote_partials.push(
                                projector_operators::codec::decode_partials(a, bytes).map_err(
                                    |e| DataFusionError::Execution(format!("bad partials: {e}")),
                                )?,
                            );
                        }
                    }
                    covered.extend(answer.covered);
                    missing.extend(answer.missing);
                }
            }
        }
        {
            let mut answer = scope.answer.lock().expect("answer lock");
            for c in covered {
                answer.covered.insert(c.partition.clone(), c);
            }
            for (p, why) in &missing {
                answer.missing.insert(p.clone(), why.clone());
            }
        }
        if !missing.is_empty() && !scope.partial && scope.local_only.is_none() {
            return Err(DataFusionError::External(Box::new(PartitionsUnavailable(
                missing,
            ))));
        }
        // This instance's rows: everything it holds when that is what is needed (the
        // cached path of a single instance), else the needed partitions only.
        let only = (local != published.present).then_some(&local);
        let mut partitions = match (&spec.kind, key) {
            (_, Some(None)) => vec![vec![]],
            (ViewKind::Fold(_), Some(Some(k))) => {
                vec![view.lookup(k, only).unwrap_or_default()]
            }
            (ViewKind::Aggregate(a), _) if !remote_partials.is_empty() => {
                let mut merged = view.partials(only);
                for p in &remote_partials {
                    merged.merge(p);
                }
                vec![vec![
                    finish_aggregate(spec, a, &merged).map_err(DataFusionError::Execution)?,
                ]]
            }
            _ => view
                .partitions(spec, only)
                .map_err(DataFusionError::Execution)?,
        };
        let local_projected: Vec<Vec<RecordBatch>> = partitions
            .drain(..)
            .map(|part| {
                part.iter()
                    .map(|b| b.project(&want))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .collect::<std::result::Result<_, _>>()?;
        let mut parts = local_projected;
        if !remote_rows.is_empty() {
            parts.push(remote_rows);
        }
        if parts.is_empty() {
            parts.push(vec![]);
        }
        let read_schema = Arc::new(schema.project(&want)?);
        // From the columns read to the projection asked for (none, for `count(*)`).
        let final_projection: Option<Vec<usize>> = match projection {
            Some(p) if p.is_empty() => Some(vec![]),
            _ => None,
        };
        let exec = MemorySourceConfig::try_new_exec(&parts, read_schema, final_projection)?;
        Ok(exec)
    }
}

/// `filter` as SQL another instance can apply: columns unqualified (the other
/// instance reads the view under its own name); `None` for a filter that must not be
/// applied twice (volatile) or cannot be written as SQL.
fn pushable(filter: &Expr) -> Option<String> {
    if filter.is_volatile() {
        return None;
    }
    let unqualified = filter
        .clone()
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => Transformed::yes(Expr::Column(
                    datafusion::common::Column::new_unqualified(c.name),
                )),
                other => Transformed::no(other),
            })
        })
        .ok()?
        .data;
    datafusion::sql::unparser::expr_to_sql(&unqualified)
        .ok()
        .map(|e| e.to_string())
}
