//! Replicating a Stacker DB between nodes: a sans-IO state machine (seed 001,
//! "Stacker DBs": replicas exchange vector clocks and converge).
//!
//! The SIP asks that, "in the absence of in-flight writes, all replicas will contain
//! the same state". Four mechanisms get there, and each repairs what the others miss:
//!
//! 1. **Announce**: a node that accepts a client's write gossips its clock entry; a
//!    replica that sees an entry newer than its own pulls that slot from the announcer.
//!    Chunks that arrive by sync are not announced again: gossip already carried the
//!    writer's announcement to every replica.
//! 2. **Anti-entropy**: every [`SyncConfig::anti_entropy`] each replica sends its clock
//!    digest, one short hash per range of [`crate::clock::RANGE_SLOTS`] slots, to its
//!    sync neighbours; a neighbour whose digest differs answers with the entries of the
//!    ranges that differ. A write in flight costs one range, not the whole clock.
//! 3. **Clock exchange**: on a neighbour's clock a replica pulls the slots it lacks
//!    (each slot from one neighbour at a time) and pushes the slots the neighbour still
//!    lacked at its previous clock: a lagging peer whose own pulls did not get through.
//!    Both are bounded and rate-limited per peer.
//! 4. **Order**: chunks are totally ordered ([`crate::order`]), so whatever arrives in
//!    whatever order, every replica keeps the same winner.
//!
//! A neighbour's last clock is kept, so a writer can see how far its chunk travelled.
//! A peer whose chunks are forged, unauthorised or out of bounds is reported for a
//! penalty; a stale chunk is normal (the peer was behind) and is not.
//!
//! Fed with messages and time; returns messages to send and events. The live node and
//! the seeded simulation (`tests/sync_simulation.rs`) run this same code.

pub mod message;
pub mod rate;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    chunk::Chunk,
    clock::{PartialClock, SlotClock, VectorClock},
    db::DbId,
    order::SlotVersion,
    replica::{Rejection, Replica, WriteError},
};

pub use message::{SyncBody, SyncMessage};
use rate::TokenBucket;

/// Sync neighbours tracked per DB at most.
pub const MAX_SYNC_PEERS: usize = 256;

/// Tuning of the sync of one DB.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// How often digests go to every neighbour.
    pub anti_entropy: Duration,
    /// Most slots asked in one pull (and served for one).
    pub max_pull_slots: usize,
    /// Most chunk bytes in one `Chunks` message.
    pub max_push_bytes: usize,
    /// Slots served per second to one peer (burst: twice that).
    pub pulls_per_second: f64,
    /// Chunk bytes pushed per second to one peer (burst: twice that).
    pub push_bytes_per_second: f64,
    /// Work a peer's messages may cost us per second (burst: twice that): one unit
    /// a message, plus one for each chunk (a signature recovery) and for each range
    /// of [`crate::clock::RANGE_SLOTS`] clock entries (a comparison).
    pub inbound_work_per_second: f64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            // Announcements carry new chunks; anti-entropy repairs what they missed. More
            // often than this, digests that differ only because a write is in flight
            // cost a whole clock and duplicate pushes.
            anti_entropy: Duration::from_secs(3),
            max_pull_slots: 300,
            max_push_bytes: 2 * 1024 * 1024,
            pulls_per_second: 2_000.0,
            push_bytes_per_second: 16.0 * 1024.0 * 1024.0,
            inbound_work_per_second: 2_000.0,
        }
    }
}

/// What the state machine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncOutput<P> {
    /// Send `msg` to `to`.
    Send {
        /// The neighbour.
        to: P,
        /// The message.
        msg: SyncMessage,
    },
    /// Gossip `msg` to every replica of the DB.
    Announce(SyncMessage),
    /// A chunk from a peer was accepted into the replica.
    Accepted {
        /// Its slot.
        slot: u32,
        /// Its standing.
        standing: SlotVersion,
        /// The peer that sent it.
        from: P,
    },
    /// `peer` sent something no honest replica sends.
    Penalise {
        /// The peer.
        peer: P,
        /// What it sent.
        reason: String,
    },
    /// The store failed while applying a peer's chunk; nothing was acknowledged.
    StorageFailed(String),
}

