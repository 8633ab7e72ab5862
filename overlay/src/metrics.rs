//! Counters for peers, messages and bytes, on one Prometheus registry per node.
//!
//! The registry also holds libp2p's transport byte counters (`libp2p_bandwidth_bytes`),
//! which count what crossed the sockets after Noise and Yamux framing. The node serves the
//! registry as text; benchmarks read [`OverlayMetrics::snapshot`].

use std::sync::Arc;

use libp2p::metrics::Registry;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
};
use serde::Serialize;

/// The overlay's counters. Cloning shares them.
#[derive(Clone, Debug)]
pub struct OverlayMetrics {
    registry: Arc<Registry>,
    counters: Counters,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub peers_connected: Gauge,
    pub gossip_published: Counter,
    pub gossip_published_bytes: Counter,
    pub gossip_received: Counter,
    pub gossip_received_bytes: Counter,
    pub gossip_rejected: Counter,
    pub gossip_ignored: Counter,
    pub gossip_bodies_fetched: Counter,
    pub gossip_bodies_served: Counter,
    pub gossip_body_failures: Counter,
    pub gossip_bodies_withheld: Counter,
    pub rpc_requests_sent: Counter,
    pub rpc_requests_received: Counter,
    pub rpc_failures: Counter,
    pub rpc_bytes_sent: Counter,
    pub rpc_bytes_received: Counter,
    pub peer_penalties: Counter,
    pub peer_bans: Counter,
    pub peers_refused: Counter,
    pub events_dropped: Counter,
}

impl Counters {
    /// Registers every counter in `registry` under the `tenure_overlay` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let counters = Counters::default();
        let sub = registry.sub_registry_with_prefix("tenure_overlay");
        sub.register(
            "peers_connected",
            "Peers with a completed hello",
            counters.peers_connected.clone(),
        );
        let plain = [
            (
                "gossip_published",
                "Gossip messages published",
                &counters.gossip_published,
            ),
            (
                "gossip_published_bytes",
                "Bytes of gossip published",
                &counters.gossip_published_bytes,
            ),
            (
                "gossip_received",
                "Gossip messages accepted and delivered",
                &counters.gossip_received,
            ),
            (
                "gossip_received_bytes",
                "Bytes of gossip accepted",
                &counters.gossip_received_bytes,
            ),
            (
                "gossip_rejected",
                "Gossip messages rejected by validation",
                &counters.gossip_rejected,
            ),
            (
                "gossip_ignored",
                "Gossip messages ignored by validation",
                &counters.gossip_ignored,
            ),
            (
                "gossip_bodies_withheld",
                "Bodies an announcing peer failed to serve",
                &counters.gossip_bodies_withheld,
            ),
            (
                "rpc_requests_sent",
                "Requests sent",
                &counters.rpc_requests_sent,
            ),
            (
                "rpc_requests_received",
                "Requests received",
                &counters.rpc_requests_received,
            ),
            (
                "rpc_failures",
                "Requests that failed either way",
                &counters.rpc_failures,
            ),
            (
                "rpc_bytes_sent",
                "Request and response body bytes sent",
                &counters.rpc_bytes_sent,
            ),
            (
                "rpc_bytes_received",
                "Request and response body bytes received",
                &counters.rpc_bytes_received,
            ),
            (
                "peer_penalties",
                "Penalties given to peers",
                &counters.peer_penalties,
            ),
            ("peer_bans", "Peers banned", &counters.peer_bans),
            (
                "peers_refused",
                "Peers refused at hello (other network or bad hello)",
                &counters.peers_refused,
            ),
            (
                "events_dropped",
                "Events dropped because the application lagged",
                &counters.events_dropped,
            ),
        ];
        for (name, help, counter) in plain {
            sub.register(name, help, counter.clone());
        }
        counters
    }
}

