//! Blocks, transactions and their validation.
//!
//! A block header (parent, term, height, transaction root, state root, time) is
//! signed by the term's producer group key (BIP340, 64 bytes) over the header hash and
//! the signer bitmap, so the signer set cannot be changed after signing; the bitmap's
//! weight must reach 67 of the 100 shares. Where a stacker set is configured, a
//! stacker-group signature over the same message is also required.
//!
//! Accounts hold balances and nonces; transfers pay a fee; the term's coinbase is the
//! first transaction of its first block, and its `BlockFound` tenure change the
//! second. Cost is counted per term (the SIP: 10 × a block's limit), not per block; a
//! block that opens with a tenure `Extend` starts a fresh budget (seed 002). There
//! are no microblocks. A block's fees go 40% to the producers whose shares signed it
//! and 60% to the next term's producers, carried in the state until their first block
//! (seed 000); the state root covers what is carried.
//!
//! Transfer signatures are checked on all cores before any state changes, then the
//! transactions are applied in order.

use std::collections::BTreeMap;

use bitcoin::{
    XOnlyPublicKey,
    secp256k1::{Message, SECP256K1, schnorr},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::{
    rewards::block_fees,
    split::pro_rata,
    tenure_change::{Cause, TenureChange, pubkey_hash},
};

/// Signer shares in a producer group.
pub const SIGNER_SHARES: usize = 100;

/// Shares whose signature makes a block valid.
pub const SIGNING_THRESHOLD: u32 = 67;

/// Largest encoded block accepted.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// A transfer between accounts, signed (BIP340) by the sender's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Sender (x-only key).
    pub from: [u8; 32],
    /// Recipient.
    pub to: [u8; 32],
    /// Amount moved.
    pub amount: u64,
    /// Fee paid to the producers.
    pub fee: u64,
    /// The sender's nonce (its count of transactions so far).
    pub nonce: u64,
    /// BIP340 signature over [`Transfer::digest`].
    pub signature: ByteBuf,
}

impl Transfer {
    /// What the sender signs.
    pub fn digest(&self, network: &str) -> Hash {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/transfer/v1");
        h.update((network.len() as u64).to_be_bytes());
        h.update(network.as_bytes());
        h.update(self.from);
        h.update(self.to);
        h.update(self.amount.to_be_bytes());
        h.update(self.fee.to_be_bytes());
        h.update(self.nonce.to_be_bytes());
        h.finalize().into()
    }

    /// Signs a transfer with the sender's key pair.
    pub fn sign(
        network: &str,
        from: &bitcoin::secp256k1::Keypair,
        to: [u8; 32],
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Transfer {
        let mut t = Transfer {
            from: from.x_only_public_key().0.serialize(),
            to,
            amount,
            fee,
            nonce,
            signature: ByteBuf::new(),
        };
        let sig = SECP256K1.sign_schnorr(&Message::from_digest(t.digest(network)), from);
        t.signature = ByteBuf::from(sig.as_ref().to_vec());
        t
    }

    fn signature_valid(&self, network: &str) -> bool {
        let (Ok(key), Ok(sig)) = (
            XOnlyPublicKey::from_slice(&self.from),
            schnorr::Signature::from_slice(&self.signature),
        ) else {
            return false;
        };
        SECP256K1
            .verify_schnorr(&sig, &Message::from_digest(self.digest(network)), &key)
            .is_ok()
    }
}

/// A transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tx {
    /// The term's coinbase: new coins to the term's producers.
    Coinbase {
        /// The term.
        term: u64,
        /// (recipient, amount).
        payouts: Vec<([u8; 32], u64)>,
    },
    /// A transfer.
    Transfer(Transfer),
    /// A tenure change: `BlockFound` in a term's first block, `Extend` to renew its
    /// budget.
    TenureChange(TenureChange),
}

/// Largest encoded transaction accepted on its own.
pub const MAX_TX_BYTES: usize = 64 * 1024;

