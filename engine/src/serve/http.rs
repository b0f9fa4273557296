//! The HTTP face: `POST /sql`, `GET /views`, `GET /status`, `GET /health`, `GET
//! /metrics`, `GET /parked` with `POST /parked/retry` and `/parked/skip` (`on_error:
//! park`), and
//! `POST /cluster/scan`, which other instances of the pipeline send (see
//! `serve/cluster`).

use crate::runtime::pipeline::Shared;
use crate::serve::auth::{Auth, Caller, guard, refuse};
use crate::serve::cluster::wire::{ABSENT, COVERED, Contribution, ScanRequest, scan_sql};
use crate::serve::output::{OutputFormat, render, render_chunks};
use crate::serve::query::{
    Prepared, QueryError, QueryErrorKind, QueryOptions, QueryResult, SqlEngine,
};
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline and its SQL engine: swapped at once when a rebuild switches.
    face: Arc<ArcSwap<Face>>,
    /// Who may ask what ([`Auth::default`]: anyone, anything).
    pub auth: Arc<Auth>,
}

/// The pipeline the HTTP and Postgres faces answer for.
pub(crate) struct Face {
    /// The pipeline.
    pub(crate) shared: Arc<Shared>,
    /// Its SQL engine.
    pub(crate) sql: Arc<SqlEngine>,
}

impl Face {
    /// Runs `sql` with `options`, counted in `/metrics` under `label` (`http`,
    /// `cluster`, `pg`) with its outcome and time.
    pub(crate) async fn query(
        &self,
        label: &str,
        sql: &str,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let started = std::time::Instant::now();
        let answer = self.sql.query_with(sql, options).await;
        let code = answer.as_ref().map_or_else(|e| e.code(), |_| "ok");
        self.shared.metrics.query(label, code, started.elapsed());
        answer
    }

    /// Runs a prepared statement with `params`, counted like [`Face::query`].
    pub(crate) async fn run_prepared(
        &self,
        label: &str,
        prepared: &Prepared,
        params: Vec<datafusion::common::ScalarValue>,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let started = std::time::Instant::now();
        let answer = self.sql.run_prepared(prepared, params, options).await;
        let code = answer.as_ref().map_or_else(|e| e.code(), |_| "ok");
        self.shared.metrics.query(label, code, started.elapsed());
        answer
    }
}

impl AppState {
    /// The face of the pipeline `shared`, querying with `sql`, guarded by `auth`.
    pub fn new(shared: Arc<Shared>, sql: Arc<SqlEngine>, auth: Arc<Auth>) -> Self {
        AppState {
            face: Arc::new(ArcSwap::from_pointee(Face { shared, sql })),
            auth,
        }
    }

    /// From now on, answers for `shared` with `sql` (requests under way finish with
    /// the pipeline they started with).
    pub fn switch(&self, shared: Arc<Shared>, sql: Arc<SqlEngine>) {
        self.face.store(Arc::new(Face { shared, sql }));
    }

    /// The pipeline answered for now.
    pub(crate) fn face(&self) -> Arc<Face> {
        self.face.load_full()
    }
}

/// The runtime HTTP runs on: two threads of its own, never the pipeline's nor the
/// query threads (queries run apart, so a heavy one cannot delay `/health`).
pub fn http_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
}

/// Binds `addr` and serves the HTTP API on `runtime`; returns the bound address (with
/// port 0 the system picks one).
pub fn serve(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    state: AppState,
) -> std::io::Result<std::net::SocketAddr> {
    serve_on(runtime, bind(runtime, addr)?, state, None)
}

/// Binds `addr` for [`serve_on`] (with port 0 the system picks one).
pub fn bind(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
) -> std::io::Result<tokio::net::TcpListener> {
    runtime.block_on(tokio::net::TcpListener::bind(addr))
}

