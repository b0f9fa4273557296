//! The top level of a pipeline file: name, source, settings and envelope.

use super::views;
use super::yaml::{Ctx, Node, Record, join};
use super::{
    CheckpointConfig, DeadLetterTopic, Format, IdPaths, OnError, OnTombstone, PipelineConfig,
    StoreConfig,
};
use crate::serve::query::QueryLimits;
use projector_connectors::SourceConfig;
use projector_connectors::file::FileConfig;
use projector_connectors::generator::{GeneratorConfig, Scenario, scenario_from_name};
use projector_connectors::nexmark::NexmarkConfig;
use projector_operators::decode::Preset;
use projector_operators::envelope::Envelope;
use projector_operators::fields::{FieldRegistry, KafkaField};
use projector_operators::view::ViewKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Top-level keys, in the order they are checked.
const TOP_KEYS: &[&str] = &[
    "name",
    "source",
    "format",
    "registry",
    "on_error",
    "park",
    "on_tombstone",
    "workers",
    "publish_interval",
    "state_dir",
    "checkpoint",
    "dead_letter",
    "fields",
    "envelope",
    "dedup",
    "upcast",
    "views",
    "auth",
    "query",
    "watchdog",
];

/// Most keys a generator may simulate (it holds 9 bytes of state per key).
const MAX_GENERATOR_KEYS: i64 = 100_000_000;

/// Default `publish_interval`.
pub(crate) const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_millis(50);

