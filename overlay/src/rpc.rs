//! The request-response envelope shared by every service that rides on the overlay.
//!
//! The overlay does not know the services' message types (they live in `stackerdb`,
//! `frost-fed` and `chain`, which never see libp2p). It carries a [`Service`] tag and an
//! opaque body that the service decodes with [`crate::wire::decode_body`]; the frame limit
//! has already bounded the body by then.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::wire::Versioned;

/// Which service a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Service {
    /// Stacker DB digests, clocks and chunk pulls.
    StackerDbSync,
    /// End-to-end encrypted federation frames.
    FederationFrame,
    /// Blocks fetched by a node catching up.
    BlockFetch,
    /// Block production's messages meant for one producer: votes, pre-commits,
    /// requests for missed blocks and the blocks sent back.
    ProducerDirect,
    /// Burn blocks of the embedded regtest chain fetched by a node catching up.
    BurnBlockFetch,
    /// Echoes the body back; used by tests and by operators checking a link.
    Echo,
    /// The body of a large gossip message, by digest (answered by the overlay itself).
    GossipBody,
}

impl Service {
    /// Short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Service::StackerDbSync => "stackerdb-sync",
            Service::FederationFrame => "federation-frame",
            Service::BlockFetch => "block-fetch",
            Service::ProducerDirect => "producer-direct",
            Service::BurnBlockFetch => "burn-block-fetch",
            Service::Echo => "echo",
            Service::GossipBody => "gossip-body",
        }
    }
}

/// A request: a service tag and an opaque body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Envelope version.
    pub version: u16,
    /// Service the body is for.
    pub service: Service,
    /// The service's own encoded message.
    pub body: ByteBuf,
}

impl Versioned for RpcRequest {
    const VERSION: u16 = 1;
    fn version(&self) -> u16 {
        self.version
    }
}

/// Why a service refused a request; it travels back to the requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// This node does not serve that service.
    #[error("{} is not served here", .0.name())]
    NotServed(Service),
    /// The request does not decode, or breaks the service's rules.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// What was asked for is not held here (a gossip body, a block).
    #[error("not held here")]
    NotHeld,
}

/// A response: the service's answer, or why it refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcResponse {
    /// Envelope version.
    pub version: u16,
    /// The answer body, or why the service refused the request.
    pub outcome: Result<ByteBuf, Refusal>,
}

impl Versioned for RpcResponse {
    const VERSION: u16 = 2;
    fn version(&self) -> u16 {
        self.version
    }
}

impl RpcRequest {
    /// A request of the current version.
    pub fn new(service: Service, body: Vec<u8>) -> Self {
        RpcRequest {
            version: Self::VERSION,
            service,
            body: ByteBuf::from(body),
        }
    }
}

impl RpcResponse {
    /// A response of the current version.
    pub fn new(outcome: Result<Vec<u8>, Refusal>) -> Self {
        RpcResponse {
            version: Self::VERSION,
            outcome: outcome.map(ByteBuf::from),
        }
    }
}
