//! Why a block is refused: one typed reason per rule, with the values involved, so a
//! caller can tell a wrong nonce from an insufficient balance.

use crate::{codec::CodecError, tenure_change::Cause};

use super::SIGNING_THRESHOLD;

/// Why a block is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Too large to decode.
    #[error("block of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a block.
    #[error("undecodable block: {0}")]
    Undecodable(String),
    /// A block or transaction of another wire version.
    #[error("unsupported version {found}, this build speaks {supported}")]
    UnsupportedVersion {
        /// Its version.
        found: u16,
        /// This build's.
        supported: u16,
    },
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
    /// The signer evidence does not prove who signed: it does not decode, signs another
    /// message, or a share does not verify against its verifying share.
    #[error("signer evidence refused: {0}")]
    SignerEvidence(String),
    /// The parent version the block carries (whose signers it pays) is missing where
    /// required, present where not, or does not prove who signed the parent.
    #[error("parent signature refused: {0}")]
    ParentSignature(String),
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
    Coinbase(#[from] CoinbaseError),
    /// A transfer is invalid.
    #[error("transaction {index}: {error}")]
    Transfer {
        /// Its position.
        index: usize,
        /// Why.
        error: TransferError,
    },
    /// A tenure change is missing, misplaced or wrong.
    #[error("tenure change: {0}")]
    TenureChange(#[from] TenureChangeError),
    /// The block's fees cannot be paid.
    #[error("fees: {0}")]
    Fees(#[from] FeeError),
    /// The term's cost budget is exceeded.
    #[error("the block costs {cost}; the term has {left} left")]
    CostLimit {
        /// The block's cost.
        cost: u64,
        /// What the term had left.
        left: u64,
    },
    /// A signature check could not complete (its thread panicked): consensus code
    /// fails closed, so the block counts as invalid.
    #[error("the signature check of transactions {first} onwards did not complete")]
    SignatureCheckIncomplete {
        /// The first transaction of the unchecked part.
        first: usize,
    },
}

/// Why a block's coinbase is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoinbaseError {
    /// A coinbase anywhere but first in its term's first block.
    #[error("only the first transaction of a term's first block")]
    Misplaced,
    /// Another term, or other payouts than the term's.
    #[error("does not pay the term's producers")]
    WrongPayouts,
    /// A term's first block that does not start with its coinbase.
    #[error("a term's first block starts with its coinbase")]
    Missing,
}

/// Why a transfer is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The sender's signature does not verify.
    #[error("signature does not verify")]
    Signature,
    /// The nonce is not the sender's count of transactions.
    #[error("wrong nonce: {got}, the account is at {expected}")]
    WrongNonce {
        /// The transfer's nonce.
        got: u64,
        /// The account's.
        expected: u64,
    },
    /// Amount plus fee does not fit in 64 bits.
    #[error("amount overflows")]
    AmountOverflows,
    /// The sender holds less than amount plus fee.
    #[error("insufficient balance: {balance}, needs {needed}")]
    InsufficientBalance {
        /// What the sender holds.
        balance: u64,
        /// Amount plus fee.
        needed: u64,
    },
    /// The recipient's balance would overflow.
    #[error("balance overflows")]
    BalanceOverflows,
}

/// Why a block's tenure change is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TenureChangeError {
    /// A tenure change at a position where none may stand.
    #[error("none may stand at position {0}")]
    Misplaced(usize),
    /// A term's first block without its BlockFound after the coinbase.
    #[error("a term's first block carries its BlockFound after the coinbase")]
    MissingBlockFound,
    /// Another cause than the position requires.
    #[error("{}", match .expected {
        Cause::BlockFound => "a term's first block needs a BlockFound",
        Cause::Extend => "only an Extend may open a later block",
    })]
    WrongCause {
        /// The cause the position requires.
        expected: Cause,
    },
    /// Not this term's consensus hash.
    #[error("not this term's consensus hash")]
    ConsensusHash,
    /// Not the previous term's consensus hash.
    #[error("not the previous term's consensus hash")]
    PreviousConsensusHash,
    /// The previous tenure's end is not the parent block.
    #[error("previous tenure end is not the parent block")]
    PreviousTenureEnd,
    /// The previous tenure's block count does not match the chain.
    #[error("previous tenure blocks do not match the chain: {got}, the chain has {expected}")]
    PreviousTenureBlocks {
        /// What the tenure change says.
        got: u64,
        /// What the chain holds.
        expected: u64,
    },
    /// The producer key hash is not the producer group's.
    #[error("pubkey hash is not the producer group's")]
    PubkeyHash,
    /// Fewer than 67 of the producer group's shares signed it (no stacker set).
    #[error("fewer than 67 of the producer group's shares signed")]
    TooFewSigners,
    /// The granting group's signature does not verify.
    #[error("the granting group's signature does not verify")]
    Signature,
}

/// Why a block's fees cannot be paid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    /// The block's fees add up past 64 bits.
    #[error("the fees overflow")]
    FeesOverflow,
    /// A producer's balance would overflow.
    #[error("a balance overflows")]
    BalanceOverflows,
    /// The carried fees would overflow.
    #[error("the carried fees overflow")]
    CarriedOverflows,
}

impl From<CodecError> for BlockError {
    fn from(error: CodecError) -> BlockError {
        match error {
            CodecError::TooLarge { len, .. } => BlockError::TooLarge(len),
            CodecError::Undecodable(reason) | CodecError::Encode(reason) => {
                BlockError::Undecodable(reason)
            }
            CodecError::UnsupportedVersion { found, supported } => {
                BlockError::UnsupportedVersion { found, supported }
            }
        }
    }
}
