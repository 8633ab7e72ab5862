//! A node that follows the chain without producing: it learns each term's key from its
//! producers' certificates ([`super::term_key`]) and its plan from the node's own
//! burnchain scan, and validates every block it receives against them, as a producer
//! would (DESIGN "Block production": "any node, producer or not, checks a term key
//! against the selected producers' enrollment keys before it accepts a block").
//!
//! Rules:
//!
//! - **Nothing unverified is applied.** A block is applied only on the state of its
//!   parent, which this follower applied itself, and only once its term's key is
//!   accepted; it is validated in full (place, signature, signer evidence, every
//!   transaction, the state root).
//! - **Blocks that cannot be judged yet wait**: a block whose parent or term key is
//!   not known is held, at most [`MAX_WAITING`] of them (the oldest dropped first), and
//!   applied when what it needs arrives. Certificates that arrive before the
//!   burnchain names their term's producers wait the same way, at most
//!   [`MAX_EARLY_CERTIFICATES`], after their signature is checked.
//! - **The best tip** is the applied block of the highest term, then the highest
//!   height: a term's first block builds on the last announced block, which can be
//!   below the previous term's tip, and the producers drop the unannounced rest.
//! - **Gaps are fetched**: while blocks wait for a parent it never got, the follower
//!   asks a peer that published blocks for those after its best tip
//!   ([`Follower::wanted`]); the answer ([`BlockBatch`]) is offered block by block
//!   like gossip, so a peer's answer is validated as fully as a gossiped block.
//! - **Bounded memory**: the states of the last [`STATES_KEPT`] heights below the
//!   best tip are kept, so a block may build on any of them; older ones are dropped.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use crate::{
    block::{Block, BlockError, ChainState, Hash, TermContext},
    codec::{self, CodecError, Versioned},
};

use super::{
    TermPlan,
    term_key::{KeyCertificate, Offered, TermKeyError, TermKeys},
};

/// Blocks held until their parent or their term's key is known, at most.
pub const MAX_WAITING: usize = 256;

/// Certificates held until the burnchain names their term's producers, at most.
pub const MAX_EARLY_CERTIFICATES: usize = 256;

/// Heights below the best tip whose states are kept.
pub const STATES_KEPT: u64 = 256;

/// Wire version of [`BlockBatch`].
pub const BLOCK_BATCH_VERSION: u16 = 1;

/// Largest encoded [`BlockBatch`] a follower decodes.
pub const MAX_BLOCK_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Blocks a node sends a follower that asked for them (`GetBlocks`), in height order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBatch {
    /// Wire version ([`BLOCK_BATCH_VERSION`]).
    pub version: u16,
    /// The blocks.
    pub blocks: Vec<Block>,
}

impl Versioned for BlockBatch {
    const VERSION: u16 = BLOCK_BATCH_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

impl BlockBatch {
    /// A batch of `blocks`.
    pub fn new(blocks: Vec<Block>) -> BlockBatch {
        BlockBatch {
            version: BLOCK_BATCH_VERSION,
            blocks,
        }
    }

    /// Encodes the batch.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes a batch of at most [`MAX_BLOCK_BATCH_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<BlockBatch, CodecError> {
        codec::decode(bytes, MAX_BLOCK_BATCH_BYTES)
    }
}

/// What a block offered to the follower did.
#[derive(Debug, PartialEq, Eq)]
pub enum Followed {
    /// Applied, with the blocks that were waiting for it: their heights.
    Applied(Vec<u64>),
    /// Held until its parent or its term's key is known.
    Waiting,
    /// Already applied.
    Known,
    /// Invalid on its parent's state.
    Refused(BlockError),
}

/// A chain follower (module docs).
#[derive(Debug)]
pub struct Follower {
    network: String,
    keys: TermKeys,
    /// Each term's plan and the burn block term N-1's consensus hash came from.
    plans: BTreeMap<u64, (TermPlan, Option<[u8; 32]>)>,
    contexts: BTreeMap<u64, TermContext>,
    states: BTreeMap<Hash, Arc<ChainState>>,
    best: Arc<ChainState>,
    waiting: VecDeque<Block>,
    early: VecDeque<KeyCertificate>,
    refused_blocks: u64,
    refused_certificates: u64,
}

