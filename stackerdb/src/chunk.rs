//! Chunks: signed, versioned values of one slot.
//!
//! A write is (slot, version, data, signature). The signature is a 65-byte recoverable
//! secp256k1 ECDSA signature, laid out `recovery id || r || s`, over
//!
//! ```text
//! SHA512/256( "tenure/stackerdb/chunk/v1" || len(network) || network
//!             || len(db) || db || slot (u32 BE) || version (u64 BE)
//!             || SHA512/256(data) )
//! ```
//!
//! so a chunk cannot be replayed into another DB, another network or another slot
//! (seed 001, "Stacker DBs": chunks are signed by their slot's key). Only low-S signatures are accepted: a high-S twin of a
//! valid signature would otherwise be a second "valid" encoding of the same write.

use bitcoin::secp256k1::{
    Message, PublicKey, SECP256K1, SecretKey,
    ecdsa::{RecoverableSignature, RecoveryId, Signature},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha512_256};

use crate::db::DbId;

/// Domain tag of the signed digest.
pub const SIGNING_DOMAIN: &[u8] = b"tenure/stackerdb/chunk/v1";

/// Bytes of a recoverable signature: recovery id, r, s.
pub const SIGNATURE_BYTES: usize = 65;

/// A SHA512/256 digest.
pub type Hash32 = [u8; 32];

/// SHA512/256 of a chunk's data.
pub fn data_hash(data: &[u8]) -> Hash32 {
    Sha512_256::digest(data).into()
}

/// The digest a writer signs.
pub fn signing_digest(
    network: &str,
    db: &DbId,
    slot: u32,
    version: u64,
    data_hash: &Hash32,
) -> Hash32 {
    let mut h = Sha512_256::new();
    h.update(SIGNING_DOMAIN);
    h.update((network.len() as u32).to_be_bytes());
    h.update(network.as_bytes());
    h.update((db.as_str().len() as u32).to_be_bytes());
    h.update(db.as_str().as_bytes());
    h.update(slot.to_be_bytes());
    h.update(version.to_be_bytes());
    h.update(data_hash);
    h.finalize().into()
}

/// One write to a slot, as it travels and is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The slot written.
    pub slot: u32,
    /// The writer's version; higher wins.
    pub version: u64,
    /// The value.
    pub data: ByteBuf,
    /// `recovery id || r || s`.
    pub signature: ByteBuf,
}

/// Why a chunk's signature is unusable.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// Not 65 bytes.
    #[error("signature has {0} bytes, expected 65")]
    Length(usize),
    /// The recovery id is not 0 to 3, or r/s are out of range.
    #[error("malformed signature")]
    Malformed,
    /// s is in the upper half of the curve order.
    #[error("signature is not low-S")]
    HighS,
    /// No public key recovers from it.
    #[error("no public key recovers from the signature")]
    Unrecoverable,
}

impl Chunk {
    /// Signs `data` for `slot` at `version` with `key`.
    pub fn sign(
        network: &str,
        db: &DbId,
        slot: u32,
        version: u64,
        data: Vec<u8>,
        key: &SecretKey,
    ) -> Chunk {
        let digest = signing_digest(network, db, slot, version, &data_hash(&data));
        let sig = SECP256K1.sign_ecdsa_recoverable(&Message::from_digest(digest), key);
        let (recovery_id, compact) = sig.serialize_compact();
        let mut signature = Vec::with_capacity(SIGNATURE_BYTES);
        signature.push(recovery_id.to_i32() as u8);
        signature.extend_from_slice(&compact);
        Chunk {
            slot,
            version,
            data: ByteBuf::from(data),
            signature: ByteBuf::from(signature),
        }
    }

    /// SHA512/256 of the data.
    pub fn data_hash(&self) -> Hash32 {
        data_hash(&self.data)
    }

    /// Recovers the writer's public key, refusing high-S and malformed signatures.
    pub fn recover_writer(&self, network: &str, db: &DbId) -> Result<PublicKey, SignatureError> {
        self.recover_writer_with_hash(network, db, &self.data_hash())
    }

