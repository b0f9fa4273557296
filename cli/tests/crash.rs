//! Crash exactness on a replayable source: kill -9 the engine at random moments (also
//! during checkpoint writes: checkpoints every 50 ms), restart it, each time with a
//! different worker count, then finish with `--once`. The views must equal the oracle
//! row for row, and the dead letters must hold every bad record exactly once: every
//! event counted once, whatever the crashes. With the checkpoints in the state
//! directory, in a directory store, and in S3 (`scripts/s3.sh`).

mod common;

use common::cluster::{Store, heads};
use common::oracle;
use common::{
    Rng, assert_dead_letters, assert_rows, checkpoint_dirs, file_pipeline, generator_records,
    json_lines, manifest, mixed_input, projector, split_records,
};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const ACCOUNTS_SQL: &str = "SELECT * FROM accounts ORDER BY account_id";
const VOLUME_SQL: &str = "SELECT * FROM volume_by_type ORDER BY event_type";

/// The next offsets recorded in every checkpoint manifest on disk.
fn checkpointed_offsets(state: &Path) -> Vec<u64> {
    checkpoint_dirs(state)
        .iter()
        .filter_map(|d| manifest(d)?["partitions"][0]["next_offset"].as_u64())
        .collect()
}

#[test]
fn kill_9_at_random_moments_then_views_equal_the_oracle() {
    kill_9_at_random_moments(&Store::Local);
}

/// The same with the checkpoints and dead letters in a directory store.
#[test]
fn kill_9_at_random_moments_with_a_directory_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    kill_9_at_random_moments(&Store::file(dir.path()));
}

/// The same with the checkpoints and dead letters in S3.
#[test]
fn kill_9_at_random_moments_with_an_s3_store() {
    kill_9_at_random_moments(&Store::s3());
}

