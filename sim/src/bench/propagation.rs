//! Propagation: from the end of an ingest PUT until every node of an N-node mesh holds
//! the segment, with every node watching (prefetching), against the fan-out tree's
//! lower bound measured in the same run.

use super::{KEY, ms, payload, percentile};
use crate::cluster::Cluster;
use crate::http::{get, push_segment};
use anyhow::bail;
use serde_json::{Value, json};
use shoal_protocol::stream;
use std::time::{Duration, Instant};

/// Pushes `segments` segments of `size` bytes into node 0 of an `nodes`-node mesh with
/// fan-out `fanout`, one per second, and measures when each node holds each.
pub async fn run(
    nodes: usize,
    segments: usize,
    size: usize,
    fanout: usize,
) -> anyhow::Result<Value> {
    let cluster = Cluster::start(nodes, KEY, |_, c| c.core.fanout = fanout).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.live().any(|n| n.summary().peers + 1 < nodes) {
        if Instant::now() > deadline {
            bail!("the {nodes}-node mesh did not form");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = stream::Name::new("prop").expect("valid");
    let live: Vec<&shoal_node::Node> = cluster.live().collect();
    let origin = live[0];
    let mut delays = Vec::new();
    let mut first_hop = Vec::new();
    let mut uploads = Vec::new();
    let mut announce_delays = Vec::new();
    // Warm-up, not measured: the stream exists (segment 0), every other node has
    // learned of it and has a viewer (nodes track no viewers of unknown streams).
    push_segment(origin.http_addr(), KEY, "prop", "p0.ts", &payload(size, 0)).await?;
    let wait = Instant::now() + Duration::from_secs(30);
    for n in &live[1..] {
        while get(n.http_addr(), "/live/prop/index.m3u8")
            .await
            .map_or(true, |r| r.status != 200)
        {
            if Instant::now() > wait {
                bail!("the stream did not reach every node");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while live[1..]
        .iter()
        .any(|n| n.segment_info(&name, 0).is_none_or(|i| i.held_at.is_none()))
    {
        if Instant::now() > wait {
            bail!("the warm-up segment did not reach every node");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for seq in 1..=segments as u64 {
        // Every other node has a viewer: it prefetches on announcement.
        for n in &live[1..] {
            let _ = get(n.http_addr(), "/live/prop/index.m3u8").await;
        }
        let bytes = payload(size, seq);
        push_segment(
            origin.http_addr(),
            KEY,
            "prop",
            &format!("p{seq}.ts"),
            &bytes,
        )
        .await?;
        let put_done = Instant::now();
        let wait = put_done + Duration::from_secs(30);
        let arrivals = loop {
            let held: Vec<_> = live[1..]
                .iter()
                .map(|n| {
                    n.segment_info(&name, seq)
                        .and_then(|i| i.held_at.map(|t| (t, i.from, i.announced_at)))
                })
                .collect();
            if held.iter().all(Option::is_some) {
                break held.into_iter().flatten().collect::<Vec<_>>();
            }
            if Instant::now() > wait {
                bail!("segment {seq} did not reach every node");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        for (at, from, announced) in arrivals {
            let d = ms(at.saturating_duration_since(put_done));
            delays.push(d);
            if let Some(a) = announced {
                // Gossip's share: when the node learned of the segment.
                announce_delays.push(ms(a.saturating_duration_since(put_done)));
            }
            if from == Some(origin.peer_id()) {
                first_hop.push(d);
            }
        }
        uploads.push(origin.segment_info(&name, seq).map_or(0, |i| i.uploads));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cluster.stop().await;
    // A tree of fan-out K reaches (K+1)^h nodes after h hops.
    let hops = ((nodes as f64).ln() / ((fanout + 1) as f64).ln())
        .ceil()
        .max(1.0);
    let per_hop = percentile(&first_hop, 50.0);
    Ok(json!({
        "bench": "propagation",
        "nodes": nodes,
        "fanout": fanout,
        "segment_bytes": size,
        "segments": segments,
        "p50_ms": percentile(&delays, 50.0),
        "p99_ms": percentile(&delays, 99.0),
        "announced_p50_ms": percentile(&announce_delays, 50.0),
        "announced_p99_ms": percentile(&announce_delays, 99.0),
        "max_ms": percentile(&delays, 100.0),
        "origin_uploads_per_segment_max": uploads.iter().max(),
        "origin_uploads_per_segment": uploads,
        "hops": hops,
        "per_hop_ms": per_hop,
        "lower_bound_ms": hops * per_hop,
    }))
}
