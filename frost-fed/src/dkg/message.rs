//! DKG messages. Round 1 and certificates go to every member by broadcast; round-2
//! shares go to one member over its private channel.

use crate::ids::SessionId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::roster::MemberId;

/// Message version this build speaks.
pub const DKG_VERSION: u16 = 2;

/// Largest DKG message accepted (a round 1 of 100 coefficients is about 3.5 KB).
pub const MAX_DKG_MESSAGE_BYTES: usize = 64 * 1024;

/// One DKG message of one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgMessage {
    /// Message version.
    pub version: u16,
    /// The session (roster and attempt) it belongs to.
    pub session: SessionId,
    /// What it says.
    pub body: DkgBody,
}

/// The kinds of DKG message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DkgBody {
    /// A member's commitment to its polynomial (33-byte points, constant term
    /// first) and a Schnorr proof that it knows the constant term.
    Round1 {
        /// Coefficient commitments.
        commitment: Vec<ByteBuf>,
        /// The proof's nonce point (33 bytes).
        proof_r: ByteBuf,
        /// The proof's response (32 bytes).
        proof_z: ByteBuf,
    },
    /// A dealer's evaluations for the recipient's shares.
    Round2(DealtShares),
    /// A recipient shows every member shares that do not match their dealer's
    /// commitment: the dealer's signed round-2 message, as received.
    Complaint(DealtShares),
    /// A recipient tells every member it holds no valid shares from `dealer` (none
    /// came, or they came with a signature that does not verify, which proves nothing
    /// to others). The dealer must open them.
    Missing {
        /// The dealer.
        dealer: MemberId,
    },
    /// A dealer opens, to every member, the signed shares a recipient said it lacked.
    Opened(DealtShares),
    /// A member's BIP340 signature on the transcript hash: the key counts only with
    /// every member's.
    Certificate {
        /// The transcript hash the member saw.
        transcript: [u8; 32],
        /// Its signature (64 bytes).
        signature: ByteBuf,
    },
}

/// What a dealer sends one recipient in round 2, signed so that a recipient can prove
/// to everyone what it was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealtShares {
    /// The dealer.
    pub dealer: MemberId,
    /// The recipient.
    pub recipient: MemberId,
    /// One 32-byte scalar per share the recipient holds, in identifier order.
    pub shares: Vec<ByteBuf>,
    /// The dealer's BIP340 signature over [`DealtShares::digest`].
    pub signature: ByteBuf,
}

impl DealtShares {
    /// What the dealer signs.
    pub fn digest(&self, session: &SessionId) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/dkg/shares/v1");
        h.update(session);
        h.update(self.dealer.0);
        h.update(self.recipient.0);
        for share in &self.shares {
            h.update(share);
        }
        h.finalize().into()
    }
}

impl crate::codec::Versioned for DkgMessage {
    const VERSION: u16 = DKG_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

/// Encodes a message.
pub fn encode(msg: &DkgMessage) -> Result<Vec<u8>, crate::codec::CodecError> {
    crate::codec::encode(msg)
}

/// Decodes a message, checking its size first.
pub fn decode(bytes: &[u8]) -> Result<DkgMessage, crate::codec::CodecError> {
    crate::codec::decode(bytes, MAX_DKG_MESSAGE_BYTES)
}
