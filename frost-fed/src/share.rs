//! What a member keeps after a DKG: its FROST key packages (one per share it holds),
//! everyone's verifying shares, the roster and the certificates that made the key
//! count.

use crate::ids::SessionId;
use std::collections::BTreeMap;

use bitcoin::{
    Address, Network, XOnlyPublicKey,
    key::TweakedPublicKey,
    secp256k1::{Keypair, Message, SECP256K1, schnorr},
};
use frost_secp256k1_tr::{
    Identifier, VerifyingKey,
    keys::{KeyPackage, PublicKeyPackage, SigningShare, Tweak, VerifyingShare},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::roster::{MemberId, Roster};

/// A member's part of a federation key.
///
/// The key packages are already taproot-tweaked (BIP341, no script path), like the
/// output of `frost-secp256k1-tr`'s own DKG: plain FROST signatures from them verify
/// under the taproot output key, so the group's address is that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyShare {
    /// The roster the key was made for.
    pub roster: Roster,
    /// The DKG session that made it.
    pub session: SessionId,
    /// This member.
    pub member: MemberId,
    /// One key package per share this member holds, by share number, taproot-tweaked:
    /// what signing uses.
    pub key_packages: BTreeMap<u16, KeyPackage>,
    /// Every share's verifying share and the group key, taproot-tweaked.
    pub public: PublicKeyPackage,
    /// The same key packages before the taproot tweak (what is stored, and what
    /// [`KeyShare::derive`] shifts).
    pub internal_packages: BTreeMap<u16, KeyPackage>,
    /// The public key package before the taproot tweak.
    pub internal_public: PublicKeyPackage,
    /// The group key before the taproot tweak (33-byte compressed).
    pub internal_key: [u8; 33],
    /// Which key of the sequence this is (0: the DKG's own; see [`KeyShare::derive`]).
    pub index: u32,
    /// The transcript hash every member signed.
    pub transcript: [u8; 32],
    /// Each member's BIP340 signature on the transcript, in roster order.
    pub certificates: Vec<(MemberId, [u8; 64])>,
}

/// Why a key share cannot be used or loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyShareError {
    /// A FROST structure did not decode.
    #[error("key material does not decode: {0}")]
    Frost(String),
    /// The stored form is not a key share.
    #[error("stored key share does not decode: {0}")]
    Undecodable(String),
    /// A certificate is missing or does not verify.
    #[error("member {0} did not certify this key")]
    Uncertified(MemberId),
}

impl KeyShare {
    /// A key share from untweaked key packages: the taproot-tweaked ones used for
    /// signing are computed here, as `frost-secp256k1-tr`'s own DKG does.
    #[allow(clippy::too_many_arguments)]
    pub fn from_internal(
        roster: Roster,
        session: SessionId,
        member: MemberId,
        internal_packages: BTreeMap<u16, KeyPackage>,
        internal_public: PublicKeyPackage,
        index: u32,
        transcript: [u8; 32],
        certificates: Vec<(MemberId, [u8; 64])>,
    ) -> Result<KeyShare, KeyShareError> {
        let frost = |e: frost_secp256k1_tr::Error| KeyShareError::Frost(e.to_string());
        let internal_key: [u8; 33] = internal_public
            .verifying_key()
            .serialize()
            .map_err(frost)?
            .try_into()
            .map_err(|_| KeyShareError::Frost("group key encoding".into()))?;
        Ok(KeyShare {
            key_packages: internal_packages
                .iter()
                .map(|(n, kp)| (*n, kp.clone().tweak::<&[u8]>(None)))
                .collect(),
            public: internal_public.clone().tweak::<&[u8]>(None),
            roster,
            session,
            member,
            internal_packages,
            internal_public,
            internal_key,
            index,
            transcript,
            certificates,
        })
    }

