//! Sync messages between replicas of one DB.

use serde::{Deserialize, Serialize};

use crate::{
    chunk::Chunk,
    clock::{ClockDigest, PartialClock, SlotClock},
    codec::{self, CodecError, Versioned},
    db::DbId,
};

/// Message version this build speaks.
pub const SYNC_VERSION: u16 = 2;

/// One sync message, for one DB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMessage {
    /// Message version.
    pub version: u16,
    /// The DB it concerns.
    pub db: DbId,
    /// The sender's GC epoch ([`crate::Replica::gc_epoch`]): replicas at different
    /// epochs do not exchange chunks.
    pub gc_epoch: u64,
    /// What it says.
    pub body: SyncBody,
}

/// The kinds of sync message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncBody {
    /// A chunk was newly accepted at the sender (gossiped to every replica).
    Announce {
        /// Its slot.
        slot: u32,
        /// Its clock entry.
        entry: SlotClock,
    },
    /// The per-range digest of the sender's clock (anti-entropy).
    ClockDigest(ClockDigest),
    /// The ranges of the sender's clock that differed from a digest it received.
    Clock(PartialClock),
    /// Please send the chunks of these slots.
    Pull(Vec<u32>),
    /// Chunks, answering a pull or pushed to a lagging peer.
    Chunks(Vec<Chunk>),
}

impl Versioned for SyncMessage {
    const VERSION: u16 = SYNC_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

impl SyncMessage {
    /// A message of the current version.
    pub fn new(db: DbId, gc_epoch: u64, body: SyncBody) -> Self {
        SyncMessage {
            version: SYNC_VERSION,
            db,
            gc_epoch,
            body,
        }
    }

    /// The message's kind and size in slots, for logs.
    pub fn describe(&self) -> String {
        match &self.body {
            SyncBody::Announce { slot, .. } => format!("announce slot {slot}"),
            SyncBody::ClockDigest(_) => "digest".to_owned(),
            SyncBody::Clock(clock) => format!("clock of {} slots", clock.len()),
            SyncBody::Pull(slots) => format!("pull of {} slots", slots.len()),
            SyncBody::Chunks(chunks) => format!("{} chunks", chunks.len()),
        }
    }
}

/// Largest sync message accepted from a peer: a push of up to 2 MiB of chunks with
/// their signatures and framing.
pub const MAX_SYNC_MESSAGE_BYTES: usize = 3 * 1024 * 1024;

/// Largest announcement accepted on gossip.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 512;

/// The check a relay makes on a gossiped announcement before forwarding it: an
/// announcement of this version, within [`MAX_ANNOUNCEMENT_BYTES`].
pub fn check_announcement(data: &[u8]) -> Result<SyncMessage, SyncDecodeError> {
    let msg = decode(data, MAX_ANNOUNCEMENT_BYTES)?;
    if !matches!(msg.body, SyncBody::Announce { .. }) {
        return Err(SyncDecodeError::NotAnAnnouncement);
    }
    Ok(msg)
}

/// Why bytes are not a usable sync message.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncDecodeError {
    /// Too large, undecodable or of another version.
    #[error("sync message: {0}")]
    Codec(#[from] CodecError),
    /// Another kind of message on the announcements topic.
    #[error("not an announcement")]
    NotAnAnnouncement,
}

/// Encodes a message.
pub fn encode(msg: &SyncMessage) -> Result<Vec<u8>, CodecError> {
    codec::encode(msg)
}

/// Decodes a message of at most `limit` bytes.
pub fn decode(bytes: &[u8], limit: usize) -> Result<SyncMessage, SyncDecodeError> {
    Ok(codec::decode(bytes, limit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bounds_hold() {
        let db = DbId::new("d").unwrap();
        let msg = SyncMessage::new(db, 0, SyncBody::Pull(vec![1, 2, 3]));
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode(&bytes, 1024), Ok(msg));
        assert!(matches!(
            decode(&bytes, 4),
            Err(SyncDecodeError::Codec(CodecError::TooLarge { .. }))
        ));
        assert!(matches!(
            decode(&[0xff, 0x00], 1024),
            Err(SyncDecodeError::Codec(CodecError::Undecodable(_)))
        ));
        assert_eq!(
            check_announcement(&bytes),
            Err(SyncDecodeError::NotAnAnnouncement)
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..512)) {
            let _ = decode(&bytes, 4096);
        }
    }
}
