//! A cluster on loopback for the Kafka and scale-out tests: a Tansu broker and an S3
//! server started by the repository's scripts (installed on first use; a test that
//! cannot get them fails, it never skips), the shipped Kafka pipeline pointed at them,
//! instances of `projector run`, a producer thread, and the checks on what they leave.

use super::{generator_records, json_lines, oracle, projector};
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The accounts view, ordered.
pub(crate) const ACCOUNTS_SQL: &str = "SELECT * FROM accounts ORDER BY account_id";
/// The aggregate view, ordered.
pub(crate) const VOLUME_SQL: &str = "SELECT * FROM volume_by_type ORDER BY event_type";

/// Where a test pipeline keeps its checkpoints.
pub(crate) enum Store {
    /// In each instance's state directory (the default).
    Local,
    /// In a directory every instance shares (`file://`).
    File(PathBuf),
    /// In a bucket of a local S3 server.
    S3(S3Server),
    /// In a bucket of a local S3 server, reached through a proxy that can cut it off.
    S3Behind(S3Server, Proxy),
}

impl Store {
    /// A shared `file://` store in `dir`.
    pub(crate) fn file(dir: &Path) -> Store {
        Store::File(dir.to_path_buf())
    }

    /// A fresh S3 server with a bucket.
    pub(crate) fn s3() -> Store {
        Store::S3(S3Server::start())
    }

    /// A fresh S3 server with a bucket, behind a [`Proxy`].
    pub(crate) fn s3_behind_proxy() -> Store {
        let server = S3Server::start();
        let proxy = Proxy::start(server.endpoint.trim_start_matches("http://"));
        Store::S3Behind(server, proxy)
    }

    /// The lines of the pipeline's `checkpoint:` section that name the store.
    pub(crate) fn yaml(&self) -> String {
        self.yaml_for("checkpoints")
    }

    /// The lines of the pipeline's `checkpoint:` section that name a part of the store
    /// of its own (a directory or prefix `name`), for several pipelines in one test.
    pub(crate) fn yaml_for(&self, name: &str) -> String {
        match self {
            Store::Local => String::new(),
            Store::File(dir) => format!("  store: file://{}\n", dir.join(name).display()),
            Store::S3(s3) => s3.yaml(&s3.endpoint, name),
            Store::S3Behind(s3, proxy) => s3.yaml(&format!("http://{}", proxy.address), name),
        }
    }

    /// A file holding every dead letter of the pipeline's run on `state`: the state
    /// directory's own, or what `projector dead-letters list` prints from the store.
    pub(crate) fn dead_letter_file(&self, pipeline: &Path, state: &Path) -> PathBuf {
        if let Store::Local = self {
            return state.join("dead-letters.ndjson");
        }
        let out = projector()
            .args(["dead-letters", "list"])
            .arg(pipeline)
            .output()
            .expect("projector dead-letters");
        assert!(
            out.status.success(),
            "projector dead-letters: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = state.with_extension("letters.ndjson");
        std::fs::write(&file, &out.stdout).expect("write letters");
        file
    }
}

/// A local S3 server (moto, through `scripts/s3.sh`) with the bucket `projector`;
/// stopped (by PID, through the script) when dropped.
pub(crate) struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
}