/// Compiles the document; `None` if anything was wrong (the problems are in `ctx`).
pub(crate) fn pipeline(ctx: &mut Ctx<'_>, root: &Node, file: &Path) -> Option<PipelineConfig> {
    let top = ctx.record(root, "", TOP_KEYS)?;
    let name = top.require(ctx, "name").and_then(|e| {
        let name = ctx.text(e.value, &e.path)?;
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            let message =
                format!("invalid pipeline name '{name}': use letters, digits, '_' and '-' only");
            ctx.error("config.invalid_value", e.value, &e.path, message);
            return None;
        }
        Some(name)
    });
    let source = top.require(ctx, "source").and_then(|e| {
        source(
            ctx,
            e.value,
            &e.path,
            file,
            name.as_deref().unwrap_or("pipeline"),
        )
    });
    let registry = match top.get("registry") {
        Some(e) => super::format::registry(ctx, e.value, &e.path).map(Some),
        None => Some(None),
    };
    let format_options = match top.get("format") {
        Some(e) => {
            super::format::format(ctx, e.value, &e.path, file, top.get("registry").is_some())
        }
        None => Some(super::FormatConfig::default()),
    };
    let format = format_options.as_ref().map(|f| f.format);
    let on_error = match top.get("on_error") {
        Some(e) => ctx.choice(
            e.value,
            &e.path,
            &[
                ("dead_letter", OnError::DeadLetter),
                ("skip", OnError::Skip),
                ("fail", OnError::Fail),
                ("park", OnError::Park),
            ],
        ),
        None => Some(OnError::DeadLetter),
    };
    let max_held = match top.get("park") {
        Some(e) => park(ctx, e.value, &e.path, on_error),
        None => Some(super::DEFAULT_MAX_HELD),
    };
    let on_tombstone = match top.get("on_tombstone") {
        Some(e) => ctx.choice(
            e.value,
            &e.path,
            &[
                ("ignore", OnTombstone::Ignore),
                ("delete", OnTombstone::Delete),
            ],
        ),
        None => Some(OnTombstone::Ignore),
    };
    let workers = match top.get("workers") {
        Some(e) => ctx
            .integer(e.value, &e.path, 1, 256)
            .map(|w| Some(w as usize)),
        None => Some(None),
    };
    let publish_interval = match top.get("publish_interval") {
        Some(e) => duration(ctx, e.value, &e.path),
        None => Some(DEFAULT_PUBLISH_INTERVAL),
    };
    let state_dir = match top.get("state_dir") {
        Some(e) => ctx.text(e.value, &e.path).and_then(|s| {
            if s.is_empty() {
                ctx.error(
                    "config.invalid_value",
                    e.value,
                    &e.path,
                    "empty path".into(),
                );
                None
            } else {
                Some(Some(PathBuf::from(s)))
            }
        }),
        None => Some(None),
    };
    let checkpoint = match top.get("checkpoint") {
        Some(e) => checkpoint(ctx, e.value, &e.path),
        None => Some(CheckpointConfig::default()),
    };
    let mut fields = FieldRegistry::new();
    let declared = match top.get("fields") {
        Some(e) => declared_fields(ctx, e.value, &e.path, &mut fields),
        None => Some(()),
    };
    // A schema file types the fields it has (after `fields:`, which wins).
    if let Some(schema) = format_options.as_ref().and_then(|f| f.schema.as_ref()) {
        super::topics::declare_schema_fields(schema, &mut fields);
    }
    let envelope = top
        .require(ctx, "envelope")
        .and_then(|e| envelope(ctx, e.value, &e.path, &mut fields));
    let topics = match (top.get("source"), &source) {
        (Some(e), Some(SourceConfig::Kafka(_))) => super::topics::topic_settings(
            ctx,
            e.value,
            &e.path,
            file,
            top.get("registry").is_some(),
            &mut fields,
        ),
        _ => Some(Vec::new()),
    };
    let views = top.require(ctx, "views").and_then(|e| {
        // Event time, when the pipeline's envelope or a topic's maps a timestamp.
        let topic_time = topics.iter().flatten().any(|t| {
            t.envelope
                .iter()
                .any(|(r, slot)| *r == super::EnvelopeRole::Timestamp && slot.is_some())
        });
        let has_time = envelope
            .as_ref()
            .map(|(env, _, _)| env.timestamp.is_some() || topic_time);
        views::views(ctx, e.value, &e.path, &mut fields, has_time)
    });
    // Parked keys' rows say so in a column of their own.
    let views = match (views, on_error, top.get("views")) {
        (Some(mut vs), Some(OnError::Park), Some(e)) => {
            let mut clash = false;
            for (i, v) in vs.iter_mut().enumerate() {
                let ViewKind::Fold(f) = &mut v.kind else {
                    continue;
                };
                let column = projector_operators::fold::PARKED_COLUMN;
                if f.key_column == column || f.columns.iter().any(|c| c.name == column) {
                    let message = format!(
                        "view '{}' has a column named '{column}', which on_error: park adds \
                         to every fold view to mark parked keys: rename it",
                        v.name
                    );
                    let node = match &e.value.data {
                        saphyr::YamlData::Sequence(items) => items.get(i).unwrap_or(e.value),
                        _ => e.value,
                    };
                    ctx.error(
                        "config.invalid_value",
                        node,
                        &format!("views[{i}]"),
                        message,
                    );
                    clash = true;
                }
                f.parked_column = true;
            }
            (!clash).then_some(vs)
        }
        (vs, ..) => vs,
    };
    // An id is decoded for every event when a view reads it, when it is record
    // metadata (a header), with a preset (which reads the whole record anyway), or in
    // records that are not JSON; otherwise only a dead letter reads it, from the
    // record's bytes (read again as JSON).
    let binary = format.is_some_and(|f| f != Format::Json)
        || topics
            .iter()
            .flatten()
            .filter_map(|t| t.format.as_ref())
            .any(|f| f.format != Format::Json);
    let (envelope, preset, id_paths) = match envelope {
        Some((mut env, preset, ids)) => {
            let mut slot = |path: &Option<String>| {
                let path = path.as_deref()?;
                if preset.is_some() || binary || KafkaField::parse(path).is_some() {
                    Some(fields.intern(path))
                } else {
                    fields.get(path)
                }
            };
            env.id = slot(&Some(ids.id.clone()));
            env.correlation_id = slot(&ids.correlation_id);
            env.causation_id = slot(&ids.causation_id);
            (Some(env), Some(preset), Some(ids))
        }
        None => (None, None, None),
    };
    // Topics that read the envelope from other fields: every role any of them maps
    // gets a slot in the pipeline's envelope.
    let (envelope, topics) = match (envelope, topics) {
        (Some(mut env), Some(mut settings)) => {
            if let Some(ids) = &id_paths {
                super::topics::settle(&mut env, &mut settings, ids, &mut fields);
            }
            (Some(env), Some(settings))
        }
        _ => (None, None),
    };
    // A table keeps its newest rows by offset, which orders nothing across topics.
    if let (Some(SourceConfig::Kafka(k)), Some(vs), Some(e)) = (&source, &views, top.get("views"))
        && k.topics.len() > 1
    {
        for (i, v) in vs.iter().enumerate() {
            let ViewKind::Table(t) = &v.kind else {
                continue;
            };
            if t.retain.rows.is_none() {
                continue;
            }
            let node = match &e.value.data {
                saphyr::YamlData::Sequence(items) => items.get(i).and_then(|item| {
                    let table = item.data.as_mapping_get("table")?;
                    table
                        .data
                        .as_mapping_get("retain")?
                        .data
                        .as_mapping_get("rows")
                }),
                _ => None,
            };
            let message = format!(
                "table view '{}' keeps its newest rows by offset, and offsets of different \
                 topics do not compare: with several topics, retain by age",
                v.name
            );
            let path = format!("views[{i}].table.retain.rows");
            ctx.error(
                "config.invalid_value",
                node.unwrap_or(e.value),
                &path,
                message,
            );
        }
    }
    // Deduplication by id: the id is decoded for every event.
    let mut envelope = envelope;
    let dedup = match (top.get("dedup"), envelope.as_mut(), &id_paths) {
        (None, ..) => Some(None),
        (Some(e), Some(env), Some(ids)) => {
            let has_time = env.timestamp.is_some();
            let window = super::dedup::dedup(ctx, e.value, &e.path, has_time);
            if window.is_some() && env.id.is_none() {
                env.id = Some(fields.intern(&ids.id));
            }
            window.map(Some)
        }
        (Some(_), ..) => None,
    };
    // Upcasters, after every other expression: their renames move what the pipeline
    // reads.
    let upcasters = match (top.get("upcast"), &envelope) {
        (None, _) => Some(Default::default()),
        (Some(e), Some(env)) => {
            let read =
                super::upcast::upcast(ctx, e.value, &e.path, &mut fields, env.event_type.index());
            // The schema version is not the per-key version the guard compares.
            let read = read.filter(|(u, _)| {
                let same = u.version.is_some() && u.version == env.version.map(|v| v.index());
                if same {
                    let message = format!(
                        "'{}' is the envelope's version, which numbers each key's events for \
                         the version guard; the schema version of an event is another field",
                        u.version_path
                    );
                    let node = e.value.data.as_mapping_get("version").unwrap_or(e.value);
                    ctx.error(
                        "config.invalid_value",
                        node,
                        &format!("{}.version", e.path),
                        message,
                    );
                }
                !same
            });
            read.and_then(|(mut u, renames)| {
                match super::upcast::resolve_renames(&mut u, &renames, &mut fields) {
                    Ok(()) => Some(u),
                    Err(why) => {
                        ctx.error("config.invalid_value", e.value, &e.path, why);
                        None
                    }
                }
            })
        }
        (Some(_), None) => None,
    };
    let auth = match (top.get("auth"), &views) {
        (None, _) => Some(None),
        (Some(e), Some(views)) => {
            let names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
            let dir = file.parent().unwrap_or(Path::new("."));
            super::auth::auth(ctx, e.value, &e.path, &names, dir).map(Some)
        }
        (Some(_), None) => None,
    };
    let watchdog = match top.get("watchdog") {
        Some(e) => ctx
            .record(e.value, &e.path, &["stall_after"])
            .and_then(|rec| match rec.get("stall_after") {
                Some(s) => duration(ctx, s.value, &s.path).and_then(|d| {
                    if d < Duration::from_secs(1) {
                        let message = "a stall is at least 1s without progress".to_string();
                        ctx.error("config.invalid_value", s.value, &s.path, message);
                        return None;
                    }
                    Some(d)
                }),
                None => Some(crate::runtime::watchdog::DEFAULT_STALL_AFTER),
            }),
        None => Some(crate::runtime::watchdog::DEFAULT_STALL_AFTER),
    };
    let query = match top.get("query") {
        Some(e) => super::query::query(ctx, e.value, &e.path),
        None => Some(QueryLimits::default()),
    };
    let dead_letter = match top.get("dead_letter") {
        None => Some(None),
        Some(e) => dead_letter(ctx, e.value, &e.path, source.as_ref(), on_error).map(Some),
    };
    // `$kafka.*` fields are filled from Kafka records; other sources have none.
    let mut source = source;
    let reads_metadata = !fields.kafka_fields().is_empty();
    match &mut source {
        Some(SourceConfig::Kafka(k)) => {
            // Presets read headers and the key; a tombstone's key is the message key.
            k.with_metadata = reads_metadata
                || matches!(dead_letter, Some(Some(_)))
                || matches!(preset, Some(Some(_)))
                || on_tombstone == Some(OnTombstone::Delete);
        }
        Some(_) if reads_metadata => {
            let e = top.require(ctx, "source")?;
            let message =
                "the pipeline reads $kafka.* fields, which only a Kafka source has".to_string();
            ctx.error("config.invalid_value", e.value, &e.path, message);
            source = None;
        }
        _ => {}
    }
    declared?;
    let topic_formats = topics.iter().flatten().filter_map(|t| t.format.as_ref());
    if let (Some(Some(p)), Some(f)) = (&preset, format)
        && let Some(f) = std::iter::once(f)
            .chain(topic_formats.map(|t| t.format))
            .find(|f| *f != Format::Json)
    {
        let e = top.require(ctx, "envelope")?;
        let message = format!(
            "preset: {} reads JSON records; this pipeline reads {}",
            p.name(),
            f.name()
        );
        ctx.error("config.invalid_value", e.value, &e.path, message);
        return None;
    }
    let declared: Vec<(String, &'static str)> = fields
        .declared_slots()
        .into_iter()
        .map(|(slot, ty)| (fields.paths()[slot].clone(), ty.name()))
        .collect();
    let logic = super::Logic::of(root, &declared);
    Some(PipelineConfig {
        dedup: dedup?,
        logic,
        text: String::new(),
        upcasters: upcasters?,
        file: file.to_path_buf(),
        name: name?,
        source: source?,
        format: format?,
        format_options: format_options?,
        registry: registry?,
        on_error: on_error?,
        max_held: max_held?,
        on_tombstone: on_tombstone?,
        envelope: envelope?,
        preset: preset?,
        topics: topics?,
        id_paths: id_paths?,
        views: views?,
        fields,
        workers: workers?,
        publish_interval: publish_interval?,
        checkpoint: checkpoint?,
        state_dir: state_dir?,
        dead_letter: dead_letter?,
        auth: auth?,
        query: query?,
        watchdog: watchdog?,
    })
}