    /// Key `index` of this federation's key sequence: a fresh taproot address with no
    /// new DKG. Every member derives it alone: the internal key and every share are
    /// shifted by `t = H(internal key of key 0, index)` (shares still interpolate,
    /// since Lagrange coefficients sum to one), then taproot-tweaked. Knowing `t`
    /// links the addresses only for those who know the group key.
    pub fn derive(&self, index: u32) -> Result<KeyShare, KeyShareError> {
        let frost = |e: frost_secp256k1_tr::Error| KeyShareError::Frost(e.to_string());
        if self.index != 0 {
            return Err(KeyShareError::Frost(
                "derive from key 0 of the sequence".into(),
            ));
        }
        if index == 0 {
            return Ok(self.clone());
        }
        let base = self;
        let t = crate::curve::hash_to_scalar(
            b"tenure/frost-fed/key-sequence/v1",
            &[&base.internal_key, &index.to_be_bytes()],
        );
        let shift_point = k256::ProjectivePoint::GENERATOR * t;
        let shift_element = |bytes: Vec<u8>| -> Result<Vec<u8>, KeyShareError> {
            let point = crate::curve::point_from_bytes(&bytes)
                .ok_or(KeyShareError::Frost("a key point does not decode".into()))?;
            Ok(crate::curve::point_bytes(&(point + shift_point)))
        };
        let verifying_key = VerifyingKey::deserialize(&shift_element(
            base.internal_public
                .verifying_key()
                .serialize()
                .map_err(frost)?,
        )?)
        .map_err(frost)?;
        let mut verifying_shares = BTreeMap::new();
        for (id, share) in base.internal_public.verifying_shares() {
            let shifted = shift_element(share.serialize().map_err(frost)?)?;
            verifying_shares.insert(*id, VerifyingShare::deserialize(&shifted).map_err(frost)?);
        }
        let internal_public = PublicKeyPackage::new(
            verifying_shares.clone(),
            verifying_key,
            Some(self.roster.threshold()),
        );
        let mut internal_packages = BTreeMap::new();
        for (n, kp) in &base.internal_packages {
            let secret = crate::curve::scalar_from_bytes(&kp.signing_share().serialize()).ok_or(
                KeyShareError::Frost("a signing share does not decode".into()),
            )?;
            let shifted = SigningShare::deserialize(&crate::curve::scalar_bytes(&(secret + t)))
                .map_err(frost)?;
            let verifying_share = *verifying_shares
                .get(kp.identifier())
                .ok_or(KeyShareError::Frost("missing verifying share".into()))?;
            internal_packages.insert(
                *n,
                KeyPackage::new(
                    *kp.identifier(),
                    shifted,
                    verifying_share,
                    verifying_key,
                    *kp.min_signers(),
                ),
            );
        }
        KeyShare::from_internal(
            base.roster.clone(),
            base.session,
            base.member,
            internal_packages,
            internal_public,
            index,
            base.transcript,
            base.certificates.clone(),
        )
    }

    /// The group's taproot output key (x-only): what signatures verify under.
    pub fn output_key(&self) -> Result<XOnlyPublicKey, KeyShareError> {
        let bytes = self
            .public
            .verifying_key()
            .serialize()
            .map_err(|e| KeyShareError::Frost(e.to_string()))?;
        let x = bytes
            .get(1..33)
            .ok_or(KeyShareError::Frost("short key".into()))?;
        XOnlyPublicKey::from_slice(x).map_err(|e| KeyShareError::Frost(e.to_string()))
    }

    /// The group's key-path-only taproot address.
    pub fn address(&self, network: Network) -> Result<Address, KeyShareError> {
        Ok(Address::p2tr_tweaked(
            TweakedPublicKey::dangerous_assume_tweaked(self.output_key()?),
            network,
        ))
    }

    /// Shares this member holds.
    pub fn weight(&self) -> u16 {
        self.key_packages.len() as u16
    }

