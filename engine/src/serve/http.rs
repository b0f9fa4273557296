//! The HTTP face: `POST /sql`, `GET /views`, `GET /status`, `GET /health`.

use crate::runtime::pipeline::Shared;
use crate::serve::output::{OutputFormat, render};
use crate::serve::query::{QueryError, QueryErrorKind, SqlEngine};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline.
    pub shared: Arc<Shared>,
    /// Its SQL engine.
    pub sql: Arc<SqlEngine>,
}

/// The runtime SQL and HTTP run on: two threads of their own, never the pipeline's.
pub fn query_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("query")
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
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let bound = listener.local_addr()?;
    let app = router(state);
    runtime.spawn(async move { axum::serve(listener, app).await });
    Ok(bound)
}

/// The HTTP routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/sql", post(sql))
        .route("/views", get(views))
        .route("/status", get(status))
        .route("/health", get(health))
        .with_state(state)
}

#[derive(Deserialize)]
struct SqlParams {
    format: Option<String>,
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
    #[error("unknown format '{0}': use json, csv or arrow")]
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
                QueryErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                QueryErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                QueryErrorKind::Parse
                | QueryErrorKind::Plan
                | QueryErrorKind::Unsupported
                | QueryErrorKind::ResourcesExhausted
                | QueryErrorKind::Execution
                | QueryErrorKind::ReadOnly
                | QueryErrorKind::TooManyRows
                | QueryErrorKind::Timeout => StatusCode::BAD_REQUEST,
            },
            SqlRequestError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for SqlRequestError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        (self.status(), axum::Json(body)).into_response()
    }
}

async fn sql(
    State(app): State<AppState>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    match app.sql.query(&sql_text).await {
        Ok(r) => match render(&r.schema, &r.batches, format) {
            Ok(bytes) => {
                let ct = match format {
                    OutputFormat::Json | OutputFormat::Table => "application/json",
                    OutputFormat::Csv => "text/csv",
                    OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
                };
                let (owned, missing) = ownership(&app.shared);
                let mut response = (
                    StatusCode::OK,
                    [
                        (header::CONTENT_TYPE, ct.to_string()),
                        (
                            header::HeaderName::from_static("x-projector-epoch"),
                            r.epoch.to_string(),
                        ),
                        (
                            header::HeaderName::from_static("x-projector-partitions"),
                            owned,
                        ),
                    ],
                    bytes,
                )
                    .into_response();
                if let Some(missing) = missing.and_then(|m| m.parse().ok()) {
                    response.headers_mut().insert(
                        header::HeaderName::from_static("x-projector-missing-partitions"),
                        missing,
                    );
                }
                response
            }
            Err(e) => SqlRequestError::Render(e).into_response(),
        },
        Err(e) => SqlRequestError::Query(e).into_response(),
    }
}

/// Which partitions this instance's answers cover: `owned/total`, and the names of
/// the ones it does not own (comma-separated; `None` when it owns them all). Until
/// queries span instances, an instance sharing a consumer group answers from its own
/// partitions only, and says so on every answer.
pub(crate) fn ownership(shared: &Shared) -> (String, Option<String>) {
    let positions = shared.positions.snapshot();
    let missing: Vec<&str> = positions
        .iter()
        .filter(|p| !p.assigned)
        .map(|p| p.partition.as_str())
        .collect();
    let owned = format!("{}/{}", positions.len() - missing.len(), positions.len());
    (owned, (!missing.is_empty()).then(|| missing.join(",")))
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

async fn views(State(app): State<AppState>) -> Response {
    let catalog = &app.shared.catalog;
    let published = catalog.current();
    let infos: Vec<ViewInfo> = catalog
        .views
        .iter()
        .enumerate()
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
        "checkpoint": shared.checkpoints.get(),
        "checkpoints_skipped": shared.checkpoints.skipped(),
        "restored_from_epoch": shared.restored_epoch.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Per partition: positions, lag, and its newest checkpoint's epoch and age.
pub(crate) fn partitions_json(shared: &Shared) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let list = shared
        .positions
        .snapshot()
        .into_iter()
        .enumerate()
        .map(|(id, p)| {
            let checkpoint = shared.checkpoints.partition(id as u32);
            json!({
                "partition": p.partition,
                "assigned": p.assigned,
                "assignments": p.assignments,
                "next_offset": p.next_offset,
                "published_offset": p.published_offset,
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
    axum::Json(status_json(&app.shared)).into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    // Degraded is still 200: the views stay queryable (they are only getting stale) and
    // a liveness probe must not restart an engine that is waiting for its broker.
    match (app.shared.fatal(), app.shared.degraded()) {
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
