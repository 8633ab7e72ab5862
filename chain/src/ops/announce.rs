//! Announcing blocks on Bitcoin (seed 001, "Block Signing and Announcement"; seed
//! 000, announcements make blocks final).
//!
//! Each term's producer group holds a **term UTXO**: a key-path taproot output of its
//! group key. To announce its latest block, the group spends that output in a
//! transaction whose first output is an `OP_RETURN` committing to the block (magic,
//! `A`, term, block height, block hash) and whose second output is the new term UTXO.
//! Only the group can sign the spend, so an announcement proves the group's consent.
//!
//! From the burn blocks, [`Announcements`] keeps the latest announced block of every
//! term. The first block of term N must build on the last block announced by any
//! earlier term; blocks of a term never announced are dropped. The index is rebuilt
//! from the burnchain, so a burnchain reorg that removes an announcement rolls it back.

use std::collections::BTreeMap;

use bitcoin::{
    Amount, Block as BurnBlock, OutPoint, ScriptBuf, Transaction, TxOut, script::PushBytesBuf,
};

use crate::ops::enrollment::Magic;

/// The announcement operation byte.
pub const OP_ANNOUNCE: u8 = b'A';

/// Bytes of an announcement's data: magic, op, term, height, block hash.
pub const ANNOUNCEMENT_BYTES: usize = 2 + 1 + 8 + 8 + 32;

/// A block announced on the burnchain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The term that announced it.
    pub term: u64,
    /// The block's height.
    pub height: u64,
    /// The block's hash.
    pub block: [u8; 32],
}

impl Announcement {
    /// The `OP_RETURN` output carrying it.
    pub fn op_return(&self, magic: Magic) -> TxOut {
        let mut data = Vec::with_capacity(ANNOUNCEMENT_BYTES);
        data.extend_from_slice(&magic.bytes());
        data.push(OP_ANNOUNCE);
        data.extend_from_slice(&self.term.to_be_bytes());
        data.extend_from_slice(&self.height.to_be_bytes());
        data.extend_from_slice(&self.block);
        TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(
                PushBytesBuf::try_from(data).unwrap_or_default(),
            ),
        }
    }

    /// Reads an announcement from `tx` if it spends `term_utxo` and commits to a block
    /// in its first output. Returns it and the next term UTXO (its second output).
    pub fn parse(
        tx: &Transaction,
        term_utxo: &OutPoint,
        magic: Magic,
    ) -> Option<(Announcement, OutPoint)> {
        if !tx.input.iter().any(|i| i.previous_output == *term_utxo) {
            return None;
        }
        let payload = crate::ops::op_return::operation(tx, magic, OP_ANNOUNCE, ANNOUNCEMENT_BYTES)?;
        let (term, rest) = payload.split_at_checked(8)?;
        let (height, hash) = rest.split_at_checked(8)?;
        tx.output.get(1)?;
        Some((
            Announcement {
                term: u64::from_be_bytes(term.try_into().ok()?),
                height: u64::from_be_bytes(height.try_into().ok()?),
                block: hash.try_into().ok()?,
            },
            OutPoint::new(tx.compute_txid(), 1),
        ))
    }
}

/// The latest announced block of every term, read from the burn blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announcements {
    latest: BTreeMap<u64, Announcement>,
}

impl Announcements {
    /// Reads `burn_blocks` (the best chain, in order), following each term's UTXO chain
    /// from `term_utxos` (the first term UTXO of each term).
    pub fn scan<'a>(
        burn_blocks: impl IntoIterator<Item = &'a BurnBlock>,
        term_utxos: &BTreeMap<u64, OutPoint>,
        magic: Magic,
    ) -> Announcements {
        let mut current: BTreeMap<u64, OutPoint> = term_utxos.clone();
        let mut latest = BTreeMap::new();
        for block in burn_blocks {
            for tx in &block.txdata {
                for (term, utxo) in current.clone() {
                    if let Some((announcement, next)) = Announcement::parse(tx, &utxo, magic)
                        && announcement.term == term
                    {
                        let newer = latest
                            .get(&term)
                            .is_none_or(|a: &Announcement| announcement.height > a.height);
                        if newer {
                            latest.insert(term, announcement);
                        }
                        current.insert(term, next);
                    }
                }
            }
        }
        Announcements { latest }
    }

    /// The latest block announced by `term`.
    pub fn latest(&self, term: u64) -> Option<&Announcement> {
        self.latest.get(&term)
    }

    /// The block the first block of `term` must build on: the last one announced by
    /// any earlier term.
    pub fn parent_for_term(&self, term: u64) -> Option<&Announcement> {
        self.latest.range(..term).next_back().map(|(_, a)| a)
    }

    /// Whether a block of `term` at `height` survives: it is at or below the term's
    /// latest announcement (unannounced blocks of a term are dropped).
    pub fn survives(&self, term: u64, height: u64) -> bool {
        self.latest.get(&term).is_some_and(|a| height <= a.height)
    }
}
