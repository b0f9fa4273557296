//! Live subscriptions (`GET /subscribe`, Server-Sent Events) against a running
//! pipeline: a subscriber that applies the snapshot and every change ends with exactly
//! the rows SQL gives, filtered or not; one that disconnects and resumes after its last
//! epoch too; one that stops reading is dropped with a message while ingestion goes on.

mod common;

use common::cluster::{Running, free_port, get_json, wait_for};
use common::{generator_pipeline, replace_line};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One server-sent event.
#[derive(Debug)]
struct Event {
    id: Option<u64>,
    name: String,
    data: Value,
}

/// An open subscription: the events of `GET /subscribe?QUERY` as they come, read by
/// a thread of its own so that a test can wait for one with a timeout (a stream that
/// goes quiet sends keep-alive comments, which would otherwise hold a blocking read
/// for ever).
struct Stream {
    events: mpsc::Receiver<Event>,
    socket: TcpStream,
}

impl Stream {
    fn open(port: u16, query: &str, last_event_id: Option<u64>) -> Stream {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        write!(
            socket,
            "GET /subscribe?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .expect("request");
        let mut reader = BufReader::new(socket.try_clone().expect("a second handle"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
        }
        // Keep-alive comments come every 15 s: no read waits for ever.
        socket.set_read_timeout(None).expect("no timeout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            while let Some(e) = read_event(&mut reader) {
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        Stream { events, socket }
    }

    /// The next event within `wait`: `None` when none came in that time. Panics when
    /// the stream has ended.
    fn next(&self, wait: Duration) -> Option<Event> {
        match self.events.recv_timeout(wait) {
            Ok(e) => Some(e),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the stream ended"),
        }
    }
}

impl Drop for Stream {
    /// Closes the connection, which also ends the reading thread.
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// The next event of an SSE stream (`None`: the stream ended). Chunked transfer
/// framing lines are skipped: they are hex sizes, never `field: value`.
fn read_event(reader: &mut BufReader<TcpStream>) -> Option<Event> {
    let (mut id, mut name, mut data) = (None, String::new(), None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if let Some(data) = data.take() {
                return Some(Event { id, name, data });
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            name = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(v).expect("data is JSON"));
        } else if line == "0" {
            return None;
        }
    }
}

/// A view's rows by key, as a subscriber builds them from its events.
#[derive(Default)]
struct Mirror {
    rows: BTreeMap<String, Value>,
    epoch: u64,
}

impl Mirror {
    /// Applies one event; returns the epoch it completes, if any.
    fn apply(&mut self, e: &Event, key: &str) -> Option<u64> {
        match e.name.as_str() {
            "snapshot" => {
                self.rows = e.data["rows"]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .map(|r| (r[key].as_str().expect("key").to_string(), r.clone()))
                    .collect();
                self.epoch = e.id.expect("a snapshot has an id");
                Some(self.epoch)
            }
            "upsert" => {
                let k = e.data["key"].as_str().expect("key").to_string();
                assert_eq!(e.data["row"][key], Value::String(k.clone()));
                self.rows.insert(k, e.data["row"].clone());
                None
            }
            "delete" => {
                self.rows.remove(e.data["key"].as_str().expect("key"));
                None
            }
            "epoch" => {
                let epoch = e.id.expect("an epoch has an id");
                assert!(
                    epoch > self.epoch,
                    "epochs go forward: {epoch} after {}",
                    self.epoch
                );
                self.epoch = epoch;
                Some(epoch)
            }
            other => panic!("unexpected event {other}: {}", e.data),
        }
    }
}

/// The bank pipeline generating `events` events over 300 accounts, publishing every
/// 50 ms (the default).
fn start(dir: &Path, events: u64) -> (Running, u16) {
    let text = replace_line(&generator_pipeline(events), "  keys:", "keys: 300");
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).expect("pipeline");
    let port = free_port();
    let running = Running::start(&path, &dir.join("state"), port, 2);
    assert!(
        wait_for(60, || get_json(port, "/health").is_some()),
        "the instance did not start"
    );
    (running, port)
}

/// `SELECT ... ORDER BY key` over HTTP, by key.
fn sql_rows(port: u16, sql: &str, key: &str) -> BTreeMap<String, Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut r = agent
        .post(format!("http://127.0.0.1:{port}/sql"))
        .send(sql)
        .expect("POST /sql");
    let rows: Vec<Value> =
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON rows");
    rows.into_iter()
        .map(|r| (r[key].as_str().expect("key").to_string(), r))
        .collect()
}

fn finished(port: u16) -> bool {
    get_json(port, "/status").is_some_and(|s| s["state"] == "finished")
}

/// The newest published epoch, as a query reads it.
fn published_epoch(port: u16) -> u64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let r = agent
        .post(format!("http://127.0.0.1:{port}/sql"))
        .send("SELECT 1")
        .expect("POST /sql");
    r.headers()["x-projector-epoch"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("an epoch")
}

/// Whether the pipeline has finished and `mirror` has reached its newest epoch.
fn caught_up(mirror: &Mirror, port: u16) -> bool {
    finished(port) && mirror.epoch >= published_epoch(port)
}

/// Reads `stream` into `mirror` until the pipeline has finished and the mirror has
/// reached its last epoch. The last epoch may be published before the pipeline says it
/// finished, and nothing follows it: a quiet second is also a time to check.
fn follow_to_the_end(stream: &Stream, mirror: &mut Mirror, port: u16, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let completed = match stream.next(Duration::from_secs(1)) {
            Some(e) => mirror.apply(&e, key).is_some(),
            None => true,
        };
        if completed && caught_up(mirror, port) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never caught up: at epoch {}",
            mirror.epoch
        );
    }
}

