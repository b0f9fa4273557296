//! Several instances of one pipeline on loopback, with the real broker (Tansu) and a
//! real S3 server (moto), both started by the repository's scripts: a test that cannot
//! get them fails, it never skips. Events flow from a producer thread throughout.
//!
//! - Three instances on 8 partitions with checkpoints in S3: one is killed with
//!   `kill -9` and started again, then the group scales 3 → 2 → 3. Every partition's
//!   state ends equal to the oracle, every bad record dead-lettered once; any instance
//!   answers for every partition.
//! - The zombie: an instance paused (SIGSTOP) past its session while its partitions move
//!   on and advance, then resumed: it writes no checkpoint for a partition it lost.
//! - The store away: the S3 server cut off mid-run, `/health` says degraded, then it
//!   comes back, checkpoints resume and nothing is lost.
//! - `--once` right after a `kill -9`, with the killed member still in the group,
//!   reads every partition.

mod common;

use common::cluster::*;
use common::{assert_rows, oracle, projector};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The partitions each instance owns, from their `/status` (an instance that does not
/// answer owns none).
fn ownership(ports: &[u16]) -> Vec<usize> {
    ports
        .iter()
        .map(|&p| assigned(p).map_or(0, |a| a.len()))
        .collect()
}

/// `kill -SIG pid`.
fn signal(child: &Running, sig: &str) {
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args([sig, &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {sig} {pid}");
}

#[test]
fn three_instances_on_s3_survive_kill_9_and_scaling_3_2_3() {
    let broker = Broker::start();
    let store = Store::s3();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_with_bad_records(160_000, 3_000, 31);
    let total = input.len() as u64;
    // About 45 s of events.
    let producer = stream_to(&broker, "bank-s1", 8, &input, total / 45);
    let pipeline = pipeline_on(dir.path(), &broker, "bank-s1", &store);
    let state = |i: usize| dir.path().join(format!("state-{i}"));
    let ports = [free_port(), free_port(), free_port()];
    let start = |i: usize| Running::start(&pipeline, &state(i), ports[i], 1);

    let mut instances: Vec<Option<Running>> = (0..3).map(|i| Some(start(i))).collect();
    let all_share = |owners: &[usize]| owners.iter().sum::<usize>() == 8 && !owners.contains(&0);
    assert!(
        wait_for(40, || all_share(&ownership(&ports))),
        "three instances share the 8 partitions: {:?}",
        ownership(&ports)
    );
    // Any instance answers for every partition, wherever it lives (once the new
    // owners have published them).
    let mut stderr = String::new();
    let answered = wait_for(20, || {
        let out = projector()
            .args(["query", "--url", &format!("http://127.0.0.1:{}", ports[0])])
            .arg("SELECT count(*) AS n FROM accounts")
            .output()
            .expect("projector query");
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    assert!(answered, "{stderr}");
    assert!(
        !stderr.contains("partial answer"),
        "the answer covers every partition: {stderr}"
    );
    std::thread::sleep(Duration::from_secs(2));

    // kill -9 one, start it again.
    let mut killed = instances[1].take().expect("running");
    killed.0.kill().expect("kill -9");
    killed.0.wait().expect("reap");
    instances[1] = Some(start(1));
    assert!(
        wait_for(40, || all_share(&ownership(&ports))),
        "after the kill, three share the partitions again: {:?}",
        ownership(&ports)
    );
    std::thread::sleep(Duration::from_secs(2));

    // 3 → 2.
    let mut leaving = instances[2].take().expect("running");
    assert_eq!(leaving.terminate(30), Some(0), "the third leaves cleanly");
    assert!(
        wait_for(40, || ownership(&ports[..2]).iter().sum::<usize>() == 8),
        "two instances own the 8 partitions: {:?}",
        ownership(&ports)
    );
    std::thread::sleep(Duration::from_secs(2));

    // 2 → 3.
    instances[2] = Some(start(2));
    assert!(
        wait_for(40, || all_share(&ownership(&ports))),
        "three share the partitions again: {:?}",
        ownership(&ports)
    );
    assert!(
        !producer.is_finished(),
        "the kill and the scaling happened while events flowed"
    );
    producer.join().expect("producer");
    assert!(
        wait_for(90, || newest_checkpoint_offsets(&pipeline, &state(0))
            == Some(total)),
        "the checkpoints cover the whole topic: {:?} of {total}",
        newest_checkpoint_offsets(&pipeline, &state(0))
    );
    for (i, instance) in instances.iter_mut().enumerate() {
        let code = instance.as_mut().expect("running").terminate(30);
        assert_eq!(code, Some(0), "instance {i} stops cleanly");
    }

    let exp = oracle::expected(&input);
    let (stderr, accounts, volume) = run_once(&pipeline, &state(3));
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_each_bad_record_dead_lettered_once(&store, &pipeline, &state(3), &exp);
    assert!(
        stderr.contains("resuming from checkpoint"),
        "the check run restores the instances' checkpoints from S3: {stderr}"
    );
}

/// Partition → (generation, newest epoch) in the store.
fn generations(pipeline: &Path, state: &Path) -> BTreeMap<String, (u64, u64)> {
    heads(pipeline, state)
        .into_iter()
        .map(|h| {
            let newest = h["checkpoints"]
                .as_array()
                .and_then(|c| c.last())
                .and_then(|c| c[0].as_u64())
                .unwrap_or(0);
            let partition = h["partition"].as_str().expect("partition").to_string();
            (
                partition,
                (h["generation"].as_u64().expect("generation"), newest),
            )
        })
        .collect()
}

#[test]
fn a_paused_instance_is_fenced_and_writes_nothing_for_partitions_it_lost() {
    let broker = Broker::start();
    let store = Store::s3();
    let Store::S3(server) = &store else {
        unreachable!()
    };
    // Every head write stays visible, also the ones overwritten since.
    server.keep_versions();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_with_bad_records(100_000, 2_000, 47);
    let total = input.len() as u64;
    // About 35 s of events.
    let producer = stream(&broker, "bank-z", &input, total / 35);
    let pipeline = pipeline_on(dir.path(), &broker, "bank-z", &store);
    let (state_a, state_b) = (dir.path().join("state-a"), dir.path().join("state-b"));
    let b_log = dir.path().join("b.log");
    let ports = [free_port(), free_port()];
    let mut a = Running::start(&pipeline, &state_a, ports[0], 1);
    let mut b = Running::start_logged(&pipeline, &state_b, ports[1], 1, Some(&b_log));
    assert!(
        wait_for(40, || {
            let o = ownership(&ports);
            o.iter().sum::<usize>() == 4 && !o.contains(&0)
        }),
        "A and B share the partitions: {:?}",
        ownership(&ports)
    );
    std::thread::sleep(Duration::from_secs(2));
    let b_owns = assigned(ports[1]).expect("B's status");
    let before = generations(&pipeline, &state_a);
    let paused_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();

    // B pauses past its session (2 s); A takes its partitions and moves them on.
    signal(&b, "-STOP");
    let moved_on = wait_for(40, || {
        let now = generations(&pipeline, &state_a);
        b_owns.iter().all(|p| {
            let (g0, e0) = before[p];
            now.get(p).is_some_and(|&(g, e)| g > g0 && e > e0)
        })
    });
    assert!(
        moved_on,
        "A took B's partitions {b_owns:?} over and checkpoints them"
    );

    // B wakes up with state, epochs and checkpoints in flight for partitions that are
    // no longer its.
    signal(&b, "-CONT");
    std::thread::sleep(Duration::from_secs(5));
    producer.join().expect("producer");
    assert!(
        wait_for(90, || newest_checkpoint_offsets(&pipeline, &state_a)
            == Some(total)),
        "the checkpoints cover the whole topic"
    );
    assert_eq!(a.terminate(30), Some(0), "A stops cleanly");
    assert_eq!(
        b.terminate(30),
        Some(0),
        "B, fenced and back, stops cleanly"
    );
    let b_said = std::fs::read_to_string(&b_log).unwrap_or_default();

    // Every head write of B's partitions since the pause, in order: the generation never
    // goes back (a write of the paused instance's would).
    let history = server.head_history("checkpoints", paused_at.saturating_sub(1));
    for p in &b_owns {
        let writes = history.get(p).map(Vec::as_slice).unwrap_or_default();
        assert!(
            writes.iter().any(|(g, _)| *g > before[p].0),
            "{p}: A's takeover is in the history"
        );
        for pair in writes.windows(2) {
            assert!(
                pair[1].0 >= pair[0].0,
                "{p}: a head of generation {} written after one of {} ({:?} after {:?}); \
                 B said:\n{b_said}",
                pair[1].0,
                pair[0].0,
                pair[1],
                pair[0]
            );
        }
    }
    eprintln!("B said:\n{b_said}");

    let exp = oracle::expected(&input);
    let (_, accounts, volume) = run_once(&pipeline, &dir.path().join("state-check"));
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_each_bad_record_dead_lettered_once(&store, &pipeline, &state_a, &exp);
}

#[test]
fn the_store_away_is_degraded_then_checkpoints_resume_and_nothing_is_lost() {
    let broker = Broker::start();
    let store = Store::s3_behind_proxy();
    let Store::S3Behind(_, proxy) = &store else {
        unreachable!()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_with_bad_records(80_000, 2_000, 53);
    let total = input.len() as u64;
    // About 30 s of events.
    let producer = stream(&broker, "bank-away", &input, total / 30);
    let pipeline = pipeline_on(dir.path(), &broker, "bank-away", &store);
    let state = dir.path().join("state");
    let port = free_port();
    let mut engine = Running::start(&pipeline, &state, port, 1);
    let checkpoint_epoch =
        || get_json(port, "/status").and_then(|s| s["checkpoint"]["epoch"].as_u64());
    let health = || get_json(port, "/health").and_then(|h| h["status"].as_str().map(String::from));
    assert!(
        wait_for(40, || checkpoint_epoch().is_some_and(|e| e > 0)),
        "the engine checkpoints to the store"
    );

    proxy.set_up(false);
    assert!(
        wait_for(30, || health().as_deref() == Some("degraded")),
        "/health says degraded while the store is away: {:?}",
        get_json(port, "/health")
    );
    let reason = get_json(port, "/health").expect("health")["reason"].to_string();
    assert!(reason.contains("checkpoint store"), "{reason}");
    let away_epoch = checkpoint_epoch().expect("status");
    let published = get_json(port, "/status").expect("status")["epoch"].as_u64();
    std::thread::sleep(Duration::from_secs(4));
    let status = get_json(port, "/status").expect("status");
    assert_eq!(
        status["checkpoint"]["epoch"].as_u64(),
        Some(away_epoch),
        "no checkpoint is written while the store is away"
    );
    assert!(
        status["epoch"].as_u64() > published,
        "the views are still published while the store is away"
    );

    proxy.set_up(true);
    assert!(
        wait_for(60, || health().as_deref() == Some("ok")
            && checkpoint_epoch().is_some_and(|e| e > away_epoch)),
        "checkpoints resume when the store is back: {:?}",
        get_json(port, "/health")
    );
    assert!(
        !producer.is_finished(),
        "the outage happened while events flowed"
    );
    producer.join().expect("producer");
    assert!(
        wait_for(90, || newest_checkpoint_offsets(&pipeline, &state)
            == Some(total)),
        "the checkpoints cover the whole topic"
    );
    assert_eq!(engine.terminate(30), Some(0), "the engine stops cleanly");

    let exp = oracle::expected(&input);
    let (_, accounts, volume) = run_once(&pipeline, &dir.path().join("state-check"));
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_each_bad_record_dead_lettered_once(&store, &pipeline, &state, &exp);
}

#[test]
fn once_right_after_a_kill_9_reads_every_partition() {
    let broker = Broker::start();
    let store = Store::s3();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_with_bad_records(60_000, 2_000, 59);
    let total = input.len() as u64;
    let producer = stream(&broker, "bank-once", &input, total / 20);
    let pipeline = pipeline_on(dir.path(), &broker, "bank-once", &store);
    let state = dir.path().join("state");
    let port = free_port();
    let mut engine = Running::start(&pipeline, &state, port, 1);
    assert!(
        wait_for(40, || newest_checkpoint_offsets(&pipeline, &state)
            .is_some_and(|n| n > 0)),
        "the engine checkpoints"
    );
    engine.0.kill().expect("kill -9");
    engine.0.wait().expect("reap");
    producer.join().expect("producer");

    // The killed member stays in the group until its session times out; --once does
    // not ask the group.
    let exp = oracle::expected(&input);
    let (stderr, accounts, volume) = run_once(&pipeline, &state);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_each_bad_record_dead_lettered_once(&store, &pipeline, &state, &exp);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
}
