//! Gossip through the swarm task: envelopes in, validation, announced bodies pulled
//! and served (see [`crate::bodies`] for why large messages travel that way).

use crate::rpc::Refusal;
use std::{sync::Arc, time::Instant};

use libp2p::{
    PeerId,
    gossipsub::{self, MessageAcceptance, MessageId, TopicHash},
    request_response::{OutboundRequestId, ResponseChannel},
};
use tracing::debug;

use super::OverlayService;
use crate::logs;
use crate::{
    bodies::{
        BodyDigest, GossipEnvelope, MAX_ANNOUNCE_BYTES, Payload, check_announcement, check_body,
        digest_of,
    },
    body_fetch::{Announced, BodyFetches},
    event::OverlayEvent,
    gossip::{self, GossipValidator, Verdict},
    handle::OverlayError,
    network::Topic,
    reputation::Misbehaviour,
    rpc::{RpcRequest, RpcResponse, Service},
    wire::{Decoded, decode_body, encode_body},
};

/// A message waiting for its announced body, with what is needed to finish its
/// validation.
#[derive(Debug)]
pub(crate) struct Waiter {
    message_id: MessageId,
    propagation_source: PeerId,
    source: Option<PeerId>,
    topic_hash: TopicHash,
}

/// The body fetches of the swarm task (rules in [`crate::body_fetch`]).
pub(crate) type Fetches = BodyFetches<PeerId, OutboundRequestId, Waiter>;

