//! Gossipsub as Tenure runs it: strict signing, content-hash message ids, application
//! validation, and peer scoring tuned for small meshes.
//!
//! Scoring choices, and why:
//! - Testnets put many nodes on one IP, so the IP-colocation penalty never applies to
//!   loopback and only starts above [`COLOCATED_PEERS_TOLERATED`] peers elsewhere.
//! - Our topics are low-rate (a block every few seconds, a chunk now and then), so the
//!   mesh-delivery-rate penalty (P3) is off: it would punish honest peers on quiet topics.
//! - Invalid messages (P4) weigh heavily: a peer whose messages fail validation drops
//!   below the graylist threshold after a handful.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use libp2p::{
    PeerId,
    gossipsub::{
        self, IdentTopic, MaxCountSubscriptionFilter, MessageAuthenticity, MessageId,
        PeerScoreParams, PeerScoreThresholds, TopicScoreParams, ValidationMode,
        WhitelistSubscriptionFilter,
    },
    identity::Keypair,
};
use sha2::{Digest, Sha256};

use crate::{
    config::GossipParams,
    network::{MAX_TOPICS_PER_PEER, NetworkId, Topic},
};

/// Peers on one non-loopback IP before the colocation penalty applies.
pub const COLOCATED_PEERS_TOLERATED: f64 = 16.0;

/// How long a pruned peer may not be grafted again.
pub const PRUNE_BACKOFF: Duration = Duration::from_secs(15);

/// Bytes of SHA-256 kept as the message id.
const MESSAGE_ID_BYTES: usize = 20;

/// The gossipsub behaviour with our subscription filter.
pub type TenureGossipsub = gossipsub::Behaviour<
    gossipsub::IdentityTransform,
    MaxCountSubscriptionFilter<WhitelistSubscriptionFilter>,
>;

/// What a validator decides about one gossip message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver it and forward it.
    Accept,
    /// Not useful (stale, duplicate at the application level) but not misbehaviour.
    Ignore(String),
    /// Invalid: drop it and penalise the peer that forwarded it.
    Reject(String),
}

/// Application validation for one topic. It runs inside the swarm task, so it must be
/// cheap: decode and check bounds and signatures, never wait on I/O.
pub trait GossipValidator: Send + Sync {
    /// Judges `data`, published by `source` (signed, so the source is authenticated).
    fn validate(&self, source: Option<PeerId>, data: &[u8]) -> Verdict;
}

impl<F> GossipValidator for F
where
    F: Fn(Option<PeerId>, &[u8]) -> Verdict + Send + Sync,
{
    fn validate(&self, source: Option<PeerId>, data: &[u8]) -> Verdict {
        self(source, data)
    }
}

/// A validator that accepts every message (for topics whose consumer validates fully).
pub fn accept_all() -> Arc<dyn GossipValidator> {
    Arc::new(|_: Option<PeerId>, _: &[u8]| Verdict::Accept)
}

/// The message id: SHA-256 over the topic and the data, truncated. Two copies of one
/// content are one message, whoever publishes them.
pub fn content_message_id(topic: &str, data: &[u8]) -> MessageId {
    let mut hasher = Sha256::new();
    hasher.update((topic.len() as u64).to_be_bytes());
    hasher.update(topic.as_bytes());
    hasher.update(data);
    let digest = hasher.finalize();
    MessageId::new(digest.get(..MESSAGE_ID_BYTES).unwrap_or(&digest))
}

/// The topic handle for `topic` on `network`.
pub fn ident_topic(network: &NetworkId, topic: Topic) -> IdentTopic {
    IdentTopic::new(topic.topic_string(network))
}

