//! Vector clocks: one entry per slot, so replicas can tell which slots differ.
//!
//! Each entry carries the version, the leading zero bits of the data hash and a prefix
//! of the hash, so two replicas holding different data at one version notice it (the
//! SIP: "the vector clock ... encodes both the version and the number of leading 0-bits
//! in the chunk's hash"). Entries order exactly like chunks ([`crate::order`]); two
//! distinct chunks with the same 8-byte prefix are astronomically unlikely and would
//! only delay convergence until a newer version, never corrupt it.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512_256};

use crate::{chunk::Hash32, order::SlotVersion};

/// Bytes of the data hash kept per clock entry.
pub const HASH_PREFIX_BYTES: usize = 8;

/// One slot's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotClock {
    /// The chunk's version (0: empty).
    pub version: u64,
    /// Leading zero bits of the data hash.
    pub leading_zeros: u32,
    /// The first bytes of the data hash.
    pub hash_prefix: [u8; HASH_PREFIX_BYTES],
}

impl SlotClock {
    /// The entry of an empty slot.
    pub const EMPTY: SlotClock = SlotClock {
        version: 0,
        leading_zeros: 0,
        hash_prefix: [0; HASH_PREFIX_BYTES],
    };
}

impl From<&SlotVersion> for SlotClock {
    fn from(v: &SlotVersion) -> Self {
        if v.version == 0 {
            return SlotClock::EMPTY;
        }
        let mut hash_prefix = [0; HASH_PREFIX_BYTES];
        hash_prefix.copy_from_slice(&v.hash[..HASH_PREFIX_BYTES]);
        SlotClock {
            version: v.version,
            leading_zeros: v.leading_zeros(),
            hash_prefix,
        }
    }
}

impl Ord for SlotClock {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version
            .cmp(&other.version)
            .then_with(|| self.leading_zeros.cmp(&other.leading_zeros))
            .then_with(|| other.hash_prefix.cmp(&self.hash_prefix))
    }
}

impl PartialOrd for SlotClock {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A replica's clock: one entry per slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorClock {
    /// Entry per slot, in slot order.
    pub slots: Vec<SlotClock>,
}

impl VectorClock {
    /// The clock of an empty DB of `slots` slots.
    pub fn empty(slots: u32) -> Self {
        VectorClock {
            slots: vec![SlotClock::EMPTY; slots as usize],
        }
    }

    /// A short digest of the whole clock: equal digests mean equal replicas.
    pub fn digest(&self) -> Hash32 {
        let mut h = Sha512_256::new();
        for entry in &self.slots {
            h.update(entry.version.to_be_bytes());
            h.update(entry.leading_zeros.to_be_bytes());
            h.update(entry.hash_prefix);
        }
        h.finalize().into()
    }

    /// Slots where this clock is ahead of `other`: what `other` lacks.
    pub fn ahead_of(&self, other: &VectorClock) -> Vec<u32> {
        self.slots
            .iter()
            .zip(&other.slots)
            .enumerate()
            .filter(|(_, (ours, theirs))| ours > theirs)
            .map(|(slot, _)| slot as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, first: u8) -> SlotClock {
        let mut hash = [0x7f; 32];
        hash[0] = first;
        SlotClock::from(&SlotVersion { version, hash })
    }

    #[test]
    fn clocks_order_like_chunks() {
        assert!(entry(2, 0xff) > entry(1, 0x00));
        assert!(entry(1, 0x10) > entry(1, 0x80)); // more leading zeros
        assert!(entry(1, 0x80) > entry(1, 0x81)); // same zeros, lower hash
        assert!(entry(1, 0xff) > SlotClock::EMPTY);
    }

    #[test]
    fn ahead_of_lists_the_slots_the_other_lacks() {
        let mut a = VectorClock::empty(4);
        let mut b = VectorClock::empty(4);
        a.slots[1] = entry(3, 0x80);
        b.slots[1] = entry(2, 0x80);
        b.slots[2] = entry(1, 0x80);
        a.slots[3] = entry(1, 0x80);
        b.slots[3] = entry(1, 0x40);
        assert_eq!(a.ahead_of(&b), vec![1]);
        assert_eq!(b.ahead_of(&a), vec![2, 3]);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
    }
}
