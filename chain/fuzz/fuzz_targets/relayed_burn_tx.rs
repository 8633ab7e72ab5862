//! Burn transactions arrive from peers on the burn-transactions topic: judging any
//! bytes against a chain with spendable coins must never panic.
#![no_main]

use std::sync::OnceLock;

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use libfuzzer_sys::fuzz_target;
use tenure_chain::burnchain::{
    regtest::{COINBASE_MATURITY, PendingUtxos, RegtestChain, Wallet},
    relay,
};

fn pending() -> &'static PendingUtxos {
    static PENDING: OnceLock<PendingUtxos> = OnceLock::new();
    PENDING.get_or_init(|| {
        let mut chain = RegtestChain::new();
        for n in 1..=3u8 {
            let Ok(key) = SecretKey::from_slice(&[n; 32]) else {
                continue;
            };
            let wallet = Wallet::new(Keypair::from_secret_key(SECP256K1, &key));
            chain.mine(&wallet.script(), 1_700_000_000 + u32::from(n));
        }
        for i in 0..COINBASE_MATURITY {
            chain.mine(&bitcoin::ScriptBuf::new(), 1_700_001_000 + i as u32);
        }
        chain.pending_utxos()
    })
}

fuzz_target!(|bytes: &[u8]| {
    let _ = relay::judge(bytes, pending());
});
