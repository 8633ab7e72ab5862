//! A member made to misbehave in signing, on purpose: for the benchmarks, the
//! simulations and the testnet's byzantine producer. An honest member has no fault;
//! nothing in the protocol sets one.

use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use crate::{
    MemberId,
    sign::{SignBody, SignMessage},
};

/// How long a slow member holds each signing message.
pub const SLOW_BY: Duration = Duration::from_millis(1_500);

/// The ways a member can misbehave in signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignFault {
    /// Sends no signing message at all.
    Silent,
    /// Sends every signing message [`SLOW_BY`] late.
    Slow,
    /// Sends shares that are not its shares.
    InvalidShare,
    /// Leaves one of its shares out.
    Incomplete,
    /// Labels one of its shares with a number it does not hold.
    WrongNumber,
    /// Sends each coordinator two different sets of nonce commitments.
    Equivocate,
}

impl SignFault {
    /// Every fault, in order.
    pub const ALL: [SignFault; 6] = [
        SignFault::Silent,
        SignFault::Slow,
        SignFault::InvalidShare,
        SignFault::Incomplete,
        SignFault::WrongNumber,
        SignFault::Equivocate,
    ];

    /// The fault named `name` (`silent`, `slow`, `invalid-share`, `incomplete`,
    /// `wrong-number`, `equivocate`).
    pub fn from_name(name: &str) -> Option<SignFault> {
        Some(match name {
            "silent" => SignFault::Silent,
            "slow" => SignFault::Slow,
            "invalid-share" => SignFault::InvalidShare,
            "incomplete" => SignFault::Incomplete,
            "wrong-number" => SignFault::WrongNumber,
            "equivocate" => SignFault::Equivocate,
            _ => return None,
        })
    }

    /// The messages a member with this fault sends instead of `msg` to `to`, each with
    /// the time it may leave.
    pub fn apply(
        self,
        to: MemberId,
        mut msg: SignMessage,
        now: Instant,
    ) -> Vec<(Instant, MemberId, SignMessage)> {
        match (self, &mut msg.body) {
            (SignFault::Silent, _) => return Vec::new(),
            (SignFault::Slow, _) => return vec![(now + SLOW_BY, to, msg)],
            (SignFault::InvalidShare, SignBody::Shares { shares, .. }) => {
                for (_, share) in shares.iter_mut() {
                    *share = ByteBuf::from(vec![0x11; 32]);
                }
            }
            (SignFault::Incomplete, SignBody::Shares { shares, .. }) => {
                shares.pop();
            }
            (SignFault::WrongNumber, SignBody::Shares { shares, .. }) => {
                // Fifty along: another member's share, for any member holding
                // fewer than fifty.
                if let Some((n, _)) = shares.first_mut() {
                    *n = if *n > 50 { *n - 50 } else { *n + 50 };
                }
            }
            (SignFault::Equivocate, SignBody::Commit { commitments }) => {
                // A second, different set: the same commitments moved one share along.
                let mut other = commitments.clone();
                if other.len() > 1 {
                    other.rotate_left(1);
                    let numbers: Vec<u16> = commitments.iter().map(|(n, _)| *n).collect();
                    for ((n, _), number) in other.iter_mut().zip(numbers) {
                        *n = number;
                    }
                }
                let mut second = msg.clone();
                second.body = SignBody::Commit { commitments: other };
                return vec![(now, to, msg), (now, to, second)];
            }
            _ => {}
        }
        vec![(now, to, msg)]
    }
}