/// The most events a parked key may hold (`park.max_held`).
const MAX_HELD: i64 = 10_000_000;

/// `park: {max_held: N}`, which only `on_error: park` reads.
fn park(ctx: &mut Ctx<'_>, node: &Node, path: &str, on_error: Option<OnError>) -> Option<usize> {
    let rec = ctx.record(node, path, &["max_held"])?;
    if on_error.is_some_and(|p| p != OnError::Park) {
        let message = "'park' sets how keys are parked, which only on_error: park does".into();
        ctx.error("config.invalid_value", node, path, message);
        return None;
    }
    match rec.get("max_held") {
        Some(e) => ctx
            .integer(e.value, &e.path, 1, MAX_HELD)
            .map(|n| n as usize),
        None => Some(super::DEFAULT_MAX_HELD),
    }
}

/// `dead_letter: {topic: NAME, brokers: HOSTS}`.
fn dead_letter(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    source: Option<&SourceConfig>,
    on_error: Option<OnError>,
) -> Option<DeadLetterTopic> {
    let rec = ctx.record(node, path, &["topic", "brokers"])?;
    let topic = rec.require(ctx, "topic").and_then(|e| {
        let t = ctx.text(e.value, &e.path)?;
        let ok = !t.is_empty()
            && t.len() <= 249
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            let message = format!(
                "invalid topic name '{t}': use letters, digits, '.', '_' and '-' (at most 249)"
            );
            ctx.error("config.invalid_value", e.value, &e.path, message);
            return None;
        }
        Some(t)
    });
    let kafka = match source {
        Some(SourceConfig::Kafka(k)) => Some(k),
        _ => None,
    };
    let (brokers, properties) = match (rec.get("brokers"), kafka) {
        (Some(e), _) => (ctx.text(e.value, &e.path), Default::default()),
        (None, Some(k)) => (Some(k.brokers.clone()), k.properties.clone()),
        (None, None) => {
            let message = "'brokers' is required: the source is not Kafka".to_string();
            ctx.error("config.missing_field", node, path, message);
            (None, Default::default())
        }
    };
    if let Some(policy) = on_error
        && !matches!(policy, OnError::DeadLetter | OnError::Park)
    {
        let message =
            "dead letters are only written with on_error: dead_letter or park".to_string();
        ctx.error("config.invalid_value", node, path, message);
        return None;
    }
    Some(DeadLetterTopic {
        brokers: brokers?,
        properties,
        topic: topic?,
    })
}