    /// [`Chunk::recover_writer`] for a caller that already holds the data hash, so the
    /// data is hashed once per write.
    pub fn recover_writer_with_hash(
        &self,
        network: &str,
        db: &DbId,
        data_hash: &Hash32,
    ) -> Result<PublicKey, SignatureError> {
        let bytes: &[u8; SIGNATURE_BYTES] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::Length(self.signature.len()))?;
        let (recovery, compact) = bytes.split_first().ok_or(SignatureError::Malformed)?;
        let recovery_id =
            RecoveryId::from_i32(i32::from(*recovery)).map_err(|_| SignatureError::Malformed)?;
        let plain = Signature::from_compact(compact).map_err(|_| SignatureError::Malformed)?;
        let mut normalized = plain;
        normalized.normalize_s();
        if normalized != plain {
            return Err(SignatureError::HighS);
        }
        let recoverable = RecoverableSignature::from_compact(compact, recovery_id)
            .map_err(|_| SignatureError::Malformed)?;
        let digest = signing_digest(network, db, self.slot, self.version, data_hash);
        SECP256K1
            .recover_ecdsa(&Message::from_digest(digest), &recoverable)
            .map_err(|_| SignatureError::Unrecoverable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> DbId {
        DbId::new("SP000000000000000000002Q6VF78.block-producers").unwrap()
    }

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).unwrap()
    }

    #[test]
    fn the_signer_is_recovered_from_a_signed_chunk() {
        let chunk = Chunk::sign("testnet", &db(), 7, 1, b"state".to_vec(), &key(1));
        let writer = chunk.recover_writer("testnet", &db()).unwrap();
        assert_eq!(writer, key(1).public_key(SECP256K1));
    }

    #[test]
    fn a_chunk_recovers_someone_else_in_another_db_network_or_slot() {
        let chunk = Chunk::sign("testnet", &db(), 7, 1, b"state".to_vec(), &key(1));
        let writer = key(1).public_key(SECP256K1);
        let other_db = DbId::new("other.db").unwrap();
        assert_ne!(
            chunk.recover_writer("testnet", &other_db).ok(),
            Some(writer)
        );
        assert_ne!(chunk.recover_writer("mainnet", &db()).ok(), Some(writer));
        let mut moved = chunk.clone();
        moved.slot = 8;
        assert_ne!(moved.recover_writer("testnet", &db()).ok(), Some(writer));
        let mut bumped = chunk;
        bumped.version = 2;
        assert_ne!(bumped.recover_writer("testnet", &db()).ok(), Some(writer));
    }

    #[test]
    fn a_high_s_twin_is_refused() {
        let chunk = Chunk::sign("testnet", &db(), 0, 1, b"x".to_vec(), &key(3));
        // s' = n - s is the same signature with high S (and the other recovery parity).
        let mut sig = chunk.signature.to_vec();
        let s = SecretKey::from_slice(&sig[33..65]).unwrap();
        let high = s.negate();
        sig[33..65].copy_from_slice(&high.secret_bytes());
        sig[0] ^= 1;
        let twin = Chunk {
            signature: ByteBuf::from(sig),
            ..chunk
        };
        assert_eq!(
            twin.recover_writer("testnet", &db()),
            Err(SignatureError::HighS)
        );
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let mut chunk = Chunk::sign("testnet", &db(), 0, 1, b"x".to_vec(), &key(3));
        chunk.signature = ByteBuf::from(vec![0; 64]);
        assert_eq!(
            chunk.recover_writer("testnet", &db()),
            Err(SignatureError::Length(64))
        );
        let mut sig = vec![9u8];
        sig.extend_from_slice(&[1; 64]);
        chunk.signature = ByteBuf::from(sig);
        assert_eq!(
            chunk.recover_writer("testnet", &db()),
            Err(SignatureError::Malformed)
        );
    }
}
