//! Peer reputation: penalties for misbehaviour, decay over time, temporary bans.
//!
//! Gossipsub scores peers for what happens inside gossip; this table covers everything
//! else (bad frames, bad hellos, misbehaviour the application reports). It is sans-IO:
//! time is passed in and the swarm task acts on what it returns. A peer's score starts at
//! zero, each misbehaviour subtracts its penalty, the score decays back towards zero with
//! a half-life, and a peer whose score falls to the ban threshold is banned for a while.

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// Score at or below which a peer is banned.
pub const BAN_THRESHOLD: f64 = -100.0;

/// Time for a penalty to lose half its weight.
pub const PENALTY_HALF_LIFE: Duration = Duration::from_secs(600);

/// Peers tracked at most; beyond this, the entries closest to a clean record are dropped.
pub const MAX_TRACKED_PEERS: usize = 4096;

/// Things a peer can do wrong, each with its penalty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A frame longer than the protocol's limit.
    OversizedFrame,
    /// A frame that does not decode, or has an unknown version.
    UndecodableFrame,
    /// A hello that breaks the protocol's bounds.
    InvalidHello,
    /// A gossip message the validator rejected.
    InvalidGossip,
    /// A peer forwarded an announcement (so it accepted the message and must hold the
    /// body) and then did not serve the body.
    WithheldBody,
    /// A violation found by a service above the overlay, with its description.
    Protocol(String),
}

impl Misbehaviour {
    /// How much the peer's score drops. Two bad frames in quick succession, or one bad
    /// hello, ban a peer (60 rather than 50 so decay between the two cannot save it).
    pub fn penalty(&self) -> f64 {
        match self {
            Misbehaviour::OversizedFrame | Misbehaviour::UndecodableFrame => 60.0,
            Misbehaviour::InvalidHello => 100.0,
            Misbehaviour::InvalidGossip | Misbehaviour::WithheldBody => 20.0,
            Misbehaviour::Protocol(_) => 25.0,
        }
    }
}

impl fmt::Display for Misbehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misbehaviour::OversizedFrame => f.write_str("oversized frame"),
            Misbehaviour::UndecodableFrame => f.write_str("undecodable frame"),
            Misbehaviour::InvalidHello => f.write_str("invalid hello"),
            Misbehaviour::InvalidGossip => f.write_str("invalid gossip"),
            Misbehaviour::WithheldBody => f.write_str("announced a body and did not serve it"),
            Misbehaviour::Protocol(what) => write!(f, "protocol violation: {what}"),
        }
    }
}

/// What a penalty led to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PenaltyOutcome {
    /// The peer's score after the penalty.
    pub score: f64,
    /// Whether this penalty banned the peer (it was not banned before).
    pub newly_banned: bool,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    score: f64,
    updated: Instant,
}

impl Record {
    fn decayed(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.score * 0.5f64.powf(elapsed / PENALTY_HALF_LIFE.as_secs_f64())
    }
}

/// Scores and bans of the peers this node has seen misbehave.
#[derive(Debug)]
pub struct PeerReputation {
    records: HashMap<PeerId, Record>,
    bans: HashMap<PeerId, Instant>,
    ban_duration: Duration,
}

impl PeerReputation {
    /// An empty table; bans last `ban_duration`.
    pub fn new(ban_duration: Duration) -> Self {
        PeerReputation {
            records: HashMap::new(),
            bans: HashMap::new(),
            ban_duration,
        }
    }

    /// Records `what` against `peer` and says whether the peer is now banned.
    pub fn penalise(&mut self, peer: PeerId, what: &Misbehaviour, now: Instant) -> PenaltyOutcome {
        if !self.records.contains_key(&peer) && self.records.len() >= MAX_TRACKED_PEERS {
            self.forget_mildest(now);
        }
        let score = self.records.get(&peer).map_or(0.0, |r| r.decayed(now)) - what.penalty();
        self.records.insert(
            peer,
            Record {
                score,
                updated: now,
            },
        );
        let newly_banned = score <= BAN_THRESHOLD && !self.is_banned(&peer, now);
        if newly_banned {
            self.ban(peer, now);
        }
        PenaltyOutcome {
            score,
            newly_banned,
        }
    }

