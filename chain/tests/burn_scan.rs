//! The burnchain scan on the regtest chain: producers register and enroll with their
//! own wallets, the scan chooses each term's producers from what they spent, ignores
//! enrollments that do not hold, follows term UTXOs and announcements, and rolls back
//! with a burnchain reorg.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bitcoin::{
    Amount, OutPoint, ScriptBuf, TxOut,
    secp256k1::{Keypair, SECP256K1, SecretKey},
};
use common::{core_accepts, wallet};
use tenure_chain::{
    burnchain::regtest::{RegtestChain, Wallet},
    ops::{
        announce::Announcement,
        enrollment::{EnrollmentData, Magic, burn_output},
    },
    produce::{
        BurnScan, Enroller,
        burn_scan::{Ignored, IgnoredReason},
    },
    terms::Terms,
};

const FIRST: u64 = 110;

fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

/// A chain where producers 1..=n have mature coinbases, and their enrollers.
fn setup(n: u8) -> (RegtestChain, BurnScan, Vec<Enroller>) {
    let enrollers: Vec<Enroller> = (1..=n)
        .map(|i| {
            Enroller::new(
                keypair(i),
                Amount::from_sat(10_000 * u64::from(i)),
                Magic::Regtest,
            )
        })
        .collect();
    let mut chain = RegtestChain::new();
    for i in 0..FIRST - 1 {
        let who = &enrollers[(i as usize) % enrollers.len()];
        chain.mine(&who.script(), 1_700_000_000 + i as u32);
    }
    let scan = BurnScan::new(Magic::Regtest, Terms::new(FIRST), 1);
    (chain, scan, enrollers)
}

/// Mines one block with whatever the enrollers submit, and scans it.
fn step(chain: &mut RegtestChain, scan: &mut BurnScan, enrollers: &mut [Enroller]) -> Vec<Ignored> {
    for e in enrollers.iter_mut() {
        if let Some(tx) = e.on_burn_block(chain, scan) {
            chain.submit(tx).unwrap();
        }
    }
    let time = 1_700_100_000 + chain.height() as u32;
    chain.mine(&wallet(99).script(), time);
    catch_up(chain, scan)
}

fn catch_up(chain: &RegtestChain, scan: &mut BurnScan) -> Vec<Ignored> {
    let mut ignored = Vec::new();
    while scan.next_height() <= chain.height() {
        let h = scan.next_height();
        let prevout = |op: &OutPoint| chain.output(op).cloned();
        ignored.extend(
            scan.scan_block(h, chain.block_at(h).unwrap(), &prevout)
                .unwrap(),
        );
    }
    ignored
}

#[test]
fn producers_enrolled_in_term_n_minus_2_produce_term_n_in_proportion_to_their_spend() {
    let (mut chain, mut scan, mut enrollers) = setup(4);
    catch_up(&chain, &mut scan);
    // Through term 2: registrations in term 0, enrollments in terms 1 and 2.
    while scan.height().unwrap() < FIRST + 30 - 1 {
        assert!(step(&mut chain, &mut scan, &mut enrollers).is_empty());
        if scan.height().unwrap() < FIRST + 20 - 1 {
            assert_eq!(scan.plan(3), None, "term 1 is not over");
        }
    }
    let plan = scan.plan(3).expect("term 3's producers");
    assert_eq!(plan.producers.len(), 4);
    // Heaviest first; shares in proportion to 10/20/30/40.
    let keys: Vec<_> = plan.producers.iter().map(|p| p.producer).collect();
    assert_eq!(
        keys,
        (1..=4)
            .rev()
            .map(|i| keypair(i).public_key())
            .collect::<Vec<_>>()
    );
    assert_eq!(plan.shares(), &[40, 30, 20, 10]);
    assert_eq!(plan.spends(), vec![40_000, 30_000, 20_000, 10_000]);
    // Term 4 is chosen from term 2's enrollments, known once term 2 ends.
    assert!(scan.plan(4).is_some());
    assert_eq!(scan.plan(5), None);
    // Every node scanning the same chain agrees.
    let mut other = BurnScan::new(Magic::Regtest, Terms::new(FIRST), 1);
    catch_up(&chain, &mut other);
    assert_eq!(other.plan(3), Some(plan));
}

