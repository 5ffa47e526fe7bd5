//! The demo's live table: one row per node, refreshed in place on a terminal.

use shoal_node::Node;
use std::fmt::Write;
use std::time::Instant;

/// Renders rows and remembers egress counters to turn them into rates.
pub struct Table {
    last: Option<(Instant, Vec<u64>)>,
}

fn short(id: &impl ToString) -> String {
    let s = id.to_string();
    format!("..{}", &s[s.len().saturating_sub(6)..])
}

fn rate(bits_per_s: f64) -> String {
    match bits_per_s {
        r if r >= 1e9 => format!("{:.1} Gbit/s", r / 1e9),
        r if r >= 1e6 => format!("{:.1} Mbit/s", r / 1e6),
        r if r >= 1e3 => format!("{:.0} kbit/s", r / 1e3),
        r => format!("{r:.0} bit/s"),
    }
}

impl Table {
    /// A table with no history.
    pub fn new() -> Self {
        Self { last: None }
    }

    /// The table for `nodes` (with their start index) now.
    pub fn render(&mut self, nodes: &[(usize, &Node)]) -> String {
        let now = Instant::now();
        let summaries: Vec<_> = nodes.iter().map(|(_, n)| n.summary()).collect();
        let egress: Vec<u64> = summaries.iter().map(|s| s.egress_bytes).collect();
        // A rate needs an earlier sample of the same nodes; until then it is unknown.
        let rates: Vec<Option<f64>> = match &self.last {
            Some((at, before)) if before.len() == egress.len() => {
                let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                egress
                    .iter()
                    .zip(before)
                    .map(|(e, b)| Some(e.saturating_sub(*b) as f64 * 8.0 / secs))
                    .collect()
            }
            _ => vec![None; nodes.len()],
        };
        self.last = Some((now, egress));
        let names: Vec<(shoal_node::PeerId, String)> = nodes
            .iter()
            .map(|(i, n)| (n.peer_id(), format!("node{i}")))
            .collect();
        let name_of = |p: &shoal_node::PeerId| {
            names
                .iter()
                .find(|(id, _)| id == p)
                .map_or_else(|| short(p), |(_, n)| n.clone())
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<7} {:<9} {:>5} {:>7} {:>7} {:>12} {:>8}  segments came from",
            "node", "peer id", "peers", "streams", "viewers", "egress", "held"
        );
        for (row, ((i, node), s)) in nodes.iter().zip(&summaries).enumerate() {
            let sources: Vec<String> = s
                .sources
                .iter()
                .map(|(p, n)| match p {
                    None => format!("encoder:{n}"),
                    Some(p) => format!("{}:{n}", name_of(p)),
                })
                .collect();
            let _ = writeln!(
                out,
                "{:<7} {:<9} {:>5} {:>7} {:>7} {:>12} {:>8}  {}",
                format!("node{i}"),
                short(&node.peer_id()),
                s.peers,
                s.streams,
                s.viewers,
                rates
                    .get(row)
                    .copied()
                    .flatten()
                    .map_or_else(|| "-".to_string(), rate),
                s.segments,
                sources.join(" ")
            );
        }
        out
    }
}
