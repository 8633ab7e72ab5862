//! Heartbeats: the liveness beacons nodes gossip on the heartbeat topic to show the
//! mesh carries messages end to end. A heartbeat is accepted only from the peer it
//! names, so a relay cannot claim another's liveness.

use crate::{
    PeerId, Verdict,
    codec::{self, CodecError},
    wire::{Versioned, decode_body},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Largest heartbeat accepted, in bytes.
pub const MAX_HEARTBEAT_BYTES: usize = 256;

/// One beacon: who sent it and its sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Message version.
    pub version: u16,
    /// The sender's peer id bytes (must match the gossip source).
    pub sender: ByteBuf,
    /// Counts up from 0 per sender.
    pub seq: u64,
}

impl Versioned for Heartbeat {
    const VERSION: u16 = 1;
    fn version(&self) -> u16 {
        self.version
    }
}

impl Heartbeat {
    /// Heartbeat number `seq` from `sender`.
    pub fn new(sender: PeerId, seq: u64) -> Self {
        Heartbeat {
            version: Self::VERSION,
            sender: ByteBuf::from(sender.to_bytes()),
            seq,
        }
    }

    /// Encodes for gossip.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes a heartbeat, bounded in size.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        decode_body(bytes, MAX_HEARTBEAT_BYTES).ok()
    }

    /// The sender as a peer id, if the bytes are one.
    pub fn sender(&self) -> Option<PeerId> {
        PeerId::from_bytes(&self.sender).ok()
    }
}

/// Gossip validation: a heartbeat must decode and name its signed source as sender.
pub fn validate(source: Option<PeerId>, data: &[u8]) -> Verdict {
    let Some(beat) = Heartbeat::decode(data) else {
        return Verdict::Reject("undecodable heartbeat".into());
    };
    match (beat.sender(), source) {
        (Some(sender), Some(source)) if sender == source => Verdict::Accept,
        _ => Verdict::Reject("heartbeat sender is not its source".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_from_its_sender_is_accepted() {
        let peer = PeerId::random();
        let beat = Heartbeat::new(peer, 7).encode().unwrap();
        assert_eq!(validate(Some(peer), &beat), Verdict::Accept);
        assert_eq!(Heartbeat::decode(&beat).unwrap().seq, 7);
    }

    #[test]
    fn a_relayed_claim_and_garbage_are_rejected() {
        let beat = Heartbeat::new(PeerId::random(), 1).encode().unwrap();
        assert!(matches!(
            validate(Some(PeerId::random()), &beat),
            Verdict::Reject(_)
        ));
        assert!(matches!(validate(None, &[1, 2, 3]), Verdict::Reject(_)));
        assert!(matches!(validate(None, &vec![0; 1024]), Verdict::Reject(_)));
    }
}
