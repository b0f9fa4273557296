//! `projector run`: start a pipeline, serve its views over HTTP or answer `--sql` after
//! `--once`, with a progress line on stderr and a summary at the end.

use crate::CliFormat;
use crate::load;
use anyhow::{Context, Result};
use projector_benches::harness::si;
use projector_connectors::SourceConfig;
use projector_engine::{
    AppState, Auth, ClusterOptions, OutputFormat, Pipeline, RunOptions, Shared, SqlEngine,
    TlsFiles, bind, http_runtime, render, serve_on, serve_pg, status_json,
};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run a pipeline and serve its views over HTTP (or, with --once, run to the end of
/// the input, print --sql results and exit).
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The pipeline file (YAML).
    pipeline: PathBuf,
    /// Address for the HTTP API [default: 127.0.0.1:8080; off with --once unless given].
    #[arg(long)]
    http: Option<String>,
    /// Address for the Postgres wire protocol (psql, drivers, BI tools), e.g.
    /// 127.0.0.1:5433 [default: off]. The password is a query token of the pipeline's
    /// `auth:`; with --tls-cert, TLS is required.
    #[arg(long, conflicts_with = "once")]
    pg: Option<String>,
    /// Where the other instances of the pipeline reach this one's HTTP API, as
    /// host:port or a URL [default: the --http address; with 0.0.0.0, this host's
    /// name and the port].
    #[arg(long)]
    advertise: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Certificate authorities (PEM) that vouch for the other instances' HTTPS
    /// certificates, besides the system's.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Serve a non-loopback address although the pipeline has no `auth:` (anyone
    /// who reaches the port reads every view).
    #[arg(long)]
    insecure: bool,
    /// How long another instance may take to answer for its partitions before they
    /// count as unavailable.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    peer_timeout: Duration,
    /// Directory for checkpoints and dead letters [default: the file's state_dir,
    /// else state/NAME].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Stop when the source is exhausted, run each --sql, print, exit.
    #[arg(long)]
    once: bool,
    /// A query to run after --once (repeatable; run in order).
    #[arg(long = "sql", requires = "once")]
    sql: Vec<String>,
    /// How --sql results are printed.
    #[arg(long, value_enum, default_value = "table")]
    format: CliFormat,
    /// Worker threads [default: the file's workers, else the number of cores minus
    /// one (the ingest thread needs one), at least 1].
    #[arg(long)]
    workers: Option<usize>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// When every checkpoint of a partition is damaged, replay it from the start of
    /// the input instead of refusing to start (history the source no longer retains
    /// is then missing from the views).
    #[arg(long)]
    replay_if_damaged: bool,
    /// Resume VIEW on its checkpointed state although its logic changed since (the
    /// change is safe for that state: it only touches events that failed, say, before
    /// retrying parked keys). Repeat for several views.
    #[arg(long, value_name = "VIEW")]
    accept_logic_change: Vec<String>,
    /// Replay the pipeline's dead letters (file, checkpoint store or topic) through
    /// it, each once, as their partitions are restored and before their new records.
    /// `projector dead-letters replay` is this with --once.
    #[arg(long)]
    replay_dead_letters: bool,
    /// Rebuild VIEW from the start of the input beside the running version, and switch
    /// to it once it has caught up, although neither its logic nor its version changed.
    /// Repeat for several views.
    #[arg(long, value_name = "VIEW")]
    rebuild: Vec<String>,
    /// Rebuild although the input no longer holds its oldest records (Kafka
    /// retention): the rebuilt views are then built from what is left.
    #[arg(long)]
    accept_incomplete_rebuild: bool,
}

impl RunArgs {
    /// `run PIPELINE --once --replay-dead-letters`, as `projector dead-letters replay`
    /// runs it.
    pub(crate) fn replay(
        pipeline: PathBuf,
        state_dir: Option<PathBuf>,
        workers: Option<usize>,
        accept_logic_change: Vec<String>,
    ) -> Self {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            run: RunArgs,
        }
        let argv: Vec<std::ffi::OsString> = vec![
            "run".into(),
            "--once".into(),
            "--replay-dead-letters".into(),
            pipeline.clone().into(),
        ];
        let mut args = <Command as clap::Parser>::parse_from(argv).run;
        args.state_dir = state_dir;
        args.workers = workers;
        args.accept_logic_change = accept_logic_change;
        args
    }
}

