//! Proof-of-mainstake (seed 003): coins staked on the main chain elect who may publish
//! the next sidechain header.
//!
//! - A **ticket** is a staked output: its value in satoshis and the burn height at
//!   which the stake unlocks. Its **weight** at height `h` is `value × (lock − h)`,
//!   falling linearly to zero at the lock height: a longer lock is more to lose.
//! - After each burn block, the **lottery** is seeded with that block's header hash
//!   (so grinding it means grinding proof of work) and the sidechain id, and draws one
//!   ticket with probability proportional to weight. Every node holds the same tickets
//!   and tip, so every node finds the same winner.
//! - A **sidechain header** is two hashes (merkle root, previous header). In the next
//!   burn block, only the winner's owner may publish one, signed with its key; its
//!   previous hash must be zero (the first) or a header already published; at most one
//!   per burn block per sidechain.
//!
//! Bitcoin has no `OP_STAKEVERIFY`; [`crate::ops::stake`] finds the tickets in burn
//! blocks (outputs Bitcoin keeps locked until the stake's height, marked by a
//! registration). This module starts from the tickets.

use std::collections::BTreeSet;

use bitcoin::{
    OutPoint, XOnlyPublicKey,
    secp256k1::{Message, SECP256K1, schnorr},
};
use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// A staked output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value in satoshis.
    pub value: u64,
    /// The burn height at which the stake unlocks.
    pub lock_height: u64,
    /// The key that may publish headers when the ticket wins.
    pub owner: XOnlyPublicKey,
}

impl Ticket {
    /// Lottery weight at burn height `height`: value × blocks left before the lock.
    pub fn weight(&self, height: u64) -> u128 {
        // Two 64-bit factors cannot overflow 128 bits.
        u128::from(self.value).saturating_mul(u128::from(self.lock_height.saturating_sub(height)))
    }
}

/// The ticket that wins after the burn block at `height` with header hash `tip`, for
/// `sidechain`. `None` when no ticket has weight.
pub fn winner<'a>(
    tickets: &'a [Ticket],
    tip: &[u8; 32],
    height: u64,
    sidechain: &[u8; 32],
) -> Option<&'a Ticket> {
    let mut ordered: Vec<&Ticket> = tickets.iter().filter(|t| t.weight(height) > 0).collect();
    ordered.sort_by_key(|t| t.outpoint);
    // Bitcoin amounts and heights keep real weights far below 2^128; a sum that
    // would overflow draws no winner rather than a wrong one.
    let total = ordered
        .iter()
        .try_fold(0u128, |sum, t| sum.checked_add(t.weight(height)))?;
    if total == 0 {
        return None;
    }
    let mut seed = Sha256::new();
    seed.update(b"tenure/chain/mainstake/lottery/v1");
    seed.update(tip);
    seed.update(sidechain);
    let mut rng = ChaCha12Rng::from_seed(seed.finalize().into());
    // A uniform draw below `total`, without modulo bias.
    let zone = u128::MAX.checked_sub(u128::MAX.checked_rem(total)?)?;
    let draw = loop {
        let v = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if v < zone {
            break v.checked_rem(total)?;
        }
    };
    let mut acc = 0u128;
    ordered.into_iter().find(|t| {
        // Cannot overflow: the running sum stays below `total`.
        acc = acc.saturating_add(t.weight(height));
        draw < acc
    })
}

/// A sidechain block header as published on the main chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidechainHeader {
    /// Commits to the sidechain block's transactions.
    pub merkle_root: [u8; 32],
    /// Hash of the previous sidechain header (zero for the first).
    pub prev: [u8; 32],
}

impl SidechainHeader {
    /// Its hash.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/mainstake/header/v1");
        h.update(self.merkle_root);
        h.update(self.prev);
        Sha256::digest(h.finalize()).into()
    }

    /// What the publisher signs: the header for this sidechain at this burn height.
    pub fn signing_digest(&self, sidechain: &[u8; 32], burn_height: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/mainstake/publish/v1");
        h.update(sidechain);
        h.update(burn_height.to_be_bytes());
        h.update(self.hash());
        h.finalize().into()
    }
}

/// Why a published header is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No ticket won.
    #[error("no stake has weight, so no one may publish")]
    NoWinner,
    /// Published by someone other than the winner's owner.
    #[error("published by a key that did not win the lottery")]
    NotWinner,
    /// The signature does not verify.
    #[error("the publisher's signature does not verify")]
    Signature,
    /// Its previous header is unknown.
    #[error("its previous header was never published")]
    UnknownPrev,
    /// A header for this sidechain was already published in this burn block.
    #[error("a header was already published in this burn block")]
    AlreadyPublished,
}

/// One sidechain's published headers.
#[derive(Clone, Debug, Default)]
pub struct Sidechain {
    /// The sidechain's id.
    pub id: [u8; 32],
    published: BTreeSet<[u8; 32]>,
    last_burn_height: Option<u64>,
}

impl Sidechain {
    /// A sidechain with no headers yet.
    pub fn new(id: [u8; 32]) -> Sidechain {
        Sidechain {
            id,
            ..Sidechain::default()
        }
    }

    /// A header published in the burn block at `burn_height`, by `publisher` with
    /// `signature`, where the lottery ran on `tickets` after the block at
    /// `burn_height - 1` with hash `prev_tip`.
    pub fn publish(
        &mut self,
        header: &SidechainHeader,
        publisher: &XOnlyPublicKey,
        signature: &[u8],
        tickets: &[Ticket],
        prev_tip: &[u8; 32],
        burn_height: u64,
    ) -> Result<(), HeaderError> {
        if self.last_burn_height == Some(burn_height) {
            return Err(HeaderError::AlreadyPublished);
        }
        let winner = winner(tickets, prev_tip, burn_height.saturating_sub(1), &self.id)
            .ok_or(HeaderError::NoWinner)?;
        if winner.owner != *publisher {
            return Err(HeaderError::NotWinner);
        }
        let digest = header.signing_digest(&self.id, burn_height);
        let ok = schnorr::Signature::from_slice(signature).is_ok_and(|sig| {
            SECP256K1
                .verify_schnorr(&sig, &Message::from_digest(digest), publisher)
                .is_ok()
        });
        if !ok {
            return Err(HeaderError::Signature);
        }
        if header.prev != [0; 32] && !self.published.contains(&header.prev) {
            return Err(HeaderError::UnknownPrev);
        }
        self.published.insert(header.hash());
        self.last_burn_height = Some(burn_height);
        Ok(())
    }
}
