//! TenureChange transactions (seed 002): `BlockFound` hands block production to the
//! next producer set; `Extend` grants the current one a fresh cost budget.
//!
//! Fields and sizes follow the seed's table:
//!
//! | field | bytes |
//! |---|---|
//! | tenure consensus hash | 20 |
//! | previous tenure consensus hash | 20 |
//! | burn view consensus hash | 20 |
//! | previous tenure end (index block hash) | 32 |
//! | previous tenure blocks | 4, big-endian |
//! | cause | 1 (0: BlockFound, 1: Extend) |
//! | pubkey hash | 20 |
//! | signature | 65 |
//! | signers | 4-byte big-endian bit count, then ⌈count / 8⌉ bytes |
//!
//! In Tenure the "stacker signature" is the BIP340 signature of the group that grants
//! the tenure, followed by a sighash byte that must be 0: the stacker group's where a
//! stacker set is configured, otherwise the producer group's (with its 100-share
//! bitmap, at least 67 marked). A term's first block carries its `BlockFound` right
//! after the coinbase; an `Extend` opens a later block and resets the term's cost
//! budget. [`crate::block`] enforces both.

use bitcoin::{
    XOnlyPublicKey,
    hashes::{Hash, hash160},
    key::Keypair,
    secp256k1::{Message, SECP256K1, schnorr},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

/// Why a tenure change does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TenureChangeError {
    /// Fewer bytes than the fields need.
    #[error("tenure change truncated at {0}")]
    Truncated(&'static str),
    /// An unknown cause byte.
    #[error("unknown tenure-change cause {0}")]
    Cause(u8),
    /// Bytes left after the signer bitmap.
    #[error("{0} bytes after the tenure change")]
    Trailing(usize),
    /// A bit past the signer count is set.
    #[error("the signer bitmap sets a padding bit")]
    Padding,
    /// More signers than a stacker set holds.
    #[error("a bitmap of {0} signers is too large")]
    TooManySigners(u32),
}

/// Why the tenure changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A new producer set won: it starts producing and the old one stops.
    BlockFound,
    /// The current producer set's budget is renewed.
    Extend,
}

/// Largest signer bitmap accepted (the stacker set's 4,000 reward slots).
pub const MAX_SIGNERS: u32 = 4_000;

/// A tenure change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenureChange {
    /// Consensus hash of this tenure.
    pub tenure_consensus_hash: [u8; 20],
    /// Consensus hash of the previous tenure.
    pub previous_tenure_consensus_hash: [u8; 20],
    /// The burnchain view's consensus hash.
    pub burn_view_consensus_hash: [u8; 20],
    /// Index block hash of the previous tenure's last block.
    pub previous_tenure_end: [u8; 32],
    /// Blocks produced since the last sortition-linked tenure.
    pub previous_tenure_blocks: u32,
    /// Why.
    pub cause: Cause,
    /// Hash of the current tenure's public key.
    pub pubkey_hash: [u8; 20],
    /// The stackers' signature.
    pub signature: [u8; 65],
    /// Which stackers signed (bit i: stacker i).
    pub signers: Vec<bool>,
}

