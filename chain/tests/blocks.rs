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
use tenure_chain::{
    block::{
        AccountId, Block, BlockError, BlockSignature, ChainState, TenureChangeError, TermContext,
        Transfer, TransferError, Tx,
        build::{self, ProducerGroup},
        tx_root,
    },
    tenure_change::{Cause, TenureChange, consensus_hash},
};

const NET: &str = "test";

fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

/// The producer group of term 3 (the usual context).
fn group() -> &'static ProducerGroup {
    ProducerGroup::shared()
}

/// Another group: term 4's, and a stranger to term 3.
fn other_group() -> &'static ProducerGroup {
    static GROUP: std::sync::OnceLock<ProducerGroup> = std::sync::OnceLock::new();
    GROUP.get_or_init(|| ProducerGroup::generate(4).unwrap())
}

fn x(n: u8) -> AccountId {
    AccountId::of(&keypair(n).x_only_public_key().0)
}

fn context(coinbase: Vec<(AccountId, u64)>) -> TermContext {
    TermContext {
        term: 3,
        producer_key: group().key(),
        producer_shares: group().public.clone(),
        stacker_key: None,
        coinbase,
        cost_limit: 1_000,
        consensus_hash: consensus_hash(3, &[3; 32]),
        previous_consensus_hash: consensus_hash(2, &[2; 32]),
        // Producer 0 spent 300 and holds shares 1–75, producer 1 spent 100.
        producers: vec![(x(50), 300), (x(51), 100)],
        share_owners: (0..100).map(|i| u16::from(i >= 75)).collect(),
    }
}

/// A term started: its first block paid the coinbase to accounts 1 and 2.
fn started() -> (ChainState, TermContext) {
    let ctx = context(vec![(x(1), 1_000), (x(2), 500)]);
    let (block, built) =
        build::term_start(&ChainState::default(), &ctx, vec![], group(), None, NET).unwrap();
    let state = ChainState::default().after(&block, &ctx, NET).unwrap();
    assert_eq!(state, built);
    assert_eq!(state.accounts[&x(1)].balance, 1_000);
    assert_eq!((state.term, state.term_blocks, state.term_cost), (3, 1, 2));
    (state, ctx)
}

#[test]
fn transfers_move_balances_and_nonces() {
    let (state, ctx) = started();
    let t = Transfer::sign(NET, &keypair(1), x(3), 300, 10, 0);
    let t2 = Transfer::sign(NET, &keypair(1), x(2), 100, 10, 1);
    let (block, _) = build::block(
        &state,
        &ctx,
        3,
        vec![Tx::Transfer(t), Tx::Transfer(t2)],
        group(),
        None,
    )
    .unwrap();
    let after = state.after(&block, &ctx, NET).unwrap();
    assert_eq!(after.accounts[&x(1)].balance, 1_000 - 310 - 110);
    assert_eq!(after.accounts[&x(1)].nonce, 2);
    assert_eq!(after.accounts[&x(3)].balance, 300);
    assert_eq!(after.height, 2);
    // Round trip through the encoding.
    assert_eq!(
        Block::from_bytes(&block.to_bytes().unwrap()).unwrap(),
        block
    );
}

