//! The report as a text table.

use super::BenchReport;

/// `1.23M`, `456.7K`, `89`.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The report as a table for people.
pub fn render_table(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "projector bench: {} · {} events from {} ({:.1} MB {}) · {} worker(s) · {} cores",
        r.pipeline,
        r.events,
        r.source,
        r.record_bytes as f64 / 1e6,
        if r.kafka.is_some() {
            "produced"
        } else {
            "recorded"
        },
        r.workers,
        r.cores
    );
    let t = &r.throughput;
    let _ = writeln!(
        out,
        "\nthroughput   {} events/s median of {} (range {} - {}) · {} events/s per busy core",
        si(t.median_events_per_s),
        t.runs.len(),
        si(t.min_events_per_s),
        si(t.max_events_per_s),
        si(t.median_events_per_s_per_busy_core)
    );
    for (i, run) in t.runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  run {:<2} {:>9} events/s  {:>6.2} s  cpu {:.2} s user + {:.2} s sys = {:.2} busy cores  peak RSS {} MB (input {} MB)",
            i + 1,
            si(run.events_per_s),
            run.seconds,
            run.cpu_user_s,
            run.cpu_sys_s,
            run.busy_cores,
            run.peak_rss_bytes / 1_000_000,
            run.rss_before_bytes / 1_000_000,
        );
    }
    if let Some(l) = &r.against_loop {
        let _ = writeln!(
            out,
            "\nagainst the hand-written loop   {} events/s median of {} (1 thread, serde + HashMap) · Projector at {:.2}x (run by run {:.2}x - {:.2}x) · views equal ({} accounts)",
            si(l.median_events_per_s),
            l.runs.len(),
            l.ratio,
            l.ratio_min,
            l.ratio_max,
            l.digest.accounts
        );
    }
    if let Some(k) = &r.kafka {
        let _ = writeln!(
            out,
            "\nkafka        topic {} ({} partitions, filled in {:.1} s) · bare rdkafka consumer {} events/s median of {} · pipeline at {:.0} % of it",
            k.topic,
            k.partitions,
            k.produce_seconds,
            si(k.bare_median_events_per_s),
            k.bare_runs.len(),
            100.0 * k.ratio
        );
        for (i, (bare, join)) in k
            .bare_runs
            .iter()
            .zip(&k.pipeline_first_record_s)
            .enumerate()
        {
            let _ = writeln!(
                out,
                "  run {:<2} bare {:>9} events/s  {:>6.2} s (group join {:.1} s) · pipeline group join {:.1} s",
                i + 1,
                si(bare.events_per_s),
                bare.seconds,
                bare.first_message_s,
                join
            );
        }
        let _ = writeln!(
            out,
            "  (both clocks start at the first message; freshness and queries are measured on recorded input)"
        );
    }
    let _ = writeln!(out, "\nviews");
    for v in &r.views {
        let _ = writeln!(out, "  {:<28} {:>12} rows", v.view, v.rows);
    }
    for (label, f) in [
        ("\nfreshness   ", &r.freshness),
        ("  with SQL  ", &r.freshness_under_queries),
    ] {
        if let Some(f) = f {
            let _ = writeln!(
                out,
                "{label} at {} events/s (achieved {}): p50 {:.1} ms · p99 {:.1} ms · p99.9 {:.1} ms · max {:.1} ms ({} events)",
                si(f.rate),
                si(f.achieved_rate),
                f.p50_ms,
                f.p99_ms,
                f.p999_ms,
                f.max_ms,
                f.samples
            );
        }
    }
    if !r.queries.is_empty() {
        let _ = writeln!(
            out,
            "\nqueries      over {} while ingesting, {} client(s)",
            match r.queries[0].face {
                super::QueryFace::Http => "HTTP",
                super::QueryFace::Pg => "the Postgres protocol (prepared statements)",
            },
            r.queries[0].clients
        );
        for q in &r.queries {
            let _ = writeln!(
                out,
                "  {:<24} {:<10} {:>7} answers  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms{}",
                q.view,
                q.kind,
                q.count,
                q.p50_ms,
                q.p99_ms,
                q.max_ms,
                if q.errors > 0 {
                    format!(
                        "  {} ERRORS: {}",
                        q.errors,
                        q.first_error.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    out
}
