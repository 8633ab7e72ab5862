//! Following the embedded burnchain over real loopback libp2p nodes: the node's
//! driver carries `tenure_chain::burnchain::follow` by gossip and fetches.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::{sync::Arc, time::Duration};

use bitcoin::{BlockHash, ScriptBuf, consensus};
use tenure_chain::burnchain::regtest::{coinbase, seal, subsidy};
use tenure_node::burnchain::{ANTI_ENTROPY_INTERVAL, BurnNode, validate_gossip};
use tenure_overlay::{
    NetworkId, NodeKey, OverlayConfig, OverlayHandle, Topic,
    localnet::{self, LocalNode},
};
use tokio::sync::{mpsc, watch};

fn reward() -> ScriptBuf {
    ScriptBuf::new_op_return([1u8; 4])
}

/// A node following the burnchain over the overlay; `mine` makes it mine a block
/// and publish it (`true`) or keep it to itself (`false`).
struct Follower {
    handle: OverlayHandle,
    tip: watch::Receiver<(u64, BlockHash)>,
    mine: mpsc::Sender<bool>,
}

async fn follow(mut node: LocalNode) -> Follower {
    node.handle
        .subscribe(Topic::BurnBlocks, Arc::new(validate_gossip))
        .await
        .unwrap();
    let (mut burn, mut fetched) = BurnNode::new(node.handle.clone());
    let (tip_tx, tip) = watch::channel((0, burn.sync().chain().tip()));
    let (mine, mut mine_rx) = mpsc::channel(8);
    let handle = node.handle.clone();
    tokio::spawn(async move {
        let mut anti_entropy = tokio::time::interval(ANTI_ENTROPY_INTERVAL);
        loop {
            tokio::select! {
                Some(publish) = mine_rx.recv() => {
                    if publish {
                        burn.mine(&reward()).await;
                    } else {
                        burn.mine_unpublished(&reward());
                    }
                }
                _ = anti_entropy.tick() => burn.on_tick(),
                Some(answer) = fetched.recv() => {
                    burn.on_fetched(answer).await;
                }
                event = node.events.next() => match event {
                    Some(event) => {
                        burn.on_event(&event).await;
                    }
                    None => return,
                },
            }
            let chain = burn.sync().chain();
            tip_tx.send_replace((chain.height(), chain.tip()));
        }
    });
    Follower { handle, tip, mine }
}

async fn wait_for_tip(followers: &[&Follower], tip: (u64, BlockHash)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let tips: Vec<_> = followers.iter().map(|f| *f.tip.borrow()).collect();
        if tips.iter().all(|t| *t == tip) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tips {tips:?}, wanted {tip:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_loopback_follow_the_miner_catch_up_and_ignore_a_bad_block() {
    let network = NetworkId::new("burn-test").unwrap();
    let nodes = localnet::start(3, &network, |_| {}).await.unwrap();
    let bootstrap = nodes[0].handle.listen_addrs().to_vec();
    let mut followers = Vec::new();
    for node in nodes {
        followers.push(follow(node).await);
    }
    let handles: Vec<_> = followers.iter().map(|f| f.handle.clone()).collect();
    // Each node meshed with at least one other: gossip then reaches all three.
    localnet::wait_for_mesh(&handles, Topic::BurnBlocks, 1, Duration::from_secs(20))
        .await
        .unwrap();
    for _ in 0..5 {
        followers[0].mine.send(true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let miner_tip = |f: &Follower| *f.tip.borrow();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(miner_tip(&followers[0]).0, 5);
    wait_for_tip(
        &followers.iter().collect::<Vec<_>>(),
        miner_tip(&followers[0]),
    )
    .await;

    // A node that joins now has seen none of it: it fetches on connecting.
    let mut config = OverlayConfig::loopback(network.clone());
    config.bootstrap_peers = bootstrap;
    let (handle, events) = tenure_overlay::spawn(config, NodeKey::generate())
        .await
        .unwrap();
    let late = follow(LocalNode { handle, events }).await;
    wait_for_tip(&[&late], miner_tip(&followers[0])).await;

    // Node 1 publishes a block that claims more than the subsidy: it passes the
    // cheap gossip checks and the chain refuses it everywhere.
    let tip = miner_tip(&followers[0]);
    let greedy = seal(
        tip.1,
        vec![coinbase(
            6,
            &reward(),
            subsidy(6) + bitcoin::Amount::from_sat(1),
        )],
        1_700_000_000,
    );
    followers[1]
        .handle
        .publish(Topic::BurnBlocks, consensus::serialize(&greedy))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for f in followers.iter().chain([&late]) {
        assert_eq!(*f.tip.borrow(), tip);
    }
    // The chain goes on.
    followers[0].mine.send(true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = miner_tip(&followers[0]);
    assert_eq!(next.0, 6);
    wait_for_tip(&followers.iter().chain([&late]).collect::<Vec<_>>(), next).await;

    // A block nobody hears of by gossip: the followers' anti-entropy finds it.
    followers[0].mine.send(false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let unheard = miner_tip(&followers[0]);
    assert_eq!(unheard.0, 7);
    wait_for_tip(
        &followers.iter().chain([&late]).collect::<Vec<_>>(),
        unheard,
    )
    .await;
    let mut all = handles;
    all.push(late.handle.clone());
    localnet::shutdown(&all).await;
}