#[test]
fn every_invalid_block_is_refused_with_its_reason() {
    let (state, ctx) = started();
    let good = Transfer::sign(NET, &keypair(1), x(3), 300, 10, 0);
    let make = |txs: Vec<Tx>| build::block(&state, &ctx, 3, txs, group(), None).unwrap().0;
    let check = |block: &Block| state.after(block, &ctx, NET);

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
        &ctx,
        4,
        vec![Tx::Transfer(good.clone())],
        group(),
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

    // Signed by another group's key.
    let b = build::block(
        &state,
        &ctx,
        3,
        vec![Tx::Transfer(good.clone())],
        other_group(),
        None,
    )
    .unwrap()
    .0;
    assert_eq!(check(&b), Err(BlockError::ProducerSignature));

    // Signer evidence that does not prove who signed.
    let evidence_refused = |b: &Block| matches!(check(b), Err(BlockError::SignerEvidence(_)));
    // A share dropped from the evidence: 66 shares left.
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.signers.shares.pop();
    assert!(evidence_refused(&b));
    // Another signing's evidence for the same header (a padded or swapped signer set).
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    let other = build::block_signed_by(
        &state,
        &ctx,
        3,
        vec![Tx::Transfer(good.clone())],
        group(),
        &(34..=100).collect(),
        None,
    )
    .unwrap()
    .0;
    b.signers = other.signers.clone();
    assert!(evidence_refused(&b));
    // A share moved to a number the signer does not hold.
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.signers.shares[0].0 = 99;
    assert!(evidence_refused(&b));
    // Garbage.
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.signers.package = ByteBuf::from(vec![1, 2, 3]);
    assert!(evidence_refused(&b));
    // The same block signed by shares 34–100 is as valid as by shares 1–67.
    assert!(check(&other).is_ok());
    // The honest block still passes.
    assert!(check(&make(vec![Tx::Transfer(good.clone())])).is_ok());

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
            error: TransferError::Signature
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
    assert!(matches!(
        check(&b),
        Err(BlockError::Transfer {
            index: 0,
            error: TransferError::WrongNonce { got: 5, .. }
        })
    ));
    let overdraft = Transfer::sign(NET, &keypair(2), x(3), 600, 0, 0);
    let mut b = make(vec![Tx::Transfer(good.clone())]);
    b.txs = vec![Tx::Transfer(overdraft)];
    b.header.tx_root = tx_root(&b.txs);
    // (re-signed so only the overdraft is wrong)
    let b = resign(b);
    assert!(matches!(
        check(&b),
        Err(BlockError::Transfer {
            index: 0,
            error: TransferError::InsufficientBalance { needed: 600, .. }
        })
    ));

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
    tight.cost_limit = 3; // the first block spent 2
    let two = make(vec![
        Tx::Transfer(good.clone()),
        Tx::Transfer(Transfer::sign(NET, &keypair(1), x(3), 1, 1, 1)),
    ]);
    assert_eq!(
        state.after(&two, &tight, NET),
        Err(BlockError::CostLimit { cost: 2, left: 1 })
    );

    // A required stacker signature.
    let mut with_stackers = ctx.clone();
    with_stackers.stacker_key = Some(keypair(102).x_only_public_key().0);
    let b = make(vec![Tx::Transfer(good.clone())]);
    assert_eq!(
        state.after(&b, &with_stackers, NET),
        Err(BlockError::StackerSignature)
    );
    let b = build::block(
        &state,
        &ctx,
        3,
        vec![Tx::Transfer(good)],
        group(),
        Some(&keypair(102)),
    )
    .unwrap()
    .0;
    assert!(state.after(&b, &with_stackers, NET).is_ok());
}

#[test]
fn a_terms_first_block_must_pay_exactly_its_coinbase() {
    let ctx = context(vec![(x(1), 1_000)]);
    let genesis = ChainState::default();
    let short = Tx::Coinbase {
        term: 3,
        payouts: vec![(x(1), 999)],
    };
    let (b, _) = build::block(&genesis, &ctx, 3, vec![short], group(), None).unwrap();
    assert!(matches!(
        genesis.after(&b, &ctx, NET),
        Err(BlockError::Coinbase(_))
    ));
    let (b, _) = build::block(&genesis, &ctx, 3, vec![], group(), None).unwrap();
    assert!(matches!(
        genesis.after(&b, &ctx, NET),
        Err(BlockError::Coinbase(_))
    ));
    // The coinbase alone is not enough: the BlockFound must follow it.
    let coinbase = Tx::Coinbase {
        term: 3,
        payouts: ctx.coinbase.clone(),
    };
    let (b, _) = build::block(&genesis, &ctx, 3, vec![coinbase], group(), None).unwrap();
    assert_eq!(
        genesis.after(&b, &ctx, NET),
        Err(BlockError::TenureChange(
            TenureChangeError::MissingBlockFound
        ))
    );
}

