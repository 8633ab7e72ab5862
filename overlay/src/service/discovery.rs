//! Finding peers: bootstrap addresses, Kademlia random walks, mDNS, and dialling what
//! they turn up until the node has its target number of peers.

use std::{collections::HashMap, time::Instant};

use libp2p::{
    Multiaddr, PeerId,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tracing::debug;

use super::OverlayService;
use crate::config::OverlayConfig;
use crate::logs;

/// Peers whose addresses are remembered, at most.
const MAX_KNOWN_PEERS: usize = 1024;

/// Addresses remembered per peer, at most.
const MAX_ADDRS_PER_PEER: usize = 8;

/// Addresses learnt from discovery.
///
/// There is no random walk of our own: Kademlia bootstraps by itself while its routing
/// table is small and every five minutes after, and each walk dials up to 20 peers, so
/// walks of our own on top only multiplied connection churn (measured: a 50-node
/// testnet meshed in 14 s with them, 7 s without).
#[derive(Debug)]
pub(crate) struct Discovery {
    known: HashMap<PeerId, Vec<Multiaddr>>,
    bootstrap: Vec<Multiaddr>,
    target_peers: usize,
}

impl Discovery {
    pub fn new(config: &OverlayConfig) -> Self {
        Discovery {
            known: HashMap::new(),
            bootstrap: config.bootstrap_peers.clone(),
            target_peers: config.target_peers,
        }
    }

    /// Remembers addresses for `peer` (bounded in peers and addresses).
    pub fn learn(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if !self.known.contains_key(&peer) && self.known.len() >= MAX_KNOWN_PEERS {
            return;
        }
        let entry = self.known.entry(peer).or_default();
        for addr in addrs {
            if entry.len() >= MAX_ADDRS_PER_PEER {
                break;
            }
            if !entry.contains(&addr) {
                entry.push(addr);
            }
        }
    }

    /// Forgets a peer (banned, or found to be on another network).
    pub fn forget(&mut self, peer: &PeerId) {
        self.known.remove(peer);
    }

    /// Up to `want` known peers that pass `eligible`.
    fn candidates(
        &self,
        want: usize,
        eligible: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.known
            .iter()
            .filter(|(peer, _)| eligible(peer))
            .take(want)
            .map(|(peer, addrs)| (*peer, addrs.clone()))
            .collect()
    }
}

impl OverlayService {
    /// Dials every bootstrap address.
    pub(super) fn dial_bootstrap(&mut self) {
        for addr in self.discovery.bootstrap.clone() {
            if let Err(err) = self.swarm.dial(addr.clone()) {
                debug!(target: logs::DISCOVERY, %addr, %err, "bootstrap dial failed");
            }
        }
    }

    /// One discovery round: redial bootstrap when alone, dial candidates when short.
    pub(super) fn discover(&mut self, now: Instant) {
        let connected = self.peers.connected_count();
        if connected == 0 {
            self.dial_bootstrap();
        }
        if connected >= self.discovery.target_peers {
            return;
        }
        let local = *self.swarm.local_peer_id();
        let want = self.discovery.target_peers - connected;
        let candidates = self.discovery.candidates(want, |peer| {
            *peer != local
                && !self.peers.is_connected(peer)
                && !self.reputation.is_banned(peer, now)
        });
        for (peer, addrs) in candidates {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(err) = self.swarm.dial(opts) {
                debug!(target: logs::DISCOVERY, %peer, %err, "discovery dial failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkId;

    fn discovery() -> Discovery {
        Discovery::new(&OverlayConfig::loopback(NetworkId::new("t").unwrap()))
    }

    #[test]
    fn addresses_are_bounded_per_peer_and_deduplicated() {
        let mut d = discovery();
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        d.learn(peer, vec![addr.clone(), addr]);
        assert_eq!(d.known[&peer].len(), 1);
        let many = (2..40).map(|p| format!("/ip4/127.0.0.1/tcp/{p}").parse().unwrap());
        d.learn(peer, many);
        assert_eq!(d.known[&peer].len(), MAX_ADDRS_PER_PEER);
    }

    #[test]
    fn candidates_skip_ineligible_peers() {
        let mut d = discovery();
        let (a, b) = (PeerId::random(), PeerId::random());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        d.learn(a, vec![addr.clone()]);
        d.learn(b, vec![addr]);
        let got = d.candidates(10, |p| *p != a);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, b);
    }
}
