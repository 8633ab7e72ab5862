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
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha512_256};

use crate::{chunk::Hash32, order::SlotVersion};

/// Bytes of the data hash kept per clock entry.
pub const HASH_PREFIX_BYTES: usize = 8;

/// Slots per range of a [`ClockDigest`]: replicas compare clocks range by range and
/// exchange only the entries of ranges that differ.
pub const RANGE_SLOTS: usize = 32;

/// Bytes of one range's digest.
pub const RANGE_DIGEST_BYTES: usize = 8;

/// Bytes of one entry on the wire: version, leading zeros, hash prefix.
pub const ENTRY_BYTES: usize = 8 + 4 + HASH_PREFIX_BYTES;

/// One slot's entry. On the wire it is one 20-byte string (a clock of 8000 slots is
/// then about 180 KB rather than three times that with field names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "ByteBuf", try_from = "ByteBuf")]
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

impl SlotClock {
    /// Its wire form: version, leading zeros (both big-endian), hash prefix.
    pub fn to_bytes(&self) -> [u8; ENTRY_BYTES] {
        let mut bytes = [0; ENTRY_BYTES];
        let (version, rest) = bytes.split_at_mut(8);
        let (zeros, prefix) = rest.split_at_mut(4);
        version.copy_from_slice(&self.version.to_be_bytes());
        zeros.copy_from_slice(&self.leading_zeros.to_be_bytes());
        prefix.copy_from_slice(&self.hash_prefix);
        bytes
    }
}

impl From<SlotClock> for ByteBuf {
    fn from(entry: SlotClock) -> ByteBuf {
        ByteBuf::from(entry.to_bytes().to_vec())
    }
}

impl TryFrom<ByteBuf> for SlotClock {
    type Error = String;

    fn try_from(bytes: ByteBuf) -> Result<SlotClock, String> {
        let bytes: [u8; ENTRY_BYTES] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("clock entry of {} bytes, not {ENTRY_BYTES}", bytes.len()))?;
        let (version, rest) = bytes.split_at(8);
        let (leading_zeros, prefix) = rest.split_at(4);
        let mut hash_prefix = [0; HASH_PREFIX_BYTES];
        hash_prefix.copy_from_slice(prefix);
        Ok(SlotClock {
            version: u64::from_be_bytes(version.try_into().map_err(|_| "version")?),
            leading_zeros: u32::from_be_bytes(leading_zeros.try_into().map_err(|_| "zeros")?),
            hash_prefix,
        })
    }
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

    /// The digest of each range of [`RANGE_SLOTS`] slots.
    pub fn range_digest(&self) -> ClockDigest {
        let mut bytes = Vec::with_capacity(self.slots.len().div_ceil(RANGE_SLOTS) * 8);
        for range in self.slots.chunks(RANGE_SLOTS) {
            let mut h = Sha512_256::new();
            for entry in range {
                h.update(entry.to_bytes());
            }
            let digest: Hash32 = h.finalize().into();
            bytes.extend_from_slice(digest.get(..RANGE_DIGEST_BYTES).unwrap_or_default());
        }
        ClockDigest(ByteBuf::from(bytes))
    }

    /// The ranges (by index) where `theirs` differs from this clock, or `None` when it
    /// describes another number of slots.
    pub fn differing_ranges(&self, theirs: &ClockDigest) -> Option<Vec<u32>> {
        let ours = self.range_digest();
        if ours.0.len() != theirs.0.len() {
            return None;
        }
        Some(
            ours.0
                .chunks(RANGE_DIGEST_BYTES)
                .zip(theirs.0.chunks(RANGE_DIGEST_BYTES))
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(range, _)| range as u32)
                .collect(),
        )
    }

    /// The entries of `ranges` (indices from [`VectorClock::differing_ranges`]).
    pub fn part(&self, ranges: &[u32]) -> PartialClock {
        let ranges = ranges
            .iter()
            .filter_map(|range| {
                let first = *range as usize * RANGE_SLOTS;
                let entries = self.slots.get(first..)?;
                let entries = entries.get(..RANGE_SLOTS.min(entries.len()))?;
                (!entries.is_empty()).then(|| ClockRange {
                    first_slot: first as u32,
                    entries: entries.to_vec(),
                })
            })
            .collect();
        PartialClock {
            slot_count: self.slots.len() as u32,
            ranges,
        }
    }

    /// This clock with `part`'s entries written over it (a peer's clock learnt in
    /// parts: the ranges it did not send matched ours).
    pub fn overlaid(&self, part: &PartialClock) -> VectorClock {
        let mut clock = self.clone();
        for (slot, entry) in part.entries() {
            if let Some(ours) = clock.slots.get_mut(slot as usize) {
                *ours = entry;
            }
        }
        clock
    }
}

/// Per-range digests of a clock, [`RANGE_DIGEST_BYTES`] per range of [`RANGE_SLOTS`]:
/// equal digests mean equal replicas, and a differing range names the slots to compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockDigest(pub ByteBuf);

/// Some ranges of a clock: the answer to a digest that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialClock {
    /// Slots of the whole clock (a neighbour with another layout is ignored).
    pub slot_count: u32,
    /// The ranges sent.
    pub ranges: Vec<ClockRange>,
}

/// Consecutive entries of a clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockRange {
    /// The slot of the first entry.
    pub first_slot: u32,
    /// Entries from `first_slot` on.
    pub entries: Vec<SlotClock>,
}

impl PartialClock {
    /// Every (slot, entry) it carries, within its slot count.
    pub fn entries(&self) -> impl Iterator<Item = (u32, SlotClock)> + '_ {
        self.ranges.iter().flat_map(move |range| {
            range
                .entries
                .iter()
                .enumerate()
                .map(move |(i, entry)| (range.first_slot.saturating_add(i as u32), *entry))
                .filter(move |(slot, _)| *slot < self.slot_count)
        })
    }

    /// Entries carried in all.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.entries.len()).sum()
    }

    /// Whether it carries no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[test]
    fn range_digests_name_the_ranges_that_differ_and_parts_carry_them() {
        let a = VectorClock::empty(100); // ranges 0..32, 32..64, 64..96, 96..100
        let mut b = a.clone();
        b.slots[40] = entry(1, 0x80);
        b.slots[99] = entry(2, 0x80);
        assert_eq!(a.differing_ranges(&b.range_digest()), Some(vec![1, 3]));
        assert_eq!(a.differing_ranges(&a.range_digest()), Some(vec![]));
        assert_eq!(
            a.differing_ranges(&VectorClock::empty(10).range_digest()),
            None
        );

        let part = b.part(&[1, 3, 9]);
        assert_eq!(part.len(), 32 + 4);
        assert_eq!(a.overlaid(&part), b);
        let ahead: Vec<u32> = part
            .entries()
            .filter(|(slot, e)| *e > a.slots[*slot as usize])
            .map(|(slot, _)| slot)
            .collect();
        assert_eq!(ahead, vec![40, 99]);
    }

    #[test]
    fn entries_round_trip_as_twenty_bytes() {
        let e = entry(7, 0x01);
        let bytes: ByteBuf = e.into();
        assert_eq!(bytes.len(), 20);
        assert_eq!(SlotClock::try_from(bytes), Ok(e));
        assert!(SlotClock::try_from(ByteBuf::from(vec![0; 19])).is_err());
    }
}
