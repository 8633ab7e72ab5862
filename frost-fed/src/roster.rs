//! Who is in the federation and with what weight: agreed before any key exists.
//!
//! A member of weight `w` holds `w` of the key's shares; shares are numbered 1 to
//! `total_shares` and handed out in roster order, so every member derives the same
//! assignment from the roster alone. A key needs `threshold` shares to sign (for a
//! producer set: 67 of 100).

use std::ops::RangeInclusive;

use bitcoin::secp256k1::XOnlyPublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A member: the x-only public key of its BIP340 member key, which signs its DKG
/// messages and transcript certificate and binds its channel keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub [u8; 32]);

impl MemberId {
    /// The member's key, if the bytes are one.
    pub fn key(&self) -> Option<XOnlyPublicKey> {
        XOnlyPublicKey::from_slice(&self.0).ok()
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = hex::encode(self.0);
        write!(f, "{}", hex.get(..12).unwrap_or(&hex))
    }
}

impl From<XOnlyPublicKey> for MemberId {
    fn from(key: XOnlyPublicKey) -> Self {
        MemberId(key.serialize())
    }
}

/// Why a roster is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// No members.
    #[error("a roster needs members")]
    Empty,
    /// A member listed twice.
    #[error("member {0} is listed twice")]
    Duplicate(MemberId),
    /// A member with no shares.
    #[error("member {0} has weight 0")]
    ZeroWeight(MemberId),
    /// Not a valid member key.
    #[error("member {0} is not a valid x-only public key")]
    BadKey(MemberId),
    /// Weights do not add up to the shares.
    #[error("weights add up to {sum}, not {total} shares")]
    WeightSum {
        /// Sum of the weights.
        sum: u32,
        /// Shares of the key.
        total: u16,
    },
    /// The threshold cannot be met or is trivial.
    #[error("threshold {threshold} of {total} shares is out of range")]
    Threshold {
        /// Shares needed to sign.
        threshold: u16,
        /// Shares of the key.
        total: u16,
    },
    /// Too few members remain for the threshold.
    #[error("the members left hold too few shares to sign")]
    TooFewLeft,
}

/// The agreed members, their weights and the threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    members: Vec<(MemberId, u16)>,
    total_shares: u16,
    threshold: u16,
}

