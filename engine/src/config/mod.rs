//! The pipeline file: YAML → a validated [`PipelineConfig`].
//!
//! Every error is collected (not just the first), each with file, line, column and key
//! path, so a user fixes a file in one pass.

mod auth;
mod compile;
mod dedup;
mod env;
mod format;
mod kafka;
mod logic;
mod query;
mod topics;
mod upcast;
mod views;
mod yaml;

pub use auth::{AuthConfig, TokenGrant, ViewGrant, hash_token, hex};
pub use logic::{Logic, LogicChange};
use projector_connectors::SourceConfig;
use projector_operators::decode::{AvroSchema, Framing, MessageDescriptor, Preset};
use projector_operators::envelope::Envelope;
use projector_operators::fields::FieldRegistry;
use projector_operators::view::ViewSpec;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaml::{Ctx, Issue};

/// What to do with a record that cannot be decoded or applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Append it to `<state_dir>/dead-letters.ndjson` (default).
    #[default]
    DeadLetter,
    /// Count it and go on.
    Skip,
    /// Stop the pipeline with a non-zero exit naming the position.
    Fail,
    /// Park the event's key: hold its later events until it is retried or skipped
    /// (see [`projector_operators::park`]); records without a readable key are
    /// dead-lettered.
    Park,
}

/// Default `park.max_held`: events one parked key holds.
pub const DEFAULT_MAX_HELD: usize = 10_000;

/// The paths of an event's ids, as the envelope maps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdPaths {
    /// `envelope.id`.
    pub id: String,
    /// `envelope.correlation_id`.
    pub correlation_id: Option<String>,
    /// `envelope.causation_id`.
    pub causation_id: Option<String>,
}

/// What a tombstone (a Kafka record with a null value, or a Debezium delete) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTombstone {
    /// Count it and go on (default).
    #[default]
    Ignore,
    /// Delete the key's row in every fold view (aggregate and table views keep what
    /// they have).
    Delete,
}

/// The record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Json,
    /// Avro (the Confluent wire format, or plain bodies).
    Avro,
    /// Protobuf (the Confluent wire format, or plain bodies).
    Protobuf,
    /// The value as UTF-8 text, in the field `value`.
    Raw,
}

impl Format {
    /// The name in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Avro => "avro",
            Format::Protobuf => "protobuf",
            Format::Raw => "raw",
        }
    }
}

/// `format:` with its options.
#[derive(Debug, Clone, Default)]
pub struct FormatConfig {
    /// The format.
    pub format: Format,
    /// The reader's schema (`format.schema`), compiled.
    pub schema: Option<ReaderSchema>,
    /// How binary bodies are framed (`format.framing`).
    pub framing: Framing,
}

/// A reader's schema from a file in the pipeline.
#[derive(Debug, Clone)]
pub enum ReaderSchema {
    /// An Avro schema (`.avsc`).
    Avro(std::sync::Arc<AvroSchema>),
    /// A Protobuf message, from a `.proto` file or a descriptor set.
    Protobuf(MessageDescriptor),
}

/// `registry:`: a Confluent-compatible schema registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Its base URL.
    pub url: String,
    /// How to authenticate, if it asks.
    pub auth: Option<RegistryAuth>,
    /// `retry:` how long requests are retried while the registry cannot be reached
    /// (default 30s), before the run stops.
    pub retry: Duration,
}

/// How to authenticate to a schema registry.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// HTTP basic authentication (Confluent Cloud: an API key and secret).
    Basic {
        /// The user name (API key).
        username: String,
        /// The password (API secret).
        password: String,
    },
    /// A bearer token.
    Bearer(String),
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            RegistryAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// A part of the envelope, which a topic may map from its own field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeRole {
    /// `key`.
    Key,
    /// `type`.
    Type,
    /// `version`.
    Version,
    /// `timestamp`.
    Timestamp,
    /// `id`.
    Id,
    /// `correlation_id`.
    CorrelationId,
    /// `causation_id`.
    CausationId,
}

