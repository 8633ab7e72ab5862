//! What travels between members: handshake and encrypted frames, and inside the
//! encryption the reliable-delivery packets.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::roster::MemberId;

/// Frame version this build speaks.
pub const FRAME_VERSION: u16 = 2;

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

impl crate::codec::Versioned for ChannelFrame {
    const VERSION: u16 = FRAME_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

/// Largest encoded frame.
pub const MAX_FRAME_BYTES: usize = NOISE_MAX + 512;

/// Encodes a frame.
pub fn encode(frame: &ChannelFrame) -> Result<Vec<u8>, crate::codec::CodecError> {
    crate::codec::encode(frame)
}

/// Decodes a frame, checking its size first.
pub fn decode(bytes: &[u8]) -> Result<ChannelFrame, crate::codec::CodecError> {
    crate::codec::decode(bytes, MAX_FRAME_BYTES)
}
