//! Announcements on the embedded regtest burnchain: the group spends its term UTXO to
//! commit its latest block; the index follows the UTXO chain; an impostor's
//! announcement is ignored; a burnchain reorg rolls back what it un-announces.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use bitcoin::{Amount, TxOut};
use common::{announce, scan, wallet, with_term_utxo};
use tenure_chain::{
    burnchain::regtest::{coinbase, seal, subsidy},
    ops::announce::Announcement,
    ops::enrollment::Magic,
};

/// An announcement of term 3's block at `height` with hash `[hash; 32]`.
fn a(height: u64, hash: u8) -> Announcement {
    Announcement {
        term: 3,
        height,
        block: [hash; 32],
    }
}

#[test]
fn announcements_follow_the_term_utxo_and_roll_back_with_a_reorg() {
    let funder = wallet(1);
    let group = wallet(2);
    let (mut chain, term_utxo) = with_term_utxo(&funder, &group);
    let utxos = BTreeMap::from([(3u64, term_utxo)]);

    announce(&mut chain, &group, a(5, 0xa5));
    let fork = chain.height();
    announce(&mut chain, &group, a(7, 0xa7));
    // An impostor "announces" for term 3 without the term UTXO: ignored.
    let impostor = Announcement {
        term: 3,
        height: 9,
        block: [0xee; 32],
    };
    let fake = funder
        .pay(
            &chain,
            vec![
                impostor.op_return(Magic::Regtest),
                TxOut {
                    value: Amount::from_sat(1_000),
                    script_pubkey: funder.script(),
                },
            ],
            Amount::from_sat(500),
        )
        .unwrap();
    chain.submit(fake).unwrap();
    chain.mine(&funder.script(), 1_700_200_000);

    let index = scan(&chain, &utxos);
    assert_eq!(index.latest(3).unwrap().height, 7);
    assert_eq!(index.latest(3).unwrap().block, [0xa7; 32]);
    assert_eq!(index.parent_for_term(4).unwrap().block, [0xa7; 32]);
    assert!(index.parent_for_term(3).is_none());
    assert!(index.survives(3, 7) && !index.survives(3, 8) && !index.survives(2, 1));

    // A longer burnchain branch from before the second announcement: it is gone.
    let mut branch = Vec::new();
    let mut prev = chain.block_at(fork).unwrap().block_hash();
    for i in 1..=3u64 {
        let block = seal(
            prev,
            vec![coinbase(fork + i, &wallet(8).script(), subsidy(fork + i))],
            1_700_300_000 + i as u32,
        );
        prev = block.block_hash();
        branch.push(block);
    }
    chain.reorg(fork, branch).unwrap();
    let index = scan(&chain, &utxos);
    assert_eq!(
        index.latest(3).unwrap().height,
        5,
        "the reorg did not roll back the announcement"
    );
    assert!(!index.survives(3, 7));
    assert_eq!(index.parent_for_term(4).unwrap().block, [0xa5; 32]);
}
