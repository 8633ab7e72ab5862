//! The chain state on sled: a restart resumes at the same tip; an invalid block
//! changes nothing; a term's unannounced blocks are dropped when the next term starts;
//! a burnchain reorg that un-announces blocks rolls the chain back; a damaged store is
//! an error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use common::{announce, scan, wallet, with_term_utxo};
use tenure_chain::{
    block::{
        AccountId, Block, BlockError, ChainState, TermContext, Transfer, Tx,
        build::{self, ProducerGroup},
    },
    burnchain::regtest::{coinbase, seal, subsidy},
    ops::announce::Announcement,
    store::{ChainStore, StoreError},
    tenure_change::consensus_hash,
};

const NET: &str = "test";

fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

/// The producer group of `term` (1 to 3).
fn producers(term: u64) -> &'static ProducerGroup {
    static GROUPS: std::sync::OnceLock<Vec<ProducerGroup>> = std::sync::OnceLock::new();
    &GROUPS.get_or_init(|| {
        (1..=3)
            .map(|t| ProducerGroup::generate(t).unwrap())
            .collect()
    })[term as usize - 1]
}

fn x(n: u8) -> AccountId {
    AccountId::of(&keypair(n).x_only_public_key().0)
}

/// Term `term`'s context; its producer group is `producers(term)`.
fn context(term: u64) -> TermContext {
    TermContext {
        term,
        producer_key: producers(term).key(),
        producer_shares: producers(term).public.clone(),
        stacker_key: None,
        coinbase: vec![(x(1), 1_000), (x(2), 500)],
        cost_limit: 1_000,
        consensus_hash: consensus_hash(term, &[term as u8; 32]),
        previous_consensus_hash: consensus_hash(term - 1, &[term as u8 - 1; 32]),
        producers: vec![(x(40 + term as u8), 2), (x(50 + term as u8), 1)],
        share_owners: (0..100).map(|i| u16::from(i % 3 == 2)).collect(),
    }
}

/// Term 1: its first block, then `transfers` blocks of one transfer each. Returns the
/// blocks and the state after each.
fn term_one(transfers: u64) -> (Vec<Block>, Vec<ChainState>) {
    let ctx = context(1);
    let (first, mut state) = build::term_start(
        &ChainState::default(),
        &ctx,
        vec![],
        producers(1),
        None,
        NET,
    )
    .unwrap();
    let mut blocks = vec![first];
    let mut states = vec![state.clone()];
    for nonce in 0..transfers {
        let t = Transfer::sign(NET, &keypair(1), x(3 + nonce as u8), 10, 1, nonce);
        let (b, next) = build::block(
            &state,
            &context(1),
            1,
            vec![Tx::Transfer(t)],
            producers(1),
            None,
        )
        .unwrap();
        blocks.push(b);
        states.push(next.clone());
        state = next;
    }
    (blocks, states)
}

/// Opens the store in `dir` again. sled's background writes can hold the directory's
/// lock for a moment after the previous handle was dropped (a process restart releases
/// it at exit); wait for that, boundedly.
fn reopen(dir: &std::path::Path) -> ChainStore {
    when_unlocked(|| ChainStore::open(dir)).unwrap()
}

