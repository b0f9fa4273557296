//! A running pipeline: source → decode + route → workers → epochs → catalog.
//!
//! Threads: one ingest thread (poll the source, decode, route by key), one epoch timer
//! (cuts an epoch every `publish_interval`), N workers, one coordinator. The router sits
//! behind a mutex shared by the ingest thread and the timer, so an epoch barrier always
//! falls between two polled batches: every worker's snapshot covers the same offsets.

use super::decoding::{Decoding, KafkaFields};
use super::ingest::{Ingress, ingest_loop};
use super::owner::Owner;
use super::parking::{ParkBoard, ParkRequest, Resolved};
use super::redrive::Redrive;
use super::registry;
use super::timer::timer_loop;
use crate::config::{EnvelopeRole, Format, FormatConfig, PipelineConfig, ReaderSchema};
use crate::runtime::bad_records::{BadRecords, IdReader};
use crate::runtime::epoch::{CoordMsg, Progress, run_coordinator};
use crate::runtime::router::Router;
use crate::runtime::worker::{Worker, WorkerMsg};
use crate::serve::catalog::Catalog;
use crate::serve::cluster::members::heartbeat_loop;
use crate::serve::cluster::{Cluster, ClusterOptions, KeyPartitions};
use crate::serve::status::{Counters, Positions};
use crate::state::checkpoint::CheckpointError;
use crate::state::checkpoint::recovery::{CheckpointStatus, Checkpoints};
use crate::state::checkpoint::writer::{Writer, WriterThread};
use crate::state::units::Units;
use crate::{Error, Fatal, Result};
use crossbeam_channel::{Sender, bounded, unbounded};
use projector_connectors::kafka::Partitioner;
use projector_connectors::{Resume, Source, SourceConfig};
use projector_operators::decode::{BodyFormat, RecordDecoder, Registry};
use projector_operators::projection::Projection;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Records per source poll and events per worker batch.
pub(super) const BATCH: usize = 1024;
/// Batches a worker channel holds before the source waits (backpressure).
const CHANNEL_BATCHES: usize = 16;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where dead letters and checkpoints live.
    pub state_dir: PathBuf,
    /// Number of worker threads.
    pub workers: usize,
    /// Replay a partition from the start of the input when every checkpoint of it is
    /// damaged, instead of refusing to start (`--replay-if-damaged`).
    pub replay_if_damaged: bool,
    /// Answer queries for the partitions other instances own (`--advertise`): only
    /// for a source shared by several instances (a Kafka consumer group), through
    /// their common checkpoint store.
    pub cluster: Option<ClusterOptions>,
    /// Views resumed on their checkpointed state although their logic changed
    /// (`--accept-logic-change`): the user says the change is safe for that state.
    pub accept_logic_change: Vec<String>,
    /// Replay the dead letters of each unit as it is restored, before its new records
    /// (`--replay-dead-letters`; see `runtime/redrive.rs`).
    pub replay_dead_letters: bool,
    /// Rebuild views although the input no longer holds its oldest records
    /// (`--accept-incomplete-rebuild`).
    pub accept_incomplete_rebuild: bool,
}

impl RunOptions {
    /// The options a pipeline file asks for, with `state_dir` overriding the file's.
    pub fn resolve(config: &PipelineConfig, state_dir: Option<PathBuf>) -> Self {
        let state_dir = state_dir
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from("state").join(&config.name));
        // The ingest thread (read, decode, route) keeps a core busy: on 2 cores one
        // worker beats two (BENCHMARKS.md, "generator input, bank pipeline").
        let workers = config.workers.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.saturating_sub(1).max(1)
        });
        RunOptions {
            state_dir,
            workers: workers.max(1),
            replay_if_damaged: false,
            cluster: None,
            accept_logic_change: Vec::new(),
            replay_dead_letters: false,
            accept_incomplete_rebuild: false,
        }
    }
}

