//! Queries across instances, on loopback with the real broker (Tansu) and the real S3
//! server (moto), both started by the repository's scripts.
//!
//! Three instances share 8 partitions while events are produced live. Every answer of
//! every instance is whole (all 8 partitions, or the key's one) or a clear
//! `query.partition_unavailable`, during the start-up rebalance too; once production
//! stops, the same SQL (a key lookup, a filtered scan, a grouped aggregate, a join)
//! gives the same rows on every instance, equal to the oracle. Then one instance is
//! killed: its partitions are unavailable (or named as missing with `partial=true`)
//! until the others own them, and answers are whole again.

mod common;

use common::cluster::*;
use common::{assert_rows, oracle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// An answer to `POST /sql`.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Value,
}

impl Answer {
    /// The number of partitions the answer covers and the total (`x-projector-partitions`).
    fn coverage(&self) -> (usize, usize) {
        let h = &self.headers["x-projector-partitions"];
        let (a, b) = h.split_once('/').expect("covered/total");
        (a.parse().expect("n"), b.parse().expect("n"))
    }

    /// Per partition, the owner's epoch and offset (`x-projector-partition-epochs`).
    fn epochs(&self) -> BTreeMap<String, (u64, u64)> {
        self.headers
            .get("x-projector-partition-epochs")
            .map(|h| {
                h.split(',')
                    .map(|p| {
                        let (name, at) = p.split_once('=').expect("name=epoch@offset");
                        let (e, o) = at.split_once('@').expect("epoch@offset");
                        (name.to_string(), (e.parse().unwrap(), o.parse().unwrap()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

fn sql(port: u16, query: &str, partial: bool) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!(
        "http://127.0.0.1:{port}/sql{}",
        if partial { "?partial=true" } else { "" }
    );
    let mut r = agent
        .post(&url)
        .header("content-type", "text/plain")
        .send(query)
        .expect("POST /sql");
    let headers = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-projector"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = r.body_mut().read_to_string().expect("body");
    Answer {
        status: r.status().as_u16(),
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// The queries every instance must answer alike.
fn queries(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("accounts", ACCOUNTS_SQL.to_string()),
        ("volume", VOLUME_SQL.to_string()),
        (
            "lookup",
            format!("SELECT * FROM accounts WHERE account_id = '{key}'"),
        ),
        (
            "filtered",
            "SELECT account_id, balance FROM accounts WHERE balance > 5000 AND deposits >= 2 \
             ORDER BY account_id"
                .to_string(),
        ),
        (
            "grouped",
            "SELECT owner IS NULL AS no_owner, count(*) AS n, sum(balance) AS total \
             FROM accounts GROUP BY owner IS NULL ORDER BY no_owner"
                .to_string(),
        ),
        (
            "join",
            format!(
                "SELECT a.account_id, a.balance, v.total AS deposited_by_all \
                 FROM accounts a JOIN volume_by_type v ON v.event_type = 'MoneyDeposited' \
                 WHERE a.account_id = '{key}'"
            ),
        ),
    ]
}

/// Asserts an answer is whole: all partitions it needed, nothing missing. A key
/// lookup needs one partition (the pipeline declares its partitioner).
fn assert_whole(what: &str, a: &Answer) {
    assert_eq!(a.status, 200, "{what}: {}", a.body);
    let (covered, total) = a.coverage();
    assert_eq!(covered, total, "{what}: covers {covered}/{total}");
    assert!(
        !a.headers.contains_key("x-projector-missing-partitions"),
        "{what}: {:?}",
        a.headers
    );
}

#[test]
fn every_instance_answers_for_every_partition() {
    let broker = Broker::start();
    let store = Store::s3();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_with_bad_records(60_000, 2_000, 47);
    let total = input.len() as u64;
    // About 20 s of events.
    let producer = stream_to(&broker, "bank-q", 8, &input, total / 20);
    let pipeline = pipeline_on(dir.path(), &broker, "bank-q", &store);
    let ports = [free_port(), free_port(), free_port()];
    let mut instances: Vec<Option<Running>> = (0..3)
        .map(|i| {
            let state = dir.path().join(format!("state-{i}"));
            Some(Running::start(&pipeline, &state, ports[i], 1))
        })
        .collect();

    // While the group forms and events flow: every answer is whole or a clear error.
    let (mut whole, mut unavailable) = (0, 0);
    let started = Instant::now();
    while !producer.is_finished() && started.elapsed() < Duration::from_secs(60) {
        for &port in &ports {
            if get_json(port, "/health").is_none() {
                continue; // not serving yet
            }
            let a = sql(port, "SELECT count(*) AS n FROM accounts", false);
            match a.status {
                200 => {
                    assert_whole("count during production", &a);
                    assert_eq!(a.epochs().len(), 8, "{:?}", a.headers);
                    whole += 1;
                }
                503 => {
                    assert_eq!(a.error_code(), "query.partition_unavailable", "{}", a.body);
                    unavailable += 1;
                }
                s => panic!("HTTP {s}: {}", a.body),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    producer.join().expect("producer");
    eprintln!("answers during production: {whole} whole, {unavailable} unavailable");
    assert!(
        whole > 10,
        "answers during production: {whole} whole, {unavailable} unavailable"
    );

    // Caught up: the partitions' offsets in an answer add up to the whole topic.
    let caught_up = |port: u16| {
        let a = sql(port, "SELECT count(*) FROM accounts", false);
        a.status == 200 && a.epochs().values().map(|(_, o)| o).sum::<u64>() == total
    };
    assert!(
        wait_for(60, || ports.iter().all(|&p| caught_up(p))),
        "every instance answers from the whole topic"
    );
    let exp = oracle::expected(&input);
    let accounts = exp.accounts_json();
    let key = accounts[accounts.len() / 2]["account_id"]
        .as_str()
        .expect("a key")
        .to_string();
    let mut first: BTreeMap<&str, Value> = BTreeMap::new();
    for &port in &ports {
        for (what, q) in queries(&key) {
            let a = sql(port, &q, false);
            assert_whole(what, &a);
            let rows = a.body.as_array().expect("rows").clone();
            match what {
                "accounts" => assert_rows(what, &rows, &accounts),
                "volume" => assert_rows(what, &rows, &exp.volume_json()),
                "lookup" => {
                    let row: Vec<Value> = accounts
                        .iter()
                        .filter(|r| r["account_id"] == key.as_str())
                        .cloned()
                        .collect();
                    assert_rows(what, &rows, &row);
                    // Only the key's partition was read.
                    assert_eq!(a.epochs().len(), 1, "{:?}", a.headers);
                }
                _ => {}
            }
            assert!(!rows.is_empty(), "{what}: no rows");
            match first.get(what) {
                Some(v) => assert_eq!(&Value::Array(rows), v, "{what} on port {port}"),
                None => {
                    first.insert(what, Value::Array(rows));
                }
            }
        }
    }
    // The join and the filtered scan against the oracle.
    let deposited = exp
        .volume_json()
        .into_iter()
        .find(|v| v["event_type"] == "MoneyDeposited")
        .expect("deposits")["total"]
        .clone();
    let row = accounts
        .iter()
        .find(|r| r["account_id"] == key.as_str())
        .expect("the key's row");
    assert_eq!(
        first["join"],
        serde_json::json!([{"account_id": key, "balance": row["balance"], "deposited_by_all": deposited}])
    );
    let filtered: Vec<Value> = accounts
        .iter()
        .filter(|r| {
            r["balance"].as_i64().unwrap_or(0) > 5000 && r["deposits"].as_i64().unwrap_or(0) >= 2
        })
        .map(|r| serde_json::json!({"account_id": r["account_id"], "balance": r["balance"]}))
        .collect();
    assert_rows(
        "filtered",
        first["filtered"].as_array().expect("rows"),
        &filtered,
    );

    // Kill one: its partitions are unavailable until the others own them.
    let victim_owns = assigned(ports[2]).expect("status");
    assert!(
        !victim_owns.is_empty(),
        "the third instance owns partitions"
    );
    let mut victim = instances[2].take().expect("running");
    victim.0.kill().expect("kill -9");
    victim.0.wait().expect("reap");
    let a = sql(ports[0], VOLUME_SQL, false);
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.error_code(), "query.partition_unavailable");
    let message = a.body["error"]["message"].as_str().unwrap_or("");
    for p in &victim_owns {
        assert!(message.contains(p.as_str()), "{p} named in: {message}");
    }
    let a = sql(ports[1], "SELECT count(*) AS n FROM accounts", true);
    assert_eq!(a.status, 200, "{}", a.body);
    let missing: Vec<String> = a.headers["x-projector-missing-partitions"]
        .split(',')
        .map(String::from)
        .collect();
    assert_eq!(missing, victim_owns, "a partial answer names what it lacks");
    assert_eq!(a.coverage(), (8 - victim_owns.len(), 8));
    // The group moves them (session timeout 2 s); then answers are whole again, on
    // each instance once its roster has the new owners (within a heartbeat).
    assert!(
        wait_for(60, || ports[..2].iter().all(|&port| {
            let a = sql(port, ACCOUNTS_SQL, false);
            a.status == 200 && a.epochs().values().map(|(_, o)| o).sum::<u64>() == total
        })),
        "whole again once the others own every partition"
    );
    for &port in &ports[..2] {
        let a = sql(port, ACCOUNTS_SQL, false);
        assert_whole("accounts after the kill", &a);
        assert_rows(
            "accounts after the kill",
            a.body.as_array().unwrap(),
            &accounts,
        );
    }
    for (i, instance) in instances.iter_mut().enumerate() {
        if let Some(r) = instance {
            assert_eq!(r.terminate(30), Some(0), "instance {i} stops cleanly");
        }
    }
}

#[test]
fn instances_talk_over_tls_with_the_cluster_token() {
    const TOKEN: &str = "a-reader-token-for-the-test";
    const CLUSTER: &str = "the-cluster-token-of-the-test";
    let broker = Broker::start();
    let store = Store::s3();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = common::self_signed(dir.path(), "cert");

    let input = events_with_bad_records(20_000, 500, 53);
    let total = input.len() as u64;
    stream_to(&broker, "bank-tls", 4, &input, total)
        .join()
        .expect("producer");
    let pipeline = pipeline_on(dir.path(), &broker, "bank-tls", &store);
    let text = std::fs::read_to_string(&pipeline).expect("pipeline");
    let text = text.replacen(
        "\nviews:",
        &format!(
            "\nauth:\n  tokens:\n    - {{name: test, token: {TOKEN}, views: [\"*\"]}}\n  \
             cluster_token: {CLUSTER}\nviews:"
        ),
        1,
    );
    std::fs::write(&pipeline, text).expect("pipeline with auth");
    let flags: Vec<&std::ffi::OsStr> = vec![
        "--tls-cert".as_ref(),
        cert_path.as_os_str(),
        "--tls-key".as_ref(),
        key_path.as_os_str(),
        "--tls-ca".as_ref(),
        cert_path.as_os_str(),
    ];
    let ports = [free_port(), free_port()];
    let mut instances: Vec<Running> = (0..2)
        .map(|i| {
            let state = dir.path().join(format!("state-{i}"));
            let log = dir.path().join(format!("instance-{i}.log"));
            Running::start_with(&pipeline, &state, ports[i], 1, Some(&log), &flags)
        })
        .collect();
    let agent = common::agent_trusting(Some(&cert_path));
    let ask = |port: u16, token: Option<&str>, path: &str, body: &str| {
        let mut req = agent
            .post(format!("https://127.0.0.1:{port}{path}"))
            .header("content-type", "text/plain");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        match req.send(body) {
            Ok(mut r) => {
                let epochs = r
                    .headers()
                    .get("x-projector-partition-epochs")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                (r.status().as_u16(), epochs, text)
            }
            Err(e) => (0, String::new(), e.to_string()),
        }
    };
    let whole = |port: u16| {
        let (status, epochs, _) = ask(port, Some(TOKEN), "/sql", "SELECT count(*) FROM accounts");
        let sum: u64 = epochs
            .split(',')
            .filter_map(|p| p.rsplit_once('@').and_then(|(_, o)| o.parse::<u64>().ok()))
            .sum();
        let owners = ports
            .iter()
            .filter(|&&p| assigned_https(&agent, p, TOKEN) > 0)
            .count();
        status == 200 && sum == total && owners == 2
    };
    let logs = || {
        (0..2)
            .map(|i| {
                std::fs::read_to_string(dir.path().join(format!("instance-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        wait_for(60, || ports.iter().all(|&p| whole(p))),
        "both instances answer for all 4 partitions over HTTPS: {}",
        logs()
    );
    let exp = oracle::expected(&input);
    for &port in &ports {
        let (status, _, body) = ask(port, Some(TOKEN), "/sql", ACCOUNTS_SQL);
        assert_eq!(status, 200, "{body}");
        let rows: Vec<Value> = serde_json::from_str(&body).expect("rows");
        assert_rows("accounts over TLS", &rows, &exp.accounts_json());
    }
    // The route between instances refuses a caller without the cluster's token, a
    // user's token included.
    let scan = r#"{"pipeline":"bank-accounts-kafka","view":"accounts","partitions":["bank-tls/0"],"columns":["account_id"],"filters":[],"partials":false}"#;
    for token in [None, Some(TOKEN), Some("not-the-cluster-token-at-all")] {
        let (status, _, body) = ask(ports[0], token, "/cluster/scan", scan);
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    let (status, _, body) = ask(ports[0], Some(CLUSTER), "/cluster/scan", scan);
    assert_eq!(status, 200, "{body}");
    for (i, instance) in instances.iter_mut().enumerate() {
        assert_eq!(
            instance.terminate(30),
            Some(0),
            "instance {i} stops cleanly"
        );
    }
}

/// How many partitions the instance at `port` owns (HTTPS, with `token`).
fn assigned_https(agent: &ureq::Agent, port: u16, token: &str) -> usize {
    let Ok(mut r) = agent
        .get(format!("https://127.0.0.1:{port}/status"))
        .header("authorization", format!("Bearer {token}"))
        .call()
    else {
        return 0;
    };
    let status: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or_default();
    status["partitions"]
        .as_array()
        .map_or(0, |ps| ps.iter().filter(|p| p["assigned"] == true).count())
}
