//! A regtest burnchain on which four producers enrolled, for the tests of what
//! producers publish for every node (term keys, contacts).

#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use bitcoin::{
    Amount, OutPoint,
    secp256k1::{Keypair, SECP256K1, SecretKey},
};
use tenure_chain::{
    burnchain::regtest::{RegtestChain, Wallet},
    ops::enrollment::Magic,
    produce::{BurnScan, Enroller},
    terms::Terms,
};
use tenure_overlay::{OverlayHandle, Topic};

pub const FIRST: u64 = 110;
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

/// A regtest chain on which producers 1..=4 registered in term 0 and enrolled in
/// term 1, scanned until term 3's producers are known (the scan is in term 2).
pub fn burnchain() -> BurnScan {
    let mut enrollers: Vec<Enroller> = (1..=4u8)
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
    let mut scan = BurnScan::new(Magic::Regtest, Terms::new(FIRST), 1);
    let miner = Wallet::new(keypair(99)).script();
    loop {
        while scan.next_height() <= chain.height() {
            let h = scan.next_height();
            let prevout = |op: &OutPoint| chain.output(op).cloned();
            scan.scan_block(h, chain.block_at(h).unwrap(), &prevout)
                .unwrap();
        }
        if scan.plan(3).is_some() && scan.term() == Some(2) {
            return scan;
        }
        for e in enrollers.iter_mut() {
            if let Some(tx) = e.on_burn_block(&chain, &scan) {
                chain.submit(tx).unwrap();
            }
        }
        let time = 1_700_100_000 + chain.height() as u32;
        chain.mine(&miner, time);
    }
}

/// Publishes until a peer takes it (the mesh may still be forming).
pub async fn publish(node: &OverlayHandle, topic: Topic, bytes: Vec<u8>) {
    let started = Instant::now();
    while node.publish(topic, bytes.clone()).await.is_err() {
        assert!(
            started.elapsed() < DEADLINE,
            "nobody to publish {topic:?} to"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
