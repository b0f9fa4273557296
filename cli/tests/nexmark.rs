//! The Nexmark pipelines (`pipelines/nexmark/`) run as a user runs them, `projector run
//! --once` with a small event count, their SQL results checked against an independent
//! computation over the events of the `nexmark` crate (not over Projector's JSON); table
//! retention across worker counts; resuming from a checkpoint and kill -9 mid-run give
//! the same tables; bad `table:` entries are reported by `projector validate`.

mod common;

use common::{Output, Rng, assert_rows, checkpoint_dirs, json_lines, projector, run};
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::{Bid, Event};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);
/// The source's default `base_time`: 2026-01-01T00:00:00Z.
const BASE_TIME_MS: u64 = 1_767_225_600_000;

fn pipeline(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipelines/nexmark")
        .join(name)
}

/// The first `n` Nexmark events at `rate` events per second, straight from the crate,
/// numbered from 0.
fn events(n: u64, rate: usize) -> Vec<(u64, Event)> {
    let config = NexmarkConfig {
        base_time: BASE_TIME_MS,
        first_rate: rate,
        next_rate: rate,
        ..NexmarkConfig::default()
    };
    EventGenerator::new(config)
        .take(n as usize)
        .enumerate()
        .map(|(i, e)| (i as u64, e))
        .collect()
}

fn bids(events: &[(u64, Event)]) -> Vec<(u64, &Bid)> {
    events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Bid(b) => Some((*i, b)),
            _ => None,
        })
        .collect()
}

/// `projector run PIPELINE --once --format json` with `env`, `extra` arguments and one
/// `--sql` per query; returns the result rows of each query.
fn run_queries(
    pipeline: &Path,
    state: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
    sql: &[&str],
) -> (Output, Vec<Vec<Value>>) {
    let mut cmd = projector();
    cmd.arg("run")
        .arg(pipeline)
        .args(["--once", "--format", "json", "--state-dir"])
        .arg(state)
        .args(extra)
        .envs(env.iter().copied());
    for q in sql {
        cmd.args(["--sql", q]);
    }
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(0);
    let results = json_lines(&out.stdout);
    assert_eq!(results.len(), sql.len(), "one JSON array per --sql");
    (out, results)
}

#[test]
fn q1_converts_every_bid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("NEXMARK_EVENTS", "4000"),
        ("NEXMARK_RATE", "1000"),
        ("NEXMARK_RETAIN", "1h"),
    ];
    let (_, results) = run_queries(
        &pipeline("q1.yaml"),
        &dir.path().join("state"),
        &env,
        &[],
        &[
            "SELECT auction, bidder, price, CAST(date_time AS BIGINT) AS t, extra \
           FROM bids_eur ORDER BY t",
        ],
    );
    let all = events(4_000, 1_000);
    // At 1,000 events per second every event has its own millisecond: `t` orders.
    let expected: Vec<Value> = bids(&all)
        .iter()
        .map(|(_, b)| {
            json!({
                "auction": b.auction, "bidder": b.bidder, "price": 0.908 * b.price as f64,
                "t": b.date_time, "extra": b.extra,
            })
        })
        .collect();
    assert!(expected.len() > 3_500, "most events are bids");
    assert_rows("bids_eur", &results[0], &expected);
}

#[test]
fn q2_selects_the_bids_of_a_few_auctions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, results) = run_queries(
        &pipeline("q2.yaml"),
        &dir.path().join("state"),
        &[("NEXMARK_EVENTS", "60000")],
        &["--workers", "2"],
        &["SELECT auction, price FROM selected_bids ORDER BY auction, price"],
    );
    let all = events(60_000, 10_000);
    let mut expected: Vec<(usize, usize)> = bids(&all)
        .iter()
        .filter(|(_, b)| b.auction % 123 == 0)
        .map(|(_, b)| (b.auction, b.price))
        .collect();
    expected.sort_unstable();
    assert!(expected.len() > 20, "the filter keeps some bids");
    let expected: Vec<Value> = expected
        .iter()
        .map(|(a, p)| json!({"auction": a, "price": p}))
        .collect();
    assert_rows("selected_bids", &results[0], &expected);
}

