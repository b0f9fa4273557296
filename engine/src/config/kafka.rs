//! `source: {type: kafka, ...}`: brokers, topics, group, start position, and
//! passthrough librdkafka properties checked against the keys librdkafka knows.

use super::yaml::{Ctx, Record, suggest};
use projector_connectors::kafka::{KafkaConfig, Partitioner, StartFrom};
use saphyr::YamlData;
use std::collections::BTreeMap;

/// The keys of a Kafka source.
pub(crate) const KEYS: &[&str] = &[
    "type",
    "brokers",
    "topics",
    "group_id",
    "start_from",
    "properties",
    "partitioner",
];

/// The keys of a topic with its own settings in `topics:`.
pub(crate) const TOPIC_KEYS: &[&str] = &["name", "format", "envelope"];

/// Properties Projector sets itself: overriding them would break exactly-once.
const MANAGED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use 'brokers'"),
    ("group.id", "use 'group_id'"),
    (
        "enable.auto.commit",
        "offsets of record live in Projector's checkpoints",
    ),
    (
        "enable.auto.offset.store",
        "offsets of record live in Projector's checkpoints",
    ),
    (
        "enable.partition.eof",
        "Projector needs it to find the end of the input",
    ),
    ("auto.offset.reset", "use 'start_from'"),
];

/// librdkafka's consumer and global properties that make sense to pass through
/// (CONFIGURATION.md of librdkafka 2.12).
const KNOWN: &[&str] = &[
    "client.id",
    "metadata.broker.list",
    "message.max.bytes",
    "message.copy.max.bytes",
    "receive.message.max.bytes",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "topic.metadata.refresh.interval.ms",
    "metadata.max.age.ms",
    "topic.metadata.refresh.fast.interval.ms",
    "topic.metadata.refresh.sparse",
    "topic.metadata.propagation.max.ms",
    "topic.blacklist",
    "debug",
    "socket.timeout.ms",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.max.fails",
    "broker.address.ttl",
    "broker.address.family",
    "socket.connection.setup.timeout.ms",
    "connections.max.idle.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "statistics.interval.ms",
    "log_level",
    "log.queue",
    "log.thread.name",
    "log.connection.close",
    "api.version.request",
    "api.version.request.timeout.ms",
    "api.version.fallback.ms",
    "broker.version.fallback",
    "allow.auto.create.topics",
    "security.protocol",
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.sigalgs.list",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.crl.location",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
    "sasl.mechanisms",
    "sasl.mechanism",
    "sasl.kerberos.service.name",
    "sasl.kerberos.principal",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.scope",
    "sasl.oauthbearer.token.endpoint.url",
    "client.rack",
    "client.dns.lookup",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "auto.commit.interval.ms",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "isolation.level",
    "check.crcs",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
];

