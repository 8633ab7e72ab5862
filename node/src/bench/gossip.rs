//! `tenure bench gossip`: one node publishes messages of a given size; the benchmark
//! reports the time until every node holds each one (p50, p99), the transport bytes each
//! node sent, and the process's peak memory.
//!
//! Messages are published one at a time, each after the previous one reached every node,
//! so the figure is propagation latency, not queueing behind earlier messages. All nodes
//! run in this process on loopback TCP, sharing this machine's cores.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tenure_overlay::{NetworkId, OverlayConfig, OverlayError, OverlayEvent, OverlayHandle, Topic};
use tokio::sync::mpsc;

use super::{ms, percentile};
use tenure_overlay::localnet;

use crate::process_stats::{mib, rss};

/// How long one message may take to reach everyone before it counts as lost.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// How long the mesh may take to form before the benchmark gives up.
const MESH_DEADLINE: Duration = Duration::from_secs(30);

/// Bytes at the front of each message holding its sequence number.
const SEQ_BYTES: usize = 8;

/// What to measure.
#[derive(Clone, Debug)]
pub struct GossipBenchOptions {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// Size of each message in bytes.
    pub size: usize,
    /// Messages to publish and measure.
    pub messages: usize,
    /// Messages published first and not measured: the network is seconds old when its
    /// mesh forms, and DHT bootstraps and connection churn still run for a while.
    pub warmup: usize,
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct GossipBenchReport {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// Size of each message.
    pub size_bytes: usize,
    /// Messages published.
    pub messages: usize,
    /// Warm-up messages published before measuring.
    pub warmup_messages: usize,
    /// Time until every node held the very first (warm-up) message.
    pub first_message_ms: f64,
    /// Measured messages that reached every node within the deadline.
    pub delivered_to_all: usize,
    /// Median time until every node held a message.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
    /// Slowest message.
    pub max_ms: f64,
    /// Transport bytes sent per node while the messages were published.
    pub bytes_per_node: u64,
    /// Transport bytes sent per node per byte published.
    pub bytes_per_node_per_byte_published: f64,
    /// Peak resident memory of the whole process.
    pub peak_rss_mib: f64,
}

/// Runs the benchmark.
pub async fn run(options: GossipBenchOptions) -> anyhow::Result<GossipBenchReport> {
    anyhow::ensure!(options.nodes >= 2, "the benchmark needs at least 2 nodes");
    anyhow::ensure!(
        options.size >= SEQ_BYTES,
        "messages must be at least {SEQ_BYTES} bytes"
    );
    anyhow::ensure!(options.messages >= 1, "publish at least one message");
    let network = NetworkId::new("bench-gossip")?;
    let tune = |_: &mut OverlayConfig| {};
    let nodes = localnet::start(options.nodes, &network, tune).await?;
    let handles: Vec<OverlayHandle> = nodes.iter().map(|n| n.handle.clone()).collect();
    let (arrivals_tx, mut arrivals) = mpsc::channel::<(u64, Instant)>(65_536);
    for mut node in nodes {
        node.handle
            .subscribe(Topic::Blocks, tenure_overlay::accept_all())
            .await?;
        let tx = arrivals_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = node.events.next().await {
                if let OverlayEvent::Gossip { data, .. } = event {
                    let at = Instant::now();
                    if let Some(seq) = data.first_chunk::<SEQ_BYTES>() {
                        let _ = tx.send((u64::from_be_bytes(*seq), at)).await;
                    }
                }
            }
        });
    }
    drop(arrivals_tx);
    let mut tuned = OverlayConfig::loopback(network);
    tune(&mut tuned);
    let wanted = localnet::reachable_mesh(options.nodes, &tuned);
    localnet::wait_for_mesh(&handles, Topic::Blocks, wanted, MESH_DEADLINE).await?;

    let publisher = handles.first().context("no publisher")?;
    let mut bytes_before = bytes_sent(&handles);
    let mut latencies = Vec::with_capacity(options.messages);
    let mut first_message = None;
    let total = (options.warmup + options.messages) as u64;
    for seq in 0..total {
        if seq == options.warmup as u64 {
            bytes_before = bytes_sent(&handles);
        }
        let message = payload(seq, options.size);
        let published = Instant::now();
        publish(publisher, message).await?;
        let mut holders = 0;
        let mut last = published;
        let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
        while holders < options.nodes - 1 {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((got, at))) if got == seq => {
                    holders += 1;
                    last = last.max(at);
                }
                Ok(Some(_)) => {} // a straggler of an earlier message
                Ok(None) | Err(_) => break,
            }
        }
        let took = last.duration_since(published);
        if seq == 0 {
            first_message = Some(took);
        }
        if seq < options.warmup as u64 {
            continue;
        }
        if holders == options.nodes - 1 {
            latencies.push(took);
        } else {
            eprintln!(
                "message {seq} reached {holders} of {} nodes",
                options.nodes - 1
            );
        }
    }
    let bytes = bytes_sent(&handles).saturating_sub(bytes_before);
    localnet::shutdown(&handles).await;

    let bytes_per_node = bytes / options.nodes as u64;
    let published_bytes = (options.size * options.messages) as f64;
    let figure = |p| percentile(&latencies, p).map_or(f64::NAN, ms);
    Ok(GossipBenchReport {
        nodes: options.nodes,
        size_bytes: options.size,
        messages: options.messages,
        warmup_messages: options.warmup,
        first_message_ms: first_message.map_or(f64::NAN, ms),
        delivered_to_all: latencies.len(),
        p50_ms: figure(50.0),
        p99_ms: figure(99.0),
        max_ms: figure(100.0),
        bytes_per_node,
        bytes_per_node_per_byte_published: bytes_per_node as f64 / published_bytes,
        peak_rss_mib: mib(rss().peak),
    })
}

async fn publish(publisher: &OverlayHandle, message: Vec<u8>) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match publisher.publish(Topic::Blocks, message.clone()).await {
            Err(OverlayError::NoPeersForTopic(_)) if started.elapsed() < MESH_DEADLINE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.context("publishing"),
        }
    }
}

fn bytes_sent(handles: &[OverlayHandle]) -> u64 {
    handles
        .iter()
        .map(|h| h.metrics().snapshot().transport_bytes_out)
        .sum()
}

/// Message `seq`: its number, then incompressible filler (xorshift), so every message
/// has its own content hash.
fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&seq.to_be_bytes());
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

impl GossipBenchReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "gossip: {} nodes, {} messages of {} bytes after {} warm-up ({} reached every node)\n  to all nodes   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (first warm-up message {:.1} ms)\n  sent per node  {} bytes ({:.2} x the bytes published)\n  peak memory    {:.1} MiB (whole process)",
            self.nodes,
            self.messages,
            self.size_bytes,
            self.warmup_messages,
            self.delivered_to_all,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.first_message_ms,
            self.bytes_per_node,
            self.bytes_per_node_per_byte_published,
            self.peak_rss_mib,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_number_and_differ() {
        let a = payload(1, 1000);
        let b = payload(2, 1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a.first_chunk::<8>(), Some(&1u64.to_be_bytes()));
        assert_ne!(a[8..], b[8..]);
    }
}
