//! The Kafka path against a real Kafka-compatible broker (Tansu, started by
//! `scripts/broker.sh` on a free loopback port; installed on first use). A broker that
//! cannot be installed or started fails these tests: they never skip.
//!
//! - Kill -9 the engine at random moments while it reads a 4-partition topic, restart
//!   it (with a different worker count), finish with `--once`: the views equal the
//!   oracle. Then re-produce a share of the events (an at-least-once producer's
//!   retries): the views do not change and the replays are counted as duplicates.
//! - A second instance, with its own state directory but the same checkpoint store
//!   (a shared directory, or S3) and consumer group, joins and leaves while events
//!   flow: partitions move over and back, and the views equal the oracle with every bad
//!   record dead-lettered once.
//! - The broker goes away: degraded, no busy loop, a clean stop.
//! - Poison pills under every `on_error` policy.
//!
//! Events flow while the engine is killed or rebalanced: a producer thread streams
//! them at a steady rate, so every interruption lands mid-stream.

mod common;

use common::cluster::*;
use common::{Rng, assert_rows, generator_records, json_lines, oracle, projector, summary};

use std::time::{Duration, Instant};

#[test]
fn kill_9_and_redelivery_on_a_4_partition_topic() {
    kill_9_and_redelivery(&Store::Local);
}

/// The same with checkpoints and dead letters in an S3 store.
#[test]
fn kill_9_and_redelivery_with_checkpoints_in_s3() {
    kill_9_and_redelivery(&Store::s3());
}

fn kill_9_and_redelivery(store: &Store) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, keys, seed) = (300_000, 2_000, 5);
    let input = events_with_bad_records(events, keys, seed);
    let total = input.len() as u64;
    // About 40 s of events, while the engine is killed and restarted.
    let producer = stream(&broker, "bank-t1", &input, total / 40);
    let pipeline = pipeline_on(dir.path(), &broker, "bank-t1", store);
    let state = dir.path().join("state");

    let mut rng = Rng(0x9e37_79b9);
    let mut mid_stream = 0;
    for _ in 0..10 {
        let workers = 1 + rng.below(3);
        let mut child = Running::start(&pipeline, &state, free_port(), workers);
        // Joining the group takes about 3 s; then it reads, checkpointing every 50 ms.
        std::thread::sleep(Duration::from_millis(2_500 + rng.below(3_000)));
        child.0.kill().expect("kill -9");
        child.0.wait().expect("reap");
        if newest_checkpoint_offsets(&pipeline, &state).is_some_and(|n| n > 0 && n < total) {
            mid_stream += 1;
        }
    }
    assert!(
        mid_stream >= 2,
        "the kills must interrupt the topic, not only idle runs ({mid_stream} did)"
    );
    producer.join().expect("producer");

    let exp = oracle::expected(&input);
    let (_, accounts, volume) = run_once(&pipeline, &state);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_each_bad_record_dead_lettered_once(store, &pipeline, &state, &exp);

    // Redelivery: the first 30,000 events are delivered again (same seed: the same bytes, keys
    // and versions). Nothing changes but the duplicate count.
    produce(&broker, "bank-t1", 30_000, keys, seed);
    let (stderr, accounts2, volume2) = run_once(&pipeline, &state);
    assert_eq!(
        accounts2, accounts,
        "redelivered events changed the accounts view"
    );
    assert_eq!(
        volume2, volume,
        "redelivered events changed the aggregate view"
    );
    let counts = summary(&stderr);
    assert_eq!(
        (counts.read, counts.applied, counts.duplicates),
        (30_000, 0, 30_000),
        "{stderr}"
    );
}

/// Instance A reads a 4-partition topic; B joins the group with its own state
/// directory and the same checkpoint store while events flow, takes some partitions
/// over, and leaves (SIGTERM), and A takes them back. Every handover goes through a
/// checkpoint, so the views equal the oracle and every bad record is dead-lettered once.
#[test]
fn a_second_instance_joins_and_leaves_with_a_shared_directory_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_second_instance_joins_and_leaves(&Store::file(&dir.path().join("store")));
}