/// `source:`.
fn source(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    file: &Path,
    pipeline: &str,
) -> Option<SourceConfig> {
    const TYPES: &[(&str, &str)] = &[
        ("generator", "generator"),
        ("file", "file"),
        ("kafka", "kafka"),
        ("nexmark", "nexmark"),
    ];
    const GENERATOR_KEYS: &[&str] = &["type", "scenario", "events", "keys", "seed"];
    const NEXMARK_KEYS: &[&str] = &["type", "events", "rate", "base_time", "pregenerate"];
    const FILE_KEYS: &[&str] = &["type", "path", "max_record_bytes"];
    const ALL_KEYS: &[&str] = &[
        "type",
        "scenario",
        "events",
        "keys",
        "seed",
        "rate",
        "base_time",
        "pregenerate",
        "path",
        "max_record_bytes",
        "brokers",
        "topics",
        "group_id",
        "start_from",
        "properties",
    ];
    if !node.data.is_mapping() {
        ctx.wrong_type(node, path, "a mapping");
        return None;
    }
    // Read `type` first, so the other keys can be checked against that kind of source.
    let ty = node
        .data
        .as_mapping_get("type")
        .and_then(|t| ctx.choice(t, &join(path, "type"), TYPES));
    let allowed = match ty {
        Some("generator") => GENERATOR_KEYS,
        Some("kafka") => super::kafka::KEYS,
        Some("nexmark") => NEXMARK_KEYS,
        Some(_) => FILE_KEYS,
        None => ALL_KEYS,
    };
    let rec = ctx.record(node, path, allowed)?;
    rec.require(ctx, "type")?;
    match ty? {
        "generator" => generator(ctx, &rec).map(SourceConfig::Generator),
        "kafka" => super::kafka::source(ctx, &rec, pipeline).map(SourceConfig::Kafka),
        "nexmark" => nexmark(ctx, &rec).map(SourceConfig::Nexmark),
        _ => file_source(ctx, &rec, file).map(SourceConfig::File),
    }
}

