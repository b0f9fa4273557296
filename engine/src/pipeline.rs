//! A running pipeline: source → decode + route → workers → epochs → catalog.
//!
//! Threads: one ingest thread (poll the source, decode, route by key), one epoch timer
//! (cuts an epoch every `publish_interval`), N workers, one coordinator. The router sits
//! behind a mutex shared by the ingest thread and the timer, so an epoch barrier always
//! falls between two polled batches: every worker's snapshot covers the same offsets.

use crate::bad_records::{BadRecord, BadRecords};
use crate::catalog::Catalog;
use crate::checkpoint::recovery::{self, CheckpointStatus, Checkpointer};
use crate::config::PipelineConfig;
use crate::epoch::{CoordMsg, Progress, run_coordinator};
use crate::router::{KeyHasher, Router, worker_for};
use crate::status::{Counters, Positions};
use crate::worker::{Worker, WorkerMsg};
use crate::{Error, Result};
use crossbeam_channel::{Sender, bounded, unbounded};
use projector_connectors::{AssignmentListener, Poll, RawBatch, Resume, Source, SourceConfig};
use projector_operators::decode::JsonDecoder;
use projector_operators::envelope::key_text;
use projector_operators::fields::{FieldRegistry, KafkaField};
use projector_operators::projection::Projection;
use projector_operators::value::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Records per source poll and events per worker batch.
const BATCH: usize = 1024;
/// The longest the epoch timer holds a cut back while the previous epoch is not yet
/// published.
const MAX_EPOCH_WAIT: Duration = Duration::from_secs(10);
/// The longest an idle ingest thread waits for the source before it looks at the stop
/// flag, the source's own events (rebalances) and the high watermarks again.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Batches a worker channel holds before the source waits (backpressure).
const CHANNEL_BATCHES: usize = 16;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where dead letters (and later checkpoints) live.
    pub state_dir: PathBuf,
    /// Number of worker threads.
    pub workers: usize,
}

impl RunOptions {
    /// The options a pipeline file asks for, with `state_dir` overriding the file's.
    pub fn resolve(config: &PipelineConfig, state_dir: Option<PathBuf>) -> Self {
        let state_dir = state_dir
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from("state").join(&config.name));
        // The ingest thread (read, decode, route) keeps a core busy: on 2 cores one
        // worker beat two (measured: 1.45M vs 1.0-1.1M events/s, bank pipeline).
        let workers = config.workers.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.saturating_sub(1).max(1)
        });
        RunOptions {
            state_dir,
            workers: workers.max(1),
        }
    }
}

/// The epoch-cutting side shared by the ingest thread and the timer.
struct Ingress {
    router: Router,
    coord: Sender<CoordMsg>,
    epoch: u64,
    offsets: Vec<u64>,
    cut_offsets: Vec<u64>,
    finished: bool,
    /// Cut an epoch even if no offset moved (to publish restored state).
    force: bool,
    /// `None`: checkpoints are off (stdin cannot be replayed).
    checkpoint_every: Option<Duration>,
    last_checkpoint: Instant,
    /// An epoch was cut since the last checkpoint.
    uncheckpointed: bool,
    /// Per partition: this instance owns it (always, for sources that are not shared;
    /// while assigned, for a consumer group).
    owned: Vec<bool>,
    /// Per partition: its next offset is known (restored, or a record was read), so a
    /// checkpoint may record it. A partition starting at `latest` has no known offset
    /// until its first record; recording 0 would replay the whole topic.
    known: Vec<bool>,
}