impl Tx {
    /// Decodes a transaction, checking its size first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tx, BlockError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(BlockError::TooLarge(bytes.len()));
        }
        serde_cbor::from_slice(bytes).map_err(|e| BlockError::Undecodable(e.to_string()))
    }

    /// The transaction's id.
    pub fn id(&self) -> Hash {
        let bytes = serde_cbor::to_vec(self).unwrap_or_default();
        Sha256::digest(Sha256::digest(bytes)).into()
    }
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
    /// The header.
    pub header: Header,
    /// The transactions.
    pub txs: Vec<Tx>,
    /// Which of the 100 shares signed (bit i = share i + 1).
    pub signers: ByteBuf,
    /// The producer group's BIP340 signature over [`Block::signing_message`].
    pub producer_signature: ByteBuf,
    /// The stacker group's signature over the same message, where one is required.
    pub stacker_signature: Option<ByteBuf>,
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
    /// What the producer (and stacker) group signs: the header hash and the signer
    /// bitmap.
    pub fn signing_message(header: &Header, signers: &[u8]) -> Hash {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/block-signature/v1");
        h.update(header.hash());
        h.update(signers);
        h.finalize().into()
    }

    /// Shares that signed.
    pub fn signer_weight(&self) -> u32 {
        self.signers.iter().map(|b| b.count_ones()).sum()
    }

    /// Encodes the block.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_cbor::to_vec(self).unwrap_or_default()
    }

    /// Decodes a block, checking its size first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Block, BlockError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge(bytes.len()));
        }
        serde_cbor::from_slice(bytes).map_err(|e| BlockError::Undecodable(e.to_string()))
    }
}

/// An account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Balance.
    pub balance: u64,
    /// Transactions sent so far.
    pub nonce: u64,
}

/// Why a block is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Too large to decode.
    #[error("block of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a block.
    #[error("undecodable block: {0}")]
    Undecodable(String),
    /// It does not build on the tip.
    #[error("parent is not the tip")]
    WrongParent,
    /// Wrong height.
    #[error("height {got}, expected {expected}")]
    WrongHeight {
        /// Its height.
        got: u64,
        /// The tip's height plus one.
        expected: u64,
    },
    /// Another term than the current one.
    #[error("term {got}, expected {expected}")]
    WrongTerm {
        /// Its term.
        got: u64,
        /// The current term.
        expected: u64,
    },
    /// The transaction root does not match.
    #[error("transaction root does not match the transactions")]
    TxRoot,
    /// The state root does not match the state after the block.
    #[error("state root does not match the state after the block")]
    StateRoot,
    /// The signer bitmap is malformed.
    #[error("signer bitmap of {0} bytes")]
    SignerBitmap(usize),
    /// Too few shares signed.
    #[error("{got} shares signed; {SIGNING_THRESHOLD} are needed")]
    TooFewSigners {
        /// Shares that signed.
        got: u32,
    },
    /// The producer signature does not verify.
    #[error("the producer group's signature does not verify")]
    ProducerSignature,
    /// A stacker signature is required and missing or invalid.
    #[error("the stacker group's signature is missing or invalid")]
    StackerSignature,
    /// The coinbase is missing, misplaced or wrong.
    #[error("coinbase: {0}")]
    Coinbase(String),
    /// A transfer is invalid.
    #[error("transaction {index}: {reason}")]
    Transfer {
        /// Its position.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A tenure change is missing, misplaced or wrong.
    #[error("tenure change: {0}")]
    TenureChange(String),
    /// The block's fees cannot be paid.
    #[error("fees: {0}")]
    Fees(String),
    /// The term's cost budget is exceeded.
    #[error("the block costs {cost}; the term has {left} left")]
    CostLimit {
        /// The block's cost.
        cost: u64,
        /// What the term had left.
        left: u64,
    },
}

/// What validation needs to know about the current term.
#[derive(Clone, Debug)]
pub struct TermContext {
    /// The term.
    pub term: u64,
    /// The producer group's output key.
    pub producer_key: XOnlyPublicKey,
    /// The stacker group's key, where a stacker set is configured.
    pub stacker_key: Option<XOnlyPublicKey>,
    /// The coinbase this term must pay, in order (from [`crate::rewards::coinbase`]).
    pub coinbase: Vec<([u8; 32], u64)>,
    /// The term's cost budget (the SIP: 10 × a block's limit), renewed by an
    /// `Extend`.
    pub cost_limit: u64,
    /// The term's consensus hash ([`crate::tenure_change::consensus_hash`]).
    pub consensus_hash: [u8; 20],
    /// The previous term's consensus hash.
    pub previous_consensus_hash: [u8; 20],
    /// The term's producers: (account, BTC spent), in selection order.
    pub producers: Vec<([u8; 32], u64)>,
    /// The producer (index into `producers`) holding each of the 100 shares: signer
    /// slot i is share i + 1 ([`crate::weights::Assignment::share_owners`]).
    pub share_owners: Vec<u16>,
}