/// A certificate chain and its private key, PEM files, for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// Serves the HTTP API on `listener`, on `runtime`, over HTTPS when `tls` is given;
/// returns the bound address.
pub fn serve_on(
    runtime: &tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Option<&TlsFiles>,
) -> std::io::Result<std::net::SocketAddr> {
    let bound = listener.local_addr()?;
    let app = router(state);
    let acceptor = match tls {
        None => None,
        Some(files) => {
            let mut config = runtime.block_on(tls_config(files))?;
            // HTTP/1.1 only (serve/listen.rs): a client offered h2 would agree on it
            // and then be refused.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
    };
    runtime.spawn(crate::serve::listen::accept(listener, app, acceptor));
    Ok(bound)
}

/// The TLS configuration of `files` (ring, as all of rustls here), for HTTPS and the
/// Postgres face.
pub(crate) async fn tls_config(
    files: &TlsFiles,
) -> std::io::Result<tokio_rustls::rustls::ServerConfig> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|e| {
            std::io::Error::other(format!(
                "TLS certificate {} and key {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    Ok((*config.get_inner()).clone())
}

/// The HTTP routes, behind the token guard.
pub(crate) fn router(state: AppState) -> Router {
    let auth = state.auth.clone();
    Router::new()
        .route("/", get(crate::serve::console::index))
        .route("/console/{file}", get(crate::serve::console::asset))
        .route("/sql", post(sql))
        .route("/views", get(views))
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/subscribe", get(crate::serve::subscribe::sse::subscribe))
        .route("/cluster/scan", post(cluster_scan))
        .route("/parked", get(parked))
        .route("/parked/retry", post(parked_retry))
        .route("/parked/skip", post(parked_skip))
        .fallback(not_found)
        .with_state(state)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            crate::serve::listen::BODY_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(auth, guard))
        .layer(axum::middleware::from_fn(json_errors))
}

/// Any path the API does not have.
async fn not_found(uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "http.not_found",
        &format!(
            "no such endpoint: {}; the API: POST /sql, GET /views, /status, /health, /metrics, \
             /subscribe, /parked, POST /parked/retry, /parked/skip; the web console: GET /",
            uri.path()
        ),
    )
}

/// Gives the error answers no handler wrote (a wrong method, a body over the limit, a
/// query string that does not parse) the JSON error shape every other one has.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "http.not_found",
        StatusCode::METHOD_NOT_ALLOWED => "http.method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "http.too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "http.unsupported_media_type",
        s if s.is_server_error() => "http.internal",
        _ => "http.bad_request",
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            "this endpoint does not take that method (POST /sql; GET /, /views, /status, \
             /health, /parked)"
                .to_string()
        }
        (true, s) => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut answer = error_response(status, code, &message);
    // Keep what the original answer said beyond its body (`Allow`, `WWW-Authenticate`).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was never read, so the connection cannot carry another
        // request: say so, or a client that pools connections sends its next one there.
        answer.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    answer
}

#[derive(Deserialize)]
struct SqlParams {
    format: Option<String>,
    /// Accept an answer without the partitions no instance answers for.
    #[serde(default)]
    partial: bool,
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
}

/// Why `POST /sql` failed. Each kind has its code and HTTP status here, in one place;
/// the body is `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, thiserror::Error)]
enum SqlRequestError {
    /// `?format=` names no format HTTP serves.
    #[error("unknown format '{0}': use json, rows, csv or arrow")]
    BadFormat(String),
    /// The body is not UTF-8.
    #[error("the body is not UTF-8")]
    NotUtf8,
    /// A JSON body that is not `{"sql": "..."}`.
    #[error("expected {{\"sql\": \"...\"}}: {0}")]
    BadJson(serde_json::Error),
    /// No SQL in the body.
    #[error("no SQL in the request body")]
    Empty,
    /// The query failed or was refused.
    #[error("{}", .0.message)]
    Query(QueryError),
    /// The result could not be rendered.
    #[error("{0}")]
    Render(arrow::error::ArrowError),
}