impl Ingress {
    /// Cuts an epoch at the current offsets. It is checkpointed when `checkpoint` is
    /// set, at the end of the input, or when the checkpoint interval has passed.
    fn barrier(&mut self, last: bool, checkpoint: bool) -> Result<()> {
        self.epoch += 1;
        let epoch = self.epoch;
        let checkpoint = self
            .checkpoint_every
            .is_some_and(|every| checkpoint || last || self.last_checkpoint.elapsed() >= every);
        if checkpoint {
            self.last_checkpoint = Instant::now();
        }
        self.uncheckpointed = !checkpoint;
        let owned = (0..self.offsets.len())
            .filter(|&p| self.owned[p] && self.known[p])
            .map(|p| (p as u32, self.offsets[p]))
            .collect();
        self.coord
            .send(CoordMsg::Epoch {
                epoch,
                offsets: self.offsets.clone(),
                owned,
                last,
                checkpoint,
            })
            .map_err(|_| Error::Stopped)?;
        self.router
            .broadcast(|| WorkerMsg::Barrier { epoch, checkpoint })
            .map_err(|_| Error::Stopped)?;
        self.cut_offsets.clone_from(&self.offsets);
        self.finished |= last;
        self.force = false;
        Ok(())
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
    /// The newest checkpoint.
    pub checkpoints: Arc<CheckpointStatus>,
    /// Offsets of the newest checkpoint, not yet handed to the source.
    durable: Arc<Mutex<Option<Resume>>>,
    /// Why the source cannot make progress now (it keeps retrying).
    degraded: Mutex<Option<String>>,
    stop: AtomicBool,
    source_error: Mutex<Option<String>>,
}

impl Shared {
    /// Why the pipeline stopped on its own, if it did (bad record under `fail`, a
    /// dead letter that could not be written, or a source error).
    pub fn fatal(&self) -> Option<String> {
        self.bad
            .fatal()
            .or_else(|| self.source_error.lock().expect("lock").clone())
    }

    /// Why the source cannot make progress right now (e.g. no broker reachable), if so.
    pub fn degraded(&self) -> Option<String> {
        self.degraded.lock().expect("lock").clone()
    }

    /// Records why the pipeline must stop; the first reason wins.
    fn set_fatal(&self, e: String) {
        let mut g = self.source_error.lock().expect("lock");
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// A worker or the coordinator went away while the ingest side still had work for
    /// it: that only happens when a thread panicked.
    fn lost_thread(&self) {
        if !self.bad.failed() {
            self.set_fatal("internal error: a pipeline thread stopped unexpectedly".into());
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
        let dlq_path = options.state_dir.join("dead-letters.ndjson");
        let n = options.workers;
        let projection = Arc::new(Projection::new(
            config.envelope.clone(),
            config.views.clone(),
            &config.fields,
        ));

        let mut source = open(&Resume::new()).map_err(|e| Error::Source(e.to_string()))?;
        let partitions = source.partitions();
        let partition_names: Arc<Vec<String>> =
            Arc::new(partitions.iter().map(|p| p.name.clone()).collect());

        // Stdin cannot be read again, so there is nothing to resume: no checkpoints.
        let replayable = !matches!(&config.source, SourceConfig::File(f) if f.is_stdin());
        let root = replayable.then(|| options.state_dir.join("checkpoints"));
        if let Some(root) = &root {
            recovery::check_layout(root)?;
        }
        // Stdin is new input every run, so its offsets say nothing about earlier
        // runs' letters: keep those aside. A replayable source's letters stay, and a
        // replay skips the ones already written (also before any checkpoint, and with
        // other instances appending to the same file).
        if root.is_none() && config.dead_letter.is_none() {
            rotate_old_dead_letters(&dlq_path)?;
        }

        let catalog = Arc::new(Catalog::new(config.views.clone(), partitions.len(), n));
        let positions = Arc::new(Positions::default());
        positions.init(partitions.iter().map(|p| p.name.clone()).collect());
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            counters: Arc::new(Counters::default()),
            positions,
            progress: Arc::new(Progress::default()),
            bad: Arc::new(BadRecords::new(
                config.on_error,
                dlq_path,
                config.dead_letter.clone(),
            )),
            catalog,
            workers: n,
            started: Instant::now(),
            restored_epoch: AtomicU64::new(0),
            first_read_us: AtomicU64::new(0),
            checkpoints: Arc::new(CheckpointStatus::default()),
            durable: Arc::default(),
            degraded: Mutex::new(None),
            stop: AtomicBool::new(false),
            source_error: Mutex::new(None),
        });

        let (coord_tx, coord_rx) = unbounded();
        let coordinator = {
            let (catalog, positions, progress, bad) = (
                shared.catalog.clone(),
                shared.positions.clone(),
                shared.progress.clone(),
                shared.bad.clone(),
            );
            let fatal = shared.clone();
            let checkpointer = root.clone().map(|root| Checkpointer {
                root,
                keep: config.checkpoint.keep,
                pipeline: config.name.clone(),
                partitions: partition_names.clone(),
                bad: shared.bad.clone(),
                status: shared.checkpoints.clone(),
                on_error: Box::new(move |e| fatal.set_fatal(e)),
                durable: shared.durable.clone(),
            });
            spawn("coordinator", &shared, move || {
                run_coordinator(coord_rx, n, catalog, positions, progress, bad, checkpointer)
            })?
        };

        let mut senders = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for id in 0..n {
            let (tx, rx) = bounded(CHANNEL_BATCHES);
            senders.push(tx);
            let worker = Worker {
                id,
                projection: projection.clone(),
                partition_names: partition_names.clone(),
                inbox: rx,
                snapshots: coord_tx.clone(),
                counters: shared.counters.clone(),
                bad: shared.bad.clone(),
                first_epoch: 1,
            };
            workers.push(spawn(&format!("worker-{id}"), &shared, move || {
                worker.run()
            })?);
        }

        let decoder = JsonDecoder::new(&config.fields);
        let count = partitions.len();
        let ingress = Arc::new(Mutex::new(Ingress {
            router: Router::new(senders, decoder.slots(), BATCH),
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
        }));

        let owner = Owner {
            ingress: ingress.clone(),
            shared: shared.clone(),
            projection: projection.clone(),
            root,
            names: partition_names.clone(),
            workers: n,
        };
        if !source.set_assignment_listener(Box::new(owner.clone())) {
            // Not shared with other instances: every partition is ours from the start.
            let all: Vec<u32> = partitions.iter().map(|p| p.id).collect();
            let resume = owner.assign(&all)?;
            if !resume.is_empty() {
                source = open(&resume).map_err(|e| Error::Source(e.to_string()))?;
            }
        }

        let ingest = {
            let (shared, ingress, projection) =
                (shared.clone(), ingress.clone(), projection.clone());
            let names = partition_names.clone();
            let kafka = KafkaFields::new(&config.fields, &names);
            spawn("ingest", &shared.clone(), move || {
                ingest_loop(
                    source,
                    decoder,
                    kafka,
                    &projection,
                    &ingress,
                    &shared,
                    &names,
                )
            })?
        };
        let timer = {
            let (shared, ingress) = (shared.clone(), ingress.clone());
            let interval = config.publish_interval;
            spawn("epoch-timer", &shared.clone(), move || {
                timer_loop(interval, &ingress, &shared)
            })?
        };

        Ok(Pipeline {
            shared,
            ingress,
            coord: coord_tx,
            workers,
            coordinator: Some(coordinator),
            timer: Some(timer),
            ingest: Some(ingest),
        })
    }

