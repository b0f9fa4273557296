//! Helpers shared by the binary-level tests: running `projector`, building pipelines and
//! inputs, comparing outputs with the [`oracle`].

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod cluster;
pub(crate) mod oracle;

use projector_connectors::generator::{GeneratorConfig, GeneratorSource, Scenario};
use projector_connectors::{Poll, RawBatch, Resume, Source};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A `projector` command with a clean environment for the variables it reads.
pub(crate) fn projector() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_projector"));
    cmd.env_remove("PROJECTOR_LOG").env_remove("PROJECTOR_URL");
    // The tests' S3 server takes any credentials; never a developer's real ones.
    cmd.env("AWS_ACCESS_KEY_ID", "projector-test")
        .env("AWS_SECRET_ACCESS_KEY", "projector-test")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT")
        .env_remove("AWS_PROFILE");
    cmd
}

/// What a finished `projector` process left behind.
#[derive(Debug)]
pub(crate) struct Output {
    /// The exit code (`None` if killed by a signal).
    pub(crate) code: Option<i32>,
    /// Everything written to stdout.
    pub(crate) stdout: Vec<u8>,
    /// Everything written to stderr (lossy UTF-8).
    pub(crate) stderr: String,
}

impl Output {
    /// Stdout as text (panics if it is not UTF-8).
    pub(crate) fn stdout_text(&self) -> &str {
        std::str::from_utf8(&self.stdout).expect("stdout is UTF-8")
    }

    /// Panics with both streams unless the exit code is `code`.
    pub(crate) fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout (first 2000 bytes):\n{}\n--- stderr:\n{}",
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)]),
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion, feeding it `stdin` (or nothing), and kills it (failing the
/// test) if it runs longer than `timeout`.
pub(crate) fn run(mut cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning projector");
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        std::thread::spawn(move || {
            // The process may exit before reading everything (e.g. on_error: fail).
            let _ = pipe.write_all(&bytes);
        })
    });
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for projector") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned();
    let Some(status) = status else {
        panic!("projector ran longer than {timeout:?} and was killed\n--- stderr:\n{stderr}");
    };
    Output {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// The text of `pipelines/bank-accounts.yaml`.
pub(crate) fn bank_yaml() -> String {
    std::fs::read_to_string(bank_yaml_path()).expect("reading pipelines/bank-accounts.yaml")
}

/// The path of `pipelines/bank-accounts.yaml`.
pub(crate) fn bank_yaml_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/bank-accounts.yaml")
}

/// Replaces the one line of `text` that begins with `prefix` (indentation included) by
/// `line` (indented like the old line).
pub(crate) fn replace_line(text: &str, prefix: &str, line: &str) -> String {
    let mut hits = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(prefix) {
                hits += 1;
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}{}", line.trim_start())
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(hits, 1, "expected one line starting with {prefix:?}");
    out.join("\n") + "\n"
}

/// The integer value of the (only) line `key: N` of a YAML text, ignoring comments.
pub(crate) fn yaml_int(text: &str, key: &str) -> u64 {
    let prefix = format!("{key}:");
    let mut found = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(&prefix))
        .map(|rest| {
            let value = rest.split('#').next().unwrap_or("").trim();
            value.parse::<u64>().expect("an integer value")
        });
    let v = found.next().expect("the key is present");
    assert!(found.next().is_none(), "{key} appears once");
    v
}

/// The bank pipeline with `events` events.
pub(crate) fn generator_pipeline(events: u64) -> String {
    // `  events:` in the source block, not the `events: "count(*)"` column.
    replace_line(&bank_yaml(), "  events:", &format!("events: {events}"))
}

/// The bank pipeline reading `path` (as written in the file) with `on_error: policy`.
pub(crate) fn file_pipeline(path: &str, policy: &str) -> String {
    let text = replace_line(&bank_yaml(), "on_error:", &format!("on_error: {policy}"));
    let mut out = String::new();
    let mut in_source = false;
    for line in text.lines() {
        if line == "source:" {
            in_source = true;
            out.push_str(&format!(
                "source:\n  type: file\n  path: {}\n",
                serde_json::to_string(path).expect("path as a YAML double-quoted string")
            ));
            continue;
        }
        if in_source && line.starts_with(' ') {
            continue;
        }
        in_source = false;
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        out.contains("type: file"),
        "no source block in the pipeline"
    );
    out
}