impl SqlRequestError {
    fn code(&self) -> &'static str {
        match self {
            SqlRequestError::BadFormat(_) => "http.bad_format",
            SqlRequestError::NotUtf8 | SqlRequestError::BadJson(_) => "http.bad_body",
            SqlRequestError::Empty => "sql.empty",
            SqlRequestError::Query(e) => e.code(),
            SqlRequestError::Render(_) => "sql.render",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            SqlRequestError::BadFormat(_)
            | SqlRequestError::NotUtf8
            | SqlRequestError::BadJson(_)
            | SqlRequestError::Empty => StatusCode::BAD_REQUEST,
            SqlRequestError::Query(e) => match e.kind {
                QueryErrorKind::Unavailable | QueryErrorKind::PartitionUnavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                QueryErrorKind::Forbidden => StatusCode::FORBIDDEN,
                QueryErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
                QueryErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                QueryErrorKind::Parse
                | QueryErrorKind::Plan
                | QueryErrorKind::Unsupported
                | QueryErrorKind::ResourcesExhausted
                | QueryErrorKind::Execution
                | QueryErrorKind::ReadOnly
                | QueryErrorKind::TooManyRows
                | QueryErrorKind::Timeout
                | QueryErrorKind::ResultTooLarge
                | QueryErrorKind::TooComplex => StatusCode::BAD_REQUEST,
            },
            SqlRequestError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for SqlRequestError {
    fn into_response(self) -> Response {
        error_response(self.status(), self.code(), &self.to_string())
    }
}

/// The usual error answer: `status` with `{"error": {"code": ..., "message": ...}}`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn sql(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let face = app.face();
    let format = match params.format.as_deref() {
        None => OutputFormat::Json,
        Some(f) => match OutputFormat::from_name(f) {
            Some(OutputFormat::Table) | None => {
                return SqlRequestError::BadFormat(f.to_string()).into_response();
            }
            Some(f) => f,
        },
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return SqlRequestError::NotUtf8.into_response();
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
        || text.trim_start().starts_with('{');
    let sql_text = if is_json {
        match serde_json::from_str::<SqlBody>(text) {
            Ok(b) => b.sql,
            Err(e) => return SqlRequestError::BadJson(e).into_response(),
        }
    } else {
        text.to_string()
    };
    if sql_text.trim().is_empty() {
        return SqlRequestError::Empty.into_response();
    }
    let options = QueryOptions {
        partial: params.partial,
        grant: caller.and_then(|Extension(c)| c.grant().cloned()),
        ..QueryOptions::default()
    };
    match face.query("http", &sql_text, &options).await {
        Ok(mut r) => {
            // Sent while rendered, a batch at a time: the rendered answer (JSON is a
            // few times the Arrow size) is never held whole.
            let batches = std::mem::take(&mut r.batches);
            let chunks = render_chunks(r.schema.clone(), batches, format)
                .map(|chunk| chunk.map(Bytes::from));
            let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, format.content_type())],
                body,
            )
                .into_response();
            answer_headers(response.headers_mut(), &face.shared, &r);
            response
        }
        Err(e) => SqlRequestError::Query(e).into_response(),
    }
}

/// Says where an answer's rows came from:
/// * `x-projector-epoch`: this instance's epoch the query read;
/// * `x-projector-partitions`: how many of the pipeline's partitions it covers
///   (`8/8`);
/// * `x-projector-partition-epochs`: each partition's owner epoch and offset,
///   `name=epoch@offset` separated by commas;
/// * `x-projector-missing-partitions`: the partitions a partial answer lacks.
fn answer_headers(headers: &mut HeaderMap, shared: &Shared, r: &QueryResult) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = value.parse() {
            headers.insert(header::HeaderName::from_static(name), v);
        }
    };
    set("x-projector-epoch", r.epoch.to_string());
    let total = shared.catalog.partition_names().len();
    set(
        "x-projector-partitions",
        format!("{}/{total}", total - r.missing.len().min(total)),
    );
    if !r.partitions.is_empty() {
        let epochs: Vec<String> = r
            .partitions
            .iter()
            .map(|c| format!("{}={}@{}", c.partition, c.epoch, c.offset))
            .collect();
        set("x-projector-partition-epochs", epochs.join(","));
    }
    if !r.missing.is_empty() {
        let names: Vec<&str> = r.missing.iter().map(|(p, _)| p.as_str()).collect();
        set("x-projector-missing-partitions", names.join(","));
    }
}