    /// What every thread shares: counters, catalog, progress.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
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
        if let Some(t) = self.timer.take() {
            t.thread().unpark();
            let _ = t.join();
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

/// The engine's side of partition ownership: restores partitions that become this
/// instance's and checkpoints and drops the ones it gives up. Called at start for
/// sources that always read every partition, and by a consumer-group source on every
/// rebalance (on the ingest thread, inside its poll).
#[derive(Clone)]
struct Owner {
    ingress: Arc<Mutex<Ingress>>,
    shared: Arc<Shared>,
    projection: Arc<Projection>,
    /// The `checkpoints` directory (`None`: checkpoints are off).
    root: Option<PathBuf>,
    names: Arc<Vec<String>>,
    workers: usize,
}

impl Owner {
    /// Restores `ids` from their newest valid checkpoints and makes them this
    /// instance's; returns where each restored one resumes.
    fn assign(&self, ids: &[u32]) -> Result<Resume> {
        let hasher = KeyHasher::default();
        let route = |k: &str| worker_for(hasher.hash(k), self.workers);
        let mut restored = Vec::with_capacity(ids.len());
        let mut floor = 0;
        let mut resume = Resume::new();
        for &id in ids {
            let name = &self.names[id as usize];
            let r = match &self.root {
                Some(root) => {
                    recovery::restore_partition(root, name, &self.projection, self.workers, route)?
                }
                None => recovery::RestoredPartition {
                    workers: (0..self.workers)
                        .map(|_| self.projection.new_partition_state())
                        .collect(),
                    ..Default::default()
                },
            };
            for s in &r.skipped {
                eprintln!("{}: warning: {s}", self.shared.name);
            }
            if let Some(next) = r.resume {
                eprintln!(
                    "{}: {name}: resuming from checkpoint {} at offset {next}",
                    self.shared.name, r.epoch
                );
                resume.insert(id, next);
                self.shared
                    .checkpoints
                    .set_partitions(&[id], r.epoch, r.written_ms);
                self.shared
                    .restored_epoch
                    .fetch_max(r.epoch, Ordering::Relaxed);
            }
            floor = floor.max(r.epoch_floor);
            restored.push((id, r));
        }
        // Letters of records after each checkpoint may be written already.
        if self.root.is_some() {
            let from: Vec<(&str, u64)> = restored
                .iter()
                .map(|(id, r)| (self.names[*id as usize].as_str(), r.resume.unwrap_or(0)))
                .collect();
            self.shared
                .bad
                .already_written(&from)
                .map_err(|e| Error::Io {
                    context: format!(
                        "reading dead letters from {}",
                        self.shared.bad.destination()
                    ),
                    source: e,
                })?;
        }
        let mut ing = self.ingress.lock().expect("ingress lock");
        for (id, r) in restored {
            let p = id as usize;
            for (w, state) in r.workers.into_iter().enumerate() {
                ing.router
                    .send_to(
                        w,
                        WorkerMsg::Restore {
                            partition: id,
                            state,
                        },
                    )
                    .map_err(|_| Error::Stopped)?;
            }
            ing.owned[p] = true;
            ing.known[p] = r.resume.is_some();
            ing.offsets[p] = r.resume.unwrap_or(0);
            ing.cut_offsets[p] = ing.offsets[p];
        }
        // This instance's next checkpoint of these partitions must be numbered above
        // every one on disk, whoever wrote them.
        ing.epoch = ing.epoch.max(floor);
        ing.force = true;
        self.shared.positions.set_owned(ids, true, &ing.offsets);
        Ok(resume)
    }

    /// Gives `ids` up: unless `lost`, checkpoints them first and waits until that
    /// checkpoint is durable; then drops their state. Returns the offsets checkpointed.
    fn revoke(&self, ids: &[u32], lost: bool) -> Result<Resume> {
        let mut checkpointed = Resume::new();
        let wait_for = {
            let mut ing = self.ingress.lock().expect("ingress lock");
            let checkpoint = !lost
                && !ing.finished
                && ing.checkpoint_every.is_some()
                && self.shared.fatal().is_none()
                && ids.iter().any(|&p| ing.owned[p as usize]);
            if checkpoint {
                ing.barrier(false, true)?;
                for &p in ids {
                    if ing.owned[p as usize] && ing.known[p as usize] {
                        checkpointed.insert(p, ing.offsets[p as usize]);
                    }
                }
            }
            for &p in ids {
                ing.owned[p as usize] = false;
                ing.known[p as usize] = false;
            }
            ing.router
                .broadcast(|| WorkerMsg::Release(ids.to_vec()))
                .map_err(|_| Error::Stopped)?;
            // Publish the views without them.
            ing.force = true;
            self.shared.positions.set_owned(ids, false, &ing.offsets);
            checkpoint.then_some(ing.epoch)
        };
        for &p in ids {
            let name = &self.names[p as usize];
            self.shared.bad.forget(name);
            if lost {
                // Whoever owns it now replays those records and writes their letters.
                self.shared.bad.drop_staged(name);
            }
        }
        if let Some(epoch) = wait_for {
            let started = Instant::now();
            while self.shared.progress.get().epoch < epoch {
                if let Some(e) = self.shared.fatal() {
                    return Err(Error::Fatal(e));
                }
                // A stop that gave up waiting for this thread stops the workers too.
                if self.shared.stop.load(Ordering::Relaxed)
                    && started.elapsed() > Duration::from_secs(10)
                {
                    return Err(Error::Stopped);
                }
                self.shared.progress.wait(Duration::from_millis(20));
            }
            // The coordinator publishes an epoch whose checkpoint failed, and says why.
            if let Some(e) = self.shared.fatal() {
                return Err(Error::Fatal(e));
            }
        }
        Ok(checkpointed)
    }
}

impl AssignmentListener for Owner {
    fn assigned(&mut self, partitions: &[u32]) -> std::result::Result<Resume, String> {
        Owner::assign(self, partitions).map_err(|e| e.to_string())
    }

    fn revoked(&mut self, partitions: &[u32], lost: bool) -> std::result::Result<Resume, String> {
        Owner::revoke(self, partitions, lost).map_err(|e| e.to_string())
    }
}

/// Starts a pipeline thread. A panic in it becomes the pipeline's fatal error (so
/// `--once` and `/health` report it instead of waiting forever).
fn spawn<F: FnOnce() + Send + 'static>(
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
                shared.set_fatal(format!("internal error: thread {thread} panicked: {what}"));
            }
        })
        .map_err(|e| Error::Io {
            context: format!("starting thread {name}"),
            source: e,
        })
}

