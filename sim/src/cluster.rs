//! Many real nodes in one process: the first starts alone, the others join through it.

use anyhow::Context;
use shoal_node::{Node, NodeConfig};
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A set of nodes (a killed node leaves an empty slot) and their scratch directory.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<Option<Node>>,
    root: PathBuf,
}

impl Cluster {
    /// Starts `count` loopback nodes accepting `key` for ingest; `configure` adjusts each
    /// node's configuration.
    pub async fn start(
        count: usize,
        key: &str,
        configure: impl Fn(usize, &mut NodeConfig),
    ) -> anyhow::Result<Self> {
        Self::start_with(count, key, configure, |_, _| {}).await
    }

    /// As [`Cluster::start`], and calls `started` with each node as soon as it runs
    /// (before the next one starts).
    pub async fn start_with(
        count: usize,
        key: &str,
        configure: impl Fn(usize, &mut NodeConfig),
        started: impl Fn(usize, &Node),
    ) -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!("shoal-sim-{}", std::process::id()));
        let mut nodes: Vec<Option<Node>> = Vec::with_capacity(count);
        for i in 0..count {
            let mut config = NodeConfig::loopback(root.join(format!("node{i}")));
            config.ingest_keys = vec![key.to_string()];
            configure(i, &mut config);
            if let Some(Some(first)) = nodes.first() {
                config.bootstrap = first.p2p_addrs();
            }
            let node = Node::start(config)
                .await
                .with_context(|| format!("starting node {i}"))?;
            started(i, &node);
            nodes.push(Some(node));
        }
        Ok(Self { nodes, root })
    }

    /// Node `i`, if alive.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i)?.as_ref()
    }

    /// The live nodes.
    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// The live nodes with their start index (their name is `node{index}`).
    pub fn indexed(&self) -> Vec<(usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((i, n.as_ref()?)))
            .collect()
    }

    /// Stops node `i` at once.
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i).and_then(Option::take) {
            node.shutdown().await;
        }
    }

    /// Drains node `i` in the background (it leaves its slot at once; it keeps serving
    /// its viewers until the drain ends). The task ends when the node has stopped.
    pub fn drain(&mut self, i: usize, deadline: Duration) -> Option<JoinHandle<()>> {
        let node = self.nodes.get_mut(i).and_then(Option::take)?;
        Some(tokio::spawn(node.drain(deadline)))
    }

    /// Stops every node and removes the scratch directory.
    pub async fn stop(self) {
        for node in self.nodes.into_iter().flatten() {
            node.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
