//! Where a scenario's viewers go first: Shoal (the viewer's entry node; the mesh admits
//! or redirects), or one of two baselines in front of nodes that serve everyone:
//! round-robin, and a MistServer-style balancer polling every node's load every 5 s.

use super::file::Balancer;
use crate::http::get;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// How often the MistServer-style balancer polls (MistServer's default).
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Bitrate assumed for a stream no node reports yet.
const DEFAULT_BITRATE: u64 = 250_000;

/// What the poller last saw of a node, plus what it sent there since.
#[derive(Debug, Clone, Default)]
struct Seen {
    alive: bool,
    egress_bps: u64,
    streams: HashSet<String>,
    bitrates: Vec<(String, u64)>,
    added_bps: u64,
}

/// Picks a node for each arriving viewer.
pub struct Picker {
    kind: Balancer,
    /// HTTP address by node index (a restarted node gets a new one).
    nodes: RwLock<Vec<SocketAddr>>,
    capacity: Vec<u64>,
    alive: Vec<AtomicBool>,
    next: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Picker {
    /// A picker over `nodes` (HTTP addresses by index) with nominal `capacity` (bps).
    pub fn new(kind: Balancer, nodes: Vec<SocketAddr>, capacity: Vec<u64>) -> Self {
        let n = nodes.len();
        Self {
            kind,
            alive: (0..n).map(|_| AtomicBool::new(true)).collect(),
            seen: Mutex::new(vec![Seen::default(); n]),
            next: AtomicUsize::new(0),
            nodes: RwLock::new(nodes),
            capacity,
        }
    }

    /// Node `i` left (killed or drained): front ends stop sending viewers there.
    pub fn remove(&self, i: usize) {
        if let Some(a) = self.alive.get(i) {
            a.store(false, Ordering::Relaxed);
        }
    }

    /// Node `i` (re)started at `addr`: front ends send viewers there again.
    pub fn add(&self, i: usize, addr: SocketAddr) {
        if let Some(slot) = self.nodes.write().expect("poisoned").get_mut(i) {
            *slot = addr;
        }
        if let Some(a) = self.alive.get(i) {
            a.store(true, Ordering::Relaxed);
        }
    }

    /// The node for a new viewer of `stream` who arrives at entry node `entry` (its
    /// group's choice; used by Shoal only). `retry` counts earlier failed attempts.
    pub fn pick(&self, stream: &str, entry: usize, retry: usize) -> SocketAddr {
        let nodes = self.nodes.read().expect("poisoned").clone();
        let live: Vec<usize> = (0..nodes.len())
            .filter(|i| self.alive[*i].load(Ordering::Relaxed))
            .collect();
        if live.is_empty() {
            return nodes[entry];
        }
        let i = match self.kind {
            Balancer::Shoal => {
                if retry == 0 && self.alive[entry].load(Ordering::Relaxed) {
                    entry
                } else {
                    live[(entry + retry) % live.len()]
                }
            }
            Balancer::RoundRobin => live[self.next.fetch_add(1, Ordering::Relaxed) % live.len()],
            Balancer::Poll5s => self.least_loaded(stream, &live),
        };
        nodes[i]
    }

    /// MistServer-style choice: the lowest bandwidth use relative to capacity by the last
    /// poll plus what was sent there since, preferring nodes that already have the
    /// stream; the chosen node is charged the stream's bitrate until the next poll.
    fn least_loaded(&self, stream: &str, live: &[usize]) -> usize {
        let mut seen = self.seen.lock().expect("poisoned");
        let bitrate = seen
            .iter()
            .flat_map(|s| s.bitrates.iter())
            .filter(|(name, _)| name == stream)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(DEFAULT_BITRATE);
        let score = |i: usize| {
            let s = &seen[i];
            let cap = self.capacity[i].max(1) as f64;
            let util = (s.egress_bps + s.added_bps + bitrate) as f64 / cap;
            let bonus = if s.streams.contains(stream) {
                0.05
            } else {
                0.0
            };
            util - bonus
        };
        let polled: Vec<usize> = live.iter().copied().filter(|i| seen[*i].alive).collect();
        let pool = if polled.is_empty() { live } else { &polled };
        let best = pool
            .iter()
            .copied()
            .min_by(|a, b| score(*a).total_cmp(&score(*b)))
            .expect("pool is not empty");
        seen[best].added_bps += bitrate;
        best
    }

    /// Polls every node's `/api/status` once (the MistServer-style balancer's loop body).
    pub async fn poll(&self) {
        let nodes = self.nodes.read().expect("poisoned").clone();
        let mut fresh = Vec::with_capacity(nodes.len());
        for (i, addr) in nodes.iter().enumerate() {
            let mut s = Seen::default();
            if self.alive[i].load(Ordering::Relaxed)
                && let Ok(r) = get(*addr, "/api/status").await
                && r.status == 200
                && let Ok(v) = serde_json::from_slice::<Value>(&r.body)
            {
                s.alive = true;
                s.egress_bps = v["load"]["egress_bps"].as_u64().unwrap_or(0);
                for st in v["streams"].as_array().into_iter().flatten() {
                    let name = st["name"].as_str().unwrap_or("").to_string();
                    if st["held_last_seq"].is_u64() {
                        s.streams.insert(name.clone());
                    }
                    if let Some(b) = st["bitrate_bps"].as_u64() {
                        s.bitrates.push((name, b));
                    }
                }
            }
            fresh.push(s);
        }
        *self.seen.lock().expect("poisoned") = fresh;
    }

    /// Runs the poller until the task is dropped (MistServer-style balancer only).
    pub async fn run_poller(&self) {
        if self.kind != Balancer::Poll5s {
            return;
        }
        loop {
            self.poll().await;
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
