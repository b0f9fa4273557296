//! The catalog: every view's spec and schema, and the newest published epoch.

use crate::state::view::{
    Published, PublishedView, WorkerViewData, build_worker_view, view_schema,
};
use arc_swap::ArcSwap;
use arrow::datatypes::SchemaRef;
use projector_operators::view::ViewSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What SQL can see. Publishing swaps one `Arc`, so readers never block ingestion and
/// a query that pins [`Catalog::current`] sees one consistent epoch across views.
#[derive(Debug)]
pub struct Catalog {
    /// The views, in pipeline order.
    pub views: Vec<ViewSpec>,
    /// Their Arrow schemas.
    pub schemas: Vec<SchemaRef>,
    published: ArcSwap<Published>,
}

impl Catalog {
    /// A catalog with empty views (epoch 0) for `workers` workers.
    pub fn new(views: Vec<ViewSpec>, partitions: usize, workers: usize) -> Self {
        let schemas = views.iter().map(view_schema).collect();
        let empty = BTreeMap::new();
        let published = Published {
            epoch: 0,
            views: views
                .iter()
                .enumerate()
                .map(|(v, spec)| {
                    let parts: Vec<WorkerViewData> = (0..workers)
                        .map(|_| build_worker_view(spec, v, &empty))
                        .collect();
                    PublishedView::new(parts)
                })
                .collect(),
            offsets: vec![0; partitions],
        };
        Catalog {
            views,
            schemas,
            published: ArcSwap::from_pointee(published),
        }
    }

    /// The newest published epoch.
    pub fn current(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// Makes `p` the newest epoch.
    pub fn publish(&self, p: Published) {
        self.published.store(Arc::new(p));
    }

    /// Index of the view called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }
}
