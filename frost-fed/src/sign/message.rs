//! Signing messages. `Request`, `Start` and `Done` go to every member; the rest go
//! between one member and one coordinator.

use crate::ids::RequestId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::roster::MemberId;

/// Message version this build speaks.
pub const SIGN_VERSION: u16 = 2;

/// Largest signing message accepted (a package for 100 shares is about 10 KB; a
/// payload such as a block header or a transaction is bounded by the application).
pub const MAX_SIGN_MESSAGE_BYTES: usize = 1024 * 1024;

/// One signing message about one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignMessage {
    /// Message version.
    pub version: u16,
    /// The request: a hash of the payload and the key.
    pub request: RequestId,
    /// The coordinator the message is to or from (for `Request`, the requester).
    pub coordinator: MemberId,
    /// What it says.
    pub body: SignBody,
}

/// The kinds of signing message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignBody {
    /// Please sign this payload (each member's validator decides).
    Request {
        /// What the application wants signed; its validator derives the digest.
        payload: ByteBuf,
    },
    /// A coordinator takes up the request: members send it nonce commitments.
    Start,
    /// A member's nonce commitments, one per share it holds.
    Commit {
        /// (share number, serialized `SigningCommitments`).
        commitments: Vec<(u16, ByteBuf)>,
    },
    /// A signing session: sign this package with the committed nonces.
    Package {
        /// The coordinator's session number.
        session: u32,
        /// The serialized `SigningPackage`.
        package: ByteBuf,
    },
    /// A member's signature shares for a session, and fresh commitments for the next
    /// one (ROAST: a member that answered is ready again at once).
    Shares {
        /// The session.
        session: u32,
        /// (share number, serialized `SignatureShare`).
        shares: Vec<(u16, ByteBuf)>,
        /// Fresh commitments for a following session.
        next: Vec<(u16, ByteBuf)>,
    },
    /// The signature, with what any verifier needs to see who signed.
    Done {
        /// The serialized [`super::SignatureRecord`].
        record: ByteBuf,
        /// Sessions the coordinator opened for the request (a figure for benchmarks;
        /// nothing depends on it).
        sessions: u32,
    },
}

impl crate::codec::Versioned for SignMessage {
    const VERSION: u16 = SIGN_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

/// Encodes a message.
pub fn encode(msg: &SignMessage) -> Result<Vec<u8>, crate::codec::CodecError> {
    crate::codec::encode(msg)
}

/// Decodes a message, checking its size first.
pub fn decode(bytes: &[u8]) -> Result<SignMessage, crate::codec::CodecError> {
    crate::codec::decode(bytes, MAX_SIGN_MESSAGE_BYTES)
}
