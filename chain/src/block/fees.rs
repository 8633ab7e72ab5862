//! Paying a block's fees (seed 000): 40% at once to the producers holding its signing
//! shares, by BTC spent; 60% carried to the next term's producers, who receive what is
//! carried, by BTC spent, in their term's first block. With no producers known,
//! everything stays carried: fees are never lost.

use super::{FeeError, SIGNER_SHARES, TermContext, Tx, state::Working};
use crate::{pro_rata::pro_rata, rewards::block_fees};

/// Pays the fees of `txs`, signed by the shares in the `signers` bitmap, into `working`.
pub(crate) fn pay_fees(
    working: &mut Working<'_>,
    context: &TermContext,
    signers: &[u8],
    txs: &[Tx],
    first_of_term: bool,
) -> Result<(), FeeError> {
    if first_of_term && !context.producers.is_empty() {
        let carried = std::mem::take(&mut working.carried_fees);
        let spends: Vec<u64> = context.producers.iter().map(|(_, s)| *s).collect();
        for ((account, _), part) in context.producers.iter().zip(pro_rata(carried, &spends)) {
            working
                .credit(*account, part)
                .ok_or(FeeError::BalanceOverflows)?;
        }
    }
    let fees = txs
        .iter()
        .map(Tx::fee)
        .try_fold(0u64, u64::checked_add)
        .ok_or(FeeError::FeesOverflow)?;
    let mut signing: Vec<usize> = (0..SIGNER_SHARES)
        .filter(|i| signers.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .filter_map(|i| context.share_owners.get(i).map(|o| usize::from(*o)))
        .filter(|o| *o < context.producers.len())
        .collect();
    signing.sort_unstable();
    signing.dedup();
    let spends: Vec<u64> = signing
        .iter()
        .filter_map(|i| context.producers.get(*i).map(|(_, s)| *s))
        .collect();
    let split = block_fees(fees, &spends);
    let paid = split
        .signers
        .iter()
        .try_fold(0u64, |sum, part| sum.checked_add(*part))
        .ok_or(FeeError::FeesOverflow)?;
    for (i, part) in signing.iter().zip(split.signers) {
        if let Some((account, _)) = context.producers.get(*i) {
            working
                .credit(*account, part)
                .ok_or(FeeError::BalanceOverflows)?;
        }
    }
    let kept = fees.checked_sub(paid).ok_or(FeeError::FeesOverflow)?;
    working.carried_fees = working
        .carried_fees
        .checked_add(kept)
        .ok_or(FeeError::CarriedOverflows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use bitcoin::XOnlyPublicKey;
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::block::{AccountId, ChainState, Transfer};

    fn context(producers: Vec<(AccountId, u64)>) -> TermContext {
        TermContext {
            term: 1,
            producer_key: XOnlyPublicKey::from_slice(&[
                0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87,
                0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b,
                0x16, 0xf8, 0x17, 0x98,
            ])
            .unwrap(),
            stacker_key: None,
            coinbase: vec![],
            cost_limit: 10,
            consensus_hash: [0; 20],
            previous_consensus_hash: [0; 20],
            producers,
            share_owners: (0..100).map(|i| u16::from(i >= 75)).collect(),
        }
    }

    fn fee(amount: u64) -> Tx {
        Tx::Transfer(Transfer {
            from: AccountId([1; 32]),
            to: AccountId([2; 32]),
            amount: 0,
            fee: amount,
            nonce: 0,
            signature: ByteBuf::new(),
        })
    }

    #[test]
    fn only_the_producers_whose_shares_signed_are_paid_now() {
        let ctx = context(vec![(AccountId([10; 32]), 3), (AccountId([11; 32]), 1)]);
        // Shares 76–100 signed: producer 1's only.
        let mut bitmap = vec![0u8; 13];
        for i in 75..100 {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        let state = ChainState::default();
        let mut working = Working::over(&state);
        pay_fees(&mut working, &ctx, &bitmap, &[fee(100)], false).unwrap();
        assert_eq!(working.accounts.get(&AccountId([10; 32])), None);
        assert_eq!(working.accounts[&AccountId([11; 32])].balance, 40);
        assert_eq!(working.carried_fees, 60);
    }

    #[test]
    fn with_no_producers_known_every_fee_stays_carried() {
        let ctx = context(vec![]);
        let state = ChainState {
            carried_fees: 5,
            ..ChainState::default()
        };
        let mut working = Working::over(&state);
        pay_fees(&mut working, &ctx, &[0xff; 13], &[fee(100)], true).unwrap();
        assert!(working.accounts.is_empty());
        assert_eq!(working.carried_fees, 105);
        let overflow = pay_fees(
            &mut working,
            &ctx,
            &[0xff; 13],
            &[fee(u64::MAX), fee(1)],
            false,
        );
        assert_eq!(overflow, Err(FeeError::FeesOverflow));
    }
}
