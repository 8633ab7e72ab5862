//! Nothing is served to a peer before its hello: a connection that holds the hello
//! open and sends requests right away gets no answer, and an honest peer that
//! completed its hello is served as usual.
//!
//! The attacker is a real libp2p node. It dials the victim and never sends its hello
//! (the dialer speaks first, so the victim keeps the connection for its hello
//! deadline), and writes well-formed echo requests on Tenure's RPC protocol.

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
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use tenure_overlay::{
    HELLO_PROTOCOL, NetworkId, NodeKey, OverlayConfig, RPC_PROTOCOL, Service,
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

#[derive(NetworkBehaviour)]
struct Silent {
    hello: request_response::Behaviour<RawCodec>,
    rpc: request_response::Behaviour<RawCodec>,
}

fn attacker() -> Swarm<Silent> {
    let config = request_response::Config::default().with_request_timeout(Duration::from_secs(5));
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| Silent {
            hello: request_response::Behaviour::with_codec(
                RawCodec,
                [(
                    StreamProtocol::new(HELLO_PROTOCOL),
                    ProtocolSupport::Inbound,
                )],
                config.clone(),
            ),
            rpc: request_response::Behaviour::with_codec(
                RawCodec,
                [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Outbound)],
                config.clone(),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
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
            .rpc
            .send_request(&victim.peer_id(), frame.clone());
        let outcome = async {
            loop {
                match attacker.select_next_some().await {
                    SwarmEvent::Behaviour(SilentEvent::Rpc(request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    })) => return Some(response),
                    SwarmEvent::Behaviour(SilentEvent::Rpc(
                        request_response::Event::OutboundFailure { .. },
                    )) => return None,
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
