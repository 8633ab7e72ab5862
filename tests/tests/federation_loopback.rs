//! The federation over real loopback libp2p nodes: the node's driver carries the
//! sans-IO member's frames by request-response, or by the gossip relay.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::time::Duration;

use tenure_frost_fed::{sign::verify_bip340, store::KeyStore};
use tenure_node::federation::local::LocalFederation;
use tenure_overlay::{Refusal, RequestError, Service, Topic};

/// DKG and signing over real loopback libp2p nodes: four members make a key, sign
/// twice (once with a member hung), and every signature verifies as BIP340.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_make_a_key_and_sign_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let federation = LocalFederation::start(4, "fed-loopback-test", Some(dir.path()))
        .await
        .unwrap();
    let keys = federation.dkg(100, 67).await.unwrap();
    assert_eq!(keys.len(), 4);
    let key = keys[0].clone();
    assert!(keys.iter().all(|k| k.public == key.public));
    key.check_certificates().unwrap();

    let record = federation.members[1]
        .sign(b"block 1".to_vec())
        .await
        .unwrap();
    verify_bip340(&key.public, &record.message, &record.signature).unwrap();
    let signers = record.verify(&key.public, &key.roster).unwrap();
    assert!(signers.weight >= 67);

    // With one member hung, the other three (75 shares) still sign.
    federation.members[3]
        .crash_for(Duration::from_secs(5))
        .await;
    let record = federation.members[0]
        .sign(b"block 2".to_vec())
        .await
        .unwrap();
    let signers = record.verify(&key.public, &key.roster).unwrap();
    assert!(!signers.members.contains(&federation.ids[3]));
    federation.stop().await;

    // Each member's key share is on disk: a restart reloads it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, key) in keys.iter().enumerate().take(3) {
        let store = KeyStore::open(&dir.path().join(i.to_string())).unwrap();
        assert_eq!(store.current().unwrap().unwrap(), **key);
    }
}

/// Frames between members that are not connected go by the gossip relay: with
/// every member relaying, the federation still signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_sign_through_the_gossip_relay() {
    let federation = LocalFederation::start(3, "fed-relay-test", None)
        .await
        .unwrap();
    let keys = federation.dkg(100, 67).await.unwrap();
    // Give the relay topic's mesh a moment after the subscriptions.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for member in &federation.members {
        member.relay_only(true).await;
    }
    let relayed_before: u64 = federation
        .overlays
        .iter()
        .map(|o| o.metrics().snapshot().gossip_published)
        .sum();
    let record = federation.members[2]
        .sign(b"relayed".to_vec())
        .await
        .unwrap();
    verify_bip340(&keys[0].public, &record.message, &record.signature).unwrap();
    let relayed: u64 = federation
        .overlays
        .iter()
        .map(|o| o.metrics().snapshot().gossip_published)
        .sum();
    assert!(relayed > relayed_before, "nothing went by the relay");
    federation.stop().await;
}

/// A member restarted from its keys and key store only (a new process's state: new
/// channels, sequence numbers from 1, a new overlay node with the same identity)
/// signs at once, as the requester and as a signer. Its first messages were acked
/// as duplicates of its previous life's and never delivered before sequence
/// numbers belonged to an incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_from_its_key_store_signs_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut federation = LocalFederation::start(4, "fed-restart-test", Some(dir.path()))
        .await
        .unwrap();
    let keys = federation.dkg(100, 67).await.unwrap();
    let key = keys[0].clone();
    // Traffic before the restart, so the others hold sequence numbers from member 3.
    for i in 0..3u8 {
        let record = federation.members[3].sign(vec![i; 8]).await.unwrap();
        verify_bip340(&key.public, &record.message, &record.signature).unwrap();
    }
    federation.restart(3).await.unwrap();
    // It asks, and its request goes through.
    let record = federation.members[3]
        .sign(b"after the restart".to_vec())
        .await
        .unwrap();
    verify_bip340(&key.public, &record.message, &record.signature).unwrap();
    // And the others keep signing with it among them.
    for i in 0..3u8 {
        let record = federation.members[usize::from(i)]
            .sign(vec![0xa0 + i; 8])
            .await
            .unwrap();
        let signers = record.verify(&key.public, &key.roster).unwrap();
        assert!(signers.weight >= 67);
    }
    federation.stop().await;
}

/// A peer outside the roster is refused federation frames, by request and by the
/// gossip relay, and the federation signs on. It is not penalised: a member that
/// restarted on a new peer is such a peer until the others take its new contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_outside_the_roster_are_refused_and_the_federation_signs_on() {
    let network = "fed-outsider-test";
    let federation = LocalFederation::start(3, network, None).await.unwrap();
    let keys = federation.dkg(100, 67).await.unwrap();
    let member = federation.overlays[0].clone();
    let config = tenure_tests::config(network, member.listen_addrs()).unwrap();
    let outsider = tenure_tests::start_node(config).await.unwrap();
    let (outsider, _events) = (outsider.handle, outsider.events);
    tenure_tests::wait_for("the outsider's hello", || async {
        outsider.status().await.is_ok_and(|s| {
            s.peers
                .iter()
                .any(|p| p.peer_id == member.peer_id().to_string())
        })
    })
    .await
    .unwrap();
    let penalties = member.metrics().snapshot().peer_penalties;
    let refused = outsider
        .request(member.peer_id(), Service::FederationFrame, vec![0xff; 64])
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        RequestError::Refused(Refusal::NotServed(Service::FederationFrame))
    );
    outsider
        .subscribe(Topic::FederationFrames, tenure_overlay::accept_all())
        .await
        .unwrap();
    tenure_tests::publish_when_ready(&outsider, Topic::FederationFrames, vec![0xfe; 64])
        .await
        .unwrap();
    let record = federation.members[1]
        .sign(b"still signing".to_vec())
        .await
        .unwrap();
    verify_bip340(&keys[0].public, &record.message, &record.signature).unwrap();
    assert_eq!(member.metrics().snapshot().peer_penalties, penalties);
    outsider.shutdown().await;
    federation.stop().await;
}

/// One running federation makes a key per term, and signs with each new one: the
/// second DKG's messages were dropped as another session's, and signing kept the
/// first key for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_running_federation_makes_a_new_key_each_term_and_signs_with_it() {
    let federation = LocalFederation::start(3, "fed-terms-test", None)
        .await
        .unwrap();
    let mut publics = Vec::new();
    for term in 1..=2u8 {
        let keys = federation.dkg_for(100, 67, &[b't', term]).await.unwrap();
        let key = keys[0].clone();
        assert!(keys.iter().all(|k| k.public == key.public));
        let record = federation.members[usize::from(term)]
            .sign(vec![term; 8])
            .await
            .unwrap();
        verify_bip340(&key.public, &record.message, &record.signature).unwrap();
        publics.push(key.public.clone());
    }
    assert_ne!(publics[0], publics[1], "the second term made a new key");
    federation.stop().await;
}
