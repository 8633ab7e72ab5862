//! Blocks, transactions and their validation (seed 000 "blocks", seed 001 "Producer
//! Signing Protocol", seed 002 tenure changes).
//!
//! The rules, each with its typed refusal ([`BlockError`]):
//!
//! - **Header.** A block builds on the tip (parent hash, height + 1) in the current
//!   term. Its header (parent, term, height, transaction root, state root, time) is
//!   signed by the term's producer group key (BIP340, 64 bytes) over the header hash
//!   alone: robust signing (ROAST) decides which shares sign only while it signs, so
//!   the signed message cannot name them. Where a stacker set is configured, a
//!   stacker-group signature over the same message is also required.
//! - **Signers, verified.** The block carries [`SignerEvidence`]: the FROST signing
//!   package and every signature share. Each share is checked against its verifying
//!   share in the term's public key package ([`TermContext::producer_shares`]), the
//!   shares must aggregate to the block's signature, and the shares that signed must
//!   number at least [`SIGNING_THRESHOLD`] of the [`SIGNER_SHARES`]. A bitmap claim
//!   proves nothing; this evidence is bound to the signature (other shares would make
//!   another signature), so the signer set can be neither padded nor forged.
//! - **Transactions.** Accounts hold balances and nonces; a transfer is signed by its
//!   sender, carries the sender's next nonce and pays amount plus fee from its
//!   balance. Signatures are checked on all cores before any state changes
//!   ([`signatures`]); a check that cannot complete makes the block invalid.
//! - **Term opening.** The term's coinbase is the first transaction of its first
//!   block and pays exactly the term's payouts; its `BlockFound` tenure change is the
//!   second. A later block may open with an `Extend`, which starts a fresh cost
//!   budget. Each tenure change names the term's consensus hash (and the previous
//!   term's, for a BlockFound), the parent block, the previous tenure's block count
//!   and the producer key's hash, and carries the granting group's signature: the
//!   stackers' where a stacker set is configured, else at least 67 producer shares.
//! - **Cost.** Cost is counted per term (the SIP: 10 × a block's limit), not per
//!   block. There are no microblocks.
//! - **Fees** ([`fees`]): 40% to the producers whose shares signed the block, paid by
//!   the next block (a block's state root cannot depend on who signs it); 60% to the
//!   next term's producers, carried in the state until their first block.
//! - **The signers paid are the ones the next block names.** Robust signing can
//!   complete one header more than once with other signers, so validators may hold
//!   different, equally valid versions of a block. A block therefore carries the
//!   version of its parent whose signers it pays ([`Block::parent_signature`]),
//!   checked like a block's own evidence (signature, every share, 67 of 100) against
//!   the term's key; its state root binds the payout. Paying from each validator's
//!   own version let two honest producers compute two state roots for one proposal
//!   and depose an honest leader (found by the 10-producer simulation). A term's
//!   first block carries none: the parent's evidence is under the previous term's
//!   key, so what the parent owed its signers is carried to the new term's producers
//!   with the rest of the carried fees.
//! - **State root.** The header commits to every account after the block, in key
//!   order, and to the carried fees.
//!
//! Validation ([`ChainState::validate`]) returns a [`ChainChangeset`]: the new tip
//! record and the accounts the block touched. [`ChainState::apply`] merges it, and
//! `chain::store` persists exactly it.
//!
//! Test and benchmark builders live in `build`, behind the `test-utils` feature.

mod error;
pub mod fees;
pub mod signatures;
mod state;
mod tx;
mod validate;

#[cfg(any(test, feature = "test-utils"))]
pub mod build;

pub use error::{BlockError, CoinbaseError, FeeError, TenureChangeError, TransferError};
pub use state::{Account, ChainChangeset, ChainState, TermContext};
pub use tx::{MAX_TX_BYTES, Transfer, Tx};
pub use validate::CheckedProposal;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::codec::{self, Versioned};

/// Signer shares in a producer group.
pub const SIGNER_SHARES: usize = 100;

/// Shares whose signature makes a block valid.
pub const SIGNING_THRESHOLD: u32 = 67;

/// Largest encoded block accepted.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// Wire version of blocks, and of transactions on their own ([`Tx::to_bytes`]).
/// Version 2: the signature covers the header alone and the signer bitmap gave way to
/// [`SignerEvidence`].
pub const BLOCK_VERSION: u16 = 2;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// An account: the x-only public key that signs its transfers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// The account of `key`.
    pub fn of(key: &bitcoin::XOnlyPublicKey) -> AccountId {
        AccountId(key.serialize())
    }

    /// The account written as 64 hex digits (as [`std::fmt::Display`] writes it).
    pub fn from_hex(text: &str) -> Option<AccountId> {
        let bytes = hex::decode(text.trim()).ok()?;
        <[u8; 32]>::try_from(bytes).ok().map(AccountId)
    }
}

impl AsRef<[u8]> for AccountId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The cost of a transaction: one unit per transaction (the term's budget counts
/// them).
pub fn cost(_tx: &Tx) -> u64 {
    1
}

/// A block header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The parent block's hash.
    pub parent: Hash,
    /// The term it belongs to.
    pub term: u64,
    /// Its height.
    pub height: u64,
    /// Merkle root of its transaction ids.
    pub tx_root: Hash,
    /// Hash of the account state after it.
    pub state_root: Hash,
    /// Seconds since the Unix epoch.
    pub time: u64,
}