pub(crate) fn run(args: RunArgs) -> Result<ExitCode> {
    let mut cfg = match load(&args.pipeline) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let SourceConfig::Kafka(k) = &mut cfg.source {
        // --once reads each partition to the end it has when it is reached.
        k.stop_at_end = args.once;
    }
    let mut options = RunOptions::resolve(&cfg, args.state_dir);
    if let Some(w) = args.workers {
        options.workers = w.max(1);
    }
    options.replay_if_damaged = args.replay_if_damaged;
    if let Some(unknown) = args
        .accept_logic_change
        .iter()
        .find(|v| !cfg.views.iter().any(|w| &w.name == *v))
    {
        eprintln!(
            "error: config.invalid_value: --accept-logic-change {unknown}: the pipeline has no \
             view named '{unknown}' (its views: {})",
            cfg.views
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    options.accept_logic_change = args.accept_logic_change.clone();
    options.replay_dead_letters = args.replay_dead_letters;
    options.accept_incomplete_rebuild = args.accept_incomplete_rebuild;
    let format = OutputFormat::from(args.format);
    let runtime = http_runtime().context("starting the HTTP runtime")?;
    let http_addr = match (&args.http, args.once) {
        (Some(a), _) => Some(a.clone()),
        (None, false) => Some("127.0.0.1:8080".to_string()),
        (None, true) => None,
    };
    // Bound before the pipeline starts, so the address other instances reach this
    // one at is known when it joins them.
    let listener = match &http_addr {
        Some(addr) => {
            Some(bind(&runtime, addr).with_context(|| format!("binding the HTTP API to {addr}"))?)
        }
        None => None,
    };
    let pg = match &args.pg {
        Some(addr) => Some(
            bind(&runtime, addr)
                .with_context(|| format!("binding the Postgres protocol to {addr}"))?,
        ),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    for bound in listener.iter().chain(pg.iter()).map(|l| l.local_addr()) {
        let bound = bound?;
        if !bound.ip().is_loopback() && cfg.auth.is_none() {
            if !args.insecure {
                eprintln!(
                    "error: refusing to serve {bound} without authentication: anyone who reaches \
                     it could read every view. Add `auth:` with tokens to {} (see \
                     docs/pipeline-reference.md), or pass --insecure if a network policy \
                     guards the port.",
                    args.pipeline.display()
                );
                return Ok(ExitCode::from(2));
            }
            eprintln!(
                "{}: warning: serving {bound} without authentication (--insecure): anyone who \
                 reaches it reads every view",
                cfg.name
            );
        }
    }
    if let Some(listener) = &listener {
        let bound = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut cluster = ClusterOptions::new(advertised(args.advertise.as_deref(), bound, scheme));
        cluster.peer_timeout = args.peer_timeout;
        if let Some(ca) = &args.tls_ca {
            cluster.ca = Some(
                std::fs::read(ca).with_context(|| format!("reading --tls-ca {}", ca.display()))?,
            );
        }
        options.cluster = Some(cluster);
    }
    // Views with a new version (or --rebuild) are rebuilt beside the running ones
    // first, then switched to.
    let plan = match projector_engine::plan_rebuild(&cfg, &options, &args.rebuild) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: error: {}: {e}", cfg.name, e.code());
            return Ok(ExitCode::from(1));
        }
    };
    let mut listeners = Listeners { http: listener, pg };
    let mut face = None;
    if let Some(plan) = &plan {
        let outcome = crate::rebuild::run(
            plan,
            &cfg,
            &options,
            &runtime,
            &mut listeners,
            tls.as_ref(),
            args.quiet,
        )?;
        match outcome {
            crate::rebuild::Outcome::Switched(f) => face = f,
            crate::rebuild::Outcome::Stopped(code) => return Ok(code),
        }
    }
    let pipeline = Pipeline::start(&cfg, &options).context("starting the pipeline")?;
    let shared = pipeline.shared().clone();
    let sql = Arc::new(SqlEngine::new(shared.catalog.clone(), cfg.query.clone())?);
    let progress = (!args.quiet).then(|| spawn_progress(shared.clone()));

    if let Some(face) = &face {
        // The restored views first, then SQL moves to them: no query sees them empty.
        crate::rebuild::wait_for_first_epoch(&pipeline);
        face.switch(shared.clone(), sql.clone());
    }
    if listeners.any() {
        let state = AppState::new(
            shared.clone(),
            sql.clone(),
            Arc::new(Auth::new(cfg.auth.as_ref())),
        );
        listeners.serve(&runtime, &state, tls.as_ref(), &cfg.name, "")?;
    }

    if args.once {
        let finished = pipeline.wait_until_finished();
        stop_progress(progress);
        if let Err(e) = finished {
            let _ = pipeline.stop();
            // Stopping drains the workers, which may find an earlier bad record.
            let reason = shared
                .fatal()
                .map_or_else(|| e.to_string(), |f| f.to_string());
            eprintln!("{}: failed: {reason}", cfg.name);
            return Ok(ExitCode::from(1));
        }
        print_summary(&shared);
        let mut code = ExitCode::SUCCESS;
        let mut stdout = std::io::stdout().lock();
        for q in &args.sql {
            match runtime.block_on(sql.query(q)) {
                Ok(r) => {
                    let mut bytes = render(&r.schema, &r.batches, format)?;
                    if format == OutputFormat::Json {
                        bytes.push(b'\n');
                    }
                    stdout.write_all(&bytes)?;
                }
                Err(e) => {
                    eprintln!("error: query failed: {e}\n  query: {q}");
                    code = ExitCode::from(1);
                }
            }
        }
        stdout.flush()?;
        pipeline.stop()?;
        return Ok(code);
    }

    // Serve until a signal or a fatal error.
    let fatal = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return None,
                _ = term.recv() => return None,
                _ = tick.tick() => {
                    if let Some(e) = shared.fatal() {
                        return Some(e);
                    }
                }
            }
        }
    });
    stop_progress(progress);
    eprintln!("{}: stopping", cfg.name);
    pipeline.stop()?;
    print_summary(&shared);
    runtime.shutdown_timeout(Duration::from_secs(1));
    match fatal.map(|e| shared.fatal().unwrap_or(e)) {
        Some(e) => {
            eprintln!("{}: failed: {e}", cfg.name);
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The faces' bound sockets, served once the pipeline they answer for runs.
pub(crate) struct Listeners {
    /// The HTTP API's.
    pub(crate) http: Option<tokio::net::TcpListener>,
    /// The Postgres protocol's (`--pg`).
    pub(crate) pg: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Whether a face is still to be served.
    pub(crate) fn any(&self) -> bool {
        self.http.is_some() || self.pg.is_some()
    }

    /// Serves the faces not served yet for `state`, saying where (`what` ends the
    /// line).
    pub(crate) fn serve(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        state: &AppState,
        tls: Option<&TlsFiles>,
        name: &str,
        what: &str,
    ) -> Result<()> {
        let tokens = if state.auth.enabled() {
            ", tokens required"
        } else {
            ""
        };
        if let Some(l) = self.http.take() {
            let bound = serve_on(runtime, l, state.clone(), tls).context("serving the HTTP API")?;
            eprintln!(
                "{name}: serving SQL on {}://{bound} (POST /sql, GET /views, /status, /health){tokens}{what}",
                if tls.is_some() { "https" } else { "http" },
            );
        }
        if let Some(l) = self.pg.take() {
            let bound = serve_pg(runtime, l, state.clone(), tls)
                .context("serving the Postgres protocol")?;
            eprintln!(
                "{name}: serving the Postgres protocol on {bound} (psql -h {} -p {}){}{tokens}{what}",
                bound.ip(),
                bound.port(),
                if tls.is_some() { ", TLS required" } else { "" },
            );
        }
        Ok(())
    }
}

struct ProgressHandle {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

fn spawn_progress(shared: Arc<Shared>) -> ProgressHandle {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let tty = std::io::stderr().is_terminal();
    let thread = std::thread::spawn(move || {
        let mut last = (Instant::now(), 0u64);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::park_timeout(Duration::from_secs(1));
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let c = shared.counters.snapshot();
            let now = Instant::now();
            let rate = (c.read - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, c.read);
            let line = format!(
                "{}: {} read ({}/s) · {} applied · {} duplicates · {} dead letters · {} skipped · epoch {} · checkpoint {}{}",
                shared.name,
                thousands(c.read),
                si(rate),
                thousands(c.applied),
                thousands(c.duplicates),
                thousands(c.dead_letters),
                thousands(c.skipped),
                shared.progress.get().epoch,
                shared.checkpoints.get().epoch,
                partitions_line(&shared),
            );
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
        if tty {
            eprint!("\r\x1b[2K");
        }
    });
    ProgressHandle { stop, thread }
}

/// The progress line's tail: the checkpoint's age, and the lag in total and, for a
/// few partitions, per partition (`-` where the end is not known yet).
fn partitions_line(shared: &Shared) -> String {
    let mut out = String::new();
    let checkpoint = shared.checkpoints.get();
    if checkpoint.written_ms > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let age = now.saturating_sub(checkpoint.written_ms) as f64 / 1000.0;
        out.push_str(&format!(" ({age:.1} s ago)"));
    }
    let positions: Vec<_> = shared
        .positions
        .snapshot()
        .into_iter()
        .filter(|p| p.assigned)
        .collect();
    if positions.iter().all(|p| p.lag.is_none()) {
        return out;
    }
    let total: u64 = positions.iter().filter_map(|p| p.lag).sum();
    out.push_str(&format!(" · lag {}", thousands(total)));
    if positions.len() > 1 && positions.len() <= 8 {
        let each: Vec<String> = positions
            .iter()
            .map(|p| {
                let lag = p.lag.map_or("-".to_string(), thousands);
                format!("{} {lag}", p.partition)
            })
            .collect();
        out.push_str(&format!(" ({})", each.join(", ")));
    }
    out
}

fn stop_progress(p: Option<ProgressHandle>) {
    if let Some(p) = p {
        p.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        p.thread.thread().unpark();
        let _ = p.thread.join();
    }
}

fn print_summary(shared: &Shared) {
    let c = shared.counters.snapshot();
    let secs = shared.started.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} events in {:.2} s ({} events/s) · {} applied · {} duplicates · {} dead letters · {} skipped{}",
        shared.name,
        thousands(c.read),
        secs,
        si(c.read as f64 / secs.max(1e-9)),
        thousands(c.applied),
        thousands(c.duplicates),
        thousands(c.dead_letters),
        thousands(c.skipped),
        // Only pipelines that meet tombstones have any.
        if c.ignored > 0 {
            format!(" · {} ignored", thousands(c.ignored))
        } else {
            String::new()
        },
    );
    // Start-up (restore, group join) apart from reading: how soon the first record
    // came, the rate from there on, and the last checkpoint's size and time.
    let first = shared
        .first_read_us
        .load(std::sync::atomic::Ordering::Relaxed) as f64
        / 1e6;
    let checkpoint = shared.checkpoints.get();
    if first > 0.0 {
        let reading = (secs - first).max(1e-9);
        let mut line = format!(
            "{}: first record after {first:.2} s · {} events/s from there",
            shared.name,
            si(c.read as f64 / reading),
        );
        if checkpoint.duration_ms > 0 || checkpoint.bytes > 0 {
            line.push_str(&format!(
                " · last checkpoint: epoch {}, {} bytes of state, written in {} ms",
                checkpoint.epoch,
                thousands(checkpoint.bytes),
                checkpoint.duration_ms
            ));
        }
        eprintln!("{line}");
    }
    if c.dead_letters > 0 {
        eprintln!(
            "{}: dead letters are in {}",
            shared.name,
            shared.bad.destination()
        );
    }
    let r = shared.counters.redrive.snapshot();
    if r.queued > 0 || r.before > 0 || r.failed > 0 {
        eprintln!(
            "{}: dead letters replayed: {} · {} applied · {} dropped (duplicates) · {} replayed before · {} failed again",
            shared.name,
            thousands(r.queued),
            thousands(r.applied),
            thousands(r.dropped),
            thousands(r.before),
            thousands(r.failed),
        );
        for f in &r.failures {
            eprintln!("{}: failed again (left as a dead letter): {f}", shared.name);
        }
        if r.failed > r.failures.len() as u64 {
            eprintln!(
                "{}: ... and {} more",
                shared.name,
                r.failed - r.failures.len() as u64
            );
        }
    }
    tracing::debug!(status = %status_json(shared), "final status");
}

pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The base URL other instances reach this one at: `--advertise` (`scheme://` added
/// to a bare host:port), else the bound address, with this host's name in place of an
/// unspecified IP (`0.0.0.0`).
fn advertised(flag: Option<&str>, bound: std::net::SocketAddr, scheme: &str) -> String {
    match flag {
        Some(a) if a.contains("://") => a.trim_end_matches('/').to_string(),
        Some(a) => format!("{scheme}://{a}"),
        None if bound.ip().is_unspecified() => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{scheme}://{host}:{}", bound.port())
        }
        None => format!("{scheme}://{bound}"),
    }
}
