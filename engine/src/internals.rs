//! Engine internals that the criterion micro-benchmarks and the memory measurement in
//! `benches/` drive directly: the router, a worker's messages, the Arrow views and the
//! catalog. Not a stable API; an embedder needs none of it.

pub use crate::runtime::router::Router;
pub use crate::runtime::worker::WorkerMsg;
pub use crate::serve::catalog::Catalog;
pub use crate::state::view::{
    Published, PublishedView, WorkerViewData, build_fold_chunk, build_worker_view, view_schema,
};
