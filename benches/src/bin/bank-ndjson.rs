//! Writes the bank generator's events as NDJSON, one event per line, byte for byte what
//! the generator source produces: the input of a file-source run (`projector run --once`
//! of the bank pipeline with `source: {type: file, path: FILE}`). `projector bench`
//! records any source into memory first, so it measures a file like the generator.
//!
//! ```text
//! bank-ndjson FILE [--events N] [--keys K] [--seed S]
//! ```
//!
//! Defaults as the generator's: 1,000,000 events over 10,000 keys, seed 42.

use projector_connectors::generator::{GeneratorConfig, GeneratorSource, Scenario};
use projector_connectors::{Poll, RawBatch, Resume, Source};
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut config = GeneratorConfig {
        scenario: Scenario::Bank,
        events: 1_000_000,
        keys: 10_000,
        seed: 42,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let v = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
        };
        match arg.as_str() {
            "--events" => config.events = value("--events")?,
            "--keys" => config.keys = value("--keys")?,
            "--seed" => config.seed = value("--seed")?,
            other if other.starts_with('-') => anyhow::bail!("unknown option {other}"),
            other => path = Some(other.to_string()),
        }
    }
    let path = path.ok_or_else(|| {
        anyhow::anyhow!("usage: bank-ndjson FILE [--events N] [--keys K] [--seed S]")
    })?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut source = GeneratorSource::new(&config, &Resume::new());
    let mut batch = RawBatch::default();
    loop {
        batch.clear();
        match source.poll(&mut batch, 65_536)? {
            Poll::Ready => {
                for r in &batch.records {
                    out.write_all(batch.bytes(r))?;
                    out.write_all(b"\n")?;
                }
            }
            Poll::Idle => {}
            Poll::Exhausted => break,
        }
    }
    out.flush()?;
    eprintln!("bank-ndjson: {} events written to {path}", config.events);
    Ok(())
}
