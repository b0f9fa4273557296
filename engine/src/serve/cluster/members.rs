//! Discovery through the checkpoint store: each instance's member record.
//!
//! `_members/<instance>.json` holds an instance's address and the partitions it holds
//! with the generation it holds them at (see `state/checkpoint/store.rs`: taking a
//! partition over raises its generation). Every instance rewrites its own record each
//! heartbeat, and at once when its partitions change, then reads everyone's. A record
//! this instance has not seen rewritten for [`STALE_AFTER`] of its writer's heartbeats
//! is ignored (timed by the reader's clock, so instances need not agree on the time),
//! and an instance that stops cleanly deletes its own. When two records claim a partition (one instance has
//! taken it, the other has not noticed yet), the higher generation wins.

use super::{Cluster, Member, Owner, Roster};
use crate::state::checkpoint::blobs::{BlobError, Blobs};
use crate::state::checkpoint::recovery::Checkpoints;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where member records live in the store (a name no partition has: partition
/// names are `topic/number`, and topics cannot start with `_members/`).
const PREFIX: &str = "_members";

/// Heartbeats a record may miss before it is ignored.
const STALE_AFTER: u32 = 10;

/// One instance's record.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    pipeline: String,
    address: String,
    /// Partition name → the generation it is held at.
    partitions: BTreeMap<String, u64>,
    /// When it was written, milliseconds since the Unix epoch.
    written_ms: u64,
    /// The writer's heartbeat, in milliseconds.
    heartbeat_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The key of `id`'s record (an instance id is `host:pid:random`).
fn key_of(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{PREFIX}/{safe}.json")
}

/// Runs the heartbeat until `stop`: writes this instance's record, reads everyone's
/// into `cluster.roster`. Deletes the record on the way out.
pub(crate) fn heartbeat_loop(
    cluster: Arc<Cluster>,
    checkpoints: Arc<Checkpoints>,
    stop: Arc<AtomicBool>,
) {
    let blobs = checkpoints.blobs();
    let mine = key_of(&cluster.me);
    let mut warned = false;
    let mut seen = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let result = beat(&cluster, &checkpoints, &*blobs, &mine, &mut seen);
        match result {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                tracing::warn!("cluster: cannot read or write member records: {e}");
                warned = true;
            }
            Err(_) => {}
        }
        cluster.wait_nudge(cluster.options.heartbeat);
    }
    if let Err(e) = blobs.delete(&mine) {
        tracing::warn!("cluster: cannot delete this instance's member record: {e}");
    }
}

/// Per member: the `written_ms` of its record as last read, and when this instance
/// first read that one.
type Seen = HashMap<String, (u64, Instant)>;

fn beat(
    cluster: &Cluster,
    checkpoints: &Checkpoints,
    blobs: &dyn Blobs,
    mine: &str,
    seen: &mut Seen,
) -> Result<(), BlobError> {
    let record = Record {
        id: cluster.me.clone(),
        pipeline: cluster.pipeline.clone(),
        address: cluster.options.advertise.clone(),
        partitions: checkpoints
            .held()
            .into_iter()
            .map(|(id, g)| (cluster.names[id as usize].clone(), g))
            .collect(),
        written_ms: now_ms(),
        heartbeat_ms: cluster.options.heartbeat.as_millis() as u64,
    };
    blobs.put(
        mine,
        &serde_json::to_vec(&record).expect("a record serialises"),
    )?;
    let mut roster = Roster::default();
    let mut listed = Vec::new();
    for key in blobs.list(PREFIX)? {
        if key == mine || !key.ends_with(".json") {
            continue;
        }
        let Some(blob) = blobs.get(&key)? else {
            continue; // deleted since listed
        };
        let Ok(r) = serde_json::from_slice::<Record>(&blob.data) else {
            tracing::debug!("cluster: ignoring unreadable member record {key}");
            continue;
        };
        listed.push(r.id.clone());
        let (written, since) = seen
            .entry(r.id.clone())
            .or_insert((r.written_ms, Instant::now()));
        if *written != r.written_ms {
            *written = r.written_ms;
            *since = Instant::now();
        }
        let age = since.elapsed();
        let stale = Duration::from_millis(r.heartbeat_ms.max(100)) * STALE_AFTER;
        if r.pipeline != cluster.pipeline || r.id == cluster.me || age > stale {
            continue;
        }
        let age = age.as_millis() as u64;
        for (name, generation) in &r.partitions {
            let Some(id) = cluster.id_of(name) else {
                continue;
            };
            let claim = Owner {
                id: r.id.clone(),
                address: r.address.clone(),
                generation: *generation,
            };
            match roster.owners.get(&id) {
                Some(o) if o.generation >= *generation => {}
                _ => {
                    roster.owners.insert(id, claim);
                }
            }
        }
        roster.members.push(Member {
            id: r.id,
            address: r.address,
            partitions: r.partitions.into_keys().collect(),
            age_ms: age,
        });
    }
    seen.retain(|id, _| listed.contains(id));
    // This instance's own claims outrank older ones from others.
    for (id, generation) in checkpoints.held() {
        if roster
            .owners
            .get(&id)
            .is_some_and(|o| o.generation <= generation)
        {
            roster.owners.remove(&id);
        }
    }
    roster.members.sort_by(|a, b| a.address.cmp(&b.address));
    cluster.roster.store(Arc::new(roster));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_are_plain() {
        assert_eq!(key_of("host-1:42:00ff"), "_members/host-1_42_00ff.json");
    }
}
