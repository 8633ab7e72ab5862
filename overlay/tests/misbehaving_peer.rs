//! A peer that sends oversized and undecodable frames is penalised, then banned, and the
//! node it attacked keeps serving honest peers. A peer that never completes its hello
//! is served nothing, and an honest peer that does is served as usual: no request is
//! answered, none of its gossip is delivered and none of ours reaches it.
//!
//! The attacker is a real libp2p node whose request-response codec writes raw bytes on
//! Tenure's RPC protocol, so the frames cross Noise and Yamux like any other.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{io, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    StreamProtocol, Swarm, gossipsub, noise,
    request_response::{self, ProtocolSupport},
    swarm::SwarmEvent,
    tcp, yamux,
};
use tenure_overlay::{
    GossipParams, Misbehaviour, NetworkId, NodeKey, OverlayConfig, OverlayEvent, OverlayEvents,
    RPC_PROTOCOL, Service, Topic,
    bodies::GossipEnvelope,
    gossip::{self, TenureGossipsub},
    rpc::{RpcRequest, RpcResponse},
    wire::{decode_frame, encode_body, encode_frame},
};

/// Writes whatever bytes it is given; reads whatever comes back.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        self.read_request(p, io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

type Attacker = Swarm<request_response::Behaviour<RawCodec>>;

/// A libp2p node over TCP, Noise and Yamux speaking only `behaviour`.
fn swarm_of<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn attacker() -> Attacker {
    swarm_of(|_| {
        request_response::Behaviour::with_codec(
            RawCodec,
            [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Outbound)],
            request_response::Config::default(),
        )
    })
}

