//! `GET /subscribe?view=V[&key=K][&where=SQL][&from_epoch=E]`: a subscription as
//! Server-Sent Events.
//!
//! ```text
//! id: 41                      the view's rows at epoch 41 (not when resuming)
//! event: snapshot
//! data: {"epoch":41,"rows":[{...},...]}
//!
//! event: upsert               each change of a later epoch...
//! data: {"epoch":42,"key":"acc-1","row":{...}}
//!
//! event: delete
//! data: {"epoch":42,"key":"acc-9"}
//!
//! id: 42                      ...then the epoch, complete: the id to resume after
//! event: epoch                (sent for every epoch, with or without changes)
//! data: {"epoch":42,"changes":2}
//! ```
//!
//! A client that reconnects with `Last-Event-ID` (browsers' `EventSource` does) or
//! `from_epoch` gets the changes after that epoch while they are retained; else `410`
//! with `subscribe.not_retained`. A comment line every 15 s keeps proxies from closing an
//! idle stream. A client that reads too slowly gets `event: error` with
//! `subscribe.too_slow` and the stream ends.

use super::{EpochChanges, SubscribeError, Subscription};
use crate::serve::auth::Caller;
use crate::serve::http::{AppState, error_response};
use crate::serve::output::{OutputFormat, render};
use arrow::array::RecordBatch;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Time between keep-alive comments on an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub(crate) struct SubscribeParams {
    view: String,
    key: Option<String>,
    #[serde(rename = "where")]
    filter: Option<String>,
    from_epoch: Option<u64>,
}

/// `GET /subscribe`.
pub(crate) async fn subscribe(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(params): Query<SubscribeParams>,
    headers: HeaderMap,
) -> Response {
    if let Some(Extension(caller)) = &caller
        && let Some(grant) = caller.grant()
        && !grant.allows(&params.view)
    {
        return error_response(
            StatusCode::FORBIDDEN,
            "auth.forbidden",
            &format!("this token may not read view '{}'", params.view),
        );
    }
    let resume = params.from_epoch.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    });
    let face = app.face();
    let hub = face.shared.catalog.hub();
    let subscription =
        match hub.subscribe(&params.view, params.key, params.filter.as_deref(), resume) {
            Ok(s) => s,
            Err(e) => {
                let status = match e {
                    SubscribeError::NoView(_) => StatusCode::NOT_FOUND,
                    SubscribeError::NotRetained { .. } => StatusCode::GONE,
                    SubscribeError::Unsupported(_) | SubscribeError::BadFilter { .. } => {
                        StatusCode::BAD_REQUEST
                    }
                };
                return error_response(status, e.code(), &e.to_string());
            }
        };
    let first = subscription.snapshot.as_ref().map(|rows| {
        event(
            Some(subscription.after),
            "snapshot",
            &json!({"epoch": subscription.after, "rows": json_rows(&subscription, rows)}),
        )
    });
    let body = futures::stream::unfold(
        (subscription, first, false),
        |(mut sub, first, ended)| async move {
            if let Some(text) = first {
                return Some((Ok::<_, std::io::Error>(text), (sub, None, false)));
            }
            if ended {
                return None;
            }
            loop {
                match tokio::time::timeout(KEEP_ALIVE, sub.changes.recv()).await {
                    Err(_) => return Some((Ok(": keep-alive\n\n".into()), (sub, None, false))),
                    Ok(Some(epoch)) => {
                        let text = changes(&sub, &epoch);
                        if !text.is_empty() {
                            return Some((Ok(text), (sub, None, false)));
                        }
                    }
                    Ok(None) => {
                        if !sub.dropped.load(Ordering::Relaxed) {
                            return None;
                        }
                        let text = event(
                            None,
                            "error",
                            &json!({"error": {
                                "code": "subscribe.too_slow",
                                "message": format!(
                                    "the subscription was dropped: changes of more than {} \
                                     epochs waited for this client; subscribe again (with \
                                     from_epoch set to the last epoch received, while it \
                                     is retained)",
                                    super::QUEUE_EPOCHS
                                ),
                            }}),
                        );
                        return Some((Ok(text), (sub, None, true)));
                    }
                }
            }
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// One event; `id` makes it a point to resume after.
fn event(id: Option<u64>, name: &str, data: &Value) -> String {
    let mut out = String::new();
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    out
}

/// Rows as JSON objects, as `POST /sql` renders them.
fn json_rows(sub: &Subscription, rows: &[RecordBatch]) -> Vec<Value> {
    render(&sub.schema, rows, OutputFormat::Json)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
        .unwrap_or_default()
}

/// The events of one epoch's changes this subscriber wants, then the epoch's marker
/// (sent for every epoch, changes or not, so a client always knows how far it is and
/// resumes from there); empty for an epoch the subscription started after.
fn changes(sub: &Subscription, epoch: &Arc<EpochChanges>) -> String {
    if epoch.epoch <= sub.after {
        return String::new();
    }
    let wanted = sub.wanted(epoch);
    let upserts: Vec<RecordBatch> = wanted.iter().filter_map(|(_, r)| r.cloned()).collect();
    let mut rows = json_rows(sub, &upserts).into_iter();
    let mut out = String::new();
    for (key, row) in &wanted {
        match row {
            Some(_) => {
                let row = rows.next().unwrap_or(Value::Null);
                out.push_str(&event(
                    None,
                    "upsert",
                    &json!({"epoch": epoch.epoch, "key": key, "row": row}),
                ));
            }
            None => out.push_str(&event(
                None,
                "delete",
                &json!({"epoch": epoch.epoch, "key": key}),
            )),
        }
    }
    out.push_str(&event(
        Some(epoch.epoch),
        "epoch",
        &json!({"epoch": epoch.epoch, "changes": wanted.len()}),
    ));
    out
}
