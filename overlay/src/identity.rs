//! The node's long-term identity: an ed25519 key whose public half is its peer id.

use libp2p::{PeerId, identity::Keypair};

/// A node's secret key. The peer id is derived from it.
#[derive(Clone)]
pub struct NodeKey(Keypair);

impl NodeKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        NodeKey(Keypair::generate_ed25519())
    }

    /// The key from its 32 secret bytes.
    pub fn from_secret_bytes(mut secret: [u8; 32]) -> Result<Self, KeyError> {
        Keypair::ed25519_from_bytes(&mut secret)
            .map(NodeKey)
            .map_err(|e| KeyError(e.to_string()))
    }

    /// The 32 secret bytes, for the key file.
    pub fn secret_bytes(&self) -> Result<[u8; 32], KeyError> {
        let ed = self
            .0
            .clone()
            .try_into_ed25519()
            .map_err(|e| KeyError(e.to_string()))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(ed.secret().as_ref());
        Ok(out)
    }

    /// The peer id other nodes know this node by.
    pub fn peer_id(&self) -> PeerId {
        self.0.public().to_peer_id()
    }

    pub(crate) fn keypair(&self) -> &Keypair {
        &self.0
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.peer_id())
    }
}

/// A key that could not be built or exported.
#[derive(Debug, thiserror::Error)]
#[error("invalid node key: {0}")]
pub struct KeyError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_round_trip_to_the_same_peer_id() {
        let key = NodeKey::generate();
        let again = NodeKey::from_secret_bytes(key.secret_bytes().unwrap()).unwrap();
        assert_eq!(key.peer_id(), again.peer_id());
    }
}
