//! A peer that sends oversized and undecodable frames is penalised, then banned, and the
//! node it attacked keeps serving honest peers. A peer that never completes its hello
//! is served nothing, and an honest peer that does is served as usual.
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
    StreamProtocol, Swarm, noise,
    request_response::{self, ProtocolSupport},
    swarm::SwarmEvent,
    tcp, yamux,
};
use tenure_overlay::{
    Misbehaviour, NetworkId, NodeKey, OverlayConfig, OverlayEvent, OverlayEvents, RPC_PROTOCOL,
    Service,
    rpc::{RpcRequest, RpcResponse},
    wire::{decode_frame, encode_frame},
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

fn attacker() -> Attacker {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Outbound)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
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