impl Header {
    /// The block hash.
    pub fn hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/header/v1");
        h.update(self.parent);
        h.update(self.term.to_be_bytes());
        h.update(self.height.to_be_bytes());
        h.update(self.tx_root);
        h.update(self.state_root);
        h.update(self.time.to_be_bytes());
        Sha256::digest(h.finalize()).into()
    }
}

/// A block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Wire version ([`BLOCK_VERSION`]).
    pub version: u16,
    /// The header.
    pub header: Header,
    /// The transactions.
    pub txs: Vec<Tx>,
    /// The producer group's BIP340 signature over [`Block::signing_message`].
    pub producer_signature: ByteBuf,
    /// Which shares made the producer signature, and the proof.
    pub signers: SignerEvidence,
    /// The stacker group's signature over the same message, where one is required.
    pub stacker_signature: Option<ByteBuf>,
    /// The parent's producer signature and signer evidence: the version of the parent
    /// whose signers this block pays. Present exactly when the parent belongs to this
    /// block's term.
    #[serde(default)]
    pub parent_signature: Option<BlockSignature>,
}

/// One version of a signed block: its producer signature and the evidence of who
/// made it. Robust signing can complete one header more than once, with other
/// signers, so several valid versions of a block may exist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSignature {
    /// The producer group's BIP340 signature.
    pub signature: ByteBuf,
    /// Which shares made it, and the proof.
    pub signers: SignerEvidence,
}

impl BlockSignature {
    /// The version `block` is.
    pub fn of(block: &Block) -> BlockSignature {
        BlockSignature {
            signature: block.producer_signature.clone(),
            signers: block.signers.clone(),
        }
    }
}

/// The proof of which producer shares made a block's signature: the FROST signing
/// package (every signer's nonce commitments and the message) and each share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerEvidence {
    /// The serialized signing package.
    pub package: ByteBuf,
    /// (share number 1–100, serialized signature share) for every share that signed.
    pub shares: Vec<(u16, ByteBuf)>,
}

impl SignerEvidence {
    /// The signature record this evidence and `signature` make over `message`.
    pub fn record(
        &self,
        message: Hash,
        signature: &[u8],
    ) -> tenure_frost_fed::sign::SignatureRecord {
        tenure_frost_fed::sign::SignatureRecord {
            message,
            signature: ByteBuf::from(signature.to_vec()),
            package: self.package.clone(),
            shares: self.shares.clone(),
        }
    }

    /// The share numbers that made `signature` over `message`, each share verified
    /// against `context`'s verifying shares; why not, if the evidence proves nothing.
    pub fn verified_shares(
        &self,
        message: Hash,
        signature: &[u8],
        context: &TermContext,
    ) -> Result<std::collections::BTreeSet<u16>, String> {
        if self.shares.len() > SIGNER_SHARES {
            return Err("more shares than exist".into());
        }
        let shares = self
            .record(message, signature)
            .verify_shares(&context.producer_shares)
            .map_err(|e| e.to_string())?;
        if shares
            .iter()
            .any(|n| *n == 0 || usize::from(*n) > SIGNER_SHARES)
        {
            return Err("a share number outside 1–100".into());
        }
        Ok(shares)
    }

    /// The evidence in a federation signature record.
    pub fn of(record: &tenure_frost_fed::sign::SignatureRecord) -> SignerEvidence {
        SignerEvidence {
            package: record.package.clone(),
            shares: record.shares.clone(),
        }
    }
}

/// Merkle root of transaction ids (the last id is paired with itself on odd levels).
pub fn tx_root(txs: &[Tx]) -> Hash {
    let mut level: Vec<Hash> = txs.iter().map(Tx::id).collect();
    if level.is_empty() {
        return [0; 32];
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                let a = pair.first().copied().unwrap_or([0; 32]);
                let b = pair.get(1).copied().unwrap_or(a);
                let mut h = Sha256::new();
                h.update(a);
                h.update(b);
                Sha256::digest(h.finalize()).into()
            })
            .collect();
    }
    level.first().copied().unwrap_or([0; 32])
}

impl Block {
    /// A block not signed yet: what a leader proposes.
    pub fn unsigned(header: Header, txs: Vec<Tx>) -> Block {
        Block {
            version: BLOCK_VERSION,
            header,
            txs,
            producer_signature: ByteBuf::new(),
            signers: SignerEvidence::default(),
            stacker_signature: None,
            parent_signature: None,
        }
    }

    /// What the producer (and stacker) group signs: the header hash, under a domain tag.
    pub fn signing_message(header: &Header) -> Hash {
        Block::signing_message_of(&header.hash())
    }

    /// [`Block::signing_message`] of the block whose header hashes to `hash`.
    pub fn signing_message_of(hash: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/block-signature/v2");
        h.update(hash);
        h.finalize().into()
    }

    /// The share numbers that made the producer signature, each share verified against
    /// `context`'s verifying shares; refused if the evidence proves nothing.
    pub fn verified_signers(
        &self,
        context: &TermContext,
    ) -> Result<std::collections::BTreeSet<u16>, BlockError> {
        self.signers
            .verified_shares(
                Block::signing_message(&self.header),
                &self.producer_signature,
                context,
            )
            .map_err(BlockError::SignerEvidence)
    }

    /// Encodes the block ([`crate::codec`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, BlockError> {
        Ok(codec::encode(self)?)
    }

    /// Decodes a block of at most [`MAX_BLOCK_BYTES`] and of this build's version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Block, BlockError> {
        Ok(codec::decode(bytes, MAX_BLOCK_BYTES)?)
    }
}

impl Versioned for Block {
    const VERSION: u16 = BLOCK_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}
