//! The FROST federation: an always-online group that holds Bitcoin jointly with one
//! weighted threshold key (seed 004; DESIGN.md "FROST federation").
//!
//! This crate will hold, as sans-IO state machines:
//! - end-to-end Noise sessions between members (snow, KK or IK), explicit nonces, a replay
//!   window and fragmentation, so relays can neither read nor alter frames;
//! - reliable delivery (sequence numbers, acks, retransmission, duplicate suppression);
//! - echo broadcast that detects and blames an equivocating sender;
//! - a weighted DKG with frost-secp256k1-tr (100 shares, threshold 67) with transcript
//!   certification and blame-and-retry;
//! - robust signing without a trusted coordinator (ROAST-style), with verifiable signer
//!   sets and an application validator that approves each message first;
//! - membership changes and fresh taproot addresses from a key sequence.
//!
//! Producer sets use it for blocks; a mining pool can use it on its own for payouts.
