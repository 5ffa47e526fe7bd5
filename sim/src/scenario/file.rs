//! The scenario file format (TOML).
//!
//! ```toml
//! name = "origin-loss"
//! nodes = 6
//! duration_s = 40
//! fanout = 4                        # optional
//! [[streams]]
//! name = "live"
//! ingest = [0, 1]                   # node indices; a second one is a redundant encoder
//! [[viewers]]
//! stream = "live"
//! nodes = [2, 3, 4, 5]              # viewers are spread over these nodes
//! count = 40
//! start_s = 2.0
//! ramp_s = 5.0                      # arrivals spread over this long (0: flash crowd)
//! [[events]]
//! at_s = 20.0
//! kill = 0                          # the node vanishes
//! [[events]]
//! at_s = 30.0
//! restart = 0                       # stopped (if running) and started again, same identity
//! [[events]]
//! at_s = 10.0
//! join = 5                          # node 5 is not started until then
//! [[events]]
//! at_s = 25.0
//! move_ingest = "live"              # the stream's encoder now pushes into node 2
//! to = 2
//! ```
//!
//! Load balancing (all optional):
//!
//! ```toml
//! capacity_mbit = [2, 4, 8]         # egress capacity per node, cycled over the nodes
//! reserve = "10%"                   # share kept for ingest and relaying
//! balancers = ["shoal", "round-robin", "poll-5s"]   # one run each, compared
//! [[events]]
//! at_s = 15.0
//! drain = 2                         # drain node 2 (redirect new viewers, hand off)
//! drain_deadline_s = 3.0
//! ```
//!
//! Regions (optional): each node is in a region, and traffic between nodes gets the
//! round-trip time of their regions (held in userspace under quinn: the data plane).
//!
//! ```toml
//! regions = ["eu", "us", "ap"]
//! node_regions = ["eu", "eu", "us", "us", "ap"]   # per node, cycled over the nodes
//! rtt_ms = [[1, 80, 160], [80, 1, 120], [160, 120, 1]]   # between regions, symmetric
//! ```
//!
//! Model mode (`shoal-sim run --mode model`, optional): the stream as the model sees it,
//! since no clip is played out there. Up to [`MAX_MODEL_NODES`] nodes.
//!
//! ```toml
//! [model]
//! bitrate_kbit = 3000               # default: the built-in clip's, about 240
//! segment_s = 2.0
//! ```

use anyhow::{bail, ensure};
use serde::Deserialize;

/// A scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name, for the report.
    pub name: String,
    /// Nodes in the mesh.
    pub nodes: usize,
    /// How long viewers watch, from the start.
    pub duration_s: u64,
    /// Fan-out per holder (the node default if absent).
    pub fanout: Option<usize>,
    /// Streams and their ingest nodes.
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
    /// Viewer groups.
    #[serde(default)]
    pub viewers: Vec<ViewerSpec>,
    /// Timed events.
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// Egress capacity per node in Mbit/s, cycled over the nodes (empty: no limit).
    #[serde(default)]
    pub capacity_mbit: Vec<f64>,
    /// Share of each capacity kept for ingest and relaying ("10%", or a rate).
    pub reserve: Option<String>,
    /// The balancers to compare, one run of the scenario each.
    #[serde(default = "default_balancers")]
    pub balancers: Vec<Balancer>,
    /// Region names (none: one flat loopback network).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Each node's region, cycled over the nodes.
    #[serde(default)]
    pub node_regions: Vec<String>,
    /// Round-trip time between regions in milliseconds, `rtt_ms[a][b]`.
    #[serde(default)]
    pub rtt_ms: Vec<Vec<f64>>,
    /// How model mode sees the streams.
    #[serde(default)]
    pub model: ModelSpec,
}

/// Most nodes a scenario may run as real in-process nodes.
pub const MAX_REAL_NODES: usize = 200;
/// Most nodes a scenario may run in model mode.
pub const MAX_MODEL_NODES: usize = 20_000;

/// The streams as model mode sees them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Each stream's bitrate in kbit/s.
    #[serde(default = "default_bitrate_kbit")]
    pub bitrate_kbit: f64,
    /// Segment duration in seconds.
    #[serde(default = "default_segment_s")]
    pub segment_s: f64,
    /// Streams to generate besides the file's `[[streams]]` (model mode): stream `k` is
    /// ingested at node `k * nodes / streams`, so they spread over the regions.
    #[serde(default)]
    pub generated_streams: usize,
    /// Generated streams each node watches, drawn by Zipf popularity (a few streams are
    /// watched nearly everywhere, most in a few places), the same draw for a given size.
    #[serde(default)]
    pub watched_per_node: usize,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            bitrate_kbit: default_bitrate_kbit(),
            segment_s: default_segment_s(),
            generated_streams: 0,
            watched_per_node: 0,
        }
    }
}

/// The built-in clip's bitrate: about 59 KB per 2 s segment.
fn default_bitrate_kbit() -> f64 {
    240.0
}