impl Follower {
    /// A follower at genesis on `network`.
    pub fn new(network: &str) -> Follower {
        let genesis = Arc::new(ChainState::default());
        Follower {
            network: network.to_owned(),
            keys: TermKeys::new(network),
            plans: BTreeMap::new(),
            contexts: BTreeMap::new(),
            states: BTreeMap::from([(genesis.tip, genesis.clone())]),
            best: genesis,
            waiting: VecDeque::new(),
            early: VecDeque::new(),
            refused_blocks: 0,
            refused_certificates: 0,
        }
    }

    /// The best tip's state.
    pub fn best(&self) -> &Arc<ChainState> {
        &self.best
    }

    /// The terms whose key this follower accepted.
    pub fn terms_certified(&self) -> Vec<u64> {
        self.contexts.keys().copied().collect()
    }

    /// The output key of `term`, once accepted.
    pub fn term_key(&self, term: u64) -> Option<bitcoin::XOnlyPublicKey> {
        self.contexts.get(&term).map(|c| c.producer_key)
    }

    /// Blocks refused as invalid.
    pub fn refused_blocks(&self) -> u64 {
        self.refused_blocks
    }

    /// Certificates refused.
    pub fn refused_certificates(&self) -> u64 {
        self.refused_certificates
    }

    /// The height to ask a peer for blocks from, when blocks wait for a parent this
    /// follower never got (a gossiped block lost, or a follower that joined late):
    /// the height after its best tip.
    pub fn wanted(&self) -> Option<u64> {
        self.waiting
            .iter()
            .any(|b| self.contexts.contains_key(&b.header.term))
            .then(|| self.best.height.saturating_add(1))
    }

    /// Blocks waiting for a parent or a term key.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The burnchain named term `plan.term`'s producers; `previous_consensus_block`
    /// is the block term N-1's consensus hash was made from. Certificates that were
    /// waiting for it are offered; returns the terms whose key was accepted.
    pub fn on_plan(
        &mut self,
        plan: TermPlan,
        previous_consensus_block: Option<[u8; 32]>,
    ) -> Vec<u64> {
        let term = plan.term;
        if self.plans.contains_key(&term) {
            return Vec::new();
        }
        self.plans.insert(term, (plan, previous_consensus_block));
        let (now, later): (Vec<KeyCertificate>, Vec<KeyCertificate>) =
            self.early.drain(..).partition(|c| c.record.term == term);
        self.early = later.into();
        let mut certified = Vec::new();
        for certificate in now {
            if let Ok(Some(term)) = self.on_certificate(certificate) {
                certified.push(term);
            }
        }
        certified
    }

    /// A producer's certificate of its term's key: `Ok(Some(term))` when it made the
    /// term's key accepted (blocks waiting for it are then applied by the next
    /// [`Follower::retry`]).
    pub fn on_certificate(
        &mut self,
        certificate: KeyCertificate,
    ) -> Result<Option<u64>, TermKeyError> {
        let term = certificate.record.term;
        let Some((plan, previous)) = self.plans.get(&term) else {
            if let Err(e) = certificate.check_signature(&self.network) {
                self.refused_certificates = self.refused_certificates.saturating_add(1);
                return Err(e);
            }
            if self.early.len() >= MAX_EARLY_CERTIFICATES {
                self.early.pop_front();
            }
            self.early.push_back(certificate);
            return Ok(None);
        };
        let offered = match self.keys.offer(&certificate, plan) {
            Ok(offered) => offered,
            Err(e) => {
                self.refused_certificates = self.refused_certificates.saturating_add(1);
                return Err(e);
            }
        };
        let Offered::Certified(record) = offered else {
            return Ok(None);
        };
        let context = record.context(plan, *previous)?;
        self.contexts.insert(term, context);
        Ok(Some(term))
    }