    /// Checks every member's certificate on the transcript: a key counts only when all
    /// members signed it.
    pub fn check_certificates(&self) -> Result<(), KeyShareError> {
        let msg = Message::from_digest(self.transcript);
        for (member, _) in self.roster.members() {
            let ok = self
                .certificates
                .iter()
                .find(|(m, _)| m == member)
                .and_then(|(_, sig)| {
                    let sig = schnorr::Signature::from_slice(sig).ok()?;
                    let key = member.key()?;
                    SECP256K1.verify_schnorr(&sig, &msg, &key).ok()
                })
                .is_some();
            if !ok {
                return Err(KeyShareError::Uncertified(*member));
            }
        }
        Ok(())
    }

    /// The stored form (CBOR), for the key store.
    pub fn to_bytes(&self) -> Result<Vec<u8>, KeyShareError> {
        let frost = |e: frost_secp256k1_tr::Error| KeyShareError::Frost(e.to_string());
        let stored = StoredKeyShare {
            version: 1,
            roster: self.roster.clone(),
            session: self.session,
            member: self.member,
            key_packages: self
                .internal_packages
                .iter()
                .map(|(i, kp)| Ok((*i, ByteBuf::from(kp.serialize().map_err(frost)?))))
                .collect::<Result<_, KeyShareError>>()?,
            public: ByteBuf::from(self.internal_public.serialize().map_err(frost)?),
            index: self.index,
            transcript: self.transcript,
            certificates: self
                .certificates
                .iter()
                .map(|(m, s)| (*m, ByteBuf::from(s.to_vec())))
                .collect(),
        };
        serde_cbor::to_vec(&stored).map_err(|e| KeyShareError::Undecodable(e.to_string()))
    }

    /// Loads the stored form, checking it decodes completely.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyShare, KeyShareError> {
        let bad = |what: &str| KeyShareError::Undecodable(what.to_owned());
        let stored: StoredKeyShare =
            serde_cbor::from_slice(bytes).map_err(|e| KeyShareError::Undecodable(e.to_string()))?;
        if stored.version != 1 {
            return Err(bad("unknown version"));
        }
        let frost = |e: frost_secp256k1_tr::Error| KeyShareError::Frost(e.to_string());
        let internal_packages = stored
            .key_packages
            .iter()
            .map(|(i, kp)| Ok((*i, KeyPackage::deserialize(kp).map_err(frost)?)))
            .collect::<Result<_, KeyShareError>>()?;
        let certificates = stored
            .certificates
            .iter()
            .map(|(m, s)| Ok((*m, s.as_slice().try_into().map_err(|_| bad("certificate"))?)))
            .collect::<Result<_, KeyShareError>>()?;
        KeyShare::from_internal(
            stored.roster,
            stored.session,
            stored.member,
            internal_packages,
            PublicKeyPackage::deserialize(&stored.public).map_err(frost)?,
            stored.index,
            stored.transcript,
            certificates,
        )
    }
}

/// A FROST identifier for share number `n` (1-based).
pub fn identifier(n: u16) -> Option<Identifier> {
    Identifier::try_from(n).ok()
}

/// Signs `digest` with a member key (BIP340).
pub fn member_sign(keypair: &Keypair, digest: [u8; 32]) -> [u8; 64] {
    let sig = SECP256K1.sign_schnorr(&Message::from_digest(digest), keypair);
    *sig.as_ref()
}

/// Checks a member's BIP340 signature on `digest`.
pub fn member_verify(member: &MemberId, digest: [u8; 32], signature: &[u8]) -> bool {
    let (Some(key), Ok(sig)) = (member.key(), schnorr::Signature::from_slice(signature)) else {
        return false;
    };
    SECP256K1
        .verify_schnorr(&sig, &Message::from_digest(digest), &key)
        .is_ok()
}

#[derive(Serialize, Deserialize)]
struct StoredKeyShare {
    version: u16,
    roster: Roster,
    session: SessionId,
    member: MemberId,
    /// Untweaked key packages.
    key_packages: Vec<(u16, ByteBuf)>,
    /// Untweaked public key package.
    public: ByteBuf,
    index: u32,
    transcript: [u8; 32],
    certificates: Vec<(MemberId, ByteBuf)>,
}
