//! Freshness: the recording replayed at a fixed rate, and how long each event took
//! from due to visible to SQL.

use super::queries::{Clients, prepare_queries, start_clients, start_pg_clients};
use super::report::si;
use super::system::watch_progress;
use super::{BenchOptions, Freshness, MAX_LATENCY_US, QueryLatency, start_replay};
use crate::replay::{Recording, ReplaySource, ReplayStart};
use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use projector_engine::config::PipelineConfig;
use projector_engine::{
    AppState, RunOptions, Shared, SqlEngine, bind, http_runtime, serve, serve_pg,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(super) fn paced_run(
    cfg: &PipelineConfig,
    opts: &RunOptions,
    recording: &Arc<Recording>,
    rate: f64,
    query_clients: usize,
    options: &BenchOptions,
) -> Result<(Freshness, Vec<QueryLatency>)> {
    let runtime = http_runtime().context("starting the HTTP runtime")?;
    let start = ReplayStart::default();
    let pipeline = start_replay(cfg, opts, recording, Some(rate), &start)?;
    let shared = pipeline.shared().clone();
    let sql = Arc::new(SqlEngine::new(shared.catalog.clone(), cfg.query.clone())?);
    let state = AppState::new(shared.clone(), sql.clone(), Default::default());
    let addr = serve(&runtime, "127.0.0.1:0", state.clone()).context("binding the HTTP API")?;
    let pg = serve_pg(&runtime, bind(&runtime, "127.0.0.1:0")?, state, None)
        .context("serving the Postgres protocol")?;

    let label = if query_clients > 0 {
        format!("{query_clients} SQL clients at {} ev/s", si(rate))
    } else {
        format!("freshness at {} events/s", si(rate))
    };
    let watch = watch_progress(options.progress, &shared, recording.len() as u64, &label);
    let done = Arc::new(AtomicBool::new(false));
    let clients = if query_clients > 0 {
        let queries = prepare_queries(&shared, &sql, &runtime, &done)?;
        match options.query_face {
            super::QueryFace::Http => {
                start_clients(&format!("http://{addr}"), queries, query_clients, &done)
            }
            super::QueryFace::Pg => start_pg_clients(pg, queries, query_clients, &done),
        }
    } else {
        Clients::default()
    };

    let measured = measure_freshness(&shared, recording, rate, &start);
    let finished = pipeline.wait_until_finished();
    done.store(true, Ordering::SeqCst);
    let wall = start.get().map_or(0.0, |t0| t0.elapsed().as_secs_f64());
    watch.stop();
    let latencies = clients.finish(query_clients, options.query_face);
    let hist = measured
        .join()
        .map_err(|_| anyhow!("freshness thread panicked"))?;
    pipeline.stop().context("stopping the pipeline")?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    finished.map_err(|e| anyhow!("the pipeline failed: {e}"))?;
    let hist = hist?;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok((
        Freshness {
            rate,
            achieved_rate: recording.len() as f64 / wall.max(1e-9),
            samples: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
        },
        latencies,
    ))
}

/// Watches publications: each event is visible from the first published epoch whose
/// offsets cover it, and was due at `t0 + i / rate`.
fn measure_freshness(
    shared: &Arc<Shared>,
    recording: &Arc<Recording>,
    rate: f64,
    start: &ReplayStart,
) -> std::thread::JoinHandle<Result<Histogram<u64>>> {
    let (shared, recording, start) = (shared.clone(), recording.clone(), start.clone());
    std::thread::spawn(move || {
        let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
        // Per partition: (offset, index in the recording), in offset order.
        let parts = recording.partitions.len().max(1);
        let mut by_partition: Vec<Vec<(u64, usize)>> = vec![Vec::new(); parts];
        for (i, r) in recording.batch.records.iter().enumerate() {
            by_partition[r.partition as usize].push((r.offset, i));
        }
        let mut cursor = vec![0usize; parts];
        let total = recording.len() as u64;
        let mut seen_epoch = 0;
        let deadline_idle = Duration::from_secs(120);
        let mut last_change = Instant::now();
        while hist.len() < total {
            shared.progress.wait(Duration::from_millis(5));
            let published = shared.catalog.current();
            let now = Instant::now();
            if published.epoch == seen_epoch {
                if shared.fatal().is_some() || last_change.elapsed() > deadline_idle {
                    bail!("stopped measuring: no new epoch for a long time or the pipeline failed");
                }
                continue;
            }
            seen_epoch = published.epoch;
            last_change = now;
            let Some(t0) = start.get().copied() else {
                continue;
            };
            for (p, list) in by_partition.iter().enumerate() {
                let upto = published.offsets.get(p).copied().unwrap_or(0);
                while cursor[p] < list.len() && list[cursor[p]].0 < upto {
                    let due = ReplaySource::due(t0, list[cursor[p]].1, rate);
                    let us = now.saturating_duration_since(due).as_micros() as u64;
                    hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
                    cursor[p] += 1;
                }
            }
        }
        Ok(hist)
    })
}