/// The chain state validation works on: the tip and every account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    /// Hash of the tip block.
    pub tip: Hash,
    /// Height of the tip.
    pub height: u64,
    /// The tip's term (0 before the first block).
    pub term: u64,
    /// Blocks of the tip's term so far.
    pub term_blocks: u64,
    /// Cost spent in the tip's term since it started or was last extended.
    pub term_cost: u64,
    /// Fees waiting for the next term's producers (60% of every block's).
    pub carried_fees: u64,
    /// Accounts by x-only key.
    pub accounts: BTreeMap<[u8; 32], Account>,
}

/// The cost of a transaction: one unit per transaction (the term's budget counts
/// them).
pub fn cost(_tx: &Tx) -> u64 {
    1
}

impl ChainState {
    /// The state root: a hash of every account in key order.
    pub fn state_root(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/state/v1");
        for (key, account) in &self.accounts {
            h.update(key);
            h.update(account.balance.to_be_bytes());
            h.update(account.nonce.to_be_bytes());
        }
        h.update(self.carried_fees.to_be_bytes());
        h.finalize().into()
    }

    /// Validates `block` on top of this state and returns the state after it. Nothing
    /// changes here: the caller keeps the old state when the block is invalid.
    pub fn validate(
        &self,
        block: &Block,
        context: &TermContext,
        network: &str,
    ) -> Result<ChainState, BlockError> {
        let header = &block.header;
        if header.parent != self.tip {
            return Err(BlockError::WrongParent);
        }
        if header.height != self.height + 1 {
            return Err(BlockError::WrongHeight {
                got: header.height,
                expected: self.height + 1,
            });
        }
        if header.term != context.term || header.term < self.term {
            return Err(BlockError::WrongTerm {
                got: header.term,
                expected: context.term,
            });
        }
        if block.signers.len() != SIGNER_SHARES.div_ceil(8) {
            return Err(BlockError::SignerBitmap(block.signers.len()));
        }
        let weight = block.signer_weight();
        if weight < SIGNING_THRESHOLD {
            return Err(BlockError::TooFewSigners { got: weight });
        }
        let message = Message::from_digest(Block::signing_message(header, &block.signers));
        let producer_ok =
            schnorr::Signature::from_slice(&block.producer_signature).is_ok_and(|sig| {
                SECP256K1
                    .verify_schnorr(&sig, &message, &context.producer_key)
                    .is_ok()
            });
        if !producer_ok {
            return Err(BlockError::ProducerSignature);
        }
        if let Some(stacker_key) = &context.stacker_key {
            let ok = block.stacker_signature.as_ref().is_some_and(|sig| {
                schnorr::Signature::from_slice(sig).is_ok_and(|sig| {
                    SECP256K1
                        .verify_schnorr(&sig, &message, stacker_key)
                        .is_ok()
                })
            });
            if !ok {
                return Err(BlockError::StackerSignature);
            }
        }
        if tx_root(&block.txs) != header.tx_root {
            return Err(BlockError::TxRoot);
        }
        let (first_of_term, extends) = self.opening(header.term, &block.txs);
        let spent = if first_of_term || extends {
            0
        } else {
            self.term_cost
        };
        let block_cost: u64 = block.txs.iter().map(cost).sum();
        let left = context.cost_limit.saturating_sub(spent);
        if block_cost > left {
            return Err(BlockError::CostLimit {
                cost: block_cost,
                left,
            });
        }
        check_transfer_signatures(&block.txs, network)?;

        let mut next = self.clone();
        for (index, tx) in block.txs.iter().enumerate() {
            match tx {
                Tx::Coinbase { term, payouts } => {
                    if !(first_of_term && index == 0) {
                        return Err(BlockError::Coinbase(
                            "only the first transaction of a term's first block".into(),
                        ));
                    }
                    if *term != context.term || *payouts != context.coinbase {
                        return Err(BlockError::Coinbase(
                            "does not pay the term's producers".into(),
                        ));
                    }
                    for (to, amount) in payouts {
                        let account = next.accounts.entry(*to).or_default();
                        account.balance = account.balance.saturating_add(*amount);
                    }
                }
                Tx::Transfer(t) => {
                    let reason = |r: &str| BlockError::Transfer {
                        index,
                        reason: r.to_owned(),
                    };
                    let from = next.accounts.get(&t.from).copied().unwrap_or_default();
                    if t.nonce != from.nonce {
                        return Err(reason("wrong nonce"));
                    }
                    let total = t
                        .amount
                        .checked_add(t.fee)
                        .ok_or_else(|| reason("amount overflows"))?;
                    if from.balance < total {
                        return Err(reason("insufficient balance"));
                    }
                    let sender = next.accounts.entry(t.from).or_default();
                    sender.balance -= total;
                    sender.nonce += 1;
                    let recipient = next.accounts.entry(t.to).or_default();
                    recipient.balance = recipient
                        .balance
                        .checked_add(t.amount)
                        .ok_or_else(|| reason("balance overflows"))?;
                }
                Tx::TenureChange(tc) => {
                    let expected = match (first_of_term, index) {
                        (true, 1) => Cause::BlockFound,
                        (false, 0) => Cause::Extend,
                        _ => {
                            return Err(BlockError::TenureChange(format!(
                                "none may stand at position {index}"
                            )));
                        }
                    };
                    self.check_tenure_change(tc, expected, block, context, network)?;
                }
            }
        }
        pay_fees(
            &mut next,
            context,
            &block.signers,
            &block.txs,
            first_of_term,
        )
        .map_err(BlockError::Fees)?;
        if first_of_term {
            if !matches!(block.txs.first(), Some(Tx::Coinbase { .. })) {
                return Err(BlockError::Coinbase(
                    "a term's first block starts with its coinbase".into(),
                ));
            }
            if !matches!(block.txs.get(1), Some(Tx::TenureChange(_))) {
                return Err(BlockError::TenureChange(
                    "a term's first block carries its BlockFound after the coinbase".into(),
                ));
            }
        }
        if next.state_root() != header.state_root {
            return Err(BlockError::StateRoot);
        }
        next.advance(header, block_cost, first_of_term, extends);
        Ok(next)
    }