/// Term 4 after `ctx`'s term 3: producers 60 (spent 1) and 61 (spent 2), holding
/// alternate shares; its group key is `keypair(104)`.
fn term_four(ctx: &TermContext) -> TermContext {
    TermContext {
        term: 4,
        producer_key: other_group().key(),
        producer_shares: other_group().public.clone(),
        stacker_key: None,
        coinbase: vec![(x(4), 700)],
        cost_limit: 1_000,
        consensus_hash: consensus_hash(4, &[4; 32]),
        previous_consensus_hash: ctx.consensus_hash,
        producers: vec![(x(60), 1), (x(61), 2)],
        share_owners: (0..100).map(|i| u16::from(i % 2 == 1)).collect(),
    }
}

/// A change made to a tenure change before it goes into a block.
type Edit = dyn FnOnce(&mut TenureChange);

/// The reason a term-start block with `edit` applied to its BlockFound is refused
/// (re-signed after the edit unless `resign_tc` is false).
fn block_found_refusal(
    ctx: &TermContext,
    edit: impl FnOnce(&mut TenureChange),
    resign_tc: bool,
) -> BlockError {
    let genesis = ChainState::default();
    let mut tc =
        build::tenure_change(&genesis, ctx, Cause::BlockFound, group(), None, NET).unwrap();
    edit(&mut tc);
    if resign_tc {
        tc.set_signature(
            group()
                .sign(tc.digest(NET), &build::threshold_shares())
                .unwrap()
                .0,
        );
    }
    let txs = vec![
        Tx::Coinbase {
            term: 3,
            payouts: ctx.coinbase.clone(),
        },
        Tx::TenureChange(tc),
    ];
    let (b, _) = build::block(&genesis, ctx, 3, txs, group(), None).unwrap();
    genesis.after(&b, ctx, NET).unwrap_err()
}

#[test]
fn every_wrong_block_found_is_refused_with_its_reason() {
    let ctx = context(vec![(x(1), 1_000)]);
    let reason = BlockError::TenureChange;
    let cases: Vec<(TenureChangeError, Box<Edit>, bool)> = vec![
        (
            TenureChangeError::ConsensusHash,
            Box::new(|tc| tc.tenure_consensus_hash = [9; 20]),
            true,
        ),
        (
            TenureChangeError::PreviousConsensusHash,
            Box::new(|tc| tc.previous_tenure_consensus_hash = [9; 20]),
            true,
        ),
        (
            TenureChangeError::PreviousTenureEnd,
            Box::new(|tc| tc.previous_tenure_end = [9; 32]),
            true,
        ),
        (
            TenureChangeError::PreviousTenureBlocks {
                got: 4,
                expected: 0,
            },
            Box::new(|tc| tc.previous_tenure_blocks = 4),
            true,
        ),
        (
            TenureChangeError::PubkeyHash,
            Box::new(|tc| tc.pubkey_hash = [9; 20]),
            true,
        ),
        (
            TenureChangeError::TooFewSigners,
            Box::new(|tc| {
                for s in tc.signers.iter_mut().take(34) {
                    *s = false;
                }
            }),
            true,
        ),
        (
            TenureChangeError::Signature,
            Box::new(|tc| tc.burn_view_consensus_hash = [9; 20]),
            false,
        ),
        (
            TenureChangeError::WrongCause {
                expected: Cause::BlockFound,
            },
            Box::new(|tc| tc.cause = Cause::Extend),
            true,
        ),
    ];
    for (expected, edit, resign_tc) in cases {
        assert_eq!(
            block_found_refusal(&ctx, edit, resign_tc),
            reason(expected.clone()),
            "{expected}"
        );
    }
    // With a stacker set, the stackers grant the tenure, not the producers.
    let mut with_stackers = ctx.clone();
    with_stackers.stacker_key = Some(keypair(102).x_only_public_key().0);
    let genesis = ChainState::default();
    let (b, _) = build::term_start(
        &genesis,
        &with_stackers,
        vec![],
        group(),
        Some(&keypair(102)),
        NET,
    )
    .unwrap();
    assert!(genesis.after(&b, &with_stackers, NET).is_ok());
    let found =
        build::tenure_change(&genesis, &ctx, Cause::BlockFound, group(), None, NET).unwrap();
    let txs = vec![
        Tx::Coinbase {
            term: 3,
            payouts: ctx.coinbase.clone(),
        },
        Tx::TenureChange(found),
    ];
    let (b, _) = build::block(&genesis, &ctx, 3, txs, group(), Some(&keypair(102))).unwrap();
    assert_eq!(
        genesis.after(&b, &with_stackers, NET),
        Err(reason(TenureChangeError::Signature))
    );
}

