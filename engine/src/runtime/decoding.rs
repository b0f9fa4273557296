//! From a record to an event: decode, fill Kafka metadata, copy a topic's envelope
//! into the pipeline's, upcast, convert declared types, and settle tombstones.
//!
//! The ingest thread runs this on every record it reads; a worker runs it again on the
//! held records of a parked key when the key is retried (see
//! [`projector_operators::park`]), so they are decoded by the pipeline as it is then.

use crate::config::OnTombstone;
use projector_operators::decode::{DecodeError, Decoded, RecordDecoder, RecordParts};
use projector_operators::envelope::{Envelope, TOMBSTONE_TYPE};
use projector_operators::fields::{FieldRegistry, KafkaField};
use projector_operators::upcast::{Upcast, Upcasters};
use projector_operators::value::{ColumnType, Value};

/// One record as its source gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordIn<'a> {
    /// Its source partition (index).
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// Its value (`None`: a tombstone).
    pub value: Option<&'a [u8]>,
    /// Its message key (Kafka).
    pub key: Option<&'a [u8]>,
    /// Its Kafka timestamp, in milliseconds.
    pub timestamp: Option<i64>,
    /// Its headers (filled when [`Decoding::reads_headers`]).
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// What a record became.
#[derive(Debug)]
pub(crate) enum Step {
    /// An event, in the slots, for the views.
    Event,
    /// Nothing for the views (an upcaster dropped it, an ignored tombstone, a preset's
    /// record that is not an event).
    Ignored,
    /// A bad record. `decoded`: the slots hold what was decoded (its key may be read).
    Bad {
        /// Stable error code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// The slots hold the decoded event.
        decoded: bool,
    },
    /// The schema registry cannot be reached: not the record's fault.
    RegistryDown(String),
}

/// How records turn into events.
pub(crate) struct Decoding {
    /// Per stream (topic) when topics have their own format or envelope, else one.
    pub(crate) decoders: Vec<RecordDecoder>,
    /// Per stream: envelope slots to fill from the topic's own fields, (from, to);
    /// empty when topics have no settings of their own.
    pub(crate) normalize: Vec<Vec<(Option<usize>, usize)>>,
    pub(crate) on_tombstone: OnTombstone,
    pub(crate) kafka: KafkaFields,
    /// The slots whose fields have a declared type (`fields:`), with it and the path.
    pub(crate) declared: Vec<(usize, ColumnType, String)>,
    /// `upcast:`: old versions of events brought to the newest shape.
    pub(crate) upcasters: Upcasters,
    /// The pipeline's envelope.
    pub(crate) envelope: Envelope,
}

impl Decoding {
    /// Number of slots an event has.
    pub(crate) fn slots(&self) -> usize {
        self.decoders[0].slots()
    }

    /// Whether a record's headers are read (a preset reads them, or a `$kafka.header`).
    pub(crate) fn reads_headers(&self) -> bool {
        self.decoders.iter().any(RecordDecoder::reads_headers) || self.kafka.reads_headers()
    }

