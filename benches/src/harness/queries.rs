//! SQL latency: closed-loop clients sending key lookups and aggregates over HTTP
//! while the pipeline ingests.

use super::{MAX_LATENCY_US, QueryLatency};
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
            let keys: Vec<String> = rows
                .iter()
                .filter_map(|r| r.get(&col).map(sql_literal))
                .collect();
            if !keys.is_empty() {
                let (c, t) = (quote_ident(&col), table.clone());
                out.push(Arc::new(QueryKind {
                    view: spec.name.clone(),
                    kind: "key_lookup",
                    make: Box::new(move |i| {
                        let k = &keys[(i as usize).wrapping_mul(7919) % keys.len()];
                        format!("SELECT * FROM {t} WHERE {c} = {k}")
                    }),
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
                let mut results: Vec<ClientResult> = kinds
                    .iter()
                    .map(|_| ClientResult {
                        hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                            .expect("valid bounds"),
                        errors: 0,
                        first_error: None,
                    })
                    .collect();
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

impl Clients {
    pub(super) fn finish(self, clients: usize) -> Vec<QueryLatency> {
        let mut merged: Vec<ClientResult> = self
            .kinds
            .iter()
            .map(|_| ClientResult {
                hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
                errors: 0,
                first_error: None,
            })
            .collect();
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
                sql: (k.make)(0),
                clients,
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
