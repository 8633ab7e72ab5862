//! Finding peers: bootstrap addresses, Kademlia random walks, mDNS, and dialling what
//! they turn up until the node has its target number of peers.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tracing::debug;

use super::{LOG_TARGET, OverlayService};
use crate::config::OverlayConfig;

/// Peers whose addresses are remembered, at most.
const MAX_KNOWN_PEERS: usize = 1024;

/// Addresses remembered per peer, at most.
const MAX_ADDRS_PER_PEER: usize = 8;

/// Random walks while the node has enough peers, to keep the routing table fresh.
const WALK_INTERVAL_WHEN_SATISFIED: Duration = Duration::from_secs(60);

/// Addresses learnt from discovery, and when the last random walk ran.
#[derive(Debug)]
pub(crate) struct Discovery {
    known: HashMap<PeerId, Vec<Multiaddr>>,
    bootstrap: Vec<Multiaddr>,
    target_peers: usize,
    last_walk: Option<Instant>,
}

impl Discovery {
    pub fn new(config: &OverlayConfig) -> Self {
        Discovery {
            known: HashMap::new(),
            bootstrap: config.bootstrap_peers.clone(),
            target_peers: config.target_peers,
            last_walk: None,
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

    fn walk_due(&self, now: Instant, below_target: bool) -> bool {
        match self.last_walk {
            None => true,
            Some(_) if below_target => true,
            Some(last) => now.duration_since(last) >= WALK_INTERVAL_WHEN_SATISFIED,
        }
    }
}

impl OverlayService {
    /// Dials every bootstrap address.
    pub(super) fn dial_bootstrap(&mut self) {
        for addr in self.discovery.bootstrap.clone() {
            if let Err(err) = self.swarm.dial(addr.clone()) {
                debug!(target: LOG_TARGET, %addr, %err, "bootstrap dial failed");
            }
        }
    }

    /// One discovery round: redial bootstrap when alone, walk the DHT, dial candidates.
    pub(super) fn discover(&mut self, now: Instant) {
        let connected = self.peers.connected_count();
        if connected == 0 {
            self.dial_bootstrap();
        }
        let below_target = connected < self.discovery.target_peers;
        if connected > 0 && self.discovery.walk_due(now, below_target) {
            self.discovery.last_walk = Some(now);
            self.swarm
                .behaviour_mut()
                .kad
                .get_closest_peers(PeerId::random());
        }
        if !below_target {
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
                debug!(target: LOG_TARGET, %peer, %err, "discovery dial failed");
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

    #[test]
    fn walks_run_every_round_below_target_and_rarely_above() {
        let mut d = discovery();
        let now = Instant::now();
        assert!(d.walk_due(now, false));
        d.last_walk = Some(now);
        assert!(d.walk_due(now, true));
        assert!(!d.walk_due(now + Duration::from_secs(1), false));
        assert!(d.walk_due(now + WALK_INTERVAL_WHEN_SATISFIED, false));
    }
}
