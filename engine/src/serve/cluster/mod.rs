//! Queries across instances: every instance answers for every partition of the
//! pipeline, wherever it lives.
//!
//! ```text
//!  instance A (asked)                               instance B (owns partitions 2, 5)
//!  SQL ─▶ plan ─▶ ViewTable::scan                     POST /cluster/scan
//!                   ├─ A's partitions: pinned epoch    {view, partitions, columns, filters}
//!                   └─ the rest, per owner ─────────▶   ─▶ B's pinned epoch, only 2 and 5
//!                      (roster from the store)     ◀──   Arrow IPC rows, or aggregate partials,
//!                                                         and each partition's epoch and offset
//!  checkpoint store: _members/<instance>.json  ◀── every instance's heartbeat: its address and
//!                                                  the partitions it holds, with their generation
//! ```
//!
//! * **Discovery** ([`members`]): each instance writes a small record to the checkpoint
//!   store every second (and at once when its partitions change) and reads the
//!   others'. The store is already shared by every instance of a pipeline that scales
//!   out (state moves through it), so no new service is needed; a record names the
//!   generation each partition is held at, so when two records claim a partition
//!   during a rebalance the newer owner wins.
//! * **Transport** ([`peers`], [`wire`]): Arrow IPC over the instances' HTTP port, with
//!   the columns a query reads and the filters it can push; a key lookup goes to the
//!   owner of the key's partition only when the pipeline says how keys are
//!   partitioned. Aggregate views travel as partials, merged and finished by the
//!   instance that was asked, as partials of workers are within one instance.
//! * **Consistency** is per partition: each partition's rows come from one published
//!   epoch of its owner. Every answer says which epoch and offset each partition
//!   came from; a partition that no live owner answers for fails the query
//!   (`query.partition_unavailable`) unless the client accepts a partial answer.

pub(crate) mod members;
pub(crate) mod peers;
pub(crate) mod wire;

use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How this instance takes part in queries across instances.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The base URL other instances reach this one's HTTP API at, e.g.
    /// `http://projector-1.projector:8080`.
    pub advertise: String,
    /// How long an owner may take to answer before its partitions count as
    /// unavailable.
    pub peer_timeout: Duration,
    /// How often this instance writes its member record and reads the others'.
    pub heartbeat: Duration,
    /// The certificate authorities (PEM) that vouch for the other instances' HTTPS
    /// certificates, besides the system's.
    pub ca: Option<Vec<u8>>,
    /// The token this instance presents to the others (the pipeline's
    /// `auth.cluster_token`).
    pub token: Option<String>,
}

impl ClusterOptions {
    /// Options for an instance reached at `advertise`, with the default timeouts.
    pub fn new(advertise: impl Into<String>) -> Self {
        ClusterOptions {
            advertise: advertise.into(),
            peer_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            ca: None,
            token: None,
        }
    }
}

/// Another instance's claim on a partition, as the roster holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Owner {
    /// The instance.
    pub id: String,
    /// Its HTTP base URL.
    pub address: String,
    /// The generation it holds the partition at.
    pub generation: u64,
}

/// A member as last read from the store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Member {
    /// The instance.
    pub id: String,
    /// Its HTTP base URL.
    pub address: String,
    /// The partitions it holds.
    pub partitions: Vec<String>,
    /// How long ago, by this instance's clock, its record last changed, in milliseconds.
    pub age_ms: u64,
}

/// Who owns what, as last read from the store.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    /// The live members other than this instance.
    pub members: Vec<Member>,
    /// Per partition id, the other instance that holds it at the highest generation.
    pub owners: BTreeMap<u32, Owner>,
}

/// Which partitions a key's events are in, when the pipeline says how its producers
/// partition (`partitioner: murmur2`): the key's partition of every topic.
#[derive(Debug, Clone)]
pub(crate) struct KeyPartitions {
    /// Per topic, the partition ids by partition number.
    topics: Vec<Vec<u32>>,
}