/// `open` once the directory's lock is free (see [`reopen`]).
fn when_unlocked<T>(open: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    for _ in 0..250 {
        match open() {
            Err(StoreError::Sled(sled::Error::Io(e))) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
    panic!("the store's lock was never released");
}

/// The raw sled database in `dir`, once its lock is free.
fn raw(dir: &std::path::Path) -> sled::Db {
    when_unlocked(|| sled::open(dir).map_err(StoreError::Sled)).unwrap()
}

#[test]
fn a_restart_resumes_at_the_same_tip() {
    let dir = tempfile::tempdir().unwrap();
    let (blocks, states) = term_one(4);
    {
        let mut store = reopen(dir.path());
        for b in &blocks {
            store.apply(b, &context(1), NET).unwrap();
        }
        assert_eq!(store.state(), states.last().unwrap());
    }
    let mut store = reopen(dir.path());
    assert_eq!(store.state(), states.last().unwrap());
    assert_eq!(store.state().height, 5);
    assert_eq!(store.block_at(3).unwrap().unwrap(), blocks[2]);
    assert_eq!(store.height_of(&blocks[2].header.hash()).unwrap(), Some(3));
    // And it goes on from there.
    let t = Transfer::sign(NET, &keypair(2), x(9), 5, 1, 0);
    let (next, after) = build::block(
        store.state(),
        &context(1),
        1,
        vec![Tx::Transfer(t)],
        producers(1),
        None,
    )
    .unwrap();
    store.apply(&next, &context(1), NET).unwrap();
    drop(store);
    assert_eq!(reopen(dir.path()).state(), &after);
}

/// A block `apply` returned for is on the disk: the writer process applies blocks and
/// reports each, the power is cut right after the last report and the writer killed with
/// SIGKILL, and the store opened on what the disk held (a file system keeping only what
/// `fsync` covered) is at that block, or the state checks on opening would say why not.
#[test]
fn an_applied_block_survives_kill_9_and_a_power_cut() {
    use tenure_tests::lossy_fs;
    const BLOCKS: usize = 6;
    if let Some(dir) = lossy_fs::writer_dir() {
        let (blocks, _) = term_one(BLOCKS as u64 - 1);
        let mut store = ChainStore::open(&dir.join("chain")).unwrap();
        // sled's background flusher syncs once as it starts, then every 500 ms: the
        // blocks come between, so only the store's own sync can make them durable.
        std::thread::sleep(std::time::Duration::from_millis(100));
        for block in &blocks {
            let height = store.apply(block, &context(1), NET).unwrap().height;
            if !lossy_fs::acknowledge(&format!("{height} {}", hex::encode(block.header.hash()))) {
                return;
            }
        }
        return;
    }
    let cut = lossy_fs::power_cut("an_applied_block_survives_kill_9_and_a_power_cut", BLOCKS)
        .expect("the lossy file system needs /dev/fuse and root");
    let store = reopen(&cut.restored.join("chain"));
    let tip = store.block_at(store.state().height).unwrap().unwrap();
    assert_eq!(
        format!(
            "{} {}",
            store.state().height,
            hex::encode(tip.header.hash())
        ),
        cut.acknowledged[BLOCKS - 1]
    );
}

#[test]
fn an_invalid_block_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (blocks, states) = term_one(1);
    let mut store = reopen(dir.path());
    store.apply(&blocks[0], &context(1), NET).unwrap();
    let replayed = Transfer::sign(NET, &keypair(2), x(9), 5, 0, 7);
    let (bad, _) = build::block(
        store.state(),
        &context(1),
        1,
        vec![Tx::Transfer(replayed)],
        producers(1),
        None,
    )
    .unwrap();
    assert!(matches!(
        store.apply(&bad, &context(1), NET),
        Err(StoreError::Invalid(BlockError::Transfer { index: 0, .. }))
    ));
    // A block that skips one is refused too.
    assert!(matches!(
        ChainStore::open(tempfile::tempdir().unwrap().path())
            .unwrap()
            .apply(&blocks[1], &context(1), NET),
        Err(StoreError::Invalid(BlockError::WrongParent))
    ));
    assert_eq!(store.state(), &states[0]);
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.state(), &states[0]);
    assert!(store.block_at(2).unwrap().is_none());
}

#[test]
fn rewinding_undoes_blocks_exactly_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (blocks, states) = term_one(5);
    let mut store = reopen(dir.path());
    for b in &blocks {
        store.apply(b, &context(1), NET).unwrap();
    }
    let dropped = store.rewind_to(2).unwrap();
    assert_eq!(dropped, blocks[2..].to_vec());
    assert_eq!(store.state(), &states[1]);
    assert!(store.height_of(&blocks[4].header.hash()).unwrap().is_none());
    drop(store);
    let mut store = reopen(dir.path());
    assert_eq!(store.state(), &states[1]);
    // The dropped blocks apply again, to the same state.
    for b in &dropped {
        store.apply(b, &context(1), NET).unwrap();
    }
    assert_eq!(store.state(), states.last().unwrap());
    // Back to nothing: the accounts the blocks created are gone.
    store.rewind_to(0).unwrap();
    assert_eq!(store.state(), &ChainState::default());
}

