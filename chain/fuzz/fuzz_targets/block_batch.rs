//! Block batches arrive from peers in answer to a request for blocks or term keys:
//! decoding one, and a follower taking whatever decodes (its key proofs checked
//! against a fixed plan of three producers, then its blocks), must never panic.
#![no_main]

use bitcoin::{
    Amount, Txid,
    hashes::Hash as _,
    secp256k1::{Keypair, SECP256K1, SecretKey},
};
use libfuzzer_sys::fuzz_target;
use tenure_chain::{
    produce::{
        TermPlan,
        follower::{BlockBatch, Follower},
    },
    shares,
    terms::Producer,
};

fuzz_target!(|bytes: &[u8]| {
    let Ok(batch) = BlockBatch::from_bytes(bytes) else {
        return;
    };
    let producers: Vec<Producer> = (1..=3u8)
        .filter_map(|n| {
            let key = Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).ok()?);
            Some(Producer {
                producer: key.public_key(),
                weight: Amount::from_sat(10_000 * u64::from(n)),
                txid: Txid::from_byte_array([n; 32]),
            })
        })
        .collect();
    let mut follower = Follower::new("fuzz");
    for proof in &batch.proofs {
        let seed = proof.record.seed;
        follower.on_plan(
            TermPlan {
                term: proof.record.term,
                assignment: shares::assign(&producers, seed),
                producers: producers.clone(),
                seed,
            },
            None,
        );
    }
    let _ = follower.on_batch(batch);
});
