//! `shoal-sim run SCENARIO`: a scenario file drives a mesh of real in-process nodes:
//! streams played out from the built-in clip into their ingest node(s), player-like
//! viewers (each with its own loopback IP) arriving over time, timed events, and node
//! capacities. The scenario runs once per balancer it names
//! (Shoal, and the round-robin and MistServer-style baselines in front of nodes that
//! serve everyone), and the report puts them side by side: viewers' startup, stalls and
//! continuity, redirects, and each node's load against its capacity over time.
//!
//! The report also carries mesh figures ([`mesh`]: propagation, origin uploads, bytes
//! between nodes, control bytes) and renders as text, JSON or an HTML page with plots.
//!
//! Nodes may sit in regions: datagrams between them are held for half the RTT of their
//! regions (in userspace, under quinn), gossip from a peer reaches the node that much
//! later (and its ping RTT grows to match), and the report shows how many pulls crossed
//! regions.
//!
//! Events: kill, drain, restart (same identity and ports), join (a node started late)
//! and move_ingest (the encoder pushes into another node).

pub mod balancer;
pub mod file;
pub mod html;
pub mod load;
pub mod mesh;
pub mod report;

use crate::cluster::Cluster;
use crate::delay::DataDelay;
use crate::viewer;
use crate::{playout, table};
use anyhow::Context;
use balancer::Picker;
use file::{Balancer, Scenario};
use load::{Recorder, Sample};
use mesh::MeshRecorder;
use serde_json::{Value, json};
use shoal_node::apparatus::Apparatus;
use shoal_node::control::PeerDelay;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Runs `scenario` once per balancer and returns the report. The top-level `viewers`
/// and `load` are the first run's (Shoal's, when it is listed first).
pub async fn run(scenario: Scenario, key: &str) -> anyhow::Result<Value> {
    scenario.check()?;
    let started = Instant::now();
    let mut runs = Vec::new();
    for &b in &scenario.balancers {
        eprintln!("== {}: balancer {}", scenario.name, b.name());
        runs.push(run_once(&scenario, b, key).await?);
    }
    let first = runs[0].clone();
    Ok(json!({
        "scenario": scenario.name,
        "nodes": scenario.nodes,
        "duration_s": scenario.duration_s,
        "events": first["events"],
        "viewers": first["viewers"],
        "load": first["load"],
        "mesh": first["mesh"],
        "nodes_at_end": first["nodes_at_end"],
        "runs": runs,
        "wall_s": started.elapsed().as_secs_f64(),
    }))
}

