//! Enrollments whose spend outputs carry any values (issue "attacks found in review",
//! item 14): the byte-level `transaction` target seldom makes twenty equal outputs of
//! huge value, which is what overflowed the spend once. Here the input chooses only
//! the outputs (how many, their values, which are burns), around a valid enrollment
//! payload, so those sums are reached at once. `parse` must refuse or return a spend
//! in the money range, never panic.
#![no_main]

use bitcoin::{
    Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
    absolute::LockTime, secp256k1::SecretKey, transaction::Version,
};
use libfuzzer_sys::fuzz_target;
use tenure_chain::ops::enrollment::{self, EnrollmentData, Magic, Payment};

fuzz_target!(|bytes: &[u8]| {
    let Some((&count, rest)) = bytes.split_first() else {
        return;
    };
    let Ok(signing_pubkey) =
        SecretKey::from_slice(&[7; 32]).map(|k| k.public_key(bitcoin::secp256k1::SECP256K1))
    else {
        return;
    };
    let data = EnrollmentData {
        set_block: 100,
        set_txoff: 0,
        key_block: 1,
        key_txoff: 0,
        signing_pubkey,
        state_root: [0; 32],
    };
    let recipient = ScriptBuf::from_bytes(vec![0x51]);
    let mut output = vec![data.op_return(Magic::Regtest)];
    // Each output: 8 bytes of value, then one byte whose low bit makes it a burn. A
    // value given once stands for every output when the input runs out, so equal
    // outputs of any value are one mutation away.
    let mut values = rest.chunks(9);
    let mut last: Option<(u64, bool)> = None;
    for _ in 0..usize::from(count % 32) {
        if let Some(chunk) = values.next() {
            let mut value = [0u8; 8];
            for (slot, byte) in value.iter_mut().zip(chunk) {
                *slot = *byte;
            }
            let burn = chunk.get(8).is_none_or(|b| b & 1 == 1);
            last = Some((u64::from_le_bytes(value), burn));
        }
        let Some((value, burn)) = last else {
            break;
        };
        output.push(if burn {
            enrollment::burn_output(Amount::from_sat(value))
        } else {
            TxOut {
                value: Amount::from_sat(value),
                script_pubkey: recipient.clone(),
            }
        });
    }
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output,
    };
    for payment in [
        Payment::Burn,
        Payment::Pox(&[]),
        Payment::Pox(std::slice::from_ref(&recipient)),
    ] {
        if let Ok(enrolled) = enrollment::parse(&tx, Magic::Regtest, payment) {
            assert!(enrolled.spent <= Amount::MAX_MONEY, "spend past the money range");
        }
    }
});
