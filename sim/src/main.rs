//! `shoal-sim`: runs many real Shoal nodes in one process on loopback.
//!
//! `shoal-sim mesh --nodes N` starts N nodes (the real runtime: libp2p, quinn, HTTP),
//! the first alone and the rest joining through it, prints each node's addresses and
//! then one line per node per interval: peers known, streams held, segments stored.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_node::{Node, NodeConfig};
use std::time::Duration;

/// Runs and measures many Shoal nodes on one machine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local mesh of real nodes on 127.0.0.1 and report on it until Ctrl-C.
    Mesh {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Ingest key every node accepts.
        #[arg(long, default_value = "sim-key")]
        ingest_key: String,
        /// Seconds between reports.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Cmd::Mesh {
            nodes,
            ingest_key,
            interval,
        } => {
            mesh(
                nodes.max(1),
                ingest_key,
                Duration::from_secs(interval.max(1)),
            )
            .await
        }
    }
}

async fn mesh(count: usize, key: String, interval: Duration) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("shoal-sim-{}", std::process::id()));
    let mut nodes: Vec<Node> = Vec::with_capacity(count);
    for i in 0..count {
        let mut config = NodeConfig::loopback(root.join(format!("node{i}")));
        config.ingest_keys = vec![key.clone()];
        if let Some(first) = nodes.first() {
            config.bootstrap = first.p2p_addrs();
        }
        let node = Node::start(config)
            .await
            .with_context(|| format!("starting node {i}"))?;
        println!(
            "node{i} {} http://{}  (ingest: PUT http://{}/ingest/STREAM/index.m3u8 with Bearer {key})",
            node.peer_id(),
            node.http_addr(),
            node.http_addr()
        );
        nodes.push(node);
    }
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                for (i, node) in nodes.iter().enumerate() {
                    let s = node.summary();
                    println!(
                        "node{i}: peers={} streams={} segments={} egress={}B",
                        s.peers, s.streams, s.segments, s.egress_bytes
                    );
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
