//! Following the embedded regtest burnchain over the overlay: a sans-IO protocol
//! (the testnet's embedded burnchain: real regtest blocks, shared over the overlay).
//!
//! One node of a testnet mines; every node keeps a full [`RegtestChain`] and follows
//! it with a [`BurnSync`]. The rules:
//!
//! - A new block travels on the burn-blocks gossip topic, consensus-encoded, at most
//!   [`MAX_BURN_BLOCK_BYTES`]. [`check_gossip`] is the cheap check a relay makes
//!   before forwarding: the block decodes within the bound, carries regtest's proof
//!   of work and a correct merkle root. Its transactions are checked by the chain
//!   before the block extends it.
//! - A block whose parent is not the tip (the node joined late, missed a block, or the
//!   sender is on another branch) is answered by a fetch: the follower sends a block
//!   locator (its tip, the nine blocks below it, then hashes at doubling distances back
//!   to genesis; at most [`MAX_LOCATOR`]). The peer answers with the blocks of its best
//!   chain after the highest locator hash it shares, at most [`MAX_FETCH_BYTES`]. The
//!   follower extends its tip with them, or reorganises onto them when they form a
//!   longer branch.
//! - Anti-entropy: every [`ANTI_ENTROPY_INTERVAL`] a follower also asks a neighbour in
//!   turn, so a block it never heard of by gossip (the last one before a quiet spell)
//!   still reaches it.
//! - A sender whose bytes break the rules ([`BurnError::is_misbehaviour`]) is reported;
//!   one that is merely ahead of us is asked for what we lack.
//!
//! Fed with bytes, it returns bytes to send and the change at the tip; the node's
//! driver carries them over the overlay.

use std::time::Duration;

use bitcoin::{Block, BlockHash, ScriptBuf, Target, consensus, hashes::Hash};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::regtest::{RegtestChain, RegtestError};
use crate::codec::{self, CodecError, Versioned};

/// How often a follower asks a neighbour whether it holds more blocks.
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(2);

/// Largest burn block accepted from a peer.
pub const MAX_BURN_BLOCK_BYTES: usize = 512 * 1024;

/// Largest fetch answer, in encoded blocks (within the overlay's frame limit).
pub const MAX_FETCH_BYTES: usize = 768 * 1024;

/// Most locator hashes a fetch request may carry (enough for 2^60 blocks).
pub const MAX_LOCATOR: usize = 64;

/// Version of the fetch messages.
const FETCH_VERSION: u16 = 1;

/// Largest fetch request: [`MAX_LOCATOR`] hashes of 32 bytes with their framing.
const MAX_FETCH_REQUEST_BYTES: usize = MAX_LOCATOR * 40 + 64;

/// Largest fetch answer: [`MAX_FETCH_BYTES`] of blocks with their framing.
const MAX_FETCH_RESPONSE_BYTES: usize = MAX_FETCH_BYTES + 64 * 1024;

/// Decodes a fetch message of at most `limit` bytes and of this build's version.
fn decode_fetch<T: serde::de::DeserializeOwned + Versioned>(
    body: &[u8],
    limit: usize,
    what: &'static str,
) -> Result<T, BurnError> {
    codec::decode(body, limit).map_err(|error| match error {
        CodecError::TooLarge { len, limit } => BurnError::TooLarge { what, len, limit },
        CodecError::UnsupportedVersion { found, .. } => BurnError::Version(found),
        CodecError::Undecodable(reason) | CodecError::Encode(reason) => {
            BurnError::Undecodable { what, reason }
        }
    })
}

