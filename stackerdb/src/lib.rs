//! Stacker DBs: signed, versioned chunks replicated by vector clocks (the SIP's
//! "Stacker DBs" section, seed 001).
//!
//! A Stacker DB is a fixed array of slots governed by a [`policy::DbPolicy`] (the SIP's
//! smart contract). Writers sign chunks ([`chunk`]); a replica accepts a chunk only if
//! it is authorised and strictly newer than what the slot holds ([`order`], [`replica`]),
//! stores it durably on sled before acknowledging it ([`store`]), and summarises its
//! state in a [`clock::VectorClock`] that replicas compare to find what to exchange.
//!
//! Replicas converge through [`sync`], a sans-IO state machine (announcements,
//! anti-entropy digests, clock exchange, pulls and pushes with per-peer rate limits)
//! that runs unchanged in a seeded simulation.
//!
//! Decisions the SIP leaves open, taken here: the signed digest binds the network,
//! the DB, the slot and the version ([`chunk`]); at equal version the chunk with more
//! leading zero bits in its hash wins, then the lower hash, so the order is total
//! ([`order`]); two valid chunks at one version are kept as equivocation evidence
//! ([`replica`]); an acknowledged write has been flushed by sled and then synced by the
//! store, since sled's flush alone does not survive a power cut ([`store`], [`disk`]);
//! sync messages and announcements are bounded before decoding ([`sync::message`]).
//!
//! It is not networking: the `tenure` node carries sync messages over the overlay,
//! serves the HTTP API and runs the benchmarks.

pub mod chunk;
pub mod clock;
#[path = "../../overlay/src/codec.rs"]
pub mod codec;
pub mod db;
pub mod disk;
pub mod order;
pub mod policy;
pub mod replica;
pub mod store;
pub mod sync;

pub use chunk::Chunk;
pub use clock::VectorClock;
pub use db::{DbId, DbIdError};
pub use policy::{DbPolicy, SlotWriters, TermSchedule};
pub use replica::{PolicyMismatch, Rejection, Replica, SlotValue, WriteError};
pub use store::{Store, StoreError};