    /// How a block of `term` with `txs` opens on this state: whether it is its term's
    /// first block, and whether it extends the term (opens with an `Extend`).
    fn opening(&self, term: u64, txs: &[Tx]) -> (bool, bool) {
        let first_of_term = term != self.term || self.term_blocks == 0;
        let extends = matches!(
            txs.first(),
            Some(Tx::TenureChange(tc)) if tc.cause == Cause::Extend
        );
        (first_of_term, extends)
    }

    /// Moves the tip to `header` and counts the block in its term.
    fn advance(&mut self, header: &Header, block_cost: u64, first_of_term: bool, extends: bool) {
        if first_of_term {
            self.term = header.term;
            self.term_blocks = 0;
        }
        if first_of_term || extends {
            self.term_cost = 0;
        }
        self.tip = header.hash();
        self.height = header.height;
        self.term_blocks += 1;
        self.term_cost = self.term_cost.saturating_add(block_cost);
    }

    /// Checks a tenure change of the `expected` cause in `block` on this state.
    fn check_tenure_change(
        &self,
        tc: &TenureChange,
        expected: Cause,
        block: &Block,
        context: &TermContext,
        network: &str,
    ) -> Result<(), BlockError> {
        let wrong = |r: &str| Err(BlockError::TenureChange(r.to_owned()));
        if tc.cause != expected {
            return wrong(match expected {
                Cause::BlockFound => "a term's first block needs a BlockFound",
                Cause::Extend => "only an Extend may open a later block",
            });
        }
        if tc.tenure_consensus_hash != context.consensus_hash {
            return wrong("not this term's consensus hash");
        }
        if expected == Cause::BlockFound
            && tc.previous_tenure_consensus_hash != context.previous_consensus_hash
        {
            return wrong("not the previous term's consensus hash");
        }
        if tc.previous_tenure_end != block.header.parent {
            return wrong("previous tenure end is not the parent block");
        }
        if u64::from(tc.previous_tenure_blocks) != self.term_blocks {
            return wrong("previous tenure blocks do not match the chain");
        }
        if tc.pubkey_hash != pubkey_hash(&context.producer_key) {
            return wrong("pubkey hash is not the producer group's");
        }
        let key = context.stacker_key.unwrap_or(context.producer_key);
        if context.stacker_key.is_none()
            && (tc.signers.len() != SIGNER_SHARES || (tc.signer_count() as u32) < SIGNING_THRESHOLD)
        {
            return wrong("fewer than 67 of the producer group's shares signed");
        }
        if !tc.signature_valid(network, &key) {
            return wrong("the granting group's signature does not verify");
        }
        Ok(())
    }
}

