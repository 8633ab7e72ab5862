//! Signer shares and Stacker DB slots for a term's producers (SIP "Producer DB
//! Setup").
//!
//! Producers are ordered from the smallest spend to the largest; producers with equal
//! spend are sorted by enrollment txid and then shuffled with ChaCha12 seeded from the
//! burnchain (the SIP: "on-chain VRF state sampled at tenure N-1's last Bitcoin
//! block"), so no one can choose its place among equals.
//!
//! - **Shares**: the 100 signer shares in proportion to spend (largest remainder;
//!   equal remainders go to the earlier producer in that order).
//! - **Signer slots** 0–99, and the signing-state slots 100–199 that mirror them:
//!   round-robin from the smallest producer. With `g` the greatest common divisor of
//!   the share counts, there are `g` rounds, and in each a producer with `w` shares
//!   takes `w / g` consecutive slots. This reproduces the SIP's example exactly
//!   (10/20/30/40%: slots 0 | 1, 2 | 3, 4, 5 | 6–9, then 10 | 11, 12 | …).
//! - **Block slots** 200–299: one per producer, in the same ascending order.

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

use crate::{pro_rata::pro_rata, terms::Producer};

/// Signer shares per term.
pub const SHARES: usize = 100;

/// Slots of the producer DB.
pub const PRODUCER_DB_SLOTS: usize = 300;

/// The shares and slots of one term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Producer indices (into the selection) from the smallest spend to the largest.
    pub order: Vec<usize>,
    /// Shares of each producer, by selection index.
    pub shares: Vec<u16>,
    /// The owner (selection index) of each producer-DB slot; `None`: unused.
    pub slots: Vec<Option<usize>>,
}

impl Assignment {
    /// The producer holding each signer share: signer slot i is share i + 1.
    pub fn share_owners(&self) -> Vec<u16> {
        self.slots
            .iter()
            .take(SHARES)
            .map(|o| o.and_then(|o| u16::try_from(o).ok()).unwrap_or(u16::MAX))
            .collect()
    }
}

/// A uniform index below `n` (rejection sampling, no modulo bias).
/// `n` must not be zero (0 is returned for it).
fn below(rng: &mut ChaCha12Rng, n: u64) -> u64 {
    let Some(rem) = u64::MAX.checked_rem(n) else {
        return 0;
    };
    let zone = u64::MAX.saturating_sub(rem);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v.checked_rem(n).unwrap_or(0);
        }
    }
}

/// Assigns shares and slots to `producers`, breaking ties with `seed`.
pub fn assign(producers: &[Producer], seed: [u8; 32]) -> Assignment {
    // (spend, txid, selection index), smallest spend first.
    let mut ranked: Vec<(u64, bitcoin::Txid, usize)> = producers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.weight.to_sat(), p.txid, i))
        .collect();
    ranked.sort();
    // Shuffle each run of equal spend (Fisher–Yates with ChaCha12).
    let mut rng = ChaCha12Rng::from_seed(seed);
    for run in ranked.chunk_by_mut(|a, b| a.0 == b.0) {
        for i in (1..run.len()).rev() {
            let bound = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
            let j = usize::try_from(below(&mut rng, bound)).unwrap_or(0);
            run.swap(i, j);
        }
    }
    let order: Vec<usize> = ranked.iter().map(|r| r.2).collect();
    let weights: Vec<u64> = ranked.iter().map(|r| r.0).collect();
    // Share counts in ascending order, then by selection index.
    let ascending = pro_rata(SHARES as u64, &weights);
    let mut shares = vec![0u16; producers.len()];
    for (producer, count) in order.iter().zip(&ascending) {
        if let Some(share) = shares.get_mut(*producer) {
            *share = *count as u16;
        }
    }

    // Signer slots: g rounds; in each, w / g consecutive slots per producer.
    let g = ascending
        .iter()
        .filter(|c| **c > 0)
        .fold(0u64, |g, c| gcd(g, *c));
    let mut signer_slots: Vec<usize> = Vec::with_capacity(SHARES);
    if g > 0 {
        for _round in 0..g {
            for (producer, count) in order.iter().zip(&ascending) {
                for _ in 0..count.checked_div(g).unwrap_or(0) {
                    signer_slots.push(*producer);
                }
            }
        }
    }
    let mut slots: Vec<Option<usize>> = Vec::with_capacity(PRODUCER_DB_SLOTS);
    let signer: Vec<Option<usize>> = (0..SHARES).map(|s| signer_slots.get(s).copied()).collect();
    slots.extend(signer.iter().copied());
    slots.extend(signer);
    slots.extend((0..PRODUCER_DB_SLOTS - 2 * SHARES).map(|rank| order.get(rank).copied()));
    Assignment {
        order,
        shares,
        slots,
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    match a.checked_rem(b) {
        Some(r) => gcd(b, r),
        None => a,
    }
}
