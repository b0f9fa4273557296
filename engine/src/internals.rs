//! Engine internals that the criterion micro-benchmarks and the memory measurement in
//! `benches/` drive directly: the router, a worker's messages and the Arrow views. Not
//! a stable API; an embedder needs none of it.

pub use crate::runtime::router::Router;
pub use crate::runtime::worker::{EventRef, WorkerMsg};
pub use crate::state::view::{
    Only, Published, PublishedView, WorkerViewData, build_fold_chunk, build_worker_view,
    view_schema,
};