/// Pays a block's fees (seed 000): 40% at once to the producers holding its signing
/// shares, by BTC spent; 60% carried to the next term's producers, who receive what
/// is carried, by BTC spent, in their term's first block. With no producers known,
/// everything stays carried: fees are never lost.
fn pay_fees(
    next: &mut ChainState,
    context: &TermContext,
    signers: &[u8],
    txs: &[Tx],
    first_of_term: bool,
) -> Result<(), String> {
    let credit = |next: &mut ChainState, account: [u8; 32], amount: u64| {
        let a = next.accounts.entry(account).or_default();
        a.balance = a
            .balance
            .checked_add(amount)
            .ok_or_else(|| "a balance overflows".to_owned())?;
        Ok::<(), String>(())
    };
    if first_of_term && !context.producers.is_empty() {
        let carried = std::mem::take(&mut next.carried_fees);
        let spends: Vec<u64> = context.producers.iter().map(|(_, s)| *s).collect();
        for ((account, _), part) in context.producers.iter().zip(pro_rata(carried, &spends)) {
            credit(next, *account, part)?;
        }
    }
    let fees = txs
        .iter()
        .map(|tx| match tx {
            Tx::Transfer(t) => t.fee,
            _ => 0,
        })
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| "the fees overflow".to_owned())?;
    let mut signing: Vec<usize> = (0..SIGNER_SHARES)
        .filter(|i| signers.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .filter_map(|i| context.share_owners.get(i).map(|o| usize::from(*o)))
        .filter(|o| *o < context.producers.len())
        .collect();
    signing.sort_unstable();
    signing.dedup();
    let spends: Vec<u64> = signing
        .iter()
        .filter_map(|i| context.producers.get(*i).map(|(_, s)| *s))
        .collect();
    let split = block_fees(fees, &spends);
    let paid: u64 = split.signers.iter().sum();
    for (i, part) in signing.iter().zip(split.signers) {
        if let Some((account, _)) = context.producers.get(*i) {
            credit(next, *account, part)?;
        }
    }
    next.carried_fees = next
        .carried_fees
        .checked_add(fees - paid)
        .ok_or_else(|| "the carried fees overflow".to_owned())?;
    Ok(())
}

/// Checks every transfer's signature, on all available cores.
fn check_transfer_signatures(txs: &[Tx], network: &str) -> Result<(), BlockError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let chunk = txs.len().div_ceil(threads).max(1);
    let failures: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = txs
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .filter(
                            |(_, tx)| matches!(tx, Tx::Transfer(t) if !t.signature_valid(network)),
                        )
                        .map(|(i, _)| c * chunk + i)
                        .min()
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    match failures.into_iter().min() {
        Some(index) => Err(BlockError::Transfer {
            index,
            reason: "signature does not verify".into(),
        }),
        None => Ok(()),
    }
}

/// Builds and signs blocks: for tests, benchmarks and the testnet's single-key
/// stand-in for a producer group.
pub mod build {
    use super::*;
    use bitcoin::secp256k1::Keypair;

    /// A block of `term` on `state` with `txs`, every share marked as signing,
    /// signed by `producer` (and `stacker`, if given), its fees paid as `context`
    /// says. Returns the block and the state after it. The transactions are applied
    /// without checks (so tests can build invalid blocks): validation is what checks
    /// them.
    pub fn block(
        state: &ChainState,
        context: &TermContext,
        term: u64,
        txs: Vec<Tx>,
        producer: &Keypair,
        stacker: Option<&Keypair>,
    ) -> Option<(Block, ChainState)> {
        let mut next = state.clone();
        let block_cost: u64 = txs.iter().map(cost).sum();
        let (first_of_term, extends) = state.opening(term, &txs);
        for tx in &txs {
            match tx {
                Tx::TenureChange(_) => {}
                Tx::Coinbase { payouts, .. } => {
                    for (to, amount) in payouts {
                        next.accounts.entry(*to).or_default().balance += amount;
                    }
                }
                Tx::Transfer(t) => {
                    let from = next.accounts.entry(t.from).or_default();
                    from.balance = from.balance.checked_sub(t.amount + t.fee)?;
                    from.nonce += 1;
                    next.accounts.entry(t.to).or_default().balance += t.amount;
                }
            }
        }
        let mut bitmap = vec![0xff; SIGNER_SHARES.div_ceil(8)];
        if let Some(last) = bitmap.last_mut() {
            *last = 0x0f; // 96 + 4 = 100 shares
        }
        pay_fees(&mut next, context, &bitmap, &txs, first_of_term).ok()?;
        let header = Header {
            parent: state.tip,
            term,
            height: state.height + 1,
            tx_root: tx_root(&txs),
            state_root: next.state_root(),
            time: 0,
        };
        let message = Message::from_digest(Block::signing_message(&header, &bitmap));
        let sign =
            |k: &Keypair| ByteBuf::from(SECP256K1.sign_schnorr(&message, k).as_ref().to_vec());
        let block = Block {
            producer_signature: sign(producer),
            stacker_signature: stacker.map(sign),
            signers: ByteBuf::from(bitmap),
            header: header.clone(),
            txs,
        };
        next.advance(&header, block_cost, first_of_term, extends);
        Some((block, next))
    }

