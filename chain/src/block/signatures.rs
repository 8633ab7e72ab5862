//! Checking every transfer's signature on all cores before any state changes.
//!
//! Consensus code fails closed: a chunk whose checking thread panics has not been
//! shown valid, so the block is refused ([`BlockError::SignatureCheckIncomplete`]).

use super::{BlockError, TransferError, Tx};

/// Checks every transfer's signature in `txs` on all available cores; refuses the
/// block at the first transfer whose signature does not verify. `verified` names the
/// transactions whose signatures the caller has already checked itself (a producer's
/// mempool): they are not checked again.
pub(crate) fn check_transfer_signatures(
    txs: &[Tx],
    network: &str,
    verified: &(dyn Fn(&Tx) -> bool + Sync),
) -> Result<(), BlockError> {
    check_in_parallel(txs, |tx| match tx {
        Tx::Transfer(t) => verified(tx) || t.signature_valid(network),
        Tx::Coinbase { .. } | Tx::TenureChange(_) => true,
    })
}

/// Runs `valid` over `txs` in one chunk per core. The lowest invalid index wins; a
/// chunk whose thread did not finish counts as invalid from its first transaction.
fn check_in_parallel(txs: &[Tx], valid: impl Fn(&Tx) -> bool + Sync) -> Result<(), BlockError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let chunk = txs.len().div_ceil(threads).max(1);
    let valid = &valid;
    let outcomes: Vec<Result<(), BlockError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = txs
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                let first = c.saturating_mul(chunk);
                let handle = scope.spawn(move || {
                    part.iter()
                        .position(|tx| !valid(tx))
                        .map(|i| first.saturating_add(i))
                });
                (first, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(first, handle)| match handle.join() {
                Ok(None) => Ok(()),
                Ok(Some(index)) => Err(BlockError::Transfer {
                    index,
                    error: TransferError::Signature,
                }),
                Err(_) => Err(BlockError::SignatureCheckIncomplete { first }),
            })
            .collect()
    });
    // Chunks are in order, so the first failure is the lowest index.
    outcomes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    use super::*;
    use crate::block::{AccountId, Transfer};
    use serde_bytes::ByteBuf;

    fn transfers(n: u64) -> Vec<Tx> {
        (0..n)
            .map(|nonce| {
                Tx::Transfer(Transfer {
                    from: AccountId([1; 32]),
                    to: AccountId([2; 32]),
                    amount: 1,
                    fee: 0,
                    nonce,
                    signature: ByteBuf::new(),
                })
            })
            .collect()
    }

    fn nonce(tx: &Tx) -> u64 {
        match tx {
            Tx::Transfer(t) => t.nonce,
            _ => u64::MAX,
        }
    }

    #[test]
    fn the_lowest_invalid_transfer_is_named() {
        let txs = transfers(64);
        assert_eq!(check_in_parallel(&txs, |_| true), Ok(()));
        assert_eq!(
            check_in_parallel(&txs, |tx| ![7, 50].contains(&nonce(tx))),
            Err(BlockError::Transfer {
                index: 7,
                error: TransferError::Signature
            })
        );
    }

    #[test]
    fn a_check_that_panics_makes_the_block_invalid() {
        let txs = transfers(64);
        let refused = check_in_parallel(&txs, |tx| {
            if nonce(tx) == 40 {
                panic!("a verifier that cannot complete");
            }
            true
        });
        assert!(
            matches!(refused, Err(BlockError::SignatureCheckIncomplete { first }) if first <= 40),
            "{refused:?}"
        );
    }

    #[test]
    fn unsigned_transfers_are_refused() {
        assert_eq!(
            check_transfer_signatures(&transfers(3), "net", &|_| false),
            Err(BlockError::Transfer {
                index: 0,
                error: TransferError::Signature
            })
        );
    }
}
