//! Leader key registrations on the regtest chain: registered, found at the position an
//! enrollment names, and honoured only for the registration's owner.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bitcoin::{
    Amount, Transaction, TxOut,
    secp256k1::{SECP256K1, SecretKey},
};
use common::wallet;
use tenure_chain::{
    burnchain::regtest::{RegtestChain, Wallet},
    ops::enrollment::{self, EnrollmentData, Magic, Payment, burn_output},
    ops::key_registration::{KeyRegistration, KeyRegistrationError, KeyRegistrations},
};

fn registration(owner: &Wallet) -> KeyRegistration {
    KeyRegistration {
        consensus_hash: [4; 20],
        proving_key: [5; 32],
        memo: [0; 25],
        owner: owner.script(),
    }
}

/// `payer` enrolls naming the registration at `(key_block, key_txoff)`; returns the
/// transaction and the output its first input spends.
fn enroll(
    chain: &RegtestChain,
    payer: &Wallet,
    key_block: u32,
    key_txoff: u16,
) -> (Transaction, EnrollmentData, TxOut) {
    let data = EnrollmentData {
        set_block: 0,
        set_txoff: 0,
        key_block,
        key_txoff,
        signing_pubkey: SecretKey::from_slice(&[7; 32])
            .unwrap()
            .public_key(SECP256K1),
        state_root: [0; 32],
    };
    let tx = payer
        .pay(
            chain,
            vec![
                data.op_return(Magic::Regtest),
                burn_output(Amount::from_sat(20_000)),
            ],
            Amount::from_sat(1_000),
        )
        .unwrap();
    let prevout = chain.utxo(&tx.input[0].previous_output).unwrap().clone();
    (tx, data, prevout)
}

fn scan(chain: &RegtestChain) -> (KeyRegistrations, Vec<KeyRegistrationError>) {
    let mut registrations = KeyRegistrations::default();
    let mut ignored = Vec::new();
    for h in 0..=chain.height() {
        registrations.scan_block(
            chain.block_at(h).unwrap(),
            h as u32,
            Magic::Regtest,
            |_, reason| ignored.push(reason),
        );
    }
    (registrations, ignored)
}

#[test]
fn only_the_registrations_owner_may_enroll_with_it() {
    let (owner, other) = (wallet(1), wallet(2));
    let mut chain = RegtestChain::new();
    chain.mine(&owner.script(), 1_700_000_000);
    chain.mine(&other.script(), 1_700_000_001);
    for i in 0..100 {
        chain.mine(&wallet(9).script(), 1_700_000_100 + i);
    }
    let tx = owner
        .pay(
            &chain,
            registration(&owner)
                .outputs(Magic::Regtest, Amount::from_sat(1_000))
                .to_vec(),
            Amount::from_sat(1_000),
        )
        .unwrap();
    chain.submit(tx).unwrap();
    chain.mine(&wallet(9).script(), 1_700_001_000);
    let key_block = chain.height() as u32;

    // A registration without its owner output is ignored with its reason.
    let [op_return, _] = registration(&owner).outputs(Magic::Regtest, Amount::ZERO);
    let ownerless = Transaction {
        output: vec![op_return],
        ..chain.block_at(1).unwrap().txdata[0].clone()
    };
    assert_eq!(
        KeyRegistration::parse(&ownerless, Magic::Regtest),
        Some(Err(KeyRegistrationError::MissingOwner))
    );

    let (registrations, ignored) = scan(&chain);
    assert!(ignored.is_empty());
    let found = registrations.get(key_block, 1).unwrap();
    assert_eq!(found, &registration(&owner));

    let (tx, data, prevout) = enroll(&chain, &owner, key_block, 1);
    assert_eq!(
        registrations.check_enrollment(&tx, &data, &prevout),
        Ok(found)
    );
    // The enrollment itself parses as one, and mines.
    assert!(enrollment::parse(&tx, Magic::Regtest, Payment::Burn).is_ok());
    chain.submit(tx).unwrap();

    let (tx, data, prevout) = enroll(&chain, &other, key_block, 1);
    assert_eq!(
        registrations.check_enrollment(&tx, &data, &prevout),
        Err(KeyRegistrationError::NotOwner)
    );
    let (tx, data, prevout) = enroll(&chain, &other, key_block, 2);
    assert_eq!(
        registrations.check_enrollment(&tx, &data, &prevout),
        Err(KeyRegistrationError::Unknown {
            block: key_block,
            txoff: 2
        })
    );

    // A burnchain reorg below the registration forgets it.
    let mut rewound = registrations.clone();
    rewound.rewind(key_block);
    assert!(rewound.get(key_block, 1).is_none());
}