#[test]
fn q7_and_q5_window_by_event_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 45 seconds of event time: windows [0,10) .. [40,50) s.
    let env = [("NEXMARK_EVENTS", "45000"), ("NEXMARK_RATE", "1000")];
    let all = events(45_000, 1_000);
    let mut windows: BTreeMap<u64, (usize, i64, usize)> = BTreeMap::new(); // max, count, sum
    let mut per_auction: BTreeMap<(u64, usize), i64> = BTreeMap::new();
    for (_, b) in bids(&all) {
        let w = b.date_time - b.date_time % 10_000;
        let e = windows.entry(w).or_default();
        e.0 = e.0.max(b.price);
        e.1 += 1;
        e.2 += b.price;
        *per_auction.entry((w, b.auction)).or_default() += 1;
    }
    assert_eq!(windows.len(), 5);

    let (_, results) = run_queries(
        &pipeline("q7.yaml"),
        &dir.path().join("q7"),
        &env,
        &[],
        &[
            "SELECT CAST(window_start AS BIGINT) AS w, max_price, bids, total \
           FROM highest_bid ORDER BY w",
        ],
    );
    let expected: Vec<Value> = windows
        .iter()
        .map(|(w, (max, n, sum))| json!({"w": w, "max_price": max, "bids": n, "total": sum}))
        .collect();
    assert_rows("highest_bid", &results[0], &expected);

    // q5: the hottest auctions per window, by the query its header documents.
    let (_, results) = run_queries(
        &pipeline("q5.yaml"),
        &dir.path().join("q5"),
        &env,
        &["--workers", "2"],
        &[
            "SELECT CAST(b.window_start AS BIGINT) AS w, b.auction, b.bids \
           FROM bids_per_auction b \
           JOIN (SELECT window_start, max(bids) AS most FROM bids_per_auction GROUP BY window_start) m \
             ON b.window_start = m.window_start AND b.bids = m.most \
           ORDER BY w, b.auction",
        ],
    );
    let mut most: BTreeMap<u64, i64> = BTreeMap::new();
    for ((w, _), n) in &per_auction {
        let m = most.entry(*w).or_default();
        *m = (*m).max(*n);
    }
    let expected: Vec<Value> = per_auction
        .iter()
        .filter(|((w, _), n)| most[w] == **n)
        .map(|((w, a), n)| json!({"w": w, "auction": a, "bids": n}))
        .collect();
    assert_rows("hottest auctions", &results[0], &expected);
}

#[test]
fn q3_joins_two_tables_at_read_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, results) = run_queries(
        &pipeline("q3.yaml"),
        &dir.path().join("state"),
        &[("NEXMARK_EVENTS", "50000")],
        &[],
        &[
            "SELECT p.name, p.city, p.state, a.id FROM local_auctions a \
           JOIN local_sellers p ON a.seller = p.id ORDER BY a.id",
        ],
    );
    let all = events(50_000, 10_000);
    let people: BTreeMap<usize, &nexmark::event::Person> = all
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Person(p) if ["or", "id", "ca"].contains(&p.state.as_str()) => Some((p.id, p)),
            _ => None,
        })
        .collect();
    let expected: Vec<Value> = all
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Auction(a) if a.category == 10 => people
                .get(&a.seller)
                .map(|p| json!({"name": p.name, "city": p.city, "state": p.state, "id": a.id})),
            _ => None,
        })
        .collect();
    assert!(expected.len() > 5, "the join has rows");
    assert_rows("q3", &results[0], &expected);
}

#[test]
fn q17_auction_statistics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, results) = run_queries(
        &pipeline("q17.yaml"),
        &dir.path().join("state"),
        &[("NEXMARK_EVENTS", "20000")],
        &[],
        &[
            "SELECT auction, CAST(day AS BIGINT) AS day, total_bids, rank1_bids, rank2_bids, \
           rank3_bids, min_price, max_price, avg_price, sum_price \
           FROM auction_stats ORDER BY auction",
        ],
    );
    let all = events(20_000, 10_000);
    let mut stats: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (_, b) in bids(&all) {
        stats.entry(b.auction).or_default().push(b.price);
    }
    let day = BASE_TIME_MS - BASE_TIME_MS % 86_400_000;
    let expected: Vec<Value> = stats
        .iter()
        .map(|(a, prices)| {
            let n = prices.len();
            let sum: usize = prices.iter().sum();
            json!({
                "auction": a, "day": day, "total_bids": n,
                "rank1_bids": prices.iter().filter(|p| **p < 10_000).count(),
                "rank2_bids": prices.iter().filter(|p| (10_000..1_000_000).contains(*p)).count(),
                "rank3_bids": prices.iter().filter(|p| **p >= 1_000_000).count(),
                "min_price": prices.iter().min(), "max_price": prices.iter().max(),
                "avg_price": sum as f64 / n as f64, "sum_price": sum,
            })
        })
        .collect();
    assert_rows("auction_stats", &results[0], &expected);
}

