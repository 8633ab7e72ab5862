//! Burn blocks from peers on the embedded regtest chain (issue "attacks found in
//! review", item 14): whatever transactions a peer's block carries (outputs summing
//! past the money range or past `u64`, no inputs, one coin spent twice, a coinbase
//! claiming too much), `accept` refuses or connects it and never panics, and a refused
//! block changes nothing.
#![no_main]

use std::sync::OnceLock;

use bitcoin::{ScriptBuf, Transaction};
use libfuzzer_sys::fuzz_target;
use tenure_chain::burnchain::regtest::{RegtestChain, check_sanity, seal};

/// A chain 101 blocks past genesis, so block 1's coinbase (a deterministic
/// transaction, paying `OP_TRUE`) is mature and a fuzzed transaction can spend it. The
/// seed `seeds/burn_block/spend_a_mature_coin` does.
fn chain() -> &'static RegtestChain {
    static CHAIN: OnceLock<RegtestChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let mut chain = RegtestChain::new();
        let reward = ScriptBuf::from_bytes(vec![0x51]);
        for time in 1..=101 {
            chain.mine(&reward, time);
        }
        chain
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(txdata) = bitcoin::consensus::deserialize::<Vec<Transaction>>(bytes) else {
        return;
    };
    for (index, tx) in txdata.iter().enumerate() {
        let _ = check_sanity(tx, index == 0);
    }
    let mut chain = chain().clone();
    let tip = chain.tip();
    if chain.accept(seal(tip, txdata, 2)).is_err() {
        assert_eq!(chain.tip(), tip, "a refused block moved the tip");
    }
});
