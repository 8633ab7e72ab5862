//! What the swarm task does with each swarm and behaviour event.

use std::time::{Duration, Instant};

use libp2p::{
    PeerId, gossipsub, identify, kad, mdns,
    request_response::{self, InboundFailure, OutboundFailure, ResponseChannel},
    swarm::{DialError, SwarmEvent},
};
use serde_bytes::ByteBuf;
use tracing::{debug, info};

use super::{MAX_INBOUND_PENDING, OTHER_NETWORK_BACKOFF, OverlayService, REFUSAL_GRACE};
use crate::{
    behaviour::TenureBehaviourEvent,
    event::OverlayEvent,
    handle::{InboundId, RequestError},
    hello::{Hello, HelloError},
    logs,
    reputation::Misbehaviour,
    rpc::{RpcRequest, RpcResponse, Service},
    wire::{Decoded, FrameError},
};

impl OverlayService {
    pub(super) fn handle_swarm_event(&mut self, event: SwarmEvent<TenureBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let first = self.peers.connection_opened(peer_id, Instant::now());
                self.discovery.connected(&peer_id);
                if first && endpoint.is_dialer() {
                    let hello = self.hello.clone();
                    self.swarm
                        .behaviour_mut()
                        .hello
                        .send_request(&peer_id, Decoded::Valid(hello));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                let gone = self.peers.connection_closed(&peer_id, num_established);
                if gone.is_some() && self.refuse_after_response.remove(&peer_id).is_some() {
                    // Nothing left to flush: refuse its next connection at once.
                    self.swarm.behaviour_mut().blocked.block_peer(peer_id);
                }
                if gone == Some(true) {
                    self.metrics.counters().peers_connected.dec();
                    debug!(target: logs::PEERS, peer = %peer_id, "peer disconnected");
                    self.emit(OverlayEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(target: logs::PEERS, peer = ?peer_id, %error, "dial failed");
                // Only the peer's own failures count: not a dial we skipped or
                // aborted, nor one our own limits denied.
                let peers_fault = matches!(
                    error,
                    DialError::Transport(_)
                        | DialError::WrongPeerId { .. }
                        | DialError::NoAddresses
                );
                if let Some(peer) = peer_id.filter(|_| peers_fault) {
                    self.discovery.dial_failed(&peer);
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!(target: logs::PEERS, %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: TenureBehaviourEvent) {
        match event {
            TenureBehaviourEvent::Hello(event) => self.on_hello_event(event),
            TenureBehaviourEvent::Rpc(event) => self.on_rpc_event(event),
            TenureBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            TenureBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.add_route(peer_id, &info.listen_addrs);
                self.discovery.learn(peer_id, info.listen_addrs);
            }
            TenureBehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => self.discovery.learn(peer, addresses.into_vec()),
            TenureBehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(found)),
                ..
            }) => {
                for info in found.peers {
                    self.discovery.learn(info.peer_id, info.addrs);
                }
            }
            TenureBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.discovery.learn(peer, [addr]);
                }
            }
            _ => {}
        }
    }

    /// Adds `peer` to the DHT routing table unless its bucket is full: inserting into a
    /// full bucket makes kad dial the bucket's oldest disconnected peer to test it.
    fn add_route(&mut self, peer: PeerId, addrs: &[libp2p::Multiaddr]) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let full = kad
            .kbucket(peer)
            .is_some_and(|bucket| bucket.num_entries() >= kad::K_VALUE.get());
        let known = kad
            .kbucket(peer)
            .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == &peer));
        if full && !known {
            return;
        }
        for addr in addrs {
            kad.add_address(&peer, addr.clone());
        }
    }

    fn on_hello_event(&mut self, event: request_response::Event<Decoded<Hello>, Hello>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request: Decoded::Valid(request),
                    channel,
                    ..
                } => self.on_hello_request(peer, request, channel),
                request_response::Message::Request {
                    request: Decoded::Invalid(reason),
                    ..
                } => self.penalise_frame(peer, &reason),
                request_response::Message::Response { response, .. } => {
                    self.on_hello_response(peer, response)
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if matches!(error, OutboundFailure::UnsupportedProtocols) {
                    debug!(target: logs::PEERS, %peer, "peer does not speak the hello; disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer);
                } else {
                    self.penalise_bad_frame(peer, outbound_io(&error));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.penalise_bad_frame(peer, inbound_io(&error));
            }
            request_response::Event::ResponseSent { peer, .. } => {
                if let Some(at) = self.refuse_after_response.get_mut(&peer) {
                    *at = Some(Instant::now() + REFUSAL_GRACE);
                }
            }
        }
    }

    fn on_hello_request(&mut self, peer: PeerId, hello: Hello, channel: ResponseChannel<Hello>) {
        match hello.check_peer(&self.config.network_id) {
            Ok(()) => {
                let ours = self.hello.clone();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .hello
                    .send_response(channel, ours);
                self.record_hello(peer, hello);
            }
            Err(reason @ HelloError::NetworkMismatch { .. }) => {
                // Tell the peer who we are, then part once the answer is out. The
                // backoff starts now so discovery stops considering the peer.
                self.reputation
                    .ban_for(peer, OTHER_NETWORK_BACKOFF, Instant::now());
                let ours = self.hello.clone();
                if self
                    .swarm
                    .behaviour_mut()
                    .hello
                    .send_response(channel, ours)
                    .is_ok()
                {
                    self.refuse_after_response.insert(peer, None);
                } else {
                    self.keep_away(peer, OTHER_NETWORK_BACKOFF);
                }
                self.refuse(peer, reason);
            }
            Err(reason) => {
                self.refuse(peer, reason);
                self.penalise(peer, Misbehaviour::InvalidHello);
            }
        }
    }

    fn on_hello_response(&mut self, peer: PeerId, hello: Hello) {
        match hello.check_peer(&self.config.network_id) {
            Ok(()) => self.record_hello(peer, hello),
            Err(reason @ HelloError::NetworkMismatch { .. }) => {
                self.refuse(peer, reason);
                self.keep_away(peer, OTHER_NETWORK_BACKOFF);
            }
            Err(reason) => {
                self.refuse(peer, reason);
                self.penalise(peer, Misbehaviour::InvalidHello);
            }
        }
    }

    fn record_hello(&mut self, peer: PeerId, hello: Hello) {
        if self.peers.set_hello(peer, hello.clone()) {
            self.swarm.behaviour_mut().gossipsub.admit(peer);
            self.metrics.counters().peers_connected.inc();
            debug!(target: logs::PEERS, %peer, dbs = hello.stacker_dbs.len(), "peer ready");
            self.emit(OverlayEvent::PeerConnected { peer, hello });
        }
    }

    fn refuse(&mut self, peer: PeerId, reason: HelloError) {
        info!(target: logs::PEERS, %peer, %reason, "peer refused at hello");
        self.metrics.counters().peers_refused.inc();
        self.discovery.forget(&peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        self.emit(OverlayEvent::PeerRefused { peer, reason });
    }

    /// Closes the peer's connections and refuses it for `duration`, without calling it
    /// misbehaviour (a peer of another network is not an attacker).
    pub(super) fn keep_away(&mut self, peer: PeerId, duration: Duration) {
        self.reputation.ban_for(peer, duration, Instant::now());
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    /// Penalises the sender of a frame that failed inside libp2p's stream handling
    /// (responses: requests arrive as [`Decoded::Invalid`]).
    fn penalise_bad_frame(&mut self, peer: PeerId, io: Option<&std::io::Error>) {
        if let Some(frame_error) = io.and_then(FrameError::from_io) {
            let frame_error = frame_error.clone();
            self.penalise_frame(peer, &frame_error);
        }
    }

    fn penalise_frame(&mut self, peer: PeerId, frame_error: &FrameError) {
        let misbehaviour = match frame_error {
            FrameError::TooLarge { .. } => Misbehaviour::OversizedFrame,
            FrameError::Undecodable(_) | FrameError::UnsupportedVersion { .. } => {
                Misbehaviour::UndecodableFrame
            }
            // A stream cut mid-frame is as likely a dropped connection as an attack.
            FrameError::Truncated => return,
        };
        self.penalise(peer, misbehaviour);
    }

    fn on_rpc_event(&mut self, event: request_response::Event<Decoded<RpcRequest>, RpcResponse>) {
        let counters = self.metrics.counters().clone();
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request: Decoded::Invalid(reason),
                    ..
                } => {
                    counters.rpc_failures.inc();
                    self.penalise_frame(peer, &reason);
                }
                request_response::Message::Request {
                    request_id,
                    request: Decoded::Valid(request),
                    channel,
                } => {
                    counters.rpc_requests_received.inc();
                    counters
                        .rpc_bytes_received
                        .inc_by(request.body.len() as u64);
                    self.on_rpc_request(peer, request_id, request, channel);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } if self.is_body_fetch(&request_id) => {
                    let outcome = response.outcome.map(ByteBuf::into_vec);
                    if let Ok(body) = &outcome {
                        counters.rpc_bytes_received.inc_by(body.len() as u64);
                    }
                    self.on_body(request_id, peer, outcome);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let outcome = match response.outcome {
                        Ok(body) => {
                            counters.rpc_bytes_received.inc_by(body.len() as u64);
                            Ok(body.into_vec())
                        }
                        Err(reason) => Err(RequestError::Refused(reason)),
                    };
                    if let Some(reply) = self.outbound.remove(&request_id) {
                        let _ = reply.send(outcome);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                counters.rpc_failures.inc();
                self.penalise_bad_frame(peer, outbound_io(&error));
                self.on_body_failure(request_id);
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(request_error(error)));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                counters.rpc_failures.inc();
                self.inbound.remove(&request_id);
                self.penalise_bad_frame(peer, inbound_io(&error));
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_rpc_request(
        &mut self,
        peer: PeerId,
        request_id: request_response::InboundRequestId,
        request: RpcRequest,
        channel: ResponseChannel<RpcResponse>,
    ) {
        // Nothing is served before the hello: a peer of another network, or one that
        // holds its hello open, gets a closed stream (dropping the channel closes it).
        if !self.peers.is_ready(&peer) {
            self.metrics.counters().rpc_failures.inc();
            debug!(target: logs::PEERS, %peer, service = request.service.name(), "request before the hello refused");
            return;
        }
        if request.service == Service::GossipBody {
            self.serve_body(&request.body, channel);
            return;
        }
        if request.service == Service::Echo {
            let response = RpcResponse::new(Ok(request.body.into_vec()));
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response);
            return;
        }
        if self.inbound.len() >= MAX_INBOUND_PENDING {
            // Dropping the channel answers the peer with a closed stream at once.
            self.metrics.counters().rpc_failures.inc();
            return;
        }
        self.inbound.insert(request_id, channel);
        self.emit(OverlayEvent::InboundRequest {
            id: InboundId(request_id),
            peer,
            service: request.service,
            body: ByteBuf::into_vec(request.body),
        });
    }
}

fn outbound_io(error: &OutboundFailure) -> Option<&std::io::Error> {
    match error {
        OutboundFailure::Io(io) => Some(io),
        _ => None,
    }
}

fn inbound_io(error: &InboundFailure) -> Option<&std::io::Error> {
    match error {
        InboundFailure::Io(io) => Some(io),
        _ => None,
    }
}

fn request_error(error: OutboundFailure) -> RequestError {
    match error {
        OutboundFailure::Timeout => RequestError::Timeout,
        OutboundFailure::ConnectionClosed => RequestError::ConnectionClosed,
        OutboundFailure::DialFailure => RequestError::ConnectionClosed,
        OutboundFailure::UnsupportedProtocols => RequestError::Unsupported,
        OutboundFailure::Io(io) => RequestError::Io(io.to_string()),
    }
}
