//! The `tenure` binary's library: configuration, wiring, the HTTP API, the testnet
//! and the benchmarks. It holds no protocol rule: each protocol lives in the library
//! crate that owns it, and the modules here drive those sans-IO state machines with
//! the overlay's events, timers and storage.
//!
//! | protocol | its rules | its driver here |
//! |---|---|---|
//! | overlay (hello, gossip, discovery, peer scores) | `tenure_overlay` | [`run`], [`testnet`] |
//! | Stacker DB replication | `tenure_stackerdb::sync` | [`stackerdb`] |
//! | burnchain following, burn transactions relayed to the miner | `tenure_chain::burnchain::{follow, relay}` | [`burnchain`] |
//! | federation channels, broadcast, DKG, signing | `tenure_frost_fed::member` | [`federation`] |
//! | block validation | `tenure_chain::block` | [`producer`], [`bench::validate`] |
//! | block production (election, proposals, pre-commits, mempool, announcements) | `tenure_chain::produce` | [`producer`], [`terms`] (in [`testnet`] and [`run`]) |
//! | the chain on disk (a producer resumes at its stored tip; old blocks served to producers catching up) | `tenure_chain::store` | [`producer`] (tests; not yet in the testnet or `tenure node`) |
//! | transfers in, balances out (the transactions topic's judgement) | `tenure_chain::produce::mempool` | [`producer`], [`chain_api`], [`tx_client`] |
//! | terms from the burnchain (registration, enrollment, selection, term keys, term UTXOs) | `tenure_chain::produce::{burn_scan, enroller}` | [`burnchain`], [`terms`] |
//! | term keys made public, the chain followed without producing | `tenure_chain::produce::{term_key, follower}` | [`follower`] (the testnet's miner node, `tenure node` without a producer) |
//! | producers finding each other (contacts: federation channels bound to enrollment keys) | `tenure_chain::produce::contact` | [`contacts`] |
//!
//! Cross-crate tests in the workspace's `tests` crate drive these modules over
//! loopback.

pub mod bench;
pub mod burnchain;
pub mod chain_api;
pub mod config;
pub mod contacts;
pub mod federation;
pub mod follower;
pub mod http;
pub mod keys;
pub mod logs;
pub mod process_stats;
pub mod producer;
pub mod producer_db;
pub mod run;
pub mod stackerdb;
pub mod terms;
pub mod testnet;
pub mod tx_client;
