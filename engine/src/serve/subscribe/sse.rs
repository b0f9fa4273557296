//! `GET /subscribe?view=V[&key=K][&where=SQL][&from_epoch=E]`: a subscription as
//! Server-Sent Events, or over a WebSocket.
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
//! With `Upgrade: websocket`, the same items come as WebSocket text messages, each the
//! event's data with its name in `type` (and `id` where it has one).
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
use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
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

/// `GET /subscribe`: Server-Sent Events, or a WebSocket when the request asks to
/// upgrade.
pub(crate) async fn subscribe(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(params): Query<SubscribeParams>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let ws = match upgrade {
        false => None,
        true => match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => Some(ws),
            Err(rejection) => return rejection.into_response(),
        },
    };
    let headers = parts.headers;
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
    if let Some(ws) = ws {
        return ws
            .on_upgrade(move |socket| websocket(socket, subscription))
            .into_response();
    }
    let body = items(subscription).map(|item| Ok::<_, std::io::Error>(item.sse()));
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

/// What a subscriber is sent.
enum Item {
    /// An event: its name, its data (JSON, with the name in `type`), and the epoch to
    /// resume after when it is one.
    Event {
        id: Option<u64>,
        name: &'static str,
        data: String,
    },
    /// Nothing happened for a while.
    KeepAlive,
}

impl Item {
    /// An event made here (not one of the changes the hub renders once for all).
    fn new(id: Option<u64>, name: &'static str, mut data: Value) -> Item {
        if let Value::Object(fields) = &mut data {
            fields.insert("type".into(), json!(name));
        }
        Item::Event {
            id,
            name,
            data: data.to_string(),
        }
    }

    /// As Server-Sent Events text.
    fn sse(self) -> String {
        match self {
            Item::Event { id, name, data } => {
                let mut out = String::with_capacity(data.len() + 32);
                if let Some(id) = id {
                    out.push_str(&format!("id: {id}\n"));
                }
                out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
                out
            }
            Item::KeepAlive => ": keep-alive\n\n".into(),
        }
    }
}

/// A subscription's items: the snapshot, then each epoch's changes and marker, then,
/// if it was dropped for reading too slowly, the error.
fn items(sub: Subscription) -> impl futures::Stream<Item = Item> + Send {
    let mut first: VecDeque<Item> = VecDeque::new();
    if let Some(rows) = &sub.snapshot {
        first.push_back(Item::new(
            Some(sub.after),
            "snapshot",
            json!({"epoch": sub.after, "rows": json_rows(&sub, rows)}),
        ));
    }
    futures::stream::unfold(
        (sub, first, false),
        |(mut sub, mut queue, ended)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    return Some((item, (sub, queue, ended)));
                }
                if ended {
                    return None;
                }
                match tokio::time::timeout(KEEP_ALIVE, sub.changes.recv()).await {
                    Err(_) => return Some((Item::KeepAlive, (sub, queue, false))),
                    Ok(Some(epoch)) => queue.extend(changes(&sub, &epoch)),
                    Ok(None) => {
                        if !sub.dropped.load(Ordering::Relaxed) {
                            return None;
                        }
                        let error = Item::new(
                            None,
                            "error",
                            json!({"error": {
                                "code": "subscribe.too_slow",
                                "message": format!(
                                    "the subscription was dropped: changes of more than {} \
                                     epochs waited for this client; subscribe again (with \
                                     from_epoch set to the last epoch received, while it is \
                                     retained)",
                                    super::QUEUE_EPOCHS
                                ),
                            }}),
                        );
                        return Some((error, (sub, queue, true)));
                    }
                }
            }
        },
    )
}

/// A subscription over a WebSocket: each event a JSON text message, its name in
/// `type` (and its resume point in `id`); pings while idle. Ends when the client closes.
async fn websocket(socket: WebSocket, sub: Subscription) {
    let (mut tx, mut rx) = socket.split();
    let mut items = Box::pin(items(sub));
    loop {
        tokio::select! {
            item = items.next() => {
                let message = match item {
                    None => break,
                    Some(Item::KeepAlive) => Message::Ping(Vec::new().into()),
                    Some(Item::Event { id, data, .. }) => {
                        let text = match id {
                            // The resume point, as SSE's id.
                            Some(id) if data.ends_with('}') => {
                                format!("{},\"id\":{id}}}", &data[..data.len() - 1])
                            }
                            _ => data,
                        };
                        Message::Text(text.into())
                    }
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tx.send(Message::Close(None)).await;
}

/// Rows as JSON objects, as `POST /sql` renders them.
fn json_rows(sub: &Subscription, rows: &[RecordBatch]) -> Vec<Value> {
    render(&sub.schema, rows, OutputFormat::Json)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
        .unwrap_or_default()
}

/// The events of one epoch's changes this subscriber wants (rendered once by the hub
/// for every subscriber), then the epoch's marker (sent for every epoch, changes or
/// not, so a client always knows how far it is and resumes from there); none for an
/// epoch the subscription started after.
fn changes(sub: &Subscription, epoch: &Arc<EpochChanges>) -> Vec<Item> {
    if epoch.epoch <= sub.after {
        return Vec::new();
    }
    let wanted = sub.wanted(epoch);
    let mut out = Vec::with_capacity(wanted.len() + 1);
    for &(i, upsert) in &wanted {
        out.push(Item::Event {
            id: None,
            name: if upsert { "upsert" } else { "delete" },
            data: epoch.json(i, upsert).to_string(),
        });
    }
    out.push(Item::new(
        Some(epoch.epoch),
        "epoch",
        json!({"epoch": epoch.epoch, "changes": wanted.len()}),
    ));
    out
}
