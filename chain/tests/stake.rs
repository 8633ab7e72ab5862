//! Stakes on the burnchain: registered on the regtest chain, found by the scan as
//! lottery tickets, malformed ones ignored with their reason, and the lock enforced
//! by Bitcoin Core's consensus code (libbitcoinconsensus).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bitcoin::{
    Amount, ScriptBuf, Transaction, TxOut,
    secp256k1::{Keypair, SECP256K1, SecretKey},
};
use common::{core_accepts, wallet};
use tenure_chain::{
    burnchain::regtest::{RegtestChain, Wallet, seal},
    mainstake::{Ticket, winner},
    ops::enrollment::Magic,
    ops::stake::{StakeError, Stakes, reclaim, stake_outputs},
};

fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

fn funded(wallets: &[&Wallet]) -> RegtestChain {
    let mut chain = RegtestChain::new();
    for (i, w) in wallets.iter().enumerate() {
        chain.mine(&w.script(), 1_700_000_000 + i as u32);
    }
    for i in 0..100 {
        chain.mine(&wallet(9).script(), 1_700_001_000 + i);
    }
    chain
}

fn scan(chain: &RegtestChain) -> (Stakes, Vec<StakeError>) {
    let blocks: Vec<_> = (0..=chain.height())
        .map(|h| chain.block_at(h).unwrap().clone())
        .collect();
    let mut ignored = Vec::new();
    let stakes = Stakes::scan(&blocks, Magic::Regtest, |_, reason| ignored.push(reason));
    (stakes, ignored)
}

fn stake(chain: &mut RegtestChain, payer: &Wallet, outputs: Vec<TxOut>) -> Transaction {
    let tx = payer.pay(chain, outputs, Amount::from_sat(1_000)).unwrap();
    chain.submit(tx.clone()).unwrap();
    tx
}

#[test]
fn stakes_mined_on_the_burnchain_become_the_lotterys_tickets() {
    let (a, b) = (wallet(1), wallet(2));
    let mut chain = funded(&[&a, &b]);
    let owner_a = keypair(11).x_only_public_key().0;
    let owner_b = keypair(12).x_only_public_key().0;
    let lock = chain.height() + 500;
    let tx_a = stake(
        &mut chain,
        &a,
        stake_outputs(&owner_a, lock, Amount::from_sat(3_000_000), Magic::Regtest)
            .unwrap()
            .to_vec(),
    );
    stake(
        &mut chain,
        &b,
        stake_outputs(&owner_b, lock, Amount::from_sat(1_000_000), Magic::Regtest)
            .unwrap()
            .to_vec(),
    );
    chain.mine(&wallet(9).script(), 1_700_100_000);

    let (stakes, ignored) = scan(&chain);
    assert!(ignored.is_empty(), "{ignored:?}");
    let tickets = stakes.tickets();
    assert_eq!(tickets.len(), 2);
    let ticket_a = tickets.iter().find(|t| t.owner == owner_a).unwrap();
    assert_eq!(ticket_a.value, 3_000_000);
    assert_eq!(ticket_a.lock_height, lock);
    assert_eq!(ticket_a.outpoint.txid, tx_a.compute_txid());
    assert_eq!(ticket_a.outpoint.vout, 1);

    // Every node that scans the same chain draws the same winner; over many tips the
    // bigger stake wins about three times as often.
    let sidechain = [7; 32];
    let height = chain.height();
    let mut reversed = scan(&chain).0.tickets();
    reversed.reverse();
    let mut wins_a = 0;
    for i in 0..2_000u32 {
        let mut tip = [0; 32];
        tip[..4].copy_from_slice(&i.to_be_bytes());
        let w = winner(&tickets, &tip, height, &sidechain).unwrap();
        let again = winner(&reversed, &tip, height, &sidechain).unwrap();
        assert_eq!(w, again);
        if w.owner == owner_a {
            wins_a += 1;
        }
    }
    assert!((1_400..1_600).contains(&wins_a), "{wins_a} wins of 2,000");
}

#[test]
fn registrations_without_a_real_lock_are_ignored_with_their_reason() {
    let a = wallet(1);
    let mut chain = funded(&[&a]);
    let owner = keypair(11).x_only_public_key().0;
    let lock = chain.height() + 100;
    let [registration, _locked] =
        stake_outputs(&owner, lock, Amount::from_sat(50_000), Magic::Regtest).unwrap();
    // The registration, but the coins paid to a key the owner can spend at will.
    stake(
        &mut chain,
        &a,
        vec![
            registration.clone(),
            TxOut {
                value: Amount::from_sat(50_000),
                script_pubkey: ScriptBuf::new_p2tr(SECP256K1, owner, None),
            },
        ],
    );
    // A registration alone.
    chain.mine(&wallet(9).script(), 1_700_100_000);
    stake(&mut chain, &a, vec![registration]);
    chain.mine(&wallet(9).script(), 1_700_100_001);
    let (stakes, ignored) = scan(&chain);
    assert!(stakes.tickets().is_empty());
    // (The wallet's change output stands at index 1 of the lone registration.)
    assert_eq!(ignored, vec![StakeError::NotLocked, StakeError::NotLocked]);
    assert_eq!(
        stake_outputs(&owner, 0, Amount::from_sat(1), Magic::Regtest).unwrap_err(),
        StakeError::LockHeight(0)
    );
    assert_eq!(
        stake_outputs(&owner, 500_000_000, Amount::from_sat(1), Magic::Regtest).unwrap_err(),
        StakeError::LockHeight(500_000_000)
    );
}

#[test]
fn bitcoin_core_keeps_a_stake_locked_until_its_height_and_then_only_for_its_owner() {
    let owner = keypair(11);
    let lock = 1_000;
    let [registration, locked] = stake_outputs(
        &owner.x_only_public_key().0,
        lock,
        Amount::from_sat(80_000),
        Magic::Regtest,
    )
    .unwrap();
    let staking_tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![],
        output: vec![registration, locked.clone()],
    };
    let ticket = Ticket {
        outpoint: bitcoin::OutPoint::new(staking_tx.compute_txid(), 1),
        value: 80_000,
        lock_height: lock,
        owner: owner.x_only_public_key().0,
    };
    let to = wallet(3).script();
    let fee = Amount::from_sat(500);

    let on_time = reclaim(&ticket, &owner, to.clone(), fee, lock as u32).unwrap();
    assert_eq!(
        core_accepts(&on_time, std::slice::from_ref(&locked)),
        Ok(())
    );
    let early = reclaim(&ticket, &owner, to.clone(), fee, lock as u32 - 1).unwrap();
    assert!(
        core_accepts(&early, std::slice::from_ref(&locked)).is_err(),
        "spent before its lock"
    );
    let thief = reclaim(&ticket, &keypair(66), to, fee, lock as u32).unwrap();
    assert!(
        core_accepts(&thief, std::slice::from_ref(&locked)).is_err(),
        "spent by another key"
    );

    // Once spent, the stake is no longer a ticket.
    let create = seal(bitcoin::hashes::Hash::all_zeros(), vec![staking_tx], 1);
    let spend = seal(create.block_hash(), vec![on_time], 2);
    let mut ignored = 0;
    let before = Stakes::scan([&create], Magic::Regtest, |_, _| ignored += 1);
    assert_eq!(before.tickets(), vec![ticket]);
    let after = Stakes::scan([&create, &spend], Magic::Regtest, |_, _| ignored += 1);
    assert!(after.tickets().is_empty());
    assert_eq!(ignored, 0);
}
