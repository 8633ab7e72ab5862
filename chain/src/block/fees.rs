//! Paying a block's fees (seed 000): 40% to the producers holding its signing shares,
//! by BTC spent; 60% carried to the next term's producers, who receive what is
//! carried, by BTC spent, in their term's first block. With no producers known,
//! everything stays carried: fees are never lost.
//!
//! A block's header (its state root) is signed before anyone knows which shares will
//! sign it, so its signers cannot be paid in it. The state records the 40% owed
//! ([`super::ChainState::signer_fees`], in the state root); the next block of the
//! same term pays the signers of the parent version it carries
//! ([`super::Block::parent_signature`], checked by validation), so every validator
//! pays the same signers whichever version of the parent it holds. A term's first
//! block pays no parent's signers (their evidence is under the previous term's key):
//! what the parent owed is carried, and the term's producers receive it with the
//! rest of the carried fees. So is what a block owed when it had no known signers.

use super::{AccountId, FeeError, TermContext, Tx, state::Working};
use crate::{pro_rata::pro_rata, rewards::block_fees};

/// Pays what the previous block owed to `previous_signers` (the verified signers of
/// the parent version the block carries; none for a term's first block), opens the
/// term's carried fees to its producers on its first block, and splits the fees of
/// `txs`: the signers' part owed to this block's signers, the rest carried.
pub(crate) fn pay_fees(
    working: &mut Working<'_>,
    context: &TermContext,
    txs: &[Tx],
    first_of_term: bool,
    previous_signers: &[(AccountId, u64)],
) -> Result<(), FeeError> {
    let owed = std::mem::take(&mut working.signer_fees);
    if previous_signers.is_empty() {
        working.carried_fees = working
            .carried_fees
            .checked_add(owed)
            .ok_or(FeeError::CarriedOverflows)?;
    } else {
        pay_pro_rata(working, previous_signers, owed)?;
    }
    if first_of_term && !context.producers.is_empty() {
        let carried = std::mem::take(&mut working.carried_fees);
        pay_pro_rata(working, &context.producers, carried)?;
    }
    let fees = txs
        .iter()
        .map(Tx::fee)
        .try_fold(0u64, u64::checked_add)
        .ok_or(FeeError::FeesOverflow)?;
    let split = block_fees(fees, &[1]);
    let to_signers = split
        .signers
        .iter()
        .try_fold(0u64, |sum, part| sum.checked_add(*part))
        .ok_or(FeeError::FeesOverflow)?;
    working.signer_fees = to_signers;
    working.carried_fees = working
        .carried_fees
        .checked_add(split.next_term)
        .ok_or(FeeError::CarriedOverflows)?;
    Ok(())
}

/// Credits `amount` to `recipients` in proportion to their spend (a part of zero
/// touches no account).
fn pay_pro_rata(
    working: &mut Working<'_>,
    recipients: &[(AccountId, u64)],
    amount: u64,
) -> Result<(), FeeError> {
    let spends: Vec<u64> = recipients.iter().map(|(_, s)| *s).collect();
    let parts = pro_rata(amount, &spends);
    for ((account, _), part) in recipients.iter().zip(parts).filter(|(_, p)| *p > 0) {
        working
            .credit(*account, part)
            .ok_or(FeeError::BalanceOverflows)?;
    }
    Ok(())
}

/// The producers holding `shares` (numbers 1–100) in `context`, with their spend, in
/// producer order and each once.
pub(crate) fn signers_of(
    context: &TermContext,
    shares: &std::collections::BTreeSet<u16>,
) -> Vec<(AccountId, u64)> {
    let mut producers: Vec<usize> = shares
        .iter()
        .filter_map(|n| {
            let index = usize::from(n.checked_sub(1)?);
            context.share_owners.get(index).map(|o| usize::from(*o))
        })
        .collect();
    producers.sort_unstable();
    producers.dedup();
    producers
        .iter()
        .filter_map(|i| context.producers.get(*i).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use serde_bytes::ByteBuf;

    use super::*;
    use crate::block::{AccountId, ChainState, Transfer};

    fn context(producers: Vec<(AccountId, u64)>) -> TermContext {
        let group = crate::block::build::ProducerGroup::shared();
        TermContext {
            term: 1,
            producer_key: group.key(),
            producer_shares: group.public.clone(),
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
    fn a_blocks_signers_are_paid_their_part_by_the_next_block() {
        let ctx = context(vec![(AccountId([10; 32]), 3), (AccountId([11; 32]), 1)]);
        // Shares 76–100 signed: producer 1's only.
        let signers = signers_of(&ctx, &(76..=100).collect());
        assert_eq!(signers, vec![(AccountId([11; 32]), 1)]);
        let state = ChainState::default();
        let mut working = Working::over(&state);
        pay_fees(&mut working, &ctx, &[fee(100)], false, &[]).unwrap();
        // Nothing is paid in the block itself: 40 owed, 60 carried.
        assert!(working.accounts.is_empty());
        assert_eq!((working.signer_fees, working.carried_fees), (40, 60));
        let after = ChainState {
            signer_fees: 40,
            carried_fees: 60,
            ..ChainState::default()
        };
        let mut next = Working::over(&after);
        pay_fees(&mut next, &ctx, &[], false, &signers).unwrap();
        assert_eq!(next.accounts.get(&AccountId([10; 32])), None);
        assert_eq!(next.accounts[&AccountId([11; 32])].balance, 40);
        assert_eq!((next.signer_fees, next.carried_fees), (0, 60));
    }

    #[test]
    fn with_no_producers_known_every_fee_stays_carried() {
        let ctx = context(vec![]);
        let state = ChainState {
            carried_fees: 5,
            signer_fees: 7,
            ..ChainState::default()
        };
        let mut working = Working::over(&state);
        pay_fees(&mut working, &ctx, &[fee(100)], true, &[]).unwrap();
        assert!(working.accounts.is_empty());
        assert_eq!(working.carried_fees + working.signer_fees, 112);
        let overflow = pay_fees(&mut working, &ctx, &[fee(u64::MAX), fee(1)], false, &[]);
        assert_eq!(overflow, Err(FeeError::FeesOverflow));
    }
}