#[test]
fn an_extend_renews_the_terms_budget_and_nothing_else_does() {
    let (state, mut ctx) = started();
    ctx.cost_limit = 4; // 2 spent by the first block
    let transfer = |nonce| Tx::Transfer(Transfer::sign(NET, &keypair(1), x(3), 1, 1, nonce));
    let (b, after) = build::block(
        &state,
        &ctx,
        3,
        vec![transfer(0), transfer(1)],
        group(),
        None,
    )
    .unwrap();
    let spent = state.after(&b, &ctx, NET).unwrap();
    assert_eq!(spent, after);
    assert_eq!(spent.term_cost, 4);

    // The budget is gone ...
    let (b, _) = build::block(&spent, &ctx, 3, vec![transfer(2)], group(), None).unwrap();
    assert_eq!(
        spent.after(&b, &ctx, NET),
        Err(BlockError::CostLimit { cost: 1, left: 0 })
    );
    // ... until a block opens with an Extend, which counts against the new budget.
    let extend = build::tenure_change(&spent, &ctx, Cause::Extend, group(), None, NET).unwrap();
    assert_eq!(extend.previous_tenure_blocks, 2);
    let (b, built) = build::block(
        &spent,
        &ctx,
        3,
        vec![
            Tx::TenureChange(extend.clone()),
            transfer(2),
            transfer(3),
            transfer(4),
        ],
        group(),
        None,
    )
    .unwrap();
    let extended = spent.after(&b, &ctx, NET).unwrap();
    assert_eq!(extended, built);
    assert_eq!((extended.term_cost, extended.term_blocks), (4, 3));

    // An Extend anywhere but first, a BlockFound inside the term, a stale Extend (with
    // budget to spare, so that the cost is not what refuses them).
    ctx.cost_limit = 100;
    let (b, _) = build::block(
        &spent,
        &ctx,
        3,
        vec![transfer(2), Tx::TenureChange(extend.clone())],
        group(),
        None,
    )
    .unwrap();
    assert_eq!(
        spent.after(&b, &ctx, NET),
        Err(BlockError::TenureChange(TenureChangeError::Misplaced(1)))
    );
    let found = build::tenure_change(&spent, &ctx, Cause::BlockFound, group(), None, NET).unwrap();
    let (b, _) = build::block(
        &spent,
        &ctx,
        3,
        vec![Tx::TenureChange(found)],
        group(),
        None,
    )
    .unwrap();
    assert_eq!(
        spent.after(&b, &ctx, NET),
        Err(BlockError::TenureChange(TenureChangeError::WrongCause {
            expected: Cause::Extend
        }))
    );
    let (b, _) = build::block(
        &extended,
        &ctx,
        3,
        vec![Tx::TenureChange(extend), transfer(5)],
        group(),
        None,
    )
    .unwrap();
    assert_eq!(
        extended.after(&b, &ctx, NET),
        Err(BlockError::TenureChange(
            TenureChangeError::PreviousTenureEnd
        ))
    );
}

