//! Watching a running instance: `GET /metrics` names every series docs/metrics.md
//! lists and counts what happens; the stall watchdog turns `/health` to `degraded` when
//! a checkpoint store or a broker hangs without failing, and back when it answers.

mod common;

use common::cluster::{
    Broker, Running, Store, free_port, get_json, pipeline_on, produce, repo, wait_for,
};
use common::{generator_pipeline, replace_line};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `GET /metrics`: the text.
fn scrape(port: u16) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("GET /metrics");
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    r.body_mut().read_to_string().expect("body")
}

/// The value of the series `name{labels…}` whose labels include every one of `with`.
fn value(text: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let (n, labels) = series.split_once('{').unwrap_or((series, ""));
        let all = with
            .iter()
            .all(|(k, val)| labels.contains(&format!("{k}=\"{val}\"")));
        (n == name && all).then(|| v.parse().ok())?
    })
}

/// The series names of a scrape, a histogram's under its own name.
fn names(text: &str) -> BTreeSet<String> {
    let histograms: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default())
        .map(|n| {
            histograms
                .iter()
                .find(|h| {
                    n.strip_prefix(**h)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
                })
                .map_or(n, |h| h)
                .to_string()
        })
        .collect()
}

/// The largest value of the series `name` over its label sets.
fn max_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .reduce(f64::max)
}

/// The names docs/metrics.md lists.
fn documented() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("docs/metrics.md"))
        .expect("docs/metrics.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

fn sql(port: u16, query: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .post(format!("http://127.0.0.1:{port}/sql"))
        .send(query)
        .expect("POST /sql")
        .status()
        .as_u16()
}

/// `/health`'s status and reason.
fn health(port: u16) -> (String, String) {
    let h = get_json(port, "/health").unwrap_or_default();
    (
        h["status"].as_str().unwrap_or_default().to_string(),
        h["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
}

#[test]
fn metrics_name_what_the_docs_list_and_count_what_happens() {
    let dir = tempfile::tempdir().unwrap();
    let text = replace_line(&generator_pipeline(500_000_000), "  keys:", "keys: 20000");
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, text).unwrap();
    let port = free_port();
    let mut running = Running::start(&pipeline, &dir.path().join("state"), port, 1);
    assert!(wait_for(60, || get_json(port, "/status").is_some_and(
        |s| s["checkpoint"]["epoch"].as_u64().unwrap_or(0) > 0
    )));
    assert_eq!(sql(port, "SELECT count(*) FROM accounts"), 200);
    assert_eq!(sql(port, "SELEC nonsense"), 400);

    let first = scrape(port);
    // The generator has no end, so no lag (the Kafka test below has it).
    let mut listed = documented();
    listed.remove("projector_partition_lag");
    assert_eq!(names(&first), listed, "a scrape and docs/metrics.md differ");
    let pipeline_label = [("pipeline", "bank-accounts")];
    let ok = [("face", "http"), ("code", "ok")];
    assert_eq!(value(&first, "projector_queries_total", &ok), Some(1.0));
    let bad = [("face", "http"), ("code", "sql.parse")];
    assert_eq!(value(&first, "projector_queries_total", &bad), Some(1.0));
    let rows = value(&first, "projector_view_rows", &[("view", "accounts")]).unwrap();
    assert!(rows > 0.0, "{rows}");
    let checkpoints = value(&first, "projector_checkpoint_duration_seconds_count", &[]).unwrap();
    assert!(checkpoints >= 1.0, "{checkpoints}");
    let epochs = value(&first, "projector_epoch_publish_seconds_count", &[]).unwrap();
    assert!(epochs >= 1.0, "{epochs}");
    assert!(value(&first, "process_resident_memory_bytes", &pipeline_label).unwrap() > 1e6);
    assert_eq!(
        value(&first, "projector_stalled", &[("check", "partition")]),
        Some(0.0)
    );

    // Counters move while the pipeline runs.
    let read = |t: &str| value(t, "projector_records_read_total", &pipeline_label).unwrap();
    let before = read(&first);
    assert!(wait_for(30, || read(&scrape(port)) > before));
    assert_eq!(running.terminate(30), Some(0));
}

/// Appends `watchdog: {stall_after: 2s}` to the pipeline file `path`.
fn watched(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, format!("{text}watchdog:\n  stall_after: 2s\n")).unwrap();
}

#[test]
fn a_hung_checkpoint_store_is_a_stall_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::s3_behind_proxy();
    let Store::S3Behind(_, proxy) = &store else {
        unreachable!()
    };
    let text = generator_pipeline(500_000_000).replace(
        "views:",
        &format!("checkpoint:\n  interval: 200ms\n{}views:", store.yaml()),
    );
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, text).unwrap();
    watched(&pipeline);
    let port = free_port();
    let mut running = Running::start(&pipeline, &dir.path().join("state"), port, 1);
    assert!(wait_for(60, || get_json(port, "/status").is_some_and(
        |s| s["checkpoint"]["epoch"].as_u64().unwrap_or(0) > 0
    )));
    assert!(
        wait_for(30, || health(port).0 == "ok"),
        "{:?}",
        health(port)
    );

    // The store stops answering without closing anything: no error, only silence.
    proxy.freeze(true);
    assert!(
        wait_for(30, || health(port).1.contains("no checkpoint completed")),
        "{:?}",
        health(port)
    );
    assert_eq!(health(port).0, "degraded");
    let text = scrape(port);
    let checkpoint = [("check", "checkpoint")];
    assert_eq!(value(&text, "projector_stalled", &checkpoint), Some(1.0));
    let stalls = value(&text, "projector_stalls_total", &checkpoint).unwrap_or(0.0);
    assert!(stalls >= 1.0, "{stalls}");
    assert_eq!(value(&text, "projector_degraded", &[]), Some(1.0));
    // Queries still answer from the views, which go on changing.
    assert_eq!(sql(port, "SELECT count(*) FROM accounts"), 200);

    proxy.freeze(false);
    assert!(
        wait_for(60, || health(port).0 == "ok"),
        "{:?}",
        health(port)
    );
    let text = scrape(port);
    assert_eq!(value(&text, "projector_stalled", &checkpoint), Some(0.0));
    assert_eq!(running.terminate(60), Some(0));
}

