//! Following the embedded burnchain over real loopback libp2p nodes: the node's
//! driver carries `tenure_chain::burnchain::follow` by gossip and fetches, and relays
//! burn transactions to the miner by `tenure_chain::burnchain::relay`'s rules.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::{sync::Arc, time::Duration};

use bitcoin::{BlockHash, ScriptBuf, Transaction, Txid, consensus};
use tenure_chain::burnchain::regtest::{RegtestChain, coinbase, seal, subsidy};
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
    /// Mines a block paying this script, and publishes it.
    mine_to: mpsc::Sender<ScriptBuf>,
    /// Takes a transaction into the node's mempool and relays it.
    relay: mpsc::Sender<Transaction>,
    /// The node's chain, and its mempool's transactions.
    chain: watch::Receiver<(Arc<RegtestChain>, Vec<Txid>)>,
}

async fn follow(mut node: LocalNode) -> Follower {
    node.handle
        .subscribe(Topic::BurnBlocks, Arc::new(validate_gossip))
        .await
        .unwrap();
    let (mut burn, mut fetched) = BurnNode::new(node.handle.clone());
    burn.relay_transactions().await.unwrap();
    let (tip_tx, tip) = watch::channel((0, burn.sync().chain().tip()));
    let (chain_tx, chain) = watch::channel((Arc::new(burn.sync().chain().clone()), Vec::new()));
    let (mine, mut mine_rx) = mpsc::channel(8);
    let (mine_to, mut mine_to_rx) = mpsc::channel::<ScriptBuf>(128);
    let (relay, mut relay_rx) = mpsc::channel::<Transaction>(8);
    let handle = node.handle.clone();
    tokio::spawn(async move {
        let mut anti_entropy = tokio::time::interval(ANTI_ENTROPY_INTERVAL);
        loop {
            tokio::select! {
                Some(script) = mine_to_rx.recv() => {
                    burn.mine(&script).await;
                }
                Some(tx) = relay_rx.recv() => burn.relay(tx).await,
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
            let mempool = chain
                .mempool()
                .iter()
                .map(Transaction::compute_txid)
                .collect();
            chain_tx.send_replace((Arc::new(chain.clone()), mempool));
        }
    });
    Follower {
        handle,
        tip,
        mine,
        mine_to,
        relay,
        chain,
    }
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

/// Waits until `check` holds for `follower`'s chain and mempool.
async fn wait_for_chain(
    follower: &Follower,
    what: &str,
    check: impl Fn(&RegtestChain, &[Txid]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        {
            let (chain, mempool) = &*follower.chain.borrow();
            if check(chain, mempool) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burn_transaction_reaches_the_miner_by_gossip_and_forgeries_reach_no_mempool() {
    use bitcoin::{
        Amount, TxOut,
        secp256k1::{Keypair, SECP256K1, SecretKey},
    };
    use tenure_chain::burnchain::regtest::{COINBASE_MATURITY, Wallet};

    let network = NetworkId::new("burn-relay").unwrap();
    let mut nodes = localnet::start(4, &network, |_| {}).await.unwrap();
    let attacker = nodes.pop().unwrap();
    attacker
        .handle
        .subscribe(Topic::BurnTransactions, tenure_overlay::accept_all())
        .await
        .unwrap();
    let mut attacker_events = attacker.events;
    tokio::spawn(async move { while attacker_events.next().await.is_some() {} });
    let mut followers = Vec::new();
    for node in nodes {
        followers.push(follow(node).await);
    }
    let handles: Vec<_> = followers.iter().map(|f| f.handle.clone()).collect();
    localnet::wait_for_mesh(
        &handles,
        Topic::BurnTransactions,
        1,
        Duration::from_secs(20),
    )
    .await
    .unwrap();

    // Node 0 mines; Alice's coinbase matures.
    let key =
        |n: u8| Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap());
    let alice = Wallet::new(key(1));
    let bob = Wallet::new(key(2));
    followers[0].mine_to.send(alice.script()).await.unwrap();
    for _ in 0..COINBASE_MATURITY {
        followers[0].mine_to.send(reward()).await.unwrap();
    }
    wait_for_chain(&followers[1], "the premine at node 1", |c, _| {
        alice.balance(c) > Amount::ZERO
    })
    .await;
    let chain = followers[1].chain.borrow().0.clone();
    let pay = |to: &Wallet, sat: u64| {
        alice
            .pay(
                &chain,
                vec![TxOut {
                    value: Amount::from_sat(sat),
                    script_pubkey: to.script(),
                }],
                Amount::from_sat(1_000),
            )
            .unwrap()
    };
    let payment = pay(&bob, 50_000);
    let double_spend = pay(&bob, 60_000);
    let mut forged = pay(&bob, 70_000);
    forged.input[0].witness = bitcoin::Witness::from_slice(&[vec![7u8; 64]]);
    let mut invented = pay(&bob, 80_000);
    invented.input[0].previous_output.vout = 99;

    // The attack: junk, a forged signature on Alice's coin, a coin nobody has.
    for bytes in [
        b"not a transaction".to_vec(),
        consensus::serialize(&forged),
        consensus::serialize(&invented),
    ] {
        attacker
            .handle
            .publish(Topic::BurnTransactions, bytes)
            .await
            .unwrap();
    }
    // Node 1 relays Alice's payment; it reaches the miner's mempool. Then a second
    // spend of the same coin (validly signed) is published: first seen wins.
    followers[1].relay.send(payment.clone()).await.unwrap();
    let paid = payment.compute_txid();
    wait_for_chain(
        &followers[0],
        "the payment in the miner's mempool",
        |_, m| m.contains(&paid),
    )
    .await;
    attacker
        .handle
        .publish(Topic::BurnTransactions, consensus::serialize(&double_spend))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // No forgery and no double spend in any mempool. (The payment itself may be
    // missing at a node whose chain lagged when it came by: a spend of a coin it did
    // not know yet is dropped there, without blame, and gossip does not send it twice.
    // Under load that happened; the miner has it, which is what counts.)
    for f in &followers {
        let (_, mempool) = &*f.chain.borrow();
        assert!(
            mempool.iter().all(|t| *t == paid),
            "mempool of {}: {mempool:?}",
            f.handle.peer_id()
        );
    }
    assert_eq!(followers[0].chain.borrow().1, vec![paid]);
    let penalties: u64 = handles
        .iter()
        .map(|h| h.metrics().snapshot().peer_penalties)
        .sum();
    assert!(penalties >= 1, "the attacker was never penalised");

    // The miner mines it; everyone sees Bob paid.
    followers[0].mine.send(true).await.unwrap();
    for f in &followers {
        wait_for_chain(f, "Bob paid", |c, m| {
            bob.balance(c) == Amount::from_sat(50_000) && m.is_empty()
        })
        .await;
    }
    let mut all = handles;
    all.push(attacker.handle.clone());
    localnet::shutdown(&all).await;
}
