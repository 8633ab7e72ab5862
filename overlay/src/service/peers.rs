//! Connected peers and where each stands in the hello exchange.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use crate::{handle::PeerSummary, hello::Hello};

#[derive(Debug)]
struct PeerEntry {
    connections: u32,
    connected_at: Instant,
    hello: Option<Hello>,
}

/// Every peer with an open connection, and its hello once exchanged.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    peers: HashMap<PeerId, PeerEntry>,
}

impl PeerTable {
    /// Counts a new connection; true when it is the first to this peer.
    pub fn connection_opened(&mut self, peer: PeerId, now: Instant) -> bool {
        let entry = self.peers.entry(peer).or_insert(PeerEntry {
            connections: 0,
            connected_at: now,
            hello: None,
        });
        entry.connections += 1;
        entry.connections == 1
    }

    /// Forgets the peer once its last connection closed; says whether it had a hello.
    pub fn connection_closed(&mut self, peer: &PeerId, remaining: u32) -> Option<bool> {
        if remaining > 0 {
            if let Some(entry) = self.peers.get_mut(peer) {
                entry.connections = remaining;
            }
            return None;
        }
        self.peers.remove(peer).map(|entry| entry.hello.is_some())
    }

    /// Records the peer's hello; true when this completes the exchange for the first time.
    pub fn set_hello(&mut self, peer: PeerId, hello: Hello) -> bool {
        match self.peers.get_mut(&peer) {
            Some(entry) => entry.hello.replace(hello).is_none(),
            None => false,
        }
    }

    /// Whether the peer completed the hello.
    pub fn is_ready(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|e| e.hello.is_some())
    }

    /// Whether any connection to the peer is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Peers with an open connection.
    pub fn connected_count(&self) -> usize {
        self.peers.len()
    }

    /// Peers connected for longer than `deadline` without a hello.
    pub fn hello_overdue(&self, now: Instant, deadline: Duration) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, e)| e.hello.is_none() && now.duration_since(e.connected_at) > deadline)
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Up to `count` peers to disconnect when over the cap: connected longer than
    /// `grace` (so a newcomer has time for its hello and a DHT query), not `protected`,
    /// oldest first (so newcomers are not the ones cut off).
    pub fn prune_candidates(
        &self,
        now: Instant,
        grace: Duration,
        count: usize,
        protected: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let mut eligible: Vec<(Instant, PeerId)> = self
            .peers
            .iter()
            .filter(|(peer, e)| now.duration_since(e.connected_at) >= grace && !protected(peer))
            .map(|(peer, e)| (e.connected_at, *peer))
            .collect();
        eligible.sort();
        eligible
            .into_iter()
            .take(count)
            .map(|(_, peer)| peer)
            .collect()
    }

    /// The ready peers, for status reports.
    pub fn summaries(&self) -> Vec<PeerSummary> {
        let mut out: Vec<PeerSummary> = self
            .peers
            .iter()
            .filter_map(|(peer, e)| {
                e.hello.as_ref().map(|h| PeerSummary {
                    peer_id: peer.to_string(),
                    chain_tip: hex::encode(&h.chain_tip),
                    stacker_dbs: h.stacker_dbs.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkId;

    fn hello() -> Hello {
        Hello::new(NetworkId::new("t").unwrap(), vec![], vec![])
    }

    #[test]
    fn a_peer_is_ready_after_its_first_hello_only() {
        let mut table = PeerTable::default();
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(table.connection_opened(peer, now));
        assert!(!table.connection_opened(peer, now));
        assert!(!table.is_ready(&peer));
        assert!(table.set_hello(peer, hello()));
        assert!(!table.set_hello(peer, hello()));
        assert!(table.is_ready(&peer));
        assert_eq!(table.connection_closed(&peer, 1), None);
        assert_eq!(table.connection_closed(&peer, 0), Some(true));
        assert!(!table.is_connected(&peer));
    }

    #[test]
    fn a_hello_from_an_unconnected_peer_is_not_recorded() {
        let mut table = PeerTable::default();
        let stranger = PeerId::random();
        assert!(!table.set_hello(stranger, hello()));
        assert!(!table.is_ready(&stranger));
    }

    #[test]
    fn pruning_takes_the_oldest_unprotected_peers_past_their_grace() {
        let mut table = PeerTable::default();
        let start = Instant::now();
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for (i, peer) in peers.iter().enumerate() {
            table.connection_opened(*peer, start + Duration::from_secs(i as u64));
        }
        let now = start + Duration::from_secs(8);
        let grace = Duration::from_secs(6);
        // peers[0] is protected (in a mesh); peers[3] (5 s old) is still within its grace.
        let pruned = table.prune_candidates(now, grace, 5, |p| *p == peers[0]);
        assert_eq!(pruned, vec![peers[1], peers[2]]);
        assert_eq!(
            table.prune_candidates(now, grace, 1, |_| false),
            vec![peers[0]]
        );
    }

    #[test]
    fn peers_silent_past_the_deadline_are_overdue() {
        let mut table = PeerTable::default();
        let (quiet, polite) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        table.connection_opened(quiet, now);
        table.connection_opened(polite, now);
        table.set_hello(polite, hello());
        let later = now + Duration::from_secs(11);
        assert_eq!(
            table.hello_overdue(later, Duration::from_secs(10)),
            vec![quiet]
        );
    }
}