fn generator(ctx: &mut Ctx<'_>, rec: &Record<'_>) -> Option<GeneratorConfig> {
    let scenario = rec.require(ctx, "scenario").and_then(|e| {
        let choices: Vec<(&str, Scenario)> = Scenario::NAMES
            .iter()
            .filter_map(|n| scenario_from_name(n).map(|s| (*n, s)))
            .collect();
        ctx.choice(e.value, &e.path, &choices)
    });
    let mut int = |key: &str, default: u64, min: i64, max: i64| {
        optional_u64(ctx, rec, key, default, min, max)
    };
    let events = int("events", 1_000_000, 0, i64::MAX);
    // The generator keeps a few bytes of state per key in memory.
    let keys = int("keys", 10_000, 1, MAX_GENERATOR_KEYS);
    let seed = int("seed", 42, 0, i64::MAX);
    Some(GeneratorConfig {
        scenario: scenario?,
        events: events?,
        keys: keys?,
        seed: seed?,
    })
}

/// The integer at `key` of `rec` within `min..=max`, or `default` when it is absent;
/// `None` (with the error reported) when it is not such an integer.
fn optional_u64(
    ctx: &mut Ctx<'_>,
    rec: &Record<'_>,
    key: &str,
    default: u64,
    min: i64,
    max: i64,
) -> Option<u64> {
    match rec.get(key) {
        Some(e) => ctx.integer(e.value, &e.path, min, max).map(|v| v as u64),
        None => Some(default),
    }
}

