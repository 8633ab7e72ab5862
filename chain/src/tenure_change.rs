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
        let mut out = Vec::with_capacity(182 + self.signers.len().div_ceil(8));
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
            return Err(TenureChangeError::Trailing(rest.len() - len));
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

    /// The term's cost budget after this change: an `Extend` renews it to the full
    /// term limit; a `BlockFound` starts the new term with the full limit too.
    pub fn budget_after(&self, term_limit: u64) -> u64 {
        term_limit
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
    fn an_extend_renews_the_budget() {
        assert_eq!(sample(Cause::Extend, 0).budget_after(50_000), 50_000);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = TenureChange::from_bytes(&bytes);
        }
    }
}
