//! Where burn blocks come from, and how a node follows them.
//!
//! - [`BurnchainSource`] is what the chain rules read: the tip and blocks by height.
//! - [`bitcoind`]: a bitcoind JSON-RPC client, the source of real deployments.
//! - [`regtest`]: the embedded regtest chain of the testnet (real blocks and proof of
//!   work, checked spends, a wallet, blocks from elsewhere, reorgs).
//! - [`follow`]: the sans-IO protocol by which nodes share the embedded chain over the
//!   overlay (gossiped blocks, fetches by block locator, anti-entropy).

pub mod bitcoind;
pub mod follow;
pub mod regtest;
pub mod relay;

pub use bitcoind::BitcoindRpc;

use bitcoin::{Block, BlockHash};

/// A view of the burnchain.
pub trait BurnchainSource {
    /// Height of the best block.
    fn tip_height(&self) -> Result<u64, BurnchainError>;
    /// Hash of the block at `height` on the best chain.
    fn block_hash(&self, height: u64) -> Result<BlockHash, BurnchainError>;
    /// The block with `hash`.
    fn block(&self, hash: &BlockHash) -> Result<Block, BurnchainError>;
}

/// Why the burnchain could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BurnchainError {
    /// The node did not answer.
    #[error("bitcoind at {url} is unreachable: {reason}")]
    Unreachable {
        /// Where it was asked.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// The node refused the credentials.
    #[error("bitcoind at {url} refused the credentials (HTTP {status})")]
    Unauthorized {
        /// Where it was asked.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The node answered with an error.
    #[error("bitcoind {method} failed: {message}")]
    Rpc {
        /// The method.
        method: String,
        /// Its error message.
        message: String,
    },
    /// The answer was not what the method returns.
    #[error("bitcoind {method} answered something unexpected: {reason}")]
    Malformed {
        /// The method.
        method: String,
        /// What was wrong.
        reason: String,
    },
    /// The cookie file could not be read.
    #[error("cannot read the cookie file {path}: {reason}")]
    Cookie {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}
