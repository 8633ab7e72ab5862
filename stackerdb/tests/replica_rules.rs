//! The write rules of a replica, one test per rule and per rejection reason, plus
//! evidence, garbage collection, restart and order-independence.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use bitcoin::secp256k1::{PublicKey, SECP256K1, SecretKey};
use tenure_stackerdb::{
    Chunk, DbId, Rejection, Replica, SlotWriters, Store, TermSchedule, WriteError,
    order::{NotNewer, leading_zero_bits},
};

const NET: &str = "testnet";
const SLOTS: usize = 4;
const MAX_CHUNK: usize = 64;
const SCHEDULE: TermSchedule = TermSchedule {
    first_burn_height: 100,
    term_length: 10,
};

fn db() -> DbId {
    DbId::new("test.rules").unwrap()
}

fn secret(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).unwrap()
}

fn public(n: u8) -> PublicKey {
    secret(n).public_key(SECP256K1)
}

/// Slot i is written by key i+1.
fn policy() -> Arc<SlotWriters> {
    let owners = (0..SLOTS as u8).map(|i| Some(public(i + 1))).collect();
    Arc::new(SlotWriters::new(owners, MAX_CHUNK, SCHEDULE))
}

fn replica(dir: &std::path::Path) -> Replica {
    Replica::open(NET, db(), policy(), Store::open(dir).unwrap()).unwrap()
}

fn write(slot: u32, version: u64, data: &[u8]) -> Chunk {
    Chunk::sign(
        NET,
        &db(),
        slot,
        version,
        data.to_vec(),
        &secret(slot as u8 + 1),
    )
}

fn rejection(result: Result<impl std::fmt::Debug, WriteError>) -> Rejection {
    match result {
        Err(WriteError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Two data values for one slot whose hashes have different leading zero bits:
/// (fewer, more).
fn datas_with_different_zeros() -> (Vec<u8>, Vec<u8>) {
    let zeros = |d: &[u8]| leading_zero_bits(&tenure_stackerdb::chunk::data_hash(d));
    let candidates: Vec<Vec<u8>> = (0u32..64).map(|i| i.to_be_bytes().to_vec()).collect();
    let fewer = candidates.iter().find(|d| zeros(d) == 0).unwrap().clone();
    let more = candidates.iter().find(|d| zeros(d) >= 1).unwrap().clone();
    (fewer, more)
}

/// Two data values whose hashes have equal leading zeros: (higher hash, lower hash).
fn datas_with_equal_zeros() -> (Vec<u8>, Vec<u8>) {
    let hash = |d: &[u8]| tenure_stackerdb::chunk::data_hash(d);
    let (a, b) = (b"alpha".to_vec(), b"bravo".to_vec());
    let mut pair = None;
    for i in 0u32..256 {
        let x = [a.clone(), i.to_be_bytes().to_vec()].concat();
        let y = [b.clone(), i.to_be_bytes().to_vec()].concat();
        if leading_zero_bits(&hash(&x)) == leading_zero_bits(&hash(&y)) {
            pair = Some(if hash(&x) > hash(&y) { (x, y) } else { (y, x) });
            break;
        }
    }
    pair.unwrap()
}

#[test]
fn a_valid_write_is_stored_and_read_back_with_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    r.write(write(2, 1, b"hello")).unwrap();
    let value = r.read(2);
    assert_eq!(value.chunk.unwrap().data.as_slice(), b"hello");
    assert_eq!(value.writer, Some(public(3)));
    assert!(r.read(1).chunk.is_none());
}

#[test]
fn a_write_to_a_missing_slot_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    let chunk = Chunk::sign(NET, &db(), 9, 1, b"x".to_vec(), &secret(1));
    assert_eq!(
        rejection(r.write(chunk)),
        Rejection::NoSuchSlot { slot: 9, slots: 4 }
    );
}

#[test]
fn version_zero_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    assert_eq!(
        rejection(r.write(write(0, 0, b"x"))),
        Rejection::VersionZero
    );
}

#[test]
fn an_oversized_chunk_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    assert_eq!(
        rejection(r.write(write(0, 1, &[0; MAX_CHUNK + 1]))),
        Rejection::TooLarge {
            len: MAX_CHUNK + 1,
            max: MAX_CHUNK
        }
    );
}

#[test]
fn a_bad_signature_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    let mut chunk = write(0, 1, b"x");
    chunk.signature = serde_bytes::ByteBuf::from(vec![0u8; 10]);
    assert!(matches!(
        rejection(r.write(chunk)),
        Rejection::BadSignature(_)
    ));
}