impl S3Server {
    /// Starts a server on a free port and creates the bucket.
    pub(crate) fn start() -> S3Server {
        let out = Command::new("bash")
            .arg(repo().join("scripts/s3.sh"))
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/s3.sh");
        let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && endpoint.starts_with("http://127.0.0.1:"),
            "the scale-out tests need an S3 server: `scripts/s3.sh start` failed ({}); \
             they do not skip",
            out.status
        );
        let server = S3Server { endpoint };
        let made = Command::new("bash")
            .arg(repo().join("scripts/s3.sh"))
            .args(["bucket", &server.endpoint, "projector"])
            .status()
            .expect("running scripts/s3.sh bucket");
        assert!(made.success(), "creating the bucket");
        server
    }

    /// The `checkpoint:` lines for a store in the bucket reached at `endpoint` (the
    /// server's, or a proxy's in front of it).
    pub(crate) fn yaml(&self, endpoint: &str, prefix: &str) -> String {
        format!("  store: s3://projector/{prefix}\n  endpoint: {endpoint}\n  region: us-east-1\n")
    }

    fn port(&self) -> &str {
        self.endpoint.rsplit(':').next().expect("host:port")
    }

    /// Runs a Python script with boto3 (moto's dependency, in the server's venv); the
    /// script finds a client for this server in `s3`. Returns its stdout.
    fn boto(&self, script: &str, args: &[&str]) -> String {
        let prelude = format!(
            "import boto3, json, sys\ns3 = boto3.client('s3', endpoint_url='{}', \
             aws_access_key_id='t', aws_secret_access_key='t', region_name='us-east-1')\n",
            self.endpoint
        );
        let out = Command::new(repo().join(".tools/s3-venv/bin/python"))
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .args(args)
            .output()
            .expect("running boto3");
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keeps every version of every object from now on, so that a test can see each
    /// head write, also ones overwritten since.
    pub(crate) fn keep_versions(&self) {
        self.boto(
            "s3.put_bucket_versioning(Bucket='projector', \
             VersioningConfiguration={'Status': 'Enabled'})",
            &[],
        );
    }

    /// Every version of every partition's head below `prefix` written since `since`
    /// (Unix seconds), oldest first: partition → [(generation, owner)].
    pub(crate) fn head_history(
        &self,
        prefix: &str,
        since: u64,
    ) -> BTreeMap<String, Vec<(u64, String)>> {
        let script = r#"
prefix, since = sys.argv[1], float(sys.argv[2])
out = {}
kw = dict(Bucket='projector', Prefix=prefix)
while True:
    r = s3.list_object_versions(**kw)
    for v in r.get('Versions', []):
        if v['Key'].endswith('/head.json') and v['LastModified'].timestamp() >= since:
            body = s3.get_object(Bucket='projector', Key=v['Key'], VersionId=v['VersionId'])['Body'].read()
            h = json.loads(body)
            # Versions of a key come newest first.
            out.setdefault(h['partition'], []).insert(0, (h['generation'], h['owner']))
    if not r.get('IsTruncated'):
        break
    kw['KeyMarker'], kw['VersionIdMarker'] = r['NextKeyMarker'], r['NextVersionIdMarker']
print(json.dumps(out))
"#;
        serde_json::from_str(&self.boto(script, &[prefix, &since.to_string()])).expect("history")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/s3.sh"))
            .args(["stop", self.port()])
            .status();
    }
}

/// A TCP proxy on a free loopback port that can cut every connection to its target
/// and refuse new ones (the store "away") and then let them through again.
pub(crate) struct Proxy {
    /// `127.0.0.1:PORT`.
    pub(crate) address: String,
    up: Arc<AtomicBool>,
    /// Bytes stop flowing, connections stay open: a peer that hangs.
    frozen: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    /// Forwards connections on a free port to `target` (`host:port`).
    pub(crate) fn start(target: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let address = listener.local_addr().expect("proxy address").to_string();
        let up = Arc::new(AtomicBool::new(true));
        let frozen = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (target, up2, open2) = (target.to_string(), up.clone(), open.clone());
        let frozen2 = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let mut conns = open2.lock().expect("proxy lock");
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        conns.push(c);
                    }
                }
                drop(conns);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let frozen = frozen2.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    while frozen.load(Ordering::SeqCst) {
                                        std::thread::sleep(Duration::from_millis(10));
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Proxy {
            address,
            up,
            frozen,
            open,
        }
    }

    /// Holds every byte (`true`) without closing anything, as a peer that hangs; or
    /// lets them flow again (`false`).
    pub(crate) fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    /// Cuts every open connection and refuses new ones (`false`), or lets them
    /// through again (`true`).
    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for c in self.open.lock().expect("proxy lock").drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// A Tansu broker for one test; stopped (by PID, through the script) when dropped.
