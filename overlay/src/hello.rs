//! The hello exchange every connection starts with.
//!
//! The dialer sends its [`Hello`]; the listener answers with its own. Each side then knows
//! the other's network, chain tip and the Stacker DBs it replicates (the SIP: "Stacks
//! nodes exchange a list of up to 256 Stacker DBs to which they are subscribed"), which
//! is how Stacker DB sync finds neighbours. A peer on another network is refused; a hello
//! that breaks a bound is a protocol error and the peer is penalised.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{network::NetworkId, wire::Versioned};

/// Most Stacker DBs a node may list in its hello (the SIP's bound).
pub const MAX_STACKER_DBS: usize = 256;

/// Longest Stacker DB name, in bytes.
pub const MAX_STACKER_DB_NAME_BYTES: usize = 128;

/// Longest chain tip, in bytes (opaque to the overlay: the chain crate fills it).
pub const MAX_CHAIN_TIP_BYTES: usize = 128;

/// Largest hello frame. 256 names of 128 bytes plus a tip fit with room to spare; a
/// frame over this is refused before it is read.
pub const HELLO_FRAME_LIMIT: usize = 64 * 1024;

/// What a node tells each peer it connects to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Message version ([`Hello::VERSION`]).
    pub version: u16,
    /// Network the sender belongs to.
    pub network_id: NetworkId,
    /// The sender's chain tip, opaque bytes.
    pub chain_tip: ByteBuf,
    /// Names of the Stacker DBs the sender replicates.
    pub stacker_dbs: Vec<String>,
}

impl Versioned for Hello {
    const VERSION: u16 = 1;
    fn version(&self) -> u16 {
        self.version
    }
}

impl Hello {
    /// A hello for `network_id` with the given tip and DB list.
    pub fn new(network_id: NetworkId, chain_tip: Vec<u8>, stacker_dbs: Vec<String>) -> Self {
        Hello {
            version: Self::VERSION,
            network_id,
            chain_tip: ByteBuf::from(chain_tip),
            stacker_dbs,
        }
    }

    /// Checks the bounds every hello must keep, whoever sent it.
    pub fn check_bounds(&self) -> Result<(), HelloError> {
        if self.chain_tip.len() > MAX_CHAIN_TIP_BYTES {
            return Err(HelloError::ChainTipTooLong(self.chain_tip.len()));
        }
        if self.stacker_dbs.len() > MAX_STACKER_DBS {
            return Err(HelloError::TooManyStackerDbs(self.stacker_dbs.len()));
        }
        if let Some(name) = self.stacker_dbs.iter().find(|n| !valid_db_name(n)) {
            return Err(HelloError::BadStackerDbName(
                name.chars().take(40).collect(),
            ));
        }
        Ok(())
    }

    /// Checks a peer's hello against our network: bounds first, then the network id.
    pub fn check_peer(&self, local_network: &NetworkId) -> Result<(), HelloError> {
        self.check_bounds()?;
        if &self.network_id != local_network {
            return Err(HelloError::NetworkMismatch {
                ours: local_network.clone(),
                theirs: self.network_id.clone(),
            });
        }
        Ok(())
    }
}

fn valid_db_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STACKER_DB_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_graphic())
}

/// Why a peer's hello was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    /// The peer is on another network.
    #[error("peer is on network {theirs}, we are on {ours}")]
    NetworkMismatch {
        /// Our network.
        ours: NetworkId,
        /// The peer's network.
        theirs: NetworkId,
    },
    /// More Stacker DBs than the protocol allows.
    #[error("hello lists {0} Stacker DBs, at most {MAX_STACKER_DBS} are allowed")]
    TooManyStackerDbs(usize),
    /// A DB name that is empty, too long or not printable ASCII.
    #[error("hello lists an invalid Stacker DB name {0:?}")]
    BadStackerDbName(String),
    /// A chain tip longer than the protocol allows.
    #[error("hello chain tip of {0} bytes exceeds {MAX_CHAIN_TIP_BYTES}")]
    ChainTipTooLong(usize),
}

impl HelloError {
    /// A mismatch is a different network, not misbehaviour; the rest are protocol errors.
    pub fn is_protocol_violation(&self) -> bool {
        !matches!(self, HelloError::NetworkMismatch { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_frame, encode_frame};

    fn net(name: &str) -> NetworkId {
        NetworkId::new(name).unwrap()
    }

    #[test]
    fn hello_round_trips_through_a_frame() {
        let hello = Hello::new(net("t"), vec![1, 2, 3], vec!["producers".into()]);
        let frame = encode_frame(&hello, HELLO_FRAME_LIMIT).unwrap();
        assert_eq!(
            decode_frame::<Hello>(&frame, HELLO_FRAME_LIMIT).unwrap(),
            hello
        );
    }

    #[test]
    fn the_full_list_of_256_long_names_fits_in_a_frame() {
        let names = (0..MAX_STACKER_DBS)
            .map(|i| format!("{i:0>128}"))
            .collect::<Vec<_>>();
        let hello = Hello::new(net("t"), vec![0; MAX_CHAIN_TIP_BYTES], names);
        assert_eq!(hello.check_bounds(), Ok(()));
        assert!(encode_frame(&hello, HELLO_FRAME_LIMIT).is_ok());
    }

    #[test]
    fn more_than_256_stacker_dbs_is_a_protocol_error() {
        let names = (0..=MAX_STACKER_DBS).map(|i| format!("db{i}")).collect();
        let err = Hello::new(net("t"), vec![], names)
            .check_peer(&net("t"))
            .unwrap_err();
        assert_eq!(err, HelloError::TooManyStackerDbs(257));
        assert!(err.is_protocol_violation());
    }

    #[test]
    fn another_network_is_a_mismatch_not_a_violation() {
        let err = Hello::new(net("a"), vec![], vec![])
            .check_peer(&net("b"))
            .unwrap_err();
        assert!(matches!(err, HelloError::NetworkMismatch { .. }));
        assert!(!err.is_protocol_violation());
    }

    #[test]
    fn bad_names_and_long_tips_are_refused() {
        let h = Hello::new(net("t"), vec![], vec!["has space".into()]);
        assert!(matches!(
            h.check_bounds(),
            Err(HelloError::BadStackerDbName(_))
        ));
        let h = Hello::new(net("t"), vec![], vec![String::new()]);
        assert!(matches!(
            h.check_bounds(),
            Err(HelloError::BadStackerDbName(_))
        ));
        let h = Hello::new(net("t"), vec![0; 129], vec![]);
        assert_eq!(h.check_bounds(), Err(HelloError::ChainTipTooLong(129)));
    }

    #[test]
    fn a_hello_naming_an_invalid_network_does_not_decode() {
        #[derive(Serialize)]
        struct RawHello {
            version: u16,
            network_id: String,
            chain_tip: ByteBuf,
            stacker_dbs: Vec<String>,
        }
        let raw = RawHello {
            version: 1,
            network_id: "Not Valid".into(),
            chain_tip: ByteBuf::new(),
            stacker_dbs: vec![],
        };
        let frame = encode_frame(&raw, HELLO_FRAME_LIMIT).unwrap();
        assert!(decode_frame::<Hello>(&frame, HELLO_FRAME_LIMIT).is_err());
    }
}
