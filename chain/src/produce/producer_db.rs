//! The boot producer DB (the SIP's `.block-producers`, seed 001 "Producer DB Setup")
//! follows the terms: its policy for term N gives each of the 300 slots to the
//! producer the term's plan assigns it ([`crate::shares`]: signer slots 0–99 and the
//! signing-state slots 100–199 by the round-robin of shares, block slots 200–299 one
//! per producer from the smallest spend), and the term's first burn block collects
//! every chunk of the term before. Every node derives the same policy from its own
//! burnchain scan, so no node is told who may write.
//!
//! What producers keep there: each writes its certificate of the term's key
//! ([`super::term_key::KeyCertificate`]) into its first signer slot at the term's
//! start, so the term's key, its verifying shares and who certified it are public in
//! the DB as well as on the term-keys topic (DESIGN "Who the term's key belongs to").
//! Proposals travel on the blocks topic instead of the block slots: a block's
//! agreement waits on no replication round (decided in `producer`).

use bitcoin::secp256k1::PublicKey;
use tenure_stackerdb::{DbId, SlotWriters, TermSchedule};

use crate::{shares::PRODUCER_DB_SLOTS, terms::Terms};

use super::TermPlan;

/// The producer DB's id: the SIP's boot contract.
pub const PRODUCER_DB: &str = "SP000000000000000000002Q6VF78.block-producers";

/// Largest chunk of the producer DB: a key certificate (a record with 100 verifying
/// shares) and room to spare.
pub const PRODUCER_DB_CHUNK_BYTES: usize = 16 * 1024;

/// The producer DB's id.
pub fn producer_db_id() -> Result<DbId, tenure_stackerdb::DbIdError> {
    DbId::new(PRODUCER_DB)
}

/// The producer DB's policy for `plan`'s term (`None`: a term without producers, whose
/// slots nobody may write), collecting garbage at every term's first burn block.
pub fn policy(plan: Option<&TermPlan>, terms: &Terms) -> SlotWriters {
    let schedule = TermSchedule {
        first_burn_height: terms.first_burn_height,
        term_length: terms.length,
    };
    let writers: Vec<Option<PublicKey>> = match plan {
        Some(plan) => plan
            .assignment
            .slots
            .iter()
            .map(|owner| {
                owner
                    .and_then(|i| plan.producers.get(i))
                    .map(|p| p.producer)
            })
            .collect(),
        None => Vec::new(),
    };
    let mut writers = writers;
    writers.resize(PRODUCER_DB_SLOTS, None);
    SlotWriters::new(writers, PRODUCER_DB_CHUNK_BYTES, schedule)
}

/// The first signer slot `producer` holds in `plan`'s term: where it keeps its
/// certificate of the term's key.
pub fn certificate_slot(plan: &TermPlan, producer: &PublicKey) -> Option<u32> {
    let index = plan
        .producers
        .iter()
        .position(|p| p.producer == *producer)?;
    plan.assignment
        .slots
        .iter()
        .take(crate::shares::SHARES)
        .position(|owner| *owner == Some(index))
        .and_then(|slot| u32::try_from(slot).ok())
}

#[cfg(test)]
mod tests {
    use bitcoin::{
        Amount, Txid,
        hashes::Hash as _,
        secp256k1::{SECP256K1, SecretKey},
    };
    use tenure_stackerdb::DbPolicy;

    use super::*;
    use crate::{shares, terms::Producer};

    fn key(n: u8) -> PublicKey {
        SecretKey::from_slice(&[n; 32])
            .unwrap()
            .public_key(SECP256K1)
    }

    #[test]
    fn each_slot_goes_to_the_producer_the_plan_assigns_it_and_nobody_else() {
        // The SIP's example: 10/20/30/40 % of the spend.
        let producers: Vec<Producer> = [(4u8, 40u64), (3, 30), (2, 20), (1, 10)]
            .iter()
            .map(|(n, w)| Producer {
                producer: key(*n),
                weight: Amount::from_sat(*w * 1_000),
                txid: Txid::from_byte_array([*n; 32]),
            })
            .collect();
        let plan = TermPlan {
            term: 5,
            assignment: shares::assign(&producers, [1; 32]),
            producers,
            seed: [1; 32],
        };
        let terms = Terms::new(100);
        let db = policy(Some(&plan), &terms);
        assert_eq!(db.slot_count(), 300);
        // Slots 0 | 1, 2 | 3, 4, 5 | 6..9 from the smallest spend, mirrored at 100.
        for (slot, owner) in [
            (0, 1),
            (1, 2),
            (3, 3),
            (6, 4),
            (9, 4),
            (10, 1),
            (100, 1),
            (106, 4),
        ] {
            assert_eq!(db.writer(slot), Some(&key(owner)), "slot {slot}");
        }
        // Block slots 200.. one each, from the smallest spend; the rest unused.
        assert_eq!(db.writer(200), Some(&key(1)));
        assert_eq!(db.writer(203), Some(&key(4)));
        assert_eq!(db.writer(204), None);
        assert_eq!(certificate_slot(&plan, &key(4)), Some(6));
        assert_eq!(certificate_slot(&plan, &key(9)), None);
        // No plan: nobody writes.
        let empty = policy(None, &terms);
        assert_eq!(empty.slot_count(), 300);
        assert!((0..300).all(|s| empty.writer(s).is_none()));
        // Garbage at every term's first burn block.
        assert!(db.garbage_collect(100 + 5 * terms.length));
        assert!(!db.garbage_collect(101 + 5 * terms.length));
    }
}
