//! Table tests of the chain rules built so far: enrollments, selection, shares and
//! slots (with the SIP's own example), rewards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::{
    Amount, ScriptBuf, Transaction, TxOut, Txid,
    absolute::LockTime,
    hashes::Hash,
    secp256k1::{PublicKey, SECP256K1, SecretKey},
    transaction::Version,
};
use proptest::prelude::*;
use tenure_chain::{
    ops::enrollment::{self, EnrollmentData, EnrollmentError, Magic, Payment, burn_output},
    shares::{SHARES, assign},
    terms::{Candidate, Producer, Terms, select},
};

fn key(n: u8) -> PublicKey {
    SecretKey::from_slice(&[n; 32])
        .unwrap()
        .public_key(SECP256K1)
}

fn data() -> EnrollmentData {
    EnrollmentData {
        set_block: 812_345,
        set_txoff: 7,
        key_block: 812_001,
        key_txoff: 3,
        signing_pubkey: key(9),
        state_root: [0xab; 32],
    }
}

fn tx(outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![],
        output: outputs,
    }
}

fn pox(amount: u64, n: usize) -> Vec<TxOut> {
    (0..n)
        .map(|i| TxOut {
            value: Amount::from_sat(amount),
            script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array(
                [i as u8; 20],
            )),
        })
        .collect()
}

/// The reward cycle's PoX recipients: the scripts `pox` pays, in order.
fn recipients() -> Vec<ScriptBuf> {
    pox(0, 20).into_iter().map(|o| o.script_pubkey).collect()
}

#[test]
fn an_enrollment_paying_itself_is_no_spend_and_gets_no_weight() {
    // Twenty equal outputs back to the producer's own script: its "spend" came
    // back to it, and it ranked as if it had paid.
    let own = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([0xee; 20]));
    let mut outputs = vec![data().op_return(Magic::Regtest)];
    outputs.extend((0..20).map(|_| TxOut {
        value: Amount::from_sat(5_000_000),
        script_pubkey: own.clone(),
    }));
    assert_eq!(
        enrollment::parse(&tx(outputs), Magic::Regtest, Payment::Pox(&recipients())),
        Err(EnrollmentError::WrongRecipient(1))
    );
    // One recipient swapped for the producer in the middle is caught there.
    let mut outputs = vec![data().op_return(Magic::Regtest)];
    let mut paid = pox(5_000, 20);
    paid[7].script_pubkey = own;
    outputs.extend(paid);
    assert_eq!(
        enrollment::parse(&tx(outputs), Magic::Regtest, Payment::Pox(&recipients())),
        Err(EnrollmentError::WrongRecipient(8))
    );
    // Paying the cycle's recipients, or burning, ranks as before.
    let mut honest = vec![data().op_return(Magic::Regtest)];
    honest.extend(pox(5_000, 20));
    assert_eq!(
        enrollment::parse(&tx(honest), Magic::Regtest, Payment::Pox(&recipients()))
            .unwrap()
            .spent,
        Amount::from_sat(100_000)
    );
}

#[test]
fn an_enrollment_names_a_block_of_the_term_before_its_own() {
    let terms = Terms::new(100);
    let mut d = data();
    // Mined at 125 (term 2): set block must be in term 1 (110–119).
    for (set_block, ok) in [
        (110, true),
        (119, true),
        (109, false),
        (120, false),
        (124, false),
    ] {
        d.set_block = set_block;
        assert_eq!(
            enrollment::check_term(&d, &terms, 125).is_ok(),
            ok,
            "set block {set_block}"
        );
    }
    // Term 0 has no term before it.
    d.set_block = 99;
    assert!(enrollment::check_term(&d, &terms, 105).is_err());
}

#[test]
fn enrollment_data_has_the_sips_layout() {
    let bytes = data().to_bytes(Magic::Mainnet);
    assert_eq!(bytes.len(), 80);
    assert_eq!(&bytes[0..2], b"X2");
    assert_eq!(bytes[2], b'@');
    assert_eq!(&bytes[3..7], &812_345u32.to_be_bytes());
    assert_eq!(&bytes[7..9], &7u16.to_be_bytes());
    assert_eq!(&bytes[9..13], &812_001u32.to_be_bytes());
    assert_eq!(&bytes[13..15], &3u16.to_be_bytes());
    assert_eq!(&bytes[15..48], &key(9).serialize());
    assert_eq!(&bytes[48..80], &[0xab; 32]);
    assert_eq!(
        EnrollmentData::from_bytes(&bytes, Magic::Mainnet),
        Ok(data())
    );
}

