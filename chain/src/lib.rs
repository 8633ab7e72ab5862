//! Tenure's consensus rules over a Bitcoin burnchain view (seeds 000–003), as
//! deterministic code that consumes events and returns commands.
//!
//! The consensus rules:
//! - [`terms`]: terms of 10 burn blocks and producer-set selection (top 100, lower
//!   bound with carried-forward credit);
//! - [`shares`]: the 100 signer shares and the producer DB's slots, round-robin from
//!   the smallest producer with ChaCha12 tie-breaking;
//! - [`rewards`]: coinbase pro rata, fees 40% to a block's signers and 60% to the next
//!   term's producers, conserving value exactly ([`pro_rata`] splits an amount);
//! - [`block`]: headers signed by the producer group, with evidence of which shares
//!   signed (each share verified), accounts, transfers, the coinbase, the term's cost
//!   budget, validation;
//! - [`tenure_change`]: the seed's TenureChange fields (BlockFound, Extend);
//! - [`mainstake`]: stake tickets weighted by value × remaining lock, a lottery seeded
//!   by the tip hash, sidechain headers accepted only from the winner;
//! - [`produce`]: block production by the producer set: the burnchain scan (who
//!   produces each term, term UTXOs, announcements), enrolling, leader election, the
//!   mempool, one producer's protocol across term changes, and announcements on
//!   Bitcoin;
//! - [`store`]: the chain state on sled, with undo records to drop unannounced
//!   blocks and roll back what a burnchain reorg un-announces.
//!
//! The Bitcoin operations ([`ops`]): the `OP_RETURN` reader, enrollments, leader key
//! registrations, stakes and announcements, each read from burn blocks.
//!
//! The burnchain ([`burnchain`]): the source trait, the embedded regtest chain, the
//! sans-IO protocol by which nodes share it, and a bitcoind JSON-RPC client.
//!
//! Decoders of peer and burnchain bytes have fuzz targets in `chain/fuzz`.
//!
//! The rules never touch the network. The one module that does I/O is
//! [`burnchain::bitcoind`], an adapter the node calls to read a bitcoind; the node
//! carries everything else over the overlay.

// Consensus code: no unchecked indexing and no arithmetic that can overflow, wrap
// or panic, outside tests (Lighthouse's rule for state processing). Amounts use
// checked arithmetic; counters that cannot reach their bound say why.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

pub mod block;
pub mod burnchain;
#[path = "../../overlay/src/codec.rs"]
pub mod codec;
pub mod mainstake;
pub mod ops;
pub mod pro_rata;
pub mod produce;
pub mod rewards;
pub mod shares;
pub mod store;
pub mod tenure_change;
pub mod terms;
