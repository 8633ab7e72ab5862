//! DKG messages. Round-1 packages (signed by their dealer), round-2 shares,
//! certificates and transcript disputes travel point to point over the private
//! channels; complaints, missing-share notices and openings go by echo broadcast.

use crate::ids::SessionId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::roster::MemberId;

/// Message version this build speaks.
pub const DKG_VERSION: u16 = 4;

/// Largest DKG message accepted (a round 1 of 100 uncompressed coefficients is about
/// 7 KB; a transcript dispute at 100 members about 10 KB).
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
    /// A dealer's commitment to its polynomial and proof of knowledge, signed: from
    /// the dealer, or relayed by any member that holds it.
    Round1(Round1Package),
    /// A member asks every member for the round-1 packages of these dealers, which
    /// it still lacks a round after the last one came.
    Lacking {
        /// The dealers.
        dealers: Vec<MemberId>,
    },
    /// A dealer's evaluations for the recipient's shares.
    Round2(DealtShares),
    /// A recipient shows every member shares that do not match their dealer's
    /// commitment: the dealer's signed round-2 message and the dealer's signed
    /// round-1 package it checked them against, as received.
    Complaint {
        /// The shares.
        shares: DealtShares,
        /// The commitment they do not match.
        round1: Round1Package,
    },
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
    /// Sent to a member whose certificate names another transcript: the signed
    /// round-1 digest of every dealer, in roster order, from which this member's
    /// transcript hash is computed. The receiver finds the dealer that signed two.
    Transcript {
        /// One per dealer, in roster order.
        round1: Vec<SignedRound1>,
    },
    /// A dealer signed two round-1 packages for one session: the proof, sent to every
    /// member.
    Equivocation {
        /// The dealer.
        dealer: MemberId,
        /// One signed digest.
        first: SignedRound1,
        /// Another.
        second: SignedRound1,
    },
}

/// A dealer's round-1 package: its coefficient commitments (33-byte points,
/// constant term first), a Schnorr proof that it knows the constant term, and its
/// signature, which makes the package evidence anyone can check and relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round1Package {
    /// The dealer.
    pub dealer: MemberId,
    /// Coefficient commitments.
    pub commitment: Vec<ByteBuf>,
    /// The proof's nonce point (33 bytes).
    pub proof_r: ByteBuf,
    /// The proof's response (32 bytes).
    pub proof_z: ByteBuf,
    /// The dealer's BIP340 signature over [`SignedRound1::signed_message`] of the
    /// package's digest.
    pub signature: ByteBuf,
}

impl Round1Package {
    /// The package's digest: the dealer, the session and everything it commits to.
    pub fn digest(&self, session: &SessionId) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/dkg/round1/v1");
        h.update(session);
        h.update(self.dealer.0);
        h.update((self.commitment.len() as u64).to_be_bytes());
        for part in self.commitment.iter().chain([&self.proof_r, &self.proof_z]) {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    /// The package's digest and signature.
    pub fn signed(&self, session: &SessionId) -> SignedRound1 {
        SignedRound1 {
            digest: self.digest(session),
            signature: self.signature.clone(),
        }
    }
}

/// A dealer's signature on one round-1 digest: two with different digests for one
/// session prove the dealer equivocated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRound1 {
    /// The package's digest ([`Round1Package::digest`]).
    pub digest: [u8; 32],
    /// The dealer's signature over [`SignedRound1::signed_message`].
    pub signature: ByteBuf,
}

impl SignedRound1 {
    /// What a dealer signs for a round-1 digest: domain-separated, so that no other
    /// signature of the member's key (on shares, echoes, certificates, channel
    /// bindings) can pass for a round-1 signature.
    pub fn signed_message(session: &SessionId, dealer: &MemberId, digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/dkg/round1-signature/v1");
        h.update(session);
        h.update(dealer.0);
        h.update(digest);
        h.finalize().into()
    }

    /// Whether `dealer` signed this digest in `session`.
    pub fn verify(&self, session: &SessionId, dealer: &MemberId) -> bool {
        crate::share::member_verify(
            dealer,
            Self::signed_message(session, dealer, &self.digest),
            &self.signature,
        )
    }
}

/// Whether `first` and `second` prove that `dealer` signed two round-1 packages in
/// `session`.
pub fn proves_equivocation(
    session: &SessionId,
    dealer: &MemberId,
    first: &SignedRound1,
    second: &SignedRound1,
) -> bool {
    first.digest != second.digest && first.verify(session, dealer) && second.verify(session, dealer)
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
        h.update(b"tenure/frost-fed/dkg/shares/v2");
        h.update(session);
        h.update(self.dealer.0);
        h.update(self.recipient.0);
        // Counted and length-prefixed: the same bytes split into other shares are
        // another message (else a recipient could re-split a dealer's signed shares
        // into malformed ones and have the dealer blamed for them).
        h.update((self.shares.len() as u64).to_be_bytes());
        for share in &self.shares {
            h.update((share.len() as u64).to_be_bytes());
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
