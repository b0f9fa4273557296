//! Hostile input over HTTP: each query or connection pattern that once aborted the
//! process, ran past its deadline, starved `/health` or took gigabytes now gets a clear
//! error under the pipeline's `query:` limits, while ingestion goes on.

mod common;

use common::cluster::{Running, free_port, get_json, query_once, wait_for};
use common::oracle::expected;
use common::{assert_rows, file_pipeline, generator_pipeline, generator_records, replace_line};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The bank pipeline generating events for minutes (so ingestion is under way during
/// every query), over 20,000 accounts, with tight query limits.
fn pipeline(dir: &Path, limits: &str) -> std::path::PathBuf {
    let text = replace_line(&generator_pipeline(500_000_000), "  keys:", "keys: 20000");
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, format!("{text}query:\n{limits}")).unwrap();
    path
}

const LIMITS: &str = "  timeout: 20s
  max_rows: 5000
  max_result_bytes: 64KiB
  memory: 256KiB
  concurrency: 1
  queue: 1
";

/// `POST /sql`: status and JSON body.
fn sql(port: u16, query: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut r = agent
        .post(format!("http://127.0.0.1:{port}/sql"))
        .content_type("text/plain")
        .send(query)
        .expect("POST /sql");
    let body = r.body_mut().read_to_string().expect("body");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (r.status().as_u16(), json)
}

/// Asserts an error answer: its status, its code, and a message with `words`.
fn refused(answer: (u16, Value), status: u16, code: &str, words: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{message}");
}

/// Events the instance has read so far.
fn events_read(port: u16) -> u64 {
    get_json(port, "/status").expect("/status")["events"]["read"]
        .as_u64()
        .expect("events.read")
}

/// Asserts that the process never aborted, answers a query, and stops cleanly.
fn still_whole(mut running: Running, port: u16) {
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "the process exited"
    );
    let (status, body) = sql(port, "SELECT 1 AS one");
    assert_eq!((status, body[0]["one"].as_i64()), (200, Some(1)), "{body}");
    assert_eq!(running.terminate(30), Some(0));
}

fn start(dir: &Path, limits: &str) -> (Running, u16) {
    let port = free_port();
    let running = Running::start(&pipeline(dir, limits), &dir.join("state"), port, 1);
    assert!(
        wait_for(60, || get_json(port, "/status")
            .is_some_and(|s| s["epoch"].as_u64().unwrap_or(0) > 0)),
        "the instance did not publish an epoch"
    );
    (running, port)
}

#[test]
fn hostile_queries_get_clear_errors_while_ingestion_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (running, port) = start(dir.path(), LIMITS);

    // Deep expressions: refused before planning (they overflowed a query thread's
    // stack and aborted the process), while one just under the bound runs.
    let sum = |n: usize| format!("SELECT {} AS s", vec!["1"; n].join("+"));
    refused(sql(port, &sum(2000)), 400, "sql.too_complex", "IN (...)");
    let ors: Vec<String> = (0..2000).map(|i| format!("account_id = 'k{i}'")).collect();
    let lookup = format!("SELECT * FROM accounts WHERE {}", ors.join(" OR "));
    refused(sql(port, &lookup), 400, "sql.too_complex", "nest");
    let slices = "[1:1]".repeat(200_000);
    refused(
        sql(port, &format!("SELECT [1]{slices} AS a")),
        400,
        "sql.too_complex",
        "nest",
    );
    let (status, body) = sql(port, &sum(480));
    assert_eq!((status, body[0]["s"].as_i64()), (200, Some(480)), "{body}");

    // Function results beyond the bound, refused before they are allocated.
    for q in [
        "SELECT length(repeat('x', 1000000000))",
        "SELECT length(repeat('x', 2147483647))",
        "SELECT array_length(range(200000000))",
        "SELECT repeat(owner, 5000) FROM accounts",
        "SELECT length(lpad('x', 2000000000))",
        "SELECT cardinality(range(TIMESTAMP '2000-01-01', TIMESTAMP '2100-01-01', \
         INTERVAL '1 millisecond'))",
        "SELECT cardinality(array_repeat(repeat('x', 60000), 2000))",
        "WITH t AS (SELECT array_repeat(1, 3000) AS a) \
         SELECT cardinality(array_concat(a, a, a, a, a, a, a, a, a, a, a, a)) FROM t",
    ] {
        refused(sql(port, q), 400, "sql.resources_exhausted", "bytes");
    }
    // Rows, result bytes and memory: each limit named in its error.
    refused(
        sql(port, "SELECT 1 FROM accounts"),
        400,
        "sql.too_many_rows",
        "5000 rows (query.max_rows)",
    );
    refused(
        sql(port, "SELECT * FROM accounts LIMIT 4000"),
        400,
        "sql.result_too_large",
        "query.max_result_bytes",
    );
    refused(
        sql(
            port,
            "SELECT count(*) FROM accounts a JOIN accounts b ON a.owner = b.owner",
        ),
        400,
        "sql.resources_exhausted",
        "",
    );
    // A small answer is still an answer.
    let (status, body) = sql(port, "SELECT count(*) AS n FROM accounts");
    assert_eq!(status, 200, "{body}");
    assert!(body[0]["n"].as_u64().unwrap() > 0, "{body}");

    // The instance is whole: the process never aborted, and answers again.
    still_whole(running, port);
}