impl Versioned for FetchRequest {
    const VERSION: u16 = FETCH_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

impl Versioned for FetchResponse {
    const VERSION: u16 = FETCH_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

/// Why a burn block or fetch message was not used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BurnError {
    /// Longer than its bound.
    #[error("{what} of {len} bytes exceeds {limit}")]
    TooLarge {
        /// What it was.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        limit: usize,
    },
    /// It does not decode.
    #[error("undecodable {what}: {reason}")]
    Undecodable {
        /// What it was.
        what: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A fetch message of another version.
    #[error("fetch message version {0} is not spoken here")]
    Version(u16),
    /// A fetch request with more hashes than [`MAX_LOCATOR`].
    #[error("a locator of {0} hashes is too long")]
    LocatorTooLong(usize),
    /// The header's target is not regtest's, or the hash does not meet it.
    #[error("burn block without its proof of work")]
    NoProofOfWork,
    /// The merkle root does not commit to the transactions.
    #[error("burn block with a wrong merkle root")]
    WrongMerkleRoot,
    /// Encoding a fetch message failed (it cannot for these types; kept as an error
    /// rather than sending empty bytes).
    #[error("encoding a fetch message failed: {0}")]
    Encode(String),
    /// Its parent is not our tip: fetch from the sender.
    #[error("the block's parent is not our tip")]
    UnknownParent,
    /// The chain refused it.
    #[error("invalid burn block: {0}")]
    Invalid(#[from] RegtestError),
}

impl BurnError {
    /// Whether the sender broke the rules (rather than being ahead of us).
    pub fn is_misbehaviour(&self) -> bool {
        !matches!(
            self,
            BurnError::UnknownParent | BurnError::Invalid(RegtestError::NotLonger)
        )
    }
}

/// What changed at the tip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TipChange {
    /// New blocks on top of the old tip.
    Extended {
        /// The new height.
        height: u64,
        /// The new tip.
        tip: BlockHash,
    },
    /// A longer branch replaced blocks above `fork_height`.
    Reorganised {
        /// The last block both branches share.
        fork_height: u64,
        /// The new height.
        height: u64,
        /// The new tip.
        tip: BlockHash,
    },
}

#[derive(Serialize, Deserialize)]
struct FetchRequest {
    version: u16,
    locator: Vec<ByteBuf>,
}

#[derive(Serialize, Deserialize)]
struct FetchResponse {
    version: u16,
    blocks: Vec<ByteBuf>,
}

/// The check a relay makes on a gossiped burn block before forwarding it: it decodes
/// within the size bound, and its proof of work and merkle root hold. Its
/// transactions are checked later, against the chain.
pub fn check_gossip(data: &[u8]) -> Result<(), BurnError> {
    let block = decode_block(data)?;
    if block.header.target() != Target::MAX_ATTAINABLE_REGTEST
        || block
            .header
            .validate_pow(Target::MAX_ATTAINABLE_REGTEST)
            .is_err()
    {
        return Err(BurnError::NoProofOfWork);
    }
    if !block.check_merkle_root() {
        return Err(BurnError::WrongMerkleRoot);
    }
    Ok(())
}

fn decode_block(data: &[u8]) -> Result<Block, BurnError> {
    if data.len() > MAX_BURN_BLOCK_BYTES {
        return Err(BurnError::TooLarge {
            what: "burn block",
            len: data.len(),
            limit: MAX_BURN_BLOCK_BYTES,
        });
    }
    consensus::deserialize(data).map_err(|e| BurnError::Undecodable {
        what: "burn block",
        reason: e.to_string(),
    })
}

/// A node's copy of the burnchain and the rules to follow it.
#[derive(Clone, Debug, Default)]
pub struct BurnSync {
    chain: RegtestChain,
}

impl BurnSync {
    /// A chain holding only regtest's genesis block.
    pub fn new() -> BurnSync {
        BurnSync::default()
    }

    /// The chain as followed so far.
    pub fn chain(&self) -> &RegtestChain {
        &self.chain
    }

    /// Adds `tx` to the mempool of the next block this node mines.
    pub fn submit(&mut self, tx: bitcoin::Transaction) -> Result<(), RegtestError> {
        self.chain.submit(tx)
    }

    /// Mines the next block paying `reward`; returns what to publish and the change.
    pub fn mine(&mut self, reward: &ScriptBuf, time: u32) -> (Vec<u8>, TipChange) {
        let tip = self.chain.mine(reward, time);
        let bytes = self
            .chain
            .block_at(self.chain.height())
            .map(consensus::serialize)
            .unwrap_or_default();
        (
            bytes,
            TipChange::Extended {
                height: self.chain.height(),
                tip,
            },
        )
    }

    /// A block from gossip. `Ok(None)`: already held. `UnknownParent`: ask the sender
    /// with [`BurnSync::fetch_request`].
    pub fn on_block(&mut self, data: &[u8]) -> Result<Option<TipChange>, BurnError> {
        let block = decode_block(data)?;
        let hash = block.block_hash();
        if self.chain.height_of(&hash).is_some() {
            return Ok(None);
        }
        if block.header.prev_blockhash != self.chain.tip() {
            return Err(BurnError::UnknownParent);
        }
        self.chain.accept(block)?;
        Ok(Some(TipChange::Extended {
            height: self.chain.height(),
            tip: hash,
        }))
    }