fn default_segment_s() -> f64 {
    2.0
}

/// How a scenario is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Real nodes on loopback, in wall-clock time.
    Real,
    /// Cores in a discrete-event loop, in virtual time.
    Model,
}

/// How viewers are spread over nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Balancer {
    /// Viewers arrive at their group's nodes in turn; Shoal's nodes admit or redirect.
    #[serde(rename = "shoal")]
    Shoal,
    /// A front end sends viewers to every live node in turn; nodes serve everyone.
    #[serde(rename = "round-robin")]
    RoundRobin,
    /// A MistServer-style balancer: polls every node's load every 5 s and sends each
    /// viewer to the least loaded, adding the stream's bitrate to its estimate between
    /// polls; nodes serve everyone.
    #[serde(rename = "poll-5s")]
    Poll5s,
}

impl Balancer {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Balancer::Shoal => "shoal",
            Balancer::RoundRobin => "round-robin",
            Balancer::Poll5s => "poll-5s",
        }
    }
}

fn default_balancers() -> Vec<Balancer> {
    vec![Balancer::Shoal]
}

/// A stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Stream name.
    pub name: String,
    /// Nodes an encoder pushes it into.
    pub ingest: Vec<usize>,
}

/// A group of viewers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewerSpec {
    /// The stream they watch.
    pub stream: String,
    /// Nodes they watch on (round robin).
    pub nodes: Vec<usize>,
    /// How many.
    pub count: usize,
    /// When the first arrives.
    #[serde(default)]
    pub start_s: f64,
    /// Over how long they arrive.
    #[serde(default)]
    pub ramp_s: f64,
}

/// A timed event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// When, in seconds from the start.
    pub at_s: f64,
    /// Kill this node.
    pub kill: Option<usize>,
    /// Drain this node.
    pub drain: Option<usize>,
    /// Stop this node (if running) and start it again with the same data dir.
    pub restart: Option<usize>,
    /// Start this node now (it is not started with the others).
    pub join: Option<usize>,
    /// Move this stream's encoder to node `to`.
    pub move_ingest: Option<String>,
    /// Where `move_ingest` moves the encoder.
    pub to: Option<usize>,
    /// How long the drained node serves its viewers before handing them off.
    #[serde(default = "default_drain_deadline")]
    pub drain_deadline_s: f64,
}

fn default_drain_deadline() -> f64 {
    5.0
}

impl Scenario {
    /// Node `i`'s egress capacity in bits per second (0: no limit).
    pub fn capacity_bps(&self, i: usize) -> u64 {
        if self.capacity_mbit.is_empty() {
            return 0;
        }
        (self.capacity_mbit[i % self.capacity_mbit.len()] * 1e6) as u64
    }

    /// Node `i`'s reserve in bits per second.
    pub fn reserve_bps(&self, i: usize) -> u64 {
        let share = self
            .reserve
            .as_deref()
            .and_then(|r| shoal_node::units::Share::parse(r).ok())
            .unwrap_or(shoal_node::units::Share::Percent(20.0));
        share.of(self.capacity_bps(i))
    }

    /// Node `i`'s region (its index in `regions`), if regions are set.
    pub fn region_of(&self, i: usize) -> Option<usize> {
        let name = self.node_regions.get(i % self.node_regions.len().max(1))?;
        self.regions.iter().position(|r| r == name)
    }

    /// The one-way delay between regions `a` and `b` (half their RTT).
    pub fn one_way(&self, a: usize, b: usize) -> std::time::Duration {
        let rtt = self.rtt_ms.get(a).and_then(|r| r.get(b)).copied();
        std::time::Duration::from_secs_f64(rtt.unwrap_or(0.0) / 2000.0)
    }

    /// True if node `i` starts with a `join` event rather than at the beginning.
    pub fn joins_later(&self, i: usize) -> bool {
        self.events.iter().any(|e| e.join == Some(i))
    }

    /// Parses a scenario file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Checks indices and bounds for a real run.
    pub fn check(&self) -> anyhow::Result<()> {
        self.check_for(Mode::Real)
    }

