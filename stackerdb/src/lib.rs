//! Stacker DBs: signed, versioned chunks replicated by vector clocks (the SIP's
//! "Stacker DBs" section, seed 001; the decisions in DESIGN.md "Stacker DB").
//!
//! A Stacker DB is a fixed array of slots governed by a [`policy::DbPolicy`] (the SIP's
//! smart contract). Writers sign chunks ([`chunk`]); a replica accepts a chunk only if
//! it is authorised and strictly newer than what the slot holds ([`order`], [`replica`]),
//! stores it durably on sled before acknowledging it ([`store`]), and summarises its
//! state in a [`clock::VectorClock`] that replicas compare to find what to exchange.
//!
//! Built so far: the model, the write rules, equivocation evidence, garbage collection,
//! the boot layouts and durable storage. Still to come: the sans-IO sync state machine
//! and its seeded simulation, the HTTP API and the benchmarks.
//!
//! It is not networking: the node carries sync messages over the overlay.

pub mod chunk;
pub mod clock;
pub mod db;
pub mod order;
pub mod policy;
pub mod replica;
pub mod store;

pub use chunk::Chunk;
pub use clock::VectorClock;
pub use db::DbId;
pub use policy::{DbPolicy, SlotOwners, TermSchedule};
pub use replica::{Rejection, Replica, SlotValue, WriteError};
pub use store::{Store, StoreError};