/// Keeps earlier runs' dead letters: each run starts a fresh file and the old one is
/// renamed with a timestamp (until checkpoints, every run replays its input).
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

fn decode_code(message: &str) -> &'static str {
    if message.starts_with("expected a JSON object") {
        "decode.not_an_object"
    } else if message.starts_with("empty record") {
        "decode.empty"
    } else {
        "decode.invalid_json"
    }
}

fn ingest_loop(
    mut source: Box<dyn Source>,
    decoder: JsonDecoder,
    kafka: KafkaFields,
    projection: &Projection,
    ingress: &Mutex<Ingress>,
    shared: &Shared,
    names: &[String],
) {
    let mut raw = RawBatch::default();
    let mut slots = vec![Value::Null; decoder.slots()];
    let mut last_marks = Instant::now();
    let mut paused = false;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if shared.bad.failed() {
            // Hand the workers what is pending: records before the bad one may hold an
            // earlier bad record, which `on_error: fail` must name instead.
            let _ = ingress.lock().expect("ingress lock").router.flush();
            return;
        }
        report_checkpointed(shared, source.as_mut());
        if last_marks.elapsed() >= Duration::from_millis(500) {
            last_marks = Instant::now();
            shared
                .positions
                .set_high_watermarks(&source.high_watermarks());
        }
        // Backpressure: while a worker is behind, a full channel blocks the ingest
        // thread, so the source is not polled and its fetching stops at its own bound
        // (Kafka: librdkafka's prefetch limit). Counted here for /status.
        let congested = ingress.lock().expect("ingress lock").router.congested();
        if congested != paused {
            paused = congested;
            shared
                .counters
                .paused
                .store(u64::from(paused), Ordering::Relaxed);
            if paused {
                Counters::add(&shared.counters.pauses, 1);
            }
        }
        raw.clear();
        let poll = source.poll(&mut raw, BATCH);
        *shared.degraded.lock().expect("lock") = source.degraded();
        let poll = match poll {
            Ok(p) => p,
            Err(e) => {
                shared.set_fatal(format!("source error: {e}"));
                return;
            }
        };
        if !raw.is_empty() {
            if shared.first_read_us.load(Ordering::Relaxed) == 0 {
                let us = shared.started.elapsed().as_micros().max(1) as u64;
                shared.first_read_us.store(us, Ordering::Relaxed);
            }
            let mut ing = ingress.lock().expect("ingress lock");
            Counters::add(&shared.counters.read, raw.len() as u64);
            // The epoch these records belong to: its barrier is not cut yet.
            let epoch = ing.epoch + 1;
            for (i, rec) in raw.records.iter().enumerate() {
                let bytes = raw.bytes(rec);
                let key = raw.key(i);
                ing.offsets[rec.partition as usize] = rec.offset + 1;
                ing.known[rec.partition as usize] = true;
                let partition = names[rec.partition as usize].as_str();
                let report = |code: &str, message: &str| {
                    let r = BadRecord {
                        raw: bytes,
                        code,
                        message,
                        partition,
                        offset: rec.offset,
                        key,
                    };
                    shared.bad.report(&shared.counters, r, epoch);
                };
                if let Err(e) = decoder.decode(bytes, &mut slots) {
                    report(decode_code(&e.message), &e.message);
                    continue;
                }
                if !kafka.fields.is_empty() {
                    kafka.fill(&mut slots, &raw, i);
                }
                let w = match projection.key(&slots) {
                    Ok(k) => ing
                        .router
                        .worker_of(&key_text(k).expect("key() checked it")),
                    Err(e) => {
                        let code = match e {
                            projector_operators::envelope::EnvelopeError::MissingKey(_) => {
                                "apply.missing_key"
                            }
                            _ => "apply.bad_key",
                        };
                        report(code, &e.to_string());
                        continue;
                    }
                };
                if ing
                    .router
                    .push(w, rec.partition, rec.offset, bytes, key, &mut slots)
                    .is_err()
                {
                    shared.lost_thread();
                    return;
                }
            }
            if raw.len() < BATCH && ing.router.flush().is_err() {
                shared.lost_thread();
                return;
            }
            let offsets = ing.offsets.clone();
            drop(ing);
            shared.positions.set_read(&offsets);
        }
        match poll {
            Poll::Ready => {}
            Poll::Idle => source.wait(IDLE_WAIT),
            Poll::Exhausted => {
                {
                    let mut ing = ingress.lock().expect("ingress lock");
                    if ing.barrier(true, true).is_err() {
                        shared.lost_thread();
                        return;
                    }
                }
                // Hand the final checkpoint's offsets to the source before leaving.
                while !shared.progress.get().finished
                    && shared.fatal().is_none()
                    && !shared.stop.load(Ordering::Relaxed)
                {
                    shared.progress.wait(Duration::from_millis(20));
                }
                report_checkpointed(shared, source.as_mut());
                return;
            }
        }
    }
}

