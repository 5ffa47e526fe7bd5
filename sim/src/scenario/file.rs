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
    pub streams: Vec<StreamSpec>,
    /// Viewer groups.
    #[serde(default)]
    pub viewers: Vec<ViewerSpec>,
    /// Timed events.
    #[serde(default)]
    pub events: Vec<EventSpec>,
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
}

impl Scenario {
    /// Parses a scenario file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Checks indices and bounds.
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!((1..=200).contains(&self.nodes), "nodes must be 1..=200");
        ensure!(self.duration_s <= 3600, "duration_s must be at most 3600");
        let node_ok = |n: &usize| *n < self.nodes;
        for s in &self.streams {
            ensure!(
                !s.ingest.is_empty() && s.ingest.iter().all(node_ok),
                "stream {}: bad ingest nodes",
                s.name
            );
            shoal_protocol::stream::Name::new(s.name.as_str())?;
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
            ensure!(
                e.kill.is_none_or(|n| n < self.nodes),
                "event kills an unknown node"
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
            s.check()
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
    }
}
