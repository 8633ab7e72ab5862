//! The FROST federation: an always-online group that holds Bitcoin jointly with one
//! weighted threshold key (seed 004).
//!
//! - [`roster`]: the agreed members and weights (a member of weight `w` holds `w` of
//!   the key's shares; 67 of 100 sign).
//! - [`dkg`]: a weighted DKG, one polynomial per member, with complaints that prove who
//!   cheated and a transcript every member certifies.
//! - [`sign`]: signing without a trusted coordinator (ROAST-style): members that stall
//!   or send invalid shares are left out and signing goes on while the threshold
//!   remains; every signature records its signer set.
//! - [`share`]: what a member keeps, its taproot address, and its stored form;
//!   [`store`] keeps it in sled.
//!
//! Everything here is sans-IO: fed messages and time, it returns messages to send.
//! Producer sets use it for blocks; a mining pool can use it on its own for payouts.

pub mod broadcast;
pub mod channel;
#[path = "../../overlay/src/codec.rs"]
pub mod codec;
pub mod curve;
pub mod dkg;
pub mod ids;
pub mod member;
pub mod membership;
pub mod roster;
pub mod share;
pub mod sign;
pub mod store;

pub use ids::{BroadcastTag, RequestId, SessionId};
pub use roster::{MemberId, Roster, RosterError};
pub use share::{KeyShare, KeyShareError};