#[test]
fn enrollments_parse_with_pox_or_burn_outputs() {
    let mut outputs = vec![data().op_return(Magic::Regtest)];
    outputs.extend(pox(5_000, 20));
    let parsed =
        enrollment::parse(&tx(outputs), Magic::Regtest, Payment::Pox(&recipients())).unwrap();
    assert_eq!(parsed.spent, Amount::from_sat(100_000));
    assert_eq!(parsed.data, data());

    // Missing recipients are burns of the same amount.
    let mut with_burns = vec![data().op_return(Magic::Regtest)];
    with_burns.extend(pox(5_000, 18));
    with_burns.push(burn_output(Amount::from_sat(5_000)));
    with_burns.push(burn_output(Amount::from_sat(5_000)));
    assert!(
        enrollment::parse(&tx(with_burns), Magic::Regtest, Payment::Pox(&recipients())).is_ok()
    );

    // Outside a reward cycle: a burn.
    let burn = vec![
        data().op_return(Magic::Regtest),
        burn_output(Amount::from_sat(42_000)),
    ];
    assert_eq!(
        enrollment::parse(&tx(burn), Magic::Regtest, Payment::Burn)
            .unwrap()
            .spent,
        Amount::from_sat(42_000)
    );
}

#[test]
fn malformed_enrollments_are_ignored_with_their_reason() {
    let good = data().to_bytes(Magic::Regtest);
    let with_data = |bytes: Vec<u8>| {
        let push = bitcoin::script::PushBytesBuf::try_from(bytes).unwrap();
        let mut outputs = vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(push),
        }];
        outputs.extend(pox(1_000, 20));
        tx(outputs)
    };
    let parse = |t: &Transaction| enrollment::parse(t, Magic::Regtest, Payment::Pox(&recipients()));

    assert_eq!(parse(&tx(vec![])), Err(EnrollmentError::NoOpReturn));
    assert_eq!(parse(&tx(pox(1, 21))), Err(EnrollmentError::NoOpReturn));
    assert_eq!(
        parse(&with_data(good[..79].to_vec())),
        Err(EnrollmentError::Length(79))
    );
    assert_eq!(
        parse(&with_data(data().to_bytes(Magic::Mainnet).to_vec())),
        Err(EnrollmentError::Magic(*b"X2"))
    );
    let mut op = good.to_vec();
    op[2] = b'[';
    assert_eq!(parse(&with_data(op)), Err(EnrollmentError::Op(b'[')));
    let mut bad_key = good.to_vec();
    bad_key[15] = 0x05;
    assert_eq!(parse(&with_data(bad_key)), Err(EnrollmentError::SigningKey));

    let mut unequal = vec![data().op_return(Magic::Regtest)];
    unequal.extend(pox(1_000, 19));
    unequal.extend(pox(999, 1));
    assert_eq!(
        parse(&tx(unequal)),
        Err(EnrollmentError::UnequalPox(1_000, 999))
    );
    let mut short = vec![data().op_return(Magic::Regtest)];
    short.extend(pox(1_000, 5));
    assert_eq!(parse(&tx(short)), Err(EnrollmentError::NoSpend));
    let not_burn = [vec![data().op_return(Magic::Regtest)], pox(1_000, 1)].concat();
    assert_eq!(
        enrollment::parse(&tx(not_burn), Magic::Regtest, Payment::Burn),
        Err(EnrollmentError::NotBurn)
    );
}