    /// Hashes of our best chain from the tip back to genesis: the last ten, then at
    /// doubling distances.
    pub fn locator(&self) -> Vec<BlockHash> {
        let mut hashes = Vec::new();
        let mut height = self.chain.height();
        let mut step: u64 = 1;
        loop {
            if let Some(block) = self.chain.block_at(height) {
                hashes.push(block.block_hash());
            }
            if height == 0 || hashes.len() >= MAX_LOCATOR - 1 {
                break;
            }
            if hashes.len() >= 10 {
                step = step.saturating_mul(2);
            }
            height = height.saturating_sub(step);
        }
        if let Some(genesis) = self.chain.block_at(0)
            && hashes.last() != Some(&genesis.block_hash())
        {
            hashes.push(genesis.block_hash());
        }
        hashes
    }

    /// The body of a fetch request for what follows our chain.
    pub fn fetch_request(&self) -> Result<Vec<u8>, BurnError> {
        let request = FetchRequest {
            version: FETCH_VERSION,
            locator: self
                .locator()
                .iter()
                .map(|h| ByteBuf::from(h.to_byte_array().to_vec()))
                .collect(),
        };
        codec::encode(&request).map_err(|e| BurnError::Encode(e.to_string()))
    }

    /// Answers a peer's fetch request: our best chain's blocks after the highest
    /// locator hash we hold, up to [`MAX_FETCH_BYTES`].
    pub fn answer_fetch(&self, body: &[u8]) -> Result<Vec<u8>, BurnError> {
        let request: FetchRequest = decode_fetch(body, MAX_FETCH_REQUEST_BYTES, "fetch request")?;
        if request.locator.len() > MAX_LOCATOR {
            return Err(BurnError::LocatorTooLong(request.locator.len()));
        }
        let mut from = 0;
        for hash in &request.locator {
            let hash = BlockHash::from_slice(hash).map_err(|e| BurnError::Undecodable {
                what: "locator hash",
                reason: e.to_string(),
            })?;
            if let Some(height) = self.chain.height_of(&hash) {
                from = height;
                break;
            }
        }
        let mut blocks = Vec::new();
        let mut size: usize = 0;
        for height in from.saturating_add(1)..=self.chain.height() {
            let Some(block) = self.chain.block_at(height) else {
                break;
            };
            let bytes = consensus::serialize(block);
            size = size.saturating_add(bytes.len());
            if size > MAX_FETCH_BYTES {
                break;
            }
            blocks.push(ByteBuf::from(bytes));
        }
        codec::encode(&FetchResponse {
            version: FETCH_VERSION,
            blocks,
        })
        .map_err(|e| BurnError::Encode(e.to_string()))
    }

