//! Many real nodes in one process: the first starts alone, the others join through it.

use anyhow::Context;
use shoal_node::{Node, NodeConfig};
use std::path::PathBuf;

/// A set of running nodes and their scratch directory.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    root: PathBuf,
}

impl Cluster {
    /// Starts `count` loopback nodes accepting `key` for ingest; `configure` adjusts each
    /// node's configuration.
    pub async fn start(
        count: usize,
        key: &str,
        configure: impl Fn(&mut NodeConfig),
    ) -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!("shoal-sim-{}", std::process::id()));
        let mut nodes: Vec<Node> = Vec::with_capacity(count);
        for i in 0..count {
            let mut config = NodeConfig::loopback(root.join(format!("node{i}")));
            config.ingest_keys = vec![key.to_string()];
            configure(&mut config);
            if let Some(first) = nodes.first() {
                config.bootstrap = first.p2p_addrs();
            }
            let node = Node::start(config)
                .await
                .with_context(|| format!("starting node {i}"))?;
            nodes.push(node);
        }
        Ok(Self { nodes, root })
    }

    /// Stops every node and removes the scratch directory.
    pub async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
