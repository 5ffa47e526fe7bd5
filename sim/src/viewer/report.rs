//! Aggregates viewers' outcomes: startup percentiles, stalls, continuity, redirects.

use super::client::Outcome;
use crate::bench::{ms, percentile};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The crowd's figures as JSON.
pub fn summarize(outcomes: &[Outcome]) -> Value {
    let startups: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.figures.startup.map(ms))
        .collect();
    let segments: u32 = outcomes.iter().map(|o| o.figures.segments).sum();
    let on_time: u32 = outcomes.iter().map(|o| o.figures.on_time).sum();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for o in outcomes {
        if let Some(node) = o.node {
            *per_node.entry(node.to_string()).or_default() += 1;
        }
    }
    json!({
        "viewers": outcomes.len(),
        "started": startups.len(),
        "startup_p50_ms": percentile(&startups, 50.0),
        "startup_p95_ms": percentile(&startups, 95.0),
        "startup_p99_ms": percentile(&startups, 99.0),
        "stalls": outcomes.iter().map(|o| o.figures.stalls).sum::<u32>(),
        "stalled_s": outcomes.iter().map(|o| o.figures.stalled_for.as_secs_f64()).sum::<f64>(),
        "segments": segments,
        "continuity": if segments == 0 { 0.0 } else { on_time as f64 / segments as f64 },
        "redirects": outcomes.iter().map(|o| o.redirects).sum::<u32>(),
        "errors": outcomes.iter().map(|o| o.errors).sum::<u32>(),
        "refused": outcomes.iter().map(|o| o.refused).sum::<u32>(),
        "rejoins": outcomes.iter().map(|o| o.rejoins).sum::<u32>(),
        "viewers_per_node": per_node,
    })
}
