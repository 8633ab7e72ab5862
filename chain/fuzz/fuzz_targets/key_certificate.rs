//! Term key certificates arrive from peers on the term-keys topic: decoding one, and
//! judging whatever decodes (the topic's gate, the follower's count, the context built
//! from its record) against a fixed plan of three producers, must never panic.
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
        term_key::{CertificateGate, KeyCertificate, TermKeys},
    },
    shares,
    terms::Producer,
};

fuzz_target!(|bytes: &[u8]| {
    let Ok(certificate) = KeyCertificate::from_bytes(bytes) else {
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
    let seed = certificate.record.seed;
    let plan = TermPlan {
        term: certificate.record.term,
        assignment: shares::assign(&producers, seed),
        producers,
        seed,
    };
    let _ = CertificateGate::new("fuzz").judge(&certificate, Some(&plan));
    let _ = TermKeys::new("fuzz").offer(&certificate, &plan);
    let _ = certificate.record.context(&plan, Some([1; 32]));
});
