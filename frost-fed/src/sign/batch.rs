//! Many shares of one signing package at once.
//!
//! A weighted member holds several of the 100 shares, and a signature carries 67 or
//! more. frost computes the package's binding factors and group commitment (a
//! multiscalar multiplication over every commitment in the package) for each share it
//! signs or checks, so a member holding k of n signing shares pays k such
//! multiplications per signature, and the federation n². Here:
//!
//! - [`sign_all`] signs all of a member's shares with one precomputation; each share
//!   is then scalar arithmetic only. It gives exactly frost's `round2::sign` shares
//!   (a test compares them).
//! - [`verify_all`] checks every share of a package with one precomputation and one
//!   multiscalar multiplication: with coefficients `a_i` derived by hashing the
//!   package and all the shares (so no share can be chosen after them), the shares
//!   are valid iff `Σ a_i z_i · G − Σ a_i (±R_i) − Σ a_i c λ_i · Y_i` is the identity,
//!   where `R_i = D_i + ρ_i E_i` is share i's commitment (negated when the group
//!   commitment has an odd y, as BIP340 asks), `Y_i` its verifying share, `λ_i` its
//!   Lagrange coefficient and `c` the challenge. A forged share passes only with
//!   probability about 2⁻²⁵⁶ over the coefficients. When the batch fails, each share
//!   is checked on its own to name the culprits.

use std::collections::BTreeMap;

use frost_core::Ciphersuite as _;
use frost_secp256k1_tr::{
    Error, Identifier, Secp256K1Sha256TR as Suite, SigningPackage,
    keys::{KeyPackage, PublicKeyPackage},
    round1::SigningNonces,
    round2::SignatureShare,
};
use k256::{
    ProjectivePoint, Scalar, U256,
    elliptic_curve::{
        PrimeField,
        ops::{LinearCombinationExt, Reduce},
        point::AffineCoordinates,
    },
};
use sha2::{Digest, Sha256};

/// Signs `package` with each of a member's (nonces, key package), in order.
pub fn sign_all(
    package: &SigningPackage,
    signers: &[(&SigningNonces, &KeyPackage)],
) -> Result<Vec<SignatureShare>, Error> {
    let Some((first_nonces, first)) = signers.first() else {
        return Ok(Vec::new());
    };
    if package.signing_commitments().len() < usize::from(*first.min_signers()) {
        return Err(Error::IncorrectNumberOfCommitments);
    }
    for (nonces, key_package) in signers {
        let commitment = package
            .signing_commitments()
            .get(key_package.identifier())
            .ok_or(Error::MissingCommitment)?;
        if nonces.commitments() != commitment {
            return Err(Error::IncorrectCommitment);
        }
        if key_package.verifying_key() != first.verifying_key() {
            return Err(Error::IncorrectCommitment);
        }
    }
    // Every share is under one group key, so the prepared package, the binding
    // factors, the group commitment and the challenge are the same for all.
    let (prepared, _, first_prepared) = Suite::pre_sign(package, first_nonces, first)?;
    let verifying_key = *first_prepared.verifying_key();
    let binding = frost_core::compute_binding_factor_list(&prepared, &verifying_key, &[])?;
    let commitment = frost_core::compute_group_commitment(&prepared, &binding)?;
    let challenge = Suite::challenge(
        &commitment.clone().to_element(),
        &verifying_key,
        prepared.message(),
    )?;
    let mut shares = Vec::with_capacity(signers.len());
    for (nonces, key_package) in signers {
        let (_, nonces, key_package) = Suite::pre_sign(&prepared, nonces, key_package)?;
        let (_, nonces) = Suite::pre_commitment_sign(&prepared, &nonces, &binding)?;
        let factor = binding
            .get(key_package.identifier())
            .ok_or(Error::UnknownIdentifier)?
            .clone();
        let lambda = frost_core::derive_interpolating_value(key_package.identifier(), &prepared)?;
        shares.push(Suite::compute_signature_share(
            &commitment,
            &nonces,
            factor,
            lambda,
            &key_package,
            challenge,
        ));
    }
    Ok(shares)
}

