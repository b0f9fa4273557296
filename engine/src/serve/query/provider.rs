//! A DataFusion table over a view's newest published epoch.

use crate::serve::catalog::Catalog;
use crate::state::view::Published;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use projector_operators::view::ViewKind;
use std::sync::Arc;

/// The epoch a query reads, pinned once per query so that every view it touches comes
/// from the same epoch (a session-config extension).
#[derive(Debug)]
pub(crate) struct PinnedEpoch(pub Arc<Published>);

/// One view as a table: one scan partition per worker (fold views), or the merged
/// aggregate (aggregate views).
#[derive(Debug)]
pub(crate) struct ViewTable {
    catalog: Arc<Catalog>,
    index: usize,
}

impl ViewTable {
    /// The table for view number `index`.
    pub(crate) fn new(catalog: Arc<Catalog>, index: usize) -> Self {
        ViewTable { catalog, index }
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
        Ok(filters
            .iter()
            .map(|f| match self.key_filter(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
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
        let published = match state.config().get_extension::<PinnedEpoch>() {
            Some(p) => p.0.clone(),
            None => self.catalog.current(),
        };
        let spec = &self.catalog.views[self.index];
        let view = &published.views[self.index];
        let keys: Vec<&str> = filters.iter().filter_map(|f| self.key_filter(f)).collect();
        let mut partitions = match keys.first() {
            // `key = 'a' AND key = 'b'` matches nothing unless a == b.
            Some(first) if keys.iter().all(|k| k == first) => {
                vec![view.lookup(first).unwrap_or_default()]
            }
            Some(_) => vec![vec![]],
            None => view.partitions(spec).map_err(DataFusionError::Execution)?,
        };
        if partitions.is_empty() {
            partitions.push(vec![]);
        }
        let exec =
            MemorySourceConfig::try_new_exec(&partitions, self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
