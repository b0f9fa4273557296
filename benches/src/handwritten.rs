//! The loop Projector's throughput is held against (`projector bench --against-loop`):
//! what a user could write in an afternoon instead of running Projector on the bank
//! pipeline. One thread; each event decoded by serde into a struct (strings borrowed
//! from the input); the `accounts` fold in a `HashMap` by key, with the same per-key
//! version check (an event at or below its key's last version is a duplicate, also
//! after the account was closed); the `volume_by_type` aggregate (count, sum, max,
//! average) in another; at the end, both views' rows in key order. No checkpoints, no
//! SQL, no dead letters: a record that does not decode is skipped, so the comparison
//! needs clean input (the generator's), or the views differ and the bench says so.
//!
//! [`Views`] holds either side's rows, so that a bench compares rates only after
//! checking that both computed the same thing, row by row.

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
    events: i64,
    total: Option<f64>,
    largest: Option<f64>,
    counted: u64,
}

/// What one pass of the loop did.
#[derive(Debug, Clone)]
pub struct LoopRun {
    /// Records read.
    pub events: u64,
    /// Seconds from the first record to its views' rows built.
    pub seconds: f64,
    /// Events per second.
    pub events_per_s: f64,
    /// The views it computed.
    pub views: Views,
}

/// A row of `accounts`: account_id, owner, balance, deposits, last_version.
pub type AccountRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A row of `volume_by_type`: event_type, events, total, largest, average.
pub type VolumeRow = (String, i64, Option<f64>, Option<f64>, Option<f64>);

/// The bank pipeline's views, every row and column, in key order: computed by the loop
/// or read from Projector's published views.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Views {
    /// `accounts`, by `account_id` (byte order).
    pub accounts: Vec<AccountRow>,
    /// `volume_by_type`, by `event_type`.
    pub volume: Vec<VolumeRow>,
}

impl Views {
    /// A summary for the report.
    pub fn digest(&self) -> Digest {
        let sum = |f: fn(&AccountRow) -> Option<i64>| self.accounts.iter().filter_map(f).sum();
        Digest {
            accounts: self.accounts.len() as u64,
            balance: sum(|a| a.2),
            deposits: sum(|a| a.3),
            last_version: sum(|a| a.4),
            owners: self.accounts.iter().filter(|a| a.1.is_some()).count() as u64,
            volume: self
                .volume
                .iter()
                .map(|v| {
                    let group = VolumeDigest {
                        events: v.1,
                        total: v.2,
                        largest: v.3,
                        average: v.4,
                    };
                    (v.0.clone(), group)
                })
                .collect(),
        }
    }

    /// The first row where `self` and `other` differ, said in words.
    pub fn first_difference(&self, other: &Views) -> Option<String> {
        let rows = |a: &[String], b: &[String]| {
            a.iter()
                .zip(b)
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!("{x} against {y}"))
                .or_else(|| {
                    (a.len() != b.len()).then(|| format!("{} rows against {}", a.len(), b.len()))
                })
        };
        let text = |v: &Views| {
            (
                v.accounts
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>(),
                v.volume
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>(),
            )
        };
        let ((a1, v1), (a2, v2)) = (text(self), text(other));
        rows(&a1, &a2)
            .map(|d| format!("accounts: {d}"))
            .or_else(|| rows(&v1, &v2).map(|d| format!("volume_by_type: {d}")))
    }
}

/// A summary of the bank views (the report's; the comparison is row by row).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
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
    /// `volume_by_type`, by `event_type`.
    pub volume: BTreeMap<String, VolumeDigest>,
}

/// One row of `volume_by_type`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct VolumeDigest {
    /// `count(*)`.
    pub events: i64,
    /// `sum(payload.amount)`.
    pub total: Option<f64>,
    /// `max(payload.amount)`.
    pub largest: Option<f64>,
    /// `avg(payload.amount)`.
    pub average: Option<f64>,
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
            if let Some(amount) = event.payload.amount {
                let a = amount as f64;
                group.total = Some(group.total.unwrap_or(0.0) + a);
                group.largest = Some(group.largest.map_or(a, |m| m.max(a)));
                group.counted += 1;
            }
        }
    }
    // The rows, in key order: what publishing is to Projector.
    let mut accounts: Vec<AccountRow> = keys
        .into_iter()
        .filter_map(|(key, e)| {
            e.account.map(|a| {
                (
                    key,
                    a.owner,
                    Some(a.balance),
                    Some(a.deposits),
                    Some(a.last_version),
                )
            })
        })
        .collect();
    accounts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut volume: Vec<VolumeRow> = groups
        .into_iter()
        .map(|(kind, g)| {
            let average = g
                .total
                .filter(|_| g.counted > 0)
                .map(|t| t / g.counted as f64);
            (kind, g.events, g.total, g.largest, average)
        })
        .collect();
    volume.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let seconds = started.elapsed().as_secs_f64();
    let events = batch.len() as u64;
    LoopRun {
        events,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        views: Views { accounts, volume },
    }
}

/// Fails unless `cfg` has the bank pipeline's two views by name. Their logic is
/// checked after the runs, when every row both computed is compared.
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

/// The bank views Projector published last (`shared` may be stopped), every row.
pub fn views_of(shared: &projector_engine::Shared) -> anyhow::Result<Views> {
    use anyhow::Context as _;
    use serde_json::Value;
    let engine = projector_engine::SqlEngine::new(shared.catalog.clone(), Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the queries that read the views")?;
    let rows = |sql: &str| -> anyhow::Result<Vec<Vec<Value>>> {
        let r = runtime
            .block_on(engine.query(sql))
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
        let json =
            projector_engine::render(&r.schema, &r.batches, projector_engine::OutputFormat::Rows)?;
        let v: Value = serde_json::from_slice(&json)?;
        Ok(serde_json::from_value(v["rows"].clone())?)
    };
    let text = |v: &Value| v.as_str().map(str::to_string);
    let accounts = rows(
        "SELECT account_id, owner, balance, deposits, last_version FROM accounts \
         ORDER BY account_id",
    )?
    .iter()
    .map(|r| {
        (
            text(&r[0]).unwrap_or_default(),
            text(&r[1]),
            r[2].as_i64(),
            r[3].as_i64(),
            r[4].as_i64(),
        )
    })
    .collect();
    let volume = rows(
        "SELECT event_type, events, total, largest, average FROM volume_by_type \
         ORDER BY event_type",
    )?
    .iter()
    .map(|r| {
        (
            text(&r[0]).unwrap_or_default(),
            r[1].as_i64().unwrap_or(0),
            r[2].as_f64(),
            r[3].as_f64(),
            r[4].as_f64(),
        )
    })
    .collect();
    Ok(Views { accounts, volume })
}