/// Drives the attacker's swarm while waiting for the victim's next penalty or ban.
async fn next_verdict(attacker: &mut Attacker, events: &mut OverlayEvents) -> OverlayEvent {
    let wait = async {
        loop {
            tokio::select! {
                _ = attacker.select_next_some() => {}
                event = events.next() => {
                    let event = event.expect("victim stopped");
                    if matches!(event, OverlayEvent::PeerPenalised { .. } | OverlayEvent::PeerBanned { .. }) {
                        return event;
                    }
                }
            }
        }
    };
    tokio::time::timeout(tenure_tests::DEADLINE, wait)
        .await
        .expect("no penalty came")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_frames_get_the_sender_penalised_then_banned() {
    let network = NetworkId::new("fault-test").unwrap();
    let (victim, mut victim_events) = tenure_overlay::spawn(
        OverlayConfig::loopback(network.clone()),
        NodeKey::generate(),
    )
    .await
    .unwrap();
    let victim_addr = victim.listen_addrs()[0].clone();

    let mut attacker = attacker();
    let attacker_id = *attacker.local_peer_id();
    attacker.dial(victim_addr.clone()).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = attacker.select_next_some().await {
            break;
        }
    }

    // An oversized frame: the length prefix claims 4 GiB.
    let mut oversized = u32::MAX.to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 32]);
    attacker
        .behaviour_mut()
        .send_request(&victim.peer_id(), oversized);
    match next_verdict(&mut attacker, &mut victim_events).await {
        OverlayEvent::PeerPenalised {
            peer,
            reason,
            score,
        } => {
            assert_eq!(peer, attacker_id);
            assert_eq!(reason, Misbehaviour::OversizedFrame);
            assert!(score < 0.0);
        }
        other => panic!("expected a penalty, got {other:?}"),
    }

    // A garbage frame: a valid length, then bytes that are not CBOR of a request.
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 8]);
    attacker
        .behaviour_mut()
        .send_request(&victim.peer_id(), garbage);
    match next_verdict(&mut attacker, &mut victim_events).await {
        OverlayEvent::PeerPenalised { peer, reason, .. } => {
            assert_eq!(peer, attacker_id);
            assert_eq!(reason, Misbehaviour::UndecodableFrame);
        }
        other => panic!("expected a penalty, got {other:?}"),
    }
    match next_verdict(&mut attacker, &mut victim_events).await {
        OverlayEvent::PeerBanned { peer } => assert_eq!(peer, attacker_id),
        other => panic!("expected a ban, got {other:?}"),
    }

    // The ban closed the attacker's connection (perhaps already while the verdicts
    // were awaited, so ask the swarm rather than wait for the event), and a redial is
    // refused.
    let victim_id = victim.peer_id();
    let closed = async {
        while attacker.is_connected(&victim_id) {
            let _ = attacker.select_next_some().await;
        }
    };
    tokio::time::timeout(tenure_tests::DEADLINE, closed)
        .await
        .expect("banned peer still connected");
    attacker.dial(victim_addr.clone()).unwrap();
    let redial = async {
        loop {
            match attacker.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {}
                SwarmEvent::ConnectionClosed { .. }
                | SwarmEvent::OutgoingConnectionError { .. } => {
                    return;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(tenure_tests::DEADLINE, redial)
        .await
        .expect("banned peer was let back in");

    // The victim is still up and serves an honest peer.
    let mut config = OverlayConfig::loopback(network);
    config.bootstrap_peers = vec![victim_addr];
    let (honest, _honest_events) = tenure_overlay::spawn(config, NodeKey::generate())
        .await
        .unwrap();
    tenure_tests::wait_for("the honest peer's hello", || async {
        honest.status().await.is_ok_and(|s| s.peers.len() == 1)
    })
    .await
    .unwrap();
    let echo = honest
        .request(victim.peer_id(), Service::Echo, b"still here".to_vec())
        .await
        .unwrap();
    assert_eq!(echo, b"still here");
    let metrics = victim.metrics().snapshot();
    assert_eq!(metrics.peer_penalties, 2);
    assert_eq!(metrics.peer_bans, 1);
    assert_eq!(victim.status().await.unwrap().banned, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_completes_the_hello_is_served_nothing() {
    let network = NetworkId::new("pre-hello-test").unwrap();
    let (victim, _victim_events) = tenure_overlay::spawn(
        OverlayConfig::loopback(network.clone()),
        NodeKey::generate(),
    )
    .await
    .unwrap();
    let victim_addr = victim.listen_addrs()[0].clone();

    let mut attacker = attacker();
    attacker.dial(victim_addr.clone()).unwrap();
    // Connected, and no hello sent (the dialer speaks first; the victim waits up to
    // its hello deadline).
    let connected = async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = attacker.select_next_some().await {
                return;
            }
        }
    };
    tokio::time::timeout(tenure_tests::DEADLINE, connected)
        .await
        .expect("no connection");

    // Echo requests before any hello: each must go unanswered.
    let frame = encode_frame(
        &RpcRequest::new(Service::Echo, b"serve me".to_vec()),
        1 << 20,
    )
    .unwrap();
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..3 {
        attacker
            .behaviour_mut()
            .send_request(&victim.peer_id(), frame.clone());
        let outcome = async {
            loop {
                match attacker.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    }) => return Some(response),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                        return None;
                    }
                    _ => {}
                }
            }
        };
        match tokio::time::timeout(tenure_tests::DEADLINE, outcome)
            .await
            .expect("no outcome")
        {
            Some(bytes) => match decode_frame::<RpcResponse>(&bytes, 1 << 20) {
                Ok(RpcResponse {
                    outcome: Ok(body), ..
                }) if body.as_ref() == b"serve me" => served += 1,
                _ => refused += 1,
            },
            None => refused += 1,
        }
    }
    assert_eq!(served, 0, "a peer without a hello was served");
    assert_eq!(refused, 3);

    // An honest peer that completes its hello is served.
    let mut config = OverlayConfig::loopback(network);
    config.bootstrap_peers = vec![victim_addr];
    let (honest, _honest_events) = tenure_overlay::spawn(config, NodeKey::generate())
        .await
        .unwrap();
    tenure_tests::wait_for("the honest peer's hello", || async {
        honest.status().await.is_ok_and(|s| {
            s.peers
                .iter()
                .any(|p| p.peer_id == victim.peer_id().to_string())
        })
    })
    .await
    .unwrap();
    let echo = honest
        .request(victim.peer_id(), Service::Echo, b"still here".to_vec())
        .await
        .unwrap();
    assert_eq!(echo, b"still here");
}

