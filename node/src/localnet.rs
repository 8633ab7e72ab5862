//! A local network of overlay nodes inside this process, on loopback TCP: the first
//! node is the bootstrap address of all the others, which find each other from there.

use std::time::Duration;

use anyhow::Context;
use tenure_overlay::{NetworkId, NodeKey, OverlayConfig, OverlayEvents, OverlayHandle, Topic};

/// One node of a local network.
pub struct LocalNode {
    /// Handle to the node.
    pub handle: OverlayHandle,
    /// Its events; whoever runs the node must drain them.
    pub events: OverlayEvents,
}

/// Starts `n` nodes on `network`; `tune` adjusts each node's configuration.
pub async fn start(
    n: usize,
    network: &NetworkId,
    tune: impl Fn(&mut OverlayConfig),
) -> anyhow::Result<Vec<LocalNode>> {
    anyhow::ensure!(n >= 1, "a local network needs at least one node");
    let mut nodes: Vec<LocalNode> = Vec::with_capacity(n);
    let mut bootstrap = Vec::new();
    for index in 0..n {
        let mut config = OverlayConfig::loopback(network.clone());
        config.bootstrap_peers = bootstrap.clone();
        config.discovery_interval = Duration::from_millis(500);
        tune(&mut config);
        let (handle, events) = tenure_overlay::spawn(config, NodeKey::generate())
            .await
            .with_context(|| format!("starting node {index}"))?;
        if index == 0 {
            bootstrap = handle.listen_addrs().to_vec();
        }
        nodes.push(LocalNode { handle, events });
    }
    Ok(nodes)
}

/// The mesh degree a node of an `n`-node network can reach on a topic: the configured
/// lower bound, or everyone else when the network is smaller than that.
pub fn reachable_mesh(n: usize, config: &OverlayConfig) -> usize {
    config.gossip.mesh_n_low.min(n.saturating_sub(1))
}

/// Mesh size of each node on `topic` (0 for a node that did not answer).
pub async fn mesh_sizes(handles: &[OverlayHandle], topic: Topic) -> Vec<usize> {
    let mut sizes = Vec::with_capacity(handles.len());
    for handle in handles {
        let size = match handle.status().await {
            Ok(status) => status.mesh.get(topic.name()).copied().unwrap_or(0),
            Err(_) => 0,
        };
        sizes.push(size);
    }
    sizes
}

/// Waits until every node's mesh on `topic` holds `min` peers, or `deadline` passes.
pub async fn wait_for_mesh(
    handles: &[OverlayHandle],
    topic: Topic,
    min: usize,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    loop {
        let sizes = mesh_sizes(handles, topic).await;
        if sizes.iter().all(|s| *s >= min) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "the mesh did not form within {deadline:?}: sizes {sizes:?}, wanted {min}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shuts every node down.
pub async fn shutdown(handles: &[OverlayHandle]) {
    for handle in handles {
        handle.shutdown().await;
    }
}