pub(crate) struct Broker {
    pub(crate) address: String,
}

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Broker {
    pub(crate) fn start() -> Broker {
        Broker::start_on(None)
    }

    /// A broker on `port` (a free one if `None`).
    pub(crate) fn start_on(port: Option<&str>) -> Broker {
        let mut args = vec!["start".to_string()];
        args.extend(port.map(str::to_string));
        Broker::from_script(
            &args,
            "the Kafka tests need a broker: `scripts/broker.sh start`",
        )
    }

    /// A broker that speaks only TLS (with `cert` and `key`, PEM) and requires SASL
    /// SCRAM-SHA-256 or -512 as `user`/`password` (`scripts/broker.sh start-secure`,
    /// which builds the TLS- and SCRAM-capable Tansu on first use).
    pub(crate) fn start_secure(cert: &Path, key: &Path, user: &str, password: &str) -> Broker {
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let args = [
            "start-secure".to_string(),
            path(cert),
            path(key),
            user.to_string(),
            password.to_string(),
        ];
        Broker::from_script(
            &args,
            "the security tests need a TLS and SCRAM broker: `scripts/broker.sh start-secure`",
        )
    }

    /// Runs `scripts/broker.sh ARGS`, which prints the broker's address; fails the test
    /// (`what` says why it was needed) if it cannot.
    fn from_script(args: &[String], what: &str) -> Broker {
        let out = Command::new("bash")
            .arg(repo().join("scripts/broker.sh"))
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/broker.sh");
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && address.starts_with("127.0.0.1:"),
            "{what} failed ({}); they do not skip",
            out.status
        );
        Broker { address }
    }

    pub(crate) fn port(&self) -> &str {
        self.address.rsplit(':').next().expect("host:port")
    }

    /// The broker's process id (`scripts/broker.sh` keeps it).
    pub(crate) fn pid(&self) -> u32 {
        let file = repo().join(format!(".tools/broker/{}.pid", self.port()));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .expect("a pid")
    }
}

