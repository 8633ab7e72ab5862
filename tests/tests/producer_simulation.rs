//! A term of block production in the shared seeded simulation, with every real part:
//! six producers of unequal spend make their term key with the weighted DKG, elect
//! a leader, and produce blocks of transfers from a load generator; each block is
//! checked by every producer before it pre-commits, signed by the federation's robust
//! FROST signing (each member's validator approving only what its producer
//! pre-committed), and validated with its signer evidence by every producer.
//!
//! Faults: lost, duplicated, delayed and reordered messages; the leader crashes
//! mid-term and comes back later; one producer is byzantine: when it leads, every
//! block it proposes has a wrong state root.
//!
//! For every seed: blocks are produced before and after the crash, transfers are
//! included, nothing the byzantine producer proposed is ever signed, and every
//! producer holds the same tip. Then the next term starts, with other weights and a
//! new key from another DKG, each producer switching a little after the one before:
//! the new term produces blocks and every producer ends on one tip again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
use tenure_chain::{
    block::{AccountId, ChainState, SignerEvidence, TermContext, Transfer},
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
use tenure_tests::sim::{Faults, SimEvent, SimNet, Window};

const NETWORK: &str = "producer-sim";
const TERM: u64 = 5;
const TICK: Duration = Duration::from_millis(10);
/// The producers' BTC spend; their shares of the 100 follow it. A crash of the
/// heaviest still leaves 78 shares, so the threshold of 67 has some slack.
const SPENDS: [u16; 6] = [22, 20, 18, 16, 14, 10];
const BYZANTINE: usize = 5;
const CRASH_AT_MS: u64 = 5_000;
const BACK_AT_MS: u64 = 10_000;
const END_MS: u64 = 14_000;

fn keypair(n: usize) -> Keypair {
    Keypair::from_secret_key(
        SECP256K1,
        &SecretKey::from_slice(&[n as u8 + 1; 32]).unwrap(),
    )
}

fn id(n: usize) -> ProducerId {
    ProducerId::of(&keypair(n).x_only_public_key().0)
}

fn member(n: usize) -> MemberId {
    MemberId::from(keypair(n).x_only_public_key().0)
}

fn index_of(producer: ProducerId) -> usize {
    (0..SPENDS.len()).find(|n| id(*n) == producer).unwrap()
}

/// The term key: the weighted DKG among the producers, every message delivered at once.
fn term_keys(roster: &Roster) -> Vec<KeyShare> {
    let now = Instant::now();
    let session = session_id(b"term 5", roster, 0);
    let mut members = BTreeMap::new();
    let mut queue = VecDeque::new();
    for n in 0..SPENDS.len() {
        let (dkg, out) = Dkg::start(
            session,
            roster.clone(),
            keypair(n),
            Duration::from_secs(5),
            now,
            &mut ChaCha20Rng::seed_from_u64(n as u64),
        )
        .unwrap();
        members.insert(member(n), dkg);
        queue.extend(out.into_iter().map(|o| (member(n), o)));
    }
    let mut keys = BTreeMap::new();
    while let Some((from, output)) = queue.pop_front() {
        match output {
            DkgOutput::Broadcast(msg) => {
                for (to, dkg) in members.iter_mut().filter(|(to, _)| **to != from) {
                    let out = dkg.handle(from, msg.clone(), Delivery::Broadcast, now);
                    queue.extend(out.into_iter().map(|o| (*to, o)));
                }
            }
            DkgOutput::Send { to, msg } => {
                let out = members
                    .get_mut(&to)
                    .unwrap()
                    .handle(from, msg, Delivery::Direct, now);
                queue.extend(out.into_iter().map(|o| (to, o)));
            }
            DkgOutput::Completed(key) => {
                keys.insert(from, *key);
            }
            DkgOutput::Failed(f) => panic!("the term's DKG failed: {f}"),
        }
    }
    (0..SPENDS.len())
        .map(|n| keys.remove(&member(n)).unwrap())
        .collect()
}

#[derive(Clone, Debug)]
enum Msg {
    Producer(Box<ProducerMessage>),
    Sign(SignMessage),
}

type Validator = Box<dyn Fn(&[u8]) -> Result<[u8; 32], String>>;

struct Node {
    producer: Producer,
    signing: Signing<Validator>,
}

struct Sim {
    net: SimNet<usize, Msg>,
    nodes: Vec<Node>,
    /// Heights and hashes of blocks applied, per producer.
    applied: Vec<Vec<(u64, [u8; 32])>>,
    /// Headers the byzantine producer proposed.
    byzantine_proposals: Vec<[u8; 32]>,
    /// Whether a producer deposed the byzantine one.
    byzantine_deposed: bool,
    transfers_included: usize,
    /// Load generator: next nonce per account.
    nonces: Vec<u64>,
    /// Nonces for FROST (a cryptographic generator, seeded: the run replays).
    frost_rng: ChaCha20Rng,
}

impl Sim {
    fn new(seed: u64, keys: &[KeyShare], context: &TermContext) -> Sim {
        let faults = Faults {
            loss: 0.02,
            duplicate: 0.02,
            delay_ms: (5, 40),
            offline: vec![],
            ..Faults::default()
        };
        let mut net = SimNet::new(seed, TICK, faults);
        let now = net.now();
        let config = ProducerConfig {
            block_interval: Duration::from_millis(400),
            leader_timeout: Duration::from_millis(1_500),
            ..ProducerConfig::default()
        };
        let nodes = (0..SPENDS.len())
            .map(|n| {
                let approvals = Approvals::default();
                let producer = Producer::new(
                    NETWORK,
                    keypair(n),
                    context.clone(),
                    ChainState::default(),
                    config,
                    approvals.clone(),
                    now,
                    &mut net.rng,
                );
                let validator: Validator = Box::new(move |payload: &[u8]| {
                    approvals
                        .approve(payload, NETWORK)
                        .map_err(|e| e.to_string())
                });
                let signing = Signing::new(
                    Arc::new(keys[n].clone()),
                    validator,
                    SigningConfig::default(),
                );
                Node { producer, signing }
            })
            .collect();
        Sim {
            net,
            nodes,
            applied: vec![Vec::new(); SPENDS.len()],
            byzantine_proposals: Vec::new(),
            byzantine_deposed: false,
            transfers_included: 0,
            nonces: vec![0; SPENDS.len()],
            frost_rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    fn broadcast(&mut self, from: usize, msg: Msg) {
        for to in (0..SPENDS.len()).filter(|to| *to != from) {
            self.send(from, to, msg.clone());
        }
    }

    /// Producer messages face every fault. Federation messages travel over the
    /// federation's reliable channels (retransmitted until acknowledged; simulated on
    /// their own in frost-fed's channel simulation), so they are delayed, duplicated
    /// and cut by partitions and crashes, but not lost.
    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if matches!(msg, Msg::Sign(_)) {
            let loss = std::mem::replace(&mut self.net.faults.loss, 0.0);
            self.net.send(from, to, msg);
            self.net.faults.loss = loss;
        } else {
            self.net.send(from, to, msg);
        }
    }

    fn producer_outputs(&mut self, n: usize, outputs: Vec<ProducerOutput>) {
        for output in outputs {
            match output {
                ProducerOutput::Broadcast(mut msg) => {
                    if n == BYZANTINE
                        && let ProducerBody::Proposal { block, .. } = &mut msg.body
                    {
                        block.header.state_root = [0xbb; 32];
                        self.byzantine_proposals.push(block.header.hash());
                    }
                    self.broadcast(n, Msg::Producer(Box::new(msg)));
                }
                ProducerOutput::Send { to, msg } => {
                    self.send(n, index_of(to), Msg::Producer(Box::new(msg)));
                }
                ProducerOutput::Sign { payload } => {
                    let now = self.net.now();
                    let (_, out) =
                        self.nodes[n]
                            .signing
                            .request(&payload, now, &mut self.frost_rng);
                    self.sign_outputs(n, out);
                }
                ProducerOutput::Applied(block) => {
                    self.applied[n].push((block.header.height, block.header.hash()));
                    if n == 0 {
                        self.transfers_included += block
                            .txs
                            .iter()
                            .filter(|t| matches!(t, tenure_chain::block::Tx::Transfer(_)))
                            .count();
                    }
                }
                ProducerOutput::Leader { .. } | ProducerOutput::Announce(_) => {}
                ProducerOutput::Deposed { leader, .. } => {
                    if index_of(leader) == BYZANTINE {
                        self.byzantine_deposed = true;
                    }
                }
            }
        }
    }

    fn sign_outputs(&mut self, n: usize, outputs: Vec<SignOutput>) {
        for output in outputs {
            match output {
                SignOutput::Broadcast(msg) => self.broadcast(n, Msg::Sign(msg)),
                SignOutput::Send { to, msg } => {
                    let to = (0..SPENDS.len()).find(|m| member(*m) == to).unwrap();
                    self.send(n, to, Msg::Sign(msg));
                }
                // Any producer that learns the signature completes the block; its
                // evidence is checked when the block is validated.
                SignOutput::Signed { record, .. } | SignOutput::Seen { record, .. } => {
                    let now = self.net.now();
                    let signature: [u8; 64] = record.signature.as_slice().try_into().unwrap();
                    let out = self.nodes[n].producer.on_signed(
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
    /// submitted to every producer as the transactions topic would.
    fn load(&mut self) {
        if self.nodes[0].producer.state().height == 0 {
            return;
        }
        let from = self.net.rng.below(SPENDS.len() as u64) as usize;
        let to = (from + 1) % SPENDS.len();
        let nonce = self.nonces[from];
        let transfer = Transfer::sign(
            NETWORK,
            &keypair(from),
            AccountId(id(to).0),
            10,
            1 + self.net.rng.below(5),
            nonce,
        );
        let mut admitted = false;
        for n in 0..SPENDS.len() {
            if !self.net.is_offline(n) {
                admitted |= self.nodes[n].producer.submit(transfer.clone()).is_ok();
            }
        }
        if admitted {
            self.nonces[from] += 1;
        }
    }

    fn run_until(&mut self, until_ms: u64) {
        while let Some(event) = self.net.next_event(until_ms) {
            let now = self.net.now();
            match event {
                SimEvent::Tick => {
                    if self.net.now_ms().is_multiple_of(50) {
                        self.load();
                    }
                    for n in 0..SPENDS.len() {
                        if self.net.is_offline(n) {
                            continue;
                        }
                        let out = self.nodes[n].producer.on_tick(now, &mut self.net.rng);
                        self.producer_outputs(n, out);
                        let out = self.nodes[n].signing.on_tick(now, &mut self.frost_rng);
                        self.sign_outputs(n, out);
                    }
                }
                SimEvent::Deliver { from, to, msg } => match msg {
                    Msg::Producer(msg) => {
                        if let Ok(out) =
                            self.nodes[to]
                                .producer
                                .handle(id(from), *msg, now, &mut self.net.rng)
                        {
                            self.producer_outputs(to, out);
                        }
                    }
                    Msg::Sign(msg) => {
                        let out = self.nodes[to].signing.handle(
                            member(from),
                            msg,
                            now,
                            &mut self.frost_rng,
                        );
                        self.sign_outputs(to, out);
                    }
                },
            }
        }
    }

    fn height(&self, n: usize) -> u64 {
        self.nodes[n].producer.state().height
    }
}

/// Term `term`'s keys (by the weighted DKG) and context, for producers spending
/// `spends` (in producer order).
fn term(term: u64, spends: &[u16; 6]) -> (Vec<KeyShare>, TermContext) {
    let weights: Vec<(MemberId, u16)> = (0..spends.len()).map(|n| (member(n), spends[n])).collect();
    let roster = Roster::new(weights, 100, 67).unwrap();
    let keys = term_keys(&roster);
    let context = TermContext {
        term,
        producer_key: keys[0].output_key().unwrap(),
        producer_shares: keys[0].public.clone(),
        stacker_key: None,
        coinbase: (0..spends.len())
            .map(|n| (AccountId(id(n).0), 1_000_000))
            .collect(),
        cost_limit: 100_000,
        consensus_hash: consensus_hash(term, &[term as u8; 32]),
        previous_consensus_hash: consensus_hash(term - 1, &[term as u8 - 1; 32]),
        producers: (0..spends.len())
            .map(|n| (AccountId(id(n).0), u64::from(spends[n])))
            .collect(),
        // The federation's roster decides who holds each share.
        share_owners: (1..=100u16)
            .map(|s| {
                let holder = roster.holder_of(s).unwrap();
                (0..spends.len()).find(|n| member(*n) == holder).unwrap() as u16
            })
            .collect(),
    };
    (keys, context)
}

#[test]
fn a_producer_set_produces_signed_blocks_through_a_crashed_leader_a_byzantine_one_and_a_term_change()
 {
    let (keys, context) = term(TERM, &SPENDS);
    // The next term's producers spend in reverse: other weights, another key.
    let mut next_spends = SPENDS;
    next_spends.reverse();
    let (next_keys, next_context) = term(TERM + 1, &next_spends);

    for seed in 1..=2u64 {
        let mut sim = Sim::new(seed, &keys, &context);
        sim.run_until(CRASH_AT_MS);
        let before = sim.height(0);
        assert!(
            before >= 3,
            "seed {seed}: only {before} blocks before the crash"
        );

        // The leader now (an honest one if the byzantine leads: it is deposed soon).
        let leader = (0..SPENDS.len())
            .filter_map(|n| sim.nodes[n].producer.leader())
            .next()
            .map(index_of)
            .unwrap();
        sim.net.faults.offline.push((
            leader,
            Window {
                from: CRASH_AT_MS,
                until: BACK_AT_MS,
            },
        ));
        sim.run_until(BACK_AT_MS);
        let survivor = (leader + 1) % SPENDS.len();
        assert!(
            sim.height(survivor) > before,
            "seed {seed}: no block after leader {leader} crashed"
        );

        // The crashed producer is back; faults stop, so everyone converges.
        sim.run_until(END_MS - 2_000);
        sim.net.faults.loss = 0.0;
        sim.net.faults.duplicate = 0.0;
        sim.run_until(END_MS);
        // Production goes on, so a block may be on its way at any instant: every
        // producer must be on one tip at some moment within a second.
        let agree = |sim: &Sim| {
            let first = sim.nodes[0].producer.state().tip;
            sim.nodes.iter().all(|n| n.producer.state().tip == first)
        };
        let mut agreed = agree(&sim);
        while !agreed && sim.net.now_ms() < END_MS + 1_000 {
            let step = sim.net.now_ms() + 10;
            sim.run_until(step);
            agreed = agree(&sim);
        }
        assert!(
            agreed,
            "seed {seed}: producers end on different tips (heights {:?})",
            (0..SPENDS.len()).map(|n| sim.height(n)).collect::<Vec<_>>()
        );
        assert!(
            sim.transfers_included > 0,
            "seed {seed}: no transfer included"
        );
        for (n, applied) in sim.applied.iter().enumerate() {
            for (_, hash) in applied {
                assert!(
                    !sim.byzantine_proposals.contains(hash),
                    "seed {seed}: producer {n} applied a byzantine proposal"
                );
            }
        }
        assert!(
            sim.byzantine_proposals.is_empty() || sim.byzantine_deposed,
            "seed {seed}: the byzantine leader was not deposed"
        );
        // The next term starts: each producer learns of it a little later than the
        // one before (the burn block travels), switches its member to the new key and
        // its producer to the new term, with the old term's last blocks in flight.
        let term_height = sim.height(0);
        let change_at = sim.net.now_ms();
        sim.net.faults.loss = 0.02;
        sim.net.faults.duplicate = 0.02;
        for (n, key) in next_keys.iter().enumerate() {
            sim.run_until(change_at + 40 * n as u64);
            let now = sim.net.now();
            sim.nodes[n].signing.rekey(Arc::new(key.clone()));
            let out = sim.nodes[n]
                .producer
                .begin_term(next_context.clone(), now, &mut sim.net.rng);
            sim.producer_outputs(n, out);
        }
        sim.run_until(change_at + 5_000);
        sim.net.faults.loss = 0.0;
        sim.net.faults.duplicate = 0.0;
        sim.run_until(change_at + 6_000);
        let mut agreed = agree(&sim);
        while !agreed && sim.net.now_ms() < change_at + 7_000 {
            let step = sim.net.now_ms() + 10;
            sim.run_until(step);
            agreed = agree(&sim);
        }
        assert!(
            agreed,
            "seed {seed}: after the term change, producers end on different tips (heights {:?})",
            (0..SPENDS.len()).map(|n| sim.height(n)).collect::<Vec<_>>()
        );
        for n in 0..SPENDS.len() {
            let state = sim.nodes[n].producer.state();
            assert_eq!(
                state.term,
                TERM + 1,
                "seed {seed}: producer {n} is not in the new term"
            );
            assert!(
                state.height > term_height + 1,
                "seed {seed}: producer {n} has no block of the new term"
            );
        }
        eprintln!(
            "seed {seed}: height {} ({} before the crash, {} at the term change), {} transfers, {} byzantine proposals",
            sim.height(0),
            before,
            term_height,
            sim.transfers_included,
            sim.byzantine_proposals.len()
        );
    }
}