    /// A tenure change of `cause` for a block of `context`'s term on `state`, signed
    /// by `granter` (the stacker group, or the producer group when there is none) with
    /// every producer share marked.
    pub fn tenure_change(
        state: &ChainState,
        context: &TermContext,
        cause: Cause,
        granter: &Keypair,
        network: &str,
    ) -> TenureChange {
        let mut tc = TenureChange {
            tenure_consensus_hash: context.consensus_hash,
            previous_tenure_consensus_hash: match cause {
                Cause::BlockFound => context.previous_consensus_hash,
                Cause::Extend => context.consensus_hash,
            },
            burn_view_consensus_hash: context.consensus_hash,
            previous_tenure_end: state.tip,
            previous_tenure_blocks: u32::try_from(state.term_blocks).unwrap_or(u32::MAX),
            cause,
            pubkey_hash: pubkey_hash(&context.producer_key),
            signature: [0; 65],
            signers: vec![true; SIGNER_SHARES],
        };
        tc.sign(network, granter);
        tc
    }

    /// The first block of `context`'s term on `state`: its coinbase, its
    /// `BlockFound` (granted by `stacker`, else by `producer`), then `txs`.
    pub fn term_start(
        state: &ChainState,
        context: &TermContext,
        txs: Vec<Tx>,
        producer: &Keypair,
        stacker: Option<&Keypair>,
        network: &str,
    ) -> Option<(Block, ChainState)> {
        let found = tenure_change(
            state,
            context,
            Cause::BlockFound,
            stacker.unwrap_or(producer),
            network,
        );
        let mut all = vec![
            Tx::Coinbase {
                term: context.term,
                payouts: context.coinbase.clone(),
            },
            Tx::TenureChange(found),
        ];
        all.extend(txs);
        block(state, context, context.term, all, producer, stacker)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn context(producers: Vec<([u8; 32], u64)>) -> TermContext {
        TermContext {
            term: 1,
            producer_key: XOnlyPublicKey::from_slice(&[
                0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87,
                0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b,
                0x16, 0xf8, 0x17, 0x98,
            ])
            .unwrap(),
            stacker_key: None,
            coinbase: vec![],
            cost_limit: 10,
            consensus_hash: [0; 20],
            previous_consensus_hash: [0; 20],
            producers,
            share_owners: (0..100).map(|i| u16::from(i >= 75)).collect(),
        }
    }

    fn fee(amount: u64) -> Tx {
        Tx::Transfer(Transfer {
            from: [1; 32],
            to: [2; 32],
            amount: 0,
            fee: amount,
            nonce: 0,
            signature: ByteBuf::new(),
        })
    }

    #[test]
    fn only_the_producers_whose_shares_signed_are_paid_now() {
        let ctx = context(vec![([10; 32], 3), ([11; 32], 1)]);
        // Shares 76–100 signed: producer 1's only.
        let mut bitmap = vec![0u8; 13];
        for i in 75..100 {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        let mut state = ChainState::default();
        pay_fees(&mut state, &ctx, &bitmap, &[fee(100)], false).unwrap();
        assert_eq!(state.accounts.get(&[10; 32]), None);
        assert_eq!(state.accounts[&[11; 32]].balance, 40);
        assert_eq!(state.carried_fees, 60);
    }

    #[test]
    fn with_no_producers_known_every_fee_stays_carried() {
        let ctx = context(vec![]);
        let mut state = ChainState {
            carried_fees: 5,
            ..ChainState::default()
        };
        pay_fees(&mut state, &ctx, &[0xff; 13], &[fee(100)], true).unwrap();
        assert!(state.accounts.is_empty());
        assert_eq!(state.carried_fees, 105);
        let overflow = pay_fees(
            &mut state,
            &ctx,
            &[0xff; 13],
            &[fee(u64::MAX), fee(1)],
            false,
        );
        assert!(overflow.is_err());
    }
}