#[test]
fn an_enrollment_that_pays_itself_or_borrows_a_registration_is_ignored_and_selection_goes_on() {
    let (mut chain, mut scan, mut enrollers) = setup(3);
    catch_up(&chain, &mut scan);
    while scan.height().unwrap() < FIRST + 10 {
        step(&mut chain, &mut scan, &mut enrollers);
    }
    // Producer 1's registration, used by producer 2's wallet; and an enrollment whose
    // "spend" pays the producer back.
    let owner_script = enrollers[0].script();
    let (key_block, key_txoff) = scan.registrations().find_owner(&owner_script).unwrap();
    let data = EnrollmentData {
        set_block: FIRST as u32,
        set_txoff: 0,
        key_block,
        key_txoff,
        signing_pubkey: keypair(7).public_key(),
        state_root: [0; 32],
    };
    let thief = Wallet::new(keypair(2));
    let borrowed = thief
        .pay(
            &chain,
            vec![
                data.op_return(Magic::Regtest),
                burn_output(Amount::from_sat(900_000)),
            ],
            Amount::from_sat(1_000),
        )
        .unwrap();
    let owner = Wallet::new(keypair(1));
    let self_paying = owner
        .pay(
            &chain,
            vec![
                data.op_return(Magic::Regtest),
                TxOut {
                    value: Amount::from_sat(900_000),
                    script_pubkey: owner.script(),
                },
            ],
            Amount::from_sat(1_000),
        )
        .unwrap();
    chain.submit(borrowed).unwrap();
    chain.submit(self_paying).unwrap();
    chain.mine(&wallet(99).script(), 1_800_000_000);
    let ignored = catch_up(&chain, &mut scan);
    let reasons: Vec<String> = ignored.iter().map(|i| i.reason.to_string()).collect();
    assert_eq!(ignored.len(), 2, "{reasons:?}");
    assert!(matches!(ignored[0].reason, IgnoredReason::EnrollmentKey(_)));
    assert!(matches!(ignored[1].reason, IgnoredReason::Enrollment(_)));
    while scan.height().unwrap() < FIRST + 20 - 1 {
        step(&mut chain, &mut scan, &mut enrollers);
    }
    let plan = scan.plan(3).unwrap();
    assert_eq!(
        plan.producers.len(),
        3,
        "the forged enrollments took no place"
    );
    assert!(plan.index_of(&keypair(7).public_key()).is_none());
}

#[test]
fn a_term_utxo_is_followed_through_its_announcements_and_a_reorg_rolls_them_back() {
    let (mut chain, mut scan, mut enrollers) = setup(2);
    catch_up(&chain, &mut scan);
    let group = wallet(50);
    scan.expect_term_key(3, group.script());
    while scan.height().unwrap() < FIRST + 25 {
        step(&mut chain, &mut scan, &mut enrollers);
    }
    // Anyone pays the group's script before term 3: that is the term UTXO.
    let funder = Wallet::new(keypair(1));
    let fund = funder
        .pay(
            &chain,
            vec![TxOut {
                value: Amount::from_sat(50_000),
                script_pubkey: group.script(),
            }],
            Amount::from_sat(1_000),
        )
        .unwrap();
    chain.submit(fund).unwrap();
    step(&mut chain, &mut scan, &mut enrollers);
    let (utxo, out) = scan.term_utxo(3).expect("funded");
    assert_eq!(out.value, Amount::from_sat(50_000));
    while scan.height().unwrap() < FIRST + 30 {
        step(&mut chain, &mut scan, &mut enrollers);
    }
    // The group announces block 7, spending the term UTXO into the next.
    let announce = |utxo: OutPoint, out: &TxOut, height: u64| {
        let announcement = Announcement {
            term: 3,
            height,
            block: [height as u8; 32],
        };
        let mut tx = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: utxo,
                ..Default::default()
            }],
            output: vec![
                announcement.op_return(Magic::Regtest),
                TxOut {
                    value: out.value - Amount::from_sat(500),
                    script_pubkey: group.script(),
                },
            ],
        };
        group.sign(&mut tx, std::slice::from_ref(out)).unwrap();
        core_accepts(&tx, std::slice::from_ref(out)).expect("Bitcoin Core accepts it");
        tx
    };
    let fork_height = chain.height();
    chain.submit(announce(utxo, &out, 7)).unwrap();
    step(&mut chain, &mut scan, &mut enrollers);
    assert_eq!(scan.latest_announcement(3).unwrap().height, 7);
    let (next, next_out) = scan.term_utxo(3).unwrap();
    assert_ne!(next, utxo);
    chain.submit(announce(next, &next_out, 9)).unwrap();
    step(&mut chain, &mut scan, &mut enrollers);
    assert_eq!(scan.latest_announcement(3).unwrap().height, 9);
    assert_eq!(scan.parent_for_term(4).unwrap().height, 9);
    assert_eq!(scan.announcements().len(), 2);

    // A longer branch from before the announcements removes them.
    let mut branch_chain = RegtestChain::new();
    for h in 1..=fork_height {
        branch_chain
            .accept(chain.block_at(h).unwrap().clone())
            .unwrap();
    }
    let mut branch = Vec::new();
    for i in 0..3u32 {
        let hash = branch_chain.mine(&ScriptBuf::new_op_return([]), 1_900_000_000 + i);
        let h = branch_chain.height_of(&hash).unwrap();
        branch.push(branch_chain.block_at(h).unwrap().clone());
    }
    chain.reorg(fork_height, branch).unwrap();
    scan.rewind(fork_height + 1);
    catch_up(&chain, &mut scan);
    assert_eq!(scan.announcements().len(), 0, "the reorg took them back");
    assert_eq!(scan.latest_announcement(3), None);
    assert_eq!(
        scan.term_utxo(3).unwrap().0,
        utxo,
        "the term UTXO is unspent again"
    );
}

