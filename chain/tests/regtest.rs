//! The embedded regtest burnchain: real blocks with proof of work, a taproot wallet
//! paying a real enrollment, blocks accepted from elsewhere, and a reorg that puts the
//! dropped enrollment back in the mempool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bitcoin::{
    Amount, Network, Transaction,
    blockdata::constants::genesis_block,
    secp256k1::{Keypair, SECP256K1, SecretKey},
};
use tenure_chain::{
    burnchain::BurnchainSource,
    burnchain::regtest::{RegtestChain, RegtestError, Wallet, coinbase, seal, subsidy},
    ops::enrollment::{self, EnrollmentData, Magic, Payment, burn_output},
};

fn wallet(n: u8) -> Wallet {
    Wallet::new(Keypair::from_secret_key(
        SECP256K1,
        &SecretKey::from_slice(&[n; 32]).unwrap(),
    ))
}

fn enrollment_tx(chain: &RegtestChain, w: &Wallet) -> Transaction {
    let data = EnrollmentData {
        set_block: chain.height() as u32,
        set_txoff: 0,
        key_block: 1,
        key_txoff: 0,
        signing_pubkey: SecretKey::from_slice(&[7; 32])
            .unwrap()
            .public_key(SECP256K1),
        state_root: [0; 32],
    };
    w.pay(
        chain,
        vec![
            data.op_return(Magic::Regtest),
            burn_output(Amount::from_sat(25_000)),
        ],
        Amount::from_sat(1_000),
    )
    .unwrap()
}

/// A chain where `w` has one mature coinbase.
fn funded(w: &Wallet) -> RegtestChain {
    let mut chain = RegtestChain::new();
    for i in 0..100 {
        chain.mine(&w.script(), 1_700_000_000 + i);
    }
    chain
}

#[test]
fn a_wallet_pays_an_enrollment_that_is_mined_and_parses() {
    let w = wallet(1);
    let mut chain = funded(&w);
    // The coinbase of block 1 is spendable in block 101, exactly as the chain rules.
    assert_eq!(chain.height(), 100);
    assert_eq!(w.balance(&chain), Amount::from_int_btc(50));
    let tx = enrollment_tx(&chain, &w);
    chain.submit(tx.clone()).unwrap();
    let hash = chain.mine(&wallet(2).script(), 1_700_001_000);
    let block = chain.block(&hash).unwrap();
    assert!(block.check_merkle_root());
    assert_eq!(block.txdata[1], tx);
    let parsed = enrollment::parse(&block.txdata[1], Magic::Regtest, Payment::Burn).unwrap();
    assert_eq!(parsed.spent, Amount::from_sat(25_000));
    // The miner got the fee on top of the subsidy.
    assert_eq!(
        block.txdata[0].output[0].value,
        Amount::from_sat(50 * 100_000_000 + 1_000)
    );
    assert_eq!(
        chain.block_hash(0).unwrap(),
        genesis_block(Network::Regtest).block_hash()
    );
}

#[test]
fn bad_transactions_are_refused_with_their_reason() {
    let w = wallet(1);
    let mut chain = funded(&w);
    let tx = enrollment_tx(&chain, &w);
    let mut forged = tx.clone();
    let mut sig = forged.input[0].witness.nth(0).unwrap().to_vec();
    sig[5] ^= 1;
    forged.input[0].witness = bitcoin::Witness::from_slice(&[sig]);
    assert!(matches!(
        chain.submit(forged),
        Err(RegtestError::Script { index: 0, .. })
    ));
    let mut greedy = tx.clone();
    greedy.output[1].value = Amount::from_int_btc(60);
    assert!(matches!(
        chain.submit(greedy),
        Err(RegtestError::Overspend) | Err(RegtestError::Script { .. })
    ));
    chain.submit(tx.clone()).unwrap();
    // The same coin again.
    let again = enrollment_tx(&funded(&w), &w);
    assert_eq!(chain.submit(again), Err(RegtestError::MissingInput(0)));
    // Someone else's wallet has nothing mature to spend.
    assert!(wallet(3).pay(&chain, vec![], Amount::from_sat(1)).is_none());
}

#[test]
fn blocks_from_elsewhere_are_checked_before_they_extend_the_chain() {
    let w = wallet(1);
    let mut a = funded(&w);
    let mut b = a.clone();
    a.submit(enrollment_tx(&a, &w)).unwrap();
    let hash = a.mine(&w.script(), 1_700_002_000);
    let block = a.block(&hash).unwrap();
    let mut tampered = block.clone();
    tampered.txdata[1].output[1].value = Amount::from_sat(1);
    assert!(matches!(
        b.accept(tampered),
        Err(RegtestError::InvalidBlock(_))
    ));
    let mut orphan = block.clone();
    orphan.header.prev_blockhash = genesis_block(Network::Regtest).block_hash();
    assert_eq!(b.accept(orphan), Err(RegtestError::UnknownParent));
    b.accept(block).unwrap();
    assert_eq!(b.tip(), a.tip());
}

