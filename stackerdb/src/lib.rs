//! Stacker DBs: signed, versioned chunks replicated by vector clocks (the SIP's
//! "Stacker DBs" section, seed 001; the decisions in DESIGN.md "Stacker DB").
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
//! Built so far: the model, the write rules, equivocation evidence, garbage collection,
//! the boot layouts, durable storage and sync. Still to come: the wiring over the
//! overlay, the HTTP API and the benchmarks.
//!
//! It is not networking: the node carries sync messages over the overlay.

pub mod chunk;
pub mod clock;
pub mod db;
pub mod order;
pub mod policy;
pub mod replica;
pub mod store;
pub mod sync;

pub use chunk::Chunk;
pub use clock::VectorClock;
pub use db::DbId;
pub use policy::{DbPolicy, SlotOwners, TermSchedule};
pub use replica::{Rejection, Replica, SlotValue, WriteError};
pub use store::{Store, StoreError};