/// The same with the store in S3.
#[test]
fn a_second_instance_joins_and_leaves_with_an_s3_store() {
    a_second_instance_joins_and_leaves(&Store::s3());
}

fn a_second_instance_joins_and_leaves(store: &Store) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_with_bad_records(120_000, 2_000, 13);
    let total = input.len() as u64;
    // About 30 s of events.
    let producer = stream(&broker, "bank-t3", &input, total / 30);
    let pipeline = pipeline_on(dir.path(), &broker, "bank-t3", store);
    let (state, state_b) = (dir.path().join("state-a"), dir.path().join("state-b"));

    let (port_a, port_b) = (free_port(), free_port());
    let mut a = Running::start(&pipeline, &state, port_a, 1);
    let a_has_all = || assigned(port_a).is_some_and(|p| p.len() == 4);
    assert!(wait_for(30, a_has_all), "A owns the 4 partitions");
    std::thread::sleep(Duration::from_secs(3));

    let mut b = Running::start(&pipeline, &state_b, port_b, 2);
    let shared = wait_for(30, || {
        let (pa, pb) = (assigned(port_a), assigned(port_b));
        matches!((pa, pb), (Some(pa), Some(pb)) if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4)
    });
    assert!(shared, "A and B share the partitions after B joined");
    // Cooperative rebalancing: the partitions A kept were not revoked and restored.
    let a_status = get_json(port_a, "/status").expect("A's status");
    for p in a_status["partitions"].as_array().expect("partitions") {
        if p["assigned"] == true {
            assert_eq!(p["assignments"], 1, "A kept {p} through B's join");
        }
    }
    let read = |port| get_json(port, "/status").and_then(|s| s["events"]["read"].as_u64());
    let b_read_before = read(port_b).unwrap_or(0);
    assert!(
        wait_for(20, || read(port_b).is_some_and(|n| n > b_read_before)),
        "B reads its partitions while events flow"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.terminate(30), Some(0), "B leaves cleanly");
    assert!(wait_for(30, a_has_all), "A owns the 4 partitions again");
    assert!(
        !producer.is_finished(),
        "the handovers happened while events flowed (the producer finished first)"
    );
    producer.join().expect("producer");
    // Let A catch up, then stop it.
    assert!(
        wait_for(60, || newest_checkpoint_offsets(&pipeline, &state)
            == Some(total)),
        "A checkpoints the whole topic"
    );
    // /status per partition: the end as the fetches saw it, no lag, a checkpoint.
    let caught_up = wait_for(10, || {
        let Some(status) = get_json(port_a, "/status") else {
            return false;
        };
        let parts = status["partitions"].as_array().cloned().unwrap_or_default();
        let ends: u64 = parts
            .iter()
            .filter_map(|p| p["high_watermark"].as_u64())
            .sum();
        ends == total
            && parts.iter().all(|p| {
                p["lag"] == 0
                    && p["checkpoint_epoch"].as_u64() > Some(0)
                    && p["checkpoint_age_ms"].is_u64()
            })
    });
    assert!(
        caught_up,
        "A reports each partition's end, zero lag and its checkpoint"
    );
    assert_eq!(a.terminate(30), Some(0), "A stops cleanly");
    // Leaving, A committed its final checkpoint's offsets to the group (for lag tools).
    assert_eq!(
        committed_offsets(&broker, "bank-accounts", "bank-t3"),
        total,
        "the group's committed offsets cover the whole topic"
    );

    let exp = oracle::expected(&input);
    let (stderr, accounts, volume) = run_once(&pipeline, &state);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_each_bad_record_dead_lettered_once(store, &pipeline, &state, &exp);
    assert_eq!(
        summary(&stderr).read,
        0,
        "nothing was left to read: {stderr}"
    );
}