/// What a package's shares add up to once they verify.
#[derive(Clone, Copy, Debug)]
pub struct Verified {
    /// The x coordinate of the group commitment: the signature's `R`.
    pub r_x: [u8; 32],
    /// The sum of the shares: the signature's `s`.
    pub z: [u8; 32],
}

/// Checks every share of `shares` against its verifying share in `public`, as one
/// batch (see the module docs). Returns the aggregate's parts.
pub fn verify_all(
    package: &SigningPackage,
    shares: &BTreeMap<Identifier, SignatureShare>,
    public: &PublicKeyPackage,
) -> Result<Verified, Error> {
    let (package, shares, public) = Suite::pre_aggregate(package, shares, public)?;
    if shares.len() != package.signing_commitments().len()
        || shares
            .keys()
            .any(|id| !package.signing_commitments().contains_key(id))
    {
        return Err(Error::UnknownIdentifier);
    }
    let binding = frost_core::compute_binding_factor_list(&package, public.verifying_key(), &[])?;
    let package = Suite::pre_commitment_aggregate(&package, &binding)?;
    let commitment = frost_core::compute_group_commitment(&package, &binding)?;
    let r = commitment.clone().to_element();
    let challenge = Suite::challenge(&r, public.verifying_key(), package.message())?;
    let c = challenge.to_scalar();
    let odd = bool::from(r.to_affine().y_is_odd());
    let sign = if odd { Scalar::ONE } else { -Scalar::ONE };

    // The coefficients: a hash of everything checked, then of each share's place.
    let mut transcript = Sha256::new();
    transcript.update(b"tenure/frost-fed/batch/v1");
    transcript.update(package.message());
    for (id, share) in shares.iter() {
        transcript.update(id.serialize());
        transcript.update(share.serialize());
        if let Some(c) = package.signing_commitment(id) {
            transcript.update(c.serialize().map_err(|_| Error::MalformedSignature)?);
        }
    }
    let seed: [u8; 32] = transcript.finalize().into();

    let mut terms: Vec<(ProjectivePoint, Scalar)> = Vec::with_capacity(3 * shares.len() + 1);
    let mut z_sum = Scalar::ZERO;
    let mut weighted_z = Scalar::ZERO;
    for (index, (id, share)) in shares.iter().enumerate() {
        let z = scalar_of(share)?;
        z_sum += z;
        let mut h = Sha256::new();
        h.update(seed);
        h.update((index as u64).to_be_bytes());
        let a = <Scalar as Reduce<U256>>::reduce_bytes(&h.finalize());
        weighted_z += a * z;
        let commitments = package
            .signing_commitment(id)
            .ok_or(Error::UnknownIdentifier)?;
        let rho = scalar_from(&binding.get(id).ok_or(Error::UnknownIdentifier)?.serialize())?;
        let lambda = frost_core::derive_interpolating_value(id, &package)?;
        let verifying = public
            .verifying_shares()
            .get(id)
            .ok_or(Error::UnknownIdentifier)?
            .to_element();
        // R_i is negated for an odd group commitment: −(±R_i) = sign · R_i.
        terms.push((commitments.hiding().value(), sign * a));
        terms.push((commitments.binding().value(), sign * a * rho));
        terms.push((verifying, -(a * c * lambda)));
    }
    terms.push((ProjectivePoint::GENERATOR, weighted_z));
    if ProjectivePoint::lincomb_ext(terms.as_slice()) != ProjectivePoint::IDENTITY {
        // Name who failed, one by one.
        let culprits: Vec<Identifier> = shares
            .iter()
            .filter(|(id, share)| {
                frost_core::verify_signature_share_precomputed(
                    **id,
                    &package,
                    &binding,
                    &commitment,
                    share,
                    public.verifying_shares().get(id).unwrap_or(
                        &frost_secp256k1_tr::keys::VerifyingShare::new(ProjectivePoint::IDENTITY),
                    ),
                    challenge,
                )
                .is_err()
            })
            .map(|(id, _)| *id)
            .collect();
        return Err(Error::InvalidSignatureShare { culprits });
    }
    Ok(Verified {
        r_x: r.to_affine().x().into(),
        z: z_sum.to_repr().into(),
    })
}

