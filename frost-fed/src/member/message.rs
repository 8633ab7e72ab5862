//! What members say to each other inside their channels, and the bundles of frames
//! that carry channel traffic between overlay peers.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{broadcast::BroadcastMessage, channel::frame::MAX_FRAME_BYTES, dkg::DkgMessage, sign};

/// One message inside a channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FedMessage {
    /// Echo broadcast (carries an encoded [`Broadcasted`]).
    Broadcast(BroadcastMessage),
    /// A DKG message for this member alone (round-2 shares).
    Dkg(DkgMessage),
    /// A signing message.
    Sign(sign::SignMessage),
    /// Several messages for one member, gathered over one tick: a round's echoes to a
    /// member travel as one message, so a member sends O(members) per round. Batches
    /// are flat: a batch inside a batch is ignored.
    Batch(Vec<FedMessage>),
}

/// What is sent by echo broadcast.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Broadcasted {
    /// A DKG message for everyone.
    Dkg(DkgMessage),
}

/// Bytes of frames in one bundle, at most.
pub const MAX_BUNDLE_BYTES: usize = 2 * 1024 * 1024;

/// Frames in one bundle, at most.
pub const MAX_BUNDLE_FRAMES: usize = 4096;

/// Largest encoded bundle accepted: [`MAX_BUNDLE_BYTES`] plus one frame that crossed
/// the line, plus framing.
pub const MAX_ENCODED_BUNDLE_BYTES: usize = MAX_BUNDLE_BYTES + MAX_FRAME_BYTES + 64 * 1024;

/// Why bytes are not a bundle of frames.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Longer than [`MAX_ENCODED_BUNDLE_BYTES`].
    #[error("bundle of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a CBOR list of byte strings.
    #[error("undecodable bundle: {0}")]
    Undecodable(String),
    /// More than [`MAX_BUNDLE_FRAMES`] frames.
    #[error("bundle of {0} frames")]
    TooManyFrames(usize),
    /// Encoding failed (it cannot for a list of byte strings; an error rather than
    /// empty bytes on the wire).
    #[error("encoding a bundle failed: {0}")]
    Encode(String),
}

/// Encodes frames queued for one member as one bundle.
pub fn encode_bundle(frames: Vec<Vec<u8>>) -> Result<Vec<u8>, BundleError> {
    let frames: Vec<ByteBuf> = frames.into_iter().map(ByteBuf::from).collect();
    serde_cbor::to_vec(&frames).map_err(|e| BundleError::Encode(e.to_string()))
}

/// Decodes a bundle, bounded before decoding starts.
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<Vec<u8>>, BundleError> {
    if bytes.len() > MAX_ENCODED_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bytes.len()));
    }
    let frames: Vec<ByteBuf> =
        serde_cbor::from_slice(bytes).map_err(|e| BundleError::Undecodable(e.to_string()))?;
    if frames.len() > MAX_BUNDLE_FRAMES {
        return Err(BundleError::TooManyFrames(frames.len()));
    }
    Ok(frames.into_iter().map(ByteBuf::into_vec).collect())
}