impl OverlayService {
    /// Publishes `data` on `topic`: inline when small, announced when large.
    pub(super) fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), OverlayError> {
        let len = data.len() as u64;
        let envelope = if data.len() > self.config.gossip.large_message_bytes {
            let digest = digest_of(&data);
            if !self.config.gossip.withhold_bodies {
                self.bodies.insert(digest, Arc::new(data), Instant::now());
            }
            GossipEnvelope::announce(digest, len as usize)
        } else {
            GossipEnvelope::inline(data)
        };
        let bytes = encode_body(&envelope).map_err(|e| OverlayError::Publish {
            topic,
            reason: e.to_string(),
        })?;
        let ident = gossip::ident_topic(&self.config.network_id, topic);
        match self.swarm.behaviour_mut().gossipsub.publish(ident, bytes) {
            Ok(_) => {
                let counters = self.metrics.counters();
                counters.gossip_published.inc();
                counters.gossip_published_bytes.inc_by(len);
                Ok(())
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(OverlayError::NoPeersForTopic(topic))
            }
            Err(e) => Err(OverlayError::Publish {
                topic,
                reason: e.to_string(),
            }),
        }
    }

    /// A gossip message arrived: unwrap its envelope, then validate it or fetch its body.
    pub(super) fn on_gossip(
        &mut self,
        propagation_source: PeerId,
        message_id: MessageId,
        message: gossipsub::Message,
    ) {
        if !self.topics.contains_key(&message.topic) {
            self.report(&message_id, &propagation_source, MessageAcceptance::Ignore);
            self.metrics.counters().gossip_ignored.inc();
            return;
        }
        let limit = self.config.gossip.max_message_bytes.max(MAX_ANNOUNCE_BYTES);
        let envelope = match decode_body::<GossipEnvelope>(&message.data, limit) {
            Ok(envelope) => envelope,
            Err(err) => {
                debug!(target: logs::GOSSIP, peer = %propagation_source, %err, "undecodable gossip envelope");
                self.reject(&message_id, propagation_source);
                return;
            }
        };
        match envelope.payload {
            Payload::Inline(data) => self.finish(
                &message_id,
                propagation_source,
                message.source,
                &message.topic,
                data.into_vec(),
            ),
            Payload::Announce { digest, size } => {
                let limit = self.config.gossip.max_message_bytes;
                let digest = match check_announcement(&digest, size, limit) {
                    Ok(digest) => digest,
                    Err(err) => {
                        debug!(target: logs::GOSSIP, peer = %propagation_source, %err, "bad announcement");
                        self.reject(&message_id, propagation_source);
                        return;
                    }
                };
                if self.config.gossip.withhold_bodies {
                    self.report(&message_id, &propagation_source, MessageAcceptance::Accept);
                    return;
                }
                if let Some(body) = self.bodies.get(&digest) {
                    let body = body.to_vec();
                    self.finish(
                        &message_id,
                        propagation_source,
                        message.source,
                        &message.topic,
                        body,
                    );
                    return;
                }
                let waiter = Waiter {
                    message_id: message_id.clone(),
                    propagation_source,
                    source: message.source,
                    topic_hash: message.topic,
                };
                let now = Instant::now();
                match self
                    .fetches
                    .announce(digest, size, propagation_source, waiter, now)
                {
                    Announced::Ask(peer) => self.ask_for_body(digest, peer, now),
                    Announced::Joined => {}
                    Announced::TooMany { flooding } => {
                        if flooding {
                            self.withheld(propagation_source);
                        }
                        self.report(&message_id, &propagation_source, MessageAcceptance::Ignore);
                        self.metrics.counters().gossip_body_failures.inc();
                    }
                }
            }
        }
    }

    fn ask_for_body(&mut self, digest: BodyDigest, peer: PeerId, now: Instant) {
        let request = RpcRequest::new(Service::GossipBody, digest.to_vec());
        let id = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_request(&peer, Decoded::Valid(request));
        self.fetches.asked(digest, peer, id, now);
    }

    /// Whether `id` is one of our body fetches (rather than an application request).
    pub(super) fn is_body_fetch(&self, id: &OutboundRequestId) -> bool {
        self.fetches.is_fetch(id)
    }

    /// The answer to a body fetch: check it, keep it, validate it; or ask another peer.
    pub(super) fn on_body(
        &mut self,
        id: OutboundRequestId,
        from: PeerId,
        outcome: Result<Vec<u8>, Refusal>,
    ) {
        let Some((digest, size)) = self.fetches.expected(&id) else {
            return;
        };
        let body = match outcome {
            Ok(body) => body,
            Err(reason) => {
                debug!(target: logs::GOSSIP, peer = %from, %reason, "peer could not serve a body");
                self.on_body_failure(id);
                return;
            }
        };
        if let Err(err) = check_body(&body, &digest, size) {
            self.penalise(from, Misbehaviour::Protocol(format!("gossip body: {err}")));
            self.on_body_failure(id);
            return;
        }
        self.metrics.counters().gossip_bodies_fetched.inc();
        let body = Arc::new(body);
        self.bodies.insert(digest, body.clone(), Instant::now());
        for waiter in self.fetches.complete(&id, &digest) {
            self.finish(
                &waiter.message_id,
                waiter.propagation_source,
                waiter.source,
                &waiter.topic_hash,
                body.to_vec(),
            );
        }
    }

    /// A body fetch was refused or failed: blame an announcer, and ask the next peer.
    pub(super) fn on_body_failure(&mut self, id: OutboundRequestId) {
        let now = Instant::now();
        if let Some(refused) = self.fetches.refused(&id, now) {
            if refused.announcer {
                self.withheld(refused.peer);
            }
            self.ask_next_for_bodies(now);
        }
    }

    fn withheld(&mut self, peer: PeerId) {
        self.metrics.counters().gossip_bodies_withheld.inc();
        self.penalise(peer, Misbehaviour::WithheldBody);
    }

    /// Every few hundred milliseconds: hedge slow fetches, give up expired ones.
    pub(super) fn on_fetch_tick(&mut self, now: Instant) {
        if self.fetches.is_empty() {
            return;
        }
        for expired in self.fetches.expire(now) {
            for peer in expired.silent {
                self.withheld(peer);
            }
            for waiter in expired.waiters {
                self.metrics.counters().gossip_body_failures.inc();
                self.report(
                    &waiter.message_id,
                    &waiter.propagation_source,
                    MessageAcceptance::Ignore,
                );
            }
        }
        self.ask_next_for_bodies(now);
    }

    /// Asks the next candidate for every fetch that is due.
    fn ask_next_for_bodies(&mut self, now: Instant) {
        for digest in self.fetches.due(now) {
            let Some(topic) = self.fetches.waiter(&digest).map(|w| w.topic_hash.clone()) else {
                continue;
            };
            let candidates = self.body_candidates(&topic);
            if let Some(peer) = self.fetches.next_candidate(&digest, &candidates, now) {
                self.ask_for_body(digest, peer, now);
            }
        }
    }

    /// Peers that may hold a body of `topic`: its mesh peers, then its other peers.
    fn body_candidates(&self, topic: &TopicHash) -> Vec<PeerId> {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mut candidates: Vec<PeerId> = gossipsub
            .mesh_peers(topic)
            .filter(|p| self.peers.is_ready(p))
            .copied()
            .collect();
        for (peer, topics) in gossipsub.all_peers() {
            if topics.contains(&topic) && self.peers.is_ready(peer) && !candidates.contains(peer) {
                candidates.push(*peer);
            }
        }
        candidates
    }

    /// Serves a body we hold to a peer that saw its announcement.
    pub(super) fn serve_body(&mut self, digest: &[u8], channel: ResponseChannel<RpcResponse>) {
        let outcome = match BodyDigest::try_from(digest)
            .ok()
            .filter(|_| !self.config.gossip.withhold_bodies)
            .and_then(|d| self.bodies.get(&d))
        {
            Some(body) => {
                self.metrics.counters().gossip_bodies_served.inc();
                Ok(body.to_vec())
            }
            None => Err(Refusal::NotHeld),
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, RpcResponse::new(outcome));
    }

    /// Runs the topic's validator on a complete message and acts on the verdict.
    fn finish(
        &mut self,
        message_id: &MessageId,
        propagation_source: PeerId,
        source: Option<PeerId>,
        topic_hash: &TopicHash,
        data: Vec<u8>,
    ) {
        let Some((topic, validator)) = self.topics.get(topic_hash).cloned() else {
            self.report(message_id, &propagation_source, MessageAcceptance::Ignore);
            return;
        };
        let counters = self.metrics.counters().clone();
        match GossipValidator::validate(validator.as_ref(), source, &data) {
            Verdict::Accept => {
                self.report(message_id, &propagation_source, MessageAcceptance::Accept);
                counters.gossip_received.inc();
                counters.gossip_received_bytes.inc_by(data.len() as u64);
                self.emit(OverlayEvent::Gossip {
                    topic,
                    source,
                    data,
                });
            }
            Verdict::Ignore(_) => {
                self.report(message_id, &propagation_source, MessageAcceptance::Ignore);
                counters.gossip_ignored.inc();
            }
            Verdict::Reject(reason) => {
                debug!(target: logs::GOSSIP, peer = %propagation_source, %reason, "gossip rejected");
                self.reject(message_id, propagation_source);
            }
        }
    }

    fn reject(&mut self, message_id: &MessageId, propagation_source: PeerId) {
        self.report(message_id, &propagation_source, MessageAcceptance::Reject);
        self.metrics.counters().gossip_rejected.inc();
        self.penalise(propagation_source, Misbehaviour::InvalidGossip);
    }

    fn report(
        &mut self,
        message_id: &MessageId,
        propagation_source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, propagation_source, acceptance);
    }
}
