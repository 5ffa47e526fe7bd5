//! The network of a model: regions, the round-trip time between them, and each node's
//! upload link, where transfers queue one after another.

use std::time::Duration;

/// Regions, RTTs and upload bandwidth of a modelled mesh.
#[derive(Debug, Clone)]
pub struct Net {
    /// Region of each node.
    region: Vec<usize>,
    /// Round-trip time between regions (symmetric).
    rtt: Vec<Vec<Duration>>,
    /// Upload bandwidth of each node, bits per second.
    upload_bps: Vec<u64>,
    /// When each node's upload link is next free (virtual time since the start).
    uplink_free: Vec<Duration>,
}

/// The RTT between two nodes of one region (a LAN or a data centre).
pub const SAME_REGION_RTT: Duration = Duration::from_millis(1);

impl Net {
    /// `nodes` nodes, node `i` in region `region[i % len]`, with the region-to-region
    /// `rtt` matrix and `upload_bps` cycled over the nodes.
    pub fn new(
        nodes: usize,
        region: &[usize],
        rtt: Vec<Vec<Duration>>,
        upload_bps: &[u64],
    ) -> Self {
        let regions = rtt.len().max(1);
        Self {
            region: (0..nodes)
                .map(|i| region.get(i % region.len().max(1)).copied().unwrap_or(0) % regions)
                .collect(),
            rtt: if rtt.is_empty() {
                vec![vec![SAME_REGION_RTT]]
            } else {
                rtt
            },
            upload_bps: (0..nodes)
                .map(|i| {
                    upload_bps
                        .get(i % upload_bps.len().max(1))
                        .copied()
                        .unwrap_or(1_000_000_000)
                })
                .collect(),
            uplink_free: vec![Duration::ZERO; nodes],
        }
    }

    /// One region, 1 ms between nodes, `upload_bps` cycled over the nodes.
    pub fn lan(nodes: usize, upload_bps: &[u64]) -> Self {
        Self::new(nodes, &[0], vec![vec![SAME_REGION_RTT]], upload_bps)
    }

    /// Round-trip time between two nodes.
    pub fn rtt(&self, a: usize, b: usize) -> Duration {
        self.rtt[self.region[a]][self.region[b]]
    }

    /// True if two nodes are in one region.
    pub fn same_region(&self, a: usize, b: usize) -> bool {
        self.region[a] == self.region[b]
    }

    /// One-way delay between two nodes.
    pub fn one_way(&self, a: usize, b: usize) -> Duration {
        self.rtt(a, b) / 2
    }

    /// Sends `bytes` from `from` starting no earlier than `now`: when the last byte has
    /// left `from`'s upload link (transfers from one node queue behind each other).
    pub fn upload(&mut self, from: usize, bytes: u64, now: Duration) -> Duration {
        let start = self.uplink_free[from].max(now);
        let secs = bytes as f64 * 8.0 / self.upload_bps[from].max(1) as f64;
        let end = start + Duration::from_secs_f64(secs);
        self.uplink_free[from] = end;
        end
    }
}
