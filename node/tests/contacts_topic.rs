//! Producers find each other from public data, under attack: four producers enrolled
//! on a real regtest burnchain start federation members that know only their own
//! channel, gossip their contacts, and make a term key together from what they took.
//! Meanwhile a peer with no enrollment floods the contacts topic with junk, its own
//! validly signed contact, and a producer's binding moved to the attacker's peer under
//! a forged signature: none of it reaches a producer's directory or federation, and
//! the forgeries cost the attacker a penalty.
//!
//! The burnchain, the overlay (five nodes on loopback), the federation and the DKG are
//! real.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod enrolled;

use std::{collections::BTreeSet, sync::Arc, time::Instant};

use enrolled::{DEADLINE, burnchain, keypair, publish};
use futures::future::join_all;
use tenure_chain::produce::{ProducerId, contact::ProducerContact, term_key::roster_of};
use tenure_frost_fed::channel::{ChannelKey, noise_keypair};
use tenure_node::{
    contacts::{self, Contacts, PeerDirectory},
    federation::{self, SignDigests},
    testnet::producers::NETWORK,
};
use tenure_overlay::{NetworkId, OverlayEvent, Service, Topic, localnet};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_take_each_others_contacts_and_make_a_key_while_a_peer_without_enrollment_gets_nothing_in()
 {
    let scan = burnchain();
    let plan = scan.plan(3).unwrap();
    let (_scans_tx, scans) = watch::channel(Arc::new(scan.clone()));

    let network = NetworkId::new("contacts-attack").unwrap();
    let mut nodes = localnet::start(5, &network, |_| {}).await.unwrap();
    let attacker = nodes.pop().unwrap();
    attacker
        .handle
        .subscribe(Topic::Contacts, tenure_overlay::accept_all())
        .await
        .unwrap();
    let mut attacker_events = attacker.events;
    tokio::spawn(async move { while attacker_events.next().await.is_some() {} });
    let handles: Vec<_> = nodes.iter().map(|n| n.handle.clone()).collect();

    // Producers 1 to 4, each knowing only its own channel.
    let mut members = Vec::new();
    let mut directories = Vec::new();
    let mut known = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let keypair = keypair(i as u8 + 1);
        let (private, public) = noise_keypair().unwrap();
        let channel = ChannelKey::bind(&keypair, public, node.handle.peer_id().to_bytes());
        let (contact_events, rest) = node.events.split(256, contacts::wants);
        let (federation_events, mut rest) = rest.split(4096, |e| {
            matches!(
                e,
                OverlayEvent::Gossip {
                    topic: Topic::FederationFrames,
                    ..
                } | OverlayEvent::InboundRequest {
                    service: Service::FederationFrame,
                    ..
                }
            )
        });
        tokio::spawn(async move { while rest.next().await.is_some() {} });
        let member = federation::spawn(
            node.handle.clone(),
            federation_events,
            keypair,
            private,
            vec![channel.clone()],
            SignDigests,
            None,
        )
        .await
        .unwrap();
        let directory = PeerDirectory::default();
        known.push(
            Contacts {
                network: NETWORK,
                keypair,
                channel,
                federation: member.clone(),
                directory: directory.clone(),
            }
            .spawn(&node.handle, contact_events, scans.clone())
            .await
            .unwrap(),
        );
        members.push(member);
        directories.push(directory);
    }

    // The attack, repeated while the producers gossip: junk; the attacker's own
    // contact (valid signatures, no enrollment); producer 1's binding moved to the
    // attacker's peer, signed by the attacker's key in producer 1's name.
    let stranger = keypair(77);
    let (_, noise) = noise_keypair().unwrap();
    let own = ProducerContact::sign(
        NETWORK,
        ChannelKey::bind(&stranger, noise, attacker.handle.peer_id().to_bytes()),
        1,
        &stranger,
    );
    let mut moved = ChannelKey::bind(&stranger, noise, attacker.handle.peer_id().to_bytes());
    moved.member = tenure_frost_fed::MemberId::from(keypair(1).x_only_public_key().0);
    let forged = ProducerContact::sign(NETWORK, moved, u64::MAX, &stranger);
    for round in 0..3u64 {
        publish(&attacker.handle, Topic::Contacts, vec![0xee, round as u8]).await;
        let own = ProducerContact::sign(NETWORK, own.channel.clone(), round + 1, &stranger);
        publish(&attacker.handle, Topic::Contacts, own.to_bytes().unwrap()).await;
        let mut forged = forged.clone();
        forged.sequence = u64::MAX - round;
        publish(
            &attacker.handle,
            Topic::Contacts,
            forged.to_bytes().unwrap(),
        )
        .await;
    }

    // Every producer takes the three others' contacts.
    let started = Instant::now();
    while known.iter().any(|k| *k.borrow() < 3) {
        assert!(
            started.elapsed() < DEADLINE,
            "contacts taken: {:?}",
            known.iter().map(|k| *k.borrow()).collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let attacker_peer = attacker.handle.peer_id();
    for directory in &directories {
        assert_eq!(directory.len(), 4);
        assert!(!directory.contains(&attacker_peer), "the attacker got in");
        for k in 1..=4u8 {
            let producer = ProducerId::of(&keypair(k).x_only_public_key().0);
            assert!(directory.peer_of(&producer).is_some());
        }
    }
    let penalties: u64 = handles
        .iter()
        .map(|h| h.metrics().snapshot().peer_penalties)
        .sum();
    assert!(penalties >= 1, "the attacker was never penalised");

    // The federation learnt the channels from the contacts alone: term 3's key.
    let roster = roster_of(&plan, &BTreeSet::new()).unwrap().roster;
    let keys = join_all(
        members
            .iter()
            .map(|m| m.dkg(roster.clone(), b"contacts term 3".to_vec(), 0)),
    )
    .await;
    let public: BTreeSet<_> = keys
        .into_iter()
        .map(|k| {
            k.expect("the DKG over contacts")
                .public
                .verifying_key()
                .serialize()
                .unwrap()
        })
        .collect();
    assert_eq!(public.len(), 1, "members made different keys");
    let mut all = handles;
    all.push(attacker.handle.clone());
    localnet::shutdown(&all).await;
}
