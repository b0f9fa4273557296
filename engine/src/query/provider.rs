//! A DataFusion table over a view's newest published epoch.

use crate::catalog::Catalog;
use crate::view::Published;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// The epoch a query reads, pinned once per query so that every view it touches comes
/// from the same epoch (a session-config extension).
#[derive(Debug)]
pub struct PinnedEpoch(pub Arc<Published>);

/// One view as a table: one scan partition per worker (fold views), or the merged
/// aggregate (aggregate views).
#[derive(Debug)]
pub struct ViewTable {
    catalog: Arc<Catalog>,
    index: usize,
}

impl ViewTable {
    /// The table for view number `index`.
    pub fn new(catalog: Arc<Catalog>, index: usize) -> Self {
        ViewTable { catalog, index }
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

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let published = match state.config().get_extension::<PinnedEpoch>() {
            Some(p) => p.0.clone(),
            None => self.catalog.current(),
        };
        let spec = &self.catalog.views[self.index];
        let mut partitions = published.views[self.index]
            .partitions(spec)
            .map_err(DataFusionError::Execution)?;
        if partitions.is_empty() {
            partitions.push(vec![]);
        }
        let exec =
            MemorySourceConfig::try_new_exec(&partitions, self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
