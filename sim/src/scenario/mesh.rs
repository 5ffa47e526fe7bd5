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
use shoal_protocol::stream;
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
    /// When each other node (by index) stored it.
    arrivals: BTreeMap<usize, Instant>,
}

/// Byte counters of one node, as last sampled.
#[derive(Debug, Default, Clone, Copy)]
struct Bytes {
    relay: u64,
    control: u64,
    egress: u64,
}

/// Collects the mesh figures over a run.
#[derive(Debug, Default)]
pub struct MeshRecorder {
    streams: Vec<stream::Name>,
    seen: HashMap<(usize, u64), Seen>,
    bytes: BTreeMap<usize, Bytes>,
}

impl MeshRecorder {
    /// A recorder for these streams.
    pub fn new(streams: Vec<stream::Name>) -> Self {
        Self {
            streams,
            ..Self::default()
        }
    }

    /// Reads every live node's segments and byte counters.
    pub fn sample(&mut self, cluster: &Cluster) {
        for (i, node) in cluster.indexed() {
            let s = node.summary();
            self.bytes.insert(
                i,
                Bytes {
                    relay: s.relay_bytes,
                    control: s.control_bytes,
                    egress: s.egress_bytes,
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
                        seen.arrivals.entry(i).or_insert(at);
                    }
                }
            }
        }
    }

    /// The figures as JSON.
    pub fn figures(&self, nodes: usize) -> Value {
        // When each node began carrying each stream: segments older than that were
        // pulled on request (a player starting behind the edge), not propagated.
        let mut joined: HashMap<(usize, usize), Instant> = HashMap::new();
        for ((k, _), s) in &self.seen {
            for (node, at) in &s.arrivals {
                let t = joined.entry((*k, *node)).or_insert(*at);
                *t = (*t).min(*at);
            }
        }
        let mut delays: Vec<f64> = Vec::new();
        let mut reached: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut uploads = Vec::new();
        let mut media = 0u64;
        for ((k, _), s) in &self.seen {
            let Some(origin) = s.ingested_at else {
                continue;
            };
            media += s.size;
            uploads.push(s.origin_uploads as f64);
            let nodes = reached.entry(*k).or_default();
            for (node, at) in &s.arrivals {
                nodes.insert(*node);
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
            "inter_node_bytes": relay,
            "control_bytes": control,
            "media_bytes": egress,
        })
    }
}