#[test]
fn a_writer_without_the_slot_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    // Key 2 owns slot 1, not slot 0.
    let chunk = Chunk::sign(NET, &db(), 0, 1, b"x".to_vec(), &secret(2));
    assert!(matches!(
        rejection(r.write(chunk)),
        Rejection::Unauthorized { slot: 0, .. }
    ));
}

#[test]
fn a_chunk_signed_for_another_network_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    let chunk = Chunk::sign("mainnet", &db(), 0, 1, b"x".to_vec(), &secret(1));
    assert!(matches!(
        rejection(r.write(chunk)),
        Rejection::Unauthorized { .. }
    ));
}

#[test]
fn a_higher_version_replaces_and_an_older_one_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    r.write(write(0, 2, b"two")).unwrap();
    r.write(write(0, 3, b"three")).unwrap();
    assert_eq!(
        rejection(r.write(write(0, 2, b"two again"))),
        Rejection::NotNewer(NotNewer::OlderVersion { have: 3, got: 2 })
    );
    assert_eq!(r.read(0).chunk.unwrap().data.as_slice(), b"three");
}

#[test]
fn at_equal_version_more_leading_zeros_wins_and_fewer_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    let (fewer, more) = datas_with_different_zeros();
    r.write(write(0, 5, &fewer)).unwrap();
    r.write(write(0, 5, &more)).unwrap();
    assert_eq!(r.read(0).chunk.unwrap().data.as_slice(), more.as_slice());
    assert!(matches!(
        rejection(r.write(write(0, 5, &fewer))),
        Rejection::NotNewer(NotNewer::FewerLeadingZeros { version: 5, .. })
    ));
}

#[test]
fn at_equal_version_and_zeros_the_lower_hash_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    let (higher, lower) = datas_with_equal_zeros();
    r.write(write(1, 4, &higher)).unwrap();
    r.write(write(1, 4, &lower)).unwrap();
    assert_eq!(
        rejection(r.write(write(1, 4, &higher))),
        Rejection::NotNewer(NotNewer::HigherHash { version: 4 })
    );
    assert_eq!(r.read(1).chunk.unwrap().data.as_slice(), lower.as_slice());
}

#[test]
fn the_same_chunk_twice_is_a_duplicate_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    r.write(write(0, 1, b"x")).unwrap();
    let clock = r.clock();
    assert_eq!(
        rejection(r.write(write(0, 1, b"x"))),
        Rejection::NotNewer(NotNewer::Duplicate)
    );
    assert_eq!(r.clock(), clock);
    assert!(r.evidence().unwrap().is_empty());
}

#[test]
fn two_signed_chunks_at_one_version_are_kept_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    let (higher, lower) = datas_with_equal_zeros();
    r.write(write(1, 4, &lower)).unwrap();
    // Rejected (higher hash), but it is still proof the writer equivocated.
    assert!(r.write(write(1, 4, &higher)).is_err());
    let evidence = r.evidence().unwrap();
    assert_eq!(evidence.len(), 2);
    assert!(evidence.iter().all(|c| c.slot == 1 && c.version == 4));
}

#[test]
fn garbage_slots_reset_to_empty_on_a_term_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    assert!(r.on_burn_block(100).unwrap().is_empty()); // term 0 starts: nothing held
    assert_eq!(r.gc_epoch(), 100);
    r.write(write(0, 1, b"x")).unwrap();
    r.write(write(3, 7, b"y")).unwrap();
    assert!(r.on_burn_block(105).unwrap().is_empty());
    assert_eq!(r.on_burn_block(110).unwrap(), vec![0, 3]);
    assert_eq!(r.gc_epoch(), 110);
    assert!(r.read(0).chunk.is_none());
    assert_eq!(r.clock().slots[3].version, 0);
    // After a restart the slots are still empty and the epoch is kept, so a replayed
    // burn block collects nothing written since.
    r.write(write(3, 1, b"term 1")).unwrap();
    drop(r);
    let mut r = replica(dir.path());
    assert_eq!(r.gc_epoch(), 110);
    assert!(r.read(0).chunk.is_none());
    assert!(r.on_burn_block(110).unwrap().is_empty());
    assert_eq!(r.read(3).chunk.unwrap().data, b"term 1");
}

