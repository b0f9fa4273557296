//! The catalog: every view's spec and schema, the newest published epoch, and the
//! other instances that hold the rest of the partitions.

use crate::serve::cluster::Cluster;
use crate::serve::cluster::wire::Contribution;
use crate::state::units::Units;
use crate::state::view::{
    Published, PublishedView, WorkerViewData, build_worker_view, view_schema,
};
use arc_swap::ArcSwap;
use arrow::datatypes::SchemaRef;
use projector_connectors::PartitionInfo;
use projector_operators::view::ViewSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// What SQL can see. Publishing swaps one `Arc`, so readers never block ingestion and
/// a query that pins [`Catalog::current`] sees one consistent epoch across views.
#[derive(Debug)]
pub struct Catalog {
    /// The views, in pipeline order.
    pub views: Vec<ViewSpec>,
    /// Their Arrow schemas.
    pub schemas: Vec<SchemaRef>,
    /// The source partitions, grouped into units (whose names queries use).
    units: Arc<Units>,
    published: ArcSwap<Published>,
    cluster: OnceLock<Arc<Cluster>>,
    /// The newest epoch, for those who wait for the next one.
    epochs: tokio::sync::watch::Sender<u64>,
    /// The live subscriptions to the views (started with the first).
    hub: OnceLock<Arc<crate::serve::subscribe::Hub>>,
}

impl Catalog {
    /// A catalog with empty views (epoch 0) for `workers` workers, over the source
    /// partitions `names`, each a unit of its own (none of them held yet).
    pub fn new(views: Vec<ViewSpec>, names: Vec<String>, workers: usize) -> Self {
        let partitions: Vec<PartitionInfo> = names
            .into_iter()
            .enumerate()
            .map(|(id, name)| PartitionInfo::single(id as u32, name))
            .collect();
        Self::with_units(views, Arc::new(Units::new(&partitions)), workers)
    }

    /// A catalog with empty views (epoch 0) for `workers` workers, over `units`.
    pub(crate) fn with_units(views: Vec<ViewSpec>, units: Arc<Units>, workers: usize) -> Self {
        let partitions = units.partition_names().len();
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
            present: BTreeSet::new(),
        };
        Catalog {
            views,
            schemas,
            units,
            published: ArcSwap::from_pointee(published),
            cluster: OnceLock::new(),
            epochs: tokio::sync::watch::channel(0).0,
            hub: OnceLock::new(),
        }
    }

    /// Marks every partition held in the empty epoch 0: for a pipeline whose source is
    /// not shared with other instances, whose views are simply empty until the first
    /// epoch.
    pub fn hold_everything(&self) {
        let current = self.current();
        if current.epoch == 0 {
            let p = Published {
                epoch: 0,
                views: current
                    .views
                    .iter()
                    .map(|v| PublishedView::new(v.parts.clone()))
                    .collect(),
                offsets: current.offsets.clone(),
                present: (0..self.units.names().len() as u32).collect(),
            };
            self.publish(p);
        }
    }

    /// The names of the units of state (with one topic: its partitions), by id:
    /// what queries and the cluster call partitions.
    pub fn partition_names(&self) -> &[String] {
        self.units.names()
    }

    /// What unit `unit` of `published` contributes to an answer: each of its source
    /// partitions with the epoch and the offset its rows come from.
    pub(crate) fn contributions<'a>(
        &'a self,
        unit: u32,
        published: &'a Published,
        instance: &'a str,
    ) -> impl Iterator<Item = Contribution> + 'a {
        self.units.members(unit).iter().map(move |&p| Contribution {
            partition: self.units.partition_name(p).to_string(),
            epoch: published.epoch,
            offset: published.offsets[p as usize],
            instance: instance.to_string(),
        })
    }

    /// The cluster this instance answers queries with, if it is part of one.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Makes queries span the instances of `cluster`.
    pub(crate) fn join(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The newest published epoch.
    pub fn current(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// Makes `p` the newest epoch.
    pub fn publish(&self, p: Published) {
        let epoch = p.epoch;
        self.published.store(Arc::new(p));
        self.epochs.send_replace(epoch);
    }

    /// Follows the published epochs.
    pub(crate) fn epochs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    /// The live subscriptions to the views (started on first use).
    pub(crate) fn hub(self: &Arc<Self>) -> Arc<crate::serve::subscribe::Hub> {
        self.hub
            .get_or_init(|| crate::serve::subscribe::Hub::start(self))
            .clone()
    }

    /// Index of the view called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }
}