    /// A signed block from a peer.
    pub fn on_block(&mut self, block: Block) -> Followed {
        let hash = block.header.hash();
        if self.states.contains_key(&hash) {
            return Followed::Known;
        }
        match self.try_apply(&block) {
            None => {
                if !self.waiting.iter().any(|b| b.header.hash() == hash) {
                    if self.waiting.len() >= MAX_WAITING {
                        self.waiting.pop_front();
                    }
                    self.waiting.push_back(block);
                }
                Followed::Waiting
            }
            Some(Err(e)) => {
                self.refused_blocks = self.refused_blocks.saturating_add(1);
                Followed::Refused(e)
            }
            Some(Ok(height)) => {
                let mut applied = vec![height];
                applied.extend(self.retry());
                Followed::Applied(applied)
            }
        }
    }

    /// Applies every waiting block that can be now (after a term key was accepted);
    /// returns their heights.
    pub fn retry(&mut self) -> Vec<u64> {
        let mut applied = Vec::new();
        loop {
            let mut progressed = false;
            let waiting: Vec<Block> = self.waiting.drain(..).collect();
            for block in waiting {
                if self.states.contains_key(&block.header.hash()) {
                    continue;
                }
                match self.try_apply(&block) {
                    None => self.waiting.push_back(block),
                    Some(Err(_)) => {
                        self.refused_blocks = self.refused_blocks.saturating_add(1);
                    }
                    Some(Ok(height)) => {
                        applied.push(height);
                        progressed = true;
                    }
                }
            }
            if !progressed {
                return applied;
            }
        }
    }

    /// `None`: its parent's state or its term's key is not known yet.
    fn try_apply(&mut self, block: &Block) -> Option<Result<u64, BlockError>> {
        let parent = self.states.get(&block.header.parent)?;
        let context = self.contexts.get(&block.header.term)?;
        let changes = match parent.validate(block, context, &self.network) {
            Ok(changes) => changes,
            Err(e) => return Some(Err(e)),
        };
        let mut state = ChainState::clone(parent);
        state.apply(&changes);
        let state = Arc::new(state);
        let height = state.height;
        if (state.term, state.height) > (self.best.term, self.best.height) {
            self.best = state.clone();
        }
        self.states.insert(state.tip, state);
        let floor = self.best.height.saturating_sub(STATES_KEPT);
        self.states.retain(|_, s| s.height >= floor);
        self.keys.forget_before(self.best.term.saturating_sub(1));
        Some(Ok(height))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bitcoin::{
        Amount, Txid,
        hashes::Hash as _,
        secp256k1::{Keypair, SECP256K1, SecretKey},
    };

    use super::*;
    use crate::{
        block::build::{self, ProducerGroup},
        produce::term_key::{TermKeyRecord, roster_of},
        shares,
        terms::Producer,
    };

    const NET: &str = "testnet";

    fn keypair(n: u8) -> Keypair {
        Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
    }

    /// Term 3's plan of four producers, the record of the shared test group's key,
    /// and every producer's certificate of it.
    fn term_three() -> (TermPlan, TermKeyRecord, Vec<KeyCertificate>) {
        let keys: Vec<Keypair> = (1..=4).map(keypair).collect();
        let producers: Vec<Producer> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Producer {
                producer: k.public_key(),
                weight: Amount::from_sat(40_000 - 10_000 * i as u64),
                txid: Txid::from_byte_array([i as u8; 32]),
            })
            .collect();
        let seed = [5; 32];
        let plan = TermPlan {
            term: 3,
            assignment: shares::assign(&producers, seed),
            producers,
            seed,
        };
        let record = TermKeyRecord::new(
            3,
            seed,
            &BTreeSet::new(),
            [0; 32],
            &ProducerGroup::shared().public,
        )
        .unwrap();
        let certificates = keys
            .iter()
            .map(|k| KeyCertificate::sign(NET, record.clone(), k))
            .collect();
        (plan, record, certificates)
    }

    /// `count` blocks of term 3 from genesis, signed by the shared test group.
    fn chain(context: &TermContext, count: usize) -> Vec<Block> {
        let group = ProducerGroup::shared();
        let mut state = ChainState::default();
        let mut blocks = Vec::new();
        for _ in 0..count {
            let (block, after) = if state.height == 0 {
                build::term_start(&state, context, Vec::new(), group, None, NET)
            } else {
                build::block(&state, context, context.term, Vec::new(), group, None)
            }
            .unwrap();
            state = after;
            blocks.push(block);
        }
        blocks
    }