#[test]
fn a_query_past_its_deadline_is_stopped_while_health_and_ingestion_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // Memory enough for the join's sides: only time stops it.
    let limits = "  timeout: 3s\n  concurrency: 1\n  queue: 1\n";
    let (running, port) = start(dir.path(), limits);
    // A query that would run for hours. Stopped at its deadline, and meanwhile
    // /health answers and ingestion goes on. The one slot is taken, so a second query
    // waits and a third finds the queue full; the stopped query gives its slot up at
    // its deadline (not whenever its threads would next pause), so the second one
    // runs within its own deadline.
    let before = events_read(port);
    let cross = "SELECT count(*) FROM accounts a, accounts b, accounts c \
                 WHERE a.balance + b.balance + c.balance = 7";
    let started = Instant::now();
    let heavy = std::thread::spawn(move || sql(port, cross));
    std::thread::sleep(Duration::from_millis(500));
    let waiting = std::thread::spawn(move || sql(port, "SELECT 1 AS one"));
    std::thread::sleep(Duration::from_millis(300));
    refused(sql(port, "SELECT 2 AS two"), 429, "sql.busy", "query.queue");
    let mut healthy = 0;
    while !heavy.is_finished() {
        let health = get_json(port, "/health").expect("/health answers during the query");
        assert_eq!(health["status"], "ok", "{health}");
        healthy += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    refused(heavy.join().unwrap(), 400, "sql.timeout", "query.timeout");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "stopped after {took:?}");
    assert!(healthy >= 3, "/health answered {healthy} times");
    let (status, body) = waiting.join().unwrap();
    assert_eq!((status, body[0]["one"].as_i64()), (200, Some(1)), "{body}");
    assert!(
        events_read(port) > before,
        "ingestion went on during the query"
    );

    // A client that gives up: its query ends by its deadline at the latest (sooner
    // when the connection's end is noticed), slot and all, although nothing in a
    // cross join without a filter checks the deadline.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .into();
    let product = "SELECT sum(a.balance * b.balance * c.balance) AS s \
                   FROM accounts a, accounts b, accounts c";
    let gave_up = agent
        .post(format!("http://127.0.0.1:{port}/sql"))
        .send(product);
    assert!(gave_up.is_err(), "the client timed out");
    let queries_running = || {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let text = agent
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with("projector_query_running"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let started = Instant::now();
    assert!(
        wait_for(10, || queries_running() == Some(0)),
        "the abandoned query still runs"
    );
    let ended = started.elapsed();
    assert!(ended < Duration::from_secs(10), "{ended:?}");
    let (status, body) = sql(port, "SELECT 1 AS one");
    assert_eq!((status, body[0]["one"].as_i64()), (200, Some(1)), "{body}");

    still_whole(running, port);
}

#[test]
fn idle_connections_cannot_starve_health() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, port) = start(dir.path(), "  timeout: 30s\n");
    // More connections than the instance keeps open, none sending a byte.
    let idle: Vec<std::net::TcpStream> = (0..1100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() > 1024, "opened {}", idle.len());
    // /health answers once the idle ones are closed for saying nothing in time.
    assert!(
        wait_for(30, || get_json(port, "/health")
            .is_some_and(|h| h["status"] == "ok")),
        "/health did not answer with 1,100 idle connections open"
    );
    // Each idle connection was closed by the instance (after its header timeout, or
    // at once beyond the cap): reading it comes to an end instead of timing out.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let read = s.read_to_end(&mut Vec::new());
        assert!(
            match &read {
                Ok(_) => true,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            },
            "an idle connection is still open: {read:?}"
        );
    }
    // A body that trickles in: the request is answered (or the connection closed)
    // once its time is up, instead of holding the connection for ever.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"POST /sql HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nSE")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok() || !answer.is_empty(),
        "a trickling body held its connection: {read:?}"
    );
    assert_eq!(running.terminate(30), Some(0));
}

#[test]
fn an_oversize_line_is_dead_lettered_with_a_prefix_and_a_hash() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let records = generator_records(2_000, 100, 7);
    // 200 MB of NUL bytes on one line, between two halves of ordinary events. Written
    // and hashed a MiB at a time: memory this process holds would count in its
    // child's peak (the child is forked from it).
    let huge_len = 200u64 << 20;
    let mut hasher = sha2::Sha256::new();
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(dir.path().join("events.ndjson")).unwrap());
    for (i, (_, bytes)) in records.iter().enumerate() {
        if i == 1_000 {
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..huge_len >> 20 {
                file.write_all(&zeros).unwrap();
                hasher.update(&zeros);
            }
            file.write_all(b"\n").unwrap();
        }
        file.write_all(bytes).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let hash: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, file_pipeline("events.ndjson", "dead_letter")).unwrap();
    let state = dir.path().join("state");

    let rows = query_once(
        &pipeline,
        &state,
        "SELECT * FROM accounts ORDER BY account_id",
    );
    assert_rows("accounts", &rows, &expected(&records).accounts_json());
    // The line was never held whole: the run's peak memory is far below its size
    // (it was 1.85 GB for a 100 MB line).
    let peak_kb = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss();
    assert!(peak_kb < 160 << 10, "peak RSS {peak_kb} KiB");

    let letters = std::fs::read_to_string(state.join("dead-letters.ndjson")).unwrap();
    let letters: Vec<Value> = letters
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["error"]["code"], "record.too_large", "{letter}");
    assert_eq!(letter["source"]["offset"], 1_000, "{letter}");
    assert_eq!(
        letter["raw"].as_str().unwrap().len(),
        4096,
        "a 4 KiB prefix"
    );
    let message = letter["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&hash) && message.contains(&huge_len.to_string()),
        "{message}"
    );
}