/// `source: {type: nexmark, events, rate, base_time, pregenerate}`.
fn nexmark(ctx: &mut Ctx<'_>, rec: &Record<'_>) -> Option<NexmarkConfig> {
    let defaults = NexmarkConfig::default();
    let mut int = |key: &str, default: u64, min: i64, max: i64| {
        optional_u64(ctx, rec, key, default, min, max)
    };
    let events = int("events", defaults.events, 0, i64::MAX);
    // At most one event per microsecond: the crate's clock has microsecond steps.
    let rate = int("rate", defaults.rate, 1, 1_000_000);
    let base_time_ms = match rec.get("base_time") {
        None => Some(defaults.base_time_ms),
        Some(e) => match &e.value.data {
            saphyr::YamlData::Value(saphyr::Scalar::Integer(_)) => ctx
                .integer(e.value, &e.path, 0, i64::MAX / 2)
                .map(|v| v as u64),
            saphyr::YamlData::Value(saphyr::Scalar::String(s)) => {
                match projector_operators::value::parse_timestamp_millis(s) {
                    Some(ms) if ms >= 0 => Some(ms as u64),
                    _ => {
                        let message = format!(
                            "invalid base_time '{s}': use epoch milliseconds or an RFC 3339 \
                             time at or after 1970, such as '2026-01-01T00:00:00Z'"
                        );
                        ctx.error("config.invalid_value", e.value, &e.path, message);
                        None
                    }
                }
            }
            _ => {
                ctx.wrong_type(e.value, &e.path, "epoch milliseconds or an RFC 3339 string");
                None
            }
        },
    };
    let pregenerate = match rec.get("pregenerate") {
        Some(e) => ctx.boolean(e.value, &e.path),
        None => Some(false),
    };
    Some(NexmarkConfig {
        events: events?,
        rate: rate?,
        base_time_ms: base_time_ms?,
        pregenerate: pregenerate?,
    })
}

fn file_source(ctx: &mut Ctx<'_>, rec: &Record<'_>, file: &Path) -> Option<FileConfig> {
    let e = rec.require(ctx, "path")?;
    let text = ctx.text(e.value, &e.path)?;
    if text.is_empty() {
        ctx.error(
            "config.invalid_value",
            e.value,
            &e.path,
            "empty path (use '-' for stdin)".into(),
        );
        return None;
    }
    let max_record_bytes = match rec.get("max_record_bytes") {
        Some(e) => byte_size(ctx, e.value, &e.path)?,
        None => projector_connectors::file::DEFAULT_MAX_RECORD_BYTES,
    };
    Some(FileConfig {
        path: resolve_source_path(&text, file),
        max_record_bytes,
    })
}

/// A `source.path` as the engine opens it: `-` stays stdin; a relative path is relative to
/// the directory of the pipeline file.
pub(crate) fn resolve_source_path(text: &str, file: &Path) -> PathBuf {
    let p = PathBuf::from(text);
    if text == "-" || p.is_absolute() {
        return p;
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p,
    }
}

