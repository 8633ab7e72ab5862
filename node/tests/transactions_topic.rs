//! The transactions topic under attack: a peer with no key floods it with forged
//! transfers (valid bytes, signatures that do not verify) and junk. Every producer's
//! node rejects them before forwarding, penalises the peer that sent them, and none
//! reaches a mempool; meanwhile a valid transfer handed to one producer reaches every
//! producer by gossip and every producer applies a block holding it.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use tenure_chain::block::{AccountId, Transfer, Tx};
use tenure_node::testnet::producers::{self, NETWORK, ProducerSet};
use tenure_overlay::{NetworkId, Topic, localnet};

const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_transfers_are_rejected_and_their_sender_penalised_while_valid_ones_reach_every_producer()
 {
    let network = NetworkId::new("transactions-attack").unwrap();
    // Four producers and one attacker, all meshed.
    let mut nodes = localnet::start(5, &network, |_| {}).await.unwrap();
    let attacker = nodes.pop().unwrap();
    let (handles, events) = producers::producers_only(nodes);
    let mut attacker_events = attacker.events;
    tokio::spawn(async move { while attacker_events.next().await.is_some() {} });
    attacker
        .handle
        .subscribe(Topic::Transactions, tenure_overlay::accept_all())
        .await
        .unwrap();
    let set = ProducerSet::start(&handles, events).await.unwrap();
    let started = Instant::now();
    while !set.statuses().iter().all(|s| s.height >= 1) {
        assert!(started.elapsed() < DEADLINE, "no first block");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The flood: transfers "from" producer 0's funded account, signed by another key,
    // and bytes that are no transfer at all.
    let victim_account = AccountId::of(&set.keys[0].x_only_public_key().0);
    let stranger = Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[5; 32]).unwrap());
    let recipient = AccountId::of(&stranger.x_only_public_key().0);
    let flood = tokio::spawn({
        let attacker = attacker.handle.clone();
        async move {
            for n in 0..60u64 {
                let mut forged = Transfer::sign(NETWORK, &stranger, recipient, 1_000, 50, n);
                forged.from = victim_account;
                let bytes = Tx::Transfer(forged).to_bytes().unwrap();
                let _ = attacker.publish(Topic::Transactions, bytes).await;
                let _ = attacker
                    .publish(Topic::Transactions, format!("junk {n}").into_bytes())
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // Meanwhile a valid transfer, handed to producer 3 only.
    let valid = Transfer::sign(NETWORK, &set.keys[0], recipient, 7_000, 5, 0);
    let valid_id = Tx::Transfer(valid.clone()).id();
    let mut applied: Vec<_> = set.running().iter().map(|p| p.applied()).collect();
    assert!(set.running()[3].broadcast(valid).await);
    for (index, receiver) in applied.iter_mut().enumerate() {
        let wait = async {
            loop {
                let block = receiver.recv().await.unwrap();
                if block.txs.contains(&valid_id) {
                    return;
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("producer {index} never applied the valid transfer"));
    }
    flood.await.unwrap();

    // No forged transfer was applied anywhere: the victim account paid only the valid one.
    for producer in set.running() {
        let state = producer.state();
        assert_eq!(
            state.accounts.get(&victim_account).map(|a| a.nonce),
            Some(1),
            "the victim account's nonce moved past the one valid transfer"
        );
        assert_eq!(
            state.accounts.get(&recipient).map(|a| a.balance),
            Some(7_000)
        );
    }
    // The attacker's neighbours rejected its messages and penalised it (after a few,
    // scoring and the ban cut it off, so not every one of its messages was looked at).
    let rejected: u64 = handles
        .iter()
        .map(|h| h.metrics().snapshot().gossip_rejected)
        .sum();
    let penalties: u64 = handles
        .iter()
        .map(|h| h.metrics().snapshot().peer_penalties)
        .sum();
    assert!(rejected >= 1, "no forged message was rejected");
    assert!(penalties >= 1, "the flooding peer was never penalised");
}