#[test]
fn spends_past_the_money_range_are_refused_not_a_panic() {
    // 20 equal outputs of a huge value: multiplying them panicked on overflow.
    for each in [u64::MAX / 10, 2_000_000 * 100_000_000] {
        let mut huge = vec![data().op_return(Magic::Regtest)];
        huge.extend(pox(each, 20));
        assert_eq!(
            enrollment::parse(&tx(huge), Magic::Regtest, Payment::Pox(&recipients())),
            Err(EnrollmentError::OutOfRange(each))
        );
    }
    // Outside a reward cycle the one burn is the spend: past the money range it is
    // refused too (found by the `enrollment` fuzz target).
    for burn in [u64::MAX, Amount::MAX_MONEY.to_sat() + 1] {
        let huge = vec![
            data().op_return(Magic::Regtest),
            enrollment::burn_output(Amount::from_sat(burn)),
        ];
        assert_eq!(
            enrollment::parse(&tx(huge), Magic::Regtest, Payment::Burn),
            Err(EnrollmentError::BurnOutOfRange(burn))
        );
    }
    // The largest honest enrollment still counts.
    let mut most = vec![data().op_return(Magic::Regtest)];
    most.extend(pox(1_000_000 * 100_000_000, 20));
    assert_eq!(
        enrollment::parse(&tx(most), Magic::Regtest, Payment::Pox(&recipients()))
            .unwrap()
            .spent,
        Amount::from_int_btc(20_000_000)
    );
}

#[test]
fn terms_are_ten_burn_blocks_chosen_two_terms_ahead() {
    let terms = Terms::new(100);
    assert_eq!(terms.term_of(99), None);
    assert_eq!(terms.term_of(100), Some(0));
    assert_eq!(terms.term_of(119), Some(1));
    assert_eq!(terms.heights(2), 120..130);
    assert_eq!(terms.enrollment_term_for(5), Some(3));
    assert_eq!(terms.enrollment_term_for(1), None);
}

fn candidate(n: u8, sats: u64) -> Candidate {
    Candidate {
        producer: key(n),
        spent: Amount::from_sat(sats),
        txid: Txid::from_byte_array([n; 32]),
    }
}

#[test]
fn the_top_hundred_are_selected_and_small_spends_become_credit() {
    // 105 candidates: the five smallest fall outside the top 100.
    let mut candidates: Vec<Candidate> = (1..=105)
        .map(|n| candidate(n, 1_000 + u64::from(n)))
        .collect();
    let selection = select(&candidates, &BTreeMap::new(), 0);
    assert_eq!(selection.producers.len(), 100);
    assert_eq!(selection.producers[0].producer, key(105));
    assert_eq!(selection.credit.len(), 5);
    assert_eq!(selection.credit[&key(1)], Amount::from_sat(1_001));

    // A 1% bound: one tiny producer among big ones is left out and credited...
    candidates = vec![
        candidate(1, 1_000_000),
        candidate(2, 1_000_000),
        candidate(3, 5_000),
    ];
    let selection = select(&candidates, &BTreeMap::new(), 100);
    assert_eq!(selection.producers.len(), 2);
    assert_eq!(selection.credit[&key(3)], Amount::from_sat(5_000));
    // ...and its credit counts with its next enrollment.
    let next = vec![candidate(1, 1_000_000), candidate(3, 20_000)];
    let selection = select(&next, &selection.credit, 100);
    let three = selection
        .producers
        .iter()
        .find(|p| p.producer == key(3))
        .unwrap();
    assert_eq!(three.weight, Amount::from_sat(25_000));
    assert!(selection.credit.is_empty());
}

#[test]
fn carried_credit_is_bounded_and_keeps_the_largest() {
    use tenure_chain::terms::MAX_CARRIED_CREDIT;
    // Every term a crowd of one-off producers below the bound: the credit map grew by
    // all of them, forever.
    let big = |n: u32| Candidate {
        producer: wide_key(n),
        spent: Amount::from_sat(1_000_000_000),
        txid: Txid::from_byte_array([1; 32]),
    };
    let mut credit = BTreeMap::new();
    for term in 0..3u32 {
        let mut candidates = vec![big(0)];
        candidates.extend((1..=800u32).map(|i| Candidate {
            producer: wide_key(term * 1_000 + i),
            spent: Amount::from_sat(u64::from(i)),
            txid: Txid::from_byte_array([2; 32]),
        }));
        credit = select(&candidates, &credit, 100).credit;
        assert!(credit.len() <= MAX_CARRIED_CREDIT, "{}", credit.len());
    }
    assert_eq!(credit.len(), MAX_CARRIED_CREDIT);
    // The largest credits stayed; the honest big producer is still selected.
    assert!(credit.contains_key(&wide_key(2_800)));
    assert!(!credit.contains_key(&wide_key(1)));
    let selection = select(&[big(0)], &credit, 100);
    assert_eq!(selection.producers.len(), 1);
}