#[derive(Clone, Debug)]
struct PeerSync {
    last_clock: Option<VectorClock>,
    /// When the peer last sent its whole clock.
    last_clock_at: Option<Instant>,
    pulls_served: TokenBucket,
    bytes_pushed: TokenBucket,
    /// What the peer's messages may cost us.
    inbound: TokenBucket,
    /// When the peer was last penalised for going over it.
    penalised_at: Option<Instant>,
}

/// A peer over its inbound budget is penalised at most this often: an honest burst
/// that just crosses it costs a little, a flood costs its sender steadily.
pub const OVER_BUDGET_PENALTY_EVERY: Duration = Duration::from_secs(1);

/// The sync of one DB with its neighbours.
#[derive(Debug)]
pub struct DbSync<P> {
    db: DbId,
    config: SyncConfig,
    peers: BTreeMap<P, PeerSync>,
    /// The replica's GC epoch as of the last call: stamped on every message.
    gc_epoch: u64,
    last_anti_entropy: Option<Instant>,
    /// Slots asked of a peer and not yet answered, with when they were asked: each
    /// missing slot is pulled from one peer at a time.
    in_flight: BTreeMap<u32, Instant>,
    /// When each slot last changed here: fresh chunks are not pushed (see
    /// [`PUSH_GRACE`]).
    changed_at: BTreeMap<u32, Instant>,
}

/// How long a pull may go unanswered before the slot is asked of another peer.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(2);

/// A chunk is pushed to a lagging peer only once it has been held this long: before
/// that it is still travelling by announcement and pull, and a push would duplicate it.
pub const PUSH_GRACE: Duration = Duration::from_secs(1);

impl<P: Copy + Ord + std::fmt::Debug> DbSync<P> {
    /// The sync of `db`, with no neighbours yet.
    pub fn new(db: DbId, config: SyncConfig) -> Self {
        DbSync {
            db,
            config,
            peers: BTreeMap::new(),
            gc_epoch: 0,
            last_anti_entropy: None,
            in_flight: BTreeMap::new(),
            changed_at: BTreeMap::new(),
        }
    }

    /// Adds a neighbour that replicates this DB (learnt from its hello).
    pub fn add_peer(&mut self, peer: P) {
        if self.peers.len() >= MAX_SYNC_PEERS && !self.peers.contains_key(&peer) {
            return;
        }
        let config = &self.config;
        self.peers.entry(peer).or_insert_with(|| PeerSync {
            last_clock: None,
            last_clock_at: None,
            pulls_served: TokenBucket::new(2.0 * config.pulls_per_second, config.pulls_per_second),
            bytes_pushed: TokenBucket::new(
                2.0 * config.push_bytes_per_second,
                config.push_bytes_per_second,
            ),
            inbound: TokenBucket::new(
                2.0 * config.inbound_work_per_second,
                config.inbound_work_per_second,
            ),
            penalised_at: None,
        });
    }

    /// A new neighbour: send it our digest now rather than at the next anti-entropy
    /// round, so a node that just joined catches up at once.
    pub fn on_new_peer(&mut self, replica: &Replica, peer: P) -> Vec<SyncOutput<P>> {
        self.add_peer(peer);
        vec![SyncOutput::Send {
            to: peer,
            msg: SyncMessage::new(
                self.db.clone(),
                replica.gc_epoch(),
                SyncBody::ClockDigest(replica.clock().range_digest()),
            ),
        }]
    }

