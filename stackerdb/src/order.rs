//! The order of chunks within a slot (the SIP's write rule, made total).
//!
//! 1. A higher version wins.
//! 2. At equal versions, the chunk whose data hash has more leading zero bits wins: the
//!    SIP's equivocation throttle (replacing a chunk at one version K times costs
//!    O(2^K) work).
//! 3. At equal leading zeros, the lower hash wins, so that any two distinct chunks are
//!    ordered and every replica converges on the same one whatever the delivery order.
//!
//! Anything not strictly newer than what a slot holds is rejected with its reason and
//! changes nothing.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::chunk::Hash32;

/// Leading zero bits of a hash.
pub fn leading_zero_bits(hash: &Hash32) -> u32 {
    let mut zeros = 0;
    for byte in hash {
        if *byte == 0 {
            zeros += 8;
        } else {
            return zeros + byte.leading_zeros();
        }
    }
    zeros
}

/// A chunk's standing in its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotVersion {
    /// The writer's version (0 is the empty chunk).
    pub version: u64,
    /// SHA512/256 of the data.
    pub hash: Hash32,
}

impl SlotVersion {
    /// The standing of the empty chunk: version 0.
    pub const EMPTY: SlotVersion = SlotVersion {
        version: 0,
        hash: [0; 32],
    };

    /// Leading zero bits of the hash.
    pub fn leading_zeros(&self) -> u32 {
        leading_zero_bits(&self.hash)
    }
}

impl Ord for SlotVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version
            .cmp(&other.version)
            .then_with(|| self.leading_zeros().cmp(&other.leading_zeros()))
            // The lower hash is the greater chunk.
            .then_with(|| other.hash.cmp(&self.hash))
    }
}

impl PartialOrd for SlotVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a write that is otherwise valid does not replace what a slot holds.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotNewer {
    /// Its version is below the slot's.
    #[error("version {got} is older than the slot's version {have}")]
    OlderVersion {
        /// The slot's version.
        have: u64,
        /// The write's version.
        got: u64,
    },
    /// Same version, and its hash has fewer leading zero bits.
    #[error(
        "version {version} is already held with {have} leading zero bits; this chunk has {got}"
    )]
    FewerLeadingZeros {
        /// The version.
        version: u64,
        /// Leading zeros of the held chunk's hash.
        have: u32,
        /// Leading zeros of this chunk's hash.
        got: u32,
    },
    /// Same version, same leading zeros, higher hash.
    #[error("version {version} is already held with an equally rare, lower hash")]
    HigherHash {
        /// The version.
        version: u64,
    },
    /// The very chunk the slot holds.
    #[error("the slot already holds this chunk")]
    Duplicate,
}

/// Whether `candidate` replaces `current` in a slot.
pub fn supersedes(current: &SlotVersion, candidate: &SlotVersion) -> Result<(), NotNewer> {
    if candidate == current {
        return Err(NotNewer::Duplicate);
    }
    if candidate > current {
        return Ok(());
    }
    if candidate.version < current.version {
        return Err(NotNewer::OlderVersion {
            have: current.version,
            got: candidate.version,
        });
    }
    let (have, got) = (current.leading_zeros(), candidate.leading_zeros());
    if got < have {
        Err(NotNewer::FewerLeadingZeros {
            version: current.version,
            have,
            got,
        })
    } else {
        Err(NotNewer::HigherHash {
            version: current.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64, first_bytes: &[u8]) -> SlotVersion {
        let mut hash = [0xffu8; 32];
        hash[..first_bytes.len()].copy_from_slice(first_bytes);
        SlotVersion { version, hash }
    }

    #[test]
    fn leading_zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0xff; 32]), 0);
        let mut h = [0xff; 32];
        h[0] = 0;
        h[1] = 0b0001_0000;
        assert_eq!(leading_zero_bits(&h), 11);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }

    #[test]
    fn a_higher_version_wins() {
        assert_eq!(supersedes(&v(1, &[0]), &v(2, &[0xff])), Ok(()));
    }

    #[test]
    fn an_older_version_is_rejected() {
        assert_eq!(
            supersedes(&v(3, &[0xff]), &v(2, &[0])),
            Err(NotNewer::OlderVersion { have: 3, got: 2 })
        );
    }

    #[test]
    fn equal_version_more_leading_zeros_wins() {
        assert_eq!(supersedes(&v(5, &[0x80]), &v(5, &[0x40])), Ok(()));
    }

    #[test]
    fn equal_version_fewer_leading_zeros_is_rejected() {
        assert_eq!(
            supersedes(&v(5, &[0x40]), &v(5, &[0x80])),
            Err(NotNewer::FewerLeadingZeros {
                version: 5,
                have: 1,
                got: 0
            })
        );
    }

    #[test]
    fn equal_version_equal_zeros_lower_hash_wins() {
        assert_eq!(supersedes(&v(5, &[0x41]), &v(5, &[0x40])), Ok(()));
        assert_eq!(
            supersedes(&v(5, &[0x40]), &v(5, &[0x41])),
            Err(NotNewer::HigherHash { version: 5 })
        );
    }

    #[test]
    fn the_same_chunk_is_a_duplicate() {
        assert_eq!(
            supersedes(&v(5, &[0x40]), &v(5, &[0x40])),
            Err(NotNewer::Duplicate)
        );
    }

    #[test]
    fn anything_written_beats_the_empty_chunk() {
        assert_eq!(supersedes(&SlotVersion::EMPTY, &v(1, &[0xff])), Ok(()));
    }

    proptest::proptest! {
        #[test]
        fn the_order_is_total_and_matches_supersedes(
            a in (0u64..4, proptest::array::uniform32(0u8..4)),
            b in (0u64..4, proptest::array::uniform32(0u8..4)),
        ) {
            let (a, b) = (SlotVersion { version: a.0, hash: a.1 }, SlotVersion { version: b.0, hash: b.1 });
            // Exactly one of: equal, a wins, b wins.
            let a_wins = supersedes(&b, &a).is_ok();
            let b_wins = supersedes(&a, &b).is_ok();
            proptest::prop_assert!(!(a_wins && b_wins));
            proptest::prop_assert_eq!(a == b, !a_wins && !b_wins);
        }
    }
}