impl EnvelopeRole {
    /// Every role, with its key in `envelope:`.
    pub const ALL: [(EnvelopeRole, &'static str); 7] = [
        (EnvelopeRole::Key, "key"),
        (EnvelopeRole::Type, "type"),
        (EnvelopeRole::Version, "version"),
        (EnvelopeRole::Timestamp, "timestamp"),
        (EnvelopeRole::Id, "id"),
        (EnvelopeRole::CorrelationId, "correlation_id"),
        (EnvelopeRole::CausationId, "causation_id"),
    ];

    /// The slot the envelope reads this role from, if it maps it.
    pub fn slot(self, envelope: &Envelope) -> Option<projector_operators::fields::FieldId> {
        match self {
            EnvelopeRole::Key => Some(envelope.key),
            EnvelopeRole::Type => Some(envelope.event_type),
            EnvelopeRole::Version => envelope.version,
            EnvelopeRole::Timestamp => envelope.timestamp,
            EnvelopeRole::Id => envelope.id,
            EnvelopeRole::CorrelationId => envelope.correlation_id,
            EnvelopeRole::CausationId => envelope.causation_id,
        }
    }
}

/// A topic's own settings, for a Kafka source of several topics whose records differ
/// (`topics: [orders, {name: payments, format: ..., envelope: {...}}]`).
#[derive(Debug, Clone, Default)]
pub struct TopicSettings {
    /// The topic.
    pub topic: String,
    /// Its `format:`, when it has its own.
    pub format: Option<FormatConfig>,
    /// The envelope roles it reads from other fields than the pipeline's envelope
    /// says: the slot each is decoded into, or `None` when its records have none (a
    /// topic without versions is not version-guarded).
    pub envelope: Vec<(EnvelopeRole, Option<projector_operators::fields::FieldId>)>,
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The file it was read from (or a name for in-memory text).
    pub file: PathBuf,
    /// `name:` of the pipeline.
    pub name: String,
    /// `source:`.
    pub source: SourceConfig,
    /// `format:` (default json).
    pub format: Format,
    /// `format:`'s schema file and framing.
    pub format_options: FormatConfig,
    /// `registry:`, where writer schemas come from.
    pub registry: Option<RegistryConfig>,
    /// `on_error:` (default dead_letter).
    pub on_error: OnError,
    /// `park.max_held`: the events a parked key holds at most; one more stops the run.
    pub max_held: usize,
    /// `on_tombstone:` (default ignore).
    pub on_tombstone: OnTombstone,
    /// `envelope:`.
    pub envelope: Envelope,
    /// `envelope.preset:`, the shape records come in, if one is named.
    pub preset: Option<Preset>,
    /// Per topic of a Kafka source (in `topics:` order), its own format and envelope;
    /// empty when no topic has settings of its own.
    pub topics: Vec<TopicSettings>,
    /// The paths of the event's ids (`envelope.id`, `correlation_id`, `causation_id`),
    /// for dead letters: an id no view reads is not decoded for every event, only read
    /// from a bad record's bytes.
    pub id_paths: IdPaths,
    /// `views:`, in file order.
    pub views: Vec<ViewSpec>,
    /// Every field path the envelope and expressions read.
    pub fields: FieldRegistry,
    /// `workers:` (default: number of cores minus one, at least one).
    pub workers: Option<usize>,
    /// `publish_interval:` (default 50ms).
    pub publish_interval: Duration,
    /// `state_dir:` (the CLI's `--state-dir` wins; default `state/<name>`).
    pub state_dir: Option<PathBuf>,
    /// `checkpoint:`.
    pub checkpoint: CheckpointConfig,
    /// `dead_letter: {topic: ...}`: dead letters go to this Kafka topic instead of
    /// `<state_dir>/dead-letters.ndjson`.
    pub dead_letter: Option<DeadLetterTopic>,
    /// `auth:`: who may query which views; `None`: anyone who reaches the port.
    pub auth: Option<AuthConfig>,
    /// What shapes each view's state, which checkpoints record and restores compare.
    pub logic: Logic,
    /// The pipeline file's text as written (before `${VAR}` substitution, so no secret
    /// is in it): checkpoints keep it, so a rebuild can run the old views beside the new.
    pub text: String,
    /// `dedup:`: which event ids each key remembers, to drop repeats (`None`: off).
    pub dedup: Option<projector_operators::dedup::Window>,
    /// `upcast:`: old versions of events brought to the newest shape (empty: none).
    pub upcasters: projector_operators::upcast::Upcasters,
    /// `query:`: the limits SQL runs under (timeout, rows, result bytes, memory,
    /// concurrency, queue).
    pub query: crate::serve::query::QueryLimits,
    /// `watchdog.stall_after` (default 60s): how long a partition with lag may not
    /// move, an epoch not publish, or a checkpoint not complete (past its interval)
    /// before `/health` says `degraded`.
    pub watchdog: std::time::Duration,
}

/// A Kafka topic for dead letters: value = the record's bytes, key = its key, headers
/// = the error and where the record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTopic {
    /// `brokers:` (default: the Kafka source's).
    pub brokers: String,
    /// The Kafka source's client properties (security settings and the like), if the
    /// brokers are the source's.
    pub properties: std::collections::BTreeMap<String, String>,
    /// `topic:`.
    pub topic: String,
}

