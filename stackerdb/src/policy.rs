//! A DB's policy: the SIP's controlling smart contract, as a Rust trait.
//!
//! The policy fixes the slot count and the largest chunk, decides who may write each
//! slot (`stackerdb-auth-write`) and drives garbage collection
//! (`stackerdb-garbage-collect?` once per burn block, then `stackerdb-is-garbage?` per
//! slot). [`SlotWriters`] is the policy the boot DBs use: one public key per slot.

use bitcoin::secp256k1::PublicKey;

use crate::chunk::Hash32;

/// The rules of one Stacker DB.
pub trait DbPolicy: Send + Sync {
    /// Number of slots.
    fn slot_count(&self) -> u32;

    /// Largest chunk, in bytes.
    fn max_chunk_bytes(&self) -> usize;

    /// Whether `writer` may write `version` of `slot` with data hashing to `hash`.
    fn auth_write(&self, slot: u32, version: u64, hash: &Hash32, writer: &PublicKey) -> bool;

    /// Asked once per burn block: should garbage collection run now?
    fn garbage_collect(&self, burn_height: u64) -> bool;

    /// The latest collecting burn height at or below `burn_height`. A replica that
    /// missed the collecting block itself (offline, or started later) still collects,
    /// and lands at the same GC epoch as its neighbours. The default knows only the
    /// block at hand.
    fn last_collection(&self, burn_height: u64) -> Option<u64> {
        self.garbage_collect(burn_height).then_some(burn_height)
    }

    /// During garbage collection: is this chunk garbage (reset to version 0, empty)?
    fn is_garbage(&self, slot: u32, version: u64, hash: &Hash32, writer: &PublicKey) -> bool;
}

/// When the boot DBs collect garbage: at the first burn block of every term, when the
/// previous term's signing state is evicted (SIP, "Producer DB Setup").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSchedule {
    /// Burn height of the first block of term 0.
    pub first_burn_height: u64,
    /// Burn blocks per term.
    pub term_length: u64,
}

impl TermSchedule {
    /// Whether `burn_height` starts a term.
    pub fn starts_term(&self, burn_height: u64) -> bool {
        self.term_length > 0
            && burn_height >= self.first_burn_height
            && (burn_height - self.first_burn_height).is_multiple_of(self.term_length)
    }

    /// The first burn height of the term holding `burn_height`.
    pub fn term_start(&self, burn_height: u64) -> Option<u64> {
        let since = burn_height.checked_sub(self.first_burn_height)?;
        let length = self.term_length;
        (length > 0).then(|| burn_height - since % length)
    }
}

/// A policy where each slot has at most one writer, known by public key; every chunk is
/// garbage at the start of a term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotWriters {
    writers: Vec<Option<PublicKey>>,
    max_chunk_bytes: usize,
    schedule: TermSchedule,
}

impl SlotWriters {
    /// A policy from the list of slot writers (`None`: nobody may write the slot).
    pub fn new(
        writers: Vec<Option<PublicKey>>,
        max_chunk_bytes: usize,
        schedule: TermSchedule,
    ) -> Self {
        SlotWriters {
            writers,
            max_chunk_bytes,
            schedule,
        }
    }

    /// The writer of `slot`, if any.
    pub fn writer(&self, slot: u32) -> Option<&PublicKey> {
        self.writers.get(slot as usize).and_then(Option::as_ref)
    }
}

impl DbPolicy for SlotWriters {
    fn slot_count(&self) -> u32 {
        self.writers.len() as u32
    }

    fn max_chunk_bytes(&self) -> usize {
        self.max_chunk_bytes
    }

    fn auth_write(&self, slot: u32, _version: u64, _hash: &Hash32, writer: &PublicKey) -> bool {
        self.writer(slot) == Some(writer)
    }

    fn garbage_collect(&self, burn_height: u64) -> bool {
        self.schedule.starts_term(burn_height)
    }

    fn last_collection(&self, burn_height: u64) -> Option<u64> {
        self.schedule.term_start(burn_height)
    }

    fn is_garbage(&self, _: u32, _: u64, _: &Hash32, _: &PublicKey) -> bool {
        true
    }
}

/// Slots of the producer DB (`.block-producers`): 100 signer state, 100 signing state,
/// 100 proposed blocks.
pub const PRODUCER_DB_SLOTS: u32 = 300;

/// Signer shares per term, and so signer slots of the producer DB.
pub const SIGNER_SHARES: usize = 100;

/// Slots of the stacker DB (`.pox-5`): 4000 pre-computation, 4000 signing.
pub const STACKER_DB_SLOTS: u32 = 8000;

/// Reward slots of the stacker DB's first half.
pub const STACKER_SIGNERS: usize = 4000;

/// Why a boot layout could not be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// More than 100 producers, or a share list not covering 100 shares.
    #[error(
        "the producer layout needs exactly {SIGNER_SHARES} shares and at most 100 producers, got {shares} shares and {producers} producers"
    )]
    Producers {
        /// Shares assigned.
        shares: usize,
        /// Producers listed.
        producers: usize,
    },
    /// Stacker ranges adding up to more than 4000 slots.
    #[error("stacker ranges cover {0} slots, at most {STACKER_SIGNERS} are available")]
    Stackers(usize),
}

