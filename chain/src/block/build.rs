//! Builds and signs blocks: for tests, benchmarks and the testnet's single-key
//! stand-in for a producer group (the `test-utils` feature).
//!
//! The builder applies transactions with the same code as validation, but trusting
//! its caller (no nonce, placement or tenure-change checks), so a test can build a
//! block that breaks one rule and watch validation refuse it.

use bitcoin::secp256k1::{Keypair, Message, SECP256K1};
use serde_bytes::ByteBuf;

use super::{
    BLOCK_VERSION, Block, ChainState, Header, SIGNER_SHARES, TermContext, Tx,
    fees::pay_fees,
    state::Working,
    tx_root,
    validate::{Rules, block_cost},
};
use crate::tenure_change::{Cause, TenureChange, pubkey_hash};

/// A block of `term` on `state` with `txs`, every share marked as signing,
/// signed by `producer` (and `stacker`, if given), its fees paid as `context`
/// says. Returns the block and the state after it. The transactions are applied
/// without checks (so tests can build invalid blocks): validation is what checks
/// them.
pub fn block(
    state: &ChainState,
    context: &TermContext,
    term: u64,
    txs: Vec<Tx>,
    producer: &Keypair,
    stacker: Option<&Keypair>,
) -> Option<(Block, ChainState)> {
    let mut bitmap = vec![0xff; SIGNER_SHARES.div_ceil(8)];
    if let Some(last) = bitmap.last_mut() {
        *last = 0x0f; // 96 + 4 = 100 shares
    }
    let opening = state.opening(term, &txs);
    let mut header = Header {
        parent: state.tip,
        term,
        height: state.height.checked_add(1)?,
        tx_root: tx_root(&txs),
        state_root: [0; 32],
        time: 0,
    };
    let unsigned = Block {
        version: BLOCK_VERSION,
        header: header.clone(),
        txs,
        signers: ByteBuf::from(bitmap.clone()),
        producer_signature: ByteBuf::new(),
        stacker_signature: None,
    };
    let mut working = Working::over(state);
    state
        .apply_txs(&mut working, &unsigned, context, "", opening, Rules::Trust)
        .ok()?;
    pay_fees(
        &mut working,
        context,
        &bitmap,
        &unsigned.txs,
        opening.first_of_term,
    )
    .ok()?;
    header.state_root = working.state_root();
    let changes = state.changeset(working, &header, opening, block_cost(&unsigned.txs));
    let message = Message::from_digest(Block::signing_message(&header, &bitmap));
    let sign = |k: &Keypair| ByteBuf::from(SECP256K1.sign_schnorr(&message, k).as_ref().to_vec());
    let block = Block {
        version: BLOCK_VERSION,
        producer_signature: sign(producer),
        stacker_signature: stacker.map(sign),
        signers: ByteBuf::from(bitmap),
        header,
        txs: unsigned.txs,
    };
    let mut next = state.clone();
    next.apply(&changes);
    Some((block, next))
}

/// A tenure change of `cause` for a block of `context`'s term on `state`, signed
/// by `granter` (the stacker group, or the producer group when there is none) with
/// every producer share marked.
pub fn tenure_change(
    state: &ChainState,
    context: &TermContext,
    cause: Cause,
    granter: &Keypair,
    network: &str,
) -> TenureChange {
    let mut tc = TenureChange {
        tenure_consensus_hash: context.consensus_hash,
        previous_tenure_consensus_hash: match cause {
            Cause::BlockFound => context.previous_consensus_hash,
            Cause::Extend => context.consensus_hash,
        },
        burn_view_consensus_hash: context.consensus_hash,
        previous_tenure_end: state.tip,
        previous_tenure_blocks: u32::try_from(state.term_blocks).unwrap_or(u32::MAX),
        cause,
        pubkey_hash: pubkey_hash(&context.producer_key),
        signature: [0; 65],
        signers: vec![true; SIGNER_SHARES],
    };
    tc.sign(network, granter);
    tc
}

/// The first block of `context`'s term on `state`: its coinbase, its
/// `BlockFound` (granted by `stacker`, else by `producer`), then `txs`.
pub fn term_start(
    state: &ChainState,
    context: &TermContext,
    txs: Vec<Tx>,
    producer: &Keypair,
    stacker: Option<&Keypair>,
    network: &str,
) -> Option<(Block, ChainState)> {
    let found = tenure_change(
        state,
        context,
        Cause::BlockFound,
        stacker.unwrap_or(producer),
        network,
    );
    let mut all = vec![
        Tx::Coinbase {
            term: context.term,
            payouts: context.coinbase.clone(),
        },
        Tx::TenureChange(found),
    ];
    all.extend(txs);
    block(state, context, context.term, all, producer, stacker)
}
