//! Network ids and the gossip topics derived from them.
//!
//! Topics are per kind of message, never per Stacker DB or per member: a peer that lists
//! more than [`MAX_TOPICS_PER_PEER`] topics is refused by gossipsub's subscription filter,
//! and a node may replicate up to 256 DBs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most topics a peer may subscribe to before gossipsub refuses its subscriptions.
pub const MAX_TOPICS_PER_PEER: usize = 100;

/// Longest network id, in bytes.
pub const MAX_NETWORK_ID_LEN: usize = 32;

/// The name of one Tenure network (`testnet`, `mainnet`, `pool-eu`…): lower-case ASCII
/// letters, digits and `-`, 1 to 32 bytes. Peers on different networks never talk.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkId(String);

impl NetworkId {
    /// Checks the name and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, NetworkIdError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_NETWORK_ID_LEN {
            return Err(NetworkIdError::Length(name.len()));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NetworkIdError::Character(bad));
        }
        Ok(NetworkId(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NetworkId {
    type Error = NetworkIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NetworkId::new(s)
    }
}

impl From<NetworkId> for String {
    fn from(id: NetworkId) -> String {
        id.0
    }
}

/// Why a network id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkIdError {
    /// Empty or too long.
    #[error("network id must be 1 to {MAX_NETWORK_ID_LEN} bytes, got {0}")]
    Length(usize),
    /// A character outside `a-z`, `0-9`, `-`.
    #[error("network id may hold only a-z, 0-9 and '-', found {0:?}")]
    Character(char),
}

/// The kinds of gossip the overlay carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Signed blocks.
    Blocks,
    /// Announcements of newly accepted Stacker DB chunks.
    StackerDbChunks,
    /// Blocks of the embedded regtest burnchain.
    BurnBlocks,
    /// Federation frames relayed for members with no direct connection.
    FederationFrames,
    /// Liveness beacons of the testnet.
    Heartbeat,
    /// Signed transfers on their way to the producers' mempools.
    Transactions,
    /// Producers' certificates of their term's key, for every node to verify.
    TermKeys,
    /// Producers' contacts: the federation channel each binds to its enrollment key.
    Contacts,
    /// Bitcoin transactions on their way to the embedded regtest chain's miner.
    BurnTransactions,
}

impl Topic {
    /// Every topic, in a fixed order.
    pub const ALL: [Topic; 9] = [
        Topic::Blocks,
        Topic::StackerDbChunks,
        Topic::BurnBlocks,
        Topic::FederationFrames,
        Topic::Heartbeat,
        Topic::Transactions,
        Topic::TermKeys,
        Topic::Contacts,
        Topic::BurnTransactions,
    ];

    /// The short name used in topic strings and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Blocks => "blocks",
            Topic::StackerDbChunks => "stackerdb-chunks",
            Topic::BurnBlocks => "burn-blocks",
            Topic::FederationFrames => "federation-frames",
            Topic::Heartbeat => "heartbeat",
            Topic::Transactions => "transactions",
            Topic::TermKeys => "term-keys",
            Topic::Contacts => "contacts",
            Topic::BurnTransactions => "burn-txs",
        }
    }

    /// The gossipsub topic string on `network`: `/tenure/<network>/<kind>/1`.
    pub fn topic_string(self, network: &NetworkId) -> String {
        format!("/tenure/{network}/{}/1", self.name())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_id_accepts_lower_case_digits_and_dashes() {
        assert_eq!(
            NetworkId::new("tenure-test-1").unwrap().as_str(),
            "tenure-test-1"
        );
    }

    #[test]
    fn network_id_refuses_empty_long_and_odd_names() {
        assert_eq!(NetworkId::new(""), Err(NetworkIdError::Length(0)));
        assert_eq!(
            NetworkId::new("a".repeat(33)),
            Err(NetworkIdError::Length(33))
        );
        assert_eq!(NetworkId::new("Main"), Err(NetworkIdError::Character('M')));
        assert_eq!(NetworkId::new("a/b"), Err(NetworkIdError::Character('/')));
    }

    #[test]
    fn topics_differ_between_networks_and_kinds() {
        let a = NetworkId::new("a").unwrap();
        let b = NetworkId::new("b").unwrap();
        assert_eq!(Topic::Blocks.topic_string(&a), "/tenure/a/blocks/1");
        assert_ne!(
            Topic::Blocks.topic_string(&a),
            Topic::Blocks.topic_string(&b)
        );
        let mut all: Vec<_> = Topic::ALL.iter().map(|t| t.topic_string(&a)).collect();
        all.dedup();
        assert_eq!(all.len(), Topic::ALL.len());
    }
}