impl KeyPartitions {
    /// From the partition names (`topic/number`); `None` if a name is not of that form
    /// or a topic's numbers are not `0..n`.
    pub(crate) fn from_names(names: &[String]) -> Option<Self> {
        let mut topics: BTreeMap<&str, BTreeMap<u32, u32>> = BTreeMap::new();
        for (id, name) in names.iter().enumerate() {
            let (topic, number) = name.rsplit_once('/')?;
            topics
                .entry(topic)
                .or_default()
                .insert(number.parse().ok()?, id as u32);
        }
        let topics = topics
            .into_values()
            .map(|by_number| {
                let ids: Vec<u32> = by_number.values().copied().collect();
                let dense = by_number.keys().copied().eq(0..ids.len() as u32);
                dense.then_some(ids)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(KeyPartitions { topics })
    }

    /// The ids of the partitions `key`'s events are in (one per topic), as Kafka's
    /// default partitioner places them: murmur2 of the key's bytes, made positive,
    /// modulo the partition count.
    pub(crate) fn of(&self, key: &str) -> Vec<u32> {
        let hash = (murmur2(key.as_bytes()) & 0x7fff_ffff) as usize;
        self.topics
            .iter()
            .map(|ids| ids[hash % ids.len()])
            .collect()
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`, librdkafka's
/// `murmur2_random` partitioner for keyed records).
pub(crate) fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// This instance's part in the cluster: who it is, the roster, and the client it
/// asks other instances with.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// This instance (as the checkpoint heads name it).
    pub(crate) me: String,
    /// The pipeline: an instance answers only requests for its own.
    pub(crate) pipeline: String,
    /// Options.
    pub(crate) options: ClusterOptions,
    /// Partition names, by id.
    pub(crate) names: Arc<Vec<String>>,
    /// Who owns what, refreshed by the heartbeat thread.
    pub(crate) roster: ArcSwap<Roster>,
    /// Key to partitions, when the pipeline declares its partitioner.
    pub(crate) keys: Option<KeyPartitions>,
    /// HTTP client for other instances.
    pub(crate) client: reqwest::Client,
    /// Set to make the heartbeat thread write and read now (ownership changed).
    nudged: Mutex<bool>,
    nudge: Condvar,
}

impl Cluster {
    pub(crate) fn new(
        me: String,
        pipeline: String,
        options: ClusterOptions,
        names: Arc<Vec<String>>,
        keys: Option<KeyPartitions>,
    ) -> Result<Self, String> {
        let mut client = reqwest::Client::builder()
            // Below the 10 s an instance keeps an idle connection (serve/listen.rs):
            // a pooled connection is never one the other side just closed.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .timeout(options.peer_timeout)
            .connect_timeout(options.peer_timeout.min(Duration::from_secs(2)));
        if let Some(pem) = &options.ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the CA certificates: {e}"))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        if let Some(token) = &options.token {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut value: reqwest::header::HeaderValue = format!("Bearer {token}")
                .parse()
                .map_err(|_| "the cluster token is not a valid header value".to_string())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
            client = client.default_headers(headers);
        }
        let client = client
            .build()
            .map_err(|e| format!("the client for other instances: {e}"))?;
        Ok(Cluster {
            me,
            pipeline,
            options,
            names,
            roster: ArcSwap::from_pointee(Roster::default()),
            keys,
            client,
            nudged: Mutex::new(false),
            nudge: Condvar::new(),
        })
    }

    /// Makes the heartbeat thread write this instance's record and read the others'
    /// now: this instance's partitions changed.
    pub(crate) fn nudge(&self) {
        *self.nudged.lock().expect("nudge lock") = true;
        self.nudge.notify_all();
    }

    /// Waits up to `timeout` for a nudge; true if there was one.
    fn wait_nudge(&self, timeout: Duration) -> bool {
        let g = self.nudged.lock().expect("nudge lock");
        let (mut g, _) = self
            .nudge
            .wait_timeout_while(g, timeout, |n| !*n)
            .expect("nudge lock");
        std::mem::take(&mut *g)
    }

    /// The id of partition `name`.
    pub(crate) fn id_of(&self, name: &str) -> Option<u32> {
        self.names.iter().position(|n| n == name).map(|i| i as u32)
    }

    /// The members and owners, for `/status`.
    pub(crate) fn status_json(&self) -> serde_json::Value {
        let roster = self.roster.load();
        let owners: BTreeMap<&str, &str> = roster
            .owners
            .iter()
            .map(|(id, o)| (self.names[*id as usize].as_str(), o.address.as_str()))
            .collect();
        serde_json::json!({
            "instance": self.me,
            "advertise": self.options.advertise,
            "members": roster.members,
            "owners": owners,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2 (signed Java ints).
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
    }

    #[test]
    fn keys_map_to_one_partition_per_topic() {
        let names: Vec<String> = ["a/0", "a/1", "a/2", "b/0", "b/1", "b/2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let k = KeyPartitions::from_names(&names).unwrap();
        let ids = k.of("foobar");
        let n = (murmur2(b"foobar") & 0x7fff_ffff) % 3;
        assert_eq!(ids, vec![n, 3 + n]);
        assert!(KeyPartitions::from_names(&["file:x".to_string()]).is_none());
        assert!(KeyPartitions::from_names(&["a/1".to_string()]).is_none());
    }
}
