//! The testnet's terms, driven by the burnchain: each node enrolls its producer on the
//! embedded regtest chain, reads every burn block with
//! [`tenure_chain::produce::BurnScan`], makes the next term's key with the weighted
//! DKG once the burnchain says who produces it, and moves its producer to each term
//! as the burnchain starts it. No rule lives here; this module wires.
//!
//! The schedule, in burn blocks (terms of [`tenure_chain::terms::TERM_LENGTH`]):
//!
//! - The miner node mines a **premine** of `100 + nodes` blocks paying each node's
//!   wallet in turn, so every wallet holds a mature coinbase when term 0 starts
//!   ([`premine`]).
//! - **Term 0**: every producer registers its key. **Terms E ≥ 1**: every producer
//!   enrolls for term E + 2 ([`tenure_chain::produce::Enroller`]).
//! - **Contacts.** Each node's federation member starts knowing only its own channel.
//!   Once a node's enrollment is in its burnchain view it gossips its contact, and it
//!   takes the others' as their enrollments show up in its view
//!   ([`crate::contacts`]): the members and the producers' peer directory are filled
//!   from public data, with nothing handed out of band. A term's DKG waits (at most
//!   [`CONTACT_WAIT`]) until the node took the contact of every member of its roster.
//! - **From term 1 on**, each node's term driver ([`crate::terms`], shared with
//!   `tenure node`) makes each next term's key with its producers, certifies it, has
//!   the term UTXO paid and moves the node's producer to each term as it starts; the
//!   miner's node follows the chain from the certificates alone ([`crate::follower`]).
//!
//! Burn transactions (enrollments, term UTXO payments, announcements) reach the miner
//! node on the burn-transactions topic ([`crate::burnchain::BurnNode::relay`]), as
//! they would between processes.

use bitcoin::{ScriptBuf, secp256k1::Keypair};
use tenure_chain::terms::Terms;

pub use crate::terms::{
    CONTACT_WAIT, DKG_ATTEMPTS, FIRST_TERM, TermDriver, TermKey, TermReport, TermReports,
};

/// Burn blocks mined before term 0: enough for every wallet's coinbase to mature.
pub fn premine(nodes: usize) -> u64 {
    tenure_chain::burnchain::regtest::COINBASE_MATURITY + nodes as u64
}

/// The testnet's terms: term 0 starts right after the premine.
pub fn testnet_terms(nodes: usize) -> Terms {
    Terms::new(premine(nodes) + 1)
}

/// The wallet script of each node's producer: where the premine pays.
pub fn wallet_scripts(keys: &[Keypair]) -> Vec<ScriptBuf> {
    keys.iter()
        .map(|k| tenure_chain::burnchain::regtest::Wallet::new(*k).script())
        .collect()
}