/// A humantime duration of at least 1ms.
/// `checkpoint: {store: URL, endpoint, region, path_style, interval: 1s, keep: 3}`.
fn checkpoint(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<CheckpointConfig> {
    let rec = ctx.record(
        node,
        path,
        &[
            "store",
            "endpoint",
            "region",
            "path_style",
            "interval",
            "keep",
        ],
    )?;
    let defaults = CheckpointConfig::default();
    let interval = match rec.get("interval") {
        Some(e) => duration(ctx, e.value, &e.path),
        None => Some(defaults.interval),
    };
    let keep = match rec.get("keep") {
        Some(e) => ctx.integer(e.value, &e.path, 1, 100).map(|k| k as usize),
        None => Some(defaults.keep),
    };
    let text = |ctx: &mut Ctx<'_>, key: &str| match rec.get(key) {
        Some(e) => ctx.string(e.value, &e.path).map(Some),
        None => Some(None),
    };
    let (endpoint, region) = (text(ctx, "endpoint"), text(ctx, "region"));
    let path_style = match rec.get("path_style") {
        Some(e) => ctx.boolean(e.value, &e.path).map(Some),
        None => Some(None),
    };
    let store = match rec.get("store") {
        Some(e) => store_url(ctx, e.value, &e.path).map(Some),
        None => {
            for key in ["endpoint", "region", "path_style"] {
                if let Some(e) = rec.get(key) {
                    let message = format!("'{key}' needs 'store:' (an s3:// URL) beside it");
                    ctx.error("config.invalid_value", e.value, &e.path, message);
                }
            }
            Some(None)
        }
    };
    let store = store?.map(|url| StoreConfig {
        url,
        endpoint: endpoint.clone().flatten(),
        region: region.clone().flatten(),
        path_style: path_style.flatten(),
    });
    if let (Some(s), Some(e)) = (&store, rec.get("endpoint"))
        && s.is_file()
    {
        let message = "'endpoint' is for object stores, not file:// directories".to_string();
        ctx.error("config.invalid_value", e.value, &e.path, message);
    }
    Some(CheckpointConfig {
        store,
        interval: interval?,
        keep: keep?,
    })
}