/// Builds the gossipsub behaviour. The parameters must already have passed
/// [`GossipParams::validate`].
pub fn build(
    keypair: &Keypair,
    network: &NetworkId,
    params: &GossipParams,
) -> Result<TenureGossipsub, String> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| content_message_id(m.topic.as_str(), &m.data))
        .mesh_n(params.mesh_n)
        .mesh_n_low(params.mesh_n_low)
        .mesh_n_high(params.mesh_n_high)
        .mesh_outbound_min(params.mesh_outbound_min)
        .gossip_lazy(params.gossip_lazy)
        .heartbeat_interval(params.heartbeat_interval)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .history_length(params.history_length)
        .history_gossip(params.history_gossip)
        .max_transmit_size(params.max_message_bytes)
        .flood_publish(params.flood_publish)
        // A refused GRAFT bars re-grafting that peer for the backoff; the spec's minute
        // left nodes of a crowded 50-node testnet below D_lo that long.
        .prune_backoff(PRUNE_BACKOFF)
        // No peer exchange: Kademlia finds peers, and PX dials every peer named in a
        // PRUNE, which fights the connection manager's cap.
        .build()
        .map_err(|e| e.to_string())?;

    let topics: HashSet<_> = Topic::ALL
        .iter()
        .map(|t| ident_topic(network, *t).hash())
        .collect();
    let filter = MaxCountSubscriptionFilter {
        filter: WhitelistSubscriptionFilter(topics),
        max_subscribed_topics: MAX_TOPICS_PER_PEER,
        max_subscriptions_per_request: MAX_TOPICS_PER_PEER,
    };
    let mut behaviour = gossipsub::Behaviour::new_with_subscription_filter(
        MessageAuthenticity::Signed(keypair.clone()),
        config,
        filter,
    )
    .map_err(str::to_owned)?;
    behaviour.with_peer_score(score_params(network), score_thresholds())?;
    Ok(behaviour)
}

fn score_params(network: &NetworkId) -> PeerScoreParams {
    let topics: HashMap<_, _> = Topic::ALL
        .iter()
        .map(|t| (ident_topic(network, *t).hash(), topic_score(*t)))
        .collect();
    PeerScoreParams {
        topics,
        ip_colocation_factor_threshold: COLOCATED_PEERS_TOLERATED,
        ip_colocation_factor_whitelist: HashSet::from([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
        behaviour_penalty_threshold: 6.0,
        behaviour_penalty_decay: 0.9,
        ..PeerScoreParams::default()
    }
}

fn topic_score(topic: Topic) -> TopicScoreParams {
    let topic_weight = match topic {
        Topic::Blocks | Topic::FederationFrames | Topic::TermKeys | Topic::Contacts => 1.0,
        Topic::StackerDbChunks
        | Topic::BurnBlocks
        | Topic::Transactions
        | Topic::BurnTransactions => 0.7,
        Topic::Heartbeat => 0.2,
    };
    TopicScoreParams {
        topic_weight,
        time_in_mesh_weight: 0.03,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 300.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        // Low-rate topics: no penalty for a mesh peer that delivered little.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..TopicScoreParams::default()
    }
}

fn score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 0.0,
        opportunistic_graft_threshold: 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_depends_on_topic_and_content_only() {
        let a = content_message_id("/t/blocks/1", b"block");
        assert_eq!(a, content_message_id("/t/blocks/1", b"block"));
        assert_ne!(a, content_message_id("/t/heartbeat/1", b"block"));
        assert_ne!(a, content_message_id("/t/blocks/1", b"block2"));
        assert_eq!(a.0.len(), MESSAGE_ID_BYTES);
    }

    #[test]
    fn the_default_mesh_builds_with_scoring() {
        let key = Keypair::generate_ed25519();
        let net = NetworkId::new("t").unwrap();
        assert!(build(&key, &net, &GossipParams::default()).is_ok());
    }

    #[test]
    fn score_parameters_pass_gossipsubs_own_checks() {
        let net = NetworkId::new("t").unwrap();
        assert_eq!(score_params(&net).validate(), Ok(()));
        assert_eq!(score_thresholds().validate(), Ok(()));
    }
}
