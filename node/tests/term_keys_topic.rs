//! A node that produces nothing follows the chain from public data, under attack: a
//! peer with no producer key floods the term-keys and blocks topics with junk, a
//! stranger's validly signed certificate, a producer's name on a forged signature and
//! a block of a term whose key the follower has not accepted. The certificates and
//! junk are rejected before they are forwarded and their sender penalised; the block
//! is dropped (the blocks validator checks the group signature under the accepted
//! key). Meanwhile the producers' real certificates make the follower accept term 3's
//! key, and it validates and applies their blocks; two of them are never gossiped, and
//! it fetches them from the peer that published the others; the last is never
//! gossiped either, and it asks for what follows its tip once gossip is quiet.
//!
//! The burnchain is real (producers enroll on the embedded regtest chain and the
//! follower's scan chooses them); the overlay is real (three nodes on loopback).

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use tenure_chain::{
    block::{
        Block, ChainState,
        build::{self, ProducerGroup},
    },
    produce::{
        PRODUCER_MESSAGE_VERSION, ProducerBody, ProducerMessage,
        follower::BlockBatch,
        term_key::{KeyCertificate, TermKeyRecord},
    },
};
use tenure_node::{follower, testnet::producers::NETWORK};
use tenure_overlay::{NetworkId, OverlayEvent, Topic, localnet};
use tokio::sync::watch;

mod enrolled;

use enrolled::{DEADLINE, burnchain, keypair, publish};