    /// Turns `rec`, of `stream`, into an event in `slots`; `copied` is scratch.
    pub(crate) fn decode(
        &self,
        rec: &RecordIn<'_>,
        stream: usize,
        slots: &mut [Value],
        copied: &mut Vec<Value>,
    ) -> Step {
        let bad = |code: &'static str, message: String, decoded: bool| Step::Bad {
            code,
            message,
            decoded,
        };
        let decoder = &self.decoders[stream.min(self.decoders.len() - 1)];
        let parts = RecordParts {
            value: rec.value,
            key: rec.key,
            headers: rec.headers,
        };
        let decoded = match decoder.decode(&parts, slots) {
            Ok(d) => d,
            Err(DecodeError::RegistryUnavailable(why)) => return Step::RegistryDown(why),
            Err(e) => return bad(e.code(), e.to_string(), false),
        };
        if !self.kafka.fields.is_empty() {
            self.kafka.fill(slots, rec);
        }
        // This topic's envelope, where the pipeline's reads it (every value read before
        // any is written: one role's source may be another's target).
        let copies = self.normalize.get(stream).map_or(&[][..], Vec::as_slice);
        copied.clear();
        copied.extend(
            copies
                .iter()
                .map(|&(from, _)| from.map_or(Value::Null, |f| slots[f].clone())),
        );
        for (&(_, to), v) in copies.iter().zip(copied.drain(..)) {
            slots[to] = v;
        }
        if !self.upcasters.is_empty() {
            match self.upcasters.apply(slots) {
                Ok(Upcast::Kept) => {}
                Ok(Upcast::Dropped) => return Step::Ignored,
                Err(e) => return bad(e.code(), e.to_string(), true),
            }
        }
        if let Some(message) = coerce_declared(&self.declared, slots) {
            return bad("apply.type_mismatch", message, true);
        }
        let type_slot = self.envelope.event_type.index();
        match decoded {
            Decoded::Event => {
                if matches!(&slots[type_slot], Value::Str(t) if &**t == TOMBSTONE_TYPE) {
                    let message =
                        format!("the event type '{TOMBSTONE_TYPE}' is reserved for tombstones");
                    return bad("apply.bad_event_type", message, true);
                }
            }
            Decoded::Ignore => return Step::Ignored,
            Decoded::Tombstone | Decoded::Delete if self.on_tombstone == OnTombstone::Ignore => {
                return Step::Ignored;
            }
            Decoded::Tombstone => {
                // No value: the key is the message key.
                let Some(text) = rec.key.and_then(|k| std::str::from_utf8(k).ok()) else {
                    let message = "a tombstone (null value) needs a UTF-8 message key to know \
                                   which row to delete";
                    return bad("apply.missing_key", message.to_string(), false);
                };
                slots[self.envelope.key.index()] = Value::Str(text.into());
                slots[type_slot] = Value::Str(TOMBSTONE_TYPE.into());
            }
            Decoded::Delete => {
                slots[type_slot] = Value::Str(TOMBSTONE_TYPE.into());
            }
        }
        Step::Event
    }
}

/// Converts the fields with a declared type; the error message of the first that does
/// not convert.
fn coerce_declared(
    declared: &[(usize, ColumnType, String)],
    slots: &mut [Value],
) -> Option<String> {
    for (slot, ty, path) in declared {
        match slots[*slot].coerce_declared(*ty) {
            Ok(v) => slots[*slot] = v,
            Err(e) => return Some(format!("field '{path}' is declared {ty}: {e}")),
        }
    }
    None
}

/// Fills the slots of `$kafka.*` fields from a record's metadata.
pub(crate) struct KafkaFields {
    fields: Vec<(usize, KafkaField)>,
    /// Per source partition: its topic and partition number (Kafka names them
    /// `topic/number`).
    partitions: Vec<(Value, Value)>,
}

impl KafkaFields {
    pub(crate) fn new(fields: &FieldRegistry, names: &[String]) -> Self {
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

    fn reads_headers(&self) -> bool {
        self.fields
            .iter()
            .any(|(_, f)| matches!(f, KafkaField::Header(_)))
    }

    fn fill(&self, slots: &mut [Value], rec: &RecordIn<'_>) {
        let text = |b: Option<&[u8]>| {
            b.and_then(|b| std::str::from_utf8(b).ok())
                .map_or(Value::Null, |s| Value::Str(s.into()))
        };
        let p = rec.partition as usize;
        for (slot, field) in &self.fields {
            slots[*slot] = match field {
                KafkaField::Key => text(rec.key),
                KafkaField::Timestamp => rec.timestamp.map_or(Value::Null, Value::Int),
                KafkaField::Topic => self.partitions[p].0.clone(),
                KafkaField::Partition => self.partitions[p].1.clone(),
                KafkaField::Offset => i64::try_from(rec.offset).map_or(Value::Null, Value::Int),
                // The last one when it repeats.
                KafkaField::Header(name) => text(
                    rec.headers
                        .iter()
                        .rev()
                        .find(|(n, _)| *n == &**name)
                        .and_then(|(_, v)| *v),
                ),
            };
        }
    }
}
