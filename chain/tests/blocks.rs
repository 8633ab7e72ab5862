//! Block validity, rule by rule: each invalid case is refused with its reason and the
//! state is left as it was.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use serde_bytes::ByteBuf;
use tenure_chain::block::{
    Block, BlockError, ChainState, TermContext, Transfer, Tx, build, tx_root,
};

const NET: &str = "test";

fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

fn x(n: u8) -> [u8; 32] {
    keypair(n).x_only_public_key().0.serialize()
}

fn context(coinbase: Vec<([u8; 32], u64)>) -> TermContext {
    TermContext {
        term: 3,
        producer_key: keypair(100).x_only_public_key().0,
        stacker_key: None,
        coinbase,
        cost_left: 1_000,
    }
}

/// A term started: its first block paid the coinbase to accounts 1 and 2.
fn started() -> (ChainState, TermContext) {
    let ctx = context(vec![(x(1), 1_000), (x(2), 500)]);
    let coinbase = Tx::Coinbase {
        term: 3,
        payouts: ctx.coinbase.clone(),
    };
    let (block, _) = build::block(
        &ChainState::default(),
        3,
        vec![coinbase],
        &keypair(100),
        None,
    )
    .unwrap();
    let state = ChainState::default().validate(&block, &ctx, NET).unwrap();
    assert_eq!(state.accounts[&x(1)].balance, 1_000);
    (state, ctx)
}

#[test]
fn transfers_move_balances_and_nonces() {
    let (state, ctx) = started();
    let t = Transfer::sign(NET, &keypair(1), x(3), 300, 10, 0);
    let t2 = Transfer::sign(NET, &keypair(1), x(2), 100, 10, 1);
    let (block, _) = build::block(
        &state,
        3,
        vec![Tx::Transfer(t), Tx::Transfer(t2)],
        &keypair(100),
        None,
    )
    .unwrap();
    let after = state.validate(&block, &ctx, NET).unwrap();
    assert_eq!(after.accounts[&x(1)].balance, 1_000 - 310 - 110);
    assert_eq!(after.accounts[&x(1)].nonce, 2);
    assert_eq!(after.accounts[&x(3)].balance, 300);
    assert_eq!(after.height, 2);
    // Round trip through the encoding.
    assert_eq!(Block::from_bytes(&block.to_bytes()).unwrap(), block);
}