/// A share's scalar (a share that decoded is canonical).
fn scalar_of(share: &SignatureShare) -> Result<Scalar, Error> {
    scalar_from(&share.serialize())
}

/// A scalar from its 32 big-endian bytes, refused unless canonical.
fn scalar_from(bytes: &[u8]) -> Result<Scalar, Error> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| Error::MalformedSignature)?;
    Option::from(Scalar::from_repr(bytes.into())).ok_or(Error::MalformedSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use frost_secp256k1_tr::{
        keys::{IdentifierList, generate_with_dealer},
        round1, round2,
    };
    use rand_core::OsRng;

    /// A dealt 7-of-10 key, everyone committing, and the package for `message`.
    fn setup() -> (
        BTreeMap<Identifier, KeyPackage>,
        PublicKeyPackage,
        BTreeMap<Identifier, SigningNonces>,
        SigningPackage,
    ) {
        let (secrets, public) =
            generate_with_dealer(10, 7, IdentifierList::Default, OsRng).unwrap();
        let keys: BTreeMap<Identifier, KeyPackage> = secrets
            .into_iter()
            .map(|(id, s)| (id, KeyPackage::try_from(s).unwrap()))
            .collect();
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for (id, key) in &keys {
            let (n, c) = round1::commit(key.signing_share(), &mut OsRng);
            nonces.insert(*id, n);
            commitments.insert(*id, c);
        }
        let package = SigningPackage::new(commitments, &[42u8; 32]);
        (keys, public, nonces, package)
    }

    #[test]
    fn signing_all_shares_at_once_gives_frosts_shares_and_a_valid_signature() {
        let (keys, public, nonces, package) = setup();
        let signers: Vec<(&SigningNonces, &KeyPackage)> =
            keys.iter().map(|(id, k)| (&nonces[id], k)).collect();
        let shares = sign_all(&package, &signers).unwrap();
        let mut map = BTreeMap::new();
        for ((id, key), share) in keys.iter().zip(&shares) {
            assert_eq!(*share, round2::sign(&package, &nonces[id], key).unwrap());
            map.insert(*id, *share);
        }
        let verified = verify_all(&package, &map, &public).unwrap();
        let signature = frost_secp256k1_tr::aggregate(&package, &map, &public).unwrap();
        let bytes = signature.serialize().unwrap();
        assert_eq!(&bytes[..32], &verified.r_x);
        assert_eq!(&bytes[32..], &verified.z);
    }

    #[test]
    fn a_batch_with_two_swapped_shares_fails_and_names_both() {
        let (keys, public, nonces, package) = setup();
        let signers: Vec<(&SigningNonces, &KeyPackage)> =
            keys.iter().map(|(id, k)| (&nonces[id], k)).collect();
        let shares = sign_all(&package, &signers).unwrap();
        let mut map: BTreeMap<Identifier, SignatureShare> =
            keys.keys().copied().zip(shares.iter().copied()).collect();
        // Two shares swapped: their sum (the signature) is unchanged.
        let ids: Vec<Identifier> = map.keys().copied().collect();
        let (a, b) = (map[&ids[2]], map[&ids[5]]);
        map.insert(ids[2], b);
        map.insert(ids[5], a);
        match verify_all(&package, &map, &public) {
            Err(Error::InvalidSignatureShare { culprits }) => {
                assert_eq!(culprits, vec![ids[2], ids[5]]);
            }
            other => panic!("a swapped pair passed: {other:?}"),
        }
        // A share missing from the map is refused too.
        map.remove(&ids[0]);
        assert!(verify_all(&package, &map, &public).is_err());
    }
}
