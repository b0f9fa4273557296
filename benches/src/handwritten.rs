//! The loop Projector's throughput is held against (`projector bench --against-loop`):
//! what a user could write in an afternoon instead of running Projector on the bank
//! pipeline. One thread; each event decoded by serde into a struct (strings borrowed
//! from the input); the `accounts` fold in a `HashMap` by key, with the same per-key
//! version check (an event at or below its key's last version is a duplicate, also
//! after the account was closed); the `volume_by_type` aggregate in another. No
//! checkpoints, no SQL, no dead letters: a record that does not decode is counted and
//! skipped.
//!
//! [`Digest`] sums up the views either way, so that a bench compares rates only after
//! checking that both computed the same thing.

use crate::replay::Recording;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "eventType", borrow)]
    event_type: Cow<'a, str>,
    #[serde(rename = "aggregateId", borrow)]
    aggregate_id: Cow<'a, str>,
    version: i64,
    #[serde(default, borrow)]
    payload: Payload<'a>,
}

#[derive(Deserialize, Default)]
struct Payload<'a> {
    #[serde(default, borrow)]
    owner: Option<Cow<'a, str>>,
    #[serde(default)]
    amount: Option<i64>,
}

/// One key: its last version, and its row while the account is open.
#[derive(Default)]
struct Entry {
    version: Option<i64>,
    account: Option<Account>,
}

#[derive(Default)]
struct Account {
    owner: Option<String>,
    balance: i64,
    deposits: i64,
    last_version: i64,
}

#[derive(Default)]
struct Group {
    events: u64,
    total: i64,
}

/// What one pass of the loop did.
#[derive(Debug, Clone)]
pub struct LoopRun {
    /// Records read.
    pub events: u64,
    /// Seconds from the first record to the last one folded.
    pub seconds: f64,
    /// Events per second.
    pub events_per_s: f64,
    /// The views it computed.
    pub digest: Digest,
}

/// A summary of the bank pipeline's views, computed by the loop or read from
/// Projector's published views: equal digests mean both folded the same events the same
/// way.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Digest {
    /// Rows of `accounts`.
    pub accounts: u64,
    /// Sum of `balance`.
    pub balance: i64,
    /// Sum of `deposits`.
    pub deposits: i64,
    /// Sum of `last_version`.
    pub last_version: i64,
    /// Rows whose `owner` is set.
    pub owners: u64,
    /// Per `event_type` of `volume_by_type`: `events` and `total`.
    pub volume: BTreeMap<String, (u64, i64)>,
}

/// Folds `recording` once; the clock runs over the loop only.
pub fn run(recording: &Recording) -> LoopRun {
    let batch = &recording.batch;
    let started = Instant::now();
    let mut keys: HashMap<String, Entry> = HashMap::new();
    let mut groups: HashMap<String, Group> = HashMap::new();
    for record in &batch.records {
        let Ok(event) = serde_json::from_slice::<Event<'_>>(batch.bytes(record)) else {
            continue;
        };
        let entry = match keys.get_mut(event.aggregate_id.as_ref()) {
            Some(e) => e,
            None => keys
                .entry(event.aggregate_id.clone().into_owned())
                .or_default(),
        };
        if entry.version.is_some_and(|last| event.version <= last) {
            continue; // a duplicate
        }
        entry.version = Some(event.version);
        let kind = event.event_type.as_ref();
        if kind == "AccountClosed" {
            entry.account = None;
        } else {
            let account = entry.account.get_or_insert_with(Account::default);
            match kind {
                "AccountOpened" => account.owner = event.payload.owner.map(Cow::into_owned),
                "MoneyDeposited" => {
                    account.balance += event.payload.amount.unwrap_or(0);
                    account.deposits += 1;
                }
                "MoneyWithdrawn" => account.balance -= event.payload.amount.unwrap_or(0),
                _ => {}
            }
            account.last_version = event.version;
        }
        if kind != "AccountOpened" {
            let group = match groups.get_mut(kind) {
                Some(g) => g,
                None => groups.entry(kind.to_string()).or_default(),
            };
            group.events += 1;
            group.total += event.payload.amount.unwrap_or(0);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut digest = Digest::default();
    for account in keys.values().filter_map(|e| e.account.as_ref()) {
        digest.accounts += 1;
        digest.balance += account.balance;
        digest.deposits += account.deposits;
        digest.last_version += account.last_version;
        digest.owners += u64::from(account.owner.is_some());
    }
    digest.volume = groups
        .into_iter()
        .map(|(kind, g)| (kind, (g.events, g.total)))
        .collect();
    let events = batch.len() as u64;
    LoopRun {
        events,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        digest,
    }
}

/// Fails unless `cfg` has the bank pipeline's envelope and views, which are what the
/// loop computes (the digests are compared after the runs as well).
pub fn check_pipeline(cfg: &projector_engine::config::PipelineConfig) -> anyhow::Result<()> {
    let names: Vec<&str> = cfg.views.iter().map(|v| v.name.as_str()).collect();
    if names != ["accounts", "volume_by_type"] {
        anyhow::bail!(
            "--against-loop folds the bank pipeline's views (accounts, volume_by_type) by \
             hand; {} has {}",
            cfg.name,
            names.join(", ")
        );
    }
    Ok(())
}

/// The digest of the bank views Projector published last (`shared` may be stopped).
pub fn digest_of(shared: &projector_engine::Shared) -> anyhow::Result<Digest> {
    use anyhow::Context as _;
    let engine = projector_engine::SqlEngine::new(shared.catalog.clone(), Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the digest's queries")?;
    let rows = |sql: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        let r = runtime
            .block_on(engine.query(sql))
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
        let json =
            projector_engine::render(&r.schema, &r.batches, projector_engine::OutputFormat::Json)?;
        Ok(serde_json::from_slice(&json)?)
    };
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    let accounts = rows(
        "SELECT count(*) AS n, sum(balance) AS b, sum(deposits) AS d, \
         sum(last_version) AS v, count(owner) AS o FROM accounts",
    )?;
    let a = &accounts[0];
    let mut digest = Digest {
        accounts: int(&a["n"]) as u64,
        balance: int(&a["b"]),
        deposits: int(&a["d"]),
        last_version: int(&a["v"]),
        owners: int(&a["o"]) as u64,
        volume: BTreeMap::new(),
    };
    for g in rows("SELECT event_type, events, CAST(total AS BIGINT) AS total FROM volume_by_type")?
    {
        let kind = g["event_type"].as_str().unwrap_or_default().to_string();
        digest
            .volume
            .insert(kind, (int(&g["events"]) as u64, int(&g["total"])));
    }
    Ok(digest)
}