/// `POST /cluster/scan`: another instance asks for this instance's rows (or aggregate
/// partials) of some partitions of a view. Answers from its pinned epoch only, and
/// says which of the partitions it holds (see `serve/cluster/wire.rs`).
async fn cluster_scan(State(app): State<AppState>, body: Bytes) -> Response {
    let face = app.face();
    let bad = |status, code, message: String| error_response(status, code, &message);
    let req: ScanRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(StatusCode::BAD_REQUEST, "http.bad_body", e.to_string()),
    };
    let catalog = &face.shared.catalog;
    if req.pipeline != face.shared.name {
        return bad(
            StatusCode::CONFLICT,
            "cluster.other_pipeline",
            format!(
                "this instance runs pipeline '{}', not '{}'",
                face.shared.name, req.pipeline
            ),
        );
    }
    let names = catalog.partition_names();
    let mut ids = BTreeSet::new();
    let mut absent = Vec::new();
    for p in &req.partitions {
        match names.iter().position(|n| n == p) {
            Some(i) => {
                ids.insert(i as u32);
            }
            None => absent.push(p.clone()),
        }
    }
    let headers_of = |covered: &[Contribution], absent: &[String]| {
        let mut h = HeaderMap::new();
        if let Ok(v) = serde_json::to_string(covered)
            .expect("contributions serialise")
            .parse()
        {
            h.insert(COVERED, v);
        }
        if let Ok(v) = serde_json::to_string(absent)
            .expect("names serialise")
            .parse()
        {
            h.insert(ABSENT, v);
        }
        h
    };
    if req.partials {
        let Some(v) = catalog.index_of(&req.view) else {
            return bad(
                StatusCode::BAD_REQUEST,
                "sql.plan",
                format!("no view '{}'", req.view),
            );
        };
        let projector_operators::view::ViewKind::Aggregate(spec) = &catalog.views[v].kind else {
            return bad(
                StatusCode::BAD_REQUEST,
                "sql.plan",
                format!("view '{}' is not an aggregate view", req.view),
            );
        };
        let pinned = catalog.current();
        let held: BTreeSet<u32> = ids.intersection(&pinned.present).copied().collect();
        absent.extend(ids.difference(&held).map(|&p| names[p as usize].clone()));
        let covered: Vec<Contribution> = held
            .iter()
            .flat_map(|&u| catalog.contributions(u, &pinned, ""))
            .collect();
        let mut bytes = Vec::new();
        projector_operators::codec::encode_partials(
            spec,
            &pinned.views[v].partials(Some(&held)),
            &mut bytes,
        );
        return (StatusCode::OK, headers_of(&covered, &absent), bytes).into_response();
    }
    let options = QueryOptions {
        local_only: Some(ids),
        ..QueryOptions::default()
    };
    match face.query("cluster", &scan_sql(&req), &options).await {
        Ok(r) => match render(&r.schema, &r.batches, OutputFormat::Arrow) {
            Ok(bytes) => {
                absent.extend(r.missing.into_iter().map(|(p, _)| p));
                (StatusCode::OK, headers_of(&r.partitions, &absent), bytes).into_response()
            }
            Err(e) => SqlRequestError::Render(e).into_response(),
        },
        Err(e) => SqlRequestError::Query(e).into_response(),
    }
}

#[derive(Serialize)]
struct ViewInfo {
    name: String,
    kind: &'static str,
    columns: Vec<ColumnInfo>,
    rows: Option<usize>,
}

#[derive(Serialize)]
struct ColumnInfo {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    nullable: bool,
}

