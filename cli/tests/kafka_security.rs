//! Kafka as it runs in production: TLS, SASL SCRAM and compressed topics, against a
//! real broker, with records produced by an independent client (confluent-kafka).
//!
//! - A broker that speaks only TLS, with a certificate made here, and requires
//!   SCRAM-SHA-512: the views equal the oracle. A wrong password, and a certificate
//!   authority that did not sign the broker's certificate, each stop the run with a
//!   clear reason instead of retrying forever.
//! - One topic written in thirds with zstd, lz4 and snappy: the views equal the oracle.
//! - `validate` refuses a property this build cannot honour (GSSAPI), with the reason.

mod common;

use common::cluster::*;
use common::{assert_rows, oracle, projector, self_signed};
use std::path::Path;
use std::time::Duration;

const USER: &str = "projector";
const PASSWORD: &str = "s3cret-pass";

/// The shipped Kafka pipeline on `topic`, with `extra` librdkafka properties.
fn pipeline_with(dir: &Path, broker: &Broker, topic: &str, extra: &[(&str, String)]) -> String {
    let path = pipeline_on(dir, broker, topic, &Store::Local);
    let text = std::fs::read_to_string(&path).expect("pipeline");
    let props: String = extra
        .iter()
        .map(|(k, v)| format!("\n    {k}: \"{v}\""))
        .collect();
    let text = text.replacen(
        "heartbeat.interval.ms: \"500\"",
        &format!("heartbeat.interval.ms: \"500\"{props}"),
        1,
    );
    std::fs::write(&path, &text).expect("write pipeline");
    text
}

fn values(records: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    records.iter().map(|(_, r)| r.clone()).collect()
}

/// `run --once` that must fail: its stderr.
fn run_fails(pipeline: &Path, state: &Path) -> String {
    let mut cmd = projector();
    cmd.arg("run")
        .arg(pipeline)
        .arg("--once")
        .arg("--state-dir")
        .arg(state);
    let out = common::run(cmd, None, Duration::from_secs(60));
    assert_ne!(out.code, Some(0), "the run must fail: {}", out.stderr);
    out.stderr
}

/// The error the run stopped with (its last `error:` line, not the client's warnings).
fn last_error(stderr: &str) -> &str {
    stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
}

#[test]
fn tls_and_scram_sha_512_against_a_real_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path(), "broker");
    let broker = Broker::start_secure(&cert, &key, USER, PASSWORD);
    let ca = cert.to_str().expect("utf-8");
    let secure = |password: &str, ca: &str| {
        vec![
            ("security.protocol", "SASL_SSL".to_string()),
            ("sasl.mechanism", "SCRAM-SHA-512".to_string()),
            ("sasl.username", USER.to_string()),
            ("sasl.password", password.to_string()),
            ("ssl.ca.location", ca.to_string()),
        ]
    };

    let input = events_with_bad_records(20_000, 500, 61);
    let x: Vec<String> = secure(PASSWORD, ca)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let args: Vec<&str> = x.iter().flat_map(|p| ["-X", p.as_str()]).collect();
    produce_with_confluent(&broker.address, "bank-secure", &values(&input), &args);

    let good = dir.path().join("good");
    std::fs::create_dir_all(&good).expect("dir");
    pipeline_with(&good, &broker, "bank-secure", &secure(PASSWORD, ca));
    let (_, accounts, volume) = run_once(&good.join("bank-kafka.yaml"), &good.join("state"));
    let exp = oracle::expected(&input);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());

    // A wrong password: the run stops and says why.
    let bad = dir.path().join("bad-password");
    std::fs::create_dir_all(&bad).expect("dir");
    pipeline_with(&bad, &broker, "bank-secure", &secure("wrong", ca));
    let stderr = run_fails(&bad.join("bank-kafka.yaml"), &bad.join("state"));
    let error = last_error(&stderr);
    assert!(
        error.contains("refused the connection") && error.contains("SASL authentication"),
        "the error names the failed authentication: {stderr}"
    );

    // A certificate authority that did not sign the broker's certificate.
    let (other, _) = self_signed(dir.path(), "other");
    let other = other.to_str().expect("utf-8");
    let untrusted = dir.path().join("untrusted");
    std::fs::create_dir_all(&untrusted).expect("dir");
    pipeline_with(&untrusted, &broker, "bank-secure", &secure(PASSWORD, other));
    let stderr = run_fails(&untrusted.join("bank-kafka.yaml"), &untrusted.join("state"));
    let error = last_error(&stderr);
    assert!(
        error.contains("refused the connection") && error.contains("certificate verify failed"),
        "the error names the failed certificate check: {stderr}"
    );
}

#[test]
fn a_topic_written_with_zstd_lz4_and_snappy_reads_like_the_oracle() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_with_bad_records(30_000, 700, 67);
    let third = input.len() / 3;
    for (i, codec) in ["zstd", "lz4", "snappy"].iter().enumerate() {
        let part = &input[i * third..if i == 2 { input.len() } else { (i + 1) * third }];
        let codec = format!("compression.type={codec}");
        produce_with_confluent(
            &broker.address,
            "bank-compressed",
            &values(part),
            &["-X", &codec],
        );
    }
    let pipeline = pipeline_on(dir.path(), &broker, "bank-compressed", &Store::Local);
    let (_, accounts, volume) = run_once(&pipeline, &dir.path().join("state"));
    let exp = oracle::expected(&input);
    assert_rows("accounts", &accounts, &exp.accounts_json());
    assert_rows("volume_by_type", &volume, &exp.volume_json());
}

#[test]
fn validate_refuses_what_this_build_cannot_honour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(repo().join("pipelines/bank-accounts-kafka.yaml"))
        .expect("pipeline")
        .replace(
            "session.timeout.ms: \"6000\"",
            "session.timeout.ms: \"6000\"\n    security.protocol: SASL_SSL\n    \
             sasl.mechanism: GSSAPI",
        );
    let path = dir.path().join("gssapi.yaml");
    std::fs::write(&path, &text).expect("write");
    let out = projector()
        .arg("validate")
        .arg(&path)
        .output()
        .expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.unsupported"), "{stderr}");
    assert!(stderr.contains("GSSAPI"), "{stderr}");
    assert!(stderr.contains("gssapi.yaml:"), "names the file: {stderr}");
}