/// One run of `scenario` with balancer `balancer`.
async fn run_once(scenario: &Scenario, balancer: Balancer, key: &str) -> anyhow::Result<Value> {
    let fanout = scenario.fanout;
    // Baselines stand in front of nodes that serve everyone: capacity is only measured.
    let enforce = balancer == Balancer::Shoal;
    // Each node's data address and peer id with its region, filled in as nodes start;
    // the delaying sockets and the control plane's delay look them up here.
    let regions: Arc<RwLock<Regions>> = Arc::default();
    let mut cluster = Cluster::start_with(
        scenario.nodes,
        key,
        |i, c| {
            if let Some(k) = fanout {
                c.core.fanout = k;
            }
            if enforce {
                c.core.egress_capacity_bps = scenario.capacity_bps(i);
                c.core.ingest_reserve_bps = scenario.reserve_bps(i);
            }
        },
        |i| {
            let Some(mine) = scenario.region_of(i) else {
                return Apparatus::default();
            };
            let (map, delays) = (regions.clone(), scenario.clone());
            let data = DataDelay::new(move |to| {
                let region = map.read().expect("poisoned").by_addr.get(&to).copied();
                region.map_or(Duration::ZERO, |r| delays.one_way(mine, r))
            });
            let (map, delays) = (regions.clone(), scenario.clone());
            Apparatus {
                data_socket: Some(crate::delay::factory(data)),
                control_delay: Some(PeerDelay::new(move |from| {
                    let region = map.read().expect("poisoned").by_peer.get(from).copied();
                    region.map_or(Duration::ZERO, |r| delays.one_way(r, mine))
                })),
                ..Apparatus::default()
            }
        },
        |i| scenario.joins_later(i),
        |i, node| place(&regions, scenario, i, node),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let initial = cluster.live().count();
    while cluster.live().any(|n| n.summary().peers + 1 < initial) {
        anyhow::ensure!(Instant::now() < deadline, {
            let known: Vec<usize> = cluster.live().map(|n| n.summary().peers).collect();
            format!(
                "the mesh did not form in 60 s: nodes know {}..={} of {} peers",
                known.iter().min().unwrap_or(&0),
                known.iter().max().unwrap_or(&0),
                initial - 1
            )
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let capacity: Vec<u64> = (0..scenario.nodes)
        .map(|i| scenario.capacity_bps(i))
        .collect();
    // By slot; a node that joins later gets its address when it starts.
    let addrs = (0..scenario.nodes)
        .map(|i| {
            cluster
                .node(i)
                .map_or(SocketAddr::from(([127, 0, 0, 1], 9)), |n| n.http_addr())
        })
        .collect();
    let picker = Arc::new(Picker::new(balancer, addrs, capacity.clone()));
    for i in (0..scenario.nodes).filter(|i| scenario.joins_later(*i)) {
        picker.remove(i);
    }
    let poller = tokio::spawn({
        let p = picker.clone();
        async move { p.run_poller().await }
    });
    let t0 = Instant::now();
    let mut encoders = start_encoders(scenario, &cluster, key)?;
    let viewers = start_viewers(scenario, &picker);
    let mut events = scenario.events.clone();
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut events = events.into_iter().peekable();
    let mut log = Vec::new();
    let mut drains: Vec<JoinHandle<()>> = Vec::new();
    let mut recorder = Recorder::new(capacity);
    let names = scenario
        .streams
        .iter()
        .map(|s| shoal_protocol::stream::Name::new(&s.name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut mesh = MeshRecorder::new(names, &cluster);
    let node_regions: Vec<Option<usize>> =
        (0..scenario.nodes).map(|i| scenario.region_of(i)).collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let end = Duration::from_secs(scenario.duration_s);
    let mut last_progress = Instant::now();
    while t0.elapsed() < end {
        tick.tick().await;
        while let Some(e) = events.next_if(|e| t0.elapsed().as_secs_f64() >= e.at_s) {
            let at = t0.elapsed().as_secs_f64();
            if let Some(node) = e.kill {
                stop_encoders(&mut encoders, |enc| enc.node == node);
                picker.remove(node);
                cluster.kill(node).await;
                log.push(json!({"at_s": e.at_s, "event": format!("kill node{node}")}));
                eprintln!("[{at:>5.1}s] killed node{node}");
            }
            if let Some(node) = e.restart.or(e.join) {
                let restart = e.restart.is_some();
                // A restarted ingest node's encoder reconnects once it is back.
                let reconnect = stop_encoders(&mut encoders, |enc| enc.node == node);
                picker.remove(node);
                cluster.kill(node).await;
                let addr = {
                    let n = cluster.launch(node).await?;
                    place(&regions, scenario, node, n);
                    n.http_addr()
                };
                picker.add(node, addr);
                for enc in reconnect {
                    encoders.push(Encoder::start(node, addr, enc.stream, key, Duration::ZERO));
                }
                let what = if restart { "restart" } else { "join" };
                log.push(json!({"at_s": e.at_s, "event": format!("{what} node{node}")}));
                eprintln!("[{at:>5.1}s] {what} node{node}");
            }
            if let (Some(stream), Some(to)) = (&e.move_ingest, e.to) {
                stop_encoders(&mut encoders, |enc| &enc.stream == stream);
                if let Some(n) = cluster.node(to) {
                    let addr = n.http_addr();
                    encoders.push(Encoder::start(
                        to,
                        addr,
                        stream.clone(),
                        key,
                        Duration::ZERO,
                    ));
                }
                log.push(json!({"at_s": e.at_s, "event": format!("move {stream} to node{to}")}));
                eprintln!("[{at:>5.1}s] moved the encoder of {stream} to node{to}");
            }
            if let Some(node) = e.drain {
                picker.remove(node);
                let deadline = Duration::from_secs_f64(e.drain_deadline_s);
                if balancer == Balancer::Shoal {
                    drains.extend(cluster.drain(node, deadline));
                    eprintln!("[{at:>5.1}s] draining node{node}");
                } else {
                    // Without drain, an operator takes the node out of the balancer and
                    // stops it after the same deadline.
                    tokio::time::sleep(deadline).await;
                    cluster.kill(node).await;
                    eprintln!("[{at:>5.1}s] node{node} out of the balancer, stopped");
                }
                log.push(json!({"at_s": e.at_s, "event": format!("drain node{node}")}));
            }
        }
        recorder.push(sample(&cluster, scenario.nodes));
        mesh.sample(&cluster);
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            progress(&cluster, &recorder, t0, end);
        }
    }
    let mut outcomes = Vec::new();
    for v in viewers {
        outcomes.push(v.await?);
    }
    poller.abort();
    for d in drains {
        let _ = d.await;
    }
    let nodes_table = table::Table::new().render(&cluster.indexed());
    stop_encoders(&mut encoders, |_| true);
    let report = json!({
        "balancer": balancer.name(),
        "events": log,
        "viewers": viewer::report::summarize(&outcomes),
        "load": recorder.figures(),
        "mesh": mesh.figures(scenario.nodes, &node_regions),
        "nodes_at_end": nodes_table,
    });
    cluster.stop().await;
    Ok(report)
}

/// An encoder pushing one stream into one node.
struct Encoder {
    node: usize,
    stream: String,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Encoder {
    /// Starts pushing `stream` into `addr` (node `node`) after `delay`.
    fn start(node: usize, addr: SocketAddr, stream: String, key: &str, delay: Duration) -> Self {
        let (name, key) = (stream.clone(), key.to_string());
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            playout::run(addr, name, key).await
        });
        Self { node, stream, task }
    }
}

/// Stops the encoders `which` selects and takes them out of `encoders`; returns them.
fn stop_encoders(encoders: &mut Vec<Encoder>, which: impl Fn(&Encoder) -> bool) -> Vec<Encoder> {
    let (stopped, kept): (Vec<Encoder>, Vec<Encoder>) = encoders.drain(..).partition(&which);
    *encoders = kept;
    for enc in &stopped {
        enc.task.abort();
    }
    stopped
}

/// Encoders: one playout per ingest node; a redundant one starts a second later, so the
/// mesh follows the first.
fn start_encoders(
    scenario: &Scenario,
    cluster: &Cluster,
    key: &str,
) -> anyhow::Result<Vec<Encoder>> {
    let mut encoders = Vec::new();
    for s in &scenario.streams {
        for (i, &node) in s.ingest.iter().enumerate() {
            let addr = cluster.node(node).context("ingest node")?.http_addr();
            let delay = Duration::from_secs(i as u64);
            encoders.push(Encoder::start(node, addr, s.name.clone(), key, delay));
        }
    }
    Ok(encoders)
}

/// Which region each node is in, by data address and by peer id.
#[derive(Debug, Default)]
struct Regions {
    by_addr: HashMap<SocketAddr, usize>,
    by_peer: HashMap<shoal_node::PeerId, usize>,
}

/// Records a started node under its region, for the emulated latency.
fn place(regions: &RwLock<Regions>, scenario: &Scenario, i: usize, node: &shoal_node::Node) {
    if let Some(r) = scenario.region_of(i) {
        let mut regions = regions.write().expect("poisoned");
        regions.by_addr.insert(node.data_addr(), r);
        regions.by_peer.insert(node.peer_id(), r);
    }
}

/// Viewers: each group's arrivals spread over its ramp, each viewer with its own source
/// IP, its first node chosen by the balancer.
fn start_viewers(
    scenario: &Scenario,
    picker: &Arc<Picker>,
) -> Vec<JoinHandle<viewer::client::Outcome>> {
    let watch = Duration::from_secs(scenario.duration_s);
    let mut viewers = Vec::new();
    for v in &scenario.viewers {
        for i in 0..v.count {
            let entry = v.nodes[i % v.nodes.len()];
            let delay = Duration::from_secs_f64(v.start_s + v.ramp_s * i as f64 / v.count as f64);
            let watch_for = watch.saturating_sub(delay);
            let from = viewer::client::viewer_ip(viewers.len());
            let (picker, stream) = (picker.clone(), v.stream.clone());
            viewers.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let url_for = |retry: usize| {
                    let addr = picker.pick(&stream, entry, retry);
                    format!("http://{addr}/live/{stream}/index.m3u8")
                };
                viewer::client::watch(url_for, watch_for, Some(from)).await
            }));
        }
    }
    viewers
}

fn sample(cluster: &Cluster, nodes: usize) -> Vec<Sample> {
    (0..nodes)
        .map(|i| match cluster.node(i) {
            Some(n) => {
                let s = n.summary();
                Sample {
                    egress_bytes: Some(s.egress_bytes),
                    viewer_load_bps: s.viewer_load_bps,
                    viewers: s.viewers,
                }
            }
            None => Sample::default(),
        })
        .collect()
}

fn progress(cluster: &Cluster, recorder: &Recorder, t0: Instant, end: Duration) {
    let viewers: usize = cluster.live().map(|n| n.summary().viewers).sum();
    let load = recorder.latest().map_or("-".to_string(), |(max, mean)| {
        format!("{:.0}% max, {:.0}% mean", max * 100.0, mean * 100.0)
    });
    eprintln!(
        "[{:>5.1}s / {}s] nodes {}, viewers {viewers}, load {load}",
        t0.elapsed().as_secs_f64(),
        end.as_secs(),
        cluster.live().count(),
    );
}
