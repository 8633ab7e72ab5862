//! Every log target of the workspace, in one table. Targets are hierarchical, so
//! `TENURE_LOG=tenure::overlay=debug` follows the whole overlay and
//! `TENURE_LOG=tenure::fed::dkg=debug` one protocol of the federation.
//!
//! | target | what logs there |
//! |---|---|
//! | `tenure::node` | the node's life: start, stop, its listen and HTTP addresses |
//! | `tenure::node::http` | the HTTP API |
//! | `tenure::overlay` | the overlay service: listening, stopping |
//! | `tenure::overlay::peers` | connections, hellos, penalties, bans |
//! | `tenure::overlay::discovery` | bootstrap dials, Kademlia |
//! | `tenure::overlay::gossip` | gossip validation, message bodies |
//! | `tenure::stackerdb::sync` | Stacker DB replication |
//! | `tenure::chain::burnchain` | following the burnchain |
//! | `tenure::fed::channel` | federation channels: frames that could not be delivered |
//! | `tenure::fed::courier` | federation frames on the overlay (relays by gossip) |
//! | `tenure::fed::dkg` | the DKG |
//! | `tenure::fed::sign` | signing: cheaters named |
//! | `tenure::produce` | block production: leaders, deposed leaders, refused messages |
//!
//! Colour codes are written only when standard error is a terminal, so a log file
//! holds plain text.

pub use tenure_overlay::logs::{
    DISCOVERY as OVERLAY_DISCOVERY, GOSSIP as OVERLAY_GOSSIP, PEERS as OVERLAY_PEERS,
    SERVICE as OVERLAY,
};

/// The node's life.
pub const NODE: &str = "tenure::node";
/// The HTTP API.
pub const HTTP: &str = "tenure::node::http";
/// Stacker DB replication.
pub const STACKERDB: &str = "tenure::stackerdb::sync";
/// Following the burnchain.
pub const BURNCHAIN: &str = "tenure::chain::burnchain";
/// Federation channels.
pub const FED_CHANNEL: &str = "tenure::fed::channel";
/// Federation frames on the overlay.
pub const FED_COURIER: &str = "tenure::fed::courier";
/// The federation's DKG.
pub const FED_DKG: &str = "tenure::fed::dkg";
/// The federation's signing.
pub const FED_SIGN: &str = "tenure::fed::sign";
/// Block production.
pub const PRODUCER: &str = "tenure::produce";

/// Installs the subscriber: `filter` on standard error, colour only on a terminal.
pub fn init(filter: tracing_subscriber::EnvFilter) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