/// The schemes `checkpoint.store` takes.
const STORE_SCHEMES: &[&str] = &["file", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// `checkpoint.store`: a URL with a scheme we can open and a bucket (or a path).
fn store_url(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    let text = ctx.string(node, path)?;
    let why = match url::Url::parse(&text) {
        Err(e) => Some(format!(
            "'{text}' is not a URL ({e}); examples: s3://bucket/prefix, file:///var/lib/projector"
        )),
        Ok(u) if !STORE_SCHEMES.contains(&u.scheme()) => Some(format!(
            "unsupported scheme '{}' in '{text}'; one of: {}",
            u.scheme(),
            STORE_SCHEMES.join(", ")
        )),
        Ok(u) if u.scheme() == "file" && (u.path().is_empty() || u.path() == "/") => Some(format!(
            "'{text}' names no directory; example: file:///var/lib/projector"
        )),
        Ok(u) if u.scheme() != "file" && u.host_str().is_none_or(str::is_empty) => Some(format!(
            "'{text}' names no bucket; example: s3://bucket/prefix"
        )),
        Ok(_) => None,
    };
    match why {
        Some(message) => {
            ctx.error("config.invalid_value", node, path, message);
            None
        }
        None => Some(text),
    }
}

pub(super) fn duration(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Duration> {
    let Some(text) = (match &node.data {
        saphyr::YamlData::Value(saphyr::Scalar::String(s)) => Some(s.to_string()),
        _ => None,
    }) else {
        ctx.wrong_type(node, path, "a duration such as '100ms' or '2s'");
        return None;
    };
    match humantime::parse_duration(&text) {
        Ok(d) if d >= Duration::from_millis(1) => Some(d),
        Ok(_) => {
            let message = format!("duration '{text}' is too short: the minimum is 1ms");
            ctx.error("config.invalid_value", node, path, message);
            None
        }
        Err(e) => {
            let message = format!("invalid duration '{text}': {e} (examples: 100ms, 2s, 1m)");
            ctx.error("config.invalid_value", node, path, message);
            None
        }
    }
}

/// A size in bytes: an integer, or a string such as `64MiB`, `1 GB` or `512k`.
pub(super) fn byte_size(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<usize> {
    let parsed = match &node.data {
        saphyr::YamlData::Value(saphyr::Scalar::Integer(i)) => Ok(*i),
        saphyr::YamlData::Value(saphyr::Scalar::String(s)) => s
            .parse::<bytesize::ByteSize>()
            .map(|b| i64::try_from(b.as_u64()).unwrap_or(i64::MAX))
            .map_err(|e| format!("invalid size '{s}': {e} (examples: 1048576, 64MiB, 1GB)")),
        _ => {
            ctx.wrong_type(node, path, "a size such as 64MiB or 1GB");
            return None;
        }
    };
    match parsed {
        Ok(n) if n >= 1024 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Ok(n) => {
            let message = format!("{n} bytes is too small: the minimum is 1KiB");
            ctx.error("config.invalid_value", node, path, message);
            None
        }
        Err(message) => {
            ctx.error("config.invalid_value", node, path, message);
            None
        }
    }
}

/// `fields: {path: type}`: the types of event fields, declared once for every view.
fn declared_fields(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
) -> Option<()> {
    let entries = ctx.entries(node, path, true)?;
    let mut ok = true;
    for e in entries {
        let path_ok = check_field_path(ctx, e.key, &e.path, &e.name);
        match super::views::column_type(ctx, e.value, &e.path) {
            Some(ty) if path_ok => fields.declare(&e.name, ty),
            _ => ok = false,
        }
    }
    ok.then_some(())
}

/// The keys of `envelope:`.
const ENVELOPE_KEYS: &[&str] = &[
    "preset",
    "id",
    "type",
    "key",
    "version",
    "timestamp",
    "correlation_id",
    "causation_id",
];

/// `envelope:`: an optional preset, whose defaults fill the paths not given; the key,
/// type, version and timestamp paths, interned; and the paths of the ids, which the
/// caller interns only where needed (after the views, see [`pipeline`]).
fn envelope(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    fields: &mut FieldRegistry,
) -> Option<(Envelope, Option<Preset>, IdPaths)> {
    let rec = ctx.record(node, path, ENVELOPE_KEYS)?;
    let preset = match rec.get("preset") {
        None => Some(None),
        Some(e) => ctx
            .choice(
                e.value,
                &e.path,
                &[
                    ("debezium", Preset::Debezium),
                    ("cloudevents", Preset::CloudEvents),
                ],
            )
            .map(Some),
    };
    let preset = preset?;
    let default = |key: &str| -> Option<&'static str> {
        preset?
            .defaults()
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, d)| *d)
    };
    let mut read = |key: &str, required: bool| -> Option<Option<String>> {
        let e = match rec.get(key) {
            Some(e) => e,
            None => match default(key) {
                Some(d) => return Some(Some(d.to_string())),
                None if required => rec.require(ctx, key)?,
                None => return Some(None),
            },
        };
        field_path(ctx, e.value, &e.path).map(Some)
    };
    let id = read("id", true);
    let ty = read("type", true);
    let key = read("key", true);
    let version = read("version", false);
    let timestamp = read("timestamp", false);
    let correlation = read("correlation_id", false);
    let causation = read("causation_id", false);
    let (id, ty, key, version, timestamp) = (id??, ty??, key??, version?, timestamp?);
    let (correlation, causation) = (correlation?, causation?);
    // Slot order: key first (the router reads it for every event), then the rest.
    let key = fields.intern(&key);
    let event_type = fields.intern(&ty);
    let version = version.map(|v| fields.intern(&v));
    let timestamp = timestamp.map(|t| fields.intern(&t));
    let envelope = Envelope {
        id: None,
        event_type,
        key,
        version,
        timestamp,
        correlation_id: None,
        causation_id: None,
    };
    let ids = IdPaths {
        id,
        correlation_id: correlation,
        causation_id: causation,
    };
    Some((envelope, preset, ids))
}

/// A dotted field path such as `payload.amount`.
pub(super) fn field_path(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    let text = ctx.string(node, path)?;
    check_field_path(ctx, node, path, &text).then_some(text)
}

/// Whether `text` is a dotted field path (or a `$kafka` field); reported at `node` if
/// not.
pub(super) fn check_field_path(ctx: &mut Ctx<'_>, node: &Node, path: &str, text: &str) -> bool {
    if text.is_empty()
        || text
            .split('.')
            .any(|seg| seg.trim().is_empty() || seg.trim() != seg)
    {
        let message =
            format!("invalid field path '{text}': use a dotted path such as 'payload.amount'");
        ctx.error("config.invalid_value", node, path, message);
        return false;
    }
    if let Some(Err(message)) = KafkaField::parse(text) {
        ctx.error("config.invalid_value", node, path, message);
        return false;
    }
    true
}
