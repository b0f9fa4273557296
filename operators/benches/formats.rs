//! Decoding the same bank events from JSON, Avro and Protobuf (both in the Confluent
//! wire format, the writer's schema from an in-memory registry, cached after the
//! first record): events/s per format, for BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p projector-operators --bench formats
//! ```
//!
//! It lives here, not in `benches/`, so that measuring it builds the operators alone
//! in release (minutes), not the engine and DataFusion (half an hour on 2 cores).

use apache_avro::types::Value as Avro;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use projector_connectors::generator::{GeneratorConfig, GeneratorSource, Scenario};
use projector_connectors::{RawBatch, Resume, Source};
use projector_operators::decode::{
    AvroSchema, BodyFormat, Framing, RecordDecoder, RecordParts, RegisteredSchema, SchemaError,
    SchemaKind, SchemaSource, compile_proto,
};
use projector_operators::fields::FieldRegistry;
use projector_operators::value::Value;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value as Pb};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const EVENTS: usize = 100_000;

fn schema_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipelines/schemas")
        .join(name);
    std::fs::read_to_string(path).expect("shipped schema")
}

/// The bank events as JSON objects.
fn bank_events() -> Vec<serde_json::Value> {
    let config = GeneratorConfig {
        scenario: Scenario::Bank,
        events: EVENTS as u64,
        keys: 10_000,
        seed: 42,
    };
    let mut source = GeneratorSource::new(&config, &Resume::new());
    let mut batch = RawBatch::default();
    while batch.len() < EVENTS {
        let wanted = EVENTS - batch.len();
        source
            .poll(&mut batch, wanted)
            .expect("the generator does not fail");
    }
    batch
        .records
        .iter()
        .map(|r| serde_json::from_slice(batch.bytes(r)).expect("json"))
        .collect()
}

/// The paths the bank pipeline reads, in its slot order.
fn fields() -> FieldRegistry {
    let mut f = FieldRegistry::new();
    for p in [
        "aggregateId",
        "eventType",
        "version",
        "timestamp",
        "payload.owner",
        "payload.amount",
    ] {
        f.intern(p);
    }
    f
}

#[derive(Debug)]
struct OneSchema(RegisteredSchema);

impl SchemaSource for OneSchema {
    fn by_id(&self, _id: u32) -> Result<RegisteredSchema, SchemaError> {
        Ok(self.0.clone())
    }
}

fn framed(body: Vec<u8>, indexes: bool) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0, 1];
    if indexes {
        out.push(0);
    }
    out.extend(body);
    out
}

fn decode(c: &mut Criterion) {
    let events = bank_events();
    let fields = fields();
    let json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).expect("json"))
        .collect();

    let avsc = schema_text("bank-event.avsc");
    let avro_schema = AvroSchema::parse_str(&avsc).expect("avsc");
    let avro: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            let v = Avro::from(e.clone())
                .resolve(&avro_schema)
                .expect("resolves");
            framed(
                apache_avro::to_avro_datum(&avro_schema, v).expect("encodes"),
                false,
            )
        })
        .collect();

    let proto = schema_text("bank_event.proto");
    let pool = compile_proto("bank_event.proto", &proto).expect("proto");
    let event = pool.get_message_by_name("bank.BankEvent").expect("message");
    let payload = pool.get_message_by_name("bank.Payload").expect("message");
    let protobuf: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            let mut m = DynamicMessage::new(event.clone());
            for k in ["eventId", "eventType", "aggregateId"] {
                m.set_field_by_name(k, Pb::String(e[k].as_str().expect("str").into()));
            }
            for k in ["version", "timestamp"] {
                m.set_field_by_name(k, Pb::I64(e[k].as_i64().expect("int")));
            }
            let mut p = DynamicMessage::new(payload.clone());
            if let Some(o) = e["payload"]["owner"].as_str() {
                p.set_field_by_name("owner", Pb::String(o.into()));
            }
            if let Some(a) = e["payload"]["amount"].as_i64() {
                p.set_field_by_name("amount", Pb::I64(a));
            }
            m.set_field_by_name("payload", Pb::Message(p));
            framed(m.encode_to_vec(), true)
        })
        .collect();

    let registry = |kind, text: &str| {
        Some(Arc::new(OneSchema(RegisteredSchema {
            kind,
            text: text.to_string(),
            references: Vec::new(),
        })) as _)
    };
    let decoders = [
        (
            "bank_json",
            RecordDecoder::with_format(&fields, None, BodyFormat::Json),
            &json,
        ),
        (
            "bank_avro",
            RecordDecoder::with_format(
                &fields,
                None,
                BodyFormat::Avro {
                    reader: None,
                    framing: Framing::Confluent,
                    registry: registry(SchemaKind::Avro, &avsc),
                },
            ),
            &avro,
        ),
        (
            "bank_protobuf",
            RecordDecoder::with_format(
                &fields,
                None,
                BodyFormat::Protobuf {
                    reader: None,
                    framing: Framing::Confluent,
                    registry: registry(SchemaKind::Protobuf, &proto),
                },
            ),
            &protobuf,
        ),
    ];
    // The three read the same values (a decoder that reads nothing would be fast).
    let first = |decoder: &RecordDecoder, records: &[Vec<u8>]| -> Vec<Value> {
        let mut all = Vec::new();
        for r in &records[..1_000] {
            let mut slots = vec![Value::Null; decoder.slots()];
            decoder.decode(&parts(r), &mut slots).expect("decodes");
            all.extend(slots);
        }
        all
    };
    let want = first(&decoders[0].1, decoders[0].2);
    for (name, decoder, records) in &decoders[1..] {
        assert!(
            first(decoder, records) == want,
            "{name} reads other values than JSON"
        );
    }
    let mut group = c.benchmark_group("decode_formats");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, decoder, records) in &decoders {
        let mut slots = vec![Value::Null; decoder.slots()];
        group.bench_function(*name, |b| {
            b.iter(|| {
                for r in records.iter() {
                    decoder.decode(&parts(r), &mut slots).expect("decodes");
                    black_box(&slots);
                }
            })
        });
    }
    group.finish();
}

fn parts(r: &[u8]) -> RecordParts<'_> {
    RecordParts {
        value: Some(r),
        key: None,
        headers: &[],
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
