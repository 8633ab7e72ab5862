//! Tenure's consensus rules over a Bitcoin burnchain view (seeds 000–003; DESIGN.md
//! "Chain"), as deterministic code that consumes events and returns commands.
//!
//! Built so far:
//! - [`enrollment`]: the SIP's 80-byte `OP_RETURN` and its PoX/burn outputs;
//! - [`key_registration`]: the leader VRF key registrations enrollments refer to,
//!   and the rule that only the registration's owner may enroll with it;
//! - [`terms`]: terms of 10 burn blocks and producer-set selection (top 100, lower
//!   bound with carried-forward credit);
//! - [`weights`]: the 100 signer shares and the producer DB's slots, round-robin from
//!   the smallest producer with ChaCha12 tie-breaking;
//! - [`rewards`]: coinbase pro rata, fees 40% to a block's signers and 60% to the next
//!   term's producers, conserving value exactly;
//! - [`block`]: headers signed by the producer group over the header and signer
//!   bitmap, accounts, transfers, the coinbase, the term's cost budget, validation;
//! - [`tenure_change`]: the seed's TenureChange fields (BlockFound, Extend);
//! - [`mainstake`]: stake tickets weighted by value × remaining lock, a lottery seeded
//!   by the tip hash, sidechain headers accepted only from the winner.
//! - [`stake`]: stakes on Bitcoin (outputs locked by `OP_CHECKLOCKTIMEVERIFY` and
//!   registered by an `OP_RETURN`), found in burn blocks as the lottery's tickets.
//!
//! - [`burnchain`]: the burnchain source trait and a bitcoind JSON-RPC client;
//! - [`regtest`]: the embedded regtest burnchain (real blocks and proof of work,
//!   checked taproot spends, a wallet, blocks from elsewhere, reorgs).
//!
//! - [`announce`]: the term UTXO spent to commit the latest block, the index of
//!   announced blocks that a burnchain reorg rolls back, the parent rule for a term's
//!   first block.
//!
//! Decoders of peer and burnchain bytes have fuzz targets in `chain/fuzz`.
//!
//! - [`store`]: the chain state on sled, with undo records to drop unannounced
//!   blocks and roll back what a burnchain reorg un-announces.
//!
//! It never touches the network: the node wires it to the overlay.

pub mod announce;
pub mod block;
pub mod burnchain;
pub mod enrollment;
pub mod key_registration;
pub mod mainstake;
pub mod op_return;
pub mod regtest;
pub mod rewards;
pub mod split;
pub mod stake;
pub mod store;
pub mod tenure_change;
pub mod terms;
pub mod weights;
