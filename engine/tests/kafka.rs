//! The Kafka path against a real Kafka-compatible broker (Tansu, started by
//! `scripts/broker.sh` on a free loopback port; installed on first use). A broker that
//! cannot be installed or started fails these tests: they never skip.
//!
//! - T1: kill -9 the engine at random moments while it reads a 4-partition topic,
//!   restart it (with a different worker count), finish with `--once`: the views equal
//!   the oracle.
//! - T2: re-produce a share of the events (an at-least-once producer's retries): the
//!   views do not change and the replays are counted as duplicates.

mod common;

use common::{
    Rng, assert_rows, checkpoint_dirs, generator_records, json_lines, oracle, projector, summary,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ACCOUNTS_SQL: &str = "SELECT * FROM accounts ORDER BY account_id";
const VOLUME_SQL: &str = "SELECT * FROM volume_by_type ORDER BY event_type";

/// A Tansu broker for one test; stopped (by PID, through the script) when dropped.
struct Broker {
    address: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Broker {
    fn start() -> Broker {
        let out = Command::new("bash")
            .arg(repo().join("scripts/broker.sh"))
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/broker.sh");
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && address.starts_with("127.0.0.1:"),
            "the Kafka tests need a broker: `scripts/broker.sh start` failed ({}); \
             they do not skip",
            out.status
        );
        Broker { address }
    }

    fn port(&self) -> &str {
        self.address.rsplit(':').next().expect("host:port")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/broker.sh"))
            .args(["stop", self.port()])
            .status();
    }
}

/// `projector produce TOPIC` of the bank scenario.
fn produce(broker: &Broker, topic: &str, events: u64, keys: u64, seed: u64) {
    let out = projector()
        .args([
            "produce",
            topic,
            "--partitions",
            "4",
            "--brokers",
            &broker.address,
        ])
        .args(["--events", &events.to_string(), "--keys", &keys.to_string()])
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("projector produce");
    assert!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped Kafka pipeline reading `topic` on `broker`, checkpointing often.
fn pipeline(dir: &Path, broker: &Broker, topic: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("pipelines/bank-accounts-kafka.yaml"))
        .expect("the shipped Kafka pipeline")
        .replace("${KAFKA_BROKERS:-127.0.0.1:9092}", &broker.address)
        .replace("topics: [bank-events]", &format!("topics: [{topic}]"))
        .replace(
            "views:",
            "publish_interval: 20ms\ncheckpoint:\n  interval: 50ms\nviews:",
        );
    let path = dir.join("bank-kafka.yaml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// `--once` with both view queries: (stderr, accounts, volume).
fn run_once(
    pipeline: &Path,
    state: &Path,
) -> (String, Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let out = projector()
        .arg("run")
        .arg(pipeline)
        .args([
            "--once",
            "--format",
            "json",
            "--sql",
            ACCOUNTS_SQL,
            "--sql",
            VOLUME_SQL,
        ])
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("projector run --once");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run --once failed: {stderr}");
    let mut results = json_lines(&out.stdout);
    assert_eq!(results.len(), 2, "{stderr}");
    let volume = results.pop().expect("volume");
    (stderr, results.pop().expect("accounts"), volume)
}

/// The sum of the next offsets in the newest checkpoint (events it covers).
fn newest_checkpoint_offsets(state: &Path) -> Option<u64> {
    let manifest = common::manifest(checkpoint_dirs(state).last()?)?;
    manifest["partitions"]
        .as_array()?
        .iter()
        .map(|p| p["next_offset"].as_u64())
        .sum()
}

#[test]
fn t1_t2_kill_9_and_redelivery_on_a_4_partition_topic() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, keys, seed) = (100_000, 2_000, 5);
    produce(&broker, "bank-t1", events, keys, seed);
    let pipeline = pipeline(dir.path(), &broker, "bank-t1");
    let state = dir.path().join("state");

    let mut rng = Rng(0x9e37_79b9);
    let mut mid_stream = 0;
    for _ in 0..10 {
        let workers = 1 + rng.below(3);
        let mut child = projector()
            .arg("run")
            .arg(&pipeline)
            .args([
                "--quiet",
                "--http",
                "127.0.0.1:0",
                "--workers",
                &workers.to_string(),
            ])
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start projector");
        std::thread::sleep(Duration::from_millis(50 + rng.below(500)));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        if newest_checkpoint_offsets(&state).is_some_and(|n| n > 0 && n < events) {
            mid_stream += 1;
        }
    }
    assert!(
        mid_stream >= 2,
        "the kills must interrupt the topic, not only idle runs ({mid_stream} did)"
    );

    let exp = oracle::expected(&generator_records(events, keys, seed));
    let (_, accounts, volume) = run_once(&pipeline, &state);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());

    // T2: the first 30,000 events are delivered again (same seed: the same bytes, keys
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

/// T5: poison pills through Kafka, under each `on_error` policy. One partition, no blank
/// lines, so a record's Kafka offset is its line number in the produced file.
#[test]
fn t5_poison_pills_follow_each_policy() {
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
    let base = pipeline(dir.path(), &broker, "poison");
    let text = std::fs::read_to_string(&base).expect("pipeline");
    for policy in ["dead_letter", "skip", "fail"] {
        let path = dir.path().join(format!("{policy}.yaml"));
        std::fs::write(
            &path,
            text.replace("on_error: dead_letter", &format!("on_error: {policy}")),
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
        let dlq = state.join("dead-letters.ndjson");
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

/// A GET against the instance, as JSON.
fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

/// CPU time (user + system, in clock ticks) a process has used (Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Waits up to `secs` for `check` to hold.
fn wait_for(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// T4, first half: the broker goes away. The engine keeps running without spinning,
/// `/health` says degraded, and it still stops cleanly. (Restart and resume after the
/// broker comes back: next step of issue 3.)
#[test]
fn t4_broker_away_is_degraded_not_fatal() {
    /// Kills the engine if the test fails half way.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    produce(&broker, "bank-t4", 5_000, 500, 4);
    let pipeline = pipeline(dir.path(), &broker, "bank-t4");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Kill(
        projector()
            .arg("run")
            .arg(&pipeline)
            .args(["--quiet", "--http", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start projector"),
    );
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

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let mut code = None;
    let exited = wait_for(15, || {
        code = child.0.try_wait().ok().flatten().map(|s| s.code());
        code.is_some()
    });
    assert!(exited, "SIGTERM stops the engine while the broker is away");
    assert_eq!(code, Some(Some(0)), "a clean stop exits 0");
}
