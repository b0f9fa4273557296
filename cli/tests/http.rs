//! Binary-level tests of the HTTP API of `projector run --http` and of `projector query`,
//! compared with the independent oracle (`common/oracle.rs`).

mod common;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use common::oracle::{self, Expected};
use common::{
    assert_rows, assert_text_rows, file_pipeline, json_lines, mixed_input, parse_tables, projector,
    run, split_records,
};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ACCOUNTS_SQL: &str = "SELECT * FROM accounts ORDER BY account_id";
const VOLUME_SQL: &str = "SELECT * FROM volume_by_type ORDER BY event_type";

/// A running `projector run --http`, killed (by PID) when dropped.
struct Server {
    child: Child,
    port: u16,
    stderr: PathBuf,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Status, content type and body of a response.
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    /// `x-projector-partitions` and `x-projector-missing-partitions`.
    partitions: (Option<String>, Option<String>),
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected JSON ({e}), got {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("HTTP request");
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let partitions = (
        header("x-projector-partitions"),
        header("x-projector-missing-partitions"),
    );
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("reading the body");
    Reply {
        status: r.status().as_u16(),
        content_type,
        body,
        partitions,
    }
}

fn get(agent: &ureq::Agent, url: &str) -> Reply {
    reply(agent.get(url).call())
}

fn post(agent: &ureq::Agent, url: &str, content_type: &str, body: &str) -> Reply {
    reply(
        agent
            .post(url)
            .header("content-type", content_type)
            .send(body),
    )
}

/// Starts the pipeline with the HTTP API on a free port (retrying if the port was taken)
/// and waits until `/health` answers.
fn start(pipeline: &Path, state: &Path, dir: &Path) -> Server {
    let agent = agent();
    for attempt in 0..5 {
        let port = free_port();
        let stderr = dir.join(format!("server-{attempt}.stderr"));
        let child = projector()
            .current_dir(dir)
            .arg("run")
            .arg(pipeline)
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state)
            .args(["--workers", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawning projector");
        let mut server = Server {
            child,
            port,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().expect("try_wait") {
                let err = server.stderr();
                if err.contains("binding the HTTP API") {
                    break; // somebody took the port: try another
                }
                panic!("projector exited early ({status}):\n{err}");
            }
            if let Ok(r) = agent.get(&server.url("/health")).call()
                && r.status().as_u16() == 200
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the HTTP API did not come up:\n{}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no free port after 5 attempts");
}

/// Polls `/status` until the input is fully read and its last epoch published (the
/// `finished` state; `events.read` reaching the count alone would not say the views are
/// published yet).
fn wait_finished(agent: &ureq::Agent, server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = get(agent, &server.url("/status")).json();
        if status["state"] == "finished" {
            return status;
        }
        assert_ne!(status["state"], "failed", "{status}");
        assert!(
            Instant::now() < deadline,
            "not finished: {status}\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rows of Arrow batches as JSON objects (strings, int64 and float64 columns).
fn batches_to_rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut rows = Vec::new();
    for b in batches {
        let schema = b.schema();
        for r in 0..b.num_rows() {
            let mut row = Map::new();
            for (i, f) in schema.fields().iter().enumerate() {
                let col = b.column(i);
                let v = if col.is_null(r) {
                    Value::Null
                } else {
                    match f.data_type() {
                        DataType::Utf8 => json!(col.as_string::<i32>().value(r)),
                        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(r)),
                        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(r)),
                        other => panic!("unexpected column type {other}"),
                    }
                };
                row.insert(f.name().clone(), v);
            }
            rows.push(Value::Object(row));
        }
    }
    rows
}

/// Keeps only `columns` of each row.
fn project(rows: &[Value], columns: &[&str]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            Value::Object(
                columns
                    .iter()
                    .map(|c| (c.to_string(), r[*c].clone()))
                    .collect(),
            )
        })
        .collect()
}

/// Sets up a file-source pipeline over `input` and its oracle.
fn setup(input: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf, String, Expected) {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, input).expect("writing events");
    let pipeline = dir.path().join("bank.yaml");
    std::fs::write(
        &pipeline,
        file_pipeline(&events.display().to_string(), "dead_letter"),
    )
    .expect("writing the pipeline");
    let partition = format!("file:{}", events.display());
    let state = dir.path().join("state");
    let exp = oracle::expected(&split_records(input));
    (dir, pipeline, state, partition, exp)
}

fn sigterm(server: &mut Server) {
    let pid = server.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(sent.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "projector did not exit within 5 s of SIGTERM:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM:\n{}",
        server.stderr()
    );
}

