//! `dedup: {by: id, window, limit}`: repeats of an event id are dropped, for streams
//! whose events carry an id but no per-key version.

use super::yaml::{Ctx, Node};
use projector_operators::dedup::Window;
use saphyr::{Scalar, YamlData};

/// The most ids a key may remember (`window` as a count, or `limit`).
const MAX_IDS: i64 = 100_000;
/// How many ids a key remembers at most under an age window, by default.
pub(super) const DEFAULT_LIMIT: usize = 1_000;

/// Reads `dedup:`; `has_time` says whether the envelope maps a timestamp (an age
/// window needs one).
pub(super) fn dedup(ctx: &mut Ctx<'_>, node: &Node, path: &str, has_time: bool) -> Option<Window> {
    let rec = ctx.record(node, path, &["by", "window", "limit"])?;
    if let Some(e) = rec.get("by") {
        ctx.choice(e.value, &e.path, &[("id", ())])?;
    }
    let window = rec.require(ctx, "window")?;
    let limit = match rec.get("limit") {
        Some(e) => Some(ctx.integer(e.value, &e.path, 1, MAX_IDS)? as usize),
        None => None,
    };
    match &window.value.data {
        YamlData::Value(Scalar::Integer(_)) => {
            let n = ctx.integer(window.value, &window.path, 1, MAX_IDS)? as usize;
            if let Some(e) = rec.get("limit") {
                let message =
                    "'limit' bounds an age window; a count window is its own limit".into();
                ctx.error("config.invalid_value", e.key, &e.path, message);
                return None;
            }
            Some(Window::Count(n))
        }
        _ => {
            let d = super::compile::duration(ctx, window.value, &window.path)?;
            if !has_time {
                let message = "an age window is in event time: map envelope.timestamp, or give \
                               the window as a number of ids"
                    .into();
                ctx.error("config.invalid_value", window.value, &window.path, message);
                return None;
            }
            Some(Window::Age {
                ms: i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                limit: limit.unwrap_or(DEFAULT_LIMIT),
            })
        }
    }
}