async fn views(State(app): State<AppState>, caller: Option<Extension<Caller>>) -> Response {
    let face = app.face();
    let catalog = &face.shared.catalog;
    let published = catalog.current();
    let grant = caller.and_then(|Extension(c)| c.grant().cloned());
    let infos: Vec<ViewInfo> = catalog
        .views
        .iter()
        .enumerate()
        .filter(|(_, v)| grant.as_ref().is_none_or(|g| g.allows(&v.name)))
        .map(|(i, v)| ViewInfo {
            name: v.name.clone(),
            kind: match v.kind {
                projector_operators::view::ViewKind::Fold(_) => "fold",
                projector_operators::view::ViewKind::Aggregate(_) => "aggregate",
                projector_operators::view::ViewKind::Table(_) => "table",
            },
            columns: catalog.schemas[i]
                .fields()
                .iter()
                .map(|f| ColumnInfo {
                    name: f.name().clone(),
                    ty: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
            rows: published.views[i].row_count(v),
        })
        .collect();
    axum::Json(infos).into_response()
}

/// The body of `GET /status`.
pub fn status_json(shared: &Shared) -> serde_json::Value {
    let progress = shared.progress.get();
    let written = shared.checkpoints.get().written_ms;
    let checkpoint_age_ms = match written {
        0 => 0,
        w => crate::state::checkpoint::recovery::now_ms().saturating_sub(w),
    };
    let state = if shared.fatal().is_some() {
        "failed"
    } else if shared.degraded().is_some() {
        "degraded"
    } else if progress.finished {
        "finished"
    } else {
        "running"
    };
    json!({
        "pipeline": shared.name,
        "state": state,
        "error": shared.fatal().map(|f| f.to_string()),
        "epoch": progress.epoch,
        "workers": shared.workers,
        "uptime_ms": shared.started.elapsed().as_millis() as u64,
        "events": shared.counters.snapshot(),
        "partitions": partitions_json(shared),
        "backpressure": {
            "paused": shared.counters.paused.load(std::sync::atomic::Ordering::Relaxed) == 1,
            "pauses": shared.counters.pauses.load(std::sync::atomic::Ordering::Relaxed),
        },
        // Memory `dedup:` holds (updated at checkpoints).
        "dedup": {
            "ids": shared.counters.dedup_ids.load(std::sync::atomic::Ordering::Relaxed),
            "bytes": shared.counters.dedup_bytes.load(std::sync::atomic::Ordering::Relaxed),
        },
        // `on_error: park`: keys parked and the events they hold (as of each
        // worker's last epoch; GET /parked lists them).
        "parked": {
            "keys": shared.parked.totals().0,
            "events": shared.parked.totals().1,
        },
        // Views rebuilt beside these (a new `version:`, or `--rebuild`).
        "rebuild": shared.rebuild.lock().expect("rebuild lock").clone(),
        // Dead letters replayed by this run (`--replay-dead-letters`).
        "redrive": shared.counters.redrive.snapshot(),
        "checkpoint": shared.checkpoints.get(),
        // Its age as this instance's clock has it (0 before the first).
        "checkpoint_age_ms": checkpoint_age_ms,
        "checkpoints_skipped": shared.checkpoints.skipped(),
        "restored_from_epoch": shared.restored_epoch.load(std::sync::atomic::Ordering::Relaxed),
        "cluster": shared.catalog.cluster().map(|c| c.status_json()),
    })
}

/// Per partition: positions, lag, and its newest checkpoint's epoch and age.
pub(crate) fn partitions_json(shared: &Shared) -> serde_json::Value {
    let now = crate::state::checkpoint::recovery::now_ms();
    let published = shared.catalog.current();
    let list = shared
        .positions
        .snapshot()
        .into_iter()
        .enumerate()
        .map(|(id, p)| {
            let unit = shared.units.of(id as u32);
            let checkpoint = shared.checkpoints.partition(unit);
            json!({
                "partition": p.partition,
                // The unit of state it belongs to: itself, or partition N of every
                // topic (`orders+payments/N`).
                "unit": shared.units.name(unit),
                "assigned": p.assigned,
                "assignments": p.assignments,
                "next_offset": p.next_offset,
                "published_offset": p.published_offset,
                // The epoch queries read this partition's rows from (when held here).
                "published_epoch": published
                    .present
                    .contains(&unit)
                    .then_some(published.epoch),
                "high_watermark": p.high_watermark,
                "lag": p.lag,
                "checkpoint_epoch": checkpoint.map(|c| c.0),
                "checkpoint_age_ms": checkpoint.map(|c| now.saturating_sub(c.1)),
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

async fn status(State(app): State<AppState>) -> Response {
    let face = app.face();
    axum::Json(status_json(&face.shared)).into_response()
}

/// Parked keys hold events of every view: only a caller who may read every view sees
/// or resumes them.
fn may_park(caller: &Caller) -> Option<Response> {
    match caller.grant() {
        Some(grant) if !matches!(grant, crate::config::ViewGrant::All) => Some(refuse(
            StatusCode::FORBIDDEN,
            "auth.forbidden",
            "parked keys hold events of every view: this token may read only some",
        )),
        _ => None,
    }
}

/// `GET /parked`: the parked keys of this instance (`on_error: park`).
async fn parked(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let face = app.face();
    if let Some(refused) = may_park(&caller) {
        return refused;
    }
    let keys = face.shared.parked.list();
    axum::Json(json!({ "parked": keys })).into_response()
}

#[derive(Deserialize)]
struct ParkParams {
    key: String,
}

/// `POST /parked/retry?key=K`: applies the key's failing event and held events again.
async fn parked_retry(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ParkParams>,
) -> Response {
    resolve_parked(app, caller, params.key, false).await
}

/// `POST /parked/skip?key=K`: sends the key's failing event to the dead letters and
/// applies its held events.
async fn parked_skip(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ParkParams>,
) -> Response {
    resolve_parked(app, caller, params.key, true).await
}

async fn resolve_parked(app: AppState, caller: Caller, key: String, skip: bool) -> Response {
    let face = app.face();
    if let Some(refused) = may_park(&caller) {
        return refused;
    }
    if !face.shared.bad.parks() {
        return error_response(
            StatusCode::CONFLICT,
            "park.off",
            "the pipeline does not park keys (on_error is not park)",
        );
    }
    let shared = face.shared.clone();
    let wait = std::time::Duration::from_secs(30);
    let asked = key.clone();
    let done = tokio::task::spawn_blocking(move || shared.resolve_parked(&asked, skip, wait)).await;
    match done {
        Ok(Ok(Some(resolved))) => axum::Json(resolved).into_response(),
        Ok(Ok(None)) => error_response(
            StatusCode::NOT_FOUND,
            "park.not_parked",
            &format!("key '{key}' is not parked on this instance (GET /parked lists them)"),
        ),
        Ok(Err(why)) => error_response(StatusCode::SERVICE_UNAVAILABLE, "park.busy", &why),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "park.failed",
            &e.to_string(),
        ),
    }
}

/// `GET /metrics`: the pipeline in the Prometheus text format.
async fn metrics(State(app): State<AppState>) -> Response {
    let face = app.face();
    (
        [(header::CONTENT_TYPE, crate::serve::metrics::CONTENT_TYPE)],
        crate::serve::metrics::render(&face.shared, &face.sql),
    )
        .into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    let face = app.face();
    // Degraded is still 200: the views stay queryable (they are only getting stale) and
    // a liveness probe must not restart an engine that is waiting for its broker.
    match (face.shared.fatal(), face.shared.degraded()) {
        (None, None) => axum::Json(json!({"status": "ok"})).into_response(),
        (None, Some(reason)) => {
            axum::Json(json!({"status": "degraded", "reason": reason})).into_response()
        }
        (Some(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "failed", "error": e.to_string()})),
        )
            .into_response(),
    }
}
