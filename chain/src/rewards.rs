//! Producer rewards (SIP "Producer Rewards"; seed 000).
//!
//! - The term's **coinbase** goes to every producer in proportion to its spend,
//!   whether it signed or not.
//! - Each block's **fees**: 40% to the producers that signed it, in proportion to
//!   their spend, paid by the next block (see `block::fees`); 60% to the next term's
//!   producers, in proportion to theirs, so a set gains nothing by stuffing its own
//!   last blocks.
//!
//! Amounts are integers and every split conserves value exactly ([`pro_rata`]).

use crate::pro_rata::pro_rata;

/// Percent of a block's fees paid to its signers (by the next block).
pub const FEES_NOW_PERCENT: u64 = 40;

/// The coinbase of a term: each producer's part, by the order of `spends`.
pub fn coinbase(total: u64, spends: &[u64]) -> Vec<u64> {
    pro_rata(total, spends)
}

/// A block's fees split between its signers now and the next term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeSplit {
    /// Each signer's part now, by the order of the signers' spends.
    pub signers: Vec<u64>,
    /// What goes to the next term's producers.
    pub next_term: u64,
}

/// Splits `fees` of a block among the spends of the producers that signed it.
pub fn block_fees(fees: u64, signer_spends: &[u64]) -> FeeSplit {
    // 40% of a u64 fits in a u64 and is at most `fees`.
    let now = u128::from(fees).saturating_mul(u128::from(FEES_NOW_PERCENT)) / 100;
    let now = u64::try_from(now).unwrap_or(fees).min(fees);
    FeeSplit {
        signers: pro_rata(now, signer_spends),
        next_term: fees.saturating_sub(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forty_now_sixty_later() {
        let split = block_fees(1_000, &[1, 3]);
        assert_eq!(split.signers, vec![100, 300]);
        assert_eq!(split.next_term, 600);
        assert_eq!(coinbase(1_000, &[10, 20, 30, 40]), vec![100, 200, 300, 400]);
    }

    proptest! {
        #[test]
        fn reward_splits_conserve_value_exactly(
            fees in 0u64..21_000_000 * 100_000_000,
            spends in prop::collection::vec(1u64..10_000_000_000, 1..100),
        ) {
            let split = block_fees(fees, &spends);
            prop_assert_eq!(split.signers.iter().sum::<u64>() + split.next_term, fees);
            prop_assert!(split.next_term >= fees * 6 / 10);
            let coinbase = coinbase(fees, &spends);
            prop_assert_eq!(coinbase.iter().sum::<u64>(), fees);
        }
    }
}