/// Fills the slots of `$kafka.*` fields from a record's metadata.
struct KafkaFields {
    fields: Vec<(usize, KafkaField)>,
    /// Per source partition: its topic and partition number (Kafka names them
    /// `topic/number`).
    partitions: Vec<(Value, Value)>,
}

impl KafkaFields {
    fn new(fields: &FieldRegistry, names: &[String]) -> Self {
        let partitions = names
            .iter()
            .map(|n| match n.rsplit_once('/') {
                Some((t, p)) => (
                    Value::Str(t.into()),
                    p.parse::<i64>().map_or(Value::Null, Value::Int),
                ),
                None => (Value::Null, Value::Null),
            })
            .collect();
        KafkaFields {
            fields: fields.kafka_fields(),
            partitions,
        }
    }

    fn fill(&self, slots: &mut [Value], raw: &RawBatch, i: usize) {
        let text = |b: Option<&[u8]>| {
            b.and_then(|b| std::str::from_utf8(b).ok())
                .map_or(Value::Null, |s| Value::Str(s.into()))
        };
        let rec = &raw.records[i];
        for (slot, field) in &self.fields {
            slots[*slot] = match field {
                KafkaField::Key => text(raw.key(i)),
                KafkaField::Timestamp => raw.timestamp(i).map_or(Value::Null, Value::Int),
                KafkaField::Topic => self.partitions[rec.partition as usize].0.clone(),
                KafkaField::Partition => self.partitions[rec.partition as usize].1.clone(),
                KafkaField::Offset => i64::try_from(rec.offset).map_or(Value::Null, Value::Int),
                KafkaField::Header(name) => text(raw.header(i, name)),
            };
        }
    }
}

