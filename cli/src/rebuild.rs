//! `run` while views are rebuilt: the old pipeline serves and ingests, the new versions
//! catch up beside it, then the switch (see `projector_engine::plan_rebuild`).

use crate::run::thousands;
use anyhow::{Context, Result};
use projector_benches::harness::si;
use projector_engine::{
    AppState, Auth, Pipeline, RebuildPlan, RunOptions, SqlEngine, TlsFiles, config::PipelineConfig,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The rebuilt views switch when they are at most this many records behind.
const SWITCH_LAG: u64 = 1_000;
/// How long each pipeline may take to stop reading before the switch.
const HOLD_PATIENCE: Duration = Duration::from_secs(30);
/// How long both may take to read on to the same offsets.
const SWITCH_PATIENCE: Duration = Duration::from_secs(120);

/// How a rebuild ended.
pub(crate) enum Outcome {
    /// Switched: the new pipeline's checkpoints are written. The faces (HTTP,
    /// Postgres), if they serve, are for the caller to point at the new pipeline.
    Switched(Option<AppState>),
    /// Stopped before the switch (a signal, or a failure): exit with this.
    Stopped(ExitCode),
}

/// Runs `plan` to its switch, serving SQL on `listeners` (taken) meanwhile.
pub(crate) fn run(
    plan: &RebuildPlan,
    new: &PipelineConfig,
    options: &RunOptions,
    runtime: &tokio::runtime::Runtime,
    listeners: &mut crate::run::Listeners,
    tls: Option<&TlsFiles>,
    quiet: bool,
) -> Result<Outcome> {
    let names: Vec<String> = plan
        .views
        .iter()
        .map(|(n, shown)| format!("{n} (as {shown})"))
        .collect();
    let mut face = None;
    if !plan.switch_only {
        eprintln!(
            "{}: rebuilding {} from the start of the input, beside the running version",
            new.name,
            names.join(", ")
        );
        let main = Pipeline::start(&plan.old, options).context("starting the running version")?;
        let mut side_options = plan.rebuilt_options.clone();
        side_options.cluster = None;
        let side = Pipeline::start(&plan.rebuilt, &side_options).context("starting the rebuild")?;
        let sql = Arc::new(SqlEngine::with_beside(
            main.shared().catalog.clone(),
            Some(side.shared().catalog.clone()),
            new.query.clone(),
        )?);
        if listeners.any() {
            // The restored old version first: no query sees it empty.
            wait_for_first_epoch(&main);
            let state = AppState::new(
                main.shared().clone(),
                sql,
                Arc::new(Auth::new(new.auth.as_ref())),
            );
            let also = plan
                .views
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            listeners.serve(
                runtime,
                &state,
                tls,
                &new.name,
                &format!(" while rebuilding ({also} answer too)"),
            )?;
            face = Some(state);
        }
        if let Some(code) = catch_up(plan, new, main, side, runtime, quiet)? {
            return Ok(Outcome::Stopped(code));
        }
    }
    projector_engine::switch_rebuild(plan, new, options)
        .context("switching to the rebuilt views")?;
    eprintln!(
        "{}: switched {} to the rebuilt version",
        new.name,
        names.join(", ")
    );
    Ok(Outcome::Switched(face))
}

/// Runs both pipelines until the rebuilt views have caught up, then both to the same
/// offsets, and stops them. `Some(code)`: stopped by a signal or a failure instead.
fn catch_up(
    plan: &RebuildPlan,
    new: &PipelineConfig,
    main: Pipeline,
    side: Pipeline,
    runtime: &tokio::runtime::Runtime,
    quiet: bool,
) -> Result<Option<ExitCode>> {
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut last_print = Instant::now();
    let mut rate = 0.0;
    let (mut side_ends, mut waiting_for_parked) = (false, false);
    loop {
        let signalled = signalled_within(runtime, Duration::from_millis(100));
        let failed = main.shared().fatal().or_else(|| side.shared().fatal());
        if signalled || failed.is_some() {
            eprintln!(
                "{}: stopping (the rebuild resumes at the next start)",
                new.name
            );
            let _ = side.stop();
            let _ = main.stop();
            if let Some(e) = failed {
                eprintln!("{}: failed: {e}", new.name);
                return Ok(Some(ExitCode::from(1)));
            }
            return Ok(Some(ExitCode::SUCCESS));
        }
        let ahead: Vec<u64> = positions(&main);
        let built: Vec<u64> = positions(&side);
        let read: u64 = built.iter().sum();
        let lag: u64 = ahead
            .iter()
            .zip(&built)
            .map(|(a, b)| a.saturating_sub(*b))
            .sum();
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        if dt >= 1.0 {
            rate = (read - last.1) as f64 / dt;
            last = (now, read);
        }
        let live_rate = main.shared().counters.snapshot().read as f64
            / started.elapsed().as_secs_f64().max(1e-3);
        let eta = (rate > live_rate && rate > 0.0).then(|| lag as f64 / (rate - live_rate));
        *main.shared().rebuild.lock().expect("rebuild lock") = Some(serde_json::json!({
            "views": plan.views.iter().map(|(n, s)| serde_json::json!({"view": n, "as": s})).collect::<Vec<_>>(),
            "state": "catching up",
            "read": read,
            "lag": lag,
            "rate": rate.round(),
            "eta_s": eta.map(|e| (e * 10.0).round() / 10.0),
        }));
        if !quiet && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "{}: rebuilding: {} read ({}/s) · {} behind{}",
                new.name,
                thousands(read),
                si(rate),
                thousands(lag),
                eta.map_or_else(String::new, |e| format!(" · caught up in ~{e:.0} s"))
            );
        }
        let side_done = side.shared().progress.get().finished;
        if main.shared().progress.get().finished && !side_ends {
            // The running version read to its end (`--once`): so does the rebuild.
            side.finish_at(ahead.clone());
            side_ends = true;
        }
        if lag > SWITCH_LAG && !side_done {
            continue;
        }
        // Held events of parked keys were applied by the rebuilt views already; after
        // the switch, a retry would apply them to those views again.
        let (parked, _) = main.shared().parked.totals();
        if parked > 0 {
            if !waiting_for_parked {
                eprintln!(
                    "{}: the rebuilt views caught up; {parked} key(s) are parked: retry or skip \
                     them (projector parked), then the switch goes ahead",
                    new.name
                );
                waiting_for_parked = true;
            }
            if let Some(s) = main.shared().rebuild.lock().expect("rebuild lock").as_mut() {
                s["state"] = "waiting for parked keys".into();
            }
            continue;
        }
        // Both stop reading, then read on to the same offsets (the further of the two)
        // and checkpoint there.
        let (Some(a), Some(b)) = (
            main.hold_reading(HOLD_PATIENCE),
            side.hold_reading(HOLD_PATIENCE),
        ) else {
            main.resume_reading();
            side.resume_reading();
            continue;
        };
        let ends: Vec<u64> = a.iter().zip(&b).map(|(x, y)| *x.max(y)).collect();
        if let Some(s) = main.shared().rebuild.lock().expect("rebuild lock").as_mut() {
            s["state"] = "switching".into();
        }
        eprintln!("{}: the rebuilt views caught up: switching", new.name);
        main.finish_at(ends.clone());
        side.finish_at(ends);
        let deadline = Instant::now() + SWITCH_PATIENCE;
        let aligned = loop {
            let done = |p: &Pipeline| p.shared().progress.get().finished;
            if done(&main) && done(&side) {
                break true;
            }
            let failed = main.shared().fatal().or_else(|| side.shared().fatal());
            if let Some(e) = failed {
                let _ = side.stop();
                let _ = main.stop();
                eprintln!("{}: failed: {e}", new.name);
                return Ok(Some(ExitCode::from(1)));
            }
            if Instant::now() > deadline || signalled_within(runtime, Duration::from_millis(50)) {
                break false;
            }
        };
        side.stop().context("stopping the rebuild")?;
        main.stop().context("stopping the running version")?;
        if !aligned {
            eprintln!(
                "{}: the switch did not complete (the two could not reach the same offsets \
                 in time, or a signal came): the next start resumes the rebuild",
                new.name
            );
            return Ok(Some(ExitCode::from(1)));
        }
        return Ok(None);
    }
}

/// Whether SIGINT or SIGTERM comes within `wait`.
fn signalled_within(runtime: &tokio::runtime::Runtime, wait: Duration) -> bool {
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => true,
            _ = term.recv() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    })
}

/// Waits until `p` has published its first epoch (its restored state), or failed; at
/// most two minutes (a consumer group may take long to assign partitions).
pub(crate) fn wait_for_first_epoch(p: &Pipeline) {
    let shared = p.shared();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.progress.get().epoch == 0 && shared.fatal().is_none() && Instant::now() < deadline
    {
        shared.progress.wait(Duration::from_millis(20));
    }
}

/// Where each partition's reading stands in `p`.
fn positions(p: &Pipeline) -> Vec<u64> {
    p.shared()
        .positions
        .snapshot()
        .iter()
        .map(|x| x.next_offset)
        .collect()
}
