//! Checkpoint write and restore times against a checkpoint store (BENCHMARKS.md,
//! "Checkpoints in object storage").
//!
//! ```text
//! checkpoint-store --store URL [--endpoint URL] [--keys K] [--events N] [--runs R] [PIPELINE]
//! ```
//!
//! Runs PIPELINE's generator (default `pipelines/bank-accounts.yaml`) with N events
//! (default 2 × K) over K keys (default 1,000,000) to its end with the checkpoints in
//! `URL/run-i` (`s3://bucket/prefix`, `file:///dir`, …; credentials from the
//! environment), and reports the final checkpoint: its bytes and how long the writer
//! took to write it. Then it starts the same pipeline on a fresh state directory against
//! the same store and reports how long the restore took (from `Pipeline::start` until
//! the restored views are published, nothing left to read). R runs (default 3) give
//! the median and the spread.

use projector_connectors::SourceConfig;
use projector_engine::config::{PipelineConfig, StoreConfig};
use projector_engine::{Pipeline, RunOptions};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: u64| -> u64 {
        value(name).map_or(default, |v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| fail(&format!("{name} wants a number, not '{v}'")))
        })
    };
    let store = value("--store").unwrap_or_else(|| fail("--store URL is required"));
    let keys = number("--keys", 1_000_000);
    let events = number("--events", keys * 2);
    let runs = number("--runs", 3).max(1);
    let path = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map_or_else(|| "pipelines/bank-accounts.yaml".into(), |(_, a)| a.clone());
    let mut cfg = projector_engine::config::load(std::path::Path::new(&path)).unwrap_or_else(|e| {
        let text: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        fail(&text.join("\n"))
    });
    let SourceConfig::Generator(g) = &mut cfg.source else {
        fail(&format!("{path}: the source must be the generator"));
    };
    g.keys = keys;
    g.events = events;
    // Only the checkpoint at the end of the input: the one measured.
    cfg.checkpoint.interval = Duration::from_secs(3600);

    println!("{path}: {events} events over {keys} keys, checkpoints in {store}");
    println!(
        "{:>5} {:>12} {:>10} {:>10} {:>12}",
        "run", "state MB", "write ms", "MB/s", "restore ms"
    );
    let (mut writes, mut restores) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut cfg = cfg.clone();
        cfg.checkpoint.store = Some(StoreConfig {
            url: format!(
                "{}/run-{run}-{}",
                store.trim_end_matches('/'),
                std::process::id()
            ),
            endpoint: value("--endpoint"),
            region: value("--region"),
            path_style: None,
        });
        let (bytes, write_ms) = {
            let state = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
            let pipeline = start(&cfg, state.path());
            let info = pipeline.shared().checkpoints.get();
            pipeline.stop().unwrap_or_else(|e| fail(&e.to_string()));
            (info.bytes, info.duration_ms)
        };
        let restore_ms = {
            let state = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
            let started = Instant::now();
            let pipeline = start(&cfg, state.path());
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let read = pipeline.shared().counters.snapshot().read;
            if read != 0 {
                fail(&format!(
                    "the restore read {read} events: the checkpoint was not used"
                ));
            }
            pipeline.stop().unwrap_or_else(|e| fail(&e.to_string()));
            ms
        };
        let mb = bytes as f64 / 1e6;
        println!(
            "{run:>5} {mb:>12.1} {write_ms:>10} {:>10.1} {restore_ms:>12.0}",
            mb / (write_ms.max(1) as f64 / 1e3)
        );
        writes.push(write_ms as f64);
        restores.push(restore_ms);
    }
    let (w, r) = (spread(&mut writes), spread(&mut restores));
    println!(
        "median write {:.0} ms (min {:.0}, max {:.0}); median restore {:.0} ms (min {:.0}, max {:.0})",
        w.0, w.1, w.2, r.0, r.1, r.2
    );
}

/// Runs the pipeline on `state` to the end of its input (its final checkpoint written).
fn start(cfg: &PipelineConfig, state: &std::path::Path) -> Pipeline {
    let options = RunOptions::resolve(cfg, Some(state.to_path_buf()));
    let pipeline = Pipeline::start(cfg, &options).unwrap_or_else(|e| fail(&e.to_string()));
    pipeline
        .wait_until_finished()
        .unwrap_or_else(|e| fail(&e.to_string()));
    pipeline
}

/// (median, min, max).
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fail(message: &str) -> ! {
    eprintln!("checkpoint-store: {message}");
    std::process::exit(1)
}
