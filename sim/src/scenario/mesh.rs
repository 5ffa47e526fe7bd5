//! Mesh figures: how segments spread from their ingest node (propagation delay, how many
//! nodes they reached, the origin's uploads per segment) and what moving them cost
//! (inter-node bytes against one copy per node, control bytes against media bytes).
//!
//! Sampled from the nodes' own records once a second, so a segment is seen while it is
//! in the nodes' windows; each (segment, node) arrival is counted once. Propagation is
//! measured to nodes already carrying the stream (segments ingested after a node's first
//! copy of it); older segments a player asked for later are fetches, not propagation.

use crate::cluster::Cluster;
use serde_json::{Value, json};
use shoal_protocol::{PeerId, stream};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// One segment as the mesh saw it.
#[derive(Debug, Default)]
struct Seen {
    /// When its ingest node stored it.
    ingested_at: Option<Instant>,
    /// Peers its ingest node sent it to.
    origin_uploads: usize,
    size: u64,
    /// When each other node (by index) stored it, and which node it came from.
    arrivals: BTreeMap<usize, (Instant, Option<usize>)>,
}

/// Byte counters of one node, as last sampled.
#[derive(Debug, Default, Clone, Copy)]
struct Bytes {
    relay: u64,
    control: u64,
    egress: u64,
    verified: u64,
}

/// Collects the mesh figures over a run.
#[derive(Debug, Default)]
pub struct MeshRecorder {
    streams: Vec<stream::Name>,
    index: HashMap<PeerId, usize>,
    seen: HashMap<(usize, u64), Seen>,
    bytes: BTreeMap<usize, Bytes>,
    /// The first and the latest sample.
    span: Option<(Instant, Instant)>,
}

impl MeshRecorder {
    /// A recorder for these streams in `cluster`.
    pub fn new(streams: Vec<stream::Name>, cluster: &Cluster) -> Self {
        Self {
            streams,
            index: cluster
                .indexed()
                .into_iter()
                .map(|(i, n)| (n.peer_id(), i))
                .collect(),
            ..Self::default()
        }
    }

    /// Reads every live node's segments and byte counters.
    pub fn sample(&mut self, cluster: &Cluster) {
        let now = Instant::now();
        self.span = Some(self.span.map_or((now, now), |(first, _)| (first, now)));
        for (i, node) in cluster.indexed() {
            let s = node.summary();
            self.bytes.insert(
                i,
                Bytes {
                    relay: s.relay_bytes,
                    control: s.control_bytes,
                    egress: s.egress_bytes,
                    verified: s.gossip_verified,
                },
            );
            for (k, name) in self.streams.iter().enumerate() {
                for (seq, info) in node.segments(name) {
                    let Some(at) = info.held_at else { continue };
                    let seen = self.seen.entry((k, seq)).or_default();
                    seen.size = info.size;
                    if info.ingested {
                        // Redundant ingest: the first copy is the origin.
                        if seen.ingested_at.is_none_or(|t| at < t) {
                            seen.ingested_at = Some(at);
                        }
                        seen.origin_uploads = seen.origin_uploads.max(info.uploads);
                    } else {
                        let from = info.from.and_then(|p| self.index.get(&p).copied());
                        seen.arrivals.entry(i).or_insert((at, from));
                    }
                }
            }
        }
    }

    /// The figures as JSON; `regions` gives each node's region, if any.
    pub fn figures(&self, nodes: usize, regions: &[Option<usize>]) -> Value {
        // When each node began carrying each stream: segments older than that were
        // pulled on request (a player starting behind the edge), not propagated.
        let mut joined: HashMap<(usize, usize), Instant> = HashMap::new();
        for ((k, _), s) in &self.seen {
            for (node, (at, _)) in &s.arrivals {
                let t = joined.entry((*k, *node)).or_insert(*at);
                *t = (*t).min(*at);
            }
        }
        let mut delays: Vec<f64> = Vec::new();
        let mut reached: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut uploads = Vec::new();
        let mut media = 0u64;
        let region = |n: usize| regions.get(n).copied().flatten();
        let (mut within, mut across) = (0usize, 0usize);
        for ((k, _), s) in &self.seen {
            let Some(origin) = s.ingested_at else {
                continue;
            };
            media += s.size;
            uploads.push(s.origin_uploads as f64);
            let nodes = reached.entry(*k).or_default();
            for (node, (at, from)) in &s.arrivals {
                nodes.insert(*node);
                if let (Some(to), Some(from)) = (region(*node), from.and_then(region)) {
                    if to == from {
                        within += 1;
                    } else {
                        across += 1;
                    }
                }
                if joined.get(&(*k, *node)).is_some_and(|j| origin >= *j) {
                    delays.push(at.saturating_duration_since(origin).as_secs_f64() * 1000.0);
                }
            }
        }
        delays.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Value {
            if delays.is_empty() {
                return Value::Null;
            }
            let i = ((delays.len() - 1) as f64 * p).round() as usize;
            json!(delays[i])
        };
        let sum = |f: fn(&Bytes) -> u64| self.bytes.values().map(f).sum::<u64>();
        let (relay, control, egress) = (sum(|b| b.relay), sum(|b| b.control), sum(|b| b.egress));
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        // Counters run from each node's start; the samples span about the same time.
        let node_seconds = self
            .span
            .map(|(a, b)| b.saturating_duration_since(a).as_secs_f64() * nodes as f64)
            .filter(|s| *s > 0.0);
        let per_node_s = |total: u64| node_seconds.map(|ns| total as f64 / ns);
        json!({
            "segments": uploads.len(),
            "propagation_p50_ms": pct(0.5),
            "propagation_p99_ms": pct(0.99),
            "propagation_max_ms": delays.last(),
            // Fewest nodes besides the origin any stream reached.
            "nodes_reached_min": self
                .streams
                .iter()
                .enumerate()
                .map(|(k, _)| reached.get(&k).map_or(0, BTreeSet::len))
                .min(),
            "origin_uploads_per_segment": (!uploads.is_empty())
                .then(|| uploads.iter().sum::<f64>() / uploads.len() as f64),
            // 1 copy to every other node: (nodes - 1) / nodes.
            "inter_node_bytes_per_node_segment_bytes": ratio(relay, nodes as u64 * media),
            "control_bytes_per_media_byte": ratio(control, egress),
            "control_bytes_per_node_s": per_node_s(control),
            "verifications_per_node_s": per_node_s(sum(|b| b.verified)),
            // With regions: pulls from a node in the puller's region, and pulls that
            // crossed regions per segment (at best one per region the origin is not in).
            "pulls_within_region_share": ratio(within as u64, (within + across) as u64),
            "cross_region_pulls_per_segment": (!uploads.is_empty() && within + across > 0)
                .then(|| across as f64 / uploads.len() as f64),
            "inter_node_bytes": relay,
            "control_bytes": control,
            "media_bytes": egress,
        })
    }
}