/// Produces `records` (one value per entry; the key is the value's `aggregateId`) to
/// `topic` with confluent-kafka, an independent client (`scripts/produce.py`), with
/// more of its arguments in `args` (`-X compression.type=zstd`, `--wrapped`, ...).
pub(crate) fn produce_with_confluent(
    brokers: &str,
    topic: &str,
    records: &[Vec<u8>],
    args: &[&str],
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("records.ndjson");
    let mut text = Vec::new();
    for r in records {
        assert!(!r.contains(&b'\n'), "one record per line");
        text.extend_from_slice(r);
        text.push(b'\n');
    }
    std::fs::write(&input, text).expect("write records");
    let out = Command::new("bash")
        .arg(repo().join("scripts/clients.sh"))
        .args([
            "python",
            repo().join("scripts/produce.py").to_str().expect("utf-8"),
        ])
        .args(["--brokers", brokers, "--topic", topic, "--input"])
        .arg(&input)
        .args(args)
        .output()
        .expect("running scripts/clients.sh");
    assert!(
        out.status.success(),
        "producing with confluent-kafka failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
pub(crate) fn produce(broker: &Broker, topic: &str, events: u64, keys: u64, seed: u64) {
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

/// The shipped Kafka pipeline reading `topic` on `broker`, checkpointing often, with
/// checkpoints in the state directory.
pub(crate) fn pipeline(dir: &Path, broker: &Broker, topic: &str) -> PathBuf {
    pipeline_on(dir, broker, topic, &Store::Local)
}

/// [`pipeline`] with checkpoints (and dead letters) in `store`.
pub(crate) fn pipeline_on(dir: &Path, broker: &Broker, topic: &str, store: &Store) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("pipelines/bank-accounts-kafka.yaml"))
        .expect("the shipped Kafka pipeline")
        .replace("topics: [bank-events]", &format!("topics: [{topic}]"));
    let path = dir.join("bank-kafka.yaml");
    std::fs::write(&path, tuned_for_tests(&text, broker, store)).expect("write pipeline");
    path
}

/// A shipped Kafka example `text` made for a test: on `broker`, publishing and
/// checkpointing often, to `store`, with a short group session (a killed member leaves
/// the group when its session times out; a short one keeps the restarts quick).
pub(crate) fn tuned_for_tests(text: &str, broker: &Broker, store: &Store) -> String {
    text.replace("${KAFKA_BROKERS:-127.0.0.1:9092}", &broker.address)
        .replace(
            "session.timeout.ms: \"6000\"",
            "session.timeout.ms: \"2000\"\n    heartbeat.interval.ms: \"500\"",
        )
        .replace(
            "views:",
            &format!(
                "publish_interval: 20ms\ncheckpoint:\n  interval: 50ms\n{}views:",
                store.yaml()
            ),
        )
}

/// The bank events of `seed` with a bad record (unparseable, no key, unique bytes)
/// after every 4,999th: the input of the crash and rebalance tests.
pub(crate) fn events_with_bad_records(events: u64, keys: u64, seed: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for (_, raw) in generator_records(events, keys, seed) {
        let i = out.len() as u64;
        out.push((i, raw));
        if i % 5_000 == 4_998 {
            let bad = format!(r#"{{"eventType":"MoneyDeposited","aggregateId":"cut-{i}"#);
            out.push((i + 1, bad.into_bytes()));
        }
    }
    out
}

/// Creates `topic` with 4 partitions and streams `records` to it from a thread, about
/// `per_second` a second, keyed by `aggregateId` (a record without one goes unkeyed).
pub(crate) fn stream(
    broker: &Broker,
    topic: &str,
    records: &[(u64, Vec<u8>)],
    per_second: u64,
) -> std::thread::JoinHandle<()> {
    stream_to(broker, topic, 4, records, per_second)
}

/// [`stream`] to a topic of `partitions` partitions.
pub(crate) fn stream_to(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    records: &[(u64, Vec<u8>)],
    per_second: u64,
) -> std::thread::JoinHandle<()> {
    let keyed = records
        .iter()
        .map(|(_, raw)| {
            let key = serde_json::from_slice::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v["aggregateId"].as_str().map(String::from))
                .unwrap_or_default();
            (key, raw.clone())
        })
        .collect();
    stream_keyed(broker, topic, partitions, keyed, per_second)
}

/// Creates `topic` with `partitions` partitions and streams `records` (key, value) to
/// it from a thread, about `per_second` a second (Kafka's default partitioner).
pub(crate) fn stream_keyed(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    records: Vec<(String, Vec<u8>)>,
    per_second: u64,
) -> std::thread::JoinHandle<()> {
    use projector_connectors::kafka::{EventProducer, ensure_topic};
    let props = std::collections::BTreeMap::new();
    ensure_topic(&broker.address, &props, topic, partitions).expect("create topic");
    let producer = EventProducer::new(&broker.address, &props, topic).expect("producer");
    std::thread::spawn(move || {
        let started = Instant::now();
        for (i, (key, raw)) in records.iter().enumerate() {
            producer.send(key.as_bytes(), raw).expect("send");
            if i % 100 == 99 {
                let due = Duration::from_secs_f64((i + 1) as f64 / per_second as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        producer.flush(Duration::from_secs(60)).expect("flush");
    })
}

/// Every bad record of `input` is dead-lettered exactly once, each at its own partition
/// and offset: in the state directory's file, or in the checkpoint store.
pub(crate) fn assert_each_bad_record_dead_lettered_once(
    store: &Store,
    pipeline: &Path,
    state: &Path,
    exp: &oracle::Expected,
) {
    let letters = projector_connectors::dead_letter::read_dead_letters(
        &store.dead_letter_file(pipeline, state),
    )
    .expect("dead letters");
    let mut got: Vec<&[u8]> = letters.iter().map(|l| l.raw.as_slice()).collect();
    let mut want: Vec<&[u8]> = exp.bad.iter().map(|b| b.raw.as_slice()).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        got.len(),
        want.len(),
        "dead letters: {} written, {} bad records",
        got.len(),
        want.len()
    );
    assert!(got == want, "the dead letters are exactly the bad records");
    let mut places: Vec<(&str, u64)> = letters
        .iter()
        .map(|l| (l.partition.as_str(), l.offset))
        .collect();
    places.sort_unstable();
    places.dedup();
    assert_eq!(places.len(), letters.len(), "one letter per record");
}

/// A running `projector run`, killed when dropped (a test failing half way).
pub(crate) struct Running(pub(crate) std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// `projector run PIPELINE` on `state`, serving HTTP on `port`.
    pub(crate) fn start(pipeline: &Path, state: &Path, port: u16, workers: u64) -> Running {
        Running::start_logged(pipeline, state, port, workers, None)
    }

    /// [`Running::start`] with its stderr going to `log`.
    pub(crate) fn start_logged(
        pipeline: &Path,
        state: &Path,
        port: u16,
        workers: u64,
        log: Option<&Path>,
    ) -> Running {
        Running::start_with(pipeline, state, port, workers, log, &[])
    }

    /// [`Running::start_logged`] with more flags.
    pub(crate) fn start_with(
        pipeline: &Path,
        state: &Path,
        port: u16,
        workers: u64,
        log: Option<&Path>,
        extra: &[&std::ffi::OsStr],
    ) -> Running {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::null(),
        };
        Running(
            projector()
                .arg("run")
                .arg(pipeline)
                .args(["--quiet", "--http", &format!("127.0.0.1:{port}")])
                .args(["--workers", &workers.to_string()])
                .arg("--state-dir")
                .arg(state)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("start projector"),
        )
    }

    /// SIGTERM, then the exit code (within `secs`).
    pub(crate) fn terminate(&mut self, secs: u64) -> Option<i32> {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let mut code = None;
        let exited = wait_for(secs, || {
            code = self.0.try_wait().ok().flatten().map(|s| s.code());
            code.is_some()
        });
        assert!(exited, "SIGTERM stops the engine within {secs} s");
        code.flatten()
    }
}

/// The sum of the offsets `group` has committed on the 4 partitions of `topic`.
pub(crate) fn committed_offsets(broker: &Broker, group: &str, topic: &str) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let props = std::collections::BTreeMap::new();
    let consumer: BaseConsumer =
        projector_connectors::kafka::client_config(&broker.address, &props)
            .set("group.id", group)
            .create()
            .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o as u64,
            _ => 0,
        })
        .sum()
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The partitions an instance owns now, from its `/status`.
pub(crate) fn assigned(port: u16) -> Option<Vec<String>> {
    let status = get_json(port, "/status")?;
    Some(
        status["partitions"]
            .as_array()?
            .iter()
            .filter(|p| p["assigned"] == true)
            .filter_map(|p| p["partition"].as_str().map(String::from))
            .collect(),
    )
}