#[test]
fn subscribers_mirror_the_view_filtered_and_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut running, port) = start(dir.path(), 400_000);
    let all = Stream::open(port, "view=accounts", None);
    let one = Stream::open(port, "view=accounts&key=acc-000007", None);
    let rich = Stream::open(port, "view=accounts&where=balance%20%3E%205000", None);
    let groups = Stream::open(port, "view=volume_by_type", None);

    // One that leaves after a few epochs and comes back with the last id it saw.
    let mut resumed = Mirror::default();
    let leaver = Stream::open(port, "view=accounts", None);
    let mut seen_epochs = 0;
    while seen_epochs < 5 {
        let e = leaver.next(Duration::from_secs(60)).expect("events");
        if resumed.apply(&e, "account_id").is_some() {
            seen_epochs += 1;
        }
    }
    drop(leaver);
    std::thread::sleep(Duration::from_millis(500));
    let back = Stream::open(port, "view=accounts", Some(resumed.epoch));

    let (mut m_all, mut m_one, mut m_rich, mut m_groups) = Default::default();
    follow_to_the_end(&all, &mut m_all, port, "account_id");
    follow_to_the_end(&one, &mut m_one, port, "account_id");
    follow_to_the_end(&rich, &mut m_rich, port, "account_id");
    follow_to_the_end(&groups, &mut m_groups, port, "event_type");
    follow_to_the_end(&back, &mut resumed, port, "account_id");

    let everything = sql_rows(port, "SELECT * FROM accounts", "account_id");
    assert!(everything.len() > 250, "{}", everything.len());
    assert_eq!(m_all.rows, everything);
    assert_eq!(resumed.rows, everything, "resumed after its last epoch");
    let only: BTreeMap<_, _> = everything
        .iter()
        .filter(|(k, _)| *k == "acc-000007")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(m_one.rows, only);
    assert_eq!(
        m_rich.rows,
        sql_rows(
            port,
            "SELECT * FROM accounts WHERE balance > 5000",
            "account_id"
        )
    );
    assert_eq!(
        m_groups.rows,
        sql_rows(port, "SELECT * FROM volume_by_type", "event_type")
    );
    assert_eq!(running.terminate(30), Some(0));
}

#[test]
fn a_websocket_subscriber_mirrors_the_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut running, port) = start(dir.path(), 300_000);
    let (mut socket, _) =
        tungstenite::connect(format!("ws://127.0.0.1:{port}/subscribe?view=accounts"))
            .expect("a WebSocket");
    // Pings come every 15 s on a quiet socket: a short timeout lets the test check
    // whether it has caught up in between (the last epoch may be published before the
    // pipeline says it finished, and nothing follows it).
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_mut() {
        tcp.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
    }
    let mut mirror = Mirror::default();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let completed = match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let mut data: Value = serde_json::from_str(text.as_str()).expect("JSON");
                let fields = data.as_object_mut().expect("an object");
                let name = fields.remove("type").expect("type");
                let id = fields.remove("id").and_then(|v| v.as_u64());
                let event = Event {
                    id,
                    name: name.as_str().expect("a name").to_string(),
                    data,
                };
                mirror.apply(&event, "account_id").is_some()
            }
            Ok(_) => false,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(e) => panic!("the WebSocket failed: {e}"),
        };
        if completed && caught_up(&mirror, port) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never caught up: at epoch {}",
            mirror.epoch
        );
    }
    assert_eq!(
        mirror.rows,
        sql_rows(port, "SELECT * FROM accounts", "account_id")
    );
    let _ = socket.close(None);
    assert_eq!(running.terminate(30), Some(0));
}

#[test]
fn bad_subscriptions_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut running, port) = start(dir.path(), 1_000);
    let get = |query: &str| -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("http://127.0.0.1:{port}/subscribe?{query}"))
            .call()
            .expect("GET");
        let body = r.body_mut().read_to_string().expect("body");
        (
            r.status().as_u16(),
            serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    };
    for (query, status, code) in [
        ("view=nope", 404, "subscribe.no_view"),
        (
            "view=accounts&where=nope%20%3D%201",
            400,
            "subscribe.bad_filter",
        ),
        (
            "view=accounts&from_epoch=999999",
            410,
            "subscribe.not_retained",
        ),
        ("key=x", 400, "http.bad_request"),
    ] {
        let (got, body) = get(query);
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    assert_eq!(running.terminate(30), Some(0));
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped_while_ingestion_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut running, port) = start(dir.path(), 500_000_000);
    // Subscribes, then reads nothing: the socket's buffers fill, then its queue.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    write!(
        socket,
        "GET /subscribe?view=accounts HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .expect("request");
    let read = |port| {
        get_json(port, "/status").expect("status")["events"]["read"]
            .as_u64()
            .expect("read")
    };
    let before = read(port);
    // The hub drops it once its queue is full (256 epochs of 50 ms, after the socket
    // buffers): ingestion never waits for it meanwhile.
    std::thread::sleep(Duration::from_secs(30));
    assert!(read(port) > before, "ingestion went on");
    let mut text = Vec::new();
    let _ = socket.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("event: error") && text.contains("subscribe.too_slow"),
        "no drop message at the end of: …{}",
        &text[text.len().saturating_sub(2000)..]
    );
    assert_eq!(running.terminate(30), Some(0));
}
