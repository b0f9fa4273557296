//! The `source: {type: kafka}` configuration, and the one place every Kafka client
//! of the project is configured ([`client_config`]).
//!
//! The configuration types are plain data, present without the `kafka` feature too:
//! the engine's config parser builds them either way.

use std::collections::BTreeMap;
#[cfg(feature = "kafka")]
use std::time::Duration;

/// Where to start a partition that has no checkpointed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest retained message (default).
    #[default]
    Earliest,
    /// Only messages produced after the start.
    Latest,
}

/// How the producers of a topic chose each record's partition from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// Not declared: a record with any key may be in any partition.
    #[default]
    Unknown,
    /// Kafka's default for keyed records: murmur2 of the key's bytes, made positive,
    /// modulo the partition count (the Java clients' default, librdkafka's
    /// `murmur2_random`).
    Murmur2,
}

/// `source: {type: kafka, ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topics to read; every partition of each is a source partition.
    pub topics: Vec<String>,
    /// The consumer group id.
    pub group_id: String,
    /// Where partitions without a checkpoint start.
    pub start_from: StartFrom,
    /// Passthrough librdkafka settings (checked against the known keys by the config).
    pub properties: BTreeMap<String, String>,
    /// How the topics' producers partition by key (`partitioner:`): when known, a
    /// query for one key asks only the instance that owns the key's partition.
    pub partitioner: Partitioner,
    /// Stop when every partition has been read to its end (`--once`); set by the engine.
    pub stop_at_end: bool,
    /// Fill [`RawBatch::meta`](crate::RawBatch::meta) (key, timestamp, headers); set by
    /// the engine when the pipeline reads `$kafka.*` fields or dead-letters to a topic.
    pub with_metadata: bool,
}

/// How long one metadata request may take before the source reports the broker as
/// unreachable.
#[cfg(feature = "kafka")]
pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds every Kafka client of the project, so defaults live in one place.
#[cfg(feature = "kafka")]
pub fn client_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
) -> rdkafka::config::ClientConfig {
    let mut c = rdkafka::config::ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// Asks librdkafka, as built into this binary, whether it can honour `properties`:
/// it makes a client from them (which opens no connection) and returns librdkafka's
/// own reason when it refuses, e.g. a SASL mechanism this build has no provider for
/// (GSSAPI needs libsasl2, which is not built in), an unknown `security.protocol`, or a
/// certificate file that cannot be read.
#[cfg(feature = "kafka")]
pub fn check_properties(properties: &BTreeMap<String, String>) -> Result<(), String> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::error::KafkaError;
    let mut c = rdkafka::config::ClientConfig::new();
    for (k, v) in properties {
        c.set(k, v);
    }
    // No bootstrap servers: librdkafka starts no broker thread, so nothing connects.
    c.set("group.id", "projector-validate");
    match c.create::<BaseConsumer>() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientCreation(reason)) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(all(test, feature = "kafka"))]
mod tests {
    use super::*;

    #[test]
    fn client_config_sets_the_brokers_and_passes_properties_through() {
        let properties = BTreeMap::from([("client.id".to_string(), "p1".to_string())]);
        let c = client_config("b1:9092,b2:9092", &properties);
        assert_eq!(c.get("bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(c.get("client.id"), Some("p1"));
    }

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn this_build_has_tls_scram_oauthbearer_and_every_codec() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] {
            let p = props(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ]);
            assert_eq!(check_properties(&p), Ok(()), "{mechanism}");
        }
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            let p = props(&[("compression.codec", codec)]);
            assert_eq!(check_properties(&p), Ok(()), "{codec}");
        }
    }

    #[test]
    fn what_this_build_cannot_honour_is_refused_with_librdkafkas_reason() {
        let gssapi = props(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "GSSAPI"),
        ]);
        let err = check_properties(&gssapi).unwrap_err();
        assert!(err.contains("GSSAPI"), "{err}");
        let missing_ca = props(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/ca.pem"),
        ]);
        let err = check_properties(&missing_ca).unwrap_err();
        assert!(err.contains("ssl.ca.location"), "{err}");
        let protocol = props(&[("security.protocol", "TLS")]);
        assert!(check_properties(&protocol).is_err());
    }
}
