//! SQL latency: closed-loop clients sending key lookups and aggregates, over HTTP or
//! the Postgres protocol, while the pipeline ingests.

use super::{MAX_LATENCY_US, QueryFace, QueryLatency};
use anyhow::{Result, anyhow};
use arrow::datatypes::DataType;
use hdrhistogram::Histogram;
use projector_engine::{Shared, SqlEngine};
use projector_operators::view::ViewKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One kind of query against one view: the SQL for the i-th request.
pub(super) struct QueryKind {
    view: String,
    kind: &'static str,
    make: Box<dyn Fn(u64) -> String + Send + Sync>,
    /// The same as a statement to prepare, and the i-th request's text parameter
    /// (`None`: it takes none).
    prepared: String,
    param: Box<dyn Fn(u64) -> Option<String> + Send + Sync>,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn sql_literal(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

/// For every view: a lookup of one key (the fold key, or an aggregate's first group
/// column; keys sampled from the view once it has rows) and an aggregate over all rows.
pub(super) fn prepare_queries(
    shared: &Arc<Shared>,
    sql: &Arc<SqlEngine>,
    runtime: &tokio::runtime::Runtime,
    done: &AtomicBool,
) -> Result<Vec<Arc<QueryKind>>> {
    // Keys to look up: wait (within the run) until every view that will have rows has some.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let published = shared.catalog.current();
        let filled = shared
            .catalog
            .views
            .iter()
            .zip(&published.views)
            .all(|(spec, v)| v.row_count(spec).unwrap_or(0) > 0);
        if filled || Instant::now() > deadline || done.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = Vec::new();
    for (v, spec) in shared.catalog.views.iter().enumerate() {
        let schema = &shared.catalog.schemas[v];
        let table = quote_ident(&spec.name);
        let key_col = match &spec.kind {
            ViewKind::Fold(_) => Some(schema.field(0).name().clone()),
            ViewKind::Aggregate(a) => a.group_by.first().map(|g| g.name.clone()),
            // Append-only: no key; the aggregate over all rows is its query.
            ViewKind::Table(_) => None,
        };
        if let Some(col) = key_col {
            let q = format!(
                "SELECT {c} FROM {table} WHERE {c} IS NOT NULL LIMIT 1000",
                c = quote_ident(&col)
            );
            let result = runtime
                .block_on(sql.query(&q))
                .map_err(|e| anyhow!("sampling keys of {}: {e}", spec.name))?;
            let bytes = projector_engine::render(
                &result.schema,
                &result.batches,
                projector_engine::OutputFormat::Json,
            )?;
            let rows: Vec<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&bytes)?;
            let values: Vec<serde_json::Value> =
                rows.iter().filter_map(|r| r.get(&col).cloned()).collect();
            let keys: Vec<String> = values.iter().map(sql_literal).collect();
            if !keys.is_empty() {
                let (c, t) = (quote_ident(&col), table.clone());
                let pick = |i: u64, n: usize| (i as usize).wrapping_mul(7919) % n;
                // Text keys are a parameter of one prepared statement; others (rare)
                // are sent in the text, as over HTTP.
                let texts: Option<Vec<String>> = values
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect();
                let (prepared, param): (String, Box<dyn Fn(u64) -> Option<String> + Send + Sync>) =
                    match texts {
                        Some(texts) => (
                            format!("SELECT * FROM {t} WHERE {c} = $1"),
                            Box::new(move |i| Some(texts[pick(i, texts.len())].clone())),
                        ),
                        None => (String::new(), Box::new(|_| None)),
                    };
                out.push(Arc::new(QueryKind {
                    view: spec.name.clone(),
                    kind: "key_lookup",
                    make: Box::new(move |i| {
                        let k = &keys[pick(i, keys.len())];
                        format!("SELECT * FROM {t} WHERE {c} = {k}")
                    }),
                    prepared,
                    param,
                }));
            }
        }
        let mut exprs = vec!["count(*) AS n".to_string()];
        for f in schema.fields() {
            let c = quote_ident(f.name());
            match f.data_type() {
                DataType::Int64 | DataType::Float64 => exprs.push(format!("sum({c})")),
                _ => exprs.push(format!("count({c})")),
            }
        }
        let q = format!("SELECT {} FROM {table}", exprs.join(", "));
        out.push(Arc::new(QueryKind {
            view: spec.name.clone(),
            kind: "aggregate",
            prepared: q.clone(),
            param: Box::new(|_| None),
            make: Box::new(move |_| q.clone()),
        }));
    }
    Ok(out)
}

#[derive(Default)]
pub(super) struct Clients {
    threads: Vec<std::thread::JoinHandle<Vec<ClientResult>>>,
    kinds: Vec<Arc<QueryKind>>,
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

pub(super) fn start_clients(
    base: &str,
    kinds: Vec<Arc<QueryKind>>,
    n: usize,
    done: &Arc<AtomicBool>,
) -> Clients {
    let counter = Arc::new(AtomicU64::new(0));
    let threads = (0..n)
        .map(|_| {
            let (kinds, done, counter) = (kinds.clone(), done.clone(), counter.clone());
            let url = format!("{base}/sql?format=json");
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut results = empty_results(&kinds);
                if kinds.is_empty() {
                    return results;
                }
                while !done.load(Ordering::Relaxed) {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let k = (i as usize) % kinds.len();
                    let sql = (kinds[k].make)(i / kinds.len() as u64);
                    let t = Instant::now();
                    let answer = agent
                        .post(&url)
                        .header("content-type", "text/plain")
                        .send(&sql)
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| {
                            let ok = r.status().is_success();
                            let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                            if ok { Ok(()) } else { Err(body) }
                        });
                    let us = t.elapsed().as_micros() as u64;
                    let r = &mut results[k];
                    match answer {
                        Ok(()) => r.hist.saturating_record(us.clamp(1, MAX_LATENCY_US)),
                        Err(e) => {
                            r.errors += 1;
                            r.first_error.get_or_insert(e);
                        }
                    }
                }
                results
            })
        })
        .collect();
    Clients { threads, kinds }
}