impl Roster {
    /// A roster of `members` with their weights (in the agreed order), which must add
    /// up to `total_shares`; signing takes `threshold` shares.
    pub fn new(
        members: Vec<(MemberId, u16)>,
        total_shares: u16,
        threshold: u16,
    ) -> Result<Roster, RosterError> {
        if members.is_empty() {
            return Err(RosterError::Empty);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (id, weight) in &members {
            if !seen.insert(*id) {
                return Err(RosterError::Duplicate(*id));
            }
            if *weight == 0 {
                return Err(RosterError::ZeroWeight(*id));
            }
            if id.key().is_none() {
                return Err(RosterError::BadKey(*id));
            }
        }
        let sum: u32 = members.iter().map(|(_, w)| u32::from(*w)).sum();
        if sum != u32::from(total_shares) {
            return Err(RosterError::WeightSum {
                sum,
                total: total_shares,
            });
        }
        if threshold < 2 || threshold > total_shares {
            return Err(RosterError::Threshold {
                threshold,
                total: total_shares,
            });
        }
        Ok(Roster {
            members,
            total_shares,
            threshold,
        })
    }

    /// Members of equal weight... or as close as `total_shares` allows: the first
    /// `total_shares % n` members get one share more.
    pub fn equal(
        members: Vec<MemberId>,
        total_shares: u16,
        threshold: u16,
    ) -> Result<Roster, RosterError> {
        let n = members.len() as u16;
        if n == 0 {
            return Err(RosterError::Empty);
        }
        let (base, extra) = (total_shares / n, total_shares % n);
        let weighted = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, base + u16::from((i as u16) < extra)))
            .collect();
        Roster::new(weighted, total_shares, threshold)
    }

    /// The members and weights, in order.
    pub fn members(&self) -> &[(MemberId, u16)] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members (never true of a valid roster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Shares of the key.
    pub fn total_shares(&self) -> u16 {
        self.total_shares
    }

    /// Shares needed to sign.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// Position of `member` in the roster.
    pub fn index_of(&self, member: &MemberId) -> Option<usize> {
        self.members.iter().position(|(m, _)| m == member)
    }

    /// Weight of `member` (0 if not a member).
    pub fn weight_of(&self, member: &MemberId) -> u16 {
        self.members
            .iter()
            .find(|(m, _)| m == member)
            .map_or(0, |(_, w)| *w)
    }

    /// The share identifiers (1-based) held by the member at `index`.
    pub fn shares_of(&self, index: usize) -> Option<RangeInclusive<u16>> {
        let weight = self.members.get(index)?.1;
        let before: u16 = self.members.iter().take(index).map(|(_, w)| *w).sum();
        Some(before + 1..=before + weight)
    }

    /// The member holding share `identifier`.
    pub fn holder_of(&self, identifier: u16) -> Option<MemberId> {
        let mut last = 0u16;
        for (member, weight) in &self.members {
            last += weight;
            if identifier >= 1 && identifier <= last {
                return Some(*member);
            }
        }
        None
    }

    /// Total weight of `members` (unknown ones count 0, duplicates once).
    pub fn weight(&self, members: &std::collections::BTreeSet<MemberId>) -> u32 {
        members.iter().map(|m| u32::from(self.weight_of(m))).sum()
    }

    /// A hash of the roster that every DKG message and certificate commits to.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/roster/v1");
        h.update(self.total_shares.to_be_bytes());
        h.update(self.threshold.to_be_bytes());
        for (member, weight) in &self.members {
            h.update(member.0);
            h.update(weight.to_be_bytes());
        }
        h.finalize().into()
    }

    /// The roster without `dropped`, its weights rescaled to the same number of
    /// shares (largest remainder, ties to roster order) and the same threshold: the
    /// retry after a failed DKG, or the next key after members leave.
    pub fn without(&self, dropped: &[MemberId]) -> Result<Roster, RosterError> {
        let kept: Vec<(MemberId, u16)> = self
            .members
            .iter()
            .filter(|(m, _)| !dropped.contains(m))
            .copied()
            .collect();
        if kept.is_empty() {
            return Err(RosterError::TooFewLeft);
        }
        let kept_sum: u32 = kept.iter().map(|(_, w)| u32::from(*w)).sum();
        let total = u32::from(self.total_shares);
        let mut scaled: Vec<(MemberId, u32, u32)> = kept
            .iter()
            .map(|(m, w)| {
                let exact = u32::from(*w) * total;
                (*m, exact / kept_sum, exact % kept_sum)
            })
            .collect();
        let mut left = total - scaled.iter().map(|(_, q, _)| q).sum::<u32>();
        let mut order: Vec<usize> = (0..scaled.len()).collect();
        order.sort_by(|a, b| {
            let ra = scaled.get(*a).map_or(0, |s| s.2);
            let rb = scaled.get(*b).map_or(0, |s| s.2);
            rb.cmp(&ra).then(a.cmp(b))
        });
        for i in order {
            if left == 0 {
                break;
            }
            if let Some(entry) = scaled.get_mut(i) {
                entry.1 += 1;
                left -= 1;
            }
        }
        let members: Vec<(MemberId, u16)> = scaled
            .into_iter()
            .filter(|(_, w, _)| *w > 0)
            .map(|(m, w, _)| (m, w as u16))
            .collect();
        if members.len() < 2 {
            return Err(RosterError::TooFewLeft);
        }
        Roster::new(members, self.total_shares, self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};

    pub(crate) fn member(n: u8) -> MemberId {
        let key = Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap());
        MemberId::from(key.x_only_public_key().0)
    }

    #[test]
    fn shares_are_handed_out_in_roster_order() {
        let r = Roster::new(
            vec![(member(1), 10), (member(2), 20), (member(3), 70)],
            100,
            67,
        )
        .unwrap();
        assert_eq!(r.shares_of(0), Some(1..=10));
        assert_eq!(r.shares_of(1), Some(11..=30));
        assert_eq!(r.shares_of(2), Some(31..=100));
        assert_eq!(r.holder_of(30), Some(member(2)));
        assert_eq!(r.holder_of(101), None);
        assert_eq!(r.holder_of(0), None);
    }

    #[test]
    fn bad_rosters_are_refused_with_their_reason() {
        assert_eq!(Roster::new(vec![], 100, 67), Err(RosterError::Empty));
        assert!(matches!(
            Roster::new(vec![(member(1), 50), (member(2), 49)], 100, 67),
            Err(RosterError::WeightSum { sum: 99, .. })
        ));
        assert!(matches!(
            Roster::new(vec![(member(1), 50), (member(1), 50)], 100, 67),
            Err(RosterError::Duplicate(_))
        ));
        assert!(matches!(
            Roster::new(vec![(member(1), 100), (member(2), 0)], 100, 67),
            Err(RosterError::ZeroWeight(_))
        ));
        assert!(matches!(
            Roster::new(vec![(MemberId([0; 32]), 100)], 100, 67),
            Err(RosterError::BadKey(_))
        ));
        assert!(matches!(
            Roster::new(vec![(member(1), 100)], 100, 101),
            Err(RosterError::Threshold { .. })
        ));
    }

    #[test]
    fn dropping_members_rescales_to_the_same_shares() {
        let r = Roster::equal((1..=10).map(member).collect(), 100, 67).unwrap();
        let r2 = r.without(&[member(3)]).unwrap();
        assert_eq!(r2.len(), 9);
        assert_eq!(
            r2.members().iter().map(|(_, w)| u32::from(*w)).sum::<u32>(),
            100
        );
        assert_eq!(r2.threshold(), 67);
        let weights: Vec<u16> = r2.members().iter().map(|(_, w)| *w).collect();
        assert_eq!(weights, vec![12, 11, 11, 11, 11, 11, 11, 11, 11]);
        assert_ne!(r.digest(), r2.digest());
    }
}
