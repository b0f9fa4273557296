//! The Postgres face (`projector run --pg`) driven by real clients: Debian's `psql`,
//! `tokio-postgres` (Rust, binary results) and `psycopg` 3 (Python, with its own
//! libpq): listing and describing the views, key lookups with parameters, every
//! column type and NULLs, refused DDL and DML, bad queries, a cancelled query, tokens,
//! grants and TLS. Values are checked against the oracle of the events read.

mod common;

use common::cluster::{Running, free_port, get_json, repo, wait_for};
use common::oracle::{self, Account, Expected};
use common::{file_pipeline, generator_records};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Accounts the events touch.
const KEYS: u64 = 400;

/// A running instance serving HTTP and Postgres over a file of bank events.
struct Instance {
    running: Running,
    http: u16,
    pg: u16,
    _dir: tempfile::TempDir,
    expected: Expected,
    log: PathBuf,
}

impl Instance {
    /// What the instance wrote on stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts the bank pipeline over `events` generated events, with `yaml` appended to
/// its file and `args` added to `projector run`; waits until the input is read when
/// `/status` is open (no `auth:`).
fn start(events: u64, yaml: &str, args: &[&str]) -> Instance {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = generator_records(events, KEYS, 7);
    let input = dir.path().join("events.ndjson");
    let mut text = Vec::new();
    for (_, line) in &records {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    std::fs::write(&input, text).expect("writing events");
    let pipeline = dir.path().join("bank.yaml");
    let yaml_text = file_pipeline(&input.display().to_string(), "dead_letter")
        .replace("views:", &format!("{yaml}views:"));
    std::fs::write(&pipeline, yaml_text).expect("writing the pipeline");
    let (http, pg) = (free_port(), free_port());
    let log = dir.path().join("projector.log");
    let pg_addr = format!("127.0.0.1:{pg}");
    let mut extra: Vec<&std::ffi::OsStr> = vec!["--pg".as_ref(), pg_addr.as_ref()];
    extra.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    let running = Running::start_with(
        &pipeline,
        &dir.path().join("state"),
        http,
        2,
        Some(&log),
        &extra,
    );
    let instance = Instance {
        running,
        http,
        pg,
        expected: oracle::expected(&records),
        _dir: dir,
        log,
    };
    if yaml.is_empty() {
        assert!(
            wait_for(120, || get_json(http, "/status")
                .is_some_and(|s| s["state"] == "finished")),
            "the input was not read: {}",
            instance.log()
        );
    }
    instance
}

/// psql's path (scripts/psql.sh installs it; a missing one fails the test).
fn psql_path() -> String {
    let out = Command::new(repo().join("scripts/psql.sh"))
        .arg("install")
        .output()
        .expect("running scripts/psql.sh");
    assert!(
        out.status.success(),
        "psql is needed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// What one psql run gave: success, stdout, stderr.
struct Psql {
    ok: bool,
    out: String,
    err: String,
}

/// Runs psql against `conninfo` with `commands` (each a `-c`), unaligned and tuples
/// only with `|` between columns, verbose errors (with their SQLSTATE), no psqlrc.
fn psql(conninfo: &str, password: Option<&str>, commands: &[&str]) -> Psql {
    let mut cmd = Command::new(psql_path());
    cmd.arg(conninfo)
        .args(["-X", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1"])
        .args(["-v", "VERBOSITY=verbose"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.env_remove("PGPASSWORD").env("PGCONNECT_TIMEOUT", "10");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().expect("running psql");
    Psql {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn conninfo(port: u16, extra: &str) -> String {
    format!("host=127.0.0.1 port={port} user=tester dbname=bank sslmode=disable {extra}")
}

/// An account as psql's unaligned output shows it.
fn psql_line(a: &Account) -> String {
    let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}",
        a.account_id,
        a.owner.clone().unwrap_or_default(),
        n(a.balance),
        n(a.deposits),
        n(a.last_version)
    )
}

#[test]
fn psql_lists_describes_and_queries_the_views() {
    let instance = start(6_000, "", &[]);
    let info = conninfo(instance.pg, "");

    // Every row of the view, exactly as the events fold.
    let got = psql(
        &info,
        None,
        &[
            "SELECT account_id, owner, balance, deposits, last_version FROM accounts ORDER BY account_id",
        ],
    );
    assert!(got.ok, "{}\n{}", got.err, instance.log());
    let mut expected: Vec<String> = instance.expected.accounts.iter().map(psql_line).collect();
    expected.sort();
    assert_eq!(got.out.lines().collect::<Vec<_>>(), expected);

    // \dt and \d list the views as tables; \d VIEW shows columns, types and keys.
    let got = psql(&info, None, &["\\dt", "\\d accounts"]);
    assert!(got.ok, "{}", got.err);
    let lines: Vec<&str> = got.out.lines().collect();
    for line in [
        "public|accounts|table|projector",
        "public|volume_by_type|table|projector",
        "account_id|text||not null|",
        "owner|text|||",
        "balance|bigint|||",
        "last_version|bigint|||",
    ] {
        assert!(lines.contains(&line), "no '{line}' in:\n{}", got.out);
    }
    let got = psql(&info, None, &["\\d volume_by_type"]);
    assert!(got.ok, "{}", got.err);
    assert!(
        got.out.contains("average|double precision|||"),
        "{}",
        got.out
    );

    // Session statements drivers send, several statements in one query, SHOW.
    let got = psql(
        &info,
        None,
        &[
            "BEGIN; SET extra_float_digits = 3; SELECT count(*) FROM accounts; COMMIT",
            "SHOW server_version",
            "SELECT current_database(), current_schema(), version()",
        ],
    );
    assert!(got.ok, "{}", got.err);
    let lines: Vec<&str> = got.out.lines().collect();
    assert_eq!(lines[0], "BEGIN");
    assert_eq!(lines[1], "SET");
    assert_eq!(lines[2], instance.expected.accounts.len().to_string());
    assert_eq!(lines[3], "COMMIT");
    assert_eq!(lines[4], "15.0");
    assert!(
        lines[5].starts_with("projector|public|PostgreSQL 15.0 (Projector"),
        "{}",
        lines[5]
    );

    // Quotes a client escaped stay escaped: a value never becomes SQL.
    let got = psql(
        &info,
        None,
        &["SELECT 'it''s' AS s; SELECT count(*) FROM accounts WHERE owner = 'x'' OR ''1''=''1'"],
    );
    assert!(got.ok, "{}", got.err);
    assert_eq!(got.out.lines().collect::<Vec<_>>(), ["it's", "0"]);

    // Refused and bad statements: an error with its SQLSTATE, and the instance goes on.
    for (sql, code, words) in [
        (
            "CREATE TABLE t (a int)",
            "25006",
            "only queries are allowed",
        ),
        (
            "INSERT INTO accounts (account_id) VALUES ('x')",
            "25006",
            "only queries",
        ),
        ("DROP TABLE accounts", "25006", "only queries"),
        ("SELEC 1", "42601", "SELEC"),
        ("SELECT * FROM no_such_view", "42P01", "no_such_view"),
        (
            "SELECT no_such_column FROM accounts",
            "42703",
            "no_such_column",
        ),
        ("SELECT 1/0", "22012", "Divide by zero"),
    ] {
        let got = psql(&info, None, &[sql]);
        assert!(!got.ok, "{sql} succeeded: {}", got.out);
        assert!(
            got.err.contains(&format!("ERROR:  {code}:")) && got.err.contains(words),
            "{sql}: {}",
            got.err
        );
    }
    let got = psql(&info, None, &["SELECT count(*) FROM volume_by_type"]);
    assert!(got.ok, "{}", got.err);

    // Counted in /metrics under the face.
    let metrics = common::cluster::get_text(instance.http, "/metrics").expect("/metrics");
    assert!(
        metrics.contains(
            "projector_queries_total{pipeline=\"bank-accounts\",face=\"pg\",code=\"ok\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "projector_queries_total{pipeline=\"bank-accounts\",face=\"pg\",code=\"sql.read_only\"} 3"
        ),
        "{metrics}"
    );
    let Instance { mut running, .. } = instance;
    assert_eq!(running.terminate(30), Some(0));
}

/// A client of the face over tokio-postgres, with its connection driven in the
/// background.
async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&conninfo(port, ""), tokio_postgres::NoTls)
        .await
        .expect("connecting with tokio-postgres");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Asserts that the connection still answers a query.
async fn still_answers(client: &tokio_postgres::Client) {
    let row = client.query_one("SELECT 1", &[]).await.expect("SELECT 1");
    assert_eq!(row.get::<_, i64>(0), 1);
}

#[test]
fn tokio_postgres_prepares_binds_and_reads_every_type() {
    let instance = start(6_000, "", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use tokio_postgres::error::SqlState;
        use tokio_postgres::types::Type;
        let client = connect(instance.pg).await;

        // A key lookup: planned once, run for every account with its key bound.
        let lookup = client
            .prepare("SELECT owner, balance, deposits FROM accounts WHERE account_id = $1")
            .await
            .expect("prepare");
        assert_eq!(lookup.params(), &[Type::TEXT]);
        let types: Vec<&Type> = lookup.columns().iter().map(|c| c.type_()).collect();
        assert_eq!(types, [&Type::TEXT, &Type::INT8, &Type::INT8]);
        for a in &instance.expected.accounts {
            let row = client
                .query_opt(&lookup, &[&a.account_id])
                .await
                .expect("lookup")
                .unwrap_or_else(|| panic!("no row for {}", a.account_id));
            let got: (Option<String>, Option<i64>, Option<i64>) =
                (row.get(0), row.get(1), row.get(2));
            assert_eq!(
                got,
                (a.owner.clone(), a.balance, a.deposits),
                "{}",
                a.account_id
            );
        }
        let none = client.query_opt(&lookup, &[&"no-such-account"]).await;
        assert!(none.expect("lookup").is_none());

        // An integer parameter, sent in binary.
        let richer = instance
            .expected
            .accounts
            .iter()
            .filter(|a| a.balance.unwrap_or(0) > 1000)
            .count() as i64;
        let row = client
            .query_one(
                "SELECT count(*) AS n FROM accounts WHERE balance > $1",
                &[&1000i64],
            )
            .await
            .expect("count");
        assert_eq!(row.get::<_, i64>("n"), richer);

        // Every type a result column can have, in binary, and NULL of each.
        let row = client
            .query_one(
                "SELECT CAST(1 AS SMALLINT) AS i2, CAST(2 AS INT) AS i4, CAST(3 AS BIGINT) AS i8, \
                 CAST(1.5 AS REAL) AS f4, CAST(2.25 AS DOUBLE) AS f8, true AS b, 'ü' AS t, \
                 DATE '2024-02-29' AS d, CAST('12:30:05' AS TIME) AS tm, \
                 to_timestamp_millis(1700000000123) AS ts, \
                 to_timestamp_millis(1700000000123) AT TIME ZONE 'UTC' AS tstz, \
                 X'00ff' AS by, make_array(1, 2, 3) AS arr, make_array('a', NULL) AS tarr, \
                 CAST(1.50 AS DECIMAL(10, 2)) AS dec",
                &[],
            )
            .await
            .expect("every type");
        use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
        assert_eq!(row.get::<_, i16>("i2"), 1);
        assert_eq!(row.get::<_, i32>("i4"), 2);
        assert_eq!(row.get::<_, i64>("i8"), 3);
        assert_eq!(row.get::<_, f32>("f4"), 1.5);
        assert_eq!(row.get::<_, f64>("f8"), 2.25);
        assert!(row.get::<_, bool>("b"));
        assert_eq!(row.get::<_, String>("t"), "ü");
        assert_eq!(
            row.get::<_, NaiveDate>("d"),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
        );
        assert_eq!(
            row.get::<_, NaiveTime>("tm"),
            NaiveTime::from_hms_opt(12, 30, 5).unwrap()
        );
        let ts = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123).unwrap();
        assert_eq!(row.get::<_, NaiveDateTime>("ts"), ts.naive_utc());
        assert_eq!(row.get::<_, DateTime<Utc>>("tstz"), ts);
        assert_eq!(row.get::<_, Vec<u8>>("by"), vec![0u8, 255]);
        assert_eq!(row.get::<_, Vec<i64>>("arr"), vec![1, 2, 3]);
        assert_eq!(
            row.get::<_, Vec<Option<String>>>("tarr"),
            vec![Some("a".to_string()), None]
        );
        // Decimals have no binary twin here: text.
        assert_eq!(row.columns()[14].type_(), &Type::TEXT);
        assert_eq!(row.get::<_, String>("dec"), "1.50");

        let row = client
            .query_one(
                "SELECT CAST(NULL AS BIGINT) AS i, CAST(NULL AS TEXT) AS t, \
                 CAST(NULL AS DOUBLE) AS f, CAST(NULL AS BOOLEAN) AS b, \
                 CAST(NULL AS TIMESTAMP) AS ts",
                &[],
            )
            .await
            .expect("nulls");
        assert_eq!(row.get::<_, Option<i64>>("i"), None);
        assert_eq!(row.get::<_, Option<String>>("t"), None);
        assert_eq!(row.get::<_, Option<f64>>("f"), None);
        assert_eq!(row.get::<_, Option<bool>>("b"), None);
        assert_eq!(row.get::<_, Option<NaiveDateTime>>("ts"), None);

        // Refused and bad statements carry their SQLSTATE; the connection goes on.
        let code = |r: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>| {
            r.expect_err("an error").code().cloned()
        };
        assert_eq!(
            code(client.query("CREATE TABLE t (a int)", &[]).await),
            Some(SqlState::READ_ONLY_SQL_TRANSACTION)
        );
        assert_eq!(
            code(client.query("SELECT (1", &[]).await),
            Some(SqlState::SYNTAX_ERROR)
        );
        // A parameter the client declares as text, which is not a number.
        let typed = client
            .prepare_typed("SELECT * FROM accounts WHERE balance > $1", &[Type::TEXT])
            .await
            .expect("prepare_typed");
        assert_eq!(
            code(client.query(&typed, &[&"lots"]).await),
            Some(SqlState::INVALID_TEXT_REPRESENTATION)
        );
        still_answers(&client).await;
    });
    let Instance { mut running, .. } = instance;
    assert_eq!(running.terminate(30), Some(0));
}

#[test]
fn a_cancelled_query_stops_and_frees_its_slot() {
    // A long timeout: what stops the query here is the cancel.
    let instance = start(6_000, "query:\n  timeout: 10m\n", &[]);
    assert!(
        wait_for(120, || get_json(instance.http, "/status")
            .is_some_and(|s| s["state"] == "finished")),
        "{}",
        instance.log()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = connect(instance.pg).await;
        let cancel = client.cancel_token();
        // The simple protocol: the query runs as soon as it arrives (with the extended
        // one, a cancel that arrives while the statement is being planned, before it
        // runs, cancels nothing, as in Postgres).
        let long = tokio::spawn(async move {
            let r = client
                .simple_query(
                    "SELECT count(*) FROM accounts a, accounts b, accounts c, accounts d \
                     WHERE a.balance + b.balance + c.balance + d.balance = 7",
                )
                .await;
            (r.map(|_| ()), client)
        });
        // Running, as /metrics sees it.
        let http = instance.http;
        let running = move |n: &str| {
            common::cluster::get_text(http, "/metrics").is_some_and(|m| {
                m.lines().any(|l| {
                    l.starts_with("projector_query_running{") && l.ends_with(&format!("}} {n}"))
                })
            })
        };
        let started = tokio::task::spawn_blocking(move || wait_for(60, || running("1")));
        assert!(started.await.unwrap(), "the query never ran");
        cancel
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("sending the cancel request");
        // Within a minute, not at the 10-minute timeout.
        let (result, client) = tokio::time::timeout(Duration::from_secs(60), long)
            .await
            .expect("the cancel did not stop the query")
            .expect("query task");
        let e = result.expect_err("the cancelled query failed");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "{e:?}"
        );
        let message = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(message.contains("user request"), "{message}");
        let freed = tokio::task::spawn_blocking(move || wait_for(60, || running("0")));
        assert!(
            freed.await.unwrap(),
            "the cancelled query still holds its slot"
        );
        still_answers(&client).await;
    });
    let Instance { mut running, .. } = instance;
    assert_eq!(running.terminate(30), Some(0));
}

/// The psycopg check script's answer (see `cli/tests/clients/psycopg_face.py`).
fn psycopg(port: u16, keys: &[&str], extra: &[&str]) -> serde_json::Value {
    let keys = serde_json::to_string(keys).expect("keys");
    let out = Command::new(repo().join("scripts/clients.sh"))
        .arg("python")
        .arg(repo().join("cli/tests/clients/psycopg_face.py"))
        .arg(port.to_string())
        .arg(&keys)
        .args(extra)
        .output()
        .expect("running the psycopg script");
    assert!(
        out.status.success(),
        "psycopg script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[test]
fn psycopg_looks_up_keys_and_reads_types() {
    let instance = start(6_000, "", &[]);
    let accounts = &instance.expected.accounts;
    let keys: Vec<&str> = accounts
        .iter()
        .take(60)
        .map(|a| a.account_id.as_str())
        .collect();
    let answer = psycopg(instance.pg, &keys, &[]);
    for a in accounts.iter().take(60) {
        assert_eq!(
            answer["rows"][&a.account_id],
            serde_json::json!([a.owner, a.balance, a.deposits]),
            "{}",
            a.account_id
        );
    }
    let richer = accounts
        .iter()
        .filter(|a| a.balance.unwrap_or(0) > 1000)
        .count();
    assert_eq!(answer["richer"], richer, "{answer}");
    assert_eq!(
        answer["types"],
        serde_json::json!({
            "i2": "1", "i4": "2", "i8": "3", "f8": "2.25", "b": "True", "t": "ü",
            "d": "2024-02-29", "ts": "2023-11-14 22:13:20.123000",
            "tstz": "2023-11-14 22:13:20.123000+00:00", "by": "b'\\x00\\xff'",
            "arr": "[1, 2, 3]", "null": "None"
        }),
        "{answer}"
    );
    assert_eq!(answer["errors"]["ddl"], "25006", "{answer}");
    assert_eq!(answer["errors"]["syntax"], "42601", "{answer}");
    assert_eq!(answer["errors"]["missing"], "42P01", "{answer}");
    assert_eq!(answer["after_errors"], 1, "{answer}");
    let Instance { mut running, .. } = instance;
    assert_eq!(running.terminate(30), Some(0));
}

const READER: &str = "reader-token-6d1f";
const OPS: &str = "ops-token-a3c9";

/// The pipeline's `auth:` section: `reader` may read `accounts`, `ops` everything.
fn auth_yaml() -> String {
    let sha = |t: &str| projector_engine::config::hex(&projector_engine::config::hash_token(t));
    format!(
        "auth:\n  tokens:\n    - name: reader\n      sha256: {}\n      views: [accounts]\n    \
         - name: ops\n      sha256: {}\n      views: [\"*\"]\n",
        sha(READER),
        sha(OPS)
    )
}

/// A self-signed certificate for localhost and its key, in `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    (cert_path, key_path)
}

#[test]
fn tokens_grants_and_tls_over_postgres() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path());
    let instance = start(
        6_000,
        &auth_yaml(),
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let count = instance.expected.accounts.len().to_string();
    let tls = conninfo(instance.pg, "").replace("sslmode=disable", "sslmode=require");
    // The input is read when the count is the oracle's.
    assert!(
        wait_for(120, || {
            let got = psql(&tls, Some(OPS), &["SELECT count(*) FROM accounts"]);
            got.ok && got.out.trim() == count
        }),
        "{}",
        instance.log()
    );
    // The reader reads its view, and is refused the other.
    let got = psql(&tls, Some(READER), &["SELECT count(*) FROM accounts"]);
    assert!(got.ok && got.out.trim() == count, "{}", got.err);
    let got = psql(&tls, Some(READER), &["SELECT * FROM volume_by_type"]);
    assert!(!got.ok);
    assert!(
        got.err.contains("ERROR:  42501:") && got.err.contains("volume_by_type"),
        "{}",
        got.err
    );
    // A wrong token, no token, and no TLS are refused at connect.
    let got = psql(&tls, Some("not-a-token"), &["SELECT 1"]);
    assert!(!got.ok);
    assert!(
        got.err.contains("Password authentication failed"),
        "{}",
        got.err
    );
    let got = psql(&tls, None, &["SELECT 1"]);
    assert!(!got.ok, "{}", got.out);
    let plain = conninfo(instance.pg, "");
    let got = psql(&plain, Some(OPS), &["SELECT 1"]);
    assert!(!got.ok);
    assert!(got.err.contains("TLS connections only"), "{}", got.err);
    // psycopg over TLS with a token.
    let keys: Vec<&str> = instance
        .expected
        .accounts
        .iter()
        .take(5)
        .map(|a| a.account_id.as_str())
        .collect();
    let answer = psycopg(instance.pg, &keys, &["--tls", OPS]);
    assert_eq!(answer["after_errors"], 1, "{answer}");
    let Instance { mut running, .. } = instance;
    assert_eq!(running.terminate(30), Some(0));
}
