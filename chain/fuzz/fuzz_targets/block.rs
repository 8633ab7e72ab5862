//! Blocks arrive from peers: decoding one, and validating whatever decodes against a
//! small state, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_chain::block::{AccountId, Block, ChainState, TermContext};

fuzz_target!(|bytes: &[u8]| {
    let Ok(block) = Block::from_bytes(bytes) else {
        return;
    };
    let Ok(key) = bitcoin::XOnlyPublicKey::from_slice(&[
        0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87,
        0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b,
        0x16, 0xf8, 0x17, 0x98,
    ]) else {
        return;
    };
    let context = TermContext {
        term: block.header.term,
        producer_key: key,
        stacker_key: None,
        coinbase: Vec::new(),
        cost_limit: 50_000,
        consensus_hash: [0; 20],
        previous_consensus_hash: [0; 20],
        producers: vec![(AccountId([1; 32]), 2), (AccountId([2; 32]), 1)],
        share_owners: (0..100).map(|i| i % 2).collect(),
    };
    let _ = ChainState::default().after(&block, &context, "fuzz");
    let _ = block.signer_weight();
});
