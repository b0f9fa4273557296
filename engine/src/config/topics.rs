//! `topics: [orders, {name: payments, format: ..., envelope: {...}}]`: a Kafka topic's
//! own format and envelope, for sources of several topics whose records differ.
//!
//! Every topic's records end up in the same slots: a topic's envelope paths are
//! interned beside the pipeline's, and the ingest thread copies them into the
//! pipeline's envelope slots after decoding a record of that topic ([`TopicSettings`]).
//! A role the pipeline's envelope does not map (say `version`) but a topic does is
//! read from that topic's field, and is absent for the other topics.

use super::yaml::{Ctx, Node, join};
use super::{EnvelopeRole, IdPaths, TopicSettings};
use projector_operators::envelope::Envelope;
use projector_operators::fields::{FieldId, FieldRegistry};
use saphyr::{Scalar, YamlData};
use std::path::Path;

/// A topic's envelope as written: per role it names, the path (`None`: `~`, the
/// topic's records have none).
type Paths = Vec<(EnvelopeRole, Option<String>)>;

/// Reads the settings of the topics in `source.topics` that have any (an empty list
/// when none has); paths are interned into `fields`. Errors are reported in `ctx`.
pub(super) fn topic_settings(
    ctx: &mut Ctx<'_>,
    source: &Node,
    source_path: &str,
    file: &Path,
    has_registry: bool,
    fields: &mut FieldRegistry,
) -> Option<Vec<TopicSettings>> {
    let Some(topics) = source.data.as_mapping_get("topics") else {
        return Some(Vec::new());
    };
    let YamlData::Sequence(items) = &topics.data else {
        return Some(Vec::new());
    };
    let topics_path = join(source_path, "topics");
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    let mut any = false;
    for (i, item) in items.iter().enumerate() {
        let path = format!("{topics_path}[{i}]");
        let (name, format, envelope) = match &item.data {
            YamlData::Mapping(_) => (
                item.data.as_mapping_get("name"),
                item.data.as_mapping_get("format"),
                item.data.as_mapping_get("envelope"),
            ),
            _ => (Some(item), None, None),
        };
        // The source reported a missing or bad name already.
        let topic = name
            .and_then(|n| n.data.as_str().map(str::to_string))
            .unwrap_or_default();
        let format = match format {
            Some(node) => {
                any = true;
                let f =
                    super::format::format(ctx, node, &join(&path, "format"), file, has_registry);
                ok &= f.is_some();
                f
            }
            None => None,
        };
        let paths = match envelope {
            Some(node) => {
                any = true;
                let p = envelope_paths(ctx, node, &join(&path, "envelope"));
                ok &= p.is_some();
                p.unwrap_or_default()
            }
            None => Vec::new(),
        };
        let envelope = paths
            .iter()
            .map(|(role, p)| (*role, p.as_deref().map(|p| fields.intern(p))))
            .collect();
        if let Some(super::FormatConfig {
            schema: Some(schema),
            ..
        }) = &format
        {
            declare_schema_fields(schema, fields);
        }
        out.push(TopicSettings {
            topic,
            format,
            envelope,
        });
    }
    if !ok {
        return None;
    }
    if !any {
        out.clear();
    }
    Some(out)
}

/// A schema file types the fields it has (after `fields:`, which wins).
pub(super) fn declare_schema_fields(schema: &super::ReaderSchema, fields: &mut FieldRegistry) {
    match schema {
        super::ReaderSchema::Avro(s) => {
            for (path, ty) in projector_operators::decode::avro_schema_fields(s) {
                fields.declare_default(&path, ty);
            }
        }
        super::ReaderSchema::Protobuf(m) => {
            for (path, ty) in projector_operators::decode::protobuf_message_fields(m) {
                fields.declare_default(&path, ty);
            }
        }
    }
}

/// A topic's `envelope:`: the roles it maps from its own fields, a path each, or `~`
/// for a role its records do not have (not `key` or `type`: every event has both).
fn envelope_paths(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Paths> {
    let keys: Vec<&str> = EnvelopeRole::ALL.iter().map(|(_, k)| *k).collect();
    let rec = ctx.record(node, path, &keys)?;
    let mut ok = true;
    let mut out = Vec::new();
    for (role, key) in EnvelopeRole::ALL {
        let Some(e) = rec.get(key) else {
            continue;
        };
        if matches!(e.value.data, YamlData::Value(Scalar::Null)) {
            if matches!(role, EnvelopeRole::Key | EnvelopeRole::Type) {
                let message = format!(
                    "every event has a {key}: give the path of this topic's {key}, or leave \
                     it out to read the pipeline envelope's"
                );
                ctx.error("config.invalid_value", e.value, &e.path, message);
                ok = false;
            } else {
                out.push((role, None));
            }
            continue;
        }
        match super::compile::field_path(ctx, e.value, &e.path) {
            Some(p) => out.push((role, Some(p))),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Makes the pipeline's envelope read every role some topic maps: a role only topics
/// map is read from the first such topic's slot, and the topics that do not map it
/// have none. `ids` are the pipeline envelope's id paths, interned where a topic
/// reads its ids elsewhere (the canonical slot must exist to copy into).
pub(super) fn settle(
    envelope: &mut Envelope,
    topics: &mut [TopicSettings],
    ids: &IdPaths,
    fields: &mut FieldRegistry,
) {
    for (role, _) in EnvelopeRole::ALL {
        let overridden = topics
            .iter()
            .any(|t| t.envelope.iter().any(|(r, _)| *r == role));
        if !overridden || role.slot(envelope).is_some() {
            continue;
        }
        let pipeline_path = match role {
            EnvelopeRole::Id => Some(ids.id.as_str()),
            EnvelopeRole::CorrelationId => ids.correlation_id.as_deref(),
            EnvelopeRole::CausationId => ids.causation_id.as_deref(),
            _ => None,
        };
        match pipeline_path {
            // The pipeline maps it, but no view reads it: decode it now.
            Some(p) => set_slot(envelope, role, Some(fields.intern(p))),
            None => {
                // Only topics map it: theirs, and none for the others.
                let first = topics
                    .iter()
                    .flat_map(|t| &t.envelope)
                    .find_map(|(r, slot)| (*r == role).then_some(*slot).flatten());
                set_slot(envelope, role, first);
                for t in topics.iter_mut() {
                    if !t.envelope.iter().any(|(r, _)| *r == role) {
                        t.envelope.push((role, None));
                    }
                }
            }
        }
    }
}

fn set_slot(envelope: &mut Envelope, role: EnvelopeRole, slot: Option<FieldId>) {
    match role {
        EnvelopeRole::Key => envelope.key = slot.expect("a key slot"),
        EnvelopeRole::Type => envelope.event_type = slot.expect("a type slot"),
        EnvelopeRole::Version => envelope.version = slot,
        EnvelopeRole::Timestamp => envelope.timestamp = slot,
        EnvelopeRole::Id => envelope.id = slot,
        EnvelopeRole::CorrelationId => envelope.correlation_id = slot,
        EnvelopeRole::CausationId => envelope.causation_id = slot,
    }
}