/// The shipped example pipeline `name` (in `pipelines/`) reading `topic` on `broker`.
pub(crate) fn example_text(name: &str, broker: &Broker, topic: &str) -> String {
    let text = std::fs::read_to_string(repo().join("pipelines").join(name)).expect("example");
    let topics = text
        .lines()
        .find(|l| l.trim_start().starts_with("topics:"))
        .expect("topics line")
        .to_string();
    text.replace("${KAFKA_BROKERS:-127.0.0.1:9092}", &broker.address)
        .replace(&topics, &format!("  topics: [{topic}]"))
}

/// `--once` with one query: its rows (the run must succeed).
pub(crate) fn query_once(pipeline: &Path, state: &Path, sql: &str) -> Vec<serde_json::Value> {
    let mut cmd = projector();
    cmd.arg("run")
        .arg(pipeline)
        .args(["--once", "--format", "json", "--state-dir"])
        .arg(state)
        .args(["--sql", sql]);
    let out = super::run(cmd, None, Duration::from_secs(120));
    out.assert_code(0);
    json_lines(&out.stdout).remove(0)
}

/// `--once` with both view queries: (stderr, accounts, volume).
pub(crate) fn run_once(
    pipeline: &Path,
    state: &Path,
) -> (String, Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let (stderr, mut results) = queries_once(pipeline, state, &[ACCOUNTS_SQL, VOLUME_SQL]);
    let volume = results.pop().expect("volume");
    (stderr, results.pop().expect("accounts"), volume)
}