/// Things every pipeline thread can see.
#[derive(Debug)]
pub struct Shared {
    /// The pipeline name.
    pub name: String,
    /// Totals.
    pub counters: Arc<Counters>,
    /// Per-partition positions.
    pub positions: Arc<Positions>,
    /// Published-epoch progress.
    pub progress: Arc<Progress>,
    /// Bad-record policy and dead letters.
    pub bad: Arc<BadRecords>,
    /// The views SQL reads.
    pub catalog: Arc<Catalog>,
    /// Number of workers.
    pub workers: usize,
    /// When the pipeline started.
    pub started: Instant,
    /// The newest checkpoint epoch a partition of this run was restored from (0: none).
    pub restored_epoch: AtomicU64,
    /// When the first record was read, in microseconds after `started` (0: not yet):
    /// the start-up cost (restore, group join) a run paid before reading.
    pub first_read_us: AtomicU64,
    /// The newest checkpoint, per unit.
    pub checkpoints: Arc<CheckpointStatus>,
    /// The source partitions grouped into units of state.
    pub(crate) units: Arc<Units>,
    /// The parked keys of every worker (`on_error: park`).
    pub parked: Arc<ParkBoard>,
    /// The workers' inboxes, for `retry` and `skip` of parked keys.
    pub(crate) inboxes: Mutex<Vec<Sender<WorkerMsg>>>,
    /// The epoch-cutting side, to publish and checkpoint a retry at once (also after
    /// the input finished, when no timer cuts epochs any more).
    ingress: IngressCell,
    /// Reading is held (the ingest thread reads no record while set; see
    /// [`Pipeline::hold_reading`]).
    pub(crate) hold: AtomicBool,
    /// The ingest thread saw `hold` and reads nothing.
    pub(crate) holding: AtomicBool,
    /// Where each partition's input ends for this run (see [`Pipeline::finish_at`]).
    pub(crate) stop_at: Mutex<Option<Vec<u64>>>,
    /// While views are rebuilt beside this pipeline's: how far along, for `/status`.
    pub rebuild: Mutex<Option<serde_json::Value>>,
    /// Offsets of the newest checkpoint, not yet handed to the source.
    pub(super) durable: Arc<Mutex<Option<Resume>>>,
    /// Why the source cannot make progress now (it keeps retrying).
    pub(super) degraded: Mutex<Option<String>>,
    /// What `/metrics` cannot read from the rest: timings, queries, stalls.
    pub(crate) metrics: Arc<crate::serve::metrics::Metrics>,
    /// What the stall watchdog found.
    pub(crate) watchdog: Arc<super::watchdog::Watchdog>,
    pub(super) stop: Arc<AtomicBool>,
    source_error: Mutex<Option<Fatal>>,
}

/// The ingress, once the pipeline has one.
#[derive(Default)]
struct IngressCell(std::sync::OnceLock<Arc<Mutex<Ingress>>>);

impl std::fmt::Debug for IngressCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ingress")
    }
}

impl Shared {
    /// Why the pipeline stopped on its own, if it did (bad record under `fail`, a
    /// dead letter that could not be written, or a source error).
    pub fn fatal(&self) -> Option<Fatal> {
        self.bad
            .fatal()
            .or_else(|| self.source_error.lock().expect("lock").clone())
    }

