//! `shoal-sim run SCENARIO`: a scenario file drives a mesh of real in-process nodes:
//! streams played out from the built-in clip into their ingest node(s), player-like
//! viewers arriving on chosen nodes, and timed events (a node killed). The report gives
//! the viewers' startup, stalls and continuity, and where each node's segments came from.
//!
//! Not yet: per-region latency, capacities, drain and moved-ingest events, HTML plots.

pub mod file;

use crate::cluster::Cluster;
use crate::viewer;
use crate::{playout, table};
use anyhow::Context;
use file::Scenario;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Runs `scenario` and returns its report.
pub async fn run(scenario: Scenario, key: &str) -> anyhow::Result<Value> {
    scenario.check()?;
    let fanout = scenario.fanout;
    let mut cluster = Cluster::start(scenario.nodes, key, |c| {
        if let Some(k) = fanout {
            c.core.fanout = k;
        }
    })
    .await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    while cluster
        .live()
        .any(|n| n.summary().peers + 1 < scenario.nodes)
    {
        anyhow::ensure!(Instant::now() < deadline, "the mesh did not form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t0 = Instant::now();
    // Encoders: one playout per ingest node; a redundant one starts a second later, so
    // the mesh follows the first.
    let mut encoders: Vec<(usize, JoinHandle<anyhow::Result<()>>)> = Vec::new();
    for s in &scenario.streams {
        for (i, &node) in s.ingest.iter().enumerate() {
            let addr = cluster.node(node).context("ingest node")?.http_addr();
            let (name, key) = (s.name.clone(), key.to_string());
            let delay = Duration::from_secs(i as u64);
            encoders.push((
                node,
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    playout::run(addr, name, key).await
                }),
            ));
        }
    }
    let watch = Duration::from_secs(scenario.duration_s);
    let mut viewers = Vec::new();
    for v in &scenario.viewers {
        for i in 0..v.count {
            let node = v.nodes[i % v.nodes.len()];
            let addr = cluster.node(node).context("viewer node")?.http_addr();
            let url = format!("http://{addr}/live/{}/index.m3u8", v.stream);
            let delay = Duration::from_secs_f64(v.start_s + v.ramp_s * i as f64 / v.count as f64);
            let watch_for = watch.saturating_sub(delay);
            viewers.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                viewer::client::watch(&url, watch_for).await
            }));
        }
    }
    let mut events = scenario.events.clone();
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut log = Vec::new();
    for e in events {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(e.at_s)).into()).await;
        if let Some(node) = e.kill {
            for (n, enc) in &encoders {
                if *n == node {
                    enc.abort();
                }
            }
            cluster.kill(node).await;
            log.push(json!({"at_s": e.at_s, "event": format!("kill node{node}")}));
            eprintln!("[{:>5.1}s] killed node{node}", t0.elapsed().as_secs_f64());
        }
    }
    let mut outcomes = Vec::new();
    for v in viewers {
        outcomes.push(v.await?);
    }
    let nodes_table = table::Table::new().render(&cluster.indexed());
    for (_, enc) in &encoders {
        enc.abort();
    }
    let report = json!({
        "scenario": scenario.name,
        "nodes": scenario.nodes,
        "duration_s": scenario.duration_s,
        "events": log,
        "viewers": viewer::report::summarize(&outcomes),
        "nodes_at_end": nodes_table,
        "wall_s": start.elapsed().as_secs_f64(),
    });
    cluster.stop().await;
    Ok(report)
}