fn block_message(block: tenure_chain::block::Block) -> Vec<u8> {
    ProducerMessage {
        version: PRODUCER_MESSAGE_VERSION,
        term: block.header.term,
        body: ProducerBody::Block(block),
    }
    .to_bytes()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_accepts_the_producers_term_key_and_their_blocks_while_a_keyless_peer_gets_nothing_through()
 {
    let scan = burnchain();
    assert_eq!(scan.term(), Some(2));
    let plan = scan.plan(3).unwrap();
    let (_scans_tx, scans) = watch::channel(Arc::new(scan.clone()));

    let network = NetworkId::new("term-keys-attack").unwrap();
    let mut nodes = localnet::start(3, &network, |_| {}).await.unwrap();
    let attacker = nodes.pop().unwrap();
    let watcher = nodes.pop().unwrap();
    let relay = nodes.pop().unwrap();
    // The relay stands in for the producers' nodes: it forwards what they publish.
    relay
        .handle
        .subscribe(
            Topic::TermKeys,
            follower::validate_certificate(NETWORK, scans.clone()),
        )
        .await
        .unwrap();
    for topic in [Topic::TermKeys, Topic::Blocks] {
        attacker
            .handle
            .subscribe(topic, tenure_overlay::accept_all())
            .await
            .unwrap();
    }
    let handles = [relay.handle.clone(), watcher.handle.clone()];
    let (relay_handle, attacker_handle) = (relay.handle.clone(), attacker.handle.clone());
    let mut attacker_events = attacker.events;
    tokio::spawn(async move { while attacker_events.next().await.is_some() {} });
    // The relay answers a follower's request for blocks as a producer does: with the
    // blocks it holds from the height asked.
    let served: Arc<std::sync::Mutex<Vec<Block>>> = Arc::default();
    let mut relay_events = relay.events;
    let serving = served.clone();
    let answering = relay.handle.clone();
    tokio::spawn(async move {
        while let Some(event) = relay_events.next().await {
            if let OverlayEvent::InboundRequest { id, body, .. } = event {
                let Ok(ProducerMessage {
                    body: ProducerBody::GetBlocks { from },
                    ..
                }) = ProducerMessage::from_bytes(&body)
                else {
                    continue;
                };
                let blocks: Vec<Block> = serving
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|b| b.header.height >= from)
                    .cloned()
                    .collect();
                let _ = answering
                    .respond(
                        id,
                        Ok(BlockBatch::new(blocks, Vec::new()).to_bytes().unwrap()),
                    )
                    .await;
            }
        }
    });
    let (follower_events, mut rest) = watcher.events.split(1024, follower::wants);
    tokio::spawn(async move { while rest.next().await.is_some() {} });
    let status = follower::spawn(NETWORK, &watcher.handle, follower_events, scans.clone())
        .await
        .unwrap();

    // Term 3's key, as its producers (keys 1 to 4) made it.
    let record = TermKeyRecord::new(
        3,
        plan.seed,
        &BTreeSet::new(),
        [0; 32],
        &ProducerGroup::shared().public,
    )
    .unwrap();
    let context = record.context(&plan, scan.consensus_block(2)).unwrap();

    // The attack: junk, a stranger's validly signed certificate, a producer's name on
    // the stranger's signature, and a block before its term's key is accepted.
    let stranger = keypair(77);
    let signed_by_stranger = KeyCertificate::sign(NETWORK, record.clone(), &stranger);
    let mut forged = signed_by_stranger.clone();
    forged.member = tenure_frost_fed::MemberId::from(keypair(4).x_only_public_key().0);
    let (first, _) = build::term_start(
        &ChainState::default(),
        &context,
        Vec::new(),
        ProducerGroup::shared(),
        None,
        NETWORK,
    )
    .unwrap();
    // The stranger's certificate first: a validator that checked signatures alone
    // would forward it. After a rejection or two the attacker's score cuts it off, so
    // later messages may not be looked at.
    for _ in 0..5 {
        publish(
            &attacker_handle,
            Topic::TermKeys,
            KeyCertificate::sign(NETWORK, record.clone(), &stranger)
                .to_bytes()
                .unwrap(),
        )
        .await;
    }
    publish(
        &attacker_handle,
        Topic::TermKeys,
        forged.to_bytes().unwrap(),
    )
    .await;
    publish(&attacker_handle, Topic::TermKeys, b"junk".to_vec()).await;
    publish(
        &attacker_handle,
        Topic::Blocks,
        block_message(first.clone()),
    )
    .await;
    let started = Instant::now();
    while handles
        .iter()
        .map(|h| h.metrics().snapshot().gossip_rejected)
        .sum::<u64>()
        < 2
    {
        assert!(
            started.elapsed() < DEADLINE,
            "the attack was not rejected: {:?}",
            handles
                .iter()
                .map(|h| h.metrics().snapshot())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing the attacker sent reached the follower.
    let seen = status.borrow().clone();
    assert!(seen.terms_certified.is_empty(), "{seen:?}");
    assert_eq!(seen.height, 0);
    assert_eq!(
        seen.refused_certificates, 0,
        "an attacker's certificate was delivered"
    );
    let penalties: u64 = handles
        .iter()
        .map(|h| h.metrics().snapshot().peer_penalties)
        .sum();
    assert!(penalties >= 1, "the attacker was never penalised");

    // The producers' certificates and their blocks, through the relay.
    for k in 1..=4u8 {
        let certificate = KeyCertificate::sign(NETWORK, record.clone(), &keypair(k));
        publish(
            &relay_handle,
            Topic::TermKeys,
            certificate.to_bytes().unwrap(),
        )
        .await;
    }
    let mut state = ChainState::default();
    let mut tip = [0; 32];
    for n in 0..7 {
        let (block, after) = if n == 0 {
            (first.clone(), {
                let changes = state.validate(&first, &context, NETWORK).unwrap();
                let mut s = state.clone();
                s.apply(&changes);
                s
            })
        } else {
            build::block(
                &state,
                &context,
                3,
                Vec::new(),
                ProducerGroup::shared(),
                None,
            )
            .unwrap()
        };
        tip = block.header.hash();
        served.lock().unwrap().push(block.clone());
        // Blocks 4 and 5 are never gossiped: the follower must ask for them when block
        // 6 shows the gap. The last, 7, is never gossiped either: with no gap to see,
        // the follower asks for what follows its tip once gossip has been quiet.
        if ![3, 4, 6].contains(&n) {
            publish(&relay_handle, Topic::Blocks, block_message(block)).await;
        }
        state = after;
    }
    let started = Instant::now();
    while status.borrow().tip != tip {
        assert!(
            started.elapsed() < DEADLINE,
            "the follower never reached the producers' tip: {:?}",
            status.borrow()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed = status.borrow().clone();
    assert_eq!(followed.terms_certified, vec![3]);
    assert_eq!(followed.height, 7);
    assert_eq!(followed.refused_blocks, 0);
    localnet::shutdown(&[relay_handle, watcher.handle, attacker_handle]).await;
}