/// Reads a Kafka source's keys (the record was checked against [`KEYS`]).
pub(crate) fn source(ctx: &mut Ctx<'_>, rec: &Record<'_>, pipeline: &str) -> Option<KafkaConfig> {
    let brokers = rec.require(ctx, "brokers").and_then(|e| {
        let s = ctx.text(e.value, &e.path)?;
        if s.trim().is_empty() {
            ctx.error(
                "config.invalid_value",
                e.value,
                &e.path,
                "no brokers given".into(),
            );
            return None;
        }
        Some(s)
    });
    let topics = rec
        .require(ctx, "topics")
        .and_then(|e| match &e.value.data {
            YamlData::Sequence(items) if !items.is_empty() => {
                let mut out = Some(Vec::new());
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", e.path);
                    // A topic with its own settings: `{name, format, envelope}`
                    // (read by the pipeline, see `compile::topic_settings`).
                    let t = match &item.data {
                        YamlData::Mapping(_) => ctx.record(item, &path, TOPIC_KEYS).and_then(|r| {
                            let name = r.require(ctx, "name")?;
                            ctx.text(name.value, &name.path)
                        }),
                        _ => ctx.text(item, &path),
                    };
                    let t = t.filter(|t| {
                        let seen = out.as_ref().is_some_and(|v: &Vec<String>| v.contains(t));
                        if seen {
                            let message = format!("topic '{t}' is listed twice");
                            ctx.error("config.invalid_value", item, &path, message);
                        }
                        !seen
                    });
                    out = out.zip(t).map(|(mut v, t)| {
                        v.push(t);
                        v
                    });
                }
                out
            }
            YamlData::Sequence(_) => {
                ctx.error(
                    "config.invalid_value",
                    e.value,
                    &e.path,
                    "at least one topic is required".into(),
                );
                None
            }
            _ => ctx.text(e.value, &e.path).map(|t| vec![t]),
        });
    let group_id = match rec.get("group_id") {
        Some(e) => ctx.text(e.value, &e.path),
        None => Some(format!("projector-{pipeline}")),
    };
    let start_from = match rec.get("start_from") {
        Some(e) => ctx.choice(
            e.value,
            &e.path,
            &[
                ("earliest", StartFrom::Earliest),
                ("latest", StartFrom::Latest),
            ],
        ),
        None => Some(StartFrom::Earliest),
    };
    let partitioner = match rec.get("partitioner") {
        Some(e) => ctx.choice(e.value, &e.path, &[("murmur2", Partitioner::Murmur2)]),
        None => Some(Partitioner::Unknown),
    };
    let properties = match rec.get("properties") {
        None => Some(BTreeMap::new()),
        Some(e) => {
            let entries = ctx.entries(e.value, &e.path, true)?;
            let mut out = Some(BTreeMap::new());
            for entry in entries {
                if let Some((_, why)) = MANAGED.iter().find(|(k, _)| *k == entry.name) {
                    let message = format!("'{}' is set by Projector: {why}", entry.name);
                    ctx.error("config.invalid_value", entry.key, &entry.path, message);
                    out = None;
                    continue;
                }
                if !KNOWN.contains(&entry.name.as_str()) {
                    let name = &entry.name;
                    let message = match suggest(name, KNOWN.iter().copied()) {
                        Some(s) => {
                            format!("unknown librdkafka property '{name}' (did you mean '{s}'?)")
                        }
                        None => format!(
                            "unknown librdkafka property '{name}' (see the consumer properties in \
                             librdkafka's CONFIGURATION.md)"
                        ),
                    };
                    ctx.error("config.unknown_field", entry.key, &entry.path, message);
                    out = None;
                    continue;
                }
                let v = ctx.text(entry.value, &entry.path);
                let several = topics.as_ref().is_some_and(|t| t.len() > 1);
                if several
                    && entry.name == "partition.assignment.strategy"
                    && v.as_deref().is_some_and(|v| v != "range")
                {
                    let message = format!(
                        "'{}' may give partition N of one topic and partition N of another to \
                         different instances, but with several topics partition N of every \
                         topic is one state: only 'range' keeps them together (leave it unset)",
                        v.as_deref().unwrap_or_default()
                    );
                    ctx.error("config.invalid_value", entry.value, &entry.path, message);
                    out = None;
                    continue;
                }
                out = out.zip(v).map(|(mut m, v)| {
                    m.insert(entry.name.clone(), v);
                    m
                });
            }
            #[cfg(feature = "kafka")]
            if let Some(props) = out.as_ref().filter(|p| !p.is_empty())
                && let Err(reason) = projector_connectors::kafka::check_properties(props)
            {
                let message = format!(
                    "librdkafka, as built into Projector (TLS, SASL PLAIN, SCRAM-SHA-256/512 \
                     and OAUTHBEARER; gzip, snappy, lz4 and zstd; no GSSAPI), refuses these \
                     properties: {reason}"
                );
                ctx.error("config.unsupported", e.value, &e.path, message);
                out = None;
            }
            out
        }
    };
    Some(KafkaConfig {
        brokers: brokers?,
        topics: topics?,
        group_id: group_id?,
        start_from: start_from?,
        properties: properties?,
        partitioner: partitioner?,
        stop_at_end: false,
        with_metadata: false,
    })
}
