//! The secp256k1 arithmetic the weighted DKG needs beyond what FROST exposes: dealing
//! a polynomial, committing to it, and checking an evaluation against a commitment.
//!
//! Share identifiers are small integers (1 to 100), so a commitment is evaluated with
//! Horner's rule and small-integer multiples (a few doublings each) instead of full
//! scalar multiplications: checking one member's shares against one dealer costs
//! about a millisecond, not the ~1 s per share of the generic per-share DKG.

use k256::{
    EncodedPoint, FieldBytes, ProjectivePoint, Scalar, U256,
    elliptic_curve::{
        Field,
        ops::Reduce,
        sec1::{FromEncodedPoint, ToEncodedPoint},
    },
};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

/// A scalar from a domain-separated SHA-256 of `parts`.
pub fn hash_to_scalar(domain: &[u8], parts: &[&[u8]]) -> Scalar {
    let mut h = Sha256::new();
    h.update((domain.len() as u64).to_be_bytes());
    h.update(domain);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest: [u8; 32] = h.finalize().into();
    <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(digest))
}

/// A random polynomial of degree `threshold - 1` (its coefficients, constant first).
pub fn random_polynomial<R: RngCore + CryptoRng>(threshold: u16, rng: &mut R) -> Vec<Scalar> {
    (0..threshold).map(|_| Scalar::random(&mut *rng)).collect()
}

/// The polynomial's value at `x`.
pub fn evaluate(coefficients: &[Scalar], x: u16) -> Scalar {
    let x = Scalar::from(u64::from(x));
    coefficients
        .iter()
        .rev()
        .fold(Scalar::ZERO, |acc, c| acc * x + c)
}

/// The commitment to a polynomial: each coefficient times the generator.
pub fn commit(coefficients: &[Scalar]) -> Vec<ProjectivePoint> {
    coefficients
        .iter()
        .map(|c| ProjectivePoint::GENERATOR * c)
        .collect()
}

/// `point * n` for a small `n`, by doubling and adding from `n`'s highest set bit
/// (share numbers are public, so the loop may depend on them: seven doublings for
/// share 100, not sixteen).
pub fn mul_small(point: &ProjectivePoint, n: u16) -> ProjectivePoint {
    let mut acc = ProjectivePoint::IDENTITY;
    let bits = u16::BITS - n.leading_zeros();
    for bit in (0..bits).rev() {
        acc = acc.double();
        if (n >> bit) & 1 == 1 {
            acc += point;
        }
    }
    acc
}

/// The committed polynomial's value at `x`, times the generator.
pub fn evaluate_commitment(commitment: &[ProjectivePoint], x: u16) -> ProjectivePoint {
    commitment
        .iter()
        .rev()
        .fold(ProjectivePoint::IDENTITY, |acc, c| mul_small(&acc, x) + c)
}

/// Compressed SEC1 encoding (33 bytes).
pub fn point_bytes(point: &ProjectivePoint) -> Vec<u8> {
    point.to_affine().to_encoded_point(true).as_bytes().to_vec()
}

/// Uncompressed SEC1 encoding (65 bytes): twice the size, but reading it back
/// checks the curve equation instead of taking a square root, about twenty times
/// cheaper. Round-1 commitments use it: every member reads every dealer's
/// `threshold` points, which compressed took a quarter of a DKG's arithmetic.
pub fn point_bytes_uncompressed(point: &ProjectivePoint) -> Vec<u8> {
    point
        .to_affine()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

/// A point from its compressed (33-byte) or uncompressed (65-byte) encoding; the
/// identity and points off the curve are refused.
pub fn point_from_bytes(bytes: &[u8]) -> Option<ProjectivePoint> {
    if bytes.len() != 33 && bytes.len() != 65 {
        return None;
    }
    let encoded = EncodedPoint::from_bytes(bytes).ok()?;
    let point: Option<k256::AffinePoint> = k256::AffinePoint::from_encoded_point(&encoded).into();
    point.map(ProjectivePoint::from)
}

/// Big-endian encoding (32 bytes).
pub fn scalar_bytes(scalar: &Scalar) -> [u8; 32] {
    scalar.to_bytes().into()
}

/// A scalar from its canonical big-endian encoding.
pub fn scalar_from_bytes(bytes: &[u8]) -> Option<Scalar> {
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    Option::from(<Scalar as k256::elliptic_curve::PrimeField>::from_repr(
        FieldBytes::from(bytes),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn commitments_evaluate_like_the_polynomial() {
        let poly = random_polynomial(67, &mut OsRng);
        let commitment = commit(&poly);
        for x in [1u16, 2, 37, 100, 65535] {
            assert_eq!(
                evaluate_commitment(&commitment, x),
                ProjectivePoint::GENERATOR * evaluate(&poly, x)
            );
        }
        assert_eq!(
            mul_small(&ProjectivePoint::GENERATOR, 0),
            ProjectivePoint::IDENTITY
        );
    }

    #[test]
    fn encodings_round_trip_and_reject_junk() {
        let s = Scalar::random(&mut OsRng);
        assert_eq!(scalar_from_bytes(&scalar_bytes(&s)), Some(s));
        assert_eq!(scalar_from_bytes(&[0xff; 32]), None); // above the group order
        let p = ProjectivePoint::GENERATOR * s;
        assert_eq!(point_from_bytes(&point_bytes(&p)), Some(p));
        assert_eq!(point_from_bytes(&point_bytes_uncompressed(&p)), Some(p));
        // Off the curve: y nudged.
        let mut off = point_bytes_uncompressed(&p);
        off[64] ^= 1;
        assert_eq!(point_from_bytes(&off), None);
        assert_eq!(point_from_bytes(&[2; 32]), None);
        assert_eq!(point_from_bytes(&[5; 33]), None);
    }
}
