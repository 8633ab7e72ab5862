//! Helpers shared by the chain's integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use bitcoin::{
    Amount, OutPoint, Transaction, TxOut, consensus,
    secp256k1::{Keypair, SECP256K1, SecretKey},
};
use tenure_chain::{
    burnchain::regtest::{RegtestChain, Wallet},
    ops::announce::{Announcement, Announcements},
    ops::enrollment::Magic,
};

/// A deterministic wallet.
pub fn wallet(n: u8) -> Wallet {
    Wallet::new(Keypair::from_secret_key(
        SECP256K1,
        &SecretKey::from_slice(&[n; 32]).unwrap(),
    ))
}

/// A regtest chain where `funder` has a mature coinbase, and a term UTXO of 100,000
/// sat paid to `group`, mined.
pub fn with_term_utxo(funder: &Wallet, group: &Wallet) -> (RegtestChain, OutPoint) {
    let mut chain = RegtestChain::new();
    for i in 0..100 {
        chain.mine(&funder.script(), 1_700_000_000 + i);
    }
    let tx = funder
        .pay(
            &chain,
            vec![TxOut {
                value: Amount::from_sat(100_000),
                script_pubkey: group.script(),
            }],
            Amount::from_sat(1_000),
        )
        .unwrap();
    let term_utxo = OutPoint::new(tx.compute_txid(), 0);
    chain.submit(tx).unwrap();
    chain.mine(&funder.script(), 1_700_050_000);
    (chain, term_utxo)
}

/// Whether Bitcoin Core's consensus code (libbitcoinconsensus) accepts every input of
/// `tx`, whose inputs spend `prevouts` in order.
pub fn core_accepts(tx: &Transaction, prevouts: &[TxOut]) -> Result<(), bitcoinconsensus::Error> {
    let spent: Vec<bitcoinconsensus::Utxo> = prevouts
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    let bytes = consensus::serialize(tx);
    for (index, prevout) in prevouts.iter().enumerate() {
        bitcoinconsensus::verify(
            prevout.script_pubkey.as_bytes(),
            prevout.value.to_sat(),
            &bytes,
            Some(&spent),
            index,
        )?;
    }
    Ok(())
}

/// The group announces `a` by spending its only UTXO, and a block is mined. Bitcoin
/// Core's consensus code checks the announcement first.
pub fn announce(chain: &mut RegtestChain, group: &Wallet, a: Announcement) {
    let utxo_value = group.balance(chain);
    let tx = group
        .pay(
            chain,
            vec![
                a.op_return(Magic::Regtest),
                TxOut {
                    value: utxo_value - Amount::from_sat(500),
                    script_pubkey: group.script(),
                },
            ],
            Amount::from_sat(500),
        )
        .unwrap();
    let prevouts: Vec<TxOut> = tx
        .input
        .iter()
        .map(|i| chain.utxo(&i.previous_output).unwrap().clone())
        .collect();
    core_accepts(&tx, &prevouts).unwrap();
    chain.submit(tx).unwrap();
    chain.mine(&wallet(9).script(), 1_700_100_000 + a.height as u32);
}

/// The announcements on `chain`'s best chain.
pub fn scan(chain: &RegtestChain, term_utxos: &BTreeMap<u64, OutPoint>) -> Announcements {
    let blocks: Vec<_> = (0..=chain.height())
        .map(|h| chain.block_at(h).unwrap().clone())
        .collect();
    Announcements::scan(&blocks, term_utxos, Magic::Regtest)
}