/// Sends SIGCONT to a stopped process when dropped, however the test ends (without
/// asserting: a panic while unwinding would abort before the other cleanups).
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn a_hung_broker_is_a_stalled_partition_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let topic = "watched";
    produce(&broker, topic, 2_000_000, 10_000, 3);
    let pipeline = pipeline_on(dir.path(), &broker, topic, &Store::Local);
    watched(&pipeline);
    let port = free_port();
    let mut running = Running::start(&pipeline, &dir.path().join("state"), port, 1);
    // Reading, with many records left to read: more than the client prefetches
    // (it would go on handing those over from its buffer after the broker stops).
    let reading = || {
        get_json(port, "/status").is_some_and(|s| {
            let lag: u64 = s["partitions"].as_array().map_or(0, |ps| {
                ps.iter().map(|p| p["lag"].as_u64().unwrap_or(0)).sum()
            });
            s["events"]["read"].as_u64().unwrap_or(0) > 0 && lag > 500_000
        })
    };
    assert!(wait_for(60, reading), "{:?}", get_json(port, "/status"));

    // The broker hangs: connections stay open, nothing answers.
    let stopped = Stopped(broker.pid());
    signal(stopped.0, "-STOP");
    assert!(
        wait_for(30, || health(port).1.contains("records to read")),
        "{:?}",
        health(port)
    );
    let text = scrape(port);
    assert_eq!(
        value(&text, "projector_stalled", &[("check", "partition")]),
        Some(1.0)
    );
    assert!(max_value(&text, "projector_partition_lag").is_some_and(|l| l > 0.0));

    drop(stopped);
    assert!(
        wait_for(90, || health(port).0 == "ok"),
        "{:?}",
        health(port)
    );
    assert_eq!(running.terminate(60), Some(0));
}
