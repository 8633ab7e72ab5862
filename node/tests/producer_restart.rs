//! A producer stopped and started again from its chain store: four producers, each
//! storing every block it applies on sled. Producer 3 is stopped; the other three
//! (81 of the 100 shares) go on producing past what any producer keeps in memory. The
//! store reopened from its files holds exactly the chain producer 3 had applied, and
//! producer 3 started from it resumes at that tip, fetches the blocks it missed by
//! request-response (served from the others' stores, being older than their memory),
//! and is back on the common tip.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use tenure_chain::store::ChainStore;
use tenure_node::testnet::producers::{self, ProducerSet};
use tenure_overlay::{NetworkId, localnet};

const DEADLINE: Duration = Duration::from_secs(120);

/// More than a producer keeps in memory (64 blocks) plus one catch-up batch.
const MISSED: u64 = 90;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_producer_resumes_from_its_chain_store_and_catches_up_from_the_others_stores() {
    let network = NetworkId::new("producer-restart").unwrap();
    let nodes = localnet::start(4, &network, |_| {}).await.unwrap();
    let (handles, events) = producers::producers_only(nodes);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores = dirs
        .iter()
        .map(|d| ChainStore::open(d.path()).unwrap())
        .collect();
    let set = ProducerSet::start_with_stores(&handles, events, stores)
        .await
        .unwrap();
    wait_for("no first blocks", || {
        set.statuses().iter().all(|s| s.height >= 3)
    })
    .await;

    let mut stopped = set.running()[3]
        .stop()
        .await
        .expect("producer 3 was running");
    let stopped_at = stopped.producer.state().clone();
    drop(stopped.store.take());
    // Down, it hears nothing: what reaches its streams meanwhile is dropped.
    let (wake, mut woken) = tokio::sync::oneshot::channel::<()>();
    let down = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut woken => return stopped,
                _ = stopped.streams.blocks.next() => {}
                _ = stopped.streams.transactions.next() => {}
            }
        }
    });
    let others: Vec<_> = set.running()[..3].to_vec();
    wait_for("the three left stopped producing", || {
        others
            .iter()
            .all(|p| p.status().height >= stopped_at.height + MISSED)
    })
    .await;

    wake.send(()).unwrap();
    let stopped = down.await.unwrap();
    // The files hold what producer 3 had applied: its tip, its accounts.
    let store = ChainStore::open(dirs[3].path()).unwrap();
    assert_eq!(store.state().tip, stopped_at.tip);
    assert_eq!(store.state().accounts, stopped_at.accounts);
    let restarted = stopped.resume(store).await.unwrap();
    assert_eq!(restarted.status().height, 0, "no block applied yet");
    assert_eq!(restarted.state().height, stopped_at.height);

    // Back on the common tip, with every block it missed applied.
    let target = others.iter().map(|p| p.status().height).max().unwrap() + 5;
    wait_for("the restarted producer never caught up", || {
        restarted.status().height >= target
    })
    .await;
    let blocks = restarted.status().blocks;
    assert!(
        blocks >= target - stopped_at.height,
        "{blocks} blocks applied since the restart, {} were missing",
        target - stopped_at.height
    );
    wait_for("the tips never agreed", || {
        let tips: Vec<_> = others
            .iter()
            .chain([&restarted])
            .map(|p| p.state().tip)
            .collect();
        tips.windows(2).all(|w| w[0] == w[1])
    })
    .await;

    // Its store followed it: reopened after a second stop, it is at its tip.
    let mut stopped = restarted.stop().await.unwrap();
    let tip = stopped.producer.state().clone();
    drop(stopped.store.take());
    let store = ChainStore::open(dirs[3].path()).unwrap();
    assert_eq!(store.state().tip, tip.tip);
    assert!(store.state().height >= target);
}

/// Waits until `done`, failing with `what` past the deadline.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < DEADLINE, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