#[test]
fn the_next_term_starts_on_the_last_block_and_counts_the_previous_terms_blocks() {
    let (state, ctx) = started();
    let t = Transfer::sign(NET, &keypair(1), x(3), 300, 10, 0);
    let (b, _) = build::block(&state, &ctx, 3, vec![Tx::Transfer(t)], group(), None).unwrap();
    let end_of_term_3 = state.after(&b, &ctx, NET).unwrap();
    let next = term_four(&ctx);
    let (b, _) =
        build::term_start(&end_of_term_3, &next, vec![], other_group(), None, NET).unwrap();
    let Tx::TenureChange(found) = &b.txs[1] else {
        panic!("no BlockFound")
    };
    assert_eq!(found.previous_tenure_blocks, 2);
    assert_eq!(found.previous_tenure_end, end_of_term_3.tip);
    let term_4 = end_of_term_3.after(&b, &next, NET).unwrap();
    assert_eq!((term_4.term, term_4.term_blocks, term_4.height), (4, 1, 3));
    assert_eq!(term_4.accounts[&x(4)].balance, 700);
    // Term 3's context no longer validates blocks on top of term 4.
    let (b, _) = build::block(&term_4, &ctx, 3, vec![], group(), None).unwrap();
    assert!(matches!(
        term_4.after(&b, &ctx, NET),
        Err(BlockError::WrongTerm { got: 3, .. })
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
    let (signature, evidence) = group()
        .sign(
            Block::signing_message(&b.header),
            &build::threshold_shares(),
        )
        .unwrap();
    b.producer_signature = ByteBuf::from(signature.to_vec());
    b.signers = evidence;
    b
}

#[test]
fn fees_go_forty_percent_to_the_signers_and_sixty_to_the_next_terms_producers() {
    let (state, ctx) = started();
    let minted: u64 = ctx.coinbase.iter().map(|(_, a)| a).sum();
    let t1 = Transfer::sign(NET, &keypair(1), x(3), 100, 30, 0);
    let t2 = Transfer::sign(NET, &keypair(2), x(3), 100, 10, 0);
    // Shares 34–100 sign: both producers (producer 0 holds 1–75).
    let (b, built) = build::block_signed_by(
        &state,
        &ctx,
        3,
        vec![Tx::Transfer(t1), Tx::Transfer(t2)],
        group(),
        &(34..=100).collect(),
        None,
    )
    .unwrap();
    let after = state.after(&b, &ctx, NET).unwrap();
    assert_eq!(after, built);
    // Fees 40: 16 owed to the verified signers, 24 carried; nobody is paid yet.
    assert_eq!((after.signer_fees, after.carried_fees), (16, 24));
    assert_eq!(after.tip_signature, Some(BlockSignature::of(&b)));
    assert!(!after.accounts.contains_key(&x(50)));
    let total = |s: &ChainState| {
        s.accounts.values().map(|a| a.balance).sum::<u64>() + s.carried_fees + s.signer_fees
    };
    assert_eq!(total(&after), minted, "value is conserved");

    // The next block pays them, 300 : 100, whoever signs it (shares 1–67: producer 0).
    let (b, _) = build::block(&after, &ctx, 3, vec![], group(), None).unwrap();
    let paid = after.after(&b, &ctx, NET).unwrap();
    assert_eq!(paid.accounts[&x(50)].balance, 12);
    assert_eq!(paid.accounts[&x(51)].balance, 4);
    assert_eq!(total(&paid), minted);

    // The next term's first block cannot check the last block's signer evidence
    // (it is under the previous term's key): what they were owed is carried to the
    // next term's producers with the rest.
    let next = term_four(&ctx);
    let (b, _) = build::term_start(&after, &next, vec![], other_group(), None, NET).unwrap();
    assert_eq!(b.parent_signature, None);
    let term_4 = after.after(&b, &next, NET).unwrap();
    assert!(!term_4.accounts.contains_key(&x(50)));
    assert!(!term_4.accounts.contains_key(&x(51)));
    assert_eq!(
        term_4.accounts[&x(60)].balance + term_4.accounts[&x(61)].balance,
        40
    );
    assert_eq!(term_4.carried_fees, 0);
    assert_eq!(total(&term_4), minted + 700);

    // A block that pays the signers more than their part fails its state root.
    let t3 = Transfer::sign(NET, &keypair(1), x(3), 1, 1, 1);
    let (mut b, mut s) =
        build::block(&after, &ctx, 3, vec![Tx::Transfer(t3)], group(), None).unwrap();
    s.accounts.get_mut(&x(50)).unwrap().balance += 1;
    b.header.state_root = s.state_root();
    let b = resign(b);
    assert_eq!(after.after(&b, &ctx, NET), Err(BlockError::StateRoot));
}

#[test]
fn a_leaders_assembled_block_passes_the_proposal_check_and_validates_once_signed() {
    let (state, ctx) = started();
    let good = Transfer::sign(NET, &keypair(1), x(3), 100, 5, 0);
    let next = Transfer::sign(NET, &keypair(1), x(3), 100, 5, 1);
    let gap = Transfer::sign(NET, &keypair(2), x(3), 100, 5, 3);
    let unfunded = Transfer::sign(NET, &keypair(9), x(3), 100, 5, 0);
    let mut forged = Transfer::sign(NET, &keypair(2), x(3), 100, 5, 0);
    forged.amount = 400;
    let (proposal, left_out) = state
        .assemble(
            &ctx,
            vec![],
            vec![good, next, gap.clone(), unfunded.clone(), forged.clone()],
            0,
            NET,
        )
        .unwrap();
    assert_eq!(proposal.txs.len(), 2);
    assert_eq!(left_out, vec![gap, unfunded, forged]);
    assert_eq!(
        state
            .check_proposal(&proposal, &ctx, NET, &|_| false)
            .map(|_| ()),
        Ok(())
    );
    // Unsigned, it is not a block yet.
    assert_eq!(
        state.validate(&proposal, &ctx, NET),
        Err(BlockError::ProducerSignature)
    );
    let signed = resign(proposal.clone());
    let after = state.after(&signed, &ctx, NET).unwrap();
    assert_eq!(after.accounts[&x(3)].balance, 200);
    // A proposal whose root does not match its transactions is refused before anyone
    // pre-commits to it.
    let mut bad = proposal;
    bad.header.state_root = [1; 32];
    assert_eq!(
        state
            .check_proposal(&bad, &ctx, NET, &|_| false)
            .map(|_| ()),
        Err(BlockError::StateRoot)
    );
}

#[test]
fn a_checked_proposal_once_signed_validates_as_in_full_and_binds_its_header() {
    let (state, ctx) = started();
    let t = Transfer::sign(NET, &keypair(1), x(3), 100, 5, 0);
    let (proposal, _) = state.assemble(&ctx, vec![], vec![t], 0, NET).unwrap();
    let checked = state
        .check_proposal(&proposal, &ctx, NET, &|_| false)
        .unwrap();
    let signed = resign(proposal.clone());
    assert_eq!(
        state.validate_checked(&signed, &ctx, &checked),
        state.validate(&signed, &ctx, NET)
    );
    // Another block does not ride on this check.
    let (other, _) = state.assemble(&ctx, vec![], vec![], 1, NET).unwrap();
    assert!(
        state
            .validate_checked(&resign(other), &ctx, &checked)
            .is_err()
    );
    // Nor the same header with its signature stripped.
    assert_eq!(
        state.validate_checked(&proposal, &ctx, &checked),
        Err(BlockError::ProducerSignature)
    );
}

#[test]
fn every_validator_pays_the_signers_of_the_parent_version_the_block_carries_whichever_it_holds() {
    let (state, ctx) = started();
    let t = Transfer::sign(NET, &keypair(1), x(3), 100, 30, 0);
    // One header, two valid versions: shares 34–100 (producers 0 and 1) and shares
    // 1–67 (producer 0 alone), as two robust-signing sessions can complete it.
    let (v1, _) = build::block_signed_by(
        &state,
        &ctx,
        3,
        vec![Tx::Transfer(t)],
        group(),
        &(34..=100).collect(),
        None,
    )
    .unwrap();
    let (signature, evidence) = group()
        .sign(
            Block::signing_message(&v1.header),
            &build::threshold_shares(),
        )
        .unwrap();
    let mut v2 = v1.clone();
    v2.producer_signature = ByteBuf::from(signature.to_vec());
    v2.signers = evidence;
    let holds_v1 = state.after(&v1, &ctx, NET).unwrap();
    let holds_v2 = state.after(&v2, &ctx, NET).unwrap();
    assert_eq!(holds_v1.tip, holds_v2.tip);
    assert_ne!(holds_v1.tip_signature, holds_v2.tip_signature);

    // A leader holding v1 builds on it and carries v1: a producer holding v2 agrees on
    // the state root and pays both producers (9 : 3 of the 12 owed).
    let (next, _) = build::block(&holds_v1, &ctx, 3, vec![], group(), None).unwrap();
    assert_eq!(next.parent_signature, Some(BlockSignature::of(&v1)));
    let at_v1 = holds_v1.after(&next, &ctx, NET).unwrap();
    let at_v2 = holds_v2.after(&next, &ctx, NET).unwrap();
    assert_eq!(at_v1.state_root(), at_v2.state_root());
    assert_eq!(at_v2.accounts[&x(50)].balance, 9);
    assert_eq!(at_v2.accounts[&x(51)].balance, 3);

    // And a leader holding v2 pays producer 0 alone, valid at both as well.
    let (other, _) = build::block(&holds_v2, &ctx, 3, vec![], group(), None).unwrap();
    let paid = holds_v1.after(&other, &ctx, NET).unwrap();
    assert_eq!(paid.accounts[&x(50)].balance, 12);
    assert!(!paid.accounts.contains_key(&x(51)));
}

#[test]
fn a_forged_missing_or_misplaced_parent_version_is_refused() {
    let (state, ctx) = started();
    let (b, after) = build::block(&state, &ctx, 3, vec![], group(), None).unwrap();
    let (next, _) = build::block(&after, &ctx, 3, vec![], group(), None).unwrap();
    assert!(after.after(&next, &ctx, NET).is_ok());
    let refused = |block: &Block| {
        matches!(
            after.after(block, &ctx, NET),
            Err(BlockError::ParentSignature(_))
        )
    };

    // Missing inside a term.
    let mut missing = next.clone();
    missing.parent_signature = None;
    assert!(refused(&missing));

    // The parent's evidence padded with a share copied under another number.
    let mut padded = next.clone();
    let parent = padded.parent_signature.as_mut().unwrap();
    let copy = parent.signers.shares[0].1.clone();
    parent.signers.shares.push((99, copy));
    assert!(refused(&padded));

    // Evidence of fewer than 67 shares: a version signed by 66 does not verify.
    let mut short = next.clone();
    let parent = short.parent_signature.as_mut().unwrap();
    parent.signers.shares.pop();
    assert!(refused(&short));

    // Another block's signature.
    let mut other = next.clone();
    other.parent_signature.as_mut().unwrap().signature = next.producer_signature.clone();
    assert!(refused(&other));

    // A term's first block carrying a parent version.
    let next_ctx = term_four(&ctx);
    let (mut opening, _) =
        build::term_start(&after, &next_ctx, vec![], other_group(), None, NET).unwrap();
    assert!(after.after(&opening, &next_ctx, NET).is_ok());
    opening.parent_signature = Some(BlockSignature::of(&b));
    assert!(matches!(
        after.after(&opening, &next_ctx, NET),
        Err(BlockError::ParentSignature(_))
    ));
}
