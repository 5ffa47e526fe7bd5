//! Time to first byte for a viewer: on a node that must first pull the segment from a
//! peer, against the same node once it holds it.

use super::{KEY, ms, payload, percentile};
use crate::cluster::Cluster;
use crate::http::{get, push_segment};
use anyhow::{bail, ensure};
use serde_json::{Value, json};
use shoal_protocol::stream;
use std::time::{Duration, Instant};

/// `iterations` fresh streams of one `size`-byte segment each, ingested at node A; each
/// is fetched cold and then warm from node B.
pub async fn run(iterations: usize, size: usize) -> anyhow::Result<Value> {
    let cluster = Cluster::start(2, KEY, |_, _| {}).await?;
    let live: Vec<&shoal_node::Node> = cluster.live().collect();
    let (a, b) = (live[0], live[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.summary().peers < 1 {
        if Instant::now() > deadline {
            bail!("the two nodes did not find each other");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut cold, mut warm, mut cold_total) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        let name = format!("fb{i}");
        push_segment(a.http_addr(), KEY, &name, "s.ts", &payload(size, i as u64)).await?;
        let stream = stream::Name::new(name.as_str()).expect("valid");
        let wait = Instant::now() + Duration::from_secs(10);
        while b.segment_info(&stream, 0).is_none() {
            if Instant::now() > wait {
                bail!("node B never learned of {name}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let path = format!("/live/{name}/0.ts");
        let first = get(b.http_addr(), &path).await?;
        let second = get(b.http_addr(), &path).await?;
        ensure!(first.status == 200 && second.status == 200 && first.body.len() == size);
        cold.push(ms(first.first_byte));
        cold_total.push(ms(first.total));
        warm.push(ms(second.first_byte));
    }
    cluster.stop().await;
    Ok(json!({
        "bench": "first_byte",
        "segment_bytes": size,
        "iterations": iterations,
        "cold_p50_ms": percentile(&cold, 50.0),
        "cold_p90_ms": percentile(&cold, 90.0),
        "cold_total_p50_ms": percentile(&cold_total, 50.0),
        "warm_p50_ms": percentile(&warm, 50.0),
        "warm_p90_ms": percentile(&warm, 90.0),
        "ratio_p50": percentile(&cold, 50.0) / percentile(&warm, 50.0),
    }))
}