impl OverlayMetrics {
    pub(crate) fn new(registry: Registry, counters: Counters) -> Self {
        OverlayMetrics {
            registry: Arc::new(registry),
            counters,
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The whole registry in Prometheus text format.
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Current values, with the transport byte totals summed over protocols.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.counters;
        let (bytes_in, bytes_out) = transport_bytes(&self.encode_text());
        MetricsSnapshot {
            peers_connected: c.peers_connected.get().max(0) as u64,
            gossip_published: c.gossip_published.get(),
            gossip_published_bytes: c.gossip_published_bytes.get(),
            gossip_received: c.gossip_received.get(),
            gossip_received_bytes: c.gossip_received_bytes.get(),
            gossip_rejected: c.gossip_rejected.get(),
            gossip_bodies_fetched: c.gossip_bodies_fetched.get(),
            gossip_body_failures: c.gossip_body_failures.get(),
            gossip_bodies_withheld: c.gossip_bodies_withheld.get(),
            rpc_requests_sent: c.rpc_requests_sent.get(),
            rpc_requests_received: c.rpc_requests_received.get(),
            rpc_failures: c.rpc_failures.get(),
            peer_penalties: c.peer_penalties.get(),
            peer_bans: c.peer_bans.get(),
            peers_refused: c.peers_refused.get(),
            events_dropped: c.events_dropped.get(),
            transport_bytes_in: bytes_in,
            transport_bytes_out: bytes_out,
        }
    }
}

/// Sums libp2p's bandwidth counters by direction from the text encoding.
fn transport_bytes(text: &str) -> (u64, u64) {
    let (mut inbound, mut outbound) = (0u64, 0u64);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("libp2p_bandwidth_bytes_total{") else {
            continue;
        };
        let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if rest.contains("direction=\"Inbound\"") {
            inbound += value as u64;
        } else if rest.contains("direction=\"Outbound\"") {
            outbound += value as u64;
        }
    }
    (inbound, outbound)
}

/// A point-in-time copy of the overlay's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Peers with a completed hello.
    pub peers_connected: u64,
    /// Gossip messages published.
    pub gossip_published: u64,
    /// Bytes of gossip published.
    pub gossip_published_bytes: u64,
    /// Gossip messages accepted and delivered.
    pub gossip_received: u64,
    /// Bytes of gossip accepted.
    pub gossip_received_bytes: u64,
    /// Gossip messages rejected by validation.
    pub gossip_rejected: u64,
    /// Large-message bodies fetched and verified.
    pub gossip_bodies_fetched: u64,
    /// Announcements given up.
    pub gossip_body_failures: u64,
    /// Bodies a peer announced to us and then did not serve.
    pub gossip_bodies_withheld: u64,
    /// Requests sent.
    pub rpc_requests_sent: u64,
    /// Requests received.
    pub rpc_requests_received: u64,
    /// Requests that failed either way.
    pub rpc_failures: u64,
    /// Penalties given to peers.
    pub peer_penalties: u64,
    /// Peers banned.
    pub peer_bans: u64,
    /// Peers refused at hello.
    pub peers_refused: u64,
    /// Events dropped because the application lagged.
    pub events_dropped: u64,
    /// Bytes received on all connections (after Noise and Yamux).
    pub transport_bytes_in: u64,
    /// Bytes sent on all connections (after Noise and Yamux).
    pub transport_bytes_out: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_bytes_are_summed_by_direction() {
        let text = "# HELP libp2p_bandwidth_bytes x\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Inbound\"} 100\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip6/tcp\",direction=\"Inbound\"} 5\n\
            libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Outbound\"} 42\n\
            other_total 9\n";
        assert_eq!(transport_bytes(text), (105, 42));
    }

    #[test]
    fn counters_appear_in_the_text_encoding() {
        let mut registry = Registry::default();
        let counters = Counters::register(&mut registry);
        counters.gossip_published.inc_by(3);
        let metrics = OverlayMetrics::new(registry, counters);
        assert!(
            metrics
                .encode_text()
                .contains("tenure_overlay_gossip_published_total 3")
        );
        assert_eq!(metrics.snapshot().gossip_published, 3);
    }
}
