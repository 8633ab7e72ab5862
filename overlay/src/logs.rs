//! The overlay's log targets: `tenure::overlay::*`, one per concern, so a filter such
//! as `tenure::overlay::peers=debug` follows one thing. The node's `logs` module lists
//! every target of the workspace in one table.

/// The service's life: listening, stopping.
pub const SERVICE: &str = "tenure::overlay";
/// Connections, hellos, penalties, bans.
pub const PEERS: &str = "tenure::overlay::peers";
/// Bootstrap dials and Kademlia.
pub const DISCOVERY: &str = "tenure::overlay::discovery";
/// Gossip validation and message bodies.
pub const GOSSIP: &str = "tenure::overlay::gossip";
