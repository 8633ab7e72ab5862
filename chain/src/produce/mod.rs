//! Block production by a term's producer set (seed 001 "Producer Set Collaboration",
//! "Producer Signing Protocol"; DESIGN "Block production"), as sans-IO state machines
//! fed with messages and time, returning messages to send and events.
//!
//! - [`announce`]: announcements on Bitcoin: the term UTXO's script, the
//!   transaction, the digest the group signs, what a member checks before signing.
//! - [`burn_scan`]: what every node reads from the burnchain: registrations,
//!   enrollments, each term's producers and shares, term UTXOs and announcements.
//! - [`enroller`]: a producer registering its key and enrolling, term after term, on
//!   the embedded regtest burnchain.
//! - [`election`]: the leader election: rounds with random timeouts, vote requests,
//!   BIP340-signed votes, a leader proven by votes of at least 67% of the weight, and
//!   deposing a leader that stops proposing, proposes invalid blocks or equivocates.
//! - [`follower`]: a node following the chain without producing: term keys from
//!   their certificates (or the proofs batches of blocks carry), every block
//!   validated against them.
//! - [`key_book`]: the term keys a node accepted, with their contexts and proofs,
//!   kept by followers and producers alike.
//! - [`mempool`]: transfers waiting for a block, bounded, admitted against the chain
//!   state, selected by fee in each sender's nonce order.
//! - [`producer`]: one producer's side of a term: proposals, checks, pre-commits,
//!   what the federation may sign, blocks completed, validated and applied.
//! - [`producer_db`]: the boot producer DB's policy for each term (who writes each
//!   of its 300 slots) and where a producer keeps its certificate of the term's key.
//! - [`term_key`]: a term's key made public: the record its producers certify with
//!   their enrollment keys, and how any node accepts it from public data.
//!
//! Decisions taken for the parts that follow (the leader's proposal in the
//! proposed-block slots, pre-commits, the FROST round and the block's signer evidence):
//!
//! - **The group signs the header alone.** Robust signing (ROAST) decides which shares
//!   sign only while signing, so the signed message cannot contain the signer set. A
//!   block carries the signing package and its signature shares as evidence; every
//!   validator checks each share against the term key's verifying shares and sums the
//!   verified shares' weight (at least 67 of 100).
//! - **Signers are paid one block later.** A block's state root cannot depend on who
//!   signs it, so the 40% of a block's fees owed to its verified signers is credited by
//!   the next block (by the next term's first block for a term's last).
//! - **A proposal carries its leader's certificate**, so a producer that missed the
//!   election (partitioned, restarted) learns the leader from the first proposal.
//! - **Pre-commit before signing.** Producers validate the leader's candidate against
//!   their own chain state and pre-commit to its header hash; each member's signing
//!   validator approves only the header it pre-committed to. The leader asks for the
//!   signature with the proposal, and the pre-commit stays local: a member's nonce
//!   commitments are its vote ([`producer`], rule 3).

pub mod announce;
pub mod burn_scan;
pub mod contact;
pub mod election;
pub mod enroller;
pub mod follower;
pub mod key_book;
pub mod mempool;
pub mod producer;
pub mod producer_db;
pub mod term_key;

pub use burn_scan::{BurnScan, TermPlan};
pub use election::{
    Deposed, Election, ElectionConfig, ElectionMessage, ElectionOutput, ProducerId, Vote,
};
pub use enroller::Enroller;
pub use mempool::{Admitted, Mempool, MempoolRefusal, RelayJudgement, RelayedNonces, judge_relay};
pub use producer::{
    Approvals, PRODUCER_MESSAGE_VERSION, Producer, ProducerBody, ProducerConfig, ProducerMessage,
    ProducerOutput, ProducerRefusal, SignPayload,
};
