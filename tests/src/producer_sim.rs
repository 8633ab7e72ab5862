//! The producer protocol in the shared seeded simulation ([`crate::sim`]), with every
//! real part: the producers make their term key with the weighted DKG, elect a
//! leader, and produce blocks of transfers from a load generator; each block is
//! checked by every producer before it pre-commits, signed by the federation's robust
//! FROST signing (each member's validator approving only what its producer
//! pre-committed), and validated with its signer evidence by every producer.
//!
//! Used by the producer simulation test (six producers, a crashed leader, a byzantine
//! one, a term change) and by `tenure bench produce --simulated` (the SIP's 100
//! producers over a simulated wide-area network), so both run one implementation.
//!
//! Rules of the simulation:
//!
//! - **Time is simulated.** Latencies are in simulated milliseconds; the CPU the real
//!   cryptography takes does not advance the clock (a wide-area network of machines
//!   of their own, not producers sharing one machine's cores).
//! - **Producer messages face every fault** of [`Faults`]. Federation messages travel
//!   over the federation's reliable channels (retransmitted until acknowledged;
//!   simulated on their own in frost-fed's channel simulation), so with
//!   [`ProducerSimConfig::reliable_federation`] they are delayed, duplicated and cut
//!   by partitions and crashes, but not lost: a frame the loss picks arrives a
//!   retransmission later (a round trip at the slowest one-way delay, 100 ms at
//!   least).
//! - **Load**: `load_per_s` transfers a simulated second between producers' accounts
//!   (funded by the term's coinbase) are submitted to every online producer, as the
//!   transactions topic would; none before the first block.
//! - **Figures**: a block's latency is from the leader proposing it to a producer
//!   applying it, one sample per block and producer; a transfer's is from its
//!   submission to the last online producer applying a block that holds it. Each
//!   block's [`Phases`] split its latency: proposal to the leader asking for the
//!   signature (the pre-commits), to a producer first learning the signature (FROST
//!   signing), to the producers applying it (propagation).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
use sha2::{Digest, Sha256};
use tenure_chain::{
    block::{AccountId, Block, ChainState, SignerEvidence, TermContext, Transfer, Tx},
    produce::{
        Approvals, Producer, ProducerBody, ProducerConfig, ProducerId, ProducerMessage,
        ProducerOutput,
    },
    tenure_change::consensus_hash,
};
use tenure_frost_fed::{
    KeyShare, MemberId, Roster,
    dkg::{Delivery, Dkg, DkgOutput, session_id},
    sign::{SignMessage, SignOutput, Signing, SigningConfig},
};

use crate::sim::{Faults, SimEvent, SimNet};

/// The network name transfers and blocks are signed for.
pub const NETWORK: &str = "producer-sim";

/// The simulation's tick: every producer's and member's timers run this often.
pub const TICK: Duration = Duration::from_millis(10);

/// Why a simulation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimSetupError {
    /// The spends do not make a roster of 100 shares.
    #[error("no roster: {0}")]
    Roster(String),
    /// The term's DKG did not complete.
    #[error("the term's DKG failed: {0}")]
    Dkg(String),
    /// A key derivation failed.
    #[error("{0}")]
    Key(String),
}

/// The producers of a simulation: keys, and lookups from their names.
#[derive(Clone)]
pub struct ProducerSet {
    keypairs: Vec<Keypair>,
    ids: Vec<ProducerId>,
    members: Vec<MemberId>,
    by_id: BTreeMap<ProducerId, usize>,
    by_member: BTreeMap<MemberId, usize>,
}

