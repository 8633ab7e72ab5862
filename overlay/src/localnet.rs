//! A local network of overlay nodes inside one process, on loopback TCP: the one
//! launcher of the workspace, used by `tenure testnet`, the benchmarks and the
//! multi-node tests. The first node is the bootstrap address of all the others, which
//! find each other from there.
//!
//! Waits are bounded by a deadline the caller gives; they fail with what was seen
//! rather than hang.

use std::time::Duration;

use crate::{NetworkId, NodeKey, OverlayConfig, OverlayError, OverlayEvents, OverlayHandle, Topic};

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(50);

/// One node of a local network.
pub struct LocalNode {
    /// Handle to the node.
    pub handle: OverlayHandle,
    /// Its events; whoever runs the node must drain them.
    pub events: OverlayEvents,
}

/// Why a local network did not come up as asked.
#[derive(Debug, thiserror::Error)]
pub enum LocalNetError {
    /// A network of no nodes.
    #[error("a local network needs at least one node")]
    Empty,
    /// A node did not start.
    #[error("starting node {index}: {source}")]
    Start {
        /// Which node.
        index: usize,
        /// Why.
        source: OverlayError,
    },
    /// The gossip mesh did not reach its degree in time.
    #[error("the mesh did not form within {deadline:?}: sizes {sizes:?}, wanted {wanted}")]
    Mesh {
        /// The deadline.
        deadline: Duration,
        /// Each node's mesh size at the end.
        sizes: Vec<usize>,
        /// The degree waited for.
        wanted: usize,
    },
    /// Nodes did not connect to enough peers in time.
    #[error("nodes did not connect within {deadline:?}: peers {peers:?}, wanted {wanted}")]
    Peers {
        /// The deadline.
        deadline: Duration,
        /// Each node's peer count at the end.
        peers: Vec<usize>,
        /// The count waited for.
        wanted: usize,
    },
}

/// The configuration of a loopback node on `network` bootstrapping from `bootstrap`:
/// discovery runs every 500 ms, so a local network forms in about a second.
pub fn loopback_config(network: &NetworkId, bootstrap: &[crate::Multiaddr]) -> OverlayConfig {
    let mut config = OverlayConfig::loopback(network.clone());
    config.bootstrap_peers = bootstrap.to_vec();
    config.discovery_interval = Duration::from_millis(500);
    config
}

/// Starts `n` nodes on `network`; `tune` adjusts each node's configuration.
pub async fn start(
    n: usize,
    network: &NetworkId,
    tune: impl Fn(&mut OverlayConfig),
) -> Result<Vec<LocalNode>, LocalNetError> {
    start_keyed((0..n).map(|_| NodeKey::generate()).collect(), network, tune).await
}

/// Starts one node per key in `keys` (a node restarted with its key keeps its peer
/// id); `tune` adjusts each node's configuration.
pub async fn start_keyed(
    keys: Vec<NodeKey>,
    network: &NetworkId,
    tune: impl Fn(&mut OverlayConfig),
) -> Result<Vec<LocalNode>, LocalNetError> {
    if keys.is_empty() {
        return Err(LocalNetError::Empty);
    }
    let mut nodes: Vec<LocalNode> = Vec::with_capacity(keys.len());
    for (index, key) in keys.into_iter().enumerate() {
        let mut config = loopback_config(network, &bootstrap_of(index, &nodes));
        tune(&mut config);
        let (handle, events) = crate::spawn(config, key)
            .await
            .map_err(|source| LocalNetError::Start { index, source })?;
        nodes.push(LocalNode { handle, events });
    }
    Ok(nodes)
}

/// The bootstrap addresses of the node started `index`-th: the first node, the one
/// halfway and the one just before. With the first node alone, a hundred nodes
/// dialling it at once overran its pending-connection limit and some never joined.
fn bootstrap_of(index: usize, started: &[LocalNode]) -> Vec<crate::Multiaddr> {
    let mut picks = vec![0, index / 2, index.saturating_sub(1)];
    picks.sort_unstable();
    picks.dedup();
    picks
        .into_iter()
        .filter(|i| *i < index)
        .filter_map(|i| started.get(i))
        .flat_map(|node| node.handle.listen_addrs().to_vec())
        .collect()
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
) -> Result<(), LocalNetError> {
    let started = tokio::time::Instant::now();
    loop {
        let sizes = mesh_sizes(handles, topic).await;
        if sizes.iter().all(|s| *s >= min) {
            return Ok(());
        }
        if started.elapsed() >= deadline {
            return Err(LocalNetError::Mesh {
                deadline,
                sizes,
                wanted: min,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every node is connected to at least `min` peers, or `deadline` passes.
pub async fn wait_for_peers(
    handles: &[OverlayHandle],
    min: usize,
    deadline: Duration,
) -> Result<(), LocalNetError> {
    let started = tokio::time::Instant::now();
    loop {
        let mut peers = Vec::with_capacity(handles.len());
        for handle in handles {
            peers.push(handle.status().await.map_or(0, |s| s.peers.len()));
        }
        if peers.iter().all(|p| *p >= min) {
            return Ok(());
        }
        if started.elapsed() >= deadline {
            return Err(LocalNetError::Peers {
                deadline,
                peers,
                wanted: min,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Shuts every node down.
pub async fn shutdown(handles: &[OverlayHandle]) {
    for handle in handles {
        handle.shutdown().await;
    }
}
