//! Tenure's consensus rules over a Bitcoin burnchain view (seeds 000–003; DESIGN.md
//! "Chain"), as deterministic code that consumes events and returns commands.
//!
//! This crate will hold:
//! - the burnchain source trait, with an embedded regtest chain and a bitcoind JSON-RPC
//!   client;
//! - enrollments (the SIP's 80-byte OP_RETURN and PoX/burn outputs), terms of 10 burn
//!   blocks, producer-set selection with carried-forward credit, and share / slot weights;
//! - blocks signed by the producer group key with a recorded signer set, accounts,
//!   transfers, rewards (coinbase pro rata, fees 40% / 60%), tenure changes;
//! - announcements on Bitcoin, fork choice and reorg handling, proof-of-mainstake;
//! - chain state on sled.
//!
//! It never touches the network: the node wires it to the overlay.