impl ProducerSet {
    /// `n` producers with keys derived from their index (the same in every run).
    pub fn new(n: usize) -> Result<ProducerSet, SimSetupError> {
        let keypairs = (0..n)
            .map(|i| {
                let mut h = Sha256::new();
                h.update(b"tenure/producer-sim/key");
                h.update((i as u64).to_be_bytes());
                let secret: [u8; 32] = h.finalize().into();
                SecretKey::from_slice(&secret)
                    .map(|s| Keypair::from_secret_key(SECP256K1, &s))
                    .map_err(|e| SimSetupError::Key(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<ProducerId> = keypairs
            .iter()
            .map(|k| ProducerId::of(&k.x_only_public_key().0))
            .collect();
        let members: Vec<MemberId> = keypairs
            .iter()
            .map(|k| MemberId::from(k.x_only_public_key().0))
            .collect();
        Ok(ProducerSet {
            by_id: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            by_member: members.iter().enumerate().map(|(i, m)| (*m, i)).collect(),
            keypairs,
            ids,
            members,
        })
    }

    /// Producers.
    pub fn len(&self) -> usize {
        self.keypairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keypairs.is_empty()
    }

    /// Producer `n`'s key.
    pub fn keypair(&self, n: usize) -> Option<&Keypair> {
        self.keypairs.get(n)
    }

    /// Producer `n`'s name in the producer protocol.
    pub fn id(&self, n: usize) -> Option<ProducerId> {
        self.ids.get(n).copied()
    }

    /// Producer `n`'s name in the federation.
    pub fn member(&self, n: usize) -> Option<MemberId> {
        self.members.get(n).copied()
    }

    /// The index of a producer.
    pub fn index_of(&self, id: ProducerId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// The index of a federation member.
    pub fn index_of_member(&self, member: MemberId) -> Option<usize> {
        self.by_member.get(&member).copied()
    }

    /// Producer `n`'s account.
    pub fn account(&self, n: usize) -> Option<AccountId> {
        self.id(n).map(|id| AccountId(id.0))
    }
}

/// A term's keys and context, and what making them cost.
pub struct Term {
    /// Each producer's key share, in producer order.
    pub keys: Vec<KeyShare>,
    /// The term's context.
    pub context: TermContext,
    /// CPU time (this process's wall clock) the term's DKG took.
    pub dkg_time: Duration,
}

/// Term `term`'s keys (by the real weighted DKG among the producers, every message
/// delivered at once) and its context, for producers holding `shares` of the 100
/// (in producer order; they must add up to 100).
pub fn term(set: &ProducerSet, term: u64, shares: &[u16]) -> Result<Term, SimSetupError> {
    let weights: Vec<(MemberId, u16)> = set
        .members
        .iter()
        .copied()
        .zip(shares.iter().copied())
        .collect();
    let roster = Roster::new(weights, 100, 67).map_err(|e| SimSetupError::Roster(e.to_string()))?;
    let started = Instant::now();
    let keys = term_keys(set, term, &roster)?;
    let dkg_time = started.elapsed();
    let first = keys
        .first()
        .ok_or_else(|| SimSetupError::Dkg("no producers".into()))?;
    let producer_key = first
        .output_key()
        .map_err(|e| SimSetupError::Dkg(e.to_string()))?;
    let share_owners = (1..=100u16)
        .map(|s| {
            roster
                .holder_of(s)
                .and_then(|holder| set.index_of_member(holder))
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| SimSetupError::Roster(format!("share {s} has no producer")))
        })
        .collect::<Result<Vec<u16>, _>>()?;
    let tag = term.to_be_bytes();
    let context = TermContext {
        term,
        producer_key,
        producer_shares: first.public.clone(),
        stacker_key: None,
        coinbase: set
            .ids
            .iter()
            .map(|id| (AccountId(id.0), 1_000_000))
            .collect(),
        cost_limit: 100_000,
        consensus_hash: consensus_hash(term, &Sha256::digest(tag).into()),
        previous_consensus_hash: consensus_hash(
            term.saturating_sub(1),
            &Sha256::digest(term.saturating_sub(1).to_be_bytes()).into(),
        ),
        producers: set
            .ids
            .iter()
            .zip(shares)
            .map(|(id, s)| (AccountId(id.0), u64::from(*s)))
            .collect(),
        share_owners,
    };
    Ok(Term {
        keys,
        context,
        dkg_time,
    })
}

fn term_keys(
    set: &ProducerSet,
    term: u64,
    roster: &Roster,
) -> Result<Vec<KeyShare>, SimSetupError> {
    let now = Instant::now();
    let session = session_id(format!("term {term}").as_bytes(), roster, 0);
    let mut dkgs = BTreeMap::new();
    let mut queue = VecDeque::new();
    for (n, keypair) in set.keypairs.iter().enumerate() {
        let (dkg, out) = Dkg::start(
            session,
            roster.clone(),
            *keypair,
            Duration::from_secs(60),
            now,
            &mut ChaCha20Rng::seed_from_u64(n as u64 ^ term.rotate_left(32)),
        )
        .ok_or_else(|| SimSetupError::Dkg(format!("producer {n} is not in the roster")))?;
        let me = MemberId::from(keypair.x_only_public_key().0);
        dkgs.insert(me, dkg);
        queue.extend(out.into_iter().map(|o| (me, o)));
    }
    let mut keys = BTreeMap::new();
    while let Some((from, output)) = queue.pop_front() {
        match output {
            DkgOutput::Broadcast(msg) => {
                for (to, dkg) in dkgs.iter_mut().filter(|(to, _)| **to != from) {
                    let out = dkg.handle(from, msg.clone(), Delivery::Broadcast, now);
                    queue.extend(out.into_iter().map(|o| (*to, o)));
                }
            }
            DkgOutput::Send { to, msg } => {
                if let Some(dkg) = dkgs.get_mut(&to) {
                    let out = dkg.handle(from, msg, Delivery::Direct, now);
                    queue.extend(out.into_iter().map(|o| (to, o)));
                }
            }
            DkgOutput::Completed(key) => {
                keys.insert(from, *key);
            }
            DkgOutput::Failed(failure) => return Err(SimSetupError::Dkg(failure.to_string())),
        }
    }
    set.members
        .iter()
        .map(|m| {
            keys.remove(m)
                .ok_or_else(|| SimSetupError::Dkg(format!("member {m} made no key")))
        })
        .collect()
}

/// How a simulation runs.
#[derive(Clone, Debug)]
pub struct ProducerSimConfig {
    /// The run's seed.
    pub seed: u64,
    /// The network's faults.
    pub faults: Faults<usize>,
    /// Federation messages are not lost (the channels retransmit them).
    pub reliable_federation: bool,
    /// The producers' timing.
    pub producer: ProducerConfig,
    /// A producer whose every proposal carries a wrong state root.
    pub byzantine: Option<usize>,
    /// Transfers submitted per simulated second (0: no load).
    pub load_per_s: u64,
}

/// What producers send each other in the simulation.
#[derive(Clone, Debug)]
pub enum Msg {
    /// The producer protocol.
    Producer(Box<ProducerMessage>),
    /// The federation's signing.
    Sign(SignMessage),
}

type Validator = Box<dyn Fn(&[u8]) -> Result<[u8; 32], String>>;

/// One producer: its protocol and its federation member's signing.
pub struct SimProducer {
    /// The producer protocol.
    pub producer: Producer,
    signing: Signing<Validator>,
}

/// When a proposed block passed each step (simulated ms).
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// The leader proposed it.
    pub proposed: u64,
    /// A producer first learned its signature.
    pub signed: Option<u64>,
}

/// A transfer waiting to be included everywhere.
struct Pending {
    submitted_ms: u64,
    applied_by: usize,
}

/// A producer set in the seeded simulation.
pub struct ProducerSim {
    /// The network, its clock and its faults.
    pub net: SimNet<usize, Msg>,
    /// The producers.
    pub nodes: Vec<SimProducer>,
    set: ProducerSet,
    byzantine: Option<usize>,
    reliable_federation: bool,
    load_per_s: u64,
    /// Transfers submitted so far.
    pub transfers_submitted: u64,
    load_attempts: u64,
    /// Heights and hashes of blocks applied, per producer.
    pub applied: Vec<Vec<(u64, [u8; 32])>>,
    /// Headers the byzantine producer proposed.
    pub byzantine_proposals: Vec<[u8; 32]>,
    /// Whether a producer deposed the byzantine one.
    pub byzantine_deposed: bool,
    /// Transfers in blocks producer 0 applied.
    pub transfers_included: usize,
    /// Each proposed block's phases, by header hash.
    phases: BTreeMap<[u8; 32], Phases>,
    /// Proposed headers by the message the group signs for them.
    by_message: BTreeMap<[u8; 32], [u8; 32]>,
    /// Proposal to application, one sample per block and producer (simulated ms).
    pub block_latencies_ms: Vec<u64>,
    /// A producer first learning a block's signature to a producer applying it, one
    /// sample per block and producer (simulated ms).
    pub propagation_latencies_ms: Vec<u64>,
    /// Submission to inclusion at every online producer (simulated ms).
    pub transfer_latencies_ms: Vec<u64>,
    pending: BTreeMap<(AccountId, u64), Pending>,
    /// Load generator: next nonce per account.
    nonces: Vec<u64>,
    /// Nonces for FROST (a cryptographic generator, seeded: the run replays).
    frost_rng: ChaCha20Rng,
}

impl ProducerSim {
    /// The producers of `set` starting `term` on an empty chain.
    pub fn new(config: &ProducerSimConfig, set: &ProducerSet, term: &Term) -> ProducerSim {
        let mut net = SimNet::new(config.seed, TICK, config.faults.clone());
        let now = net.now();
        let nodes = set
            .keypairs
            .iter()
            .zip(&term.keys)
            .map(|(keypair, key)| {
                let approvals = Approvals::default();
                let producer = Producer::new(
                    NETWORK,
                    *keypair,
                    term.context.clone(),
                    ChainState::default(),
                    config.producer,
                    approvals.clone(),
                    now,
                    &mut net.rng,
                );
                let validator: Validator = Box::new(move |payload: &[u8]| {
                    approvals
                        .approve(payload, NETWORK)
                        .map_err(|e| e.to_string())
                });
                let signing =
                    Signing::new(Arc::new(key.clone()), validator, SigningConfig::default());
                SimProducer { producer, signing }
            })
            .collect();
        ProducerSim {
            net,
            nodes,
            set: set.clone(),
            byzantine: config.byzantine,
            reliable_federation: config.reliable_federation,
            load_per_s: config.load_per_s,
            transfers_submitted: 0,
            load_attempts: 0,
            applied: vec![Vec::new(); set.len()],
            byzantine_proposals: Vec::new(),
            byzantine_deposed: false,
            transfers_included: 0,
            phases: BTreeMap::new(),
            by_message: BTreeMap::new(),
            block_latencies_ms: Vec::new(),
            propagation_latencies_ms: Vec::new(),
            transfer_latencies_ms: Vec::new(),
            pending: BTreeMap::new(),
            nonces: vec![0; set.len()],
            frost_rng: ChaCha20Rng::seed_from_u64(config.seed),
        }
    }

    fn broadcast(&mut self, from: usize, msg: Msg) {
        for to in (0..self.nodes.len()).filter(|to| *to != from) {
            self.send(from, to, msg.clone());
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if self.reliable_federation && matches!(msg, Msg::Sign(_)) {
            // Lost on the wire, the frame is sent again once the channel's
            // retransmission timer fires: a round trip at the slowest, 100 ms at least
            // (the channels' `retransmit_min`).
            let loss = std::mem::replace(&mut self.net.faults.loss, 0.0);
            let extra_ms = if self.net.rng.chance(loss) {
                self.net.faults.delay_ms.1.saturating_mul(2).max(100)
            } else {
                0
            };
            self.net.send_with(from, to, msg, extra_ms, |_, _| {});
            self.net.faults.loss = loss;
        } else {
            self.net.send(from, to, msg);
        }
    }

    fn producer_outputs(&mut self, n: usize, outputs: Vec<ProducerOutput>) {
        for output in outputs {
            match output {
                ProducerOutput::Broadcast(mut msg) => {
                    if let ProducerBody::Proposal { block, .. } = &mut msg.body {
                        if self.byzantine == Some(n) {
                            block.header.state_root = [0xbb; 32];
                            self.byzantine_proposals.push(block.header.hash());
                        }
                        let now_ms = self.net.now_ms();
                        let hash = block.header.hash();
                        self.phases.entry(hash).or_insert(Phases {
                            proposed: now_ms,
                            ..Phases::default()
                        });
                        self.by_message
                            .insert(Block::signing_message(&block.header), hash);
                    }
                    self.broadcast(n, Msg::Producer(Box::new(msg)));
                }
                ProducerOutput::Send { to, msg } => {
                    if let Some(to) = self.set.index_of(to) {
                        self.send(n, to, Msg::Producer(Box::new(msg)));
                    }
                }
                ProducerOutput::Sign { payload } => {
                    let now = self.net.now();
                    if let Some(node) = self.nodes.get_mut(n) {
                        let (_, out) = node.signing.request(&payload, now, &mut self.frost_rng);
                        self.sign_outputs(n, out);
                    }
                }
                ProducerOutput::Applied(block) => self.on_applied(n, &block),
                // The simulated producers keep no chain store: catch-up reaches back as
                // far as the blocks they keep in memory.
                ProducerOutput::Leader { .. }
                | ProducerOutput::Announce(_)
                | ProducerOutput::ServeBlocks { .. } => {}
                ProducerOutput::Deposed { leader, .. } => {
                    if self.byzantine.is_some() && self.set.index_of(leader) == self.byzantine {
                        self.byzantine_deposed = true;
                    }
                }
            }
        }
    }

    fn on_applied(&mut self, n: usize, block: &tenure_chain::block::Block) {
        let now_ms = self.net.now_ms();
        let hash = block.header.hash();
        if let Some(applied) = self.applied.get_mut(n) {
            applied.push((block.header.height, hash));
        }
        if let Some(phases) = self.phases.get(&hash) {
            self.block_latencies_ms
                .push(now_ms.saturating_sub(phases.proposed));
            if let Some(signed) = phases.signed {
                self.propagation_latencies_ms
                    .push(now_ms.saturating_sub(signed));
            }
        }
        let transfers = block.txs.iter().filter_map(|t| match t {
            Tx::Transfer(t) => Some((t.from, t.nonce)),
            _ => None,
        });
        let online = (0..self.nodes.len())
            .filter(|m| !self.net.is_offline(*m))
            .count();
        for key in transfers {
            if n == 0 {
                self.transfers_included = self.transfers_included.saturating_add(1);
            }
            if let Some(pending) = self.pending.get_mut(&key) {
                pending.applied_by = pending.applied_by.saturating_add(1);
                if pending.applied_by >= online {
                    let latency = now_ms.saturating_sub(pending.submitted_ms);
                    self.transfer_latencies_ms.push(latency);
                    self.pending.remove(&key);
                }
            }
        }
    }

    fn sign_outputs(&mut self, n: usize, outputs: Vec<SignOutput>) {
        for output in outputs {
            match output {
                SignOutput::Broadcast(msg) => self.broadcast(n, Msg::Sign(msg)),
                SignOutput::Send { to, msg } => {
                    if let Some(to) = self.set.index_of_member(to) {
                        self.send(n, to, Msg::Sign(msg));
                    }
                }
                // Any producer that learns the signature completes the block; its
                // evidence is checked when the block is validated.
                SignOutput::Signed { record, .. } | SignOutput::Seen { record, .. } => {
                    let now_ms = self.net.now_ms();
                    if let Some(phases) = self
                        .by_message
                        .get(&record.message)
                        .and_then(|hash| self.phases.get_mut(hash))
                    {
                        phases.signed.get_or_insert(now_ms);
                    }
                    let now = self.net.now();
                    let Ok(signature) = <[u8; 64]>::try_from(record.signature.as_slice()) else {
                        continue;
                    };
                    let Some(node) = self.nodes.get_mut(n) else {
                        continue;
                    };
                    let out = node.producer.on_signed(
                        record.message,
                        signature,
                        SignerEvidence::of(&record),
                        now,
                        &mut self.net.rng,
                    );
                    self.producer_outputs(n, out);
                }
                _ => {}
            }
        }
    }

    /// Transfers between the producers' accounts (funded by the term's coinbase),
    /// submitted to every online producer as the transactions topic would.
    fn load(&mut self) {
        if self
            .nodes
            .first()
            .is_none_or(|n| n.producer.state().height == 0)
        {
            return;
        }
        let producers = self.nodes.len();
        let from = self.net.rng.below(producers as u64) as usize;
        let to = (from + 1) % producers;
        let (Some(keypair), Some(to), Some(nonce)) = (
            self.set.keypair(from).copied(),
            self.set.account(to),
            self.nonces.get(from).copied(),
        ) else {
            return;
        };
        let fee = 1 + self.net.rng.below(5);
        let transfer = Transfer::sign(NETWORK, &keypair, to, 10, fee, nonce);
        let mut admitted = false;
        for n in 0..producers {
            if !self.net.is_offline(n)
                && let Some(node) = self.nodes.get_mut(n)
            {
                admitted |= node.producer.submit(transfer.clone()).is_ok();
            }
        }
        if admitted {
            self.transfers_submitted = self.transfers_submitted.saturating_add(1);
            if let Some(next) = self.nonces.get_mut(from) {
                *next = next.saturating_add(1);
            }
            let submitted_ms = self.net.now_ms();
            self.pending.insert(
                (transfer.from, nonce),
                Pending {
                    submitted_ms,
                    applied_by: 0,
                },
            );
        }
    }

    /// Runs until the simulated clock reaches `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(event) = self.net.next_event(until_ms) {
            let now = self.net.now();
            match event {
                SimEvent::Tick => {
                    // The transfers due by now at `load_per_s`, spread over the ticks.
                    let due = self.load_per_s.saturating_mul(self.net.now_ms()) / 1_000;
                    while self.load_attempts < due {
                        self.load_attempts = self.load_attempts.saturating_add(1);
                        self.load();
                    }
                    for n in 0..self.nodes.len() {
                        if self.net.is_offline(n) {
                            continue;
                        }
                        let Some(node) = self.nodes.get_mut(n) else {
                            continue;
                        };
                        let out = node.producer.on_tick(now, &mut self.net.rng);
                        let signed = node.signing.on_tick(now, &mut self.frost_rng);
                        self.producer_outputs(n, out);
                        self.sign_outputs(n, signed);
                    }
                }
                SimEvent::Deliver { from, to, msg } => {
                    let (Some(from_id), Some(from_member)) =
                        (self.set.id(from), self.set.member(from))
                    else {
                        continue;
                    };
                    let Some(node) = self.nodes.get_mut(to) else {
                        continue;
                    };
                    match msg {
                        Msg::Producer(msg) => {
                            if let Ok(out) =
                                node.producer.handle(from_id, *msg, now, &mut self.net.rng)
                            {
                                self.producer_outputs(to, out);
                            }
                        }
                        Msg::Sign(msg) => {
                            let out =
                                node.signing
                                    .handle(from_member, msg, now, &mut self.frost_rng);
                            self.sign_outputs(to, out);
                        }
                    }
                }
            }
        }
    }

    /// Each proposed block's phases (blocks never signed included).
    pub fn phases(&self) -> impl Iterator<Item = &Phases> {
        self.phases.values()
    }

    /// Changes the load: `per_s` transfers a simulated second from now on.
    pub fn set_load(&mut self, per_s: u64) {
        self.load_per_s = per_s;
        self.load_attempts = per_s.saturating_mul(self.net.now_ms()) / 1_000;
    }

    /// Producer `n`'s height (0 for an unknown producer).
    pub fn height(&self, n: usize) -> u64 {
        self.nodes
            .get(n)
            .map_or(0, |node| node.producer.state().height)
    }

    /// Every producer's height.
    pub fn heights(&self) -> Vec<u64> {
        (0..self.nodes.len()).map(|n| self.height(n)).collect()
    }

    /// Whether every producer is on one tip.
    pub fn agree(&self) -> bool {
        let mut tips = self.nodes.iter().map(|n| n.producer.state().tip);
        let first = tips.next();
        tips.all(|t| Some(t) == first)
    }

    /// The current leader as some producer sees it.
    pub fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .filter_map(|n| n.producer.leader())
            .find_map(|l| self.set.index_of(l))
    }

    /// The next term starts: producer `n` learns of it `stagger_ms × n` after the
    /// first (the burn block travels), switches its member to the new key and its
    /// producer to the new term, with the old term's last blocks in flight.
    pub fn change_term(&mut self, next: &Term, stagger_ms: u64) {
        let change_at = self.net.now_ms();
        for (n, key) in next.keys.iter().enumerate() {
            self.run_until(change_at.saturating_add(stagger_ms.saturating_mul(n as u64)));
            let now = self.net.now();
            let Some(node) = self.nodes.get_mut(n) else {
                continue;
            };
            node.signing.rekey(Arc::new(key.clone()));
            let out = node
                .producer
                .begin_term(next.context.clone(), now, &mut self.net.rng);
            self.producer_outputs(n, out);
        }
    }
}