#[test]
fn http_api_serves_views_status_and_sql() {
    let input = mixed_input(false);
    let (dir, pipeline, state, partition, exp) = setup(&input);
    let records = split_records(&input);
    let mut server = start(&pipeline, &state, dir.path());
    let agent = agent();

    // GET /status: counters and positions once everything is published.
    let status = wait_finished(&agent, &server);
    assert_eq!(status["pipeline"], "bank-accounts");
    assert_eq!(status["workers"], 2);
    assert_eq!(status["error"], Value::Null);
    assert_eq!(
        status["events"],
        json!({
            "read": exp.read,
            "applied": exp.applied,
            "duplicates": exp.duplicates,
            "dead_letters": exp.bad.len(),
            "skipped": 0,
            "ignored": 0,
        }),
        "{status}"
    );
    let end = records.last().expect("records").0 + 1;
    assert_eq!(
        status["partitions"],
        json!([{
            "partition": partition,
            "unit": partition,
            "next_offset": end,
            "published_offset": end,
            "published_epoch": status["epoch"],
            "assigned": true,
            "assignments": 1,
            "high_watermark": null,
            "lag": null,
            "checkpoint_epoch": status["checkpoint"]["epoch"],
            "checkpoint_age_ms": status["partitions"][0]["checkpoint_age_ms"],
        }]),
        "{status}"
    );

    // GET /health.
    let health = get(&agent, &server.url("/health"));
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));

    // GET /views: names, kinds, column types, row counts.
    let views = get(&agent, &server.url("/views"));
    assert_eq!(views.status, 200);
    let columns = |cols: &[(&str, &str, bool)]| -> Value {
        cols.iter()
            .map(|(n, t, nullable)| json!({"name": n, "type": t, "nullable": nullable}))
            .collect()
    };
    assert_eq!(
        views.json(),
        json!([
            {
                "name": "accounts",
                "kind": "fold",
                "columns": columns(&[
                    ("account_id", "Utf8", false),
                    ("owner", "Utf8", true),
                    ("balance", "Int64", true),
                    ("deposits", "Int64", true),
                    ("last_version", "Int64", true),
                ]),
                "rows": exp.accounts.len(),
            },
            {
                "name": "volume_by_type",
                "kind": "aggregate",
                "columns": columns(&[
                    ("event_type", "Utf8", true),
                    ("events", "Int64", false),
                    ("total", "Float64", true),
                    ("largest", "Float64", true),
                    ("average", "Float64", true),
                ]),
                "rows": exp.volume.len(),
            },
        ])
    );

    // POST /sql: a text body and a JSON body give JSON rows.
    let sql = server.url("/sql");
    let r = post(&agent, &sql, "text/plain", ACCOUNTS_SQL);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.content_type.starts_with("application/json"));
    // The instance owns the only partition: the answer covers all of them.
    assert_eq!(r.partitions, (Some("1/1".to_string()), None));
    assert_rows(
        "accounts (text body)",
        r.json().as_array().expect("array"),
        &exp.accounts_json(),
    );
    let body = json!({ "sql": VOLUME_SQL }).to_string();
    let r = post(&agent, &sql, "application/json", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_rows(
        "volume (JSON body)",
        r.json().as_array().expect("array"),
        &exp.volume_json(),
    );

    // ?format=csv.
    let r = post(
        &agent,
        &format!("{sql}?format=csv"),
        "text/plain",
        VOLUME_SQL,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
    let split = |t: &str| -> Vec<Vec<String>> {
        t.lines()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    let lines = split(r.text());
    assert_text_rows("csv volume", &lines[0], &lines[1..], &exp.volume_json());
    let cols = ["account_id", "balance", "deposits"];
    let q = "SELECT account_id, balance, deposits FROM accounts ORDER BY account_id";
    let r = post(&agent, &format!("{sql}?format=csv"), "text/plain", q);
    let lines = split(r.text());
    assert_text_rows(
        "csv accounts",
        &lines[0],
        &lines[1..],
        &project(&exp.accounts_json(), &cols),
    );

    // ?format=arrow: an Arrow IPC stream with the view's schema.
    let r = post(
        &agent,
        &format!("{sql}?format=arrow"),
        "text/plain",
        ACCOUNTS_SQL,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type, "application/vnd.apache.arrow.stream");
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body), None)
        .expect("an Arrow IPC stream");
    let schema = reader.schema();
    let fields: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        fields,
        [
            ("account_id".to_string(), DataType::Utf8),
            ("owner".to_string(), DataType::Utf8),
            ("balance".to_string(), DataType::Int64),
            ("deposits".to_string(), DataType::Int64),
            ("last_version".to_string(), DataType::Int64),
        ]
    );
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("reading batches");
    assert_rows(
        "accounts (arrow)",
        &batches_to_rows(&batches),
        &exp.accounts_json(),
    );

    // Errors: 400 with a stable code.
    let error_code = |r: &Reply| r.json()["error"]["code"].as_str().map(str::to_string);
    let r = post(&agent, &sql, "text/plain", "SELEC * FROM accounts");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_code(&r).as_deref(), Some("sql.parse"), "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let copy_target = dir.path().join("copied.csv");
    for statement in [
        "CREATE TABLE t (a INT)".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "INSERT INTO volume_by_type (event_type, events, total, largest, average) VALUES ('x', 1, 1.0, 1.0, 1.0)".to_string(),
        "DELETE FROM accounts".to_string(),
        format!("COPY accounts TO '{}'", copy_target.display()),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "DROP TABLE accounts".to_string(),
    ] {
        let r = post(&agent, &sql, "text/plain", &statement);
        assert_eq!(r.status, 400, "{statement}: {}", r.text());
        assert_eq!(
            error_code(&r).as_deref(),
            Some("sql.read_only"),
            "{statement}: {}",
            r.text()
        );
    }
    assert!(!copy_target.exists(), "COPY must not write a file");
    let r = post(&agent, &sql, "text/plain", "SELECT * FROM no_such_view");
    assert_eq!(
        (r.status, error_code(&r).as_deref()),
        (400, Some("sql.plan"))
    );
    let r = post(&agent, &sql, "text/plain", "  ");
    assert_eq!(r.status, 400, "{}", r.text());
    // Nothing was changed by the refused statements.
    let r = post(&agent, &sql, "text/plain", ACCOUNTS_SQL);
    assert_rows(
        "accounts after refused statements",
        r.json().as_array().expect("array"),
        &exp.accounts_json(),
    );

    // `projector query`: a table by default, JSON and CSV on request, errors exit 1.
    let base = server.url("");
    let query = |args: &[&str]| {
        let mut cmd = projector();
        cmd.arg("query").arg("--url").arg(&base).args(args);
        run(cmd, None, Duration::from_secs(30))
    };
    let q = "SELECT account_id, balance, deposits FROM accounts ORDER BY account_id";
    let out = query(&[q]);
    out.assert_code(0);
    let tables = parse_tables(out.stdout_text());
    assert_eq!(tables.len(), 1, "{}", out.stdout_text());
    assert_eq!(tables[0].0, cols);
    assert_text_rows(
        "query table",
        &tables[0].0,
        &tables[0].1,
        &project(&exp.accounts_json(), &cols),
    );
    let out = query(&["--format", "json", VOLUME_SQL]);
    out.assert_code(0);
    assert_eq!(json_lines(&out.stdout).len(), 1);
    assert_rows(
        "query json",
        &json_lines(&out.stdout)[0],
        &exp.volume_json(),
    );
    let out = query(&["--format", "csv", VOLUME_SQL]);
    out.assert_code(0);
    let lines = split(out.stdout_text());
    assert_text_rows("query csv", &lines[0], &lines[1..], &exp.volume_json());
    let out = query(&["DROP TABLE accounts"]);
    out.assert_code(1);
    assert!(out.stderr.contains("sql.read_only"), "{}", out.stderr);

    // SIGTERM: a clean exit with code 0.
    sigterm(&mut server);
    assert!(server.stderr().contains("stopping"), "{}", server.stderr());
}