/// A distinct valid key for any `n`.
fn wide_key(n: u32) -> bitcoin::secp256k1::PublicKey {
    let mut secret = [1u8; 32];
    secret[28..].copy_from_slice(&n.to_be_bytes());
    SecretKey::from_slice(&secret)
        .unwrap()
        .public_key(SECP256K1)
}

fn producers(spends: &[u64]) -> Vec<Producer> {
    spends
        .iter()
        .enumerate()
        .map(|(i, s)| Producer {
            producer: key(i as u8 + 1),
            weight: Amount::from_sat(*s),
            txid: Txid::from_byte_array([i as u8 + 1; 32]),
        })
        .collect()
}

#[test]
fn the_sips_ten_twenty_thirty_forty_example_reproduces_exactly() {
    // Listed out of order on purpose: assignment orders by spend.
    let set = producers(&[30, 10, 40, 20]);
    let a = assign(&set, [7; 32]);
    assert_eq!(a.shares, vec![30, 10, 40, 20]);
    let owned = |producer: usize| -> Vec<usize> {
        (0..200).filter(|s| a.slots[*s] == Some(producer)).collect()
    };
    let tens: Vec<usize> = (0..20).map(|r| r * 10).collect();
    assert_eq!(owned(1), tens); // 0, 10, 20, …, 190
    let twenties: Vec<usize> = (0..20).flat_map(|r| [r * 10 + 1, r * 10 + 2]).collect();
    assert_eq!(owned(3), twenties); // 1, 2, 11, 12, …, 191, 192
    let thirties: Vec<usize> = (0..20)
        .flat_map(|r| [r * 10 + 3, r * 10 + 4, r * 10 + 5])
        .collect();
    assert_eq!(owned(0), thirties);
    let forties: Vec<usize> = (0..20)
        .flat_map(|r| (6..10).map(move |k| r * 10 + k))
        .collect();
    assert_eq!(owned(2), forties);
    // Block slots in ascending order of spend: 200 → 10%, 201 → 20%, …
    assert_eq!(&a.slots[200..204], &[Some(1), Some(3), Some(0), Some(2)]);
    assert!(a.slots[204..].iter().all(Option::is_none));
}

#[test]
fn equal_spends_are_ordered_by_the_burnchain_seed() {
    let set = producers(&[50, 50, 50, 50]);
    let orders: BTreeSet<Vec<usize>> = (0..16u8).map(|s| assign(&set, [s; 32]).order).collect();
    assert!(
        orders.len() > 1,
        "the seed never changed the order of equals"
    );
    assert_eq!(assign(&set, [3; 32]), assign(&set, [3; 32]));
}

proptest! {
    #[test]
    fn slots_partition_and_follow_the_shares(
        spends in prop::collection::vec(1u64..1_000_000, 1..100),
        seed in any::<[u8; 32]>(),
    ) {
        let set = producers(&spends);
        let a = assign(&set, seed);
        prop_assert_eq!(a.shares.iter().map(|s| usize::from(*s)).sum::<usize>(), SHARES);
        for (i, shares) in a.shares.iter().enumerate() {
            let owned = (0..SHARES).filter(|s| a.slots[*s] == Some(i)).count();
            prop_assert_eq!(owned, usize::from(*shares));
        }
        // Signing-state slots mirror signer slots, and every signer slot has an owner.
        for s in 0..SHARES {
            prop_assert_eq!(a.slots[s], a.slots[s + SHARES]);
        }
        prop_assert!(a.slots[..SHARES].iter().all(Option::is_some));
        let block_owners: BTreeSet<usize> = a.slots[200..].iter().flatten().copied().collect();
        prop_assert_eq!(block_owners.len(), spends.len().min(100));
    }
}
