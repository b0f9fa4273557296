//! `projector`: run pipelines, query their views, validate pipeline files, benchmark.
//!
//! ```text
//!  main.rs     arguments, dispatch, errors on one line; validate and bench
//!  run.rs      run: the pipeline, HTTP or --once with --sql, progress and summary
//!  rebuild.rs  run while views are rebuilt beside the running ones, then the switch
//!  query.rs    query: SQL against a running instance
//!  parked.rs   parked: list, retry and skip the parked keys of a running instance
//!  produce.rs  produce: events into a Kafka topic
//! ```

mod parked;
mod produce;
mod query;
mod rebuild;
mod run;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use projector_engine::{OutputFormat, config};
use run::RunArgs;
use std::path::PathBuf;
use std::process::ExitCode;

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
    Run(RunArgs),
    /// Make a new random bearer token, and print it with the SHA-256 to put in the
    /// pipeline's `auth.tokens` (the token itself goes to the client only).
    Token,
    /// Run SQL against a running instance.
    Query {
        /// Base URL of the instance.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "PROJECTOR_URL")]
        url: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: CliFormat,
        /// Accept an answer without the partitions no instance can answer for now (the
        /// missing ones are named on stderr) instead of an error.
        #[arg(long)]
        partial: bool,
        /// Bearer token, when the pipeline has `auth:`.
        #[arg(long, env = "PROJECTOR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Certificate authorities (PEM) for an HTTPS instance, besides the system's.
        #[arg(long, env = "PROJECTOR_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// The SQL query.
        sql: String,
    },
    /// The parked keys of a running instance (`on_error: park`): list them, or resume
    /// one after the pipeline was fixed.
    Parked {
        /// Base URL of the instance.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "PROJECTOR_URL")]
        url: String,
        /// Bearer token, when the pipeline has `auth:`.
        #[arg(long, env = "PROJECTOR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Certificate authorities (PEM) for an HTTPS instance, besides the system's.
        #[arg(long, env = "PROJECTOR_CA_CERT")]
        ca_cert: Option<PathBuf>,
        #[command(subcommand)]
        action: parked::ParkedAction,
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
        /// How the SQL clients ask: `http` (POST /sql) or `pg` (the Postgres protocol,
        /// prepared statements).
        #[arg(long, value_enum, default_value = "http")]
        query_face: QueryFaceArg,
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
        /// After each throughput run, fold the same events with a hand-written
        /// one-thread serde + HashMap loop (the bank pipeline's views) and report
        /// Projector's rate as a ratio of it; the views must come out equal.
        #[arg(long)]
        against_loop: bool,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No progress output on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print each partition's checkpoints in the pipeline's checkpoint store, one JSON
    /// line per partition: its owner and generation, the epochs kept, where the newest
    /// resumes.
    Checkpoints {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The state directory, for a store that is the default `checkpoints` directory
        /// in it [default: as for `projector run`].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// The dead letters of a pipeline: list them, or replay them through it (after a
    /// fix), each once.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Check a pipeline file and report every problem in it.
    Validate {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
    },
}

/// `projector dead-letters ...`.
#[derive(Subcommand)]
enum DeadLetterAction {
    /// Print every dead letter, one JSON line each (the dead-letter file's format),
    /// from the pipeline's destination: its dead-letter topic, its checkpoint store
    /// (with `checkpoint.store`), or `<state_dir>/dead-letters.ndjson`.
    List {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The state directory [default: as for `projector run`].
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Send the dead letters back through the pipeline (after a fix), each once, to
    /// the state of their original partition, in order, before the input's new
    /// records; then run to the end of the input as `run --once` does. A replay
    /// killed midway resumes where its last checkpoint was. Letters that fail again
    /// stay dead letters (and are named).
    Replay {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The state directory [default: as for `projector run`].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Worker threads [default: as for `projector run`].
        #[arg(long)]
        workers: Option<usize>,
        /// Resume VIEW although its logic changed (the fix): see `projector run`.
        #[arg(long, value_name = "VIEW")]
        accept_logic_change: Vec<String>,
    },
}

/// `projector bench --query-face`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum QueryFaceArg {
    /// `POST /sql`.
    Http,
    /// The Postgres protocol, prepared statements.
    Pg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum CliFormat {
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

/// `projector checkpoints`: each partition's head, one JSON line each, to stdout.
fn checkpoints(pipeline: &std::path::Path, state_dir: Option<PathBuf>) -> Result<ExitCode> {
    use std::io::Write;
    let cfg = match load(pipeline) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let options = projector_engine::RunOptions::resolve(&cfg, state_dir);
    let partitions = projector_engine::stored_checkpoints(&cfg.checkpoint, &options.state_dir)
        .context("reading the checkpoint store")?;
    let mut out = std::io::stdout().lock();
    for p in partitions {
        serde_json::to_writer(&mut out, &p).context("writing to stdout")?;
        out.write_all(b"\n").context("writing to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `projector dead-letters list`: every letter of the destination, to stdout.
fn dead_letters(pipeline: &std::path::Path, state_dir: Option<PathBuf>) -> Result<ExitCode> {
    use std::io::Write;
    let cfg = match load(pipeline) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let options = projector_engine::RunOptions::resolve(&cfg, state_dir);
    let letters = projector_engine::letter_lines(&cfg, &options.state_dir)
        .context("reading the dead letters")?;
    std::io::stdout()
        .write_all(&letters)
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
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
        Command::DeadLetters {
            action:
                DeadLetterAction::List {
                    pipeline,
                    state_dir,
                },
        } => dead_letters(&pipeline, state_dir),
        Command::DeadLetters {
            action:
                DeadLetterAction::Replay {
                    pipeline,
                    state_dir,
                    workers,
                    accept_logic_change,
                },
        } => run::run(RunArgs::replay(
            pipeline,
            state_dir,
            workers,
            accept_logic_change,
        )),
        Command::Checkpoints {
            pipeline,
            state_dir,
        } => checkpoints(&pipeline, state_dir),
        Command::Bench {
            pipeline,
            events,
            rate,
            query_clients,
            query_face,
            runs,
            workers,
            state_dir,
            throughput_only,
            against_loop,
            json,
            quiet,
        } => bench(
            projector_benches::harness::BenchOptions {
                pipeline,
                events,
                rate,
                query_clients,
                query_face: match query_face {
                    QueryFaceArg::Http => projector_benches::harness::QueryFace::Http,
                    QueryFaceArg::Pg => projector_benches::harness::QueryFace::Pg,
                },
                runs,
                workers,
                state_dir,
                throughput_only,
                against_loop,
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
        } => produce::produce(
            &target,
            brokers,
            partitions,
            &scenario,
            (events, keys, seed),
            from_file.as_deref(),
        ),
        Command::Query {
            url,
            format,
            partial,
            token,
            ca_cert,
            sql,
        } => query::query(
            &query::Connection {
                url: &url,
                token: token.as_deref(),
                ca: ca_cert.as_deref(),
            },
            format.into(),
            partial,
            &sql,
        ),
        Command::Parked {
            url,
            token,
            ca_cert,
            action,
        } => parked::parked(
            &query::Connection {
                url: &url,
                token: token.as_deref(),
                ca: ca_cert.as_deref(),
            },
            &action,
        ),
        Command::Token => token(),
        Command::Run(args) => run::run(args),
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

fn token() -> Result<ExitCode> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let token = format!("pj_{}", config::hex(&bytes));
    println!("token:  {token}");
    println!("sha256: {}", config::hex(&config::hash_token(&token)));
    eprintln!(
        "Give the token to the client (PROJECTOR_TOKEN, or Authorization: Bearer ...) and put \
         the sha256 in the pipeline:\n  auth:\n    tokens:\n      - name: NAME\n        sha256: \
         {}\n        views: [\"*\"]",
        config::hex(&config::hash_token(&token))
    );
    Ok(ExitCode::SUCCESS)
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