    /// Forgets a neighbour.
    pub fn remove_peer(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// The last clock each neighbour reported (replication progress).
    pub fn peer_clocks(&self) -> impl Iterator<Item = (&P, Option<&VectorClock>)> {
        self.peers.iter().map(|(p, s)| (p, s.last_clock.as_ref()))
    }

    /// A local write was accepted: announce it.
    pub fn on_local_write(
        &mut self,
        replica: &Replica,
        slot: u32,
        now: Instant,
    ) -> Vec<SyncOutput<P>> {
        self.changed_at.insert(slot, now);
        self.announcement(replica, slot).into_iter().collect()
    }

    fn announcement(&self, replica: &Replica, slot: u32) -> Option<SyncOutput<P>> {
        let entry = replica.slot_clock(slot)?;
        Some(SyncOutput::Announce(SyncMessage::new(
            self.db.clone(),
            replica.gc_epoch(),
            SyncBody::Announce { slot, entry },
        )))
    }

    /// Time passed: send digests to every neighbour when anti-entropy is due.
    pub fn on_tick(&mut self, replica: &Replica, now: Instant) -> Vec<SyncOutput<P>> {
        let due = self
            .last_anti_entropy
            .is_none_or(|last| now.saturating_duration_since(last) >= self.config.anti_entropy);
        if !due {
            return Vec::new();
        }
        self.last_anti_entropy = Some(now);
        self.digests_to_all(replica)
    }

    /// The replica's clock digest, to every neighbour.
    fn digests_to_all(&self, replica: &Replica) -> Vec<SyncOutput<P>> {
        let digest = replica.clock().range_digest();
        self.peers
            .keys()
            .map(|peer| SyncOutput::Send {
                to: *peer,
                msg: SyncMessage::new(
                    self.db.clone(),
                    replica.gc_epoch(),
                    SyncBody::ClockDigest(digest.clone()),
                ),
            })
            .collect()
    }

    /// A message from `from`.
    pub fn handle(
        &mut self,
        replica: &mut Replica,
        from: P,
        msg: SyncMessage,
        now: Instant,
    ) -> Vec<SyncOutput<P>> {
        if msg.db != self.db {
            return Vec::new();
        }
        self.add_peer(from);
        // Inbound budget: every message costs work (a chunk a signature recovery, a
        // clock its comparison); past the peer's budget it is dropped unread.
        let cost = 1.0
            + match &msg.body {
                SyncBody::Chunks(chunks) => chunks.len() as f64,
                SyncBody::Clock(clock) => (clock.len() / crate::clock::RANGE_SLOTS) as f64,
                SyncBody::Pull(slots) => (slots.len() / crate::clock::RANGE_SLOTS) as f64,
                SyncBody::Announce { .. } | SyncBody::ClockDigest(_) => 0.0,
            };
        let Some(peer) = self.peers.get_mut(&from) else {
            // Past the neighbour limit: not a peer we sync with.
            return Vec::new();
        };
        if !peer.inbound.try_take(cost, now) {
            let due = peer
                .penalised_at
                .is_none_or(|at| now.saturating_duration_since(at) >= OVER_BUDGET_PENALTY_EVERY);
            if due {
                peer.penalised_at = Some(now);
                return vec![SyncOutput::Penalise {
                    peer: from,
                    reason: "sync messages over the inbound budget".into(),
                }];
            }
            return Vec::new();
        }
        self.gc_epoch = replica.gc_epoch();
        if msg.gc_epoch != self.gc_epoch {
            // One of us has not seen the last collecting burn block yet: what it holds
            // is garbage to the other. Not a fault; they agree once both have.
            return Vec::new();
        }
        match msg.body {
            SyncBody::Announce { slot, entry } => self.on_announce(replica, from, slot, entry, now),
            SyncBody::ClockDigest(digest) => {
                let ours = replica.clock();
                match ours.differing_ranges(&digest) {
                    // Another layout (a neighbour still on the previous term).
                    None => Vec::new(),
                    Some(ranges) if ranges.is_empty() => {
                        // Equal digests: the peer's clock is ours, progress to record.
                        if let Some(peer) = self.peers.get_mut(&from) {
                            peer.last_clock = Some(ours);
                        }
                        Vec::new()
                    }
                    Some(ranges) => vec![self.send(from, SyncBody::Clock(ours.part(&ranges)))],
                }
            }
            SyncBody::Clock(theirs) => self.on_clock(replica, from, theirs, now),
            SyncBody::Pull(slots) => self.on_pull(replica, from, slots, now),
            SyncBody::Chunks(chunks) => self.on_chunks(replica, from, chunks, now),
        }
    }

    fn send(&self, to: P, body: SyncBody) -> SyncOutput<P> {
        SyncOutput::Send {
            to,
            msg: SyncMessage::new(self.db.clone(), self.gc_epoch, body),
        }
    }

    /// The replica collected garbage ([`Replica::on_burn_block`]): forget pulls and
    /// changes of the reset slots, and send the new digest to every neighbour, so the
    /// ones at the same epoch confirm and the others wait until they collect too.
    pub fn on_garbage_collected(&mut self, replica: &Replica, now: Instant) -> Vec<SyncOutput<P>> {
        self.gc_epoch = replica.gc_epoch();
        self.in_flight.clear();
        self.changed_at.clear();
        for peer in self.peers.values_mut() {
            peer.last_clock = None;
            peer.last_clock_at = None;
        }
        self.last_anti_entropy = Some(now);
        self.digests_to_all(replica)
    }

    fn on_announce(
        &mut self,
        replica: &Replica,
        from: P,
        slot: u32,
        entry: SlotClock,
        now: Instant,
    ) -> Vec<SyncOutput<P>> {
        let Some(our_entry) = replica.slot_clock(slot) else {
            return vec![SyncOutput::Penalise {
                peer: from,
                reason: format!("announced slot {slot} of {}", replica.slot_count()),
            }];
        };
        if let Some(clock) = self
            .peers
            .get_mut(&from)
            .and_then(|p| p.last_clock.as_mut())
            && let Some(theirs) = clock.slots.get_mut(slot as usize)
        {
            *theirs = entry;
        }
        let need = if entry > our_entry {
            vec![slot]
        } else {
            Vec::new()
        };
        self.pull(from, need, now).into_iter().collect()
    }

    /// A pull of the slots in `need` not already asked of someone recently.
    fn pull(&mut self, from: P, need: Vec<u32>, now: Instant) -> Option<SyncOutput<P>> {
        let slots: Vec<u32> = need
            .into_iter()
            .filter(|slot| {
                self.in_flight
                    .get(slot)
                    .is_none_or(|asked| now.saturating_duration_since(*asked) >= PULL_TIMEOUT)
            })
            .take(self.config.max_pull_slots)
            .collect();
        if slots.is_empty() {
            return None;
        }
        for slot in &slots {
            self.in_flight.insert(*slot, now);
        }
        Some(self.send(from, SyncBody::Pull(slots)))
    }

    fn on_clock(
        &mut self,
        replica: &Replica,
        from: P,
        theirs: PartialClock,
        now: Instant,
    ) -> Vec<SyncOutput<P>> {
        let ours = replica.clock();
        if theirs.slot_count as usize != ours.slots.len() {
            // Another layout (a neighbour still on the previous term): nothing to do.
            return Vec::new();
        }
        let mut need = Vec::new();
        let mut lacking = Vec::new();
        for (slot, entry) in theirs.entries() {
            match ours.slots.get(slot as usize) {
                Some(our_entry) if entry > *our_entry => need.push(slot),
                Some(our_entry) if *our_entry > entry => lacking.push((slot, entry)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        out.extend(self.pull(from, need, now));
        // Push only what the peer already lacked at a clock it sent at least a pull
        // timeout ago: a peer that just joined (or just heard of a write) pulls for
        // itself, from one replica, while a push from every neighbour would send it
        // each chunk many times over.
        let previous = self
            .peers
            .get(&from)
            .filter(|p| {
                p.last_clock_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= PULL_TIMEOUT)
            })
            .and_then(|p| p.last_clock.as_ref());
        let give: Vec<u32> = lacking
            .into_iter()
            .filter(|(slot, entry)| {
                let still_behind = previous
                    .is_some_and(|previous| previous.slots.get(*slot as usize) == Some(entry));
                let settled = self
                    .changed_at
                    .get(slot)
                    .is_none_or(|at| now.saturating_duration_since(*at) >= PUSH_GRACE);
                still_behind && settled
            })
            .map(|(slot, _)| slot)
            .collect();
        if let Some(chunks) = self.chunks_for(replica, from, &give, now) {
            out.push(self.send(from, SyncBody::Chunks(chunks)));
        }
        if let Some(peer) = self.peers.get_mut(&from) {
            // The ranges the peer did not send matched ours when it compared.
            peer.last_clock = Some(ours.overlaid(&theirs));
            peer.last_clock_at = Some(now);
        }
        out
    }

    fn on_pull(
        &mut self,
        replica: &Replica,
        from: P,
        slots: Vec<u32>,
        now: Instant,
    ) -> Vec<SyncOutput<P>> {
        if slots.len() > self.config.max_pull_slots {
            return vec![SyncOutput::Penalise {
                peer: from,
                reason: format!("pulled {} slots at once", slots.len()),
            }];
        }
        let allowed = self
            .peers
            .get_mut(&from)
            .is_some_and(|p| p.pulls_served.try_take(slots.len() as f64, now));
        if !allowed {
            return Vec::new();
        }
        match self.chunks_for(replica, from, &slots, now) {
            Some(chunks) => vec![self.send(from, SyncBody::Chunks(chunks))],
            None => Vec::new(),
        }
    }

    /// The non-empty chunks of `slots`, within the push size and the peer's byte budget.
    fn chunks_for(
        &mut self,
        replica: &Replica,
        to: P,
        slots: &[u32],
        now: Instant,
    ) -> Option<Vec<Chunk>> {
        let mut chunks = Vec::new();
        let mut bytes = 0;
        for slot in slots {
            let Some(chunk) = replica.read(*slot).chunk else {
                continue;
            };
            if bytes + chunk.data.len() > self.config.max_push_bytes && !chunks.is_empty() {
                break;
            }
            bytes += chunk.data.len();
            chunks.push(chunk);
        }
        if chunks.is_empty() {
            return None;
        }
        let budget = self.peers.get_mut(&to)?;
        budget
            .bytes_pushed
            .try_take(bytes as f64, now)
            .then_some(chunks)
    }

    fn on_chunks(
        &mut self,
        replica: &mut Replica,
        from: P,
        chunks: Vec<Chunk>,
        now: Instant,
    ) -> Vec<SyncOutput<P>> {
        let mut accepted = Vec::new();
        let mut misbehaviour = None;
        for chunk in chunks {
            let slot = chunk.slot;
            self.in_flight.remove(&slot);
            match replica.write_unflushed(chunk) {
                Ok(standing) => accepted.push((slot, standing)),
                // The peer was behind, or the chunk crossed a newer one: normal.
                Err(WriteError::Rejected(Rejection::NotNewer(_))) => {}
                Err(WriteError::Rejected(rejection)) => misbehaviour = Some(rejection.to_string()),
                Err(WriteError::Storage(err)) => {
                    return vec![SyncOutput::StorageFailed(err.to_string())];
                }
            }
        }
        // One flush for the whole batch, before anything is announced as held.
        if !accepted.is_empty()
            && let Err(err) = replica.flush()
        {
            return vec![SyncOutput::StorageFailed(err.to_string())];
        }
        let mut out = Vec::new();
        for (slot, standing) in accepted {
            self.changed_at.insert(slot, now);
            if let Some(clock) = self
                .peers
                .get_mut(&from)
                .and_then(|p| p.last_clock.as_mut())
                && let Some(theirs) = clock.slots.get_mut(slot as usize)
            {
                *theirs = SlotClock::from(&standing);
            }
            // Not re-announced: the writer's announcement already reached every replica
            // by gossip, and a copy from each of them cost more than the chunks.
            out.push(SyncOutput::Accepted {
                slot,
                standing,
                from,
            });
        }
        if let Some(reason) = misbehaviour {
            out.push(SyncOutput::Penalise { peer: from, reason });
        }
        out
    }
}
