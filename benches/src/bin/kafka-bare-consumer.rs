//! The baseline for Projector's Kafka throughput: a bare rdkafka consumer that reads a
//! topic from the beginning to the end it has when the fetches reach it, touching each
//! message's bytes and doing nothing else.
//!
//! ```text
//! kafka-bare-consumer BROKERS TOPIC [--group | --split]
//! ```
//!
//! `--split` reads each partition from its own queue (`split_partition_queue`, polled
//! in turn without waiting, sleeping 2 ms when all are empty), the way Projector's
//! source does, to tell the cost of that from the cost of the engine.
//!
//! Without `--group` it assigns every partition itself (no group join); with it, it
//! subscribes as a member of a fresh consumer group, as `projector run` does, through
//! the same function `projector bench` compares Kafka pipelines with
//! (`projector_benches::baseline::bare_read`). It prints one JSON line: messages,
//! bytes, seconds until the first message, seconds in all, and the rate from the
//! first message on.

use projector_benches::baseline::Tally;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(brokers), Some(topic)) = (args.first(), args.get(1)) else {
        eprintln!("usage: kafka-bare-consumer BROKERS TOPIC [--group]");
        std::process::exit(2);
    };
    let group = args.iter().any(|a| a == "--group");
    let split = args.iter().any(|a| a == "--split");
    let started = Instant::now();
    let group_id = format!("bare-{}", std::process::id());
    let mut config = rdkafka::ClientConfig::new();
    for kv in args.iter().filter_map(|a| a.strip_prefix("--set=")) {
        if let Some((k, v)) = kv.split_once('=') {
            config.set(k, v);
        }
    }
    let consumer: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", &group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap_or_else(|e| fail(&format!("creating the consumer: {e}"))),
    );
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| fail(&format!("reading metadata: {e}")));
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        fail(&format!("topic '{topic}' has no partitions on {brokers}"));
    }
    if group {
        let read = projector_benches::baseline::bare_read(
            brokers,
            // As the assigned modes (and the shipped Kafka pipeline): Tansu answers a
            // join in about half the session timeout, 23 s with librdkafka's 45 s.
            &[("session.timeout.ms", "6000")]
                .into_iter()
                .chain(
                    args.iter()
                        .filter_map(|a| a.strip_prefix("--set=")?.split_once('=')),
                )
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            topic,
            &group_id,
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| fail(&e.to_string()));
        println!(
            "{{\"messages\":{},\"bytes\":{},\"first_message_s\":{:.3},\"total_s\":{:.3},\"messages_per_s_from_first\":{:.0},\"checksum\":{}}}",
            read.messages,
            read.bytes,
            read.first_message_s,
            read.first_message_s + read.reading_s,
            read.messages_per_s(),
            read.checksum
        );
        return;
    }
    let mut queues = Vec::new();
    {
        let mut tpl = TopicPartitionList::new();
        if split {
            for p in &partitions {
                let q = consumer
                    .split_partition_queue(topic, *p)
                    .unwrap_or_else(|| fail("split_partition_queue"));
                queues.push((*p, q));
            }
        }
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .unwrap_or_else(|e| fail(&format!("assignment: {e}")));
        }
        consumer
            .assign(&tpl)
            .unwrap_or_else(|e| fail(&format!("assigning: {e}")));
    }
    let mut tally = Tally::default();
    let mut ended = BTreeSet::new();
    while split && ended.len() < partitions.len() {
        let _ = consumer.poll(Duration::ZERO);
        let mut got = false;
        for (p, q) in &queues {
            for _ in 0..256 {
                match q.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => {
                        got = true;
                        tally.count(m.payload().unwrap_or_default());
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        ended.insert(*p);
                        break;
                    }
                    Some(Err(e)) => {
                        eprintln!("kafka: {e}");
                        break;
                    }
                }
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    while !split && ended.len() < partitions.len() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => tally.count(m.payload().unwrap_or_default()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => eprintln!("kafka: {e}"),
        }
    }
    let Tally {
        messages,
        bytes,
        checksum,
        first,
    } = tally;
    let total = started.elapsed().as_secs_f64();
    let first = first.map_or(total, |f| f.duration_since(started).as_secs_f64());
    let reading = (total - first).max(1e-9);
    println!(
        "{{\"messages\":{messages},\"bytes\":{bytes},\"first_message_s\":{first:.3},\"total_s\":{total:.3},\"messages_per_s_from_first\":{:.0},\"checksum\":{checksum}}}",
        messages as f64 / reading
    );
}

fn fail(why: &str) -> ! {
    eprintln!("kafka-bare-consumer: {why}");
    std::process::exit(1);
}