/// Backpressure: with one worker doing far more per event than the ingest thread
/// (extra aggregate views), the worker's channel fills and the ingest thread stops
/// reading the source (counted in `/status`) while librdkafka's prefetch stays within
/// its bound; stopping and going on loses and repeats nothing. Stopped mid-stream, the
/// engine commits its final checkpoint's offsets to the group as it leaves.
#[test]
fn backpressure_stops_reading_and_loses_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, keys, seed) = (60_000, 3_000, 17);
    produce(&broker, "bank-bp", events, keys, seed);
    let pipeline = pipeline(dir.path(), &broker, "bank-bp");
    let mut text = std::fs::read_to_string(&pipeline).expect("pipeline");
    for i in 0..12 {
        text.push_str(&format!(
            "  - name: heavy_{i}\n    aggregate:\n      group_by: {{ k: \"aggregateId || '-{i}'\" }}\n      \
             columns: {{ n: \"count(*)\", s: \"sum(payload.amount * {i} + version)\", \
             m: \"max(payload.amount - {i})\" }}\n"
        ));
    }
    std::fs::write(&pipeline, text).expect("write pipeline");
    let state = dir.path().join("state");
    let port = free_port();
    let mut run = Running::start(&pipeline, &state, port, 1);
    let status = || get_json(port, "/status");
    let applied = |s: &serde_json::Value| s["events"]["applied"].as_u64().unwrap_or(0);
    let behind = wait_for(120, || {
        status().is_some_and(|s| s["backpressure"]["pauses"].as_u64() > Some(0) && applied(&s) > 0)
    });
    assert!(
        behind,
        "the ingest thread stopped reading while the worker was behind: {:?}",
        status()
    );
    // Stop mid-stream: leaving the group checkpoints and commits where it stopped.
    assert!(
        applied(&status().expect("status")) < events,
        "still mid-stream"
    );
    assert_eq!(run.terminate(30), Some(0));
    let newest = newest_checkpoint_offsets(&pipeline, &state).expect("a checkpoint");
    assert!(newest < events, "stopped mid-stream ({newest} of {events})");
    assert_eq!(
        committed_offsets(&broker, "bank-accounts", "bank-bp"),
        newest,
        "the final checkpoint's offsets are committed to the group on the way out"
    );

    let exp = oracle::expected(&generator_records(events, keys, seed));
    let (_, accounts, volume) = run_once(&pipeline, &state);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
}

/// Poison pills through Kafka, under each `on_error` policy. One partition, no blank
/// lines, so a record's Kafka offset is its line number in the produced file.
#[test]
fn poison_pills_follow_each_policy() {
    poison_pills(&Store::Local);
}

/// The same with each policy's checkpoints (and dead letters) in a shared directory.
#[test]
fn poison_pills_follow_each_policy_with_a_directory_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    poison_pills(&Store::file(dir.path()));
}

/// The same with each policy's checkpoints (and dead letters) in S3.
#[test]
fn poison_pills_follow_each_policy_with_an_s3_store() {
    poison_pills(&Store::s3());
}

fn poison_pills(store: &Store) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad: [&[u8]; 5] = [
        br#"{"eventType":"MoneyDeposited","aggregateId":"#,
        b"[1,2]",
        br#"{"eventType":"AccountOpened","version":1,"payload":{"owner":"nobody"}}"#,
        br#"{"eventType":"MoneyDeposited","aggregateId":"acc-x","version":1,"payload":{"amount":"lots"}}"#,
        b"{\"eventType\":\"\xff\xfe\",\"aggregateId\":\"acc-y\",\"version\":1}",
    ];
    let mut input = Vec::new();
    for (i, (_, raw)) in generator_records(2_000, 50, 9).into_iter().enumerate() {
        input.extend_from_slice(&raw);
        input.push(b'\n');
        if i % 400 == 199 {
            input.extend_from_slice(bad[(i / 400) % bad.len()]);
            input.push(b'\n');
        }
    }
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, &input).expect("write events");
    let out = projector()
        .args([
            "produce",
            "poison",
            "--partitions",
            "1",
            "--brokers",
            &broker.address,
        ])
        .arg("--from-file")
        .arg(&file)
        .output()
        .expect("produce");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let records = common::split_records(&input);
    let exp = oracle::expected(&records);
    assert_eq!(
        exp.bad.len(),
        5,
        "every kind of poison pill is in the topic once"
    );
    let base = pipeline_on(dir.path(), &broker, "poison", store);
    let text = std::fs::read_to_string(&base).expect("pipeline");
    for policy in ["dead_letter", "skip", "fail"] {
        let path = dir.path().join(format!("{policy}.yaml"));
        std::fs::write(
            &path,
            text.replace("on_error: dead_letter", &format!("on_error: {policy}"))
                .replace(&store.yaml(), &store.yaml_for(policy)),
        )
        .expect("write pipeline");
        let state = dir.path().join(format!("state-{policy}"));
        if policy == "fail" {
            let out = projector()
                .arg("run")
                .arg(&path)
                .args(["--once", "--quiet"])
                .arg("--state-dir")
                .arg(&state)
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            let first = exp.bad.iter().map(|b| b.offset).min().expect("bad records");
            assert!(
                stderr.contains(&format!("poison/0 offset {first}:")),
                "{stderr}"
            );
            continue;
        }
        let (stderr, accounts, volume) = run_once(&path, &state);
        assert_rows("accounts", &accounts, &exp.accounts_json());
        assert_rows("volume_by_type", &volume, &exp.volume_json());
        let counts = summary(&stderr);
        let dlq = store.dead_letter_file(&path, &state);
        if policy == "dead_letter" {
            assert_eq!(counts.dead_letters, 5, "{stderr}");
            common::assert_dead_letters(&dlq, &exp.bad, Some("poison/0"));
        } else {
            assert_eq!((counts.skipped, counts.dead_letters), (5, 0), "{stderr}");
            assert!(
                std::fs::read(&dlq).map_or(true, |b| b.is_empty()),
                "skip writes no dead letters"
            );
        }
    }
}