impl TenureChange {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.signers.len().div_ceil(8).saturating_add(182));
        out.extend_from_slice(&self.tenure_consensus_hash);
        out.extend_from_slice(&self.previous_tenure_consensus_hash);
        out.extend_from_slice(&self.burn_view_consensus_hash);
        out.extend_from_slice(&self.previous_tenure_end);
        out.extend_from_slice(&self.previous_tenure_blocks.to_be_bytes());
        out.push(match self.cause {
            Cause::BlockFound => 0,
            Cause::Extend => 1,
        });
        out.extend_from_slice(&self.pubkey_hash);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&(self.signers.len() as u32).to_be_bytes());
        let mut bitmap = vec![0u8; self.signers.len().div_ceil(8)];
        for (i, signed) in self.signers.iter().enumerate() {
            if *signed && let Some(byte) = bitmap.get_mut(i / 8) {
                *byte |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
        out
    }

    /// Parses the wire form, refusing truncated, oversized or trailing input.
    pub fn from_bytes(bytes: &[u8]) -> Result<TenureChange, TenureChangeError> {
        let mut rest = bytes;
        fn take<const N: usize>(
            rest: &mut &[u8],
            what: &'static str,
        ) -> Result<[u8; N], TenureChangeError> {
            let (head, tail) = rest
                .split_first_chunk::<N>()
                .ok_or(TenureChangeError::Truncated(what))?;
            *rest = tail;
            Ok(*head)
        }
        let tenure_consensus_hash = take::<20>(&mut rest, "tenure consensus hash")?;
        let previous_tenure_consensus_hash = take::<20>(&mut rest, "previous consensus hash")?;
        let burn_view_consensus_hash = take::<20>(&mut rest, "burn view consensus hash")?;
        let previous_tenure_end = take::<32>(&mut rest, "previous tenure end")?;
        let previous_tenure_blocks =
            u32::from_be_bytes(take::<4>(&mut rest, "previous tenure blocks")?);
        let cause = match take::<1>(&mut rest, "cause")? {
            [0] => Cause::BlockFound,
            [1] => Cause::Extend,
            [other] => return Err(TenureChangeError::Cause(other)),
        };
        let pubkey_hash = take::<20>(&mut rest, "pubkey hash")?;
        let signature = take::<65>(&mut rest, "signature")?;
        let count = u32::from_be_bytes(take::<4>(&mut rest, "signer count")?);
        if count > MAX_SIGNERS {
            return Err(TenureChangeError::TooManySigners(count));
        }
        let len = (count as usize).div_ceil(8);
        let bitmap = rest
            .get(..len)
            .ok_or(TenureChangeError::Truncated("signers"))?;
        if rest.len() > len {
            return Err(TenureChangeError::Trailing(rest.len().saturating_sub(len)));
        }
        // One encoding per value: the bits past `count` must be zero.
        let padded = (count as usize..len.saturating_mul(8))
            .any(|i| bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0));
        if padded {
            return Err(TenureChangeError::Padding);
        }
        let signers = (0..count as usize)
            .map(|i| bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
            .collect();
        Ok(TenureChange {
            tenure_consensus_hash,
            previous_tenure_consensus_hash,
            burn_view_consensus_hash,
            previous_tenure_end,
            previous_tenure_blocks,
            cause,
            pubkey_hash,
            signature,
            signers,
        })
    }

    /// What the signing group signs: every field but the signature, under a domain
    /// tag and the network's name.
    pub fn digest(&self, network: &str) -> [u8; 32] {
        let mut unsigned = self.clone();
        unsigned.signature = [0; 65];
        let mut h = Sha256::new();
        h.update(b"tenure/chain/tenure-change/v1");
        h.update((network.len() as u64).to_be_bytes());
        h.update(network.as_bytes());
        h.update(unsigned.to_bytes());
        h.finalize().into()
    }

    /// Signs with the group's key: the BIP340 signature, then the sighash byte 0.
    pub fn sign(&mut self, network: &str, group: &Keypair) {
        let sig = SECP256K1.sign_schnorr(&Message::from_digest(self.digest(network)), group);
        let mut signature = [0; 65];
        if let Some(head) = signature.get_mut(..64) {
            head.copy_from_slice(sig.as_ref());
        }
        self.signature = signature;
    }

    /// Sets the signature to a group's BIP340 `signature` (a FROST group signs
    /// [`Self::digest`] elsewhere), with the sighash byte 0.
    pub fn set_signature(&mut self, signature: [u8; 64]) {
        let mut with_sighash = [0; 65];
        if let Some(head) = with_sighash.get_mut(..64) {
            head.copy_from_slice(&signature);
        }
        self.signature = with_sighash;
    }

    /// Whether the signature is `key`'s BIP340 signature over [`Self::digest`], with
    /// the default sighash byte.
    pub fn signature_valid(&self, network: &str, key: &XOnlyPublicKey) -> bool {
        let (sig, sighash) = self.signature.split_at(64);
        sighash == [0]
            && schnorr::Signature::from_slice(sig).is_ok_and(|sig| {
                SECP256K1
                    .verify_schnorr(&sig, &Message::from_digest(self.digest(network)), key)
                    .is_ok()
            })
    }

    /// How many signers are marked.
    pub fn signer_count(&self) -> usize {
        self.signers.iter().filter(|s| **s).count()
    }
}

