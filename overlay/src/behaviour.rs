//! The composed libp2p behaviour. Order matters: `connection_limits` and the block list
//! come first, so a connection over the caps or from a banned peer is refused before any
//! other behaviour allocates state for it.

use libp2p::{
    allow_block_list, connection_limits, identify, kad, mdns, ping, request_response,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
};

use crate::{
    gossip::TenureGossipsub,
    hello::Hello,
    hello_gate::HelloGate,
    rpc::{RpcRequest, RpcResponse},
    wire::FrameCodec,
};

/// Every protocol a Tenure node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct TenureBehaviour {
    pub limits: connection_limits::Behaviour,
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Gated: nothing is gossiped with a peer before its hello.
    pub gossipsub: HelloGate<TenureGossipsub>,
    pub hello: request_response::Behaviour<FrameCodec<Hello, Hello>>,
    pub rpc: request_response::Behaviour<FrameCodec<RpcRequest, RpcResponse>>,
}