/// The broker goes away: the engine keeps running without spinning, `/health` says
/// degraded. The broker comes back on the same port, empty (memory storage), and the
/// topic is produced again, longer: the engine rejoins, resumes each partition at its
/// checkpoint, and its views equal the oracle of the longer topic. It still stops
/// cleanly.
#[test]
fn broker_away_is_degraded_then_it_returns_and_the_engine_resumes() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    produce(&broker, "bank-t4", 5_000, 500, 4);
    let pipeline = pipeline(dir.path(), &broker, "bank-t4");
    let port = free_port();
    let state = dir.path().join("state");
    let mut child = Running::start(&pipeline, &state, port, 1);
    let pid = child.0.id();
    let read_all = wait_for(30, || {
        get_json(port, "/status").is_some_and(|s| s["events"]["read"] == 5_000)
    });
    assert!(read_all, "the engine read the topic");
    // Idle after the input: a checkpoint still follows within the interval.
    let checkpointed = wait_for(10, || {
        get_json(port, "/status").is_some_and(|s| s["checkpoint"]["epoch"].as_u64() > Some(0))
    });
    assert!(
        checkpointed,
        "a checkpoint was taken while the input was idle"
    );
    assert_eq!(get_json(port, "/health").expect("health")["status"], "ok");

    let port_of_broker = broker.port().to_string();
    drop(broker);
    let degraded = wait_for(30, || {
        get_json(port, "/health").is_some_and(|h| h["status"] == "degraded")
    });
    assert!(
        degraded,
        "/health reports degraded while no broker is reachable"
    );
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 60,
        "no busy loop while the broker is away: {used} ticks in 2 s"
    );
    let running = child.0.try_wait().expect("try_wait").is_none();
    assert!(running, "the engine keeps running");

    // The broker returns empty; the topic comes back with 3,000 more events (the same
    // seed: the first 5,000 are the same records at the same offsets).
    let broker = Broker::start_on(Some(&port_of_broker));
    produce(&broker, "bank-t4", 8_000, 500, 4);
    let back = wait_for(60, || {
        get_json(port, "/status").is_some_and(|s| {
            s["state"] == "running"
                && s["partitions"].as_array().is_some_and(|p| {
                    p.iter()
                        .filter_map(|p| p["published_offset"].as_u64())
                        .sum::<u64>()
                        == 8_000
                })
        })
    });
    assert!(
        back,
        "the engine rejoins and reads the new events: {:?}",
        get_json(port, "/status")
    );
    assert_eq!(get_json(port, "/health").expect("health")["status"], "ok");

    assert_eq!(
        child.terminate(20),
        Some(0),
        "SIGTERM stops the engine, exit 0"
    );
    let exp = oracle::expected(&generator_records(8_000, 500, 4));
    let (_, accounts, volume) = run_once(&pipeline, &state);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
}

