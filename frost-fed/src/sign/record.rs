//! A signature with the evidence of who made it.
//!
//! A FROST signature alone does not say which shares made it. The record keeps the
//! signing package (every signer's nonce commitments and the message) and every
//! signature share: a verifier re-aggregates them under the group's public key
//! package, which checks each share against its member's verifying share, and so
//! learns exactly which members signed and their weight.

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::secp256k1::{Message, SECP256K1, schnorr};
use frost_secp256k1_tr::{SigningPackage, keys::PublicKeyPackage, round2::SignatureShare};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{
    roster::{MemberId, Roster},
    share::identifier,
};

/// A federation signature and how it was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// The 32-byte message signed (BIP340).
    pub message: [u8; 32],
    /// The BIP340 signature.
    pub signature: ByteBuf,
    /// The serialized signing package.
    pub package: ByteBuf,
    /// (share number, serialized signature share) for every share in the package.
    pub shares: Vec<(u16, ByteBuf)>,
}

/// Who signed, as a verifier established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerSet {
    /// The share numbers that signed.
    pub shares: BTreeSet<u16>,
    /// Their holders.
    pub members: BTreeSet<MemberId>,
    /// Shares that signed (at least the threshold).
    pub weight: u16,
}

impl SignerSet {
    /// The signer set of share numbers `shares` under `roster`.
    pub fn of(shares: BTreeSet<u16>, roster: &Roster) -> SignerSet {
        SignerSet {
            members: shares.iter().filter_map(|n| roster.holder_of(*n)).collect(),
            weight: shares.len() as u16,
            shares,
        }
    }
}

/// Why a record does not prove a federation signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Part of it does not decode.
    #[error("record does not decode: {0}")]
    Malformed(String),
    /// The package signs another message.
    #[error("the package signs another message")]
    WrongMessage,
    /// The shares do not make the recorded signature.
    #[error("the shares do not aggregate to the signature: {0}")]
    Aggregate(String),
    /// BIP340 verification under the group key failed.
    #[error("the signature does not verify under the group key")]
    Bip340,
    /// Fewer shares than the threshold.
    #[error("{weight} shares signed; {threshold} are needed")]
    BelowThreshold {
        /// Shares that signed.
        weight: u16,
        /// Shares needed.
        threshold: u16,
    },
}

impl SignatureRecord {
    /// Checks the record against the group's public key package and roster: the shares
    /// aggregate to the signature, the signature verifies as BIP340 under the group's
    /// output key, and the signers hold at least the threshold. Returns who signed.
    pub fn verify(
        &self,
        public: &PublicKeyPackage,
        roster: &Roster,
    ) -> Result<SignerSet, RecordError> {
        let numbers = self.verify_shares(public)?;
        let weight = numbers.len() as u16;
        if weight < roster.threshold() {
            return Err(RecordError::BelowThreshold {
                weight,
                threshold: roster.threshold(),
            });
        }
        Ok(SignerSet::of(numbers, roster))
    }

    /// Checks the record against the group's public key package alone: every share
    /// verifies against its verifying share, they aggregate to the signature, and the
    /// signature verifies as BIP340 under the group's output key. Returns the share
    /// numbers that signed; the caller judges their weight.
    ///
    /// Every share is checked on its own even when the aggregate is valid: members
    /// holding the threshold know the group secret between them and could otherwise
    /// split a valid signature into shares "from" members that never signed.
    pub fn verify_shares(&self, public: &PublicKeyPackage) -> Result<BTreeSet<u16>, RecordError> {
        let malformed = |what: &str| RecordError::Malformed(what.to_owned());
        let package =
            SigningPackage::deserialize(&self.package).map_err(|_| malformed("package"))?;
        if package.message().as_slice() != self.message {
            return Err(RecordError::WrongMessage);
        }
        let mut shares = BTreeMap::new();
        let mut numbers = BTreeSet::new();
        for (n, bytes) in &self.shares {
            let id = identifier(*n).ok_or_else(|| malformed("share number"))?;
            let share = SignatureShare::deserialize(bytes).map_err(|_| malformed("share"))?;
            if shares.insert(id, share).is_some() {
                return Err(malformed("share listed twice"));
            }
            numbers.insert(*n);
        }
        // Every share checked in one batch; they must add up to the recorded
        // signature, which must verify as BIP340.
        let verified = super::batch::verify_all(&package, &shares, public)
            .map_err(|e| RecordError::Aggregate(e.to_string()))?;
        let (r_x, z) = self.signature.split_at_checked(32).unwrap_or_default();
        if r_x != verified.r_x || z != verified.z {
            return Err(RecordError::Aggregate("another signature".into()));
        }
        verify_bip340(public, &self.message, &self.signature)?;
        Ok(numbers)
    }

    /// Encodes the record.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecordError> {
        serde_cbor::to_vec(self).map_err(|e| RecordError::Malformed(e.to_string()))
    }

    /// Decodes a record.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignatureRecord, RecordError> {
        serde_cbor::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))
    }
}

/// Verifies a 64-byte signature with secp256k1's BIP340 verifier under the group's
/// output key: what Bitcoin does for a key-path spend.
pub fn verify_bip340(
    public: &PublicKeyPackage,
    message: &[u8; 32],
    signature: &[u8],
) -> Result<(), RecordError> {
    let key = public
        .verifying_key()
        .serialize()
        .map_err(|_| RecordError::Bip340)?;
    let key = bitcoin::XOnlyPublicKey::from_slice(key.get(1..33).ok_or(RecordError::Bip340)?)
        .map_err(|_| RecordError::Bip340)?;
    let sig = schnorr::Signature::from_slice(signature).map_err(|_| RecordError::Bip340)?;
    SECP256K1
        .verify_schnorr(&sig, &Message::from_digest(*message), &key)
        .map_err(|_| RecordError::Bip340)
}