    /// A peer's answer to our fetch request: extends our tip, or reorganises onto a
    /// longer branch. `Ok(None)`: nothing new.
    pub fn on_fetch_response(&mut self, body: &[u8]) -> Result<Option<TipChange>, BurnError> {
        let response: FetchResponse = decode_fetch(body, MAX_FETCH_RESPONSE_BYTES, "fetch answer")?;
        if response.version != FETCH_VERSION {
            return Err(BurnError::Version(response.version));
        }
        let mut branch = response
            .blocks
            .iter()
            .map(|b| decode_block(b))
            .collect::<Result<Vec<Block>, _>>()?;
        // Skip what we already hold.
        let held = branch
            .iter()
            .take_while(|b| self.chain.height_of(&b.block_hash()).is_some())
            .count();
        branch.drain(..held);
        let Some(first) = branch.first() else {
            return Ok(None);
        };
        let fork_height = self
            .chain
            .height_of(&first.header.prev_blockhash)
            .ok_or(BurnError::Invalid(RegtestError::UnknownParent))?;
        if fork_height == self.chain.height() {
            for block in branch {
                self.chain.accept(block)?;
            }
            return Ok(Some(TipChange::Extended {
                height: self.chain.height(),
                tip: self.chain.tip(),
            }));
        }
        self.chain.reorg(fork_height, branch)?;
        Ok(Some(TipChange::Reorganised {
            fork_height,
            height: self.chain.height(),
            tip: self.chain.tip(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;
    use crate::burnchain::regtest::{coinbase, seal, subsidy};

    fn reward() -> ScriptBuf {
        ScriptBuf::new_op_return([1u8; 4])
    }

    fn miner_with(blocks: u32) -> (BurnSync, Vec<Vec<u8>>) {
        let mut miner = BurnSync::new();
        let published = (0..blocks)
            .map(|i| miner.mine(&reward(), 1_700_000_000 + i).0)
            .collect();
        (miner, published)
    }

    #[test]
    fn a_follower_takes_gossiped_blocks_in_order_and_ignores_repeats() {
        let (miner, published) = miner_with(3);
        let mut follower = BurnSync::new();
        for (i, block) in published.iter().enumerate() {
            assert!(matches!(
                follower.on_block(block),
                Ok(Some(TipChange::Extended { height, .. })) if height == i as u64 + 1
            ));
            assert_eq!(check_gossip(block), Ok(()));
        }
        assert_eq!(follower.on_block(&published[1]), Ok(None));
        assert_eq!(follower.chain().tip(), miner.chain().tip());
    }

    #[test]
    fn a_late_follower_fetches_what_it_missed() {
        let (miner, published) = miner_with(30);
        let mut follower = BurnSync::new();
        follower.on_block(&published[0]).unwrap();
        // Block 30 arrives by gossip: its parent is unknown, so it asks.
        assert_eq!(
            follower.on_block(&published[29]),
            Err(BurnError::UnknownParent)
        );
        let answer = miner
            .answer_fetch(&follower.fetch_request().unwrap())
            .unwrap();
        assert_eq!(
            follower.on_fetch_response(&answer),
            Ok(Some(TipChange::Extended {
                height: 30,
                tip: miner.chain().tip()
            }))
        );
        // Asking again brings nothing new.
        let answer = miner
            .answer_fetch(&follower.fetch_request().unwrap())
            .unwrap();
        assert_eq!(follower.on_fetch_response(&answer), Ok(None));
    }

    #[test]
    fn a_longer_branch_fetched_from_a_peer_reorganises_the_follower() {
        let (mut miner, published) = miner_with(5);
        let mut follower = BurnSync::new();
        for block in &published {
            follower.on_block(block).unwrap();
        }
        // The follower mines two blocks of its own; the miner's branch grows to 9.
        follower.mine(&ScriptBuf::new_op_return([2u8; 4]), 1_800_000_000);
        follower.mine(&ScriptBuf::new_op_return([2u8; 4]), 1_800_000_001);
        for i in 0..4 {
            miner.mine(&reward(), 1_700_000_100 + i);
        }
        let answer = miner
            .answer_fetch(&follower.fetch_request().unwrap())
            .unwrap();
        assert_eq!(
            follower.on_fetch_response(&answer),
            Ok(Some(TipChange::Reorganised {
                fork_height: 5,
                height: 9,
                tip: miner.chain().tip()
            }))
        );
        // The miner, shorter than nothing now, ignores the follower's old branch.
        let answer = follower
            .answer_fetch(&miner.fetch_request().unwrap())
            .unwrap();
        assert_eq!(miner.on_fetch_response(&answer), Ok(None));
    }

    #[test]
    fn bad_blocks_and_messages_are_refused_with_their_reason() {
        let (_, published) = miner_with(1);
        let mut follower = BurnSync::new();
        assert!(matches!(
            check_gossip(b"junk"),
            Err(BurnError::Undecodable { .. })
        ));
        assert!(matches!(
            check_gossip(&vec![0; MAX_BURN_BLOCK_BYTES + 1]),
            Err(BurnError::TooLarge { len, .. }) if len == MAX_BURN_BLOCK_BYTES + 1
        ));
        // A block claiming more than the subsidy: proof of work and merkle root hold,
        // the chain refuses it.
        let genesis = follower.chain().tip();
        let greedy = seal(
            genesis,
            vec![coinbase(
                1,
                &reward(),
                subsidy(1) + bitcoin::Amount::from_sat(1),
            )],
            1_700_000_000,
        );
        let bytes = consensus::serialize(&greedy);
        assert_eq!(check_gossip(&bytes), Ok(()));
        let refused = follower.on_block(&bytes).unwrap_err();
        assert!(matches!(
            refused,
            BurnError::Invalid(RegtestError::InvalidBlock(_))
        ));
        assert!(refused.is_misbehaviour());
        // The merkle root changed after sealing.
        let mut tampered: Block = consensus::deserialize(&published[0]).unwrap();
        tampered.txdata[0].output[0].value = bitcoin::Amount::from_sat(1);
        assert_eq!(
            check_gossip(&consensus::serialize(&tampered)),
            Err(BurnError::WrongMerkleRoot)
        );
        assert!(matches!(
            follower.answer_fetch(b"junk"),
            Err(BurnError::Undecodable { .. })
        ));
        assert!(matches!(
            follower.on_fetch_response(b"junk"),
            Err(BurnError::Undecodable { .. })
        ));
        assert_eq!(follower.chain().height(), 0, "nothing was taken");
    }

    #[test]
    fn the_locator_reaches_genesis_in_few_hashes() {
        let (miner, _) = miner_with(300);
        let locator = miner.locator();
        assert_eq!(locator.first(), Some(&miner.chain().tip()));
        assert_eq!(
            locator.last(),
            Some(&miner.chain().block_at(0).unwrap().block_hash())
        );
        assert!(locator.len() < 25, "{}", locator.len());
    }
}