#[test]
fn unannounced_blocks_are_dropped_and_a_burnchain_reorg_rolls_back_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let funder = wallet(1);
    let group = wallet(2);
    let (mut burnchain, term_utxo) = with_term_utxo(&funder, &group);
    let utxos = BTreeMap::from([(1u64, term_utxo)]);

    // Term 1 produces five blocks but announces only the third.
    let (blocks, states) = term_one(4);
    let mut store = reopen(dir.path());
    for b in &blocks {
        store.apply(b, &context(1), NET).unwrap();
    }
    let before_announcement = burnchain.height();
    announce(
        &mut burnchain,
        &group,
        Announcement {
            term: 1,
            height: 3,
            block: blocks[2].header.hash(),
        },
    );

    // Term 2 starts: blocks 4 and 5 were never announced.
    let announced = scan(&burnchain, &utxos);
    let dropped = store.settle(&announced, 2).unwrap();
    assert_eq!(dropped, blocks[3..].to_vec());
    assert_eq!(store.state(), &states[2]);

    // Term 2 builds on block 3; settling again keeps its blocks.
    let (first, after) =
        build::term_start(store.state(), &context(2), vec![], producers(2), None, NET).unwrap();
    store.apply(&first, &context(2), NET).unwrap();
    assert_eq!(store.state(), &after);
    assert!(store.settle(&announced, 2).unwrap().is_empty());
    drop(store);
    let mut store = reopen(dir.path());
    assert_eq!(store.state(), &after);

    // A longer burnchain branch without the announcement: term 1 announced nothing,
    // so everything goes, term 2's block with it.
    let mut branch = Vec::new();
    let mut prev = burnchain
        .block_at(before_announcement)
        .unwrap()
        .block_hash();
    for i in 1..=2u64 {
        let h = before_announcement + i;
        let block = seal(
            prev,
            vec![coinbase(h, &wallet(8).script(), subsidy(h))],
            1_700_300_000 + i as u32,
        );
        prev = block.block_hash();
        branch.push(block);
    }
    burnchain.reorg(before_announcement, branch).unwrap();
    let dropped = store.settle(&scan(&burnchain, &utxos), 2).unwrap();
    assert_eq!(dropped.len(), 4);
    assert_eq!(dropped.last().unwrap(), &first);
    assert_eq!(store.state(), &ChainState::default());
}

#[test]
fn an_announced_block_this_node_lacks_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let funder = wallet(1);
    let group = wallet(2);
    let (mut burnchain, term_utxo) = with_term_utxo(&funder, &group);
    let (blocks, _) = term_one(1);
    let mut store = reopen(dir.path());
    store.apply(&blocks[0], &context(1), NET).unwrap();
    announce(
        &mut burnchain,
        &group,
        Announcement {
            term: 1,
            height: 2,
            block: blocks[1].header.hash(),
        },
    );
    let announced = scan(&burnchain, &BTreeMap::from([(1u64, term_utxo)]));
    match store.settle(&announced, 2) {
        Err(StoreError::AnnouncedBlockMissing { height: 2, hash }) => {
            assert_eq!(hash, blocks[1].header.hash())
        }
        other => panic!("expected the missing block, got {other:?}"),
    }
    assert_eq!(store.state().height, 1, "nothing was dropped");
}

#[test]
fn a_damaged_store_is_an_error_not_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let (blocks, _) = term_one(2);
    {
        let mut store = reopen(dir.path());
        for b in &blocks {
            store.apply(b, &context(1), NET).unwrap();
        }
    }
    {
        // Someone edits a balance behind the store's back.
        let db = raw(dir.path());
        let chain = db.open_tree("chain").unwrap();
        let mut key = vec![b'a'];
        key.extend_from_slice(x(1).as_ref());
        let mut record = chain.get(&key).unwrap().unwrap().to_vec();
        record[7] ^= 1;
        chain.insert(key, record).unwrap();
        db.flush().unwrap();
    }
    match when_unlocked(|| ChainStore::open(dir.path())) {
        Err(StoreError::Corrupt(reason)) => assert!(reason.contains("state root"), "{reason}"),
        other => panic!("expected a damaged store, got {other:?}"),
    }
    {
        let db = raw(dir.path());
        db.insert(b"format", &9u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        when_unlocked(|| ChainStore::open(dir.path())),
        Err(StoreError::Format { .. })
    ));
}
