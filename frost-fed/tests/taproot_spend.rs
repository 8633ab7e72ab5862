//! The federation spends its taproot output by key path, and Bitcoin Core's consensus
//! code (libbitcoinconsensus 26.0) accepts the transaction; tampered ones it rejects.
//! The members' validator is a pool's payout rule: only pay the listed miners.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
    absolute::LockTime,
    consensus,
    hashes::Hash,
    sighash::{Prevouts, SighashCache, TapSighashType},
    transaction::Version,
};
use common::federation;

fn utxo(out: &TxOut) -> bitcoinconsensus::Utxo {
    bitcoinconsensus::Utxo {
        script_pubkey: out.script_pubkey.as_bytes().as_ptr(),
        script_pubkey_len: out.script_pubkey.len() as u32,
        value: out.value.to_sat() as i64,
    }
}

fn core_accepts(tx: &Transaction, prevout: &TxOut) -> Result<(), bitcoinconsensus::Error> {
    let bytes = consensus::serialize(tx);
    let spent = [utxo(prevout)];
    bitcoinconsensus::verify(
        prevout.script_pubkey.as_bytes(),
        prevout.value.to_sat(),
        &bytes,
        Some(&spent),
        0,
    )
}

#[test]
fn a_key_path_spend_signed_by_the_federation_passes_bitcoin_core_consensus() {
    let keys = federation(10);
    let key = keys.values().next().unwrap();
    let address = key.address(Network::Regtest).unwrap();
    let prevout = TxOut {
        value: Amount::from_sat(50_000),
        script_pubkey: address.script_pubkey(),
    };
    let miner = ScriptBuf::new_p2tr_tweaked(
        bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(key.output_key().unwrap()),
    );
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array([7; 32]), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(49_000),
            script_pubkey: miner.clone(),
        }],
    };

    // Each member's payout rule: the transaction spends the group's output and pays
    // only the listed miner, at most what it spends; then sign its BIP341 sighash.
    let rule = {
        let prevout = prevout.clone();
        let miner = miner.clone();
        move || {
            let prevout = prevout.clone();
            let miner = miner.clone();
            move |payload: &[u8]| -> Result<[u8; 32], String> {
                let tx: Transaction = consensus::deserialize(payload).map_err(|e| e.to_string())?;
                if tx.output.iter().any(|o| o.script_pubkey != miner) {
                    return Err("pays someone who is not a listed miner".into());
                }
                let paid: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
                if paid > prevout.value.to_sat() {
                    return Err("pays more than it spends".into());
                }
                let sighash = SighashCache::new(&tx)
                    .taproot_key_spend_signature_hash(
                        0,
                        &Prevouts::All(std::slice::from_ref(&prevout)),
                        TapSighashType::Default,
                    )
                    .map_err(|e| e.to_string())?;
                Ok(sighash.to_byte_array())
            }
        }
    };
    let record = common::sign_now(&keys, rule, &consensus::serialize(&tx));
    let signers = record.verify(&key.public, &key.roster).unwrap();
    assert!(signers.weight >= 67);

    tx.input[0].witness = Witness::from_slice(&[record.signature.as_slice()]);
    core_accepts(&tx, &prevout).expect("Bitcoin Core rejected the federation's spend");

    // A flipped signature bit, or a changed output, and Core refuses.
    let mut tampered = tx.clone();
    let mut sig = record.signature.to_vec();
    sig[10] ^= 1;
    tampered.input[0].witness = Witness::from_slice(&[sig]);
    assert!(core_accepts(&tampered, &prevout).is_err());
    let mut tampered = tx.clone();
    tampered.output[0].value = Amount::from_sat(48_000);
    assert!(core_accepts(&tampered, &prevout).is_err());
}