#[test]
fn query_reports_an_unreachable_server() {
    let mut cmd = projector();
    cmd.arg("query")
        .arg("--url")
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .arg("SELECT 1");
    let out = run(cmd, None, Duration::from_secs(30));
    out.assert_code(1);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
}

/// `EXPLAIN` is a read-only query; the engine wraps every plan in a row limit, and
/// DataFusion rejects a limit above `Explain` with an internal error.
#[test]
fn explain_is_a_query() {
    let input =
        br#"{"eventType":"AccountOpened","aggregateId":"a","version":1,"payload":{"owner":"A"}}"#;
    let (dir, pipeline, state, _, _) = setup(input);
    let mut server = start(&pipeline, &state, dir.path());
    let agent = agent();
    wait_finished(&agent, &server);
    let r = post(
        &agent,
        &server.url("/sql"),
        "text/plain",
        "EXPLAIN SELECT * FROM accounts",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    sigterm(&mut server);
}

/// Every error answer has the JSON error shape, also those of no handler: an unknown
/// path (404), a wrong method (405), a body over the limit (413) and a missing query
/// parameter (400).
#[test]
fn every_error_answer_is_json() {
    let input =
        br#"{"eventType":"AccountOpened","aggregateId":"a","version":1,"payload":{"owner":"A"}}"#;
    let (dir, pipeline, state, _, _) = setup(input);
    let mut server = start(&pipeline, &state, dir.path());
    let agent = agent();
    wait_finished(&agent, &server);
    let big = "x".repeat((2 << 20) + 1024);
    let cases = [
        (get(&agent, &server.url("/nope")), 404, "http.not_found"),
        (
            reply(agent.delete(server.url("/sql")).call()),
            405,
            "http.method_not_allowed",
        ),
        (
            // On a connection of its own: the server stops reading at the limit.
            post(&self::agent(), &server.url("/sql"), "text/plain", &big),
            413,
            "http.too_large",
        ),
        (
            post(&agent, &server.url("/parked/retry"), "text/plain", ""),
            400,
            "http.bad_request",
        ),
    ];
    // A regular expression too large to compile is the query's fault, said so: not
    // DataFusion's "Internal error, please file a bug".
    let r = post(
        &agent,
        &server.url("/sql"),
        "text/plain",
        "SELECT regexp_like(owner, 'a{1000}{1000}') FROM accounts",
    );
    let v = r.json();
    assert_eq!(v["error"]["code"], "sql.execution", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("regular expression") && !message.contains("bug"),
        "{message}"
    );
    for (r, status, code) in cases {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.content_type
        );
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    sigterm(&mut server);
}
