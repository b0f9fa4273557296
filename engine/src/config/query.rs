//! `query:`: the limits SQL runs under, over every face (HTTP, the CLI).
//!
//! ```yaml
//! query:
//!   timeout: 10s            # from arrival to answer, the wait for a slot included
//!   max_rows: 100000
//!   max_result_bytes: 64MiB
//!   memory: 512MiB          # sorts, joins and groups of all queries together
//!   concurrency: 4          # queries that run at once
//!   queue: 16               # queries that wait; one more gets sql.busy (HTTP 429)
//! ```

use super::yaml::{Ctx, Node};
use crate::serve::query::QueryLimits;
use std::time::Duration;

/// The longest `query.timeout`.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `query: {timeout, max_rows, max_result_bytes, memory, concurrency, queue}`: the
/// limits SQL runs under, each defaulting to [`QueryLimits::default`]'s.
pub(super) fn query(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<QueryLimits> {
    const KEYS: &[&str] = &[
        "timeout",
        "max_rows",
        "max_result_bytes",
        "memory",
        "concurrency",
        "queue",
    ];
    let rec = ctx.record(node, path, KEYS)?;
    let mut limits = QueryLimits::default();
    let mut ok = true;
    if let Some(e) = rec.get("timeout") {
        match super::compile::duration(ctx, e.value, &e.path) {
            Some(d) if d <= MAX_TIMEOUT => limits.timeout = d,
            Some(_) => {
                let message = "a query timeout is at most 24h".to_string();
                ctx.error("config.invalid_value", e.value, &e.path, message);
                ok = false;
            }
            None => ok = false,
        }
    }
    let mut count = |ctx: &mut Ctx<'_>, key: &str, min: i64, max: i64, slot: &mut usize| {
        if let Some(e) = rec.get(key) {
            match ctx.integer(e.value, &e.path, min, max) {
                Some(n) => *slot = n as usize,
                None => ok = false,
            }
        }
    };
    count(ctx, "max_rows", 1, i64::MAX, &mut limits.max_rows);
    count(ctx, "concurrency", 1, 1024, &mut limits.concurrency);
    count(ctx, "queue", 0, 1_000_000, &mut limits.queue);
    for (key, slot) in [
        ("max_result_bytes", &mut limits.max_result_bytes),
        ("memory", &mut limits.memory_bytes),
    ] {
        if let Some(e) = rec.get(key) {
            match super::compile::byte_size(ctx, e.value, &e.path) {
                Some(n) => *slot = n,
                None => ok = false,
            }
        }
    }
    ok.then_some(limits)
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;
    use crate::serve::query::QueryLimits;
    use std::path::Path;
    use std::time::Duration;

    const HEAD: &str = "name: t
source: {type: generator, scenario: bank, events: 10, keys: 2}
envelope: {id: eventId, type: eventType, key: aggregateId}
views:
  - name: v
    fold:
      key_column: id
      columns: {n: {type: int64, default: 0}}
      on: {\"*\": {add: {n: 1}}}
";

    #[test]
    fn every_limit_is_read_and_the_rest_default() {
        let text = format!(
            "{HEAD}query:\n  timeout: 250ms\n  max_rows: 10\n  max_result_bytes: 2MiB\n  \
             memory: 64MB\n  concurrency: 3\n  queue: 0\n"
        );
        let cfg = load_str(&text, Path::new("p.yaml")).unwrap();
        assert_eq!(
            cfg.query,
            QueryLimits {
                timeout: Duration::from_millis(250),
                max_rows: 10,
                max_result_bytes: 2 << 20,
                memory_bytes: 64_000_000,
                concurrency: 3,
                queue: 0,
            }
        );
        let cfg = load_str(
            &format!("{HEAD}query: {{max_rows: 5}}\n"),
            Path::new("p.yaml"),
        )
        .unwrap();
        assert_eq!(cfg.query.max_rows, 5);
        assert_eq!(cfg.query.timeout, QueryLimits::default().timeout);
        let cfg = load_str(HEAD, Path::new("p.yaml")).unwrap();
        assert_eq!(cfg.query, QueryLimits::default());
    }

    #[test]
    fn bad_limits_name_file_line_and_key() {
        let text = format!(
            "{HEAD}query:\n  timeout: soon\n  memory: lots\n  concurrency: 0\n  max_rowz: 1\n"
        );
        let err = load_str(&text, Path::new("p.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.yaml:11:12") && err.contains("query.timeout"),
            "{err}"
        );
        assert!(
            err.contains("p.yaml:12:11") && err.contains("invalid size 'lots'"),
            "{err}"
        );
        assert!(
            err.contains("query.concurrency") && err.contains("between 1 and 1024"),
            "{err}"
        );
        assert!(
            err.contains("query.max_rowz") && err.contains("max_rows"),
            "{err}"
        );
        let err = load_str(
            &format!("{HEAD}query: {{memory: 10}}\n"),
            Path::new("p.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("too small"), "{err}");
    }
}
