//! What travels between members: handshake and encrypted frames, and inside the
//! encryption the reliable-delivery packets.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::roster::MemberId;

/// Frame version this build speaks.
pub const FRAME_VERSION: u16 = 1;

/// Noise's largest message.
pub const NOISE_MAX: usize = 65_535;

/// Plaintext bytes per encrypted fragment: Noise's limit less its tag and our header.
pub const FRAGMENT_BYTES: usize = NOISE_MAX - 16 - 64;

/// A frame between two members; relays see only this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFrame {
    /// Frame version.
    pub version: u16,
    /// Sender.
    pub from: MemberId,
    /// Recipient.
    pub to: MemberId,
    /// What it carries.
    pub body: FrameBody,
}

/// Handshake or data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameBody {
    /// Noise KK handshake message `step` (1: initiator, 2: responder) of session
    /// `epoch`.
    Handshake {
        /// The session the handshake opens (chosen by the initiator).
        epoch: u64,
        /// 1 or 2.
        step: u8,
        /// The Noise message.
        noise: ByteBuf,
    },
    /// One encrypted fragment of session `epoch`, with its explicit nonce.
    Data {
        /// The session.
        epoch: u64,
        /// The nonce it was encrypted with (never reused in a session).
        nonce: u64,
        /// The ciphertext.
        ciphertext: ByteBuf,
    },
}

/// The plaintext of one fragment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// The message it belongs to.
    pub message: u64,
    /// Its position.
    pub index: u16,
    /// Fragments in the message.
    pub count: u16,
    /// Its bytes of the message.
    pub bytes: ByteBuf,
}

/// Reliable-delivery packets, reassembled from fragments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Packet {
    /// An application message with its sequence number.
    Data {
        /// Sequence number (per direction, from 1).
        seq: u64,
        /// The message.
        payload: ByteBuf,
    },
    /// Every sequence number up to `upto` arrived, and also these.
    Ack {
        /// Highest contiguous sequence number received.
        upto: u64,
        /// Sequence numbers above it received.
        also: Vec<u64>,
    },
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Longer than a frame may be.
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    /// Not CBOR of a frame.
    #[error("undecodable frame: {0}")]
    Undecodable(String),
    /// Another version.
    #[error("frame version {0} is not spoken here")]
    Version(u16),
}

/// Largest encoded frame.
pub const MAX_FRAME_BYTES: usize = NOISE_MAX + 512;

/// Encodes a frame.
pub fn encode(frame: &ChannelFrame) -> Vec<u8> {
    serde_cbor::to_vec(frame).unwrap_or_default()
}

/// Decodes a frame, checking its size first.
pub fn decode(bytes: &[u8]) -> Result<ChannelFrame, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    let frame: ChannelFrame =
        serde_cbor::from_slice(bytes).map_err(|e| FrameError::Undecodable(e.to_string()))?;
    if frame.version != FRAME_VERSION {
        return Err(FrameError::Version(frame.version));
    }
    Ok(frame)
}
