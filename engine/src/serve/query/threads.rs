//! The threads queries run on: a runtime of their own, apart from the HTTP threads that
//! answer `/health` and `/status` and from the pipeline's ingest and worker threads.
//!
//! A query that burns both cores (a cross join, say) then slows only other queries:
//! the threads run at a lower priority than ingestion (nice 5 on Linux), health
//! checks are answered on threads it does not occupy, and the query is abandoned at
//! its deadline however busy its threads are. Each thread has a 16 MiB stack, so the
//! planner's recursion over the deepest expression [`super::guard`] lets through has
//! room to spare.

use std::sync::OnceLock;

/// Stack of each query thread. Only touched pages take memory.
const STACK_BYTES: usize = 16 << 20;

/// Priority of query threads on thread-priority's 0..=99 scale, which maps 34 to nice
/// 5 on Linux (one value per thread there): under contention the pipeline's threads
/// get about three times a query thread's share of a core.
const PRIORITY: u8 = 34;

/// The process's query runtime, started on first use and kept until exit (a runtime
/// may not be dropped from async code, and every [`super::SqlEngine`] shares it).
pub(crate) fn handle() -> tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("sql")
                .thread_stack_size(STACK_BYTES)
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .expect("starting the query runtime")
        })
        .handle()
        .clone()
}

/// Lowers the calling thread's priority; failing leaves it as it was (only fairer to
/// queries than intended), so the failure is logged and ignored.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let set = ThreadPriorityValue::try_from(PRIORITY)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                set_thread_priority_and_policy(
                    thread_native_id(),
                    ThreadPriority::Crossplatform(p),
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
                )
                .map_err(|e| e.to_string())
            });
        if let Err(e) = set {
            tracing::debug!("could not lower the priority of a query thread: {e}");
        }
    }
}