/// Hands the offsets of the newest durable checkpoint, if there is a new one, to the
/// source (Kafka commits them to the consumer group for lag monitoring).
fn report_checkpointed(shared: &Shared, source: &mut dyn Source) {
    let durable = shared.durable.lock().expect("durable offsets lock").take();
    if let Some(offsets) = durable {
        source.checkpointed(&offsets);
    }
}

fn timer_loop(interval: Duration, ingress: &Mutex<Ingress>, shared: &Shared) {
    let mut last_cut = Instant::now();
    loop {
        std::thread::park_timeout(interval);
        if shared.stop.load(Ordering::Relaxed) || shared.fatal().is_some() {
            return;
        }
        {
            let mut ing = ingress.lock().expect("ingress lock");
            if ing.finished {
                return;
            }
            // One epoch in flight: while the last one is still being built (a large
            // view rebuilding its chunks), the next cut waits, so epochs come as often
            // as `interval` allows and no more often than they can be published.
            // Bounded, so that an epoch that is never published cannot stop the cuts.
            let in_flight = shared.progress.get().epoch < ing.epoch;
            if in_flight && !ing.force && last_cut.elapsed() < MAX_EPOCH_WAIT {
                continue;
            }
            // Also when the input went quiet after an epoch that was not checkpointed:
            // otherwise a crash would replay it although nothing happened for long.
            let checkpoint_due = ing.uncheckpointed
                && ing
                    .checkpoint_every
                    .is_some_and(|every| ing.last_checkpoint.elapsed() >= every);
            if ing.offsets != ing.cut_offsets || ing.force || checkpoint_due {
                if ing.barrier(false, false).is_err() {
                    shared.lost_thread();
                    return;
                }
                last_cut = Instant::now();
            }
        }
        let _ = shared.bad.flush();
    }
}
