//! Memory per view row beyond its Arrow columns, and whether it stays flat under
//! sustained load (the target in BENCHMARKS.md: at most 200 bytes a row at 1M keys).
//!
//! ```text
//! memory-per-row [PIPELINE] [--keys K] [--events N] [--every M]
//! ```
//!
//! Records N events (default 5,000,000) over K keys (default 1,000,000) from PIPELINE's
//! generator (default `pipelines/bank-accounts.yaml`) into memory, then replays them
//! through the same engine as `projector run`, in this process, with mimalloc under a
//! counting allocator (the recording is allocated before the count starts). Every M events (default 1,000,000) and at the end it prints the
//! heap bytes the engine holds (allocated minus freed since before the start), the
//! bytes of the published views' Arrow arrays, the fold rows, and
//! `(heap - arrow) / rows`: what each row costs beyond its Arrow columns (its state
//! row, key index entries, last version, checkpoint buffers, everything). The last
//! line is the figure BENCHMARKS.md quotes. Requested sizes are counted, not the
//! allocator's rounding; the RSS is printed alongside.

use projector_benches::replay::{Recording, ReplaySource, ReplayStart};
use projector_connectors::{Source, SourceConfig};
use projector_engine::internals::WorkerViewData;
use projector_engine::{Pipeline, RunOptions};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// mimalloc, counting the bytes in use (`cap` keeps the count; no limit is set).
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Bytes in use now.
fn live() -> i64 {
    GLOBAL.allocated() as i64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| {
                v.replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("{name} wants a number, not '{v}'")))
            })
    };
    let (keys, events, every) = (
        flag("--keys", 1_000_000),
        flag("--events", 5_000_000),
        flag("--every", 1_000_000).max(1),
    );
    let path = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "pipelines/bank-accounts.yaml".into());
    let mut cfg = projector_engine::config::load(std::path::Path::new(&path)).unwrap_or_else(|e| {
        let text: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        fail(&text.join("\n"))
    });
    let SourceConfig::Generator(g) = &mut cfg.source else {
        fail(&format!("{path}: the source must be the generator"));
    };
    g.keys = keys;
    g.events = events;
    // Recorded first, so the generator's own bookkeeping (per-account balances) is not
    // counted: the engine replays the recording as `projector bench` does.
    let mut source = projector_connectors::open(&cfg.source, &Default::default())
        .unwrap_or_else(|e| fail(&format!("opening the source: {e}")));
    let recording = Arc::new(
        Recording::record(source.as_mut(), Some(events), |_| {})
            .unwrap_or_else(|e| fail(&format!("recording the input: {e}"))),
    );
    drop(source);
    let state = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
    let options = RunOptions::resolve(&cfg, Some(state.path().to_path_buf()));
    println!(
        "{path}: {events} events over {keys} keys, {} worker(s)",
        options.workers
    );
    println!(
        "{:>12} {:>12} {:>12} {:>10} {:>12} {:>9}",
        "events", "heap MB", "arrow MB", "rows", "bytes/row", "RSS MB"
    );
    let before = live();
    let pipeline = Pipeline::start_with(&cfg, &options, &|resume| {
        Ok(Box::new(ReplaySource::new(
            recording.clone(),
            resume,
            None,
            ReplayStart::default(),
        )) as Box<dyn Source>)
    })
    .unwrap_or_else(|e| fail(&e.to_string()));
    let shared = pipeline.shared().clone();
    let mut next = every;
    loop {
        let done = shared.progress.wait(Duration::from_millis(20)).finished;
        if let Some(e) = shared.fatal() {
            fail(&e.to_string());
        }
        let read = shared.counters.read.load(Ordering::Relaxed);
        if done || read >= next {
            // The figure of the epoch covering what was read so far.
            let published = shared.catalog.current();
            let (mut arrow, mut rows) = (0usize, 0usize);
            for view in &published.views {
                for part in &view.parts {
                    if let WorkerViewData::Fold(chunks) = part {
                        for c in chunks {
                            arrow += c.batch.get_array_memory_size();
                            rows += c.batch.num_rows();
                        }
                    }
                }
            }
            drop(published);
            let heap = live() - before;
            let beyond = (heap - arrow as i64) as f64 / rows.max(1) as f64;
            println!(
                "{read:>12} {:>12.1} {:>12.1} {rows:>10} {beyond:>12.0} {:>9.0}",
                heap as f64 / 1e6,
                arrow as f64 / 1e6,
                rss_mb()
            );
            next = read + every;
        }
        if done {
            break;
        }
    }
    pipeline.stop().unwrap_or_else(|e| fail(&e.to_string()));
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn fail(why: &str) -> ! {
    eprintln!("memory-per-row: {why}");
    std::process::exit(1);
}