/// The consensus hash of a term: it names the term and the burn block that started
/// it, so a burnchain reorg that changes that block changes the hash.
pub fn consensus_hash(term: u64, term_start_burn_block: &[u8; 32]) -> [u8; 20] {
    let mut data = Vec::with_capacity(8 + 32 + 20);
    data.extend_from_slice(b"tenure/term/");
    data.extend_from_slice(&term.to_be_bytes());
    data.extend_from_slice(term_start_burn_block);
    hash160::Hash::hash(&data).to_byte_array()
}

/// The seed's "pubkey hash" of a term: HASH160 of its producer group's x-only key.
pub fn pubkey_hash(key: &XOnlyPublicKey) -> [u8; 20] {
    hash160::Hash::hash(&key.serialize()).to_byte_array()
}

// A tenure change travels inside blocks in its own wire form, not as a CBOR map.
impl Serialize for TenureChange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for TenureChange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = ByteBuf::deserialize(deserializer)?;
        TenureChange::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(cause: Cause, signers: usize) -> TenureChange {
        TenureChange {
            tenure_consensus_hash: [1; 20],
            previous_tenure_consensus_hash: [2; 20],
            burn_view_consensus_hash: [3; 20],
            previous_tenure_end: [4; 32],
            previous_tenure_blocks: 17,
            cause,
            pubkey_hash: [5; 20],
            signature: [6; 65],
            signers: (0..signers).map(|i| i % 3 == 0).collect(),
        }
    }

    #[test]
    fn fields_have_the_seeds_sizes_and_round_trip() {
        let tc = sample(Cause::Extend, 10);
        let bytes = tc.to_bytes();
        // 20 + 20 + 20 + 32 + 4 + 1 + 20 + 65 + 4 + 2
        assert_eq!(bytes.len(), 188);
        assert_eq!(bytes[96], 1); // cause, after 20+20+20+32+4 bytes
        assert_eq!(TenureChange::from_bytes(&bytes), Ok(tc));
        let found = sample(Cause::BlockFound, 0);
        assert_eq!(TenureChange::from_bytes(&found.to_bytes()), Ok(found));
    }

    #[test]
    fn malformed_tenure_changes_are_refused_with_a_reason() {
        let bytes = sample(Cause::Extend, 10).to_bytes();
        assert_eq!(
            TenureChange::from_bytes(&bytes[..70]),
            Err(TenureChangeError::Truncated("previous tenure end"))
        );
        let mut cause = bytes.clone();
        cause[96] = 7;
        assert_eq!(
            TenureChange::from_bytes(&cause),
            Err(TenureChangeError::Cause(7))
        );
        // 10 signers fill 2 bytes; bits 10–15 are padding and must be zero, or one
        // tenure change would have several encodings.
        let mut padded = bytes.clone();
        *padded.last_mut().unwrap() |= 0x80;
        assert_eq!(
            TenureChange::from_bytes(&padded),
            Err(TenureChangeError::Padding)
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            TenureChange::from_bytes(&trailing),
            Err(TenureChangeError::Trailing(1))
        );
        let mut huge = bytes[..182].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            TenureChange::from_bytes(&huge),
            Err(TenureChangeError::TooManySigners(_))
        ));
    }

    #[test]
    fn the_signature_covers_every_field_and_the_network() {
        let group = Keypair::from_seckey_slice(SECP256K1, &[7; 32]).unwrap();
        let key = group.x_only_public_key().0;
        let mut tc = sample(Cause::Extend, 100);
        tc.sign("test", &group);
        assert!(tc.signature_valid("test", &key));
        assert!(!tc.signature_valid("other", &key));
        let mut changed = tc.clone();
        changed.previous_tenure_blocks += 1;
        assert!(!changed.signature_valid("test", &key));
        let mut sighash = tc.clone();
        sighash.signature[64] = 1;
        assert!(!sighash.signature_valid("test", &key));
        // Through a block's CBOR and back.
        let bytes = serde_cbor::to_vec(&tc).unwrap();
        assert_eq!(serde_cbor::from_slice::<TenureChange>(&bytes).unwrap(), tc);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = TenureChange::from_bytes(&bytes);
        }
    }
}
