//! Terms and producer-set selection.
//!
//! A term is 10 burn blocks. The producers of term N are chosen from the enrollments
//! mined during term N-2 (SIP "Producer Set Selection"): ranked by BTC spent, the top
//! 100. Seed 000's discussion adds a lower bound: a producer whose spend is below a
//! share of the total (1% by default) is not selected, and its spend is carried
//! forward as credit added to its next enrollment, so small producers are not simply
//! priced out. Decisions where the sources are silent: the bound is computed once,
//! over the top 100; producers beyond the top 100 also keep their spend as credit;
//! ties in spend go to the lower enrollment txid. The credit map is bounded: it keeps
//! the [`MAX_CARRIED_CREDIT`] largest credits (ties to the lower key), so producers
//! that enroll once and leave do not grow it forever; pushing a credit out costs an
//! attacker that many enrollments each spending more than it.

use std::collections::BTreeMap;

use bitcoin::{Amount, Txid, secp256k1::PublicKey};

/// Burn blocks per term.
pub const TERM_LENGTH: u64 = 10;

/// Producers per term, at most.
pub const MAX_PRODUCERS: usize = 100;

/// Credits carried forward, at most.
pub const MAX_CARRIED_CREDIT: usize = 1_000;

/// Where terms start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    /// Burn height of term 0's first block.
    pub first_burn_height: u64,
    /// Burn blocks per term.
    pub length: u64,
}

impl Terms {
    /// Terms of [`TERM_LENGTH`] from `first_burn_height`.
    pub fn new(first_burn_height: u64) -> Terms {
        Terms {
            first_burn_height,
            length: TERM_LENGTH,
        }
    }

    /// The term holding burn height `height` (none before term 0).
    pub fn term_of(&self, height: u64) -> Option<u64> {
        let since = height.checked_sub(self.first_burn_height)?;
        since.checked_div(self.length)
    }

    /// Burn heights of term `term`.
    /// (Saturating: a term past the end of `u64` heights is empty.)
    pub fn heights(&self, term: u64) -> std::ops::Range<u64> {
        let start = self
            .first_burn_height
            .saturating_add(term.saturating_mul(self.length));
        start..start.saturating_add(self.length)
    }

    /// The term whose enrollments choose the producers of `term` (N-2).
    pub fn enrollment_term_for(&self, term: u64) -> Option<u64> {
        term.checked_sub(2)
    }
}

/// An enrollment as selection sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The producer's signing key.
    pub producer: PublicKey,
    /// BTC it spent in this enrollment.
    pub spent: Amount,
    /// The enrollment transaction.
    pub txid: Txid,
}

/// A selected producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Producer {
    /// Its signing key.
    pub producer: PublicKey,
    /// What counts for it: this enrollment's spend plus carried credit.
    pub weight: Amount,
    /// Its enrollment.
    pub txid: Txid,
}

/// A term's producer set and the credit carried past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Selected producers, heaviest first.
    pub producers: Vec<Producer>,
    /// Credit for each producer not selected, to add to its next enrollment.
    pub credit: BTreeMap<PublicKey, Amount>,
}

/// Chooses a term's producers from `candidates` (the enrollments of term N-2), with
/// `credit` carried from earlier terms and the lower bound `min_share_bps` (basis
/// points of the top-100 total; 100 = 1%). A producer that enrolled twice counts once,
/// with its larger spend.
pub fn select(
    candidates: &[Candidate],
    credit: &BTreeMap<PublicKey, Amount>,
    min_share_bps: u64,
) -> Selection {
    let mut best: BTreeMap<PublicKey, &Candidate> = BTreeMap::new();
    for c in candidates {
        let keep = best.get(&c.producer).is_none_or(|b| {
            (c.spent, std::cmp::Reverse(c.txid)) > (b.spent, std::cmp::Reverse(b.txid))
        });
        if keep {
            best.insert(c.producer, c);
        }
    }
    let mut ranked: Vec<Producer> = best
        .values()
        .map(|c| Producer {
            producer: c.producer,
            // Saturating: a weight at the top of the range still ranks first.
            weight: c
                .spent
                .checked_add(credit.get(&c.producer).copied().unwrap_or(Amount::ZERO))
                .unwrap_or(Amount::MAX),
            txid: c.txid,
        })
        .collect();
    ranked.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.txid.cmp(&b.txid)));
    let beyond = ranked.split_off(ranked.len().min(MAX_PRODUCERS));
    // At most 100 weights of 64 bits: the sum and the product fit in 128 bits.
    let total = ranked.iter().fold(0u128, |sum, p| {
        sum.saturating_add(u128::from(p.weight.to_sat()))
    });
    let bound = total.saturating_mul(u128::from(min_share_bps)) / 10_000;
    let (producers, below): (Vec<Producer>, Vec<Producer>) = ranked
        .into_iter()
        .partition(|p| u128::from(p.weight.to_sat()) >= bound);
    // Credit: earlier credit of producers that did not enroll now, plus the whole
    // weight of those enrolled but not selected.
    let mut carried: BTreeMap<PublicKey, Amount> = credit
        .iter()
        .filter(|(k, _)| !best.contains_key(*k))
        .map(|(k, v)| (*k, *v))
        .collect();
    for p in below.into_iter().chain(beyond) {
        carried.insert(p.producer, p.weight);
    }
    if carried.len() > MAX_CARRIED_CREDIT {
        let mut largest: Vec<(PublicKey, Amount)> = carried.into_iter().collect();
        largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        largest.truncate(MAX_CARRIED_CREDIT);
        carried = largest.into_iter().collect();
    }
    Selection {
        producers,
        credit: carried,
    }
}