/// Kafka metadata as columns (`$kafka.key` as the envelope key, a header, the
/// partition, offset and timestamp), and dead letters to a topic: each bad record's
/// bytes as the value, its key, and headers saying what was wrong and where it was.
#[test]
fn kafka_metadata_becomes_columns_and_dead_letters_go_to_a_topic() {
    use projector_connectors::kafka::{EventProducer, dead_letter_headers as h, ensure_topic};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};

    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let props = std::collections::BTreeMap::new();
    ensure_topic(&broker.address, &props, "meta", 2).expect("topic");
    let producer = EventProducer::new(&broker.address, &props, "meta").expect("producer");
    // key → (trace id of its last event); bad records: (key, bytes).
    let mut last_trace = std::collections::BTreeMap::new();
    let mut bad = Vec::new();
    for (i, (_, raw)) in generator_records(400, 40, 21).into_iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
        // The envelope key comes from the Kafka key only: drop it from the JSON.
        let key = v["aggregateId"].as_str().expect("key").to_string();
        let trace = format!("t-{i}");
        producer
            .send_with(
                Some(key.as_bytes()),
                &raw,
                &[("trace-id", trace.as_bytes())],
            )
            .expect("send");
        last_trace.insert(key, trace);
        if i % 100 == 50 {
            let (key, raw) = (format!("bad-{i}"), format!("{{\"eventType\":{i}"));
            producer
                .send_with(Some(key.as_bytes()), raw.as_bytes(), &[])
                .expect("send");
            bad.push((key, raw));
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let yaml = format!(
        r#"name: meta
source:
  type: kafka
  brokers: "{}"
  topics: [meta]
  properties: {{ session.timeout.ms: "2000", heartbeat.interval.ms: "500" }}
dead_letter: {{ topic: meta-dlq }}
envelope: {{ id: eventId, type: eventType, key: $kafka.key, version: version }}
views:
  - name: traces
    fold:
      key_column: account_id
      columns: {{ last_trace: string, part: int64, last_offset: int64, produced_ms: int64 }}
      on:
        "*":
          set:
            last_trace: '$kafka.headers."trace-id"'
            part: $kafka.partition
            last_offset: $kafka.offset
            produced_ms: $kafka.timestamp
"#,
        broker.address
    );
    let pipeline = dir.path().join("meta.yaml");
    std::fs::write(&pipeline, yaml).expect("write pipeline");
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let out = projector()
        .arg("run")
        .arg(&pipeline)
        .args(["--once", "--format", "json", "--sql"])
        .arg("SELECT * FROM traces ORDER BY account_id")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = json_lines(&out.stdout).pop().expect("one result");
    assert_eq!(
        rows.len(),
        last_trace.len(),
        "one row per account: {stderr}"
    );
    for row in &rows {
        let key = row["account_id"].as_str().expect("account_id");
        assert_eq!(
            row["last_trace"].as_str(),
            last_trace.get(key).map(String::as_str)
        );
        assert!(matches!(row["part"].as_i64(), Some(0 | 1)), "{row}");
        assert!(row["last_offset"].as_i64().is_some_and(|o| o >= 0), "{row}");
        let ts = row["produced_ms"].as_i64().expect("timestamp");
        assert!((started_ms - 600_000..=started_ms).contains(&ts), "{row}");
    }
    assert!(
        !dir.path().join("state/dead-letters.ndjson").exists(),
        "letters go to the topic, not the file"
    );

    // The dead-letter topic: exactly the bad records, keyed, with their story.
    let read_letters = || {
        let consumer: BaseConsumer =
            projector_connectors::kafka::client_config(&broker.address, &props)
                .set("group.id", "dlq-check")
                .set("auto.offset.reset", "earliest")
                .create()
                .expect("consumer");
        // Assigned, not subscribed: joining a new group takes Tansu long.
        let metadata = consumer
            .fetch_metadata(Some("meta-dlq"), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset("meta-dlq", p.id(), rdkafka::Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut letters = Vec::new();
        // Read until 3 s pass without a message.
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_secs(3) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            last = Instant::now();
            let mut headers = std::collections::BTreeMap::new();
            for hd in m.headers().expect("headers").iter() {
                let value = String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned();
                headers.insert(hd.key.to_string(), value);
            }
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let raw = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            letters.push((key, raw, headers));
        }
        letters.sort();
        letters
    };
    let letters = read_letters();
    bad.sort();
    assert_eq!(
        letters
            .iter()
            .map(|(k, r, _)| (k.clone(), r.clone()))
            .collect::<Vec<_>>(),
        bad,
        "the dead-letter topic holds exactly the bad records, with their keys"
    );
    for (_, _, headers) in &letters {
        assert_eq!(headers[h::CODE], "decode.invalid_json", "{headers:?}");
        assert!(!headers[h::MESSAGE].is_empty());
        assert_eq!(headers[h::TOPIC], "meta");
        assert_eq!(
            headers[h::SOURCE],
            format!("meta/{}", headers[h::PARTITION]),
            "{headers:?}"
        );
        assert!(headers[h::OFFSET].parse::<u64>().is_ok(), "{headers:?}");
    }

    // Replayed from scratch (checkpoints gone), the bad records are found bad again,
    // but their letters are in the topic already: none is produced twice.
    std::fs::remove_dir_all(dir.path().join("state/checkpoints")).expect("remove checkpoints");
    let again = projector()
        .arg("run")
        .arg(&pipeline)
        .args(["--once", "--quiet"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        read_letters(),
        letters,
        "the replay produced no letter twice"
    );
}

/// `projector bench` on a Kafka pipeline, as a user runs it: it fills a fresh topic,
/// reads it with the bare consumer and with the pipeline in each run, and reports the
/// ratio. The views it measured are right: its kept checkpoint, restored by `run --once`
/// against the benchmark's topic, equals the oracle of the events it produced.
#[test]
fn bench_compares_a_kafka_pipeline_with_the_bare_consumer() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let events = 20_000u64;
    let pipeline_path = pipeline(dir.path(), &broker, "not-read-by-bench");
    let report_path = dir.path().join("report.json");
    let state = dir.path().join("state");
    let out = projector()
        .arg("bench")
        .arg(&pipeline_path)
        .args(["--events", &events.to_string(), "--runs", "2", "--quiet"])
        .arg("--json")
        .arg(&report_path)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("projector bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    for section in ["throughput", "kafka", "bare rdkafka consumer", "views"] {
        assert!(table.contains(section), "no {section} in\n{table}");
    }

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("the JSON report"))
            .expect("the report is JSON");
    let num = |v: &serde_json::Value, path: &str| {
        v.pointer(path)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
    };
    assert_eq!(report["source"], "kafka");
    assert_eq!(report["events"], events);
    assert!(report["freshness"].is_null(), "no freshness phase on Kafka");
    let kafka = &report["kafka"];
    assert_eq!(kafka["partitions"], 4);
    let bare = kafka["bare_runs"].as_array().expect("bare runs");
    let runs = report["throughput"]["runs"].as_array().expect("runs");
    assert_eq!((bare.len(), runs.len()), (2, 2));
    for (b, r) in bare.iter().zip(runs) {
        assert_eq!(
            b["messages"], events,
            "the bare consumer reads every message"
        );
        assert_eq!(r["events"], events, "the pipeline reads every event");
        assert!(num(b, "/events_per_s") > 0.0 && num(r, "/events_per_s") > 0.0);
    }
    let ratio =
        num(&report, "/throughput/median_events_per_s") / num(kafka, "/bare_median_events_per_s");
    assert!((num(kafka, "/ratio") - ratio).abs() < 1e-9 * ratio.max(1.0));

    let topic = kafka["topic"].as_str().expect("topic");
    let (keys, seed) = (
        kafka["keys"].as_u64().expect("keys"),
        kafka["seed"].as_u64().expect("seed"),
    );
    let restored = pipeline(dir.path(), &broker, topic);
    let (_, accounts, volume) = run_once(&restored, &state);
    let exp = oracle::expected(&generator_records(events, keys, seed));
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
}