/// All records of a generator run, as the engine's generator source produces them.
pub(crate) fn generator_records(events: u64, keys: u64, seed: u64) -> Vec<(u64, Vec<u8>)> {
    let config = GeneratorConfig {
        scenario: Scenario::Bank,
        events,
        keys,
        seed,
    };
    let mut source = GeneratorSource::new(&config, &Resume::new());
    let mut batch = RawBatch::default();
    let mut out = Vec::with_capacity(events as usize);
    loop {
        batch.clear();
        match source.poll(&mut batch, 4096).expect("generator poll") {
            Poll::Ready => out.extend(
                batch
                    .records
                    .iter()
                    .map(|r| (r.offset, batch.bytes(r).to_vec())),
            ),
            Poll::Idle => {}
            Poll::Exhausted => break,
        }
    }
    assert_eq!(out.len() as u64, events);
    out
}

/// The records of newline-delimited input as the reference defines them: one per line,
/// without its `\n` (a `\r` stays); blank and whitespace-only lines give no record but
/// count, so the offset is the 0-based line number.
pub(crate) fn split_records(input: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    if input.ends_with(b"\n") {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i as u64, l.to_vec()))
        .collect()
}

/// Builds newline-delimited input line by line.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    bytes: Vec<u8>,
    next_id: u64,
}

impl Lines {
    /// Appends one line (a `\n` is added).
    pub(crate) fn raw(&mut self, line: impl AsRef<[u8]>) -> &mut Self {
        self.bytes.extend_from_slice(line.as_ref());
        self.bytes.push(b'\n');
        self
    }

    /// Appends an event with every envelope field given.
    pub(crate) fn event(
        &mut self,
        event_type: &str,
        key: Value,
        version: Value,
        payload: Value,
    ) -> &mut Self {
        let line = self.event_bytes(event_type, key, version, payload);
        self.raw(line)
    }

    /// The bytes of an event like [`Lines::event`] would append.
    pub(crate) fn event_bytes(
        &mut self,
        event_type: &str,
        key: Value,
        version: Value,
        payload: Value,
    ) -> Vec<u8> {
        self.next_id += 1;
        serde_json::to_vec(&json!({
            "eventId": format!("t-{}", self.next_id),
            "eventType": event_type,
            "aggregateId": key,
            "version": version,
            "timestamp": 1_714_564_800_000i64 + self.next_id as i64,
            "payload": payload,
        }))
        .expect("serializing an event")
    }