    /// Why the pipeline cannot make progress right now (no broker reachable, the
    /// checkpoint store away), if so.
    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .expect("lock")
            .clone()
            .or_else(|| self.checkpoints.degraded())
            .or_else(|| self.watchdog.reason())
    }

    /// Retries `key` if it is parked (or, with `skip`, drops its failing event to the
    /// dead letters first), in whichever worker holds it: `Ok(None)` when no worker
    /// of this instance holds it parked. Waits for the worker, at most `wait`.
    pub fn resolve_parked(
        &self,
        key: &str,
        skip: bool,
        wait: Duration,
    ) -> std::result::Result<Option<Resolved>, String> {
        let inboxes = self.inboxes.lock().expect("inboxes lock").clone();
        if inboxes.is_empty() {
            return Err("the pipeline is stopping".into());
        }
        let deadline = Instant::now() + wait;
        let (tx, rx) = unbounded();
        let mut sent = 0;
        let mut outcome: std::result::Result<Option<Resolved>, String> = Ok(None);
        for inbox in &inboxes {
            let request = ParkRequest {
                key: key.to_string(),
                skip,
                reply: tx.clone(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if inbox.send_timeout(WorkerMsg::Park(request), left).is_err() {
                outcome = Err(
                    "a worker did not take the request in time: it may or may not \
                               be done (GET /parked tells)"
                        .into(),
                );
                break;
            }
            sent += 1;
        }
        for _ in 0..sent {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some(r)) => {
                    if let Ok(found) = &mut outcome {
                        *found = Some(r);
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    outcome = Err("a worker did not answer in time: the request may or may \
                                   not be done (GET /parked tells)"
                        .into());
                    break;
                }
            }
        }
        // Published and checkpointed now, not at the next input (the input may be
        // over); also when a worker was late: it does the request all the same.
        let changed = !matches!(outcome, Ok(None));
        if sent > 0
            && changed
            && let Some(ingress) = self.ingress.0.get()
            && self.fatal().is_none()
            && !self.stop.load(Ordering::Relaxed)
        {
            let mut ing = ingress.lock().expect("ingress lock");
            ing.barrier(false, true)
                .map_err(|_| "the pipeline is stopping".to_string())?;
        }
        outcome
    }

    /// Records why the pipeline must stop; the first reason wins.
    pub(super) fn set_fatal(&self, e: Fatal) {
        let mut g = self.source_error.lock().expect("lock");
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// A worker or the coordinator went away while the ingest side still had work for
    /// it: that only happens when a thread panicked.
    pub(super) fn lost_thread(&self) {
        if !self.bad.failed() {
            self.set_fatal(Fatal::LostThread);
        }
    }
}

/// A started pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    ingress: Arc<Mutex<Ingress>>,
    coord: Sender<CoordMsg>,
    workers: Vec<JoinHandle<()>>,
    coordinator: Option<JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
    ingest: Option<JoinHandle<()>>,
    writer: Option<(Arc<Writer>, JoinHandle<()>)>,
    heartbeat: Option<(Arc<Cluster>, Arc<AtomicBool>, JoinHandle<()>)>,
    /// The stall watchdog (it stops within a second of `stop`).
    watchdog: Option<JoinHandle<()>>,
    /// Held while the pipeline runs: one process per state directory.
    _lock: std::fs::File,
}