/// `checkpoint:`: how often state and source offsets are saved together, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// `store:` (default: the `checkpoints` directory in the state directory).
    pub store: Option<StoreConfig>,
    /// `interval:` (default 1s): a checkpoint is taken at the first epoch this long
    /// after the previous one, and always at the end of the input and at shutdown.
    pub interval: Duration,
    /// `keep:` (default 3, 1 to 100): how many checkpoints stay on disk.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            store: None,
            interval: Duration::from_secs(1),
            keep: 3,
        }
    }
}

/// `checkpoint.store`: a URL and how to reach it.
///
/// `file:///path` is a directory (local, or mounted by every instance); `s3://bucket/prefix`,
/// `gs://bucket/prefix` and `az://container/prefix` are object stores, whose credentials
/// and region come from the environment as the cloud's own tools read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The URL as written.
    pub url: String,
    /// `endpoint:`: an S3-compatible store's URL (MinIO, Ceph, R2, a test server).
    pub endpoint: Option<String>,
    /// `region:` (otherwise `AWS_REGION` / `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// `path_style:`: `https://host/bucket/key` rather than `https://bucket.host/key`;
    /// defaults to true when an endpoint is given.
    pub path_style: Option<bool>,
}

impl StoreConfig {
    /// Whether the store is a local or mounted directory (`file://`).
    pub fn is_file(&self) -> bool {
        self.url.starts_with("file://")
    }
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Stable code, e.g. `config.unknown_field`.
    pub code: &'static str,
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Key path, e.g. `views[0].fold.on.MoneyDeposited.ad`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}:{}:{} {}: {}",
            self.code, self.file, self.line, self.column, self.path, self.message
        )
    }
}

/// All problems found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads and validates a pipeline file.
///
/// A file that cannot be read is one `config.io` error at line 1, column 1.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            code: "config.io",
            file: path.display().to_string(),
            line: 1,
            column: 1,
            path: ROOT_PATH.to_string(),
            message: format!("cannot read the pipeline file: {e}"),
        }])),
    }
}

/// Validates pipeline text; `file` names it in errors. `${VAR}` substitution reads the
/// process environment.
///
/// A relative `source.path` is resolved against the directory of `file`.
pub fn load_str(text: &str, file: &Path) -> Result<PipelineConfig, ConfigErrors> {
    load_with_env(text, file, &|name| std::env::var(name).ok())
}