    #[test]
    fn blocks_wait_for_their_term_key_and_parent_then_apply_in_order() {
        let (plan, record, certificates) = term_three();
        let context = record.context(&plan, None).unwrap();
        let blocks = chain(&context, 5);
        let mut follower = Follower::new(NET);
        // Certificates before the burnchain named the producers, blocks in reverse.
        for c in certificates.iter().cloned() {
            assert_eq!(follower.on_certificate(c), Ok(None));
        }
        for b in blocks.iter().rev().cloned() {
            assert_eq!(follower.on_block(b), Followed::Waiting);
        }
        assert_eq!(follower.best().height, 0);
        assert_eq!(follower.on_plan(plan, None), vec![3]);
        assert_eq!(follower.retry(), vec![1, 2, 3, 4, 5]);
        assert_eq!(follower.best().tip, blocks.last().unwrap().header.hash());
        assert_eq!(follower.waiting(), 0);
        assert_eq!(follower.on_block(blocks[2].clone()), Followed::Known);
    }

    #[test]
    fn without_a_certified_key_nothing_is_applied_and_invalid_blocks_are_refused() {
        let (plan, record, certificates) = term_three();
        let context = record.context(&plan, None).unwrap();
        let blocks = chain(&context, 3);
        let mut follower = Follower::new(NET);
        follower.on_plan(plan.clone(), None);
        // One producer's certificate is not the threshold: blocks wait.
        let lightest = roster_of(&plan, &BTreeSet::new()).unwrap();
        let light = certificates
            .iter()
            .find(|c| lightest.roster.weight_of(&c.member) < 67)
            .unwrap();
        follower.on_certificate(light.clone()).unwrap();
        assert_eq!(follower.on_block(blocks[0].clone()), Followed::Waiting);
        // A forged certificate changes nothing.
        let mut forged = KeyCertificate::sign(NET, record.clone(), &keypair(77));
        forged.member = certificates[1].member;
        assert!(follower.on_certificate(forged).is_err());
        assert_eq!(follower.terms_certified(), Vec::<u64>::new());
        for c in certificates {
            let _ = follower.on_certificate(c);
        }
        assert_eq!(follower.retry(), vec![1]);
        // A block with a wrong state root is refused; the chain goes on.
        let mut bad = blocks[1].clone();
        bad.header.state_root = [0xee; 32];
        assert!(matches!(follower.on_block(bad), Followed::Refused(_)));
        assert_eq!(
            follower.on_block(blocks[1].clone()),
            Followed::Applied(vec![2])
        );
        assert_eq!(follower.refused_blocks(), 1);
        assert_eq!(follower.refused_certificates(), 1);
    }

    #[test]
    fn a_gap_is_wanted_from_the_height_after_the_best_tip() {
        let (plan, record, certificates) = term_three();
        let context = record.context(&plan, None).unwrap();
        let blocks = chain(&context, 4);
        let mut follower = Follower::new(NET);
        follower.on_plan(plan, None);
        for c in certificates {
            let _ = follower.on_certificate(c);
        }
        assert_eq!(follower.wanted(), None);
        follower.on_block(blocks[0].clone());
        // Block 2 was lost; 3 and 4 wait for it.
        follower.on_block(blocks[2].clone());
        follower.on_block(blocks[3].clone());
        assert_eq!(follower.wanted(), Some(2));
        let batch = BlockBatch::new(blocks[1..].to_vec());
        let batch = BlockBatch::from_bytes(&batch.to_bytes().unwrap()).unwrap();
        for block in batch.blocks {
            follower.on_block(block);
        }
        assert_eq!(follower.best().height, 4);
        assert_eq!(follower.wanted(), None);
    }

    #[test]
    fn waiting_blocks_are_bounded() {
        let (plan, record, _) = term_three();
        let context = record.context(&plan, None).unwrap();
        let block = chain(&context, 1).remove(0);
        let mut follower = Follower::new(NET);
        for n in 0..(MAX_WAITING as u64 + 50) {
            let mut b = block.clone();
            b.header.time = n;
            follower.on_block(b);
        }
        assert_eq!(follower.waiting(), MAX_WAITING);
    }
}