/// How the records' bodies are decoded: the format, the reader's schema (the
/// pipeline's file, or else the latest version of the topic's `<topic>-value` subject,
/// fetched now) and the registry writer schemas come from.
fn body_format(
    config: &PipelineConfig,
    options: &FormatConfig,
    topic: Option<&str>,
) -> Result<BodyFormat> {
    let registry = config
        .registry
        .as_ref()
        .map(|r| Arc::new(registry::HttpRegistry::new(r)));
    let shared: Option<Registry> = registry.clone().map(|r| r as Registry);
    // Without a schema file, the reader's schema is the subject's latest version, so
    // older and newer records read alike (when the topic, so its subject, is known).
    let topic = topic.or(match &config.source {
        SourceConfig::Kafka(k) if k.topics.len() == 1 => Some(k.topics[0].as_str()),
        _ => None,
    });
    let latest = |kind: &str| -> Result<Option<projector_operators::decode::RegisteredSchema>> {
        let (Some(r), Some(topic)) = (&registry, topic) else {
            return Ok(None);
        };
        let subject = format!("{topic}-value");
        let latest = r.latest(&subject).map_err(|e| {
            Error::Fatal(Fatal::Registry(format!(
                "reading the latest {kind} schema of subject '{subject}': {e}"
            )))
        })?;
        Ok(latest)
    };
    let bad = |e: String| Error::Fatal(Fatal::Registry(e));
    Ok(match options.format {
        Format::Json => BodyFormat::Json,
        Format::Raw => BodyFormat::Raw,
        Format::Avro => {
            let reader = match &options.schema {
                Some(ReaderSchema::Avro(s)) => Some(s.clone()),
                _ => match latest("Avro")? {
                    Some(s) => Some(Arc::new(
                        projector_operators::decode::AvroSchema::parse_str(&s.text)
                            .map_err(|e| bad(format!("the latest schema is not Avro: {e}")))?,
                    )),
                    None => None,
                },
            };
            BodyFormat::Avro {
                reader,
                framing: options.framing,
                registry: shared,
            }
        }
        Format::Protobuf => {
            let reader = match &options.schema {
                Some(ReaderSchema::Protobuf(m)) => Some(m.clone()),
                _ => match latest("Protobuf")? {
                    Some(s) => Some(
                        projector_operators::decode::registered_message(
                            &s,
                            registry
                                .as_deref()
                                .map(|r| r as &dyn projector_operators::decode::SchemaSource),
                            None,
                        )
                        .map_err(|e| bad(format!("the latest schema: {e}")))?,
                    ),
                    None => None,
                },
            };
            BodyFormat::Protobuf {
                reader,
                framing: options.framing,
                registry: shared,
            }
        }
    })
}

/// One decoder per stream (topic) when topics have their own format or envelope,
/// else one for every record.
fn decoders(config: &PipelineConfig) -> Result<Vec<RecordDecoder>> {
    if config.topics.is_empty() {
        let body = body_format(config, &config.format_options, None)?;
        return Ok(vec![RecordDecoder::with_format(
            &config.fields,
            config.preset,
            body,
        )]);
    }
    config
        .topics
        .iter()
        .map(|t| {
            let options = t.format.as_ref().unwrap_or(&config.format_options);
            let body = body_format(config, options, Some(&t.topic))?;
            Ok(RecordDecoder::with_format(
                &config.fields,
                config.preset,
                body,
            ))
        })
        .collect()
}

/// Per stream (topic): the envelope slots its records fill from other fields than the
/// pipeline's envelope reads, as (from, to) (from `None`: the topic has none).
fn normalizations(config: &PipelineConfig) -> Vec<Vec<(Option<usize>, usize)>> {
    config
        .topics
        .iter()
        .map(|t| {
            t.envelope
                .iter()
                .filter_map(|(role, from)| {
                    let to = role.slot(&config.envelope)?;
                    (*from != Some(to)).then(|| (from.map(|f| f.index()), to.index()))
                })
                .collect()
        })
        .collect()
}

impl Pipeline {
    /// Opens the source and starts every thread.
    pub fn start(config: &PipelineConfig, options: &RunOptions) -> Result<Pipeline> {
        Self::start_with(config, options, &|resume| {
            projector_connectors::open(&config.source, resume)
        })
    }