/// A peer that speaks Tenure's gossipsub, with its topics, scoring and signing, but not
/// the hello.
fn gossip_attacker(network: &NetworkId) -> Swarm<TenureGossipsub> {
    swarm_of(|key| gossip::build(key, network, &GossipParams::default()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_hello_gets_none_of_our_gossip_and_none_of_its_gossip_is_delivered() {
    let network = NetworkId::new("pre-hello-gossip").unwrap();
    let (victim, mut victim_events) = tenure_overlay::spawn(
        OverlayConfig::loopback(network.clone()),
        NodeKey::generate(),
    )
    .await
    .unwrap();
    victim
        .subscribe(Topic::Heartbeat, tenure_overlay::accept_all())
        .await
        .unwrap();
    let victim_addr = victim.listen_addrs()[0].clone();
    let mut config = OverlayConfig::loopback(network.clone());
    config.bootstrap_peers = vec![victim_addr.clone()];
    let (honest, _honest_events) = tenure_overlay::spawn(config, NodeKey::generate())
        .await
        .unwrap();
    honest
        .subscribe(Topic::Heartbeat, tenure_overlay::accept_all())
        .await
        .unwrap();

    let mut attacker = gossip_attacker(&network);
    let topic = gossip::ident_topic(&network, Topic::Heartbeat);
    attacker.behaviour_mut().subscribe(&topic).unwrap();
    attacker.dial(victim_addr).unwrap();

    // Every 200 ms each side publishes; the attacker until the victim drops it at its
    // hello deadline (ten seconds), which bounds the loop.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut round = 0u32;
    let mut attacker_connected = false;
    let mut attacker_heard_subscriptions = 0;
    let mut attacker_received = 0;
    let mut attacker_published = 0;
    let mut delivered_forged = 0;
    let mut delivered_honest = 0;
    let run = async {
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    round += 1;
                    if round == 3 {
                        // A subscription made while the peer is connected without a
                        // hello must not reach it either.
                        victim.subscribe(Topic::Blocks, tenure_overlay::accept_all()).await.unwrap();
                    }
                    let forged = encode_body(&GossipEnvelope::inline(format!("forged {round}").into_bytes())).unwrap();
                    if attacker.behaviour_mut().publish(topic.clone(), forged).is_ok() {
                        attacker_published += 1;
                    }
                    let _ = honest.publish(Topic::Heartbeat, format!("honest {round}").into_bytes()).await;
                    let _ = victim.publish(Topic::Heartbeat, format!("victim {round}").into_bytes()).await;
                }
                event = attacker.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => attacker_connected = true,
                    SwarmEvent::ConnectionClosed { .. } if attacker_connected => return,
                    SwarmEvent::Behaviour(gossipsub::Event::Subscribed { .. }) => attacker_heard_subscriptions += 1,
                    SwarmEvent::Behaviour(gossipsub::Event::Message { .. }) => attacker_received += 1,
                    _ => {}
                },
                event = victim_events.next() => {
                    if let Some(OverlayEvent::Gossip { data, .. }) = event {
                        if data.starts_with(b"forged") {
                            delivered_forged += 1;
                        } else if data.starts_with(b"honest") {
                            delivered_honest += 1;
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(tenure_tests::DEADLINE, run)
        .await
        .expect("the victim kept a peer without a hello past its deadline");

    assert!(attacker_connected);
    assert_eq!(
        attacker_heard_subscriptions, 0,
        "the victim told a peer without a hello what it subscribes to"
    );
    assert_eq!(
        attacker_received, 0,
        "a peer without a hello got our gossip"
    );
    assert_eq!(
        delivered_forged, 0,
        "gossip from a peer without a hello was delivered ({attacker_published} published)"
    );
    assert!(
        delivered_honest >= 10,
        "the honest peer's gossip stopped flowing: {delivered_honest} delivered"
    );
}
