//! Authentication and TLS of the query port, as a client meets them: bearer tokens with
//! a read grant per view (also through joins and subqueries), the cluster's token on
//! the route between instances, a non-loopback address refused without `auth:`, and
//! HTTPS with a certificate made here.

mod common;

use common::{generator_pipeline, projector};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const READER: &str = "reader-token-0123456789";
const OPS: &str = "ops-token-0123456789abcdef";
const CLUSTER: &str = "cluster-token-0123456789";

/// The bank pipeline (generator, 20,000 events) with `auth:`: `reader` may read
/// `accounts` (given by its SHA-256), `ops` everything (from the environment).
fn pipeline(dir: &Path) -> PathBuf {
    let reader_sha = projector_engine::config::hex(&projector_engine::config::hash_token(READER));
    let text = generator_pipeline(20_000).replace(
        "views:",
        &format!(
            "auth:\n  tokens:\n    - name: reader\n      sha256: {reader_sha}\n      views: [accounts]\n    \
             - name: ops\n      token: ${{TEST_OPS_TOKEN}}\n      views: [\"*\"]\n  \
             cluster_token: {CLUSTER}\nviews:"
        ),
    );
    let path = dir.join("bank-auth.yaml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

struct Server {
    child: Child,
    base: String,
    stderr: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `projector run` with `extra` flags; waits for `/health` (on `scheme`).
fn start(pipeline: &Path, dir: &Path, scheme: &str, extra: &[&str], ca: Option<&Path>) -> Server {
    let port = free_port();
    let stderr = dir.join(format!("server-{port}.stderr"));
    let child = projector()
        .arg("run")
        .arg(pipeline)
        .args(["--http", &format!("127.0.0.1:{port}"), "--quiet"])
        .arg("--state-dir")
        .arg(dir.join(format!("state-{port}")))
        .args(extra)
        .env("TEST_OPS_TOKEN", OPS)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn projector");
    let host = if scheme == "https" {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let server = Server {
        child,
        base: format!("{scheme}://{host}:{port}"),
        stderr,
    };
    let agent = agent(ca);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = agent.get(format!("{}/health", server.base)).call()
            && r.status().as_u16() == 200
        {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no /health at {}: {}",
        server.base,
        std::fs::read_to_string(&server.stderr).unwrap_or_default()
    );
}

fn agent(ca: Option<&Path>) -> ureq::Agent {
    common::agent_trusting(ca)
}

/// (status, JSON body) of `POST /sql` with `token`.
fn sql(agent: &ureq::Agent, base: &str, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut req = agent
        .post(format!("{base}/sql"))
        .header("content-type", "text/plain");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut r = req.send(query).expect("POST /sql");
    let text = r.body_mut().read_to_string().expect("body");
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn tokens_grant_views_and_refuse_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = pipeline(dir.path());
    let server = start(&pipeline, dir.path(), "http", &[], None);
    let agent = agent(None);
    let base = &server.base;

    // No token, a wrong one: 401 with the usual JSON error.
    let (status, body) = sql(&agent, base, None, "SELECT count(*) FROM accounts");
    assert_eq!((status, code(&body)), (401, "auth.missing_token"), "{body}");
    let (status, body) = sql(&agent, base, Some("not-a-token-at-all"), "SELECT 1");
    assert_eq!((status, code(&body)), (401, "auth.bad_token"), "{body}");
    let r = agent.get(format!("{base}/status")).call().expect("GET");
    assert_eq!(r.status().as_u16(), 401, "/status needs a token");

    // The reader may read accounts, and nothing else, however the query reaches it.
    let (status, body) = sql(
        &agent,
        base,
        Some(READER),
        "SELECT count(*) AS n FROM accounts",
    );
    assert_eq!(status, 200, "{body}");
    for q in [
        "SELECT * FROM volume_by_type",
        "SELECT a.account_id FROM accounts a JOIN volume_by_type v ON a.owner = v.event_type",
        "SELECT account_id FROM accounts WHERE owner IN (SELECT event_type FROM volume_by_type)",
        "SELECT (SELECT count(*) FROM volume_by_type) AS n",
        "WITH v AS (SELECT * FROM volume_by_type) SELECT * FROM v",
        "EXPLAIN SELECT * FROM volume_by_type",
    ] {
        let (status, body) = sql(&agent, base, Some(READER), q);
        assert_eq!(
            (status, code(&body)),
            (403, "auth.forbidden"),
            "{q}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("volume_by_type")),
            "{body}"
        );
    }
    let views: Value = {
        let mut r = agent
            .get(format!("{base}/views"))
            .header("authorization", format!("Bearer {READER}"))
            .call()
            .expect("GET /views");
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON")
    };
    let names: Vec<&str> = views
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["accounts"], "/views lists what the token may read");

    // The ops token (from the environment) reads everything.
    let (status, body) = sql(&agent, base, Some(OPS), "SELECT * FROM volume_by_type");
    assert_eq!(status, 200, "{body}");

    // The route between instances takes the cluster token only.
    for token in [None, Some(OPS), Some("cluster-token-but-wrong")] {
        let mut req = agent
            .post(format!("{base}/cluster/scan"))
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let r = req.send("{}").expect("POST /cluster/scan");
        assert_eq!(r.status().as_u16(), 401, "cluster route with {token:?}");
    }
    let r = agent
        .post(format!("{base}/cluster/scan"))
        .header("authorization", format!("Bearer {CLUSTER}"))
        .send("{}")
        .expect("POST");
    assert_eq!(
        r.status().as_u16(),
        400,
        "the cluster token passes the guard"
    );

    // The CLI sends a token from PROJECTOR_TOKEN, and says what a refusal means.
    let out = projector()
        .args(["query", "--url", base, "--format", "csv"])
        .arg("SELECT count(*) AS n FROM accounts")
        .env("PROJECTOR_TOKEN", READER)
        .output()
        .expect("projector query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = projector()
        .args(["query", "--url", base])
        .arg("SELECT * FROM volume_by_type")
        .env("PROJECTOR_TOKEN", READER)
        .output()
        .expect("projector query");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("auth.forbidden"),
        "{stderr}"
    );
}

#[test]
fn a_public_address_needs_auth_or_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = dir.path().join("open.yaml");
    std::fs::write(&open, generator_pipeline(1_000)).expect("write");
    let port = free_port();
    let out = projector()
        .arg("run")
        .arg(&open)
        .args(["--http", &format!("0.0.0.0:{port}"), "--quiet"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("projector run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("without authentication") && stderr.contains("--insecure"),
        "{stderr}"
    );

    let log = dir.path().join("insecure.stderr");
    let mut child = projector()
        .arg("run")
        .arg(&open)
        .args([
            "--http",
            &format!("0.0.0.0:{port}"),
            "--quiet",
            "--insecure",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let up = common::cluster::wait_for(30, || common::cluster::get_json(port, "/health").is_some());
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(up, "--insecure serves: {stderr}");
    assert!(stderr.contains("warning: serving"), "{stderr}");
}

#[test]
fn https_with_a_certificate_made_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    let pipeline = pipeline(dir.path());
    let flags = [
        "--tls-cert",
        cert_path.to_str().expect("utf-8"),
        "--tls-key",
        key_path.to_str().expect("utf-8"),
    ];
    let server = start(&pipeline, dir.path(), "https", &flags, Some(&cert_path));

    let (status, body) = sql(
        &agent(Some(&cert_path)),
        &server.base,
        Some(OPS),
        "SELECT count(*) AS n FROM accounts",
    );
    assert_eq!(status, 200, "{body}");
    // Without the certificate's authority the client refuses the server.
    let err = agent(None).get(format!("{}/health", server.base)).call();
    assert!(
        err.is_err(),
        "a client that does not trust the certificate fails"
    );
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = server.base.replace("https://localhost", "http://127.0.0.1");
    let r = agent(None).get(format!("{plain}/health")).call();
    assert!(
        r.as_ref().map_or(true, |r| r.status().as_u16() != 200),
        "plain HTTP is not served on the HTTPS port: {r:?}"
    );
    let out = projector()
        .args(["query", "--url", &server.base, "--format", "csv"])
        .arg("--ca-cert")
        .arg(&cert_path)
        .arg("SELECT count(*) AS n FROM accounts")
        .env("PROJECTOR_TOKEN", OPS)
        .output()
        .expect("projector query");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("n\n"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