    /// Like [`Pipeline::start`], reading from the sources `open` makes (called with
    /// where each partition resumes) instead of the configured one: `projector bench`
    /// replays recorded input this way.
    pub fn start_with(
        config: &PipelineConfig,
        options: &RunOptions,
        open: &dyn Fn(&Resume) -> projector_connectors::Result<Box<dyn Source>>,
    ) -> Result<Pipeline> {
        std::fs::create_dir_all(&options.state_dir).map_err(|e| Error::Io {
            context: format!("creating state dir {}", options.state_dir.display()),
            source: e,
        })?;
        let lock = lock_state_dir(&options.state_dir)?;
        let dlq_path = options.state_dir.join("dead-letters.ndjson");
        let n = options.workers;
        let projection = Arc::new(projection_of(config));

        let mut source = open(&Resume::new()).map_err(Error::Source)?;
        let partitions = source.partitions();
        let units = Arc::new(Units::new(&partitions));

        // Stdin cannot be read again, so there is nothing to resume: no checkpoints.
        let replayable = !matches!(&config.source, SourceConfig::File(f) if f.is_stdin());
        let checkpoints = match replayable {
            true => Some(Arc::new(Checkpoints::open(
                &config.checkpoint,
                &options.state_dir,
                units.clone(),
                options.replay_if_damaged,
                {
                    let mut logic = config.logic.clone();
                    logic.accepted = options.accept_logic_change.iter().cloned().collect();
                    logic
                },
                config.text.clone(),
            )?)),
            false => None,
        };
        // Stdin is new input every run, so its offsets say nothing about earlier
        // runs' letters: keep those aside. A replayable source's letters stay, and a
        // replay skips the ones already written (also before any checkpoint, and with
        // other instances appending to the same file).
        if checkpoints.is_none() && config.dead_letter.is_none() {
            rotate_old_dead_letters(&dlq_path)?;
        }

        let catalog = Arc::new(Catalog::with_units(config.views.clone(), units.clone(), n));
        let positions = Arc::new(Positions::default());
        positions.init(partitions.iter().map(|p| p.name.clone()).collect());
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            counters: Arc::new(Counters::default()),
            positions,
            progress: Arc::new(Progress::default()),
            bad: Arc::new({
                let bad = BadRecords::new(config.on_error, dlq_path, config.dead_letter.clone())
                    .with_ids(IdReader::new(&config.envelope, &config.id_paths));
                match (&checkpoints, &config.checkpoint.store) {
                    // Several instances share the store: letters move with partitions.
                    (Some(_), Some(_)) => bad.in_checkpoint_store(),
                    _ => bad,
                }
            }),
            catalog,
            workers: n,
            started: Instant::now(),
            restored_epoch: AtomicU64::new(0),
            first_read_us: AtomicU64::new(0),
            checkpoints: Arc::new(CheckpointStatus::default()),
            units: units.clone(),
            durable: Arc::default(),
            degraded: Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            source_error: Mutex::new(None),
            parked: Arc::default(),
            inboxes: Mutex::new(Vec::new()),
            ingress: IngressCell::default(),
            hold: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            stop_at: Mutex::new(None),
            rebuild: Mutex::new(None),
            metrics: Arc::default(),
            watchdog: Arc::default(),
        });

        let writer = match &checkpoints {
            Some(checkpoints) => {
                let writer = Arc::new(Writer::default());
                let fatal = shared.clone();
                let thread = WriterThread {
                    writer: writer.clone(),
                    checkpoints: checkpoints.clone(),
                    pipeline: config.name.clone(),
                    bad: shared.bad.clone(),
                    status: shared.checkpoints.clone(),
                    metrics: shared.metrics.clone(),
                    on_error: Box::new(move |e| fatal.set_fatal(e)),
                    durable: shared.durable.clone(),
                    stop: shared.stop.clone(),
                };
                Some((
                    writer,
                    spawn("checkpoint-writer", &shared, move || thread.run())?,
                ))
            }
            None => None,
        };
        let (coord_tx, coord_rx) = unbounded();
        let coordinator = {
            let published = super::epoch::Publishing {
                catalog: shared.catalog.clone(),
                positions: shared.positions.clone(),
                progress: shared.progress.clone(),
                bad: shared.bad.clone(),
                metrics: shared.metrics.clone(),
            };
            let writer = writer.as_ref().map(|(w, _)| (w.clone(), units.clone()));
            spawn("coordinator", &shared, move || {
                run_coordinator(coord_rx, n, published, writer)
            })?
        };

        let decoders = decoders(config)?;
        let slots = decoders[0].slots();
        let decoding = Arc::new(Decoding {
            decoders,
            normalize: normalizations(config),
            on_tombstone: config.on_tombstone,
            upcasters: config.upcasters.clone(),
            kafka: KafkaFields::new(&config.fields, units.partition_names()),
            declared: config
                .fields
                .declared_slots()
                .into_iter()
                .map(|(slot, ty)| (slot, ty, config.fields.paths()[slot].clone()))
                .collect(),
            envelope: config.envelope.clone(),
        });
        let mut senders = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for id in 0..n {
            let (tx, rx) = bounded(CHANNEL_BATCHES);
            senders.push(tx);
            let worker = Worker {
                id,
                projection: projection.clone(),
                units: units.clone(),
                inbox: rx,
                snapshots: coord_tx.clone(),
                counters: shared.counters.clone(),
                bad: shared.bad.clone(),
                first_epoch: 1,
                decoding: decoding.clone(),
                max_held: config.max_held,
                board: shared.parked.clone(),
            };
            workers.push(spawn(&format!("worker-{id}"), &shared, move || {
                worker.run()
            })?);
        }

        shared
            .inboxes
            .lock()
            .expect("inboxes lock")
            .clone_from(&senders);
        let count = partitions.len();
        let ingress = Arc::new(Mutex::new(Ingress {
            router: Router::new(senders, slots, BATCH),
            coord: coord_tx.clone(),
            epoch: 0,
            offsets: vec![0; count],
            cut_offsets: vec![0; count],
            finished: false,
            force: false,
            checkpoint_every: replayable.then_some(config.checkpoint.interval),
            last_checkpoint: Instant::now(),
            uncheckpointed: false,
            owned: vec![false; count],
            known: vec![false; count],
            units: units.clone(),
            letters: Default::default(),
            letters_epoch: 0,
        }));
        let redrive = match options.replay_dead_letters {
            false => None,
            true => {
                let (redrive, foreign) = Redrive::load(config, &options.state_dir, &units)?;
                if foreign > 0 {
                    eprintln!(
                        "{}: warning: {foreign} dead letter(s) of partitions this pipeline \
                         does not read are left alone",
                        config.name
                    );
                }
                Some(Arc::new(redrive))
            }
        };

        let _ = shared.ingress.0.set(ingress.clone());
        let owner = Owner {
            ingress: ingress.clone(),
            shared: shared.clone(),
            projection: projection.clone(),
            checkpoints: checkpoints.clone(),
            units: units.clone(),
            workers: n,
            redrive,
        };
        let shared_source = source.set_assignment_listener(Box::new(owner.clone()));
        let heartbeat = match (shared_source, checkpoints, &options.cluster) {
            (true, Some(checkpoints), Some(cluster_options)) => {
                let keys = match &config.source {
                    SourceConfig::Kafka(k) if k.partitioner == Partitioner::Murmur2 => {
                        KeyPartitions::from_names(units.names())
                    }
                    _ => None,
                };
                let mut cluster_options = cluster_options.clone();
                cluster_options.token = config.auth.as_ref().and_then(|a| a.cluster_token.clone());
                let cluster = Cluster::new(
                    checkpoints.owner().to_string(),
                    config.name.clone(),
                    cluster_options,
                    Arc::new(units.names().to_vec()),
                    keys,
                )
                .map_err(|why| Error::Io {
                    context: "setting up queries across instances".into(),
                    source: std::io::Error::other(why),
                })?;
                let cluster = Arc::new(cluster);
                shared.catalog.join(cluster.clone());
                let stop = Arc::new(AtomicBool::new(false));
                let thread = {
                    let (cluster, stop) = (cluster.clone(), stop.clone());
                    spawn("cluster-heartbeat", &shared, move || {
                        heartbeat_loop(cluster, checkpoints, stop)
                    })?
                };
                Some((cluster, stop, thread))
            }
            _ => None,
        };
        if !shared_source {
            // Not shared with other instances: every partition is ours from the start.
            shared.catalog.hold_everything();
            let all: Vec<u32> = partitions.iter().map(|p| p.id).collect();
            let resume = owner.assign(&all)?;
            if !resume.is_empty() {
                source = open(&resume).map_err(Error::Source)?;
            }
        }

        let ingest = {
            let owner = owner.clone();
            spawn("ingest", &shared, move || {
                ingest_loop(source, &decoding, &owner)
            })?
        };
        let timer = {
            let (shared, ingress) = (shared.clone(), ingress.clone());
            let interval = config.publish_interval;
            spawn("epoch-timer", &shared.clone(), move || {
                timer_loop(interval, &ingress, &shared)
            })?
        };

        let watchdog = {
            let watched = shared.clone();
            let config = super::watchdog::WatchConfig {
                stall_after: config.watchdog,
                checkpoint_interval: config.checkpoint.interval,
                publish_interval: config.publish_interval,
                checkpoints: writer.is_some(),
            };
            spawn("watchdog", &shared, move || {
                super::watchdog::run(watched, config)
            })?
        };

        Ok(Pipeline {
            watchdog: Some(watchdog),
            shared,
            ingress,
            coord: coord_tx,
            workers,
            coordinator: Some(coordinator),
            timer: Some(timer),
            ingest: Some(ingest),
            writer,
            heartbeat,
            _lock: lock,
        })
    }

    /// What every thread shares: counters, catalog, progress.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops reading records (the epochs go on) and waits, at most `wait`, until the
    /// ingest thread reads none; then returns where each partition's reading stands
    /// (next offset, by partition id). `None`: it did not stop in time.
    pub fn hold_reading(&self, wait: Duration) -> Option<Vec<u64>> {
        self.shared.hold.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + wait;
        while !self.shared.holding.load(Ordering::SeqCst) {
            if Instant::now() > deadline || self.ingest.as_ref().is_none_or(|i| i.is_finished()) {
                // A finished ingest thread reads nothing any more either.
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let stopped = self.shared.holding.load(Ordering::SeqCst)
            || self.ingest.as_ref().is_none_or(|i| i.is_finished());
        stopped.then(|| {
            self.shared
                .positions
                .snapshot()
                .iter()
                .map(|p| p.next_offset)
                .collect()
        })
    }

    /// Reads again after [`Pipeline::hold_reading`].
    pub fn resume_reading(&self) {
        self.shared.hold.store(false, Ordering::SeqCst);
    }

    /// Reads on to `offsets` (next offset, by partition id) and no further, then
    /// finishes as at the end of the input (the last epoch published and
    /// checkpointed); resumes reading after [`Pipeline::hold_reading`].
    pub fn finish_at(&self, offsets: Vec<u64>) {
        *self.shared.stop_at.lock().expect("stop_at lock") = Some(offsets);
        self.shared.hold.store(false, Ordering::SeqCst);
    }

    /// Blocks until the input is exhausted and its last epoch is published (`Ok`), or
    /// the pipeline failed (`Err` with the reason).
    pub fn wait_until_finished(&self) -> Result<()> {
        loop {
            if let Some(e) = self.shared.fatal() {
                return Err(Error::Fatal(e));
            }
            if self
                .shared
                .progress
                .wait(Duration::from_millis(50))
                .finished
            {
                return match self.shared.fatal() {
                    Some(e) => Err(Error::Fatal(e)),
                    None => Ok(()),
                };
            }
        }
    }

    /// Stops every thread: cuts a final epoch (so SQL sees everything read), then stops
    /// the workers and the coordinator.
    pub fn stop(mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.inboxes.lock().expect("inboxes lock").clear();
        if let Some(t) = self.timer.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Some(w) = self.watchdog.take() {
            w.thread().unpark();
            let _ = w.join();
        }
        // The ingest thread leaves first: a Kafka source gives its partitions back to
        // the group on the way out, and their revocation checkpoints them while the
        // workers and the coordinator still run. A thread blocked reading stdin is
        // not waited for; it exits at its next poll.
        if let Some(i) = self.ingest.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while !i.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if i.is_finished() {
                let _ = i.join();
            }
        }
        {
            let mut ing = self.ingress.lock().expect("ingress lock");
            if !ing.finished && self.shared.fatal().is_none() {
                // The final epoch is checkpointed: a clean stop replays nothing.
                let _ = ing.barrier(false, true);
            }
            let _ = ing.router.broadcast(|| WorkerMsg::Stop);
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let _ = self.coord.send(CoordMsg::Stop);
        if let Some(c) = self.coordinator.take() {
            let _ = c.join();
        }
        // Other instances stop asking this one.
        if let Some((cluster, stop, thread)) = self.heartbeat.take() {
            stop.store(true, Ordering::SeqCst);
            cluster.nudge();
            let _ = thread.join();
        }
        // The final checkpoint is written before the process goes (or given up after
        // a while if the store is away: the next start replays from the previous one).
        if let Some((writer, thread)) = self.writer.take() {
            writer.close();
            let _ = thread.join();
        }
        // Letters of epochs that never committed (the pipeline failed): write them
        // rather than lose them; a restart from the last checkpoint cuts them off again.
        self.shared.bad.commit(u64::MAX);
        self.shared.bad.flush().map_err(|e| Error::Io {
            context: format!("flushing dead letters to {}", self.shared.bad.destination()),
            source: e,
        })?;
        Ok(())
    }
}

/// The compiled views of `config`.
pub(crate) fn projection_of(config: &PipelineConfig) -> Projection {
    let unversioned = config
        .topics
        .iter()
        .map(|t| t.envelope.contains(&(EnvelopeRole::Version, None)))
        .collect();
    let projection = Projection::new(
        config.envelope.clone(),
        config.views.clone(),
        &config.fields,
    )
    .with_unversioned_streams(unversioned);
    match config.dedup {
        Some(window) => projection.with_dedup(window),
        None => projection,
    }
}

/// Starts a pipeline thread. A panic in it becomes the pipeline's fatal error (so
/// `--once` and `/health` report it instead of waiting forever).
pub(super) fn spawn<F: FnOnce() + Send + 'static>(
    name: &str,
    shared: &Arc<Shared>,
    f: F,
) -> Result<JoinHandle<()>> {
    let (thread, shared) = (name.to_string(), shared.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                shared.set_fatal(Fatal::Panicked {
                    thread,
                    message: what,
                });
            }
        })
        .map_err(|e| Error::Io {
            context: format!("starting thread {name}"),
            source: e,
        })
}