/// The key path shown for problems that concern the whole file.
const ROOT_PATH: &str = "<root>";

/// [`load_str`] reading `${VAR}`s with `lookup` instead of the process environment.
pub(crate) fn load_with_env(
    text: &str,
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, ConfigErrors> {
    let mut sub = env::substitute(text);
    // Variables are read while parsing, per scalar: substitution problems are known after.
    let mut parse_issues = Vec::new();
    let parsed = yaml::parse(&mut sub, lookup, &mut parse_issues);
    let mut issues: Vec<Issue> = sub
        .issues
        .iter()
        .map(|i| Issue {
            code: i.code,
            start: i.at,
            end: i.at,
            path: String::new(),
            message: i.message.clone(),
        })
        .collect();
    let env_issues = issues.len();
    let parse_failed = !parse_issues.is_empty();
    issues.extend(parse_issues);
    let mut ctx = Ctx::new(&sub, &parsed, issues);
    let config = match &parsed.root {
        Some(root) => {
            ctx.report_all_duplicates(root, "");
            compile::pipeline(&mut ctx, root, file)
        }
        None => {
            if !parse_failed {
                ctx.issues.push(Issue {
                    code: "config.invalid_type",
                    start: 0,
                    end: 0,
                    path: String::new(),
                    message: "the file is empty: expected a mapping with name, source, envelope and views".into(),
                });
            }
            None
        }
    };
    let errors = finish(&mut ctx, parsed.root.as_ref(), env_issues, file);
    match config {
        Some(mut config) if errors.is_empty() => {
            config.text = text.to_string();
            Ok(config)
        }
        _ if !errors.is_empty() => Err(ConfigErrors(errors)),
        _ => Err(ConfigErrors(vec![ConfigError {
            code: "config.invalid_value",
            file: file.display().to_string(),
            line: 1,
            column: 1,
            path: ROOT_PATH.to_string(),
            message: "the pipeline is invalid".into(),
        }])),
    }
}

/// Turns recorded issues into errors: key paths for substitution problems, no follow-up
/// errors of a failed substitution, no environment values in messages, file positions,
/// sorted by position.
fn finish(
    ctx: &mut Ctx<'_>,
    root: Option<&yaml::Node>,
    env_issues: usize,
    file: &Path,
) -> Vec<ConfigError> {
    let failed: Vec<usize> = ctx.issues[..env_issues].iter().map(|i| i.start).collect();
    let issues = std::mem::take(&mut ctx.issues);
    let sub = ctx.substituted();
    let mut out: Vec<((usize, usize), ConfigError)> = Vec::with_capacity(issues.len());
    for (n, mut issue) in issues.into_iter().enumerate() {
        if n < env_issues {
            if let Some(root) = root {
                issue.path = ctx.path_at(root, issue.start, "");
            }
        } else if !matches!(
            issue.code,
            "config.yaml_syntax" | "config.duplicate_key" | "config.unknown_field"
        ) {
            let end = ctx.extended_end(issue.end);
            if failed.iter().any(|&f| issue.start <= f && f <= end) {
                continue; // a consequence of the failed substitution, already reported
            }
        }
        for u in sub.uses.iter().filter(|u| u.from_env) {
            let overlaps = issue.start <= u.end && u.start <= issue.end;
            if overlaps || u.value.chars().count() >= 4 {
                issue.message = issue.message.replace(&u.value, &u.reference);
                issue.path = issue.path.replace(&u.value, &u.reference);
            }
        }
        let (line, column) = sub.line_col(issue.start);
        let path = if issue.path.is_empty() {
            ROOT_PATH.to_string()
        } else {
            issue.path
        };
        out.push((
            (line, column),
            ConfigError {
                code: issue.code,
                file: file.display().to_string(),
                line,
                column,
                path,
                message: issue.message,
            },
        ));
    }
    out.sort_by_key(|(pos, _)| *pos);
    out.dedup_by(|a, b| a.1 == b.1);
    out.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
