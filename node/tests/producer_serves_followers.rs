//! A producer answers a follower's request for blocks: a node that is no producer asks
//! a running producer for the blocks from height 1 and gets them in the response, a
//! chain linked parent to child up to the producer's tip. Any other producer message
//! from it is refused.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use tenure_chain::produce::{
    PRODUCER_MESSAGE_VERSION, ProducerBody, ProducerMessage, follower::BlockBatch,
};
use tenure_node::testnet::producers::{self, ProducerSet};
use tenure_overlay::{NetworkId, Service, localnet};

const DEADLINE: Duration = Duration::from_secs(90);

fn ask(body: ProducerBody) -> Vec<u8> {
    ProducerMessage {
        version: PRODUCER_MESSAGE_VERSION,
        term: 1,
        body,
    }
    .to_bytes()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_serves_a_follower_the_blocks_it_asks_for_and_nothing_else() {
    let network = NetworkId::new("serve-followers").unwrap();
    let mut nodes = localnet::start(4, &network, |_| {}).await.unwrap();
    let outsider = nodes.pop().unwrap();
    let mut outsider_events = outsider.events;
    tokio::spawn(async move { while outsider_events.next().await.is_some() {} });
    let (handles, events) = producers::producers_only(nodes);
    let set = ProducerSet::start(&handles, events).await.unwrap();
    let started = Instant::now();
    while set.statuses()[0].height < 4 {
        assert!(started.elapsed() < DEADLINE, "no blocks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = handles[0].peer_id();
    let answer = outsider
        .handle
        .request(
            producer,
            Service::ProducerDirect,
            ask(ProducerBody::GetBlocks { from: 1 }),
        )
        .await
        .unwrap();
    let batch = BlockBatch::from_bytes(&answer).unwrap();
    assert!(batch.blocks.len() >= 4, "{} blocks", batch.blocks.len());
    for (i, pair) in batch.blocks.windows(2).enumerate() {
        assert_eq!(pair[0].header.height, i as u64 + 1);
        assert_eq!(pair[1].header.parent, pair[0].header.hash());
    }
    // Anything else a non-producer sends directly is refused.
    let refused = outsider
        .handle
        .request(
            producer,
            Service::ProducerDirect,
            ask(ProducerBody::Block(batch.blocks[0].clone())),
        )
        .await;
    assert!(refused.is_err(), "a non-producer's block was taken");
    localnet::shutdown(&handles).await;
}