    /// The input built so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The input built so far, consumed.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A file/stdin input exercising every rule of the reference: 3000 generator events,
/// then hand-written cases (duplicates, out-of-order versions, delete and re-create, an
/// unhandled type, bad records of every kind, CRLF, deep nesting), then replays of
/// generator events. With `huge`, two ~1 MB lines (one good, one bad) are included.
pub(crate) fn mixed_input(huge: bool) -> Vec<u8> {
    let mut l = Lines::default();
    for (_, raw) in generator_records(3000, 100, 7) {
        l.raw(raw);
    }
    let s = |x: &str| json!(x);
    let alice = || json!("t-alice");

    // A life cycle with duplicates and out-of-order versions.
    l.event(
        "AccountOpened",
        alice(),
        json!(1),
        json!({"owner": "Alice"}),
    );
    let deposit = l.event_bytes("MoneyDeposited", alice(), json!(2), json!({"amount": 100}));
    l.raw(&deposit);
    l.raw(&deposit); // exact duplicate
    l.raw(""); // blank line: no record, but counts as a line
    let mut crlf = l.event_bytes("MoneyWithdrawn", alice(), json!(3), json!({"amount": 30}));
    crlf.push(b'\r');
    l.raw(crlf); // CRLF line: JSON whitespace, a good record
    l.event("MoneyDeposited", alice(), json!(2), json!({"amount": 50})); // older version
    l.event(
        "MoneyDeposited",
        alice(),
        json!(3),
        json!({"amount": "abc"}),
    ); // duplicate, bad payload
    l.event(
        "MoneyDeposited",
        alice(),
        json!(4),
        json!({"amount": "abc"}),
    ); // bad: string
    l.event("MoneyDeposited", alice(), json!(4), json!({"amount": 7.0})); // version 4 still free
    l.event("MoneyDeposited", alice(), json!(5), json!({"amount": 2.5})); // bad: fraction
    l.event("MoneyWithdrawn", alice(), json!(5), json!({"amount": 2.5})); // bad: fraction
    l.event(
        "MoneyWithdrawn",
        alice(),
        json!(5),
        json!({"amount": "abc"}),
    ); // bad: -'abc'
    l.event("MoneyWithdrawn", alice(), json!(5), json!({"amount": true})); // bad: -true
    l.event(
        "MoneyDeposited",
        alice(),
        json!(5),
        json!({"amount": {"v": 1}}),
    ); // bad: object
    l.event(
        "MoneyDeposited",
        alice(),
        json!(5),
        json!({"amount": i64::MAX}),
    ); // bad: overflow
    l.event(
        "MoneyWithdrawn",
        alice(),
        json!(5),
        json!({"amount": i64::MIN}),
    ); // bad: -(MIN)
    l.event("MoneyDeposited", alice(), json!(5), json!({"amount": null})); // adds nothing
    l.event("MoneyDeposited", alice(), json!(6), json!({})); // amount missing
    l.raw("   \t "); // whitespace-only line
    l.event("AccountClosed", alice(), json!(8), json!({}));
    l.event("MoneyDeposited", alice(), json!(7), json!({"amount": 1})); // cannot resurrect
    l.event(
        "AccountOpened",
        alice(),
        json!(1),
        json!({"owner": "Alice"}),
    ); // replay
    l.event(
        "AccountOpened",
        alice(),
        json!(9),
        json!({"owner": "Alice Again"}),
    ); // re-created
    let mut bad_crlf = l.event_bytes("MoneyDeposited", alice(), json!(10), json!({"amount": "x"}));
    bad_crlf.push(b'\r');
    l.raw(bad_crlf); // bad, and its raw bytes keep the \r
    l.event("MoneyDeposited", alice(), json!(10), json!({"amount": 5}));

    // A delete before anything else for a key, then older and newer events.
    l.event("AccountClosed", s("t-ghost"), json!(3), json!({}));
    l.event(
        "MoneyDeposited",
        s("t-ghost"),
        json!(2),
        json!({"amount": 10}),
    );
    l.event(
        "MoneyDeposited",
        s("t-ghost"),
        json!(4),
        json!({"amount": 40}),
    );

    // Event types without a handler: only "*" runs; they are aggregated.
    l.event(
        "AccountFrozen",
        s("t-frozen"),
        json!(1),
        json!({"reason": "audit"}),
    );
    l.event("Refund", s("t-refund"), json!(1), json!({"amount": 2.5}));
    l.event("Refund", s("t-refund2"), json!(1), json!({"amount": "abc"})); // bad in the aggregate only
    l.raw(
        r#"{"eventType":"Refund","aggregateId":"t-refund","version":2,"payload":{"amount":1e3}}"#,
    );
    l.event("Refund", s("t-refund"), json!(3), json!({"amount": -4}));

    // Keys and owners of other kinds.
    l.event(
        "AccountOpened",
        json!(12345),
        json!(1),
        json!({"owner": 42}),
    );
    l.event(
        "AccountOpened",
        s("t-bool"),
        json!(1),
        json!({"owner": true}),
    );
    l.event(
        "AccountOpened",
        s("t-ü漢字🦀"),
        json!(1),
        json!({"owner": "Zoë \"Q\" \\ \u{2028}"}),
    );
    l.event(
        "AccountOpened",
        s("t-vfloat"),
        json!(1.0),
        json!({"owner": "F"}),
    );
    l.raw(
        r#"   {"eventType":"AccountOpened","aggregateId":"t-ws","version":1,"timestamp":null}  "#,
    );
    l.raw(r#"{"eventType":"AccountOpened","aggregateId":"t-ts","version":1,"timestamp":"2024-05-01T12:00:00+02:00"}"#);

    // Bad envelopes.
    l.event("AccountOpened", s("t-v"), json!("3"), json!({})); // version: string
    l.event("AccountOpened", s("t-v"), json!(2.5), json!({})); // version: fraction
    l.event("AccountOpened", s("t-v"), json!(null), json!({})); // version: null
    l.raw(r#"{"eventType":"AccountOpened","aggregateId":"t-v","payload":{}}"#); // version missing
    l.raw(r#"{"eventType":"AccountOpened","version":1}"#); // key missing
    l.event("AccountOpened", json!(null), json!(1), json!({})); // key null
    l.event("AccountOpened", json!(true), json!(1), json!({})); // key bool
    l.event("AccountOpened", json!(1.5), json!(1), json!({})); // key float
    l.raw(r#"{"aggregateId":"t-et","version":1}"#); // type missing
    l.raw(r#"{"eventType":5,"aggregateId":"t-et","version":1}"#); // type not a string
    l.raw(
        r#"{"eventType":"AccountOpened","aggregateId":"t-et","version":1,"timestamp":"yesterday"}"#,
    );
    l.raw(r#"{"eventType":"AccountOpened","aggregateId":"t-et","version":1,"timestamp":true}"#);

    // Bad JSON.
    l.raw(r#"{"eventId": nope}"#);
    l.raw(r#"{"eventId":"x","eventType":"MoneyDeposited","aggregateId":"t-alice","version":11,"payload":{"amount":5"#);
    l.raw("[1,2]");
    l.raw(r#""just a string""#);
    l.raw("42");
    l.raw("null");
    l.raw("[1,2");
    l.raw(b"{\"eventType\":\"AccountOpened\",\"aggregateId\":\"t-bin\",\"version\":1,\"payload\":{\"owner\":\"\xff\xfe\"}}");
    l.raw(b"\xff{\"a\":1}");
    l.raw(r#"{"eventType":"AccountOpened","aggregateId":"t-x","version":1} extra"#);
    l.raw("{\"eventType\":\"AccountOpened\",\"aggregateId\":\"t-ctl\",\"version\":1,\"payload\":{\"owner\":\"a\tb\"}}");

    // Nesting in a field nobody reads: moderate, and deeper than serde_json's default
    // recursion limit (valid JSON all the same).
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    l.raw(format!(
        r#"{{"eventType":"AccountFrozen","aggregateId":"t-deep","version":1,"meta":{}}}"#,
        nested(40)
    ));
    l.raw(format!(
        r#"{{"eventType":"AccountFrozen","aggregateId":"t-deeper","version":1,"meta":{}}}"#,
        nested(100_000)
    ));

    if huge {
        let note = "x".repeat(1 << 20);
        l.event(
            "MoneyDeposited",
            alice(),
            json!(11),
            json!({"amount": 1, "note": note}),
        );
        l.event(
            "MoneyDeposited",
            alice(),
            json!(12),
            json!({"amount": "1", "note": note}),
        );
    }

    // Replays of generator events: all duplicates.
    for (_, raw) in generator_records(40, 100, 7) {
        l.raw(raw);
    }
    // The last line has no newline.
    let mut bytes = l.into_bytes();
    bytes.extend_from_slice(br#"{"eventType":"MoneyDeposited","aggregateId":"t-ghost","version":5,"payload":{"amount":2}}"#);
    bytes
}

/// Parses stdout of `--format json` runs: one JSON array per non-empty line.
pub(crate) fn json_lines(stdout: &[u8]) -> Vec<Vec<Value>> {
    std::str::from_utf8(stdout)
        .expect("stdout is UTF-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("expected a JSON array line, got {other:?}"),
        })
        .collect()
}

/// True when two floats are equal up to rounding (sums may be added in another order).
pub(crate) fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Whether an actual JSON value matches an expected one: numbers must be of the same
/// kind (integer or float), floats equal up to rounding, everything else exactly.
pub(crate) fn value_matches(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            if e.is_f64() {
                a.is_f64() && close(a.as_f64().unwrap_or(f64::NAN), e.as_f64().unwrap_or(0.0))
            } else {
                !a.is_f64() && a.as_i64() == e.as_i64()
            }
        }
        _ => actual == expected,
    }
}

/// Asserts that `actual` rows equal `expected` rows, in order, with the same columns.
pub(crate) fn assert_rows(what: &str, actual: &[Value], expected: &[Value]) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let (Some(ao), Some(eo)) = (a.as_object(), e.as_object()) else {
            panic!("{what}: row {i} is not an object: {a}");
        };
        let mut ak: Vec<&String> = ao.keys().collect();
        let mut ek: Vec<&String> = eo.keys().collect();
        ak.sort();
        ek.sort();
        assert_eq!(ak, ek, "{what}: columns of row {i}");
        for (k, ev) in eo {
            assert!(
                value_matches(&ao[k], ev),
                "{what}: row {i}, column {k}: got {}, expected {ev}\n  row: {a}\n  expected row: {e}",
                ao[k]
            );
        }
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: number of rows (first extra row: {:?})",
        if actual.len() > expected.len() {
            actual.get(expected.len())
        } else {
            expected.get(actual.len())
        }
    );
}

/// Whether a text cell (CSV or table) shows `expected`: null is empty, floats are
/// compared as numbers.
pub(crate) fn cell_matches(cell: &str, expected: &Value) -> bool {
    match expected {
        Value::Null => cell.is_empty(),
        Value::String(s) => cell == s,
        Value::Number(n) if n.is_f64() => cell
            .parse::<f64>()
            .is_ok_and(|c| close(c, n.as_f64().unwrap_or(f64::NAN))),
        Value::Number(n) => cell == n.to_string(),
        Value::Bool(b) => cell == if *b { "true" } else { "false" },
        other => panic!("no text form for {other}"),
    }
}

/// The counters of the summary line a run prints on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    /// Records read.
    pub(crate) read: u64,
    /// Events applied.
    pub(crate) applied: u64,
    /// Duplicates.
    pub(crate) duplicates: u64,
    /// Dead letters written.
    pub(crate) dead_letters: u64,
    /// Bad records skipped.
    pub(crate) skipped: u64,
    /// Tombstones and deletes left alone (shown only when some were).
    pub(crate) ignored: u64,
}

/// Parses `<name>: N events in S s (R events/s) · N applied · N duplicates · N dead
/// letters · N skipped` from stderr.
pub(crate) fn summary(stderr: &str) -> Counts {
    let line = stderr
        .lines()
        .rfind(|l| l.contains(" events in ") && l.contains(" skipped"))
        .unwrap_or_else(|| panic!("no summary line in stderr:\n{stderr}"));
    let num = |s: &str| -> u64 {
        s.trim()
            .split(' ')
            .next()
            .unwrap_or("")
            .replace(',', "")
            .parse()
            .unwrap_or_else(|_| panic!("bad number in summary line {line:?}"))
    };
    let parts: Vec<&str> = line.split(" · ").collect();
    assert!(
        parts.len() == 5 || (parts.len() == 6 && parts[5].ends_with("ignored")),
        "summary line {line:?}"
    );
    let read = parts[0]
        .split(": ")
        .nth(1)
        .unwrap_or_else(|| panic!("summary line {line:?}"));
    let field = |p: &str, suffix: &str| {
        assert!(p.ends_with(suffix), "summary line {line:?}");
        num(p)
    };
    Counts {
        read: num(read),
        applied: field(parts[1], "applied"),
        duplicates: field(parts[2], "duplicates"),
        dead_letters: field(parts[3], "dead letters"),
        skipped: field(parts[4], "skipped"),
        ignored: parts.get(5).map_or(0, |p| field(p, "ignored")),
    }
}

/// Asserts that the dead-letter file holds exactly one line per expected bad record,
/// with its exact bytes (`raw` for UTF-8, `raw_base64` otherwise), code, partition and
/// offset. `partition` is `None` when the name is not checked.
pub(crate) fn assert_dead_letters(path: &Path, expected: &[oracle::Bad], partition: Option<&str>) {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // Which field holds the bytes, per offset.
    let mut base64_offsets = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_slice(line).expect("a dead letter is one JSON line");
        let offset = v["source"]["offset"].as_u64().expect("source.offset");
        match (v.get("raw"), v.get("raw_base64")) {
            (Some(Value::String(_)), None) => {}
            (None, Some(Value::String(_))) => base64_offsets.push(offset),
            _ => panic!("a dead letter needs exactly one of raw and raw_base64: {v}"),
        }
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "dead letter without a message: {v}"
        );
    }
    let mut letters = projector_connectors::dead_letter::read_dead_letters(path)
        .expect("reading the dead letters");
    letters.sort_by_key(|l| l.offset);
    let got: Vec<(u64, &str)> = letters
        .iter()
        .map(|l| (l.offset, l.code.as_str()))
        .collect();
    let want: Vec<(u64, &str)> = expected.iter().map(|b| (b.offset, b.code)).collect();
    assert_eq!(got, want, "dead letters (offset, code)");
    assert_eq!(lines.len(), expected.len(), "one line per bad record");
    for (l, b) in letters.iter().zip(expected) {
        assert!(
            l.raw == b.raw,
            "dead letter at offset {}: raw bytes differ ({} bytes, expected {}): {:?}",
            b.offset,
            l.raw.len(),
            b.raw.len(),
            String::from_utf8_lossy(&l.raw[..l.raw.len().min(200)])
        );
        let utf8 = std::str::from_utf8(&b.raw).is_ok();
        assert_eq!(
            base64_offsets.contains(&b.offset),
            !utf8,
            "offset {}: raw_base64 exactly when the bytes are not UTF-8",
            b.offset
        );
        if let Some(p) = partition {
            assert_eq!(
                l.partition, p,
                "partition of the dead letter at {}",
                b.offset
            );
        }
    }
}

/// The 1-based line and column (in chars) of byte `at` of `text`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..at].chars().count() + 1)
}

/// The line and column of `anchor` (which must occur exactly once) plus `delta` chars.
pub(crate) fn position_of(text: &str, anchor: &str, delta: usize) -> (usize, usize) {
    let mut hits = text.match_indices(anchor);
    let (at, _) = hits
        .next()
        .unwrap_or_else(|| panic!("{anchor:?} not in the text"));
    assert!(hits.next().is_none(), "{anchor:?} occurs more than once");
    let (line, col) = line_col(text, at);
    (line, col + delta)
}

/// Splits `--format table` output into tables of (header, rows), checking the frame.
pub(crate) fn parse_tables(text: &str) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    let cells = |line: &str| -> Vec<String> {
        assert!(
            line.starts_with('|') && line.ends_with('|'),
            "table row {line:?}"
        );
        let parts: Vec<&str> = line.split('|').collect();
        parts[1..parts.len() - 1]
            .iter()
            .map(|c| c.trim().to_string())
            .collect()
    };
    let is_border = |l: &str| {
        l.starts_with("+-") && l.ends_with("-+") && l.chars().all(|c| c == '+' || c == '-')
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let mut tables = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        assert!(is_border(lines[i]), "expected a border, got {:?}", lines[i]);
        let width = lines[i].chars().count();
        let header = cells(lines[i + 1]);
        assert!(is_border(lines[i + 2]), "border under the header");
        let mut rows = Vec::new();
        i += 3;
        while !is_border(lines[i]) {
            rows.push(cells(lines[i]));
            i += 1;
        }
        // Alignment (in display columns; only checked for ASCII lines, as wide
        // characters take two columns).
        for l in lines[i - rows.len() - 3..=i]
            .iter()
            .filter(|l| l.is_ascii())
        {
            assert_eq!(l.len(), width, "aligned table line {l:?}");
        }
        for r in &rows {
            assert_eq!(r.len(), header.len(), "cells per row");
        }
        tables.push((header, rows));
        i += 1;
    }
    tables
}

/// Checks text rows (CSV or table cells) against expected JSON rows, in column order.
pub(crate) fn assert_text_rows(
    what: &str,
    header: &[String],
    rows: &[Vec<String>],
    expected: &[Value],
) {
    let columns: Vec<String> = expected[0]
        .as_object()
        .expect("row object")
        .keys()
        .cloned()
        .collect();
    let mut sorted_header = header.to_vec();
    sorted_header.sort();
    assert_eq!(sorted_header, columns, "{what}: columns");
    assert_eq!(rows.len(), expected.len(), "{what}: rows");
    for (r, (row, exp)) in rows.iter().zip(expected).enumerate() {
        for (c, name) in header.iter().enumerate() {
            assert!(
                cell_matches(&row[c], &exp[name]),
                "{what}: row {r}, column {name}: {:?} vs {}",
                row[c],
                exp[name]
            );
        }
    }
}

/// A small deterministic generator (xorshift), so a failing run can be repeated.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The checkpoint directories under `<state>/checkpoints` that the partitions' heads
/// name (the complete ones), oldest first (none when there are none yet).
pub(crate) fn checkpoint_dirs(state: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<(u64, PathBuf)> = Vec::new();
    let Ok(partitions) = std::fs::read_dir(state.join("checkpoints")) else {
        return Vec::new();
    };
    for partition in partitions.flatten() {
        let Ok(head) = std::fs::read(partition.path().join("head.json")) else {
            continue;
        };
        let head: Value = serde_json::from_slice(&head).expect("head.json is JSON");
        for c in head["checkpoints"].as_array().expect("checkpoints") {
            let name = c["name"].as_str().expect("name");
            dirs.push((
                c["epoch"].as_u64().expect("epoch"),
                partition.path().join(name),
            ));
        }
    }
    // By epoch, then partition.
    dirs.sort();
    dirs.into_iter().map(|(_, d)| d).collect()
}

/// The manifest of a checkpoint directory.
pub(crate) fn manifest(dir: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()
}

/// An HTTP agent that reports error statuses as responses, trusting the certificate
/// authorities in the PEM file `ca` (besides the system's) when given.
pub(crate) fn agent_trusting(ca: Option<&Path>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder().http_status_as_error(false);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("CA file");
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    config.build().into()
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made now: writes
/// `NAME.pem` and `NAME-key.pem` (PEM) into `dir` and returns their paths.
pub(crate) fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).expect("cert");
    std::fs::write(&k, key.serialize_pem()).expect("key");
    (c, k)
}
