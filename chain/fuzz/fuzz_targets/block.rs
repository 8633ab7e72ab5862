//! Blocks arrive from peers: decoding one, and validating whatever decodes against a
//! small state (signer evidence included, against a dealt producer group), must never
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_chain::block::{AccountId, Block, ChainState, TermContext, build::ProducerGroup};

fuzz_target!(|bytes: &[u8]| {
    let Ok(block) = Block::from_bytes(bytes) else {
        return;
    };
    let group = ProducerGroup::shared();
    let context = TermContext {
        term: block.header.term,
        producer_key: group.key(),
        producer_shares: group.public.clone(),
        stacker_key: None,
        coinbase: Vec::new(),
        cost_limit: 50_000,
        consensus_hash: [0; 20],
        previous_consensus_hash: [0; 20],
        producers: vec![(AccountId([1; 32]), 2), (AccountId([2; 32]), 1)],
        share_owners: (0..100).map(|i| i % 2).collect(),
    };
    let _ = ChainState::default().after(&block, &context, "fuzz");
    let _ = block.verified_signers(&context);
});