/// A boot DB's policy follows the terms: at a term's start the new writers' policy
/// replaces the old and the term's first burn block clears the old term's chunks.
/// From the switch on the old writer is refused and the new one accepted; a policy of
/// another shape is refused and changes nothing.
#[test]
fn a_switched_policy_judges_writes_from_then_on_and_gc_clears_the_old_terms_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    r.write(write(0, 1, b"term 0")).unwrap();
    // Term 1: slot 0 passes from key 1 to key 9.
    let mut owners: Vec<Option<PublicKey>> =
        (0..SLOTS as u8).map(|i| Some(public(i + 1))).collect();
    owners[0] = Some(public(9));
    r.set_policy(Arc::new(SlotWriters::new(owners, MAX_CHUNK, SCHEDULE)))
        .unwrap();
    assert_eq!(r.on_burn_block(110).unwrap(), vec![0]);
    assert!(r.read(0).chunk.is_none());
    assert!(matches!(
        r.write(write(0, 2, b"old writer")),
        Err(WriteError::Rejected(_))
    ));
    let by_nine = Chunk::sign(NET, &db(), 0, 1, b"term 1".to_vec(), &secret(9));
    r.write(by_nine).unwrap();
    assert_eq!(r.read(0).chunk.unwrap().data, b"term 1");
    // Another shape: refused, the policy in force unchanged.
    let wider = Arc::new(SlotWriters::new(vec![None; SLOTS + 1], MAX_CHUNK, SCHEDULE));
    assert!(r.set_policy(wider).is_err());
    let by_nine = Chunk::sign(NET, &db(), 0, 2, b"still".to_vec(), &secret(9));
    r.write(by_nine).unwrap();
}

#[test]
fn a_replica_that_missed_the_term_start_still_collects() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    r.write(write(2, 3, b"old")).unwrap();
    // Offline over burn block 110; the first block it sees is 113.
    assert_eq!(r.on_burn_block(113).unwrap(), vec![2]);
    assert_eq!(r.gc_epoch(), 110);
}

#[test]
fn chunks_clocks_and_evidence_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (higher, lower) = datas_with_equal_zeros();
    let clock = {
        let mut r = replica(dir.path());
        r.write(write(0, 1, b"a")).unwrap();
        r.write(write(2, 9, &lower)).unwrap();
        let _ = r.write(write(2, 9, &higher));
        r.clock()
    };
    let r = replica(dir.path());
    assert_eq!(r.clock(), clock);
    assert_eq!(r.read(0).writer, Some(public(1)));
    assert_eq!(r.evidence().unwrap().len(), 2);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Any set of writes, delivered in any order, leaves identical replicas.
    #[test]
    fn any_delivery_order_ends_with_identical_replicas(
        writes in proptest::collection::vec((0u32..SLOTS as u32, 1u64..4, 0u8..6), 1..16),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let chunks: Vec<Chunk> = writes.iter().map(|(slot, version, data)| write(*slot, *version, &[*data])).collect();
        let mut shuffled = chunks.clone();
        // A seeded Fisher-Yates shuffle.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, mut b) = (replica(a_dir.path()), replica(b_dir.path()));
        for c in chunks { let _ = a.write(c); }
        for c in shuffled { let _ = b.write(c); }
        proptest::prop_assert_eq!(a.clock(), b.clock());
        for slot in 0..SLOTS as u32 {
            proptest::prop_assert_eq!(a.read(slot), b.read(slot));
        }
    }
}

#[test]
fn an_equivocator_cannot_grow_the_evidence_without_bound_and_gc_clears_it() {
    use tenure_stackerdb::replica::MAX_EVIDENCE_PER_SLOT;
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica(dir.path());
    // Two different chunks at every version from 1 to 100: 200 records, each with its
    // own flush, kept for ever.
    for version in 1..=100u64 {
        let _ = r.write(write(1, version, format!("a{version}").as_bytes()));
        let _ = r.write(write(1, version, format!("b{version}").as_bytes()));
    }
    let evidence = r.evidence().unwrap();
    assert_eq!(evidence.len(), MAX_EVIDENCE_PER_SLOT);
    // The proof is there: pairs at one version from one writer.
    assert!(evidence.iter().all(|c| c.slot == 1));
    // An honest writer of another slot is unaffected.
    r.write(write(2, 1, b"honest")).unwrap();
    r.flush().unwrap();
    assert_eq!(r.read(2).chunk.unwrap().data, b"honest");
    // The slot's collection clears its evidence with it.
    let term_start = SCHEDULE.first_burn_height + SCHEDULE.term_length;
    let reset = r.on_burn_block(term_start).unwrap();
    assert!(reset.contains(&1));
    assert!(r.evidence().unwrap().is_empty());
}
