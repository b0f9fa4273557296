//! `projector produce`: generated or file events into a Kafka topic, for trying a Kafka
//! pipeline without a producer of one's own.

use crate::load;
use crate::run::thousands;
use anyhow::{Result, anyhow};
use projector_benches::harness::si;
use projector_connectors::SourceConfig;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub(crate) fn produce(
    target: &str,
    brokers: String,
    partitions: i32,
    scenario: &str,
    (events, keys, seed): (u64, u64, u64),
    from_file: Option<&std::path::Path>,
) -> Result<ExitCode> {
    use projector_connectors::generator::{GeneratorConfig, GeneratorSource, scenario_from_name};
    use projector_connectors::kafka::{EventProducer, ensure_topic};
    let path = std::path::Path::new(target);
    let (brokers, topic, properties) = if path.is_file() {
        let cfg = match load(path) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        let SourceConfig::Kafka(k) = cfg.source else {
            return Err(anyhow!("{target}: the pipeline's source is not kafka"));
        };
        (k.brokers, k.topics[0].clone(), k.properties)
    } else {
        (brokers, target.to_string(), Default::default())
    };
    let scenario = scenario_from_name(scenario)
        .ok_or_else(|| anyhow!("unknown scenario '{scenario}' (known: bank)"))?;
    ensure_topic(&brokers, &properties, &topic, partitions)?;
    let producer = EventProducer::new(&brokers, &properties, &topic)?;
    let config = GeneratorConfig {
        scenario,
        events,
        keys,
        seed,
    };
    let resume = projector_connectors::Resume::new();
    let mut source: Box<dyn projector_connectors::Source> = match from_file {
        Some(path) => Box::new(projector_connectors::file::FileSource::open(
            &projector_connectors::file::FileConfig::new(path),
            &resume,
        )?),
        None => Box::new(GeneratorSource::new(&config, &resume)),
    };
    let started = Instant::now();
    let mut reported = Instant::now();
    let sent = producer.send_all(source.as_mut(), |sent| {
        if reported.elapsed() >= Duration::from_secs(1) {
            eprintln!("produce: {} events to {topic}", thousands(sent));
            reported = Instant::now();
        }
    })?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produce: {} events to {topic} on {brokers} in {secs:.2} s ({} events/s)",
        thousands(sent),
        si(sent as f64 / secs.max(1e-9))
    );
    Ok(ExitCode::SUCCESS)
}
