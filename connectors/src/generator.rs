//! The built-in synthetic event-sourcing workload (HELPER B implements this file).

use crate::source::{PartitionInfo, Poll, RawBatch, Resume, Source};
use crate::Result;

/// Which synthetic workload to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Bank accounts: AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed.
    Bank,
}

/// `source: {type: generator, ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// The workload.
    pub scenario: Scenario,
    /// How many events to emit in all.
    pub events: u64,
    /// How many distinct keys (accounts).
    pub keys: u64,
    /// Seed: the same seed gives the same events.
    pub seed: u64,
}

/// Generates JSON events deterministically from a seed. One partition.
#[derive(Debug)]
pub struct GeneratorSource {
    config: GeneratorConfig,
}

impl GeneratorSource {
    /// A generator starting at the offset in `resume` for partition 0.
    pub fn new(config: &GeneratorConfig, resume: &Resume) -> Self {
        let _ = resume;
        GeneratorSource { config: config.clone() }
    }
}

impl Source for GeneratorSource {
    fn partitions(&self) -> Vec<PartitionInfo> {
        vec![PartitionInfo { id: 0, name: "generator".into() }]
    }

    fn poll(&mut self, out: &mut RawBatch, max_records: usize) -> Result<Poll> {
        let _ = (out, max_records, &self.config);
        todo!()
    }
}