fn kill_9_at_random_moments(store: &Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = Vec::new();
    for (i, (_, raw)) in generator_records(300_000, 5_000, 11)
        .into_iter()
        .enumerate()
    {
        input.extend_from_slice(&raw);
        input.push(b'\n');
        // Bad records all along, so that kills land between a dead letter and the next
        // checkpoint: a replay must not dead-letter them twice.
        if i % 1000 == 999 {
            input.extend_from_slice(format!("{{\"truncated\": {i}\n").as_bytes());
        }
    }
    // Bad records of every kind, duplicates and replays, after the generated events.
    input.extend_from_slice(&mixed_input(false));
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    let records = split_records(&input);
    let total_lines = records.last().expect("records").0 + 1;

    let pipeline = file_pipeline("events.ndjson", "dead_letter")
        + "publish_interval: 20ms\ncheckpoint:\n  interval: 50ms\n"
        + &store.yaml();
    let pipeline_path = dir.path().join("bank.yaml");
    std::fs::write(&pipeline_path, pipeline).expect("write pipeline");
    let state = dir.path().join("state");

    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed);
    let mut resumed_mid_stream = 0;
    for round in 0..12 {
        let workers = 1 + rng.below(3);
        let mut child = projector()
            .current_dir(dir.path())
            .args(["run", "bank.yaml", "--quiet", "--http", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(&state)
            .args(["--workers", &workers.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start projector");
        // Early kills land in restore and the first checkpoints; later ones mid-stream.
        let ms = 20 + rng.below(if round < 3 { 150 } else { 700 });
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let offsets: Vec<u64> = match store {
            Store::Local => checkpointed_offsets(&state),
            _ => heads(&pipeline_path, &state)
                .iter()
                .filter_map(|h| h["next_offset"].as_u64())
                .collect(),
        };
        if offsets.iter().any(|o| *o > 0 && *o < total_lines) {
            resumed_mid_stream += 1;
        }
    }
    assert!(
        resumed_mid_stream >= 3,
        "the kills must interrupt the input, not only idle runs ({resumed_mid_stream} did)"
    );

    let out = projector()
        .current_dir(dir.path())
        .args(["run", "bank.yaml", "--once", "--quiet", "--format", "json"])
        .arg("--state-dir")
        .arg(&state)
        .args(["--sql", ACCOUNTS_SQL, "--sql", VOLUME_SQL])
        .output()
        .expect("final run");
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut results = json_lines(&out.stdout);
    assert_eq!(results.len(), 2);
    let volume = results.pop().expect("volume");
    let accounts = results.pop().expect("accounts");

    let exp = oracle::expected(&records);
    assert!(
        exp.bad.len() > 30 && exp.duplicates > 0,
        "the input exercises bad records and duplicates"
    );
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
    assert_dead_letters(
        &store.dead_letter_file(&pipeline_path, &state),
        &exp.bad,
        None,
    );
}

#[test]
fn a_damaged_newest_checkpoint_is_detected_and_the_previous_one_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = Vec::new();
    for (_, raw) in generator_records(20_000, 500, 3) {
        input.extend_from_slice(&raw);
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    std::fs::write(
        dir.path().join("bank.yaml"),
        file_pipeline("events.ndjson", "dead_letter"),
    )
    .expect("write pipeline");
    let state = dir.path().join("state");
    let run = || {
        projector()
            .current_dir(dir.path())
            .args(["run", "bank.yaml", "--once", "--format", "json"])
            .arg("--state-dir")
            .arg(&state)
            .args(["--sql", ACCOUNTS_SQL, "--sql", VOLUME_SQL])
            .output()
            .expect("run")
    };
    let first = run();
    assert!(first.status.success());
    // A second run restores the end-of-input checkpoint and writes one more.
    assert!(run().status.success());

    let epochs = checkpoint_dirs(&state);
    assert!(epochs.len() >= 2, "at least two checkpoints: {epochs:?}");
    let newest = epochs.last().expect("newest");
    let file = newest.join("partition.state");
    let len = std::fs::metadata(&file).expect("state file").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.set_len(len / 2).expect("truncate");

    let third = run();
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(third.status.success(), "{stderr}");
    assert!(
        stderr.contains("partition.state") && stderr.contains("older checkpoint"),
        "the damage is reported: {stderr}"
    );
    assert_eq!(
        json_lines(&third.stdout),
        json_lines(&first.stdout),
        "same views as before"
    );

    // Every checkpoint damaged: replaying from the start could lose what the source no
    // longer holds, so the run refuses, and says how to replay anyway.
    for dir in checkpoint_dirs(&state) {
        std::fs::write(dir.join("partition.state"), b"damaged").expect("damage");
    }
    let refused = run();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no checkpoint is usable") && stderr.contains("--replay-if-damaged"),
        "the refusal says why and what to do: {stderr}"
    );
    assert!(refused.stdout.is_empty(), "no views printed");
    let replayed = projector()
        .current_dir(dir.path())
        .args(["run", "bank.yaml", "--once", "--format", "json"])
        .arg("--state-dir")
        .arg(&state)
        .args([
            "--sql",
            ACCOUNTS_SQL,
            "--sql",
            VOLUME_SQL,
            "--replay-if-damaged",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{stderr}");
    assert_eq!(
        json_lines(&replayed.stdout),
        json_lines(&first.stdout),
        "the replay from the start gives the same views"
    );
}

/// Two processes on one state directory would resume from the same checkpoints and
/// write over each other's: the second is refused, with who holds it.
#[test]
fn a_second_process_on_the_same_state_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let pipeline = dir.path().join("gen.yaml");
    std::fs::write(&pipeline, common::generator_pipeline(50_000_000)).expect("write pipeline");
    let mut first = projector()
        .arg("run")
        .arg(&pipeline)
        .args(["--quiet", "--http", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the first");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !state.join("LOCK").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let second = projector()
        .arg("run")
        .arg(&pipeline)
        .args(["--once", "--quiet"])
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run the second");
    let _ = first.kill();
    let _ = first.wait();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is in use by another projector process (pid ")
            && stderr.contains(&format!("pid {}", first.id())),
        "{stderr}"
    );
    // Once the first is gone (even killed), the directory is free again.
    let small = dir.path().join("small.yaml");
    std::fs::write(&small, common::generator_pipeline(1_000)).expect("write pipeline");
    let third = projector()
        .arg("run")
        .arg(&small)
        .args(["--once", "--quiet"])
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run the third");
    assert!(
        third.status.success(),
        "the lock went with the killed process: {}",
        String::from_utf8_lossy(&third.stderr)
    );
}

/// Checkpoints deleted, the input is replayed from its start: the bad records are bad
/// again, but their letters are in the file already, so none is written twice.
#[test]
fn a_replay_from_scratch_writes_no_dead_letter_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = Vec::new();
    for (i, (_, raw)) in generator_records(5_000, 200, 8).into_iter().enumerate() {
        input.extend_from_slice(&raw);
        input.push(b'\n');
        if i % 1_000 == 500 {
            input.extend_from_slice(format!("{{\"broken\": {i}\n").as_bytes());
        }
    }
    std::fs::write(dir.path().join("events.ndjson"), &input).expect("write events");
    std::fs::write(
        dir.path().join("bank.yaml"),
        file_pipeline("events.ndjson", "dead_letter"),
    )
    .expect("write pipeline");
    let state = dir.path().join("state");
    let run = || {
        let out = projector()
            .current_dir(dir.path())
            .args(["run", "bank.yaml", "--once", "--quiet"])
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let letters = std::fs::read(state.join("dead-letters.ndjson")).expect("letters");
    assert_eq!(
        letters
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        5
    );
    std::fs::remove_dir_all(state.join("checkpoints")).expect("remove checkpoints");
    run();
    assert_eq!(
        std::fs::read(state.join("dead-letters.ndjson")).expect("letters"),
        letters,
        "the replay wrote no letter twice"
    );
}
