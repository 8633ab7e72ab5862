//! What the overlay tells the application.

use libp2p::PeerId;

use crate::{
    handle::InboundId, hello::Hello, hello::HelloError, network::Topic, reputation::Misbehaviour,
    rpc::Service,
};

/// One thing that happened on the overlay.
#[derive(Debug)]
pub enum OverlayEvent {
    /// A peer completed the hello exchange.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// What it said about itself.
        hello: Hello,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer was refused at hello: another network, or a hello that broke the rules.
    PeerRefused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: HelloError,
    },
    /// A peer was penalised.
    PeerPenalised {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: Misbehaviour,
        /// Its score afterwards.
        score: f64,
    },
    /// A peer was banned: its connections are closed and new ones refused.
    PeerBanned {
        /// The peer.
        peer: PeerId,
    },
    /// A gossip message passed validation.
    Gossip {
        /// Its topic.
        topic: Topic,
        /// The peer that published it (signed).
        source: Option<PeerId>,
        /// Its content.
        data: Vec<u8>,
    },
    /// A peer sent a request; answer it with [`crate::OverlayHandle::respond`].
    InboundRequest {
        /// Pass this back when responding.
        id: InboundId,
        /// The asking peer.
        peer: PeerId,
        /// The service asked.
        service: Service,
        /// The service's encoded request.
        body: Vec<u8>,
    },
}