/// `--once` with the queries `sqls`: (stderr, the rows of each).
pub(crate) fn queries_once(
    pipeline: &Path,
    state: &Path,
    sqls: &[&str],
) -> (String, Vec<Vec<serde_json::Value>>) {
    let mut cmd = projector();
    cmd.arg("run")
        .arg(pipeline)
        .args(["--once", "--format", "json"]);
    for sql in sqls {
        cmd.args(["--sql", sql]);
    }
    let out = cmd
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("projector run --once");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run --once failed: {stderr}");
    let results = json_lines(&out.stdout);
    assert_eq!(results.len(), sqls.len(), "{stderr}");
    (stderr, results)
}

/// Each partition's head in the pipeline's checkpoint store (`projector checkpoints`).
pub(crate) fn heads(pipeline: &Path, state: &Path) -> Vec<serde_json::Value> {
    let out = projector()
        .arg("checkpoints")
        .arg(pipeline)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("projector checkpoints");
    assert!(
        out.status.success(),
        "projector checkpoints: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON line"))
        .collect()
}

/// The sum over partitions of the next offset in each one's newest checkpoint (the
/// records the checkpoints cover).
pub(crate) fn newest_checkpoint_offsets(pipeline: &Path, state: &Path) -> Option<u64> {
    let heads = heads(pipeline, state);
    let offsets: Vec<u64> = heads
        .iter()
        .filter_map(|h| h["next_offset"].as_u64())
        .collect();
    (!offsets.is_empty()).then(|| offsets.iter().sum())
}

/// A GET against the instance, as JSON.
pub(crate) fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get_text(port, path)?).ok()
}

/// A GET against the instance, as text (`None`: no answer).
pub(crate) fn get_text(port: u16, path: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    resp.body_mut().read_to_string().ok()
}

/// CPU time (user + system, in clock ticks) a process has used (Linux).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Waits up to `secs` for `check` to hold.
pub(crate) fn wait_for(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The test registry's basic-auth user and password.
pub(crate) const REGISTRY_USER: &str = "sr-key";
/// See [`REGISTRY_USER`].
pub(crate) const REGISTRY_SECRET: &str = "sr-secret";

/// The test schema registry (`scripts/schema_registry.py`, Confluent's REST API with
/// basic authentication), stopped (by its PID) when dropped.
pub(crate) struct SchemaRegistry {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    child: std::process::Child,
}

impl SchemaRegistry {
    /// Starts one on a free port.
    pub(crate) fn start() -> SchemaRegistry {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(repo().join("scripts/schema_registry.py"))
            .arg(port.to_string())
            .args(["--user", REGISTRY_USER, "--password", REGISTRY_SECRET])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting scripts/schema_registry.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the registry's address");
        assert!(line.starts_with("http://"), "registry: {line:?}");
        SchemaRegistry {
            url: line.trim().to_string(),
            child,
        }
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
