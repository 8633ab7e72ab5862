//! Tenure's peer-to-peer overlay, on rust-libp2p.
//!
//! This crate is the only one that knows libp2p. It runs TCP + Noise + Yamux with
//! identify, ping, Kademlia (server mode) and optional mDNS for discovery; gossipsub with
//! application validation, content-hash message ids and peer scoring; and two
//! request-response protocols sharing one size-limited CBOR codec: the hello exchange
//! (network id, chain tip, replicated Stacker DBs) and a service envelope that carries
//! Stacker DB sync, federation frames and block fetches for the crates above.
//!
//! One task owns the swarm ([`spawn`]); the application holds a cloneable
//! [`OverlayHandle`] and reads [`OverlayEvents`]. Peers that send oversized or
//! undecodable frames, bad hellos or invalid gossip are penalised and then banned
//! ([`reputation`]); peers of another network are refused at hello.
//!
//! What it is not: it holds no protocol rules of the chain, Stacker DBs or the
//! federation. Those crates are sans-IO and are wired to this one by the node.

pub mod bodies;
pub mod body_fetch;
pub mod codec;
pub mod config;
pub mod event;
pub mod gossip;
pub mod handle;
pub mod heartbeat;
pub mod hello;
pub mod hello_gate;
pub mod identity;
pub mod localnet;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod reputation;
pub mod rpc;
pub mod wire;

mod behaviour;
mod service;

pub use config::{ConfigError, ConnectionCaps, GossipParams, OverlayConfig, loopback_any_port};
pub use event::OverlayEvent;
pub use gossip::{GossipValidator, Verdict, accept_all};
pub use handle::{
    InboundId, OverlayError, OverlayEvents, OverlayHandle, OverlayStatus, PeerSummary, RequestError,
};
pub use hello::{Hello, HelloError};
pub use identity::{KeyError, NodeKey};
pub use metrics::{MetricsSnapshot, OverlayMetrics};
pub use network::{NetworkId, NetworkIdError, Topic};
pub use reputation::Misbehaviour;
pub use rpc::{Refusal, Service};
pub use service::{HELLO_PROTOCOL, RPC_PROTOCOL, spawn};

/// Peer ids and addresses, re-exported so other crates need not depend on libp2p.
pub use libp2p::{Multiaddr, PeerId};
