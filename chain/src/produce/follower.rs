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
//! - **Term keys come with the blocks**: a batch carries the proofs
//!   ([`TermKeyProof`]) of its blocks' terms, so a follower that joined late, or a
//!   node that restarted after the certificates were gossiped, still learns every
//!   term's key. A proof counts exactly as its certificates would, only for a term
//!   whose plan the follower has ([`super::key_book`]), and a batch carries at most
//!   [`MAX_BATCH_PROOFS`] of them.
//!   The follower keeps the proof of every term it accepted, to send on.
//! - **Resuming**: a follower can start from a stored tip instead of genesis
//!   ([`Follower::resume`]).
//! - **Bounded memory**: the states of the last [`STATES_KEPT`] heights below the
//!   best tip are kept, so a block may build on any of them; older ones are dropped.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use crate::{
    block::{Block, BlockError, ChainState, Hash},
    codec::{self, CodecError, Versioned},
};

use super::{
    TermPlan,
    key_book::TermKeyBook,
    term_key::{KeyCertificate, TermKeyError, TermKeyProof},
};

/// Blocks held until their parent or their term's key is known, at most.
pub const MAX_WAITING: usize = 256;

pub use super::key_book::MAX_EARLY_CERTIFICATES;

/// Heights below the best tip whose states are kept.
pub const STATES_KEPT: u64 = 256;

/// Wire version of [`BlockBatch`]. Version 2 carries term key proofs.
pub const BLOCK_BATCH_VERSION: u16 = 2;

/// Term key proofs a [`BlockBatch`] carries, at most: each costs its receiver up to
/// 100 signature checks.
pub const MAX_BATCH_PROOFS: usize = 8;

/// Largest encoded [`BlockBatch`] a follower decodes.
pub const MAX_BLOCK_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Blocks a node sends a follower that asked for them (`GetBlocks`), in height order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBatch {
    /// Wire version ([`BLOCK_BATCH_VERSION`]).
    pub version: u16,
    /// The blocks.
    pub blocks: Vec<Block>,
    /// The key proofs of the blocks' terms the sender holds, at most
    /// [`MAX_BATCH_PROOFS`].
    pub proofs: Vec<TermKeyProof>,
}