    /// Checks indices and bounds for a run in `mode`.
    pub fn check_for(&self, mode: Mode) -> anyhow::Result<()> {
        let most = match mode {
            Mode::Real => MAX_REAL_NODES,
            Mode::Model => MAX_MODEL_NODES,
        };
        ensure!(
            (1..=most).contains(&self.nodes),
            "nodes must be 1..={most} in this mode"
        );
        ensure!(
            (1.0..=1e6).contains(&self.model.bitrate_kbit)
                && (0.1..=60.0).contains(&self.model.segment_s),
            "model: bitrate_kbit must be 1..=1e6 and segment_s 0.1..=60"
        );
        ensure!(self.duration_s <= 3600, "duration_s must be at most 3600");
        ensure!(
            self.model.generated_streams <= 1000
                && self.model.watched_per_node <= self.model.generated_streams,
            "model: generated_streams must be at most 1000, watched_per_node at most that"
        );
        ensure!(
            mode == Mode::Model || self.model.generated_streams == 0,
            "generated streams are for model mode (--mode model)"
        );
        let node_ok = |n: &usize| *n < self.nodes;
        for s in &self.streams {
            ensure!(
                !s.ingest.is_empty() && s.ingest.iter().all(node_ok),
                "stream {}: bad ingest nodes",
                s.name
            );
            shoal_protocol::stream::Name::new(s.name.as_str())?;
            ensure!(
                !s.ingest.iter().any(|n| self.joins_later(*n)),
                "stream {}: an ingest node must run from the start",
                s.name
            );
        }
        for v in &self.viewers {
            ensure!(
                !v.nodes.is_empty() && v.nodes.iter().all(node_ok),
                "viewers of {}: bad nodes",
                v.stream
            );
            ensure!(v.count <= 5000, "at most 5000 viewers per group");
            if !self.streams.iter().any(|s| s.name == v.stream) {
                bail!("viewers watch unknown stream {}", v.stream);
            }
        }
        for e in &self.events {
            let named = [e.kill, e.drain, e.restart, e.join, e.to];
            ensure!(
                named.iter().flatten().all(node_ok),
                "event names an unknown node"
            );
            let actions = [
                e.kill.is_some(),
                e.drain.is_some(),
                e.restart.is_some(),
                e.join.is_some(),
                e.move_ingest.is_some(),
            ];
            ensure!(
                actions.iter().filter(|a| **a).count() == 1,
                "an event does one thing: kill, drain, restart, join or move_ingest"
            );
            ensure!(
                e.move_ingest.is_some() == e.to.is_some(),
                "move_ingest needs `to` (and `to` needs move_ingest)"
            );
            if let Some(stream) = &e.move_ingest {
                ensure!(
                    self.streams.iter().any(|s| &s.name == stream),
                    "move_ingest names unknown stream {stream}"
                );
            }
            ensure!(
                (0.0..=600.0).contains(&e.drain_deadline_s),
                "drain_deadline_s must be 0..=600"
            );
        }
        ensure!(
            self.capacity_mbit.iter().all(|c| *c > 0.0 && *c <= 1e6),
            "capacity_mbit values must be positive"
        );
        if let Some(r) = &self.reserve {
            shoal_node::units::Share::parse(r).map_err(anyhow::Error::msg)?;
        }
        ensure!(!self.balancers.is_empty(), "balancers must not be empty");
        if !self.regions.is_empty() || !self.node_regions.is_empty() {
            let n = self.regions.len();
            ensure!(n <= 64, "at most 64 regions");
            ensure!(
                !self.node_regions.is_empty()
                    && self.node_regions.iter().all(|r| self.regions.contains(r)),
                "node_regions must name regions"
            );
            ensure!(
                self.rtt_ms.len() == n
                    && self.rtt_ms.iter().all(|row| row.len() == n)
                    && self
                        .rtt_ms
                        .iter()
                        .flatten()
                        .all(|ms| (0.0..=2000.0).contains(ms)),
                "rtt_ms must be a {n} x {n} matrix of 0..=2000 ms"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse_and_check() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let s = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Files named model-* or with generated streams are for model mode (more
            // nodes than run for real).
            let mode = if s.name.starts_with("model-") || s.model.generated_streams > 0 {
                Mode::Model
            } else {
                Mode::Real
            };
            s.check_for(mode)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn rejects_bad_files() {
        assert!(Scenario::parse("name = 1").is_err());
        let s =
            Scenario::parse("name='x'\nnodes=2\nduration_s=5\n[[streams]]\nname='s'\ningest=[5]\n")
                .unwrap();
        assert!(s.check().is_err());
        assert!(Scenario::parse("name='x'\nnodes=2\nduration_s=5\nstreams=[]\nbogus=1\n").is_err());
        let regions = |extra: &str| {
            Scenario::parse(&format!(
                "name='x'\nnodes=2\nduration_s=5\nstreams=[]\nregions=['a','b']\n{extra}"
            ))
            .unwrap()
        };
        let good = regions("node_regions=['a','b']\nrtt_ms=[[1,50],[50,1]]\n");
        good.check().unwrap();
        assert_eq!(good.region_of(1), Some(1));
        assert_eq!(good.one_way(0, 1), std::time::Duration::from_millis(25));
        // A region nobody defined, a short row, no node regions.
        assert!(
            regions("node_regions=['a','c']\nrtt_ms=[[1,50],[50,1]]\n")
                .check()
                .is_err()
        );
        assert!(
            regions("node_regions=['a','b']\nrtt_ms=[[1,50],[50]]\n")
                .check()
                .is_err()
        );
        assert!(regions("rtt_ms=[[1,50],[50,1]]\n").check().is_err());
    }
}
