//! Gossip through the swarm task: envelopes in, validation, announced bodies pulled
//! and served (see [`crate::bodies`] for why large messages travel that way).

use crate::rpc::Refusal;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

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
    event::OverlayEvent,
    gossip::{self, GossipValidator, Verdict},
    handle::OverlayError,
    network::Topic,
    reputation::Misbehaviour,
    rpc::{RpcRequest, RpcResponse, Service},
    wire::{Decoded, decode_body, encode_body},
};

/// Body fetches in flight at most; announcements beyond this are ignored.
const MAX_PENDING_BODIES: usize = 256;

/// Peers asked for one body before the announcement is given up.
const MAX_BODY_TRIES: usize = 3;

/// How long a body may take to arrive, all tries together. Gossipsub keeps an
/// unvalidated message for its history window (about four seconds by default).
const BODY_DEADLINE: Duration = Duration::from_secs(3);

/// An announced body being fetched, with what is needed to finish its validation.
#[derive(Debug)]
pub(crate) struct PendingBody {
    message_id: MessageId,
    propagation_source: PeerId,
    source: Option<PeerId>,
    topic_hash: TopicHash,
    digest: BodyDigest,
    size: u64,
    tried: Vec<PeerId>,
    deadline: Instant,
}

impl OverlayService {
    /// Publishes `data` on `topic`: inline when small, announced when large.
    pub(super) fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), OverlayError> {
        let len = data.len() as u64;
        let envelope = if data.len() > self.config.gossip.large_message_bytes {
            let digest = digest_of(&data);
            self.bodies.insert(digest, Arc::new(data), Instant::now());
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
                if self.pending_bodies.len() >= MAX_PENDING_BODIES {
                    self.report(&message_id, &propagation_source, MessageAcceptance::Ignore);
                    self.metrics.counters().gossip_body_failures.inc();
                    return;
                }
                let pending = PendingBody {
                    message_id,
                    propagation_source,
                    source: message.source,
                    topic_hash: message.topic,
                    digest,
                    size,
                    tried: Vec::new(),
                    deadline: Instant::now() + BODY_DEADLINE,
                };
                self.fetch_body(pending, propagation_source);
            }
        }
    }

    fn fetch_body(&mut self, mut pending: PendingBody, from: PeerId) {
        pending.tried.push(from);
        let request = RpcRequest::new(Service::GossipBody, pending.digest.to_vec());
        let id = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_request(&from, Decoded::Valid(request));
        self.pending_bodies.insert(id, pending);
    }

    /// Whether `id` is one of our body fetches (rather than an application request).
    pub(super) fn is_body_fetch(&self, id: &OutboundRequestId) -> bool {
        self.pending_bodies.contains_key(id)
    }

    /// The answer to a body fetch: check it, keep it, validate it; or try another peer.
    pub(super) fn on_body(
        &mut self,
        id: OutboundRequestId,
        from: PeerId,
        outcome: Result<Vec<u8>, Refusal>,
    ) {
        let Some(pending) = self.pending_bodies.remove(&id) else {
            return;
        };
        let body = match outcome {
            Ok(body) => body,
            Err(reason) => {
                debug!(target: logs::GOSSIP, peer = %from, %reason, "peer could not serve a body");
                self.retry_body(pending);
                return;
            }
        };
        if let Err(err) = check_body(&body, &pending.digest, pending.size) {
            self.penalise(from, Misbehaviour::Protocol(format!("gossip body: {err}")));
            self.retry_body(pending);
            return;
        }
        self.metrics.counters().gossip_bodies_fetched.inc();
        self.bodies
            .insert(pending.digest, Arc::new(body.clone()), Instant::now());
        self.finish(
            &pending.message_id,
            pending.propagation_source,
            pending.source,
            &pending.topic_hash,
            body,
        );
    }

    /// A body fetch failed on the wire: try another peer.
    pub(super) fn on_body_failure(&mut self, id: OutboundRequestId) {
        if let Some(pending) = self.pending_bodies.remove(&id) {
            self.retry_body(pending);
        }
    }

    /// Asks another mesh peer of the topic, or gives the announcement up.
    fn retry_body(&mut self, pending: PendingBody) {
        let next = (pending.tried.len() < MAX_BODY_TRIES && Instant::now() < pending.deadline)
            .then(|| {
                self.swarm
                    .behaviour()
                    .gossipsub
                    .mesh_peers(&pending.topic_hash)
                    .find(|p| !pending.tried.contains(p) && self.peers.is_ready(p))
                    .copied()
            })
            .flatten();
        match next {
            Some(peer) => self.fetch_body(pending, peer),
            None => {
                self.metrics.counters().gossip_body_failures.inc();
                self.report(
                    &pending.message_id,
                    &pending.propagation_source,
                    MessageAcceptance::Ignore,
                );
            }
        }
    }

    /// Serves a body we hold to a peer that saw its announcement.
    pub(super) fn serve_body(&mut self, digest: &[u8], channel: ResponseChannel<RpcResponse>) {
        let outcome = match BodyDigest::try_from(digest)
            .ok()
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