impl Versioned for BlockBatch {
    const VERSION: u16 = BLOCK_BATCH_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

impl BlockBatch {
    /// A batch of `blocks` with the key `proofs` of their terms (the first
    /// [`MAX_BATCH_PROOFS`] kept).
    pub fn new(blocks: Vec<Block>, mut proofs: Vec<TermKeyProof>) -> BlockBatch {
        proofs.truncate(MAX_BATCH_PROOFS);
        BlockBatch {
            version: BLOCK_BATCH_VERSION,
            blocks,
            proofs,
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
    book: TermKeyBook,
    states: BTreeMap<Hash, Arc<ChainState>>,
    best: Arc<ChainState>,
    waiting: VecDeque<Block>,
    refused_blocks: u64,
}

impl Follower {
    /// A follower at genesis on `network`.
    pub fn new(network: &str) -> Follower {
        Follower::resume(network, ChainState::default())
    }

    /// A follower on `network` starting from `tip` (a chain store's): blocks below it
    /// are not taken again.
    pub fn resume(network: &str, tip: ChainState) -> Follower {
        let tip = Arc::new(tip);
        Follower {
            network: network.to_owned(),
            book: TermKeyBook::new(network),
            states: BTreeMap::from([(tip.tip, tip.clone())]),
            best: tip,
            waiting: VecDeque::new(),
            refused_blocks: 0,
        }
    }

    /// The best tip's state.
    pub fn best(&self) -> &Arc<ChainState> {
        &self.best
    }

    /// The terms whose key this follower accepted.
    pub fn terms_certified(&self) -> Vec<u64> {
        self.book.terms_certified()
    }

    /// The output key of `term`, once accepted.
    pub fn term_key(&self, term: u64) -> Option<bitcoin::XOnlyPublicKey> {
        self.book.context(term).map(|c| c.producer_key)
    }

    /// The term keys this follower accepted.
    pub fn book(&self) -> &TermKeyBook {
        &self.book
    }

    /// The proof of `term`'s key, once accepted.
    pub fn proof(&self, term: u64) -> Option<&TermKeyProof> {
        self.book.proof(term)
    }

    /// Whether the burnchain named `term`'s producers to this follower.
    pub fn has_plan(&self, term: u64) -> bool {
        self.book.has_plan(term)
    }

    /// Blocks refused as invalid.
    pub fn refused_blocks(&self) -> u64 {
        self.refused_blocks
    }

    /// Certificates and proofs refused.
    pub fn refused_certificates(&self) -> u64 {
        self.book.refused()
    }

    /// The height to ask a peer for blocks from, when blocks wait for a parent this
    /// follower never got (a gossiped block lost, or a follower that joined late):
    /// the height after its best tip.
    pub fn wanted(&self) -> Option<u64> {
        self.waiting
            .iter()
            .any(|b| self.book.context(b.header.term).is_some())
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
        self.book.on_plan(plan, previous_consensus_block)
    }

    /// A producer's certificate of its term's key: `Ok(Some(term))` when it made the
    /// term's key accepted (blocks waiting for it are then applied by the next
    /// [`Follower::retry`]).
    pub fn on_certificate(
        &mut self,
        certificate: KeyCertificate,
    ) -> Result<Option<u64>, TermKeyError> {
        self.book.on_certificate(certificate)
    }

    /// A proof of a term's key, sent with blocks (module docs): `Ok(Some(term))` when
    /// it made the term's key accepted.
    pub fn on_proof(&mut self, proof: &TermKeyProof) -> Result<Option<u64>, TermKeyError> {
        self.book.on_proof(proof)
    }

    /// A batch a peer sent: its proofs, then its blocks. Returns the heights applied
    /// and the refusals (a proof or a block that does not verify).
    pub fn on_batch(&mut self, batch: BlockBatch) -> (Vec<u64>, Vec<String>) {
        let mut refused = Vec::new();
        for proof in batch.proofs.iter().take(MAX_BATCH_PROOFS) {
            if let Err(e) = self.on_proof(proof) {
                refused.push(format!("term {} key proof: {e}", proof.record.term));
            }
        }
        let mut applied = self.retry();
        for block in batch.blocks {
            let height = block.header.height;
            match self.on_block(block) {
                Followed::Applied(heights) => applied.extend(heights),
                Followed::Refused(e) => refused.push(format!("block {height}: {e}")),
                Followed::Waiting | Followed::Known => {}
            }
        }
        (applied, refused)
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
        let context = self.book.context(block.header.term)?;
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
        self.book
            .forget_certificates_before(self.best.term.saturating_sub(1));
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
        block::{
            TermContext,
            build::{self, ProducerGroup},
        },
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
        let batch = BlockBatch::new(blocks[1..].to_vec(), Vec::new());
        let batch = BlockBatch::from_bytes(&batch.to_bytes().unwrap()).unwrap();
        for block in batch.blocks {
            follower.on_block(block);
        }
        assert_eq!(follower.best().height, 4);
        assert_eq!(follower.wanted(), None);
    }

    /// A follower that heard none of the term's certificates (it joined late) takes
    /// the term's key from the proof a batch carries, keeps the proof to pass on, and
    /// applies the batch's blocks; a proof with one forged signature, or without the
    /// threshold's weight, makes no key accepted and no block applied.
    #[test]
    fn a_late_follower_takes_the_terms_key_from_a_batchs_proof() {
        let (plan, record, certificates) = term_three();
        let context = record.context(&plan, None).unwrap();
        let blocks = chain(&context, 3);
        let mut source = Follower::new(NET);
        source.on_plan(plan.clone(), None);
        for c in certificates.iter().cloned() {
            let _ = source.on_certificate(c);
        }
        let proof = source
            .proof(3)
            .expect("the source accepted term 3's key")
            .clone();
        let weight = roster_of(&plan, &BTreeSet::new()).unwrap();
        let proven: u16 = proof
            .signatures
            .iter()
            .map(|(m, _)| weight.roster.weight_of(m))
            .sum();
        assert!(proven >= 67, "the proof carries the threshold: {proven}");

        // A proof of a term whose plan the follower does not have: dropped unchecked,
        // and not kept for when the plan comes.
        let mut unplanned = Follower::new(NET);
        let (applied, refused) =
            unplanned.on_batch(BlockBatch::new(blocks.clone(), vec![proof.clone()]));
        assert!(applied.is_empty() && refused.is_empty());
        assert!(unplanned.on_plan(plan.clone(), None).is_empty());
        // A member twice: refused before any signature is checked.
        let mut doubled = proof.clone();
        doubled.signatures.push(doubled.signatures[0].clone());
        let mut late = Follower::new(NET);
        late.on_plan(plan.clone(), None);
        assert!(matches!(
            late.on_proof(&doubled),
            Err(TermKeyError::BadProof(_))
        ));

        // A forged signature in the proof: refused there, nothing applied.
        let mut forged = proof.clone();
        forged.signatures[0].1 = KeyCertificate::sign(NET, record.clone(), &keypair(77)).signature;
        let mut late = Follower::new(NET);
        late.on_plan(plan.clone(), None);
        let batch = BlockBatch::new(blocks.clone(), vec![forged]);
        let (applied, refused) =
            late.on_batch(BlockBatch::from_bytes(&batch.to_bytes().unwrap()).unwrap());
        assert!(applied.is_empty());
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(late.terms_certified(), Vec::<u64>::new());

        // Signatures short of the threshold: counted, nothing accepted.
        let mut short = proof.clone();
        while short
            .signatures
            .iter()
            .map(|(m, _)| weight.roster.weight_of(m))
            .sum::<u16>()
            >= 67
        {
            short.signatures.pop();
        }
        let mut late = Follower::new(NET);
        late.on_plan(plan.clone(), None);
        let (applied, _) = late.on_batch(BlockBatch::new(blocks.clone(), vec![short]));
        assert!(applied.is_empty());
        assert_eq!(late.waiting(), 3);

        // The whole proof: the key is accepted and the blocks applied.
        let mut late = Follower::new(NET);
        late.on_plan(plan, None);
        let (applied, refused) =
            late.on_batch(BlockBatch::new(blocks.clone(), vec![proof.clone()]));
        assert_eq!((applied, refused), (vec![1, 2, 3], Vec::<String>::new()));
        assert_eq!(late.proof(3), Some(&proof));
        assert_eq!(late.best().tip, blocks[2].header.hash());
    }

    #[test]
    fn a_resumed_follower_takes_blocks_from_its_stored_tip_on() {
        let (plan, record, certificates) = term_three();
        let context = record.context(&plan, None).unwrap();
        let blocks = chain(&context, 4);
        let mut full = Follower::new(NET);
        full.on_plan(plan.clone(), None);
        for c in certificates.iter().cloned() {
            let _ = full.on_certificate(c);
        }
        for b in &blocks[..2] {
            full.on_block(b.clone());
        }
        let stored = ChainState::clone(full.best());
        let mut resumed = Follower::resume(NET, stored);
        resumed.on_plan(plan, None);
        for c in certificates {
            let _ = resumed.on_certificate(c);
        }
        assert_eq!(resumed.best().height, 2);
        assert_eq!(
            resumed.on_block(blocks[2].clone()),
            Followed::Applied(vec![3])
        );
        // Below the stored tip: its parent is not known here, so it only waits.
        assert_eq!(resumed.on_block(blocks[0].clone()), Followed::Waiting);
        assert_eq!(resumed.best().height, 3);
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