/// A pipeline with `settings` and retained tables of bids (the newest 50 by offset,
/// those of the last 5 seconds of event time, and both rules at once), then
/// `more_views`.
fn retained_yaml(settings: &str, more_views: &str) -> String {
    format!("{RETAINED_HEAD}{settings}{RETAINED_VIEWS}{more_views}")
}

const RETAINED_HEAD: &str = "name: retained
source: { type: nexmark, events: ${NEXMARK_EVENTS}, rate: 1000 }
envelope: { id: event_id, type: kind, key: event_id, timestamp: date_time }
";

const RETAINED_VIEWS: &str = "views:
  - name: newest
    table:
      filter: \"kind = 'bid'\"
      columns: { event_id: { expr: event_id, type: int64 }, price: { expr: price, type: int64 } }
      retain: { rows: 50 }
  - name: recent
    table:
      filter: \"kind = 'bid'\"
      columns: { event_id: { expr: event_id, type: int64 }, t: { expr: date_time, type: int64 } }
      retain: { age: 5s }
  - name: both
    table:
      filter: \"kind = 'bid'\"
      columns: { event_id: { expr: event_id, type: int64 } }
      retain: { rows: 1000000, age: 2s }
";

const RETAINED_SQL: [&str; 3] = [
    "SELECT event_id, price FROM newest ORDER BY event_id",
    "SELECT event_id, t FROM recent ORDER BY event_id",
    "SELECT event_id FROM both ORDER BY event_id",
];

/// What the three retained tables hold after the first `n` events.
fn retained_oracle(n: u64) -> Vec<Vec<Value>> {
    let all = events(n, 1_000);
    let bids = bids(&all);
    let newest_time = bids.iter().map(|(_, b)| b.date_time).max().expect("bids");
    let newest: Vec<Value> = bids[bids.len().saturating_sub(50)..]
        .iter()
        .map(|(i, b)| json!({"event_id": i, "price": b.price}))
        .collect();
    let within = |age: u64| {
        bids.iter()
            .filter(move |(_, b)| b.date_time >= newest_time - age)
            .map(|(i, b)| (*i, b.date_time))
    };
    let recent = within(5_000)
        .map(|(i, t)| json!({"event_id": i, "t": t}))
        .collect();
    let both = within(2_000).map(|(i, _)| json!({"event_id": i})).collect();
    vec![newest, recent, both]
}

fn assert_retained(results: &[Vec<Value>], n: u64) {
    let expected = retained_oracle(n);
    for ((name, actual), expected) in ["newest", "recent", "both"]
        .iter()
        .zip(results)
        .zip(&expected)
    {
        assert_rows(name, actual, expected);
    }
    assert_eq!(results[0].len(), 50);
    assert!(results[1].len() > 4_000 && results[2].len() < results[1].len());
}

#[test]
fn retention_is_the_same_for_any_worker_count_and_across_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("retained.yaml");
    std::fs::write(&file, retained_yaml("publish_interval: 5ms\n", "")).expect("write pipeline");
    for workers in ["1", "2", "3"] {
        let state = dir.path().join(format!("w{workers}"));
        let (_, results) = run_queries(
            &file,
            &state,
            &[("NEXMARK_EVENTS", "20000")],
            &["--workers", workers],
            &RETAINED_SQL,
        );
        assert_retained(&results, 20_000);
    }
    // Resume: 12,000 events, then the same state directory asked for 20,000 reads the
    // last 8,000 only (another worker count) and ends with the same tables.
    let state = dir.path().join("resumed");
    let (_, first) = run_queries(
        &file,
        &state,
        &[("NEXMARK_EVENTS", "12000")],
        &["--workers", "3"],
        &RETAINED_SQL,
    );
    assert_retained(&first, 12_000);
    let (out, results) = run_queries(
        &file,
        &state,
        &[("NEXMARK_EVENTS", "20000")],
        &["--workers", "2"],
        &RETAINED_SQL,
    );
    assert_eq!(
        common::summary(&out.stderr).read,
        8_000,
        "resumed at 12,000"
    );
    assert_retained(&results, 20_000);
}