/// Takes `<state_dir>/LOCK` for this process, or says who holds it: two processes on
/// one state directory would resume from the same checkpoints and write over each
/// other's. The lock goes with the process, however it ends.
fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("LOCK");
    let io = |e| Error::Io {
        context: format!("locking {}", path.display()),
        source: e,
    };
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(CheckpointError::Locked {
                dir: dir.to_path_buf(),
                holder: match holder.trim() {
                    "" => "unknown process".to_string(),
                    h => h.to_string(),
                },
            }
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let me = format!("pid {}", std::process::id());
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(me.as_bytes()).map_err(io)?;
    Ok(file)
}

/// Keeps earlier runs' dead letters aside when the input cannot be replayed (stdin):
/// this run starts a fresh file and the old one is renamed with a timestamp.
fn rotate_old_dead_letters(path: &std::path::Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let mut to = path.with_file_name(format!("dead-letters.{ms}.ndjson"));
            let mut n = 1;
            while to.exists() {
                to = path.with_file_name(format!("dead-letters.{ms}-{n}.ndjson"));
                n += 1;
            }
            std::fs::rename(path, &to).map_err(|e| Error::Io {
                context: format!("keeping old dead letters as {}", to.display()),
                source: e,
            })
        }
        _ => Ok(()),
    }
}
