//! Overlay configuration and its validation.
//!
//! libp2p's gossipsub builder accepts mesh parameters that make no sense together (it
//! checks only a few relations, and only for topics configured up front), so every
//! parameter that shapes the mesh is checked here, with an error that names the field
//! and the value, before a swarm is built.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::network::NetworkId;

/// Smallest gossip message size the overlay accepts: a block or a FROST signing package
/// with its signer set must fit in one message.
pub const MIN_GOSSIP_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Room for the RPC envelope around a gossip body fetched by request.
const RPC_ENVELOPE_OVERHEAD: usize = 4096;

/// Everything one overlay node needs to run.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// Network this node belongs to; peers on another network are refused.
    pub network_id: NetworkId,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0` picks a free port).
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers dialled at start and whenever the node has no peers at all.
    pub bootstrap_peers: Vec<Multiaddr>,
    /// Discover peers on the local link with mDNS.
    pub enable_mdns: bool,
    /// Names of the Stacker DBs this node replicates, for its first hello (change them
    /// later with [`crate::OverlayHandle::set_hello`]).
    pub stacker_dbs: Vec<String>,
    /// The node keeps dialling discovered peers until it has this many.
    pub target_peers: usize,
    /// Above this many peers the node closes connections to peers outside every gossip
    /// mesh, oldest first: discovery touches many peers, and a node connected to the
    /// whole network pays for every one of them.
    pub max_peers: usize,
    /// Connection limits, enforced before any other behaviour sees a connection.
    pub limits: ConnectionCaps,
    /// Gossip mesh parameters.
    pub gossip: GossipParams,
    /// Largest request-response frame accepted, in bytes (the hello has its own small cap).
    pub max_rpc_frame_bytes: usize,
    /// How long an outbound request waits for its response.
    pub request_timeout: Duration,
    /// Capacity of the command channel from handles to the swarm task.
    pub command_queue: usize,
    /// Capacity of the event channel to the application; when full, events are dropped
    /// and counted rather than stalling the swarm.
    pub event_queue: usize,
    /// Connections with no open stream are closed after this long.
    pub idle_connection_timeout: Duration,
    /// How often the node looks for more peers while below `target_peers`.
    pub discovery_interval: Duration,
    /// How long a banned peer stays banned.
    pub ban_duration: Duration,
}

impl OverlayConfig {
    /// A configuration for `network_id` listening on a free loopback port, with the
    /// defaults a testnet on one machine wants.
    pub fn loopback(network_id: NetworkId) -> Self {
        OverlayConfig {
            network_id,
            listen_addrs: vec![loopback_any_port()],
            bootstrap_peers: Vec::new(),
            enable_mdns: false,
            stacker_dbs: Vec::new(),
            target_peers: 12,
            // Well above the target: pruning at 24 in a 50-node testnet churned meshes
            // below D_lo (Kademlia's bootstrap keeps dialling); 48 connections cost a
            // node about 7 MiB in all.
            max_peers: 48,
            limits: ConnectionCaps::default(),
            gossip: GossipParams::default(),
            max_rpc_frame_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            command_queue: 256,
            event_queue: 4096,
            idle_connection_timeout: Duration::from_secs(120),
            discovery_interval: Duration::from_secs(2),
            ban_duration: Duration::from_secs(3600),
        }
    }

    /// Checks every field that libp2p would take without complaint but that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen_addrs.is_empty() {
            return Err(ConfigError::NoListenAddress);
        }
        if self.max_rpc_frame_bytes < 1024 {
            return Err(ConfigError::Invalid {
                field: "max_rpc_frame_bytes",
                value: self.max_rpc_frame_bytes.to_string(),
                reason: "must be at least 1024",
            });
        }
        if self.command_queue == 0 || self.event_queue == 0 {
            return Err(ConfigError::Invalid {
                field: "command_queue/event_queue",
                value: format!("{}/{}", self.command_queue, self.event_queue),
                reason: "queues must hold at least one item",
            });
        }
        if self.max_rpc_frame_bytes < self.gossip.max_message_bytes + RPC_ENVELOPE_OVERHEAD {
            return Err(ConfigError::Invalid {
                field: "max_rpc_frame_bytes",
                value: self.max_rpc_frame_bytes.to_string(),
                reason: "must hold the largest gossip message plus its envelope",
            });
        }
        if self.limits.max_per_peer == 0 {
            return Err(ConfigError::Invalid {
                field: "limits.max_per_peer",
                value: "0".into(),
                reason: "at least one connection per peer is needed",
            });
        }
        if self.target_peers > self.max_peers {
            return Err(ConfigError::Invalid {
                field: "target_peers",
                value: self.target_peers.to_string(),
                reason: "larger than max_peers",
            });
        }
        if self.max_peers > self.limits.max_established as usize {
            return Err(ConfigError::Invalid {
                field: "max_peers",
                value: self.max_peers.to_string(),
                reason: "larger than limits.max_established",
            });
        }
        self.gossip.validate()
    }
}

/// `/ip4/127.0.0.1/tcp/0`: loopback on a port the kernel picks.
pub fn loopback_any_port() -> Multiaddr {
    Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4(
            std::net::Ipv4Addr::LOCALHOST,
        ))
        .with(libp2p::multiaddr::Protocol::Tcp(0))
}

/// Caps on connections, applied by `connection_limits` before other behaviours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Established connections in total.
    pub max_established: u32,
    /// Established connections to one peer (two allow a simultaneous dial to settle).
    pub max_per_peer: u32,
    /// Incoming connections still in their handshake.
    pub max_pending_incoming: u32,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        ConnectionCaps {
            max_established: 128,
            max_per_peer: 2,
            max_pending_incoming: 64,
        }
    }
}

/// Gossipsub mesh parameters (the spec's D, D_lo, D_hi, D_lazy, D_out).
#[derive(Clone, Debug, PartialEq)]
pub struct GossipParams {
    /// D: the mesh degree the node aims for.
    pub mesh_n: usize,
    /// D_lo: below this the node grafts more peers.
    pub mesh_n_low: usize,
    /// D_hi: above this the node prunes peers.
    pub mesh_n_high: usize,
    /// D_out: outbound peers kept in the mesh (eclipse resistance).
    pub mesh_outbound_min: usize,
    /// D_lazy: peers sent IHAVE gossip each heartbeat.
    pub gossip_lazy: usize,
    /// Heartbeat interval of the mesh maintenance.
    pub heartbeat_interval: Duration,
    /// Heartbeats of message history kept for IWANT.
    pub history_length: usize,
    /// Heartbeats of history advertised in IHAVE.
    pub history_gossip: usize,
    /// Largest gossip message in bytes.
    pub max_message_bytes: usize,
    /// Messages longer than this are gossiped as an announcement and their bodies pulled
    /// once per node (see [`crate::bodies`]).
    pub large_message_bytes: usize,
    /// Publish own messages to every connected peer rather than the mesh. Off: with
    /// meshes of 4–12 it multiplies upload and signature checks for little gain.
    pub flood_publish: bool,
    /// An attack switch for tests and the testnet's fault injection: the node forwards
    /// announcements without fetching their bodies, announces its own large messages
    /// without keeping them, and refuses every body request. Never set it otherwise.
    pub withhold_bodies: bool,
}

/// The defaults are a smaller mesh than the gossipsub spec's 6/4/12: producer sets are
/// at most 100 nodes and blocks are large, and every mesh peer beyond the first sends a
/// duplicate that costs a full-size signature check. Measured with 1 MiB messages on 20
/// nodes (`tenure bench gossip`): D=6 sent 4.1–4.9 bytes per byte published per node,
/// D=4 sent 3.0, with p50 latency 25% lower. IHAVE gossip to 6 lazy peers keeps the
/// redundancy that repairs a missed message.
impl Default for GossipParams {
    fn default() -> Self {
        GossipParams {
            mesh_n: 4,
            mesh_n_low: 3,
            mesh_n_high: 8,
            mesh_outbound_min: 2,
            gossip_lazy: 6,
            heartbeat_interval: Duration::from_millis(700),
            history_length: 6,
            history_gossip: 3,
            max_message_bytes: MIN_GOSSIP_MESSAGE_BYTES + 64 * 1024,
            large_message_bytes: 32 * 1024,
            flood_publish: false,
            withhold_bodies: false,
        }
    }
}

impl GossipParams {
    /// The relations the gossipsub spec requires between the mesh parameters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: usize, reason| {
            Err(ConfigError::Invalid {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if self.mesh_n == 0 {
            return invalid("gossip.mesh_n", self.mesh_n, "must be at least 1");
        }
        if self.mesh_n_low == 0 || self.mesh_n_low > self.mesh_n {
            return invalid(
                "gossip.mesh_n_low",
                self.mesh_n_low,
                "must be in 1..=mesh_n",
            );
        }
        if self.mesh_n_high < self.mesh_n {
            return invalid(
                "gossip.mesh_n_high",
                self.mesh_n_high,
                "must be at least mesh_n",
            );
        }
        if self.mesh_outbound_min > self.mesh_n_low || self.mesh_outbound_min * 2 > self.mesh_n {
            return invalid(
                "gossip.mesh_outbound_min",
                self.mesh_outbound_min,
                "must be at most mesh_n_low and at most mesh_n / 2",
            );
        }
        if self.heartbeat_interval.is_zero() {
            return invalid("gossip.heartbeat_interval", 0, "must be positive");
        }
        if self.history_gossip == 0 || self.history_gossip > self.history_length {
            return invalid(
                "gossip.history_gossip",
                self.history_gossip,
                "must be in 1..=history_length",
            );
        }
        if self.max_message_bytes < MIN_GOSSIP_MESSAGE_BYTES {
            return invalid(
                "gossip.max_message_bytes",
                self.max_message_bytes,
                "must be at least 4 MiB",
            );
        }
        Ok(())
    }
}

/// A configuration that cannot work, naming the field and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A field has a value the overlay cannot run with.
    #[error("invalid {field} = {value}: {reason}")]
    Invalid {
        /// The field, as named in the config.
        field: &'static str,
        /// The value found.
        value: String,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// No address to listen on.
    #[error("no listen address configured")]
    NoListenAddress,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OverlayConfig {
        OverlayConfig::loopback(NetworkId::new("test").unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn mesh_low_above_degree_is_refused() {
        let mut c = config();
        c.gossip.mesh_n_low = c.gossip.mesh_n + 1;
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("gossip.mesh_n_low = 5"), "{err}");
    }

    #[test]
    fn mesh_high_below_degree_is_refused() {
        let mut c = config();
        c.gossip.mesh_n_high = c.gossip.mesh_n - 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "gossip.mesh_n_high",
                ..
            })
        ));
    }

    #[test]
    fn outbound_min_over_half_the_degree_is_refused() {
        let mut c = config();
        c.gossip.mesh_outbound_min = 3;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "gossip.mesh_outbound_min",
                ..
            })
        ));
    }

    #[test]
    fn gossip_history_longer_than_kept_is_refused() {
        let mut c = config();
        c.gossip.history_gossip = 7;
        assert!(c.validate().is_err());
    }

    #[test]
    fn messages_below_four_mib_are_refused() {
        let mut c = config();
        c.gossip.max_message_bytes = 1024 * 1024;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "gossip.max_message_bytes",
                ..
            })
        ));
    }

    #[test]
    fn no_listen_address_is_refused() {
        let mut c = config();
        c.listen_addrs.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoListenAddress));
    }

    #[test]
    fn peer_targets_beyond_their_caps_are_refused() {
        let mut c = config();
        c.limits.max_established = 4;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "max_peers",
                ..
            })
        ));
        let mut c = config();
        c.target_peers = c.max_peers + 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "target_peers",
                ..
            })
        ));
    }
}