fn empty_results(kinds: &[Arc<QueryKind>]) -> Vec<ClientResult> {
    kinds
        .iter()
        .map(|_| ClientResult {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            errors: 0,
            first_error: None,
        })
        .collect()
}

/// Clients over the Postgres protocol at `addr`: each connects once, prepares every
/// kind's statement once, then runs them in turn (a key lookup with its key bound).
pub(super) fn start_pg_clients(
    addr: std::net::SocketAddr,
    kinds: Vec<Arc<QueryKind>>,
    n: usize,
    done: &Arc<AtomicBool>,
) -> Clients {
    let counter = Arc::new(AtomicU64::new(0));
    let threads = (0..n)
        .map(|_| {
            let (kinds, done, counter) = (kinds.clone(), done.clone(), counter.clone());
            std::thread::spawn(move || {
                let mut results = empty_results(&kinds);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some(r) = results.first_mut() {
                            r.errors += 1;
                            r.first_error = Some(e.to_string());
                        }
                        return results;
                    }
                };
                runtime.block_on(pg_client(addr, &kinds, &done, &counter, &mut results));
                results
            })
        })
        .collect();
    Clients { threads, kinds }
}

async fn pg_client(
    addr: std::net::SocketAddr,
    kinds: &[Arc<QueryKind>],
    done: &AtomicBool,
    counter: &AtomicU64,
    results: &mut [ClientResult],
) {
    let fail = |results: &mut [ClientResult], e: String| {
        if let Some(r) = results.first_mut() {
            r.errors += 1;
            r.first_error.get_or_insert(e);
        }
    };
    let config = format!(
        "host={} port={} user=bench dbname=bench",
        addr.ip(),
        addr.port()
    );
    let client = match tokio_postgres::connect(&config, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) => return fail(results, format!("connecting: {e}")),
    };
    let mut statements = Vec::new();
    for k in kinds {
        if k.prepared.is_empty() {
            statements.push(None);
            continue;
        }
        match client.prepare(&k.prepared).await {
            Ok(s) => statements.push(Some(s)),
            Err(e) => return fail(results, format!("preparing {}: {e}", k.prepared)),
        }
    }
    if kinds.is_empty() {
        return;
    }
    while !done.load(Ordering::Relaxed) {
        let i = counter.fetch_add(1, Ordering::Relaxed);
        let k = (i as usize) % kinds.len();
        let n = i / kinds.len() as u64;
        let t = Instant::now();
        let answer = match (&statements[k], (kinds[k].param)(n)) {
            (Some(s), Some(key)) => client.query(s, &[&key]).await,
            (Some(s), None) => client.query(s, &[]).await,
            (None, _) => client.query(&(kinds[k].make)(n), &[]).await,
        };
        let us = t.elapsed().as_micros() as u64;
        let r = &mut results[k];
        match answer {
            Ok(_) => r.hist.saturating_record(us.clamp(1, MAX_LATENCY_US)),
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

impl Clients {
    pub(super) fn finish(self, clients: usize, face: QueryFace) -> Vec<QueryLatency> {
        let mut merged = empty_results(&self.kinds);
        for t in self.threads {
            let Ok(results) = t.join() else { continue };
            for (m, r) in merged.iter_mut().zip(results) {
                let _ = m.hist.add(&r.hist);
                m.errors += r.errors;
                if m.first_error.is_none() {
                    m.first_error = r.first_error;
                }
            }
        }
        let ms = |us: u64| us as f64 / 1000.0;
        self.kinds
            .iter()
            .zip(merged)
            .map(|(k, m)| QueryLatency {
                view: k.view.clone(),
                kind: k.kind.into(),
                sql: match face {
                    QueryFace::Http => (k.make)(0),
                    QueryFace::Pg if k.prepared.is_empty() => (k.make)(0),
                    QueryFace::Pg => k.prepared.clone(),
                },
                clients,
                face,
                count: m.hist.len(),
                errors: m.errors,
                first_error: m.first_error,
                p50_ms: ms(m.hist.value_at_quantile(0.5)),
                p99_ms: ms(m.hist.value_at_quantile(0.99)),
                max_ms: ms(m.hist.max()),
            })
            .collect()
    }
}
