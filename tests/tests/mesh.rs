//! A mesh of real nodes on loopback: discovery from one bootstrap address, gossip
//! delivered to everyone, request-response round trips.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use tenure_overlay::{OverlayEvent, Service, Topic};
use tenure_tests::{next_matching, publish_when_ready, start_gossip_mesh, start_nodes, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_form_a_mesh_and_every_node_receives_every_message() {
    let (handles, mut received) = start_gossip_mesh(8, "mesh-test", Topic::Blocks)
        .await
        .unwrap();

    for (i, handle) in handles.iter().enumerate() {
        publish_when_ready(
            handle,
            Topic::Blocks,
            format!("block from {i}").into_bytes(),
        )
        .await
        .unwrap();
    }

    // Every node must receive the 7 messages published by the others.
    let mut by_node: BTreeMap<usize, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let expected = handles.len() * (handles.len() - 1);
    while by_node.values().map(BTreeSet::len).sum::<usize>() < expected {
        let got = tokio::time::timeout(tenure_tests::DEADLINE, received.recv())
            .await
            .expect("gossip did not reach every node")
            .expect("collector closed");
        assert_eq!(got.topic, Topic::Blocks);
        by_node.entry(got.node).or_default().insert(got.data);
    }
    for (node, messages) in &by_node {
        let own = format!("block from {node}").into_bytes();
        assert!(
            !messages.contains(&own),
            "node {node} received its own message"
        );
        assert_eq!(messages.len(), handles.len() - 1);
    }

    // Discovery goes beyond the bootstrap node: the last node to start comes to know
    // more peers than the mesh floor it needed to receive everything.
    wait_for("node 7 to discover peers beyond its mesh", || async {
        handles[7]
            .status()
            .await
            .is_ok_and(|status| status.peers.len() >= 4)
    })
    .await
    .unwrap();
    for handle in &handles {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gets_its_response_through_the_application() {
    let mut nodes = start_nodes(2, "rpc-test").await.unwrap();
    let server = nodes.pop().unwrap();
    let client = nodes.pop().unwrap();
    let (server_handle, mut server_events) = (server.handle, server.events);
    wait_for("the client to see the server", || async {
        client
            .handle
            .status()
            .await
            .is_ok_and(|s| s.peers.len() == 1)
    })
    .await
    .unwrap();

    // The server answers BlockFetch requests by reversing the body.
    let responder = server_handle.clone();
    let served = tokio::spawn(async move {
        let (id, body) = next_matching(&mut server_events, |event| match event {
            OverlayEvent::InboundRequest {
                id,
                service: Service::BlockFetch,
                body,
                ..
            } => Some((id, body)),
            _ => None,
        })
        .await
        .unwrap();
        let reversed: Vec<u8> = body.iter().rev().copied().collect();
        responder.respond(id, Ok(reversed)).await.unwrap();
        server_events
    });

    let answer = client
        .handle
        .request(
            server_handle.peer_id(),
            Service::BlockFetch,
            b"tip?".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(answer, b"?pit");

    // Echo is answered by the overlay itself.
    let echo = client
        .handle
        .request(server_handle.peer_id(), Service::Echo, vec![1, 2, 3])
        .await
        .unwrap();
    assert_eq!(echo, vec![1, 2, 3]);

    let mut server_events = served.await.unwrap();
    // A refusal travels back as a refusal, not as an i/o error.
    let refuser = server_handle.clone();
    let refused = tokio::spawn(async move {
        let id = next_matching(&mut server_events, |event| match event {
            OverlayEvent::InboundRequest { id, .. } => Some(id),
            _ => None,
        })
        .await
        .unwrap();
        refuser
            .respond(id, Err(tenure_overlay::Refusal::NotHeld))
            .await
            .unwrap();
    });
    let err = client
        .handle
        .request(
            server_handle.peer_id(),
            Service::BlockFetch,
            b"nope".to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        tenure_overlay::RequestError::Refused(tenure_overlay::Refusal::NotHeld)
    );
    refused.await.unwrap();

    let metrics = client.handle.metrics().snapshot();
    assert_eq!(metrics.rpc_requests_sent, 3);
    assert!(metrics.transport_bytes_out > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_reach_every_node_by_announcement_and_pull() {
    let (handles, mut received) = start_gossip_mesh(6, "bodies-test", Topic::Blocks)
        .await
        .unwrap();

    // One body well above the announcement threshold from node 0, one from node 3.
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let medium: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    publish_when_ready(&handles[0], Topic::Blocks, big.clone())
        .await
        .unwrap();
    publish_when_ready(&handles[3], Topic::Blocks, medium.clone())
        .await
        .unwrap();

    let mut got: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
    for _ in 0..2 * (handles.len() - 1) {
        let message = tokio::time::timeout(tenure_tests::DEADLINE, received.recv())
            .await
            .expect("a large message did not reach every node")
            .expect("collector closed");
        got.entry(message.node).or_default().push(message.data);
    }
    for (node, messages) in &got {
        let expected = match node {
            0 => vec![&medium],
            3 => vec![&big],
            _ => vec![&big, &medium],
        };
        assert_eq!(messages.len(), expected.len(), "node {node}");
        for body in expected {
            assert!(messages.contains(body), "node {node} lacks a body");
        }
    }

    // Each node pulled each body it did not publish exactly once.
    let mut fetched = 0;
    for handle in &handles {
        let m = handle.metrics().snapshot();
        assert_eq!(m.gossip_body_failures, 0);
        fetched += m.gossip_bodies_fetched;
    }
    assert_eq!(fetched, 2 * (handles.len() as u64 - 1));
}

/// Item 9 of the review: a peer that forwards announcements it never fetched, and
/// announces bodies it does not keep, must not keep any large message from an honest
/// node, nor fill the honest nodes' pending fetches; and it is penalised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withholding_peers_cannot_keep_a_large_message_from_any_honest_node() {
    const NODES: usize = 8;
    const WITHHOLDERS: [usize; 2] = [1, 2];
    let started = std::sync::atomic::AtomicUsize::new(0);
    let nodes = tenure_overlay::localnet::start(
        NODES,
        &tenure_overlay::NetworkId::new("withheld-bodies").unwrap(),
        |config| {
            let index = started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            config.gossip.withhold_bodies = WITHHOLDERS.contains(&index);
        },
    )
    .await
    .unwrap();
    for node in &nodes {
        node.handle
            .subscribe(Topic::Blocks, tenure_overlay::accept_all())
            .await
            .unwrap();
    }
    let (handles, mut received) = tenure_tests::collect_gossip(nodes);
    tenure_tests::wait_for_mesh(&handles, Topic::Blocks, 3)
        .await
        .unwrap();
    let honest: Vec<usize> = (0..NODES).filter(|i| !WITHHOLDERS.contains(i)).collect();

    let body = |publisher: usize, k: usize| -> Vec<u8> {
        let mut data = vec![publisher as u8];
        data.extend((k as u16).to_le_bytes());
        data.extend((0..40_000u32).map(|i| (i % 241) as u8 ^ k as u8));
        data
    };
    let mut published = Vec::new();
    for k in 0..4 {
        for publisher in [0, 3, 5] {
            publish_when_ready(&handles[publisher], Topic::Blocks, body(publisher, k))
                .await
                .unwrap();
            published.push((publisher, body(publisher, k)));
        }
    }
    // A withholder announces hundreds of bodies nobody can fetch...
    for k in 0..300 {
        publish_when_ready(&handles[WITHHOLDERS[0]], Topic::Blocks, body(100, k))
            .await
            .unwrap();
    }
    // ...and the honest nodes' messages still get through.
    for k in 4..8 {
        for publisher in [4, 6] {
            publish_when_ready(&handles[publisher], Topic::Blocks, body(publisher, k))
                .await
                .unwrap();
            published.push((publisher, body(publisher, k)));
        }
    }

    let mut missing: BTreeSet<(usize, usize)> = BTreeSet::new();
    for &node in &honest {
        for (index, (publisher, _)) in published.iter().enumerate() {
            if *publisher != node {
                missing.insert((node, index));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + tenure_tests::DEADLINE;
    while !missing.is_empty() {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, received.recv()).await else {
            break;
        };
        assert!(
            !WITHHOLDERS.contains(&message.node),
            "a withholder fetched nothing, so delivers nothing"
        );
        assert_ne!(
            message.data[0], 100,
            "a withheld body reached node {}",
            message.node
        );
        if let Some(index) = published.iter().position(|(_, data)| *data == message.data) {
            missing.remove(&(message.node, index));
        }
    }
    assert!(
        missing.is_empty(),
        "(node, message) never delivered: {missing:?}"
    );

    // The withholders were named: honest nodes counted bodies announced and not served.
    let withheld: u64 = honest
        .iter()
        .map(|&i| handles[i].metrics().snapshot().gossip_bodies_withheld)
        .sum();
    assert!(withheld > 0, "no withholding was noticed");
}

/// Issue 13: a federation's members keep a direct connection to each other however
/// small the peer cap. Nodes 1–5 keep each other with a cap of 2 peers: each stays
/// connected to the four others past the prune grace, while node 0, which keeps no
/// one, is still held to the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_peers_stay_connected_past_the_peer_cap_and_the_cap_still_holds_for_others() {
    let nodes = tenure_overlay::localnet::start(
        6,
        &tenure_overlay::NetworkId::new("kept-test").unwrap(),
        |config| {
            config.max_peers = 2;
            config.target_peers = 2;
            config.discovery_interval = std::time::Duration::from_millis(200);
        },
    )
    .await
    .unwrap();
    let handles: Vec<_> = nodes.iter().map(|n| n.handle.clone()).collect();
    let roster: Vec<_> = handles[1..].iter().map(|h| h.peer_id()).collect();
    for handle in &handles[1..] {
        handle.keep_connected(roster.clone()).await;
    }
    async fn connected_to_roster(
        handle: tenure_overlay::OverlayHandle,
        roster: Vec<tenure_overlay::PeerId>,
    ) -> bool {
        let me = handle.peer_id();
        let Ok(status) = handle.status().await else {
            return false;
        };
        let peers: BTreeSet<String> = status.peers.iter().map(|p| p.peer_id.clone()).collect();
        roster
            .iter()
            .filter(|p| **p != me)
            .all(|p| peers.contains(&p.to_string()))
    }
    for handle in &handles[1..] {
        wait_for("a member to reach every other member", || {
            connected_to_roster(handle.clone(), roster.clone())
        })
        .await
        .unwrap();
    }
    // Past the prune grace (5 s) and many prune rounds: still all connected.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    for handle in &handles[1..] {
        assert!(
            connected_to_roster(handle.clone(), roster.clone()).await,
            "a kept peer was pruned"
        );
    }
    wait_for("node 0 to be held to the cap", || async {
        handles[0]
            .status()
            .await
            .is_ok_and(|status| status.peers.len() <= 2)
    })
    .await
    .unwrap();
    for handle in &handles {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_loses_every_peer_refuses_new_ones_and_rejoins_when_let_back() {
    let (handles, mut received) = start_gossip_mesh(4, "isolate-test", Topic::Blocks)
        .await
        .unwrap();
    wait_for("every node to see the three others", || async {
        for handle in &handles {
            if !handle.status().await.is_ok_and(|s| s.peers.len() == 3) {
                return false;
            }
        }
        true
    })
    .await
    .unwrap();
    let cut = &handles[3];
    cut.isolate(true).await;
    wait_for("the cut node to lose every peer", || async {
        cut.status().await.is_ok_and(|s| s.peers.is_empty())
    })
    .await
    .unwrap();
    // The others dial it again (discovery, and it is their bootstrap's neighbour);
    // while it is cut off, none gets through, and its gossip reaches nobody.
    let addr = cut.listen_addrs()[0].clone();
    let _ = handles[0].dial(addr).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(cut.status().await.unwrap().peers.is_empty());
    assert!(
        cut.publish(Topic::Blocks, b"from the cut node".to_vec())
            .await
            .is_err()
    );
    while let Ok(got) = received.try_recv() {
        assert_ne!(got.data, b"from the cut node".to_vec());
    }

    cut.isolate(false).await;
    wait_for("the node to rejoin", || async {
        cut.status().await.is_ok_and(|s| !s.peers.is_empty())
    })
    .await
    .unwrap();
    publish_when_ready(cut, Topic::Blocks, b"back".to_vec())
        .await
        .unwrap();
    let got = tokio::time::timeout(tenure_tests::DEADLINE, async {
        loop {
            let got = received.recv().await.expect("collector closed");
            if got.data == b"back" {
                return got;
            }
        }
    })
    .await
    .expect("the rejoined node's gossip reached no one");
    assert_ne!(got.node, 3);
    for handle in &handles {
        handle.shutdown().await;
    }
}
