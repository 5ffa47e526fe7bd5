//! Many real nodes in one process: the first starts alone, the others join through it.

use anyhow::Context;
use shoal_node::apparatus::Apparatus;
use shoal_node::{Node, NodeConfig};
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A set of nodes (a killed node leaves an empty slot) and their scratch directory.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<Option<Node>>,
    /// Each slot's configuration (bootstrap aside) and apparatus, to start it again; a node that ran
    /// keeps its HTTP and data-plane addresses, as on a real host.
    configs: Vec<(NodeConfig, Apparatus)>,
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
        Self::start_with(
            count,
            key,
            configure,
            |_| Apparatus::default(),
            |_| false,
            |_, _| {},
        )
        .await
    }

    /// As [`Cluster::start`], with `apparatus` between each node and the network (the
    /// simulator's delays), leaving the slots `later` says empty (start them with
    /// [`Cluster::launch`]), and calling `started` with each node as soon as it runs
    /// (before the next one starts).
    pub async fn start_with(
        count: usize,
        key: &str,
        configure: impl Fn(usize, &mut NodeConfig),
        apparatus: impl Fn(usize) -> Apparatus,
        later: impl Fn(usize) -> bool,
        started: impl Fn(usize, &Node),
    ) -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!("shoal-sim-{}", std::process::id()));
        let mut cluster = Self {
            nodes: Vec::with_capacity(count),
            configs: Vec::with_capacity(count),
            root,
        };
        for i in 0..count {
            let mut config = NodeConfig::loopback(cluster.root.join(format!("node{i}")));
            config.ingest_keys = vec![key.to_string()];
            configure(i, &mut config);
            cluster.configs.push((config, apparatus(i)));
            cluster.nodes.push(None);
            if !later(i) {
                started(i, cluster.launch(i).await?);
            }
        }
        Ok(cluster)
    }

    /// Starts the node of empty slot `i` (again: a restarted node keeps its data dir, so
    /// its identity), joining through the first live node.
    pub async fn launch(&mut self, i: usize) -> anyhow::Result<&Node> {
        anyhow::ensure!(i < self.configs.len(), "no slot {i}");
        anyhow::ensure!(self.nodes[i].is_none(), "node {i} is running");
        let (mut config, apparatus) = self.configs[i].clone();
        config.bootstrap = self.live().next().map(Node::p2p_addrs).unwrap_or_default();
        // A stopped node's sockets close as its last tasks end: wait a little for its
        // ports, then take new ones (its viewers then come back through a front end).
        let mut attempt = 0;
        let node = loop {
            match Node::start_with(config.clone(), apparatus.clone()).await {
                Ok(node) => break node,
                Err(shoal_node::node::StartError::Bind { .. }) if attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(shoal_node::node::StartError::Bind { .. }) => {
                    config.http.set_port(0);
                    config.data.set_port(0);
                    break Node::start(config)
                        .await
                        .with_context(|| format!("starting node {i}"))?;
                }
                Err(e) => return Err(e).with_context(|| format!("starting node {i}")),
            }
        };
        self.configs[i].0.http = node.http_addr();
        self.configs[i].0.data = node.data_addr();
        Ok(self.nodes[i].insert(node))
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
