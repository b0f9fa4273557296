//! `projector parked list | retry KEY | skip KEY`: the parked keys of a running
//! instance (`on_error: park`), over HTTP.

use crate::query::{Connection, answer, print_error};
use anyhow::{Context, Result};
use std::process::ExitCode;

/// What to do with parked keys.
#[derive(clap::Subcommand)]
pub(crate) enum ParkedAction {
    /// List the parked keys, one JSON line each: the key, its unit, the failing
    /// event's partition and offset, the error, and how many events it holds.
    List,
    /// Apply a parked key's failing event again (after the pipeline was fixed), then
    /// the events it holds, in order. If one fails again, the key stays parked there.
    Retry {
        /// The key.
        key: String,
    },
    /// Send a parked key's failing event to the dead letters, then apply the events
    /// it holds, in order.
    Skip {
        /// The key.
        key: String,
    },
}

/// Runs `action` against the instance at `conn`; prints JSON lines to stdout.
pub(crate) fn parked(conn: &Connection<'_>, action: &ParkedAction) -> Result<ExitCode> {
    let agent = conn.agent()?;
    let base = conn.url.trim_end_matches('/');
    let auth = conn.token.map(|t| format!("Bearer {t}"));
    let sent = match action {
        ParkedAction::List => {
            let mut r = agent.get(format!("{base}/parked"));
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        ParkedAction::Retry { key } | ParkedAction::Skip { key } => {
            let verb = if matches!(action, ParkedAction::Skip { .. }) {
                "skip"
            } else {
                "retry"
            };
            let mut r = agent
                .post(format!("{base}/parked/{verb}"))
                .query("key", key);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send_empty()
        }
    };
    let (status, body, _) = answer(conn.url, sent)?;
    if !status.is_success() {
        print_error(&body);
        return Ok(ExitCode::from(1));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).context("reading the answer")?;
    match action {
        ParkedAction::List => {
            for key in v["parked"].as_array().into_iter().flatten() {
                println!("{key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            println!("{v}");
            // Still parked: an event failed again, which the caller should see.
            if v["parked"].is_null() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "error: {}: the key is parked again at offset {}: {}",
                    v["parked"]["code"].as_str().unwrap_or_default(),
                    v["parked"]["offset"],
                    v["parked"]["message"].as_str().unwrap_or_default()
                );
                Ok(ExitCode::from(1))
            }
        }
    }
}