/// The group's announcement, signed by a FROST threshold of the term key, is a valid
/// key-path spend for Bitcoin Core and the regtest chain, and the scan follows it.
#[test]
fn a_frost_signed_announcement_is_accepted_by_bitcoin_core_and_followed_by_the_scan() {
    use tenure_chain::{
        block::build::{ProducerGroup, threshold_shares},
        produce::announce,
    };
    let group = ProducerGroup::shared();
    let script = announce::term_script(&group.key());
    let (mut chain, mut scan, mut enrollers) = setup(2);
    catch_up(&chain, &mut scan);
    scan.expect_term_key(3, script.clone());
    // A producer funds the term UTXO between its enrollments, before the term.
    enrollers[0].fund_term(3, script.clone(), announce::TERM_UTXO_VALUE);
    while scan.height().unwrap() < FIRST + 30 {
        step(&mut chain, &mut scan, &mut enrollers);
    }
    for height in [4u64, 6] {
        let (utxo, prevout) = scan.term_utxo(3).expect("the term UTXO");
        let announcement = Announcement {
            term: 3,
            height,
            block: [height as u8; 32],
        };
        let tx = announce::unsigned(&announcement, utxo, &prevout, Magic::Regtest).unwrap();
        let digest = announce::check(&tx, &prevout, 3, &script, Magic::Regtest, |h, b| {
            h == height && *b == [height as u8; 32]
        })
        .expect("a member approves it");
        let (signature, _) = group.sign(digest, &threshold_shares()).unwrap();
        let tx = announce::with_signature(tx, &signature);
        core_accepts(&tx, std::slice::from_ref(&prevout)).expect("Bitcoin Core accepts it");
        chain.submit(tx).expect("the regtest chain accepts it");
        step(&mut chain, &mut scan, &mut enrollers);
        assert_eq!(scan.latest_announcement(3), Some(announcement));
        assert_eq!(
            scan.term_utxo(3).unwrap().1.value,
            prevout.value - announce::FEE
        );
    }
    // A signature by another group (the key a thief would hold) is no valid spend.
    let (utxo, prevout) = scan.term_utxo(3).unwrap();
    let tx = announce::unsigned(
        &Announcement {
            term: 3,
            height: 8,
            block: [8; 32],
        },
        utxo,
        &prevout,
        Magic::Regtest,
    )
    .unwrap();
    let digest = announce::sighash(&tx, &prevout).unwrap();
    let thief = ProducerGroup::generate(2).unwrap();
    let (signature, _) = thief.sign(digest, &threshold_shares()).unwrap();
    let tx = announce::with_signature(tx, &signature);
    assert!(core_accepts(&tx, std::slice::from_ref(&prevout)).is_err());
    assert!(chain.submit(tx).is_err());
}