#[test]
fn a_longer_branch_reorgs_and_the_dropped_enrollment_returns_to_the_mempool() {
    let w = wallet(1);
    let mut chain = funded(&w);
    let fork = chain.height();
    let tx = enrollment_tx(&chain, &w);
    chain.submit(tx.clone()).unwrap();
    chain.mine(&w.script(), 1_700_003_000);
    assert!(chain.mempool().is_empty());

    // A competing miner builds two empty blocks on the fork point.
    let mut rival = chain.clone();
    let base = rival.block_at(fork).unwrap().block_hash();
    let reward = |n: u8, height: u64| coinbase(height, &wallet(n).script(), subsidy(height));
    let first = seal(base, vec![reward(5, fork + 1)], 1_700_004_000);
    let second = seal(first.block_hash(), vec![reward(6, fork + 2)], 1_700_004_100);
    // Not longer: refused.
    assert_eq!(
        rival.reorg(fork, vec![first.clone()]),
        Err(RegtestError::NotLonger)
    );
    let dropped = rival.reorg(fork, vec![first, second.clone()]).unwrap();
    assert_eq!(dropped.len(), 1);
    assert_eq!(rival.tip(), second.block_hash());
    assert_eq!(rival.mempool(), std::slice::from_ref(&tx));
    // Mined again on the new branch.
    let hash = rival.mine(&w.script(), 1_700_005_000);
    assert_eq!(rival.block(&hash).unwrap().txdata[1], tx);
}

/// A transaction from `w` spending `spends` (its outputs on `chain`) into `outputs`,
/// signed: the attacker owns the coins, so only the chain's rules can stop it.
fn spend(
    chain: &RegtestChain,
    w: &Wallet,
    spends: &[bitcoin::OutPoint],
    outputs: Vec<bitcoin::TxOut>,
) -> Transaction {
    let mut tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: spends
            .iter()
            .map(|op| bitcoin::TxIn {
                previous_output: *op,
                ..Default::default()
            })
            .collect(),
        output: outputs,
    };
    let prevouts: Vec<bitcoin::TxOut> = spends
        .iter()
        .map(|op| chain.utxo(op).unwrap().clone())
        .collect();
    w.sign(&mut tx, &prevouts).unwrap();
    tx
}

fn pay_to(w: &Wallet, sats: u64) -> bitcoin::TxOut {
    bitcoin::TxOut {
        value: Amount::from_sat(sats),
        script_pubkey: w.script(),
    }
}

/// `chain` accepts a block mined on it by someone else (the honest chain goes on).
fn goes_on(chain: &mut RegtestChain) {
    let mut miner = chain.clone();
    let hash = miner.mine(&wallet(9).script(), 1_800_000_000);
    chain.accept(miner.block(&hash).unwrap().clone()).unwrap();
    assert_eq!(chain.tip(), hash);
}

#[test]
fn a_peer_block_whose_coinbase_outputs_overflow_is_refused_and_the_chain_goes_on() {
    let mut chain = RegtestChain::new();
    let greedy = {
        let mut cb = coinbase(1, &wallet(1).script(), Amount::from_sat(u64::MAX));
        cb.output.push(pay_to(&wallet(1), 2));
        cb
    };
    // Summing these panicked; now the money range refuses them.
    let block = seal(chain.tip(), vec![greedy], 1_700_000_000);
    assert!(matches!(
        chain.accept(block),
        Err(RegtestError::Malformed(_))
    ));
    assert_eq!(chain.height(), 0);
    goes_on(&mut chain);
}

#[test]
fn spending_one_coin_twice_in_a_transaction_is_refused() {
    let w = wallet(1);
    let mut chain = funded(&w);
    let coin = chain.utxos_of(&w.script())[0].0;
    // Counting the 50 BTC input twice would let the owner make 100 BTC.
    let doubled = spend(
        &chain,
        &w,
        &[coin, coin],
        vec![pay_to(&w, 99 * 100_000_000)],
    );
    assert_eq!(
        chain.submit(doubled.clone()),
        Err(RegtestError::Malformed(
            tenure_chain::burnchain::regtest::TxFault::DuplicateInput(1)
        ))
    );
    let block = seal(
        chain.tip(),
        vec![coinbase(101, &w.script(), subsidy(101)), doubled],
        1_700_000_500,
    );
    assert!(chain.accept(block).is_err());
    goes_on(&mut chain);
    // The coin is still there, and spends once.
    let once = spend(&chain, &w, &[coin], vec![pay_to(&w, 49 * 100_000_000)]);
    chain.submit(once).unwrap();
}

#[test]
fn outputs_that_wrap_a_sum_or_leave_the_money_range_are_refused() {
    use tenure_chain::burnchain::regtest::TxFault;
    let w = wallet(1);
    let mut chain = funded(&w);
    let coin = chain.utxos_of(&w.script())[0].0;
    // u64::MAX + 2 wraps to 1 sat in a release build: 50 BTC in, "1 sat" out.
    let wrapping = spend(
        &chain,
        &w,
        &[coin],
        vec![pay_to(&w, u64::MAX), pay_to(&w, 2)],
    );
    assert_eq!(
        chain.submit(wrapping),
        Err(RegtestError::Malformed(TxFault::OutputOutOfRange(0)))
    );
    let past_range = spend(
        &chain,
        &w,
        &[coin],
        vec![
            pay_to(&w, 20_000_000 * 100_000_000),
            pay_to(&w, 2_000_000 * 100_000_000),
        ],
    );
    assert_eq!(
        chain.submit(past_range),
        Err(RegtestError::Malformed(TxFault::TotalOutOfRange))
    );
    let no_inputs = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![],
        output: vec![pay_to(&w, 0)],
    };
    assert_eq!(
        chain.submit(no_inputs),
        Err(RegtestError::Malformed(TxFault::NoInputs))
    );
    // An honest payment still goes through.
    chain.submit(enrollment_tx(&chain, &w)).unwrap();
    chain.mine(&w.script(), 1_700_003_000);
    assert_eq!(chain.height(), 101);
}
