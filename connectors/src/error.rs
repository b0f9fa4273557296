//! The errors of sources and sinks, each with a stable code ([`Error::code`]).
//!
//! Every kind keeps what caused it (the I/O error, the Kafka client's error, the
//! engine's assignment error) as its [`std::error::Error::source`], and its message
//! says what was being done when it happened.

use crate::source::AssignmentError;

/// Errors of sources and sinks.
///
/// Non-exhaustive: the Kafka kinds exist only with the `kafka` feature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What failed, e.g. "reading events.ndjson".
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A call of the Kafka client failed (creating a client, reading metadata,
    /// assigning, producing, delivering, flushing, ...).
    #[cfg(feature = "kafka")]
    #[error("kafka: {doing}: {source}")]
    Kafka {
        /// What we were doing, e.g. "creating the consumer".
        doing: String,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// The brokers refused this client: authentication failed, or their certificate
    /// is not trusted. Retrying cannot help, so the source stops with the reason.
    #[cfg(feature = "kafka")]
    #[error(
        "kafka: {brokers} refused the connection: {reason} (check security.protocol, \
         sasl.* and ssl.* in the source's properties)"
    )]
    Refused {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// The brokers refused to create a topic.
    #[cfg(feature = "kafka")]
    #[error("kafka: creating topic '{topic}' on {brokers}: {source}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// The brokers' answer.
        source: rdkafka::types::RDKafkaErrorCode,
    },
    /// The brokers answered the metadata request of a configured topic with an error.
    #[cfg(feature = "kafka")]
    #[error("topic '{topic}' on {brokers}: {source}")]
    Topic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// The brokers' answer.
        source: rdkafka::types::RDKafkaErrorCode,
    },
    /// A configured topic the brokers do not have.
    #[error("topic '{topic}' not found on {brokers}")]
    TopicNotFound {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// A configured topic without partitions: there is nothing to read.
    #[error("topic '{topic}' has no partitions")]
    NoPartitions {
        /// The topic.
        topic: String,
    },
    /// Several topics whose partitions do not pair up: partition N of every topic is
    /// one state unit, so they must have the same partitions.
    #[error(
        "topics {} are not co-partitioned ({}): topics that feed the same views must have \
         the same number of partitions, and their producers must put each key in the same \
         partition number (the same key and partitioner), as Kafka Streams requires for joins",
        topics.iter().map(|(t, _)| format!("'{t}'")).collect::<Vec<_>>().join(", "),
        topics.iter().map(|(t, n)| format!("{t}: {n}")).collect::<Vec<_>>().join(", ")
    )]
    NotCoPartitioned {
        /// Each topic with its partition count.
        topics: Vec<(String, usize)>,
    },
    /// A consumer-group assignment strategy that may split a state unit over members.
    #[error(
        "partition.assignment.strategy '{strategy}' may give partition N of one topic and \
         partition N of another to different instances; with several topics only 'range' \
         keeps them together (leave it unset)"
    )]
    AssignmentStrategy {
        /// The strategy configured.
        strategy: String,
    },
    /// The consumer group assigned a partition that was not there when the source
    /// started (partitions were added to the topic).
    #[error(
        "kafka: partition {topic}/{partition} appeared after the start (were partitions \
         added?); restart Projector to read it"
    )]
    NewPartition {
        /// The topic.
        topic: String,
        /// The partition number.
        partition: i32,
    },
    /// A Kafka read that must end did not end in time.
    #[error("kafka: {doing} took too long")]
    TimedOut {
        /// What we were doing, e.g. "reading dead-letter topic 'x' to its end".
        doing: String,
    },
    /// The configuration asks for Kafka, and this build has no Kafka client.
    #[error("this build has no Kafka support: build projector-connectors with the `kafka` feature")]
    NoKafkaSupport,
    /// The engine's [`AssignmentListener`](crate::AssignmentListener) failed to take
    /// over or give up partitions; the message is the engine's.
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
    /// A state the connector does not expect (a bug, or the Kafka client refusing
    /// what it should not); the message says what.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Stable error code, e.g. `source.kafka`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "source.io",
            #[cfg(feature = "kafka")]
            Error::Kafka { .. } => "source.kafka",
            #[cfg(feature = "kafka")]
            Error::Refused { .. } => "source.kafka.refused",
            #[cfg(feature = "kafka")]
            Error::CreateTopic { .. } => "source.kafka.create_topic",
            #[cfg(feature = "kafka")]
            Error::Topic { .. } => "source.kafka.topic",
            Error::TopicNotFound { .. } => "source.kafka.topic_not_found",
            Error::NoPartitions { .. } => "source.kafka.no_partitions",
            Error::NewPartition { .. } => "source.kafka.new_partition",
            Error::NotCoPartitioned { .. } => "source.kafka.not_copartitioned",
            Error::AssignmentStrategy { .. } => "source.kafka.assignment_strategy",
            Error::TimedOut { .. } => "source.kafka.timeout",
            Error::NoKafkaSupport => "source.kafka.unsupported",
            Error::Assignment(_) => "source.assignment",
            Error::Internal(_) => "source.internal",
        }
    }

    /// [`Error::Kafka`]: `doing` failed with `source`.
    #[cfg(feature = "kafka")]
    pub(crate) fn kafka(doing: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            doing: doing.into(),
            source,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn errors_cross_threads() {
        // `anyhow` and the engine's threads need both.
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        send_sync::<AssignmentError>();
    }

    #[test]
    fn messages_and_codes() {
        let io = Error::Io {
            context: "reading events.ndjson".into(),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(io.to_string(), "reading events.ndjson: disk on fire");
        assert_eq!(io.code(), "source.io");
        assert!(io.source().is_some());

        let cases = [
            (
                Error::TopicNotFound {
                    topic: "bank".into(),
                    brokers: "b:9092".into(),
                },
                "topic 'bank' not found on b:9092",
                "source.kafka.topic_not_found",
            ),
            (
                Error::NoPartitions {
                    topic: "bank".into(),
                },
                "topic 'bank' has no partitions",
                "source.kafka.no_partitions",
            ),
            (
                Error::NewPartition {
                    topic: "bank".into(),
                    partition: 3,
                },
                "kafka: partition bank/3 appeared after the start (were partitions added?); \
                 restart Projector to read it",
                "source.kafka.new_partition",
            ),
            (
                Error::TimedOut {
                    doing: "reading dead-letter topic 'dl' to its end".into(),
                },
                "kafka: reading dead-letter topic 'dl' to its end took too long",
                "source.kafka.timeout",
            ),
            (
                Error::NoKafkaSupport,
                "this build has no Kafka support: build projector-connectors with the `kafka` \
                 feature",
                "source.kafka.unsupported",
            ),
            (
                Error::Internal("kafka: the consumer is closing".into()),
                "kafka: the consumer is closing",
                "source.internal",
            ),
        ];
        for (error, message, code) in cases {
            assert_eq!(error.to_string(), message);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn an_assignment_error_shows_and_keeps_the_engines_error() {
        let engine = std::io::Error::other("checkpoint store unreachable");
        let error = Error::from(AssignmentError::new(engine));
        assert_eq!(error.to_string(), "checkpoint store unreachable");
        assert_eq!(error.code(), "source.assignment");
        let cause = error.source().expect("the engine's error");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_errors_keep_the_clients_error() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        let error = Error::kafka(
            "creating the consumer",
            KafkaError::ClientCreation("x".into()),
        );
        assert_eq!(
            error.to_string(),
            "kafka: creating the consumer: Client creation error: x"
        );
        assert_eq!(error.code(), "source.kafka");
        let cause = error.source().expect("the client's error");
        assert!(cause.downcast_ref::<KafkaError>().is_some());

        let error = Error::CreateTopic {
            topic: "bank".into(),
            brokers: "b:9092".into(),
            source: RDKafkaErrorCode::TopicAuthorizationFailed,
        };
        assert_eq!(
            error.to_string(),
            format!(
                "kafka: creating topic 'bank' on b:9092: {}",
                RDKafkaErrorCode::TopicAuthorizationFailed
            )
        );
        assert_eq!(error.code(), "source.kafka.create_topic");
        let error = Error::Topic {
            topic: "bank".into(),
            brokers: "b:9092".into(),
            source: RDKafkaErrorCode::UnknownTopicOrPartition,
        };
        assert_eq!(
            error.to_string(),
            format!(
                "topic 'bank' on b:9092: {}",
                RDKafkaErrorCode::UnknownTopicOrPartition
            )
        );
        assert_eq!(error.code(), "source.kafka.topic");
    }
}
