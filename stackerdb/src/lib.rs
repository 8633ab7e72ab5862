//! Stacker DBs: signed, versioned chunks replicated by vector clocks (the SIP's
//! "Stacker DBs" section, seed 001; the decisions in DESIGN.md "Stacker DB").
//!
//! This crate will hold:
//! - the model: a DB id, and a policy trait (the SIP's smart contract) that gives the slot
//!   count, the maximum chunk size, who may write each slot (`auth-write`) and garbage
//!   collection (`garbage-collect?`, `is-garbage?`), with the producer DB (300 slots) and
//!   stacker DB (8000 slots) boot layouts;
//! - chunk rules: recoverable secp256k1 signatures over a domain-separated digest, the
//!   version / leading-zero-bits / lower-hash order, equivocation evidence;
//! - vector clocks and the sans-IO sync state machine (digest, clock exchange, pulls,
//!   pushes, anti-entropy, per-peer rate limits) that runs unchanged in a seeded
//!   simulation;
//! - durable storage on sled, with a versioned on-disk format.
//!
//! It is not networking: the node carries sync messages over the overlay.