#[test]
fn every_invalid_block_is_refused_with_its_reason() {
    let (state, ctx) = started();
    let good = Transfer::sign(NET, &keypair(1), x(3), 300, 10, 0);
    let make = |txs: Vec<Tx>| build::block(&state, 3, txs, &keypair(100), None).unwrap().0;
    let check = |block: &Block| state.validate(block, &ctx, NET);

    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.header.parent = [9; 32];
    assert_eq!(check(&b), Err(BlockError::WrongParent));

    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.header.height = 7;
    assert!(matches!(
        check(&b),
        Err(BlockError::WrongHeight {
            got: 7,
            expected: 2
        })
    ));

    let b = build::block(
        &state,
        4,
        vec![Tx::Transfer(good.clone())],
        &keypair(100),
        None,
    )
    .unwrap()
    .0;
    assert!(matches!(
        check(&b),
        Err(BlockError::WrongTerm {
            got: 4,
            expected: 3
        })
    ));

    // Signed by another key, or with the bitmap changed after signing.
    let b = build::block(
        &state,
        3,
        vec![Tx::Transfer(good.clone())],
        &keypair(101),
        None,
    )
    .unwrap()
    .0;
    assert_eq!(check(&b), Err(BlockError::ProducerSignature));
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.signers[0] = 0x7f;
    assert_eq!(check(&b), Err(BlockError::ProducerSignature));

    // Too few shares (66), with a valid signature over that bitmap.
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.signers = ByteBuf::from(vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03, 0, 0, 0, 0,
    ]);
    assert_eq!(check(&b), Err(BlockError::TooFewSigners { got: 66 }));
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.signers = ByteBuf::from(vec![0xff; 3]);
    assert_eq!(check(&b), Err(BlockError::SignerBitmap(3)));

    // A transaction swapped after the header was built.
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.txs = vec![Tx::Transfer(Transfer::sign(
        NET,
        &keypair(1),
        x(3),
        301,
        10,
        0,
    ))];
    assert_eq!(check(&b), Err(BlockError::TxRoot));

    // A forged signature, a replayed nonce, an overdraft.
    let mut forged = good.clone();
    forged.amount = 999;
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.txs = vec![Tx::Transfer(forged)];
    b.header.tx_root = tx_root(&b.txs);
    let b = resign(b);
    assert_eq!(
        check(&b),
        Err(BlockError::Transfer {
            index: 0,
            reason: "signature does not verify".into()
        })
    );
    let b = make(vec![Tx::Transfer(Transfer::sign(
        NET,
        &keypair(1),
        x(3),
        1,
        1,
        5,
    ))]);
    assert_eq!(
        check(&b),
        Err(BlockError::Transfer {
            index: 0,
            reason: "wrong nonce".into()
        })
    );
    let overdraft = Transfer::sign(NET, &keypair(2), x(3), 600, 0, 0);
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.txs = vec![Tx::Transfer(overdraft)];
    b.header.tx_root = tx_root(&b.txs);
    // (re-signed so only the overdraft is wrong)
    let b = resign(b);
    assert_eq!(
        check(&b),
        Err(BlockError::Transfer {
            index: 0,
            reason: "insufficient balance".into()
        })
    );

    // A wrong state root.
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.header.state_root = [1; 32];
    let b = resign(b);
    assert_eq!(check(&b), Err(BlockError::StateRoot));

    // A coinbase outside the term's first block.
    let b = make(vec![Tx::Coinbase {
        term: 3,
        payouts: vec![(x(1), 5)],
    }]);
    assert!(matches!(check(&b), Err(BlockError::Coinbase(_))));

    // The term's cost budget.
    let mut tight = ctx.clone();
    tight.cost_left = 1;
    let two = make(vec![
        Tx::Transfer(good.clone()),
        Tx::Transfer(Transfer::sign(NET, &keypair(1), x(3), 1, 1, 1)),
    ]);
    assert_eq!(
        state.validate(&two, &tight, NET),
        Err(BlockError::CostLimit { cost: 2, left: 1 })
    );

    // A required stacker signature.
    let mut with_stackers = ctx.clone();
    with_stackers.stacker_key = Some(keypair(102).x_only_public_key().0);
    let b = make(vec![Tx::Transfer(good.clone())]);
    assert_eq!(
        state.validate(&b, &with_stackers, NET),
        Err(BlockError::StackerSignature)
    );
    let b = build::block(
        &state,
        3,
        vec![Tx::Transfer(good)],
        &keypair(100),
        Some(&keypair(102)),
    )
    .unwrap()
    .0;
    assert!(state.validate(&b, &with_stackers, NET).is_ok());
}

#[test]
fn a_terms_first_block_must_pay_exactly_its_coinbase() {
    let ctx = context(vec![(x(1), 1_000)]);
    let genesis = ChainState::default();
    let short = Tx::Coinbase {
        term: 3,
        payouts: vec![(x(1), 999)],
    };
    let (b, _) = build::block(&genesis, 3, vec![short], &keypair(100), None).unwrap();
    assert!(matches!(
        genesis.validate(&b, &ctx, NET),
        Err(BlockError::Coinbase(_))
    ));
    let (b, _) = build::block(&genesis, 3, vec![], &keypair(100), None).unwrap();
    assert!(matches!(
        genesis.validate(&b, &ctx, NET),
        Err(BlockError::Coinbase(_))
    ));
}

#[test]
fn garbage_does_not_decode_as_a_block() {
    assert!(Block::from_bytes(b"\\xff\\x00junk").is_err());
    assert!(matches!(
        Block::from_bytes(&vec![0; 5 * 1024 * 1024]),
        Err(BlockError::TooLarge(_))
    ));
}

/// Re-signs a block after a test edited its header.
fn resign(mut b: Block) -> Block {
    let message =
        bitcoin::secp256k1::Message::from_digest(Block::signing_message(&b.header, &b.signers));
    b.producer_signature = ByteBuf::from(
        SECP256K1
            .sign_schnorr(&message, &keypair(100))
            .as_ref()
            .to_vec(),
    );
    b
}
