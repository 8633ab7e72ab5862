//! Harness for Tenure's cross-crate tests: real overlay nodes on loopback TCP, built in
//! one line, with helpers to wait for a condition without timing assertions.
//!
//! Waits are bounded (they fail the test after a generous deadline) but never measure:
//! a slow shared machine makes a test slower, not red.

pub mod lossy_fs;
pub mod producer_sim;
pub mod sim;

use std::{future::Future, time::Duration};

use anyhow::{Context, bail};
use tenure_overlay::{
    NetworkId, NodeKey, OverlayConfig, OverlayEvent, OverlayEvents, OverlayHandle, Topic, localnet,
};
use tokio::sync::mpsc;

/// Generous bound for anything a loopback mesh should do in a second or two.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub use tenure_overlay::localnet::LocalNode as TestNode;

/// A loopback configuration for `network`, bootstrapping from `bootstrap`.
pub fn config(
    network: &str,
    bootstrap: &[tenure_overlay::Multiaddr],
) -> anyhow::Result<OverlayConfig> {
    Ok(localnet::loopback_config(
        &NetworkId::new(network)?,
        bootstrap,
    ))
}

/// Starts one node with `config`.
pub async fn start_node(config: OverlayConfig) -> anyhow::Result<TestNode> {
    let (handle, events) = tenure_overlay::spawn(config, NodeKey::generate()).await?;
    Ok(TestNode { handle, events })
}

/// Starts `n` nodes on `network`; the first is the bootstrap node of all others.
pub async fn start_nodes(n: usize, network: &str) -> anyhow::Result<Vec<TestNode>> {
    Ok(localnet::start(n, &NetworkId::new(network)?, |_| {}).await?)
}

/// Polls `check` every 50 ms until it returns true, failing after [`DEADLINE`].
pub async fn wait_for<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !check().await {
        if started.elapsed() > DEADLINE {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until every node's mesh on `topic` holds at least `min_mesh` peers.
pub async fn wait_for_mesh(
    handles: &[OverlayHandle],
    topic: Topic,
    min_mesh: usize,
) -> anyhow::Result<()> {
    Ok(localnet::wait_for_mesh(handles, topic, min_mesh, DEADLINE).await?)
}

/// A gossip message as a collector saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Index of the receiving node.
    pub node: usize,
    /// The topic.
    pub topic: Topic,
    /// The content.
    pub data: Vec<u8>,
}

/// Drains every node's events on its own task, forwarding gossip to one channel and
/// dropping the rest. Returns the handles and the gossip receiver.
pub fn collect_gossip(nodes: Vec<TestNode>) -> (Vec<OverlayHandle>, mpsc::Receiver<Received>) {
    let (tx, rx) = mpsc::channel(65_536);
    let handles = nodes.iter().map(|n| n.handle.clone()).collect();
    for (index, mut node) in nodes.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = node.events.next().await {
                if let OverlayEvent::Gossip { topic, data, .. } = event {
                    let _ = tx
                        .send(Received {
                            node: index,
                            topic,
                            data,
                        })
                        .await;
                }
            }
        });
    }
    (handles, rx)
}

/// Starts `n` nodes subscribed to `topic` (accepting everything), waits until every mesh
/// reached its lower bound, and collects their gossip.
pub async fn start_gossip_mesh(
    n: usize,
    network: &str,
    topic: Topic,
) -> anyhow::Result<(Vec<OverlayHandle>, mpsc::Receiver<Received>)> {
    let nodes = start_nodes(n, network).await?;
    for node in &nodes {
        node.handle
            .subscribe(topic, tenure_overlay::accept_all())
            .await?;
    }
    let (handles, received) = collect_gossip(nodes);
    let floor = tenure_overlay::GossipParams::default().mesh_n_low;
    wait_for_mesh(&handles, topic, floor.min(n.saturating_sub(1))).await?;
    Ok((handles, received))
}

/// Publishes, retrying while the mesh is still forming (subscriptions not yet exchanged).
pub async fn publish_when_ready(
    handle: &OverlayHandle,
    topic: Topic,
    data: Vec<u8>,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    loop {
        match handle.publish(topic, data.clone()).await {
            Ok(()) => return Ok(()),
            Err(tenure_overlay::OverlayError::NoPeersForTopic(_))
                if started.elapsed() < DEADLINE =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("publish"),
        }
    }
}

/// Waits for the next event matching `pick` on `events`, failing after [`DEADLINE`].
pub async fn next_matching<T>(
    events: &mut OverlayEvents,
    mut pick: impl FnMut(OverlayEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let wait = async {
        while let Some(event) = events.next().await {
            if let Some(found) = pick(event) {
                return Ok(found);
            }
        }
        bail!("overlay shut down before the expected event")
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .context("timed out waiting for an event")?
}
