//! Peers on another network are refused at hello and kept away.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tenure_overlay::{HelloError, OverlayEvent};
use tenure_tests::{config, next_matching, start_node, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_on_another_network_is_refused() {
    let mut alpha = start_node(config("alpha", &[]).unwrap()).await.unwrap();
    let bootstrap = alpha.handle.listen_addrs().to_vec();
    let mut beta = start_node(config("beta", &bootstrap).unwrap())
        .await
        .unwrap();

    // Both sides learn the other is on another network.
    let refused_by_alpha = next_matching(&mut alpha.events, |event| match event {
        OverlayEvent::PeerRefused { peer, reason } => Some((peer, reason)),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(refused_by_alpha.0, beta.handle.peer_id());
    assert!(matches!(
        refused_by_alpha.1,
        HelloError::NetworkMismatch { .. }
    ));
    let refused_by_beta = next_matching(&mut beta.events, |event| match event {
        OverlayEvent::PeerRefused { peer, .. } => Some(peer),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(refused_by_beta, alpha.handle.peer_id());

    // Neither counts the other as a peer, and the connection is gone.
    wait_for("the mismatched connection to close", || async {
        let a = alpha.handle.status().await.unwrap();
        let b = beta.handle.status().await.unwrap();
        a.peers.is_empty() && b.peers.is_empty() && a.banned == 1
    })
    .await
    .unwrap();
    assert_eq!(alpha.handle.metrics().snapshot().peers_refused, 1);
    // Refusing another network is not a penalty.
    assert_eq!(alpha.handle.metrics().snapshot().peer_penalties, 0);
}
