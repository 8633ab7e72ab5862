//! Finding peers: bootstrap addresses, Kademlia random walks, mDNS, and dialling what
//! they turn up until the node has its target number of peers.
//!
//! The table of known peers is bounded ([`MAX_KNOWN_PEERS`]) but never closed: a full
//! table makes room for a newly learnt peer by evicting the entry that failed most
//! dials, and among those the one learnt or confirmed longest ago. A peer whose dials
//! failed [`MAX_DIAL_FAILURES`] times in a row is forgotten; a connection clears its
//! failures. So a burst of made-up peers cannot freeze the table, and peers that went
//! away leave it.

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

/// Failed dials in a row after which a peer is forgotten.
const MAX_DIAL_FAILURES: u32 = 3;

/// A known peer.
#[derive(Debug)]
struct Known {
    addrs: Vec<Multiaddr>,
    /// When it was last learnt or confirmed (a counter: later is larger).
    seen: u64,
    /// Dials that failed since it was last connected.
    failures: u32,
}

/// Addresses learnt from discovery.
///
/// There is no random walk of our own: Kademlia bootstraps by itself while its routing
/// table is small and every five minutes after, and each walk dials up to 20 peers, so
/// walks of our own on top only multiplied connection churn (measured: a 50-node
/// testnet meshed in 14 s with them, 7 s without).
#[derive(Debug)]
pub(crate) struct Discovery {
    known: HashMap<PeerId, Known>,
    /// Counts learning events, to order entries by age.
    clock: u64,
    bootstrap: Vec<Multiaddr>,
    target_peers: usize,
}

impl Discovery {
    pub fn new(config: &OverlayConfig) -> Self {
        Discovery {
            known: HashMap::new(),
            clock: 0,
            bootstrap: config.bootstrap_peers.clone(),
            target_peers: config.target_peers,
        }
    }

    /// Remembers addresses for `peer` (bounded in peers and addresses); a full table
    /// evicts its least useful entry.
    pub fn learn(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        self.clock = self.clock.saturating_add(1);
        if !self.known.contains_key(&peer) && self.known.len() >= MAX_KNOWN_PEERS {
            let evict = self
                .known
                .iter()
                .max_by_key(|(_, k)| (k.failures, std::cmp::Reverse(k.seen)))
                .map(|(p, _)| *p);
            if let Some(evict) = evict {
                self.known.remove(&evict);
            }
        }
        let entry = self.known.entry(peer).or_insert_with(|| Known {
            addrs: Vec::new(),
            seen: 0,
            failures: 0,
        });
        entry.seen = self.clock;
        for addr in addrs {
            if entry.addrs.len() >= MAX_ADDRS_PER_PEER {
                break;
            }
            if !entry.addrs.contains(&addr) {
                entry.addrs.push(addr);
            }
        }
    }

    /// A dial to `peer` failed; after [`MAX_DIAL_FAILURES`] in a row it is forgotten.
    pub fn dial_failed(&mut self, peer: &PeerId) {
        if let Some(known) = self.known.get_mut(peer) {
            known.failures = known.failures.saturating_add(1);
            if known.failures >= MAX_DIAL_FAILURES {
                self.known.remove(peer);
            }
        }
    }

    /// A connection to `peer` is up: its failures are cleared.
    pub fn connected(&mut self, peer: &PeerId) {
        self.clock = self.clock.saturating_add(1);
        if let Some(known) = self.known.get_mut(peer) {
            known.failures = 0;
            known.seen = self.clock;
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
            .map(|(peer, known)| (*peer, known.addrs.clone()))
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

    /// Dials every kept peer that is not connected (with the addresses discovery
    /// knows, else those the routing table offers), each with its own backoff. For one
    /// kept peer whose address nobody told us, in turn, it asks the DHT (a lookup of
    /// the peers closest to it, which finds it if any node routes to it): in a large
    /// roster, each node learns most addresses from its neighbours, and a pair that
    /// learned neither's address would otherwise never connect.
    pub(super) fn dial_kept(&mut self, now: Instant) {
        let peers = &self.peers;
        let kept = &self.kept;
        self.kept_redial
            .retain(|p, _| kept.contains(p) && !peers.is_connected(p));
        let missing: Vec<PeerId> = self
            .kept
            .iter()
            .filter(|p| !self.peers.is_connected(p) && !self.reputation.is_banned(p, now))
            .filter(|p| self.kept_redial.get(p).is_none_or(|(at, _)| now >= *at))
            .copied()
            .collect();
        let unaddressed: Vec<PeerId> = missing
            .iter()
            .filter(|p| {
                self.discovery
                    .known
                    .get(p)
                    .is_none_or(|k| k.addrs.is_empty())
            })
            .copied()
            .collect();
        if !unaddressed.is_empty() {
            self.kept_lookup = self.kept_lookup.wrapping_add(1);
            if let Some(peer) = unaddressed.get(self.kept_lookup % unaddressed.len()) {
                self.swarm.behaviour_mut().kad.get_closest_peers(*peer);
            }
        }
        for peer in missing {
            let wait = self
                .kept_redial
                .get(&peer)
                .map_or(super::KEPT_REDIAL_FIRST, |(_, wait)| {
                    wait.saturating_mul(2).min(super::KEPT_REDIAL_MAX)
                });
            self.kept_redial
                .insert(peer, (now.checked_add(wait).unwrap_or(now), wait));
            let addrs = self
                .discovery
                .known
                .get(&peer)
                .map(|k| k.addrs.clone())
                .unwrap_or_default();
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(err) = self.swarm.dial(opts) {
                debug!(target: logs::DISCOVERY, %peer, %err, "dial of a kept peer failed");
            }
        }
    }

    /// One discovery round: redial bootstrap when alone, dial kept peers that are
    /// not connected, dial candidates when short.
    pub(super) fn discover(&mut self, now: Instant) {
        self.dial_kept(now);
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
        assert_eq!(d.known[&peer].addrs.len(), 1);
        let many = (2..40).map(|p| format!("/ip4/127.0.0.1/tcp/{p}").parse().unwrap());
        d.learn(peer, many);
        assert_eq!(d.known[&peer].addrs.len(), MAX_ADDRS_PER_PEER);
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

    #[test]
    fn a_full_table_still_learns_and_forgets_peers_that_fail() {
        let mut d = discovery();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        // A flood of made-up peers fills the table; it used to stop learning here.
        let flood: Vec<PeerId> = (0..MAX_KNOWN_PEERS).map(|_| PeerId::random()).collect();
        for peer in &flood {
            d.learn(*peer, vec![addr.clone()]);
        }
        // Dials to some of them fail.
        for peer in flood.iter().take(10) {
            d.dial_failed(peer);
        }
        let honest = PeerId::random();
        d.learn(honest, vec![addr.clone()]);
        assert!(d.known.contains_key(&honest));
        assert_eq!(d.known.len(), MAX_KNOWN_PEERS);
        // The evicted entry is one whose dial failed, not the honest newcomer.
        assert_eq!(
            flood
                .iter()
                .take(10)
                .filter(|p| d.known.contains_key(p))
                .count(),
            9
        );
        // Three failures in a row forget a peer; a connection clears the count.
        let flaky = flood[500];
        d.dial_failed(&flaky);
        d.dial_failed(&flaky);
        d.connected(&flaky);
        d.dial_failed(&flaky);
        assert!(d.known.contains_key(&flaky));
        d.dial_failed(&flaky);
        d.dial_failed(&flaky);
        assert!(!d.known.contains_key(&flaky));
    }
}