/// The producer DB for one term.
///
/// `share_owners[i]` is the producer holding signer share `i` (chain/ assigns shares by
/// the SIP's round-robin); it writes slot `i` (signer state) and slot `100 + i` (signing
/// state). `producers_by_weight` lists producers in ascending order of BTC spent;
/// producer `k` writes block slot `200 + k`. Unused block slots have no writer.
pub fn producer_db(
    share_owners: &[PublicKey],
    producers_by_weight: &[PublicKey],
    max_chunk_bytes: usize,
    schedule: TermSchedule,
) -> Result<SlotWriters, LayoutError> {
    if share_owners.len() != SIGNER_SHARES || producers_by_weight.len() > SIGNER_SHARES {
        return Err(LayoutError::Producers {
            shares: share_owners.len(),
            producers: producers_by_weight.len(),
        });
    }
    let mut writers: Vec<Option<PublicKey>> = Vec::with_capacity(PRODUCER_DB_SLOTS as usize);
    writers.extend(share_owners.iter().copied().map(Some));
    writers.extend(share_owners.iter().copied().map(Some));
    writers.extend(producers_by_weight.iter().copied().map(Some));
    writers.resize(PRODUCER_DB_SLOTS as usize, None);
    Ok(SlotWriters::new(writers, max_chunk_bytes, schedule))
}

/// The stacker DB for one reward cycle: each stacker holds a contiguous range of the
/// first 4000 slots (in stacking order) and the same range of the last 4000.
pub fn stacker_db(
    ranges: &[(PublicKey, usize)],
    max_chunk_bytes: usize,
    schedule: TermSchedule,
) -> Result<SlotWriters, LayoutError> {
    let total: usize = ranges.iter().map(|(_, n)| n).sum();
    if total > STACKER_SIGNERS {
        return Err(LayoutError::Stackers(total));
    }
    let mut first_half: Vec<Option<PublicKey>> = ranges
        .iter()
        .flat_map(|(key, n)| std::iter::repeat_n(Some(*key), *n))
        .collect();
    first_half.resize(STACKER_SIGNERS, None);
    let mut writers = first_half.clone();
    writers.extend(first_half);
    Ok(SlotWriters::new(writers, max_chunk_bytes, schedule))
}

#[cfg(test)]
mod tests {
    use bitcoin::secp256k1::{SECP256K1, SecretKey};

    use super::*;

    fn key(n: u8) -> PublicKey {
        SecretKey::from_slice(&[n; 32])
            .unwrap()
            .public_key(SECP256K1)
    }

    const SCHEDULE: TermSchedule = TermSchedule {
        first_burn_height: 100,
        term_length: 10,
    };

    #[test]
    fn the_producer_db_mirrors_signer_slots_and_orders_block_slots_by_weight() {
        // The SIP's example: 10/20/30/40% producers, signer slots already assigned.
        let (p10, p20, p30, p40) = (key(1), key(2), key(3), key(4));
        let shares: Vec<PublicKey> = (0..100)
            .map(|i| match i % 10 {
                0 => p10,
                1 | 2 => p20,
                3..=5 => p30,
                _ => p40,
            })
            .collect();
        let db = producer_db(&shares, &[p10, p20, p30, p40], 4096, SCHEDULE).unwrap();
        assert_eq!(db.slot_count(), PRODUCER_DB_SLOTS);
        assert_eq!(db.writer(0), Some(&p10));
        assert_eq!(db.writer(190), Some(&p10));
        assert_eq!(db.writer(106), Some(&p40));
        assert_eq!(db.writer(200), Some(&p10));
        assert_eq!(db.writer(203), Some(&p40));
        assert_eq!(db.writer(204), None);
        assert!(db.auth_write(3, 1, &[0; 32], &p30));
        assert!(!db.auth_write(3, 1, &[0; 32], &p40));
        assert!(!db.auth_write(299, 1, &[0; 32], &p40));
        assert!(!db.auth_write(300, 1, &[0; 32], &p40));
    }

    #[test]
    fn a_producer_layout_without_100_shares_is_refused() {
        assert!(producer_db(&[key(1); 99], &[key(1)], 4096, SCHEDULE).is_err());
    }

    #[test]
    fn the_stacker_db_gives_contiguous_ranges_in_both_halves() {
        let db = stacker_db(&[(key(1), 3), (key(2), 2)], 4096, SCHEDULE).unwrap();
        assert_eq!(db.slot_count(), STACKER_DB_SLOTS);
        assert_eq!(db.writer(2), Some(&key(1)));
        assert_eq!(db.writer(3), Some(&key(2)));
        assert_eq!(db.writer(5), None);
        assert_eq!(db.writer(4002), Some(&key(1)));
        assert_eq!(db.writer(4004), Some(&key(2)));
        assert!(stacker_db(&[(key(1), 4001)], 4096, SCHEDULE).is_err());
    }

    #[test]
    fn garbage_is_collected_at_the_start_of_each_term() {
        let db = stacker_db(&[], 4096, SCHEDULE).unwrap();
        assert!(!db.garbage_collect(99));
        assert!(db.garbage_collect(100));
        assert!(!db.garbage_collect(105));
        assert!(db.garbage_collect(110));
    }
}