    /// Bans `peer` until `now + ban_duration`, whatever its score.
    pub fn ban(&mut self, peer: PeerId, now: Instant) {
        self.bans.insert(peer, now + self.ban_duration);
    }

    /// Bans `peer` for `duration` (used for peers of another network: not misbehaviour,
    /// but no reason to let discovery dial them again at once).
    pub fn ban_for(&mut self, peer: PeerId, duration: Duration, now: Instant) {
        self.bans.insert(peer, now + duration);
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.bans.get(peer).is_some_and(|until| *until > now)
    }

    /// The peer's decayed score (zero if it never misbehaved).
    pub fn score(&self, peer: &PeerId, now: Instant) -> f64 {
        self.records.get(peer).map_or(0.0, |r| r.decayed(now))
    }

    /// Removes and returns the bans that have run out by `now`.
    pub fn expire_bans(&mut self, now: Instant) -> Vec<PeerId> {
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &expired {
            self.bans.remove(peer);
        }
        expired
    }

    /// Number of peers banned now.
    pub fn banned_count(&self, now: Instant) -> usize {
        self.bans.values().filter(|until| **until > now).count()
    }

    fn forget_mildest(&mut self, now: Instant) {
        let mildest = self
            .records
            .iter()
            .filter(|(peer, _)| !self.bans.contains_key(peer))
            .max_by(|a, b| a.1.decayed(now).total_cmp(&b.1.decayed(now)))
            .map(|(peer, _)| *peer);
        if let Some(peer) = mildest {
            self.records.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_bad_frames_ban_a_peer() {
        let mut rep = PeerReputation::new(Duration::from_secs(60));
        let peer = PeerId::random();
        let now = Instant::now();
        let first = rep.penalise(peer, &Misbehaviour::OversizedFrame, now);
        assert_eq!(first.score, -60.0);
        assert!(!first.newly_banned);
        assert!(!rep.is_banned(&peer, now));
        let second = rep.penalise(peer, &Misbehaviour::UndecodableFrame, now);
        assert!(second.newly_banned);
        assert!(rep.is_banned(&peer, now));
    }

    #[test]
    fn a_banned_peer_is_reported_banned_only_once() {
        let mut rep = PeerReputation::new(Duration::from_secs(60));
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(
            rep.penalise(peer, &Misbehaviour::InvalidHello, now)
                .newly_banned
        );
        assert!(
            !rep.penalise(peer, &Misbehaviour::InvalidHello, now)
                .newly_banned
        );
    }

    #[test]
    fn penalties_decay_with_their_half_life() {
        let mut rep = PeerReputation::new(Duration::from_secs(60));
        let peer = PeerId::random();
        let now = Instant::now();
        rep.penalise(peer, &Misbehaviour::OversizedFrame, now);
        let later = now + PENALTY_HALF_LIFE;
        assert!((rep.score(&peer, later) + 30.0).abs() < 1e-9);
        // A second bad frame long after the first no longer reaches the ban threshold.
        assert!(
            !rep.penalise(peer, &Misbehaviour::OversizedFrame, later)
                .newly_banned
        );
    }

    #[test]
    fn bans_expire() {
        let mut rep = PeerReputation::new(Duration::from_secs(60));
        let peer = PeerId::random();
        let now = Instant::now();
        rep.penalise(peer, &Misbehaviour::InvalidHello, now);
        assert!(rep.expire_bans(now + Duration::from_secs(59)).is_empty());
        assert_eq!(rep.expire_bans(now + Duration::from_secs(60)), vec![peer]);
        assert!(!rep.is_banned(&peer, now + Duration::from_secs(61)));
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut rep = PeerReputation::new(Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..MAX_TRACKED_PEERS + 10 {
            rep.penalise(PeerId::random(), &Misbehaviour::InvalidGossip, now);
        }
        assert!(rep.records.len() <= MAX_TRACKED_PEERS);
    }
}
