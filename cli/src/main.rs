//! `projector`: run pipelines, query their views, validate pipeline files.

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use projector_benches::harness::si;
use projector_connectors::SourceConfig;
use projector_engine::config;
use projector_engine::{AppState, query_runtime, serve, status_json};
use projector_engine::{OutputFormat, render};
use projector_engine::{Pipeline, RunOptions, Shared};
use projector_engine::{QueryLimits, SqlEngine};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The hot path allocates on the ingest thread (decoded strings) and frees on the
// workers; mimalloc's per-thread heaps make that cross-thread traffic cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "projector",
    version,
    about = "Fold event streams into SQL-queryable views"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline and serve its views over HTTP (or, with --once, run to the end of
    /// the input, print --sql results and exit).
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Address for the HTTP API [default: 127.0.0.1:8080; off with --once unless given].
        #[arg(long)]
        http: Option<String>,
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
    },
    /// Run SQL against a running instance.
    Query {
        /// Base URL of the instance.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "PROJECTOR_URL")]
        url: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: CliFormat,
        /// The SQL query.
        sql: String,
    },
    /// Produce generated events to a Kafka topic, creating it if it does not exist.
    Produce {
        /// A pipeline file with a kafka source (its brokers and first topic are used),
        /// or a topic name.
        target: String,
        /// Bootstrap servers, when TARGET is a topic name.
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Partitions of the topic, if it has to be created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// The synthetic workload.
        #[arg(long, default_value = "bank")]
        scenario: String,
        /// How many events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// How many distinct keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// The same seed gives the same events.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Instead of generating events, send each non-blank line of this file as one
        /// message, byte for byte (keyed by its `aggregateId` when it has one).
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Measure a pipeline: throughput on recorded input, freshness at a fixed input
    /// rate, and SQL latency over HTTP while it ingests. A Kafka pipeline is measured
    /// on a fresh 4-partition topic filled with generated bank events, against a bare
    /// rdkafka consumer reading the same topic (throughput only). Prints a table;
    /// --json writes the full report.
    Bench {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Events to record and replay [default: what the source produces; Kafka:
        /// events produced to the benchmark topic, 1,000,000].
        #[arg(long)]
        events: Option<u64>,
        /// Input rate of the freshness phase, events/s [default: half the measured
        /// throughput].
        #[arg(long)]
        rate: Option<f64>,
        /// Concurrent SQL clients during the freshness phase.
        #[arg(long, default_value_t = 4)]
        query_clients: usize,
        /// Throughput runs (median and spread are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Worker threads [default: as for `projector run`].
        #[arg(long)]
        workers: Option<usize>,
        /// Keep the last throughput run's checkpoint here (an empty or new directory),
        /// to check its views afterwards with `projector run --once --state-dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Measure throughput only (no freshness or query phase).
        #[arg(long)]
        throughput_only: bool,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No progress output on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a pipeline file and report every problem in it.
    Validate {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliFormat {
    Table,
    Json,
    Csv,
}

impl From<CliFormat> for OutputFormat {
    fn from(f: CliFormat) -> Self {
        match f {
            CliFormat::Table => OutputFormat::Table,
            CliFormat::Json => OutputFormat::Json,
            CliFormat::Csv => OutputFormat::Csv,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROJECTOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { pipeline } => validate(&pipeline),
        Command::Bench {
            pipeline,
            events,
            rate,
            query_clients,
            runs,
            workers,
            state_dir,
            throughput_only,
            json,
            quiet,
        } => bench(
            projector_benches::harness::BenchOptions {
                pipeline,
                events,
                rate,
                query_clients,
                runs,
                workers,
                state_dir,
                throughput_only,
                progress: !quiet,
            },
            json,
        ),
        Command::Produce {
            target,
            brokers,
            partitions,
            scenario,
            events,
            keys,
            seed,
            from_file,
        } => produce(
            &target,
            brokers,
            partitions,
            &scenario,
            (events, keys, seed),
            from_file.as_deref(),
        ),
        Command::Query { url, format, sql } => query(&url, format.into(), &sql),
        Command::Run {
            pipeline,
            http,
            state_dir,
            once,
            sql,
            format,
            workers,
            quiet,
        } => run(RunArgs {
            pipeline,
            http,
            state_dir,
            once,
            sql,
            format: format.into(),
            workers,
            quiet,
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, `context: error: cause`. Our errors keep their
/// causes as sources and also name them in their message, so a cause whose text the
/// line already holds is not repeated.
fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn load(path: &std::path::Path) -> Result<config::PipelineConfig, ExitCode> {
    config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!("{} error(s) in {}", errors.0.len(), path.display());
        ExitCode::from(2)
    })
}

fn validate(path: &std::path::Path) -> Result<ExitCode> {
    match load(path) {
        Ok(c) => {
            println!(
                "{}: ok (pipeline '{}', {} view(s))",
                path.display(),
                c.name,
                c.views.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

fn bench(
    options: projector_benches::harness::BenchOptions,
    json: Option<PathBuf>,
) -> Result<ExitCode> {
    let report = projector_benches::harness::run(&options)?;
    if let Some(path) = &json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", projector_benches::harness::render_table(&report));
    let errors: u64 = report.queries.iter().map(|q| q.errors).sum();
    if errors > 0 {
        eprintln!("error: {errors} queries failed during the benchmark (see the table)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

struct RunArgs {
    pipeline: PathBuf,
    http: Option<String>,
    state_dir: Option<PathBuf>,
    once: bool,
    sql: Vec<String>,
    format: OutputFormat,
    workers: Option<usize>,
    quiet: bool,
}

fn run(args: RunArgs) -> Result<ExitCode> {
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
    let runtime = query_runtime().context("starting the query runtime")?;
    let pipeline = Pipeline::start(&cfg, &options).context("starting the pipeline")?;
    let shared = pipeline.shared().clone();
    let sql = Arc::new(SqlEngine::new(
        shared.catalog.clone(),
        QueryLimits::default(),
    )?);
    let progress = (!args.quiet).then(|| spawn_progress(shared.clone()));

    let http_addr = match (&args.http, args.once) {
        (Some(a), _) => Some(a.clone()),
        (None, false) => Some("127.0.0.1:8080".to_string()),
        (None, true) => None,
    };
    if let Some(addr) = &http_addr {
        let state = AppState {
            shared: shared.clone(),
            sql: sql.clone(),
        };
        let bound = serve(&runtime, addr, state)
            .with_context(|| format!("binding the HTTP API to {addr}"))?;
        eprintln!(
            "{}: serving SQL on http://{bound} (POST /sql, GET /views, /status, /health)",
            cfg.name
        );
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
                    let mut bytes = render(&r.schema, &r.batches, args.format)?;
                    if args.format == OutputFormat::Json {
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
        "{}: {} events in {:.2} s ({} events/s) · {} applied · {} duplicates · {} dead letters · {} skipped",
        shared.name,
        thousands(c.read),
        secs,
        si(c.read as f64 / secs.max(1e-9)),
        thousands(c.applied),
        thousands(c.duplicates),
        thousands(c.dead_letters),
        thousands(c.skipped),
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
    tracing::debug!(status = %status_json(shared), "final status");
}

fn thousands(n: u64) -> String {
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

fn produce(
    target: &str,
    brokers: String,
    partitions: i32,
    scenario: &str,
    (events, keys, seed): (u64, u64, u64),
    from_file: Option<&std::path::Path>,
) -> Result<ExitCode> {
    use projector_connectors::generator::{GeneratorConfig, GeneratorSource, scenario_from_name};
    use projector_connectors::kafka::{EventProducer, ensure_topic};
    let path = std::path::Path::new(target);
    let (brokers, topic, properties) = if path.is_file() {
        let cfg = match load(path) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let SourceConfig::Kafka(k) = cfg.source else {
            return Err(anyhow!("{target}: the pipeline's source is not kafka"));
        };
        (k.brokers, k.topics[0].clone(), k.properties)
    } else {
        (brokers, target.to_string(), Default::default())
    };
    let scenario = scenario_from_name(scenario)
        .ok_or_else(|| anyhow!("unknown scenario '{scenario}' (known: bank)"))?;
    ensure_topic(&brokers, &properties, &topic, partitions)?;
    let producer = EventProducer::new(&brokers, &properties, &topic)?;
    let config = GeneratorConfig {
        scenario,
        events,
        keys,
        seed,
    };
    let resume = projector_connectors::Resume::new();
    let mut source: Box<dyn projector_connectors::Source> = match from_file {
        Some(path) => Box::new(projector_connectors::file::FileSource::open(
            &projector_connectors::file::FileConfig {
                path: path.to_path_buf(),
            },
            &resume,
        )?),
        None => Box::new(GeneratorSource::new(&config, &resume)),
    };
    let started = Instant::now();
    let mut reported = Instant::now();
    let sent = producer.send_all(source.as_mut(), |sent| {
        if reported.elapsed() >= Duration::from_secs(1) {
            eprintln!("produce: {} events to {topic}", thousands(sent));
            reported = Instant::now();
        }
    })?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produce: {} events to {topic} on {brokers} in {secs:.2} s ({} events/s)",
        thousands(sent),
        si(sent as f64 / secs.max(1e-9))
    );
    Ok(ExitCode::SUCCESS)
}

fn query(url: &str, format: OutputFormat, sql: &str) -> Result<ExitCode> {
    let wire = match format {
        OutputFormat::Table | OutputFormat::Arrow => "arrow",
        OutputFormat::Json => "json",
        OutputFormat::Csv => "csv",
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let endpoint = format!("{}/sql?format={wire}", url.trim_end_matches('/'));
    let mut resp = agent
        .post(&endpoint)
        .header("content-type", "text/plain")
        .send(sql)
        .map_err(|e| anyhow!("cannot reach {url}: {e} (is `projector run` serving there?)"))?;
    let status = resp.status();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .context("reading the response")?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = v["error"]["code"].as_str().unwrap_or("http.error");
        let message = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        eprintln!("error: {code}: {message}");
        return Ok(ExitCode::from(1));
    }
    let mut stdout = std::io::stdout().lock();
    if format == OutputFormat::Table {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        stdout.write_all(&render(&schema, &batches, OutputFormat::Table)?)?;
    } else {
        stdout.write_all(&body)?;
        if format == OutputFormat::Json {
            stdout.write_all(b"\n")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