/// Tables after kill -9 at random moments (restarted with other worker counts, then
/// finished with `--once`) hold every bid exactly once, like an uninterrupted run.
#[test]
fn kill_9_mid_run_leaves_no_duplicate_rows() {
    const EVENTS: u64 = 150_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = retained_yaml(
        "publish_interval: 20ms\ncheckpoint: { interval: 50ms }\n",
        "  - name: all_bids\n    table:\n      filter: \"kind = 'bid'\"\n      columns: { event_id: { expr: event_id, type: int64 }, price: { expr: price, type: int64 } }\n",
    );
    let file = dir.path().join("crash.yaml");
    std::fs::write(&file, &text).expect("write pipeline");
    let state = dir.path().join("state");
    let events_env = EVENTS.to_string();

    let mut rng = Rng(std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0e_c0de));
    let mut mid_stream = 0;
    for round in 0..8 {
        let workers = 1 + rng.below(3);
        let mut child = projector()
            .arg("run")
            .arg(&file)
            .args(["--quiet", "--http", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            .args(["--workers", &workers.to_string()])
            .env("NEXMARK_EVENTS", &events_env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start projector");
        let ms = 100 + rng.below(if round < 2 { 300 } else { 1_200 });
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let offsets: Vec<u64> = checkpoint_dirs(&state)
            .iter()
            .filter_map(|d| common::manifest(d)?["partitions"][0]["next_offset"].as_u64())
            .collect();
        if offsets.iter().any(|o| *o > 0 && *o < EVENTS) {
            mid_stream += 1;
        }
    }
    assert!(
        mid_stream >= 3,
        "the kills must interrupt the input ({mid_stream} did)"
    );

    let mut sql = RETAINED_SQL.to_vec();
    sql.push(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS distinct_ids, \
         sum(event_id) AS id_sum, sum(price) AS price_sum FROM all_bids",
    );
    let (_, results) = run_queries(&file, &state, &[("NEXMARK_EVENTS", &events_env)], &[], &sql);
    assert_retained(&results[..3], EVENTS);
    let all = events(EVENTS, 1_000);
    let bids = bids(&all);
    let id_sum: u64 = bids.iter().map(|(i, _)| i).sum();
    let price_sum: usize = bids.iter().map(|(_, b)| b.price).sum();
    assert_rows(
        "all_bids",
        &results[3],
        &[
            json!({"n": bids.len(), "distinct_ids": bids.len(), "id_sum": id_sum, "price_sum": price_sum}),
        ],
    );
}

#[test]
fn validate_reports_bad_table_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "name: bad
source: { type: nexmark, events: 10, rate: 0 }
envelope: { id: event_id, type: kind, key: event_id }
views:
  - name: t
    table:
      columns: { price: { expr: price, type: money } }
      retain: { rows: -1, age: 1m }
";
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, text).expect("write");
    let mut cmd = projector();
    cmd.arg("validate").arg(&file);
    let out = run(cmd, None, TIMEOUT);
    out.assert_code(2);
    let f = file.display();
    for line in [
        format!("config.invalid_value: {f}:2:44 source.rate: 0 is out of range"),
        format!("config.invalid_value: {f}:7:46 views[0].table.columns.price.type: "),
        format!("config.invalid_value: {f}:8:23 views[0].table.retain.rows: -1 is out of range"),
        format!(
            "config.invalid_value: {f}:8:27 views[0].table.retain.age: retain.age drops rows by event time"
        ),
    ] {
        assert!(
            out.stderr.lines().any(|l| l.starts_with(&line)),
            "missing `{line}` in\n{}",
            out.stderr
        );
    }
}
