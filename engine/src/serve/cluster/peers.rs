//! Asking other instances: one `POST /cluster/scan` per owner, all at once.

use super::Cluster;
use super::wire::{ABSENT, COVERED, Contribution, ScanRequest};
use crate::serve::output::read_arrow;
use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::future::join_all;
use std::collections::BTreeMap;

/// What one owner answered.
#[derive(Debug, Default)]
pub(crate) struct PeerAnswer {
    /// Rows (a rows request).
    pub batches: Vec<RecordBatch>,
    /// Encoded partials, one per owner (a partials request).
    pub partials: Vec<Bytes>,
    /// The partitions answered for.
    pub covered: Vec<Contribution>,
    /// The partitions asked for that it did not answer for, with why.
    pub missing: Vec<(String, String)>,
}

/// Sends `request` (without partitions) to every owner in `by_owner` (address →
/// partition names) at once and gathers the answers. An owner that cannot be reached,
/// fails, or does not answer within the peer timeout makes its partitions missing
/// (with the reason); a query failure on the owner (bad SQL) is an error.
pub(crate) async fn scan(
    cluster: &Cluster,
    request: &ScanRequest,
    by_owner: BTreeMap<String, Vec<String>>,
) -> Result<PeerAnswer, String> {
    let asks = by_owner.into_iter().map(|(address, partitions)| {
        let mut req = request.clone();
        req.partitions = partitions.clone();
        async move {
            let result = ask(cluster, &address, &req).await;
            (address, partitions, result)
        }
    });
    let mut all = PeerAnswer::default();
    for (address, partitions, result) in join_all(asks).await {
        match result {
            Ok(Answer::Data(a)) => {
                all.batches.extend(a.batches);
                all.partials.extend(a.partials);
                all.covered.extend(a.covered);
                all.missing.extend(a.missing);
            }
            Ok(Answer::QueryFailed(message)) => {
                return Err(format!("the instance at {address} failed: {message}"));
            }
            Err(why) => all.missing.extend(
                partitions
                    .into_iter()
                    .map(|p| (p, format!("{address}: {why}"))),
            ),
        }
    }
    Ok(all)
}

enum Answer {
    Data(PeerAnswer),
    /// The owner ran the scan and it failed (the query's fault, not the owner's).
    QueryFailed(String),
}

async fn ask(cluster: &Cluster, address: &str, req: &ScanRequest) -> Result<Answer, String> {
    let url = format!("{}/cluster/scan", address.trim_end_matches('/'));
    let response = cluster
        .client
        .post(&url)
        .json(req)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let covered: Vec<Contribution> = match header(COVERED) {
        Some(h) => serde_json::from_str(&h).map_err(|e| format!("bad {COVERED} header: {e}"))?,
        None => Vec::new(),
    };
    let absent: Vec<String> = match header(ABSENT) {
        Some(h) => serde_json::from_str(&h).map_err(|e| format!("bad {ABSENT} header: {e}"))?,
        None => Vec::new(),
    };
    let body = response.bytes().await.map_err(|e| describe(&e))?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = v["error"]["message"].as_str();
        return match status.as_u16() {
            400 => Ok(Answer::QueryFailed(message.map_or_else(
                || String::from_utf8_lossy(&body).into_owned(),
                str::to_string,
            ))),
            _ => Err(message.map_or_else(
                || format!("HTTP {status}"),
                |m| format!("HTTP {status}: {m}"),
            )),
        };
    }
    let missing = absent
        .into_iter()
        .map(|p| (p, format!("{address} does not hold it now")))
        .collect();
    let mut answer = PeerAnswer {
        covered: covered
            .into_iter()
            .map(|mut c| {
                c.instance = address.to_string();
                c
            })
            .collect(),
        missing,
        ..PeerAnswer::default()
    };
    if req.partials {
        answer.partials.push(body);
    } else {
        answer.batches = read_arrow(body).map_err(|e| format!("bad Arrow stream: {e}"))?;
    }
    Ok(Answer::Data(answer))
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "did not answer in time".to_string()
    } else if e.is_connect() {
        "cannot be reached".to_string()
    } else {
        let mut s = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            source = inner.source();
        }
        s
    }
}
