//! The burnchain scan: what every node, producer or not, reads from each burn block
//! to know who produces each term (SIP "Producer Set Selection", "Producer DB Setup";
//! seed 000, terms and announcements), sans-IO.
//!
//! Fed the best chain's blocks in order ([`BurnScan::scan_block`]) and rewound on a
//! burnchain reorg ([`BurnScan::rewind`]), it keeps:
//!
//! - **Key registrations** ([`KeyRegistrations`]).
//! - **Enrollments**, valid ones only: the SIP's `OP_RETURN` and burn output
//!   ([`enrollment::parse`]), mined in the right term ([`enrollment::check_term`]),
//!   naming a registration the burnchain holds whose owner funds the enrollment's
//!   first input ([`KeyRegistrations::check_enrollment`]). Everything else is
//!   returned as [`Ignored`] with its reason: anyone can put bytes on Bitcoin.
//! - **Selections.** The producers of term N are chosen from the enrollments mined
//!   during term N-2, once its last block is scanned ([`crate::terms::select`]: top
//!   100, the lower bound, credit carried from term to term), and given their shares
//!   and producer-DB slots ([`crate::shares::assign`]). Decision: the tie-break seed is
//!   the hash of term N-2's last burn block. The SIP samples "tenure N-1's last
//!   block", but the term's DKG runs during N-1 and needs the shares before it starts.
//! - **Term UTXOs and announcements.** Once a term's group key is known
//!   ([`BurnScan::expect_term_key`]), the first output paying its key-path taproot
//!   script that is mined before the term starts is the term UTXO ("anyone can send
//!   it", seed 000: it is accepted by what it pays, not by who paid it). An
//!   announcement spends the current term UTXO with an `OP_RETURN` committing to a
//!   block and pays the group's script again in its second output, which becomes the
//!   next term UTXO ([`Announcement::parse`]); a spend whose second output pays
//!   anyone else ends the term's chain. Decision: the key must be expected before the
//!   block that pays it is scanned; a node that learns the key later rewinds and
//!   scans again.
//!
//! Everything is a function of the scanned blocks, so a rewind followed by the new
//! branch gives exactly what scanning the new chain from scratch gives.

use std::collections::BTreeMap;

use bitcoin::{
    Amount, Block as BurnBlock, BlockHash, OutPoint, ScriptBuf, TxOut,
    hashes::Hash as _,
    secp256k1::{PublicKey, XOnlyPublicKey},
};

use crate::{
    ops::{
        announce::Announcement,
        enrollment::{self, EnrollmentError, Magic, Payment},
        key_registration::{KeyRegistrationError, KeyRegistrations},
    },
    shares::{self, Assignment},
    terms::{self, Candidate, Producer, Terms},
};

/// The lower bound on a selected producer's share of the total spend, in basis points
/// (seed 000's discussion; 1%).
pub const MIN_SHARE_BPS: u64 = 100;

/// A transaction the scan ignored, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// Burn height of its block.
    pub height: u64,
    /// Its offset in the block.
    pub offset: u16,
    /// Why.
    pub reason: IgnoredReason,
}

/// Why a burnchain operation was ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IgnoredReason {
    /// A malformed key registration.
    #[error("key registration: {0}")]
    Registration(KeyRegistrationError),
    /// A malformed or misplaced enrollment.
    #[error("enrollment: {0}")]
    Enrollment(EnrollmentError),
    /// An enrollment whose registration does not hold.
    #[error("enrollment: {0}")]
    EnrollmentKey(KeyRegistrationError),
    /// An enrollment whose first input's output could not be found.
    #[error("enrollment: the output its first input spends is unknown")]
    UnknownPrevout,
}

/// Why a block could not be scanned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Blocks are scanned in order: the next one is at `expected`.
    #[error("burn block at height {got} scanned out of order (expected {expected})")]
    OutOfOrder {
        /// The height given.
        got: u64,
        /// The height the scan is at.
        expected: u64,
    },
    /// The block does not build on the block scanned before it.
    #[error("burn block at height {0} does not build on the block scanned before it")]
    NotAChild(u64),
}

/// Who produces a term, from the burnchain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermPlan {
    /// The term.
    pub term: u64,
    /// Its producers, heaviest first (ties to the lower enrollment txid): the order of
    /// its roster and of its coinbase.
    pub producers: Vec<Producer>,
    /// Their shares and producer-DB slots.
    pub assignment: Assignment,
    /// The hash of term N-2's last burn block: the tie-break seed.
    pub seed: [u8; 32],
}

impl TermPlan {
    /// Each producer's signer shares, in [`TermPlan::producers`] order.
    pub fn shares(&self) -> &[u16] {
        &self.assignment.shares
    }

    /// The index of `producer` among the term's producers.
    pub fn index_of(&self, producer: &PublicKey) -> Option<usize> {
        self.producers.iter().position(|p| p.producer == *producer)
    }

    /// Each producer's weight in satoshis (spend plus carried credit), in order: what
    /// the term's coinbase is split by.
    pub fn spends(&self) -> Vec<u64> {
        self.producers.iter().map(|p| p.weight.to_sat()).collect()
    }
}

/// What one scanned block held.
#[derive(Clone, Debug)]
struct Scanned {
    hash: BlockHash,
    enrollments: Vec<Candidate>,
    /// (term, outpoint, output) of outputs paying an expected term script.
    term_outputs: Vec<(u64, OutPoint, TxOut)>,
    announcements: Vec<ScannedAnnouncement>,
}

/// An announcement, the UTXO it spent, and the UTXO it made if it pays the group
/// again.
type ScannedAnnouncement = (Announcement, OutPoint, Option<(OutPoint, TxOut)>);

impl Scanned {
    fn new(hash: BlockHash) -> Scanned {
        Scanned {
            hash,
            enrollments: Vec::new(),
            term_outputs: Vec::new(),
            announcements: Vec::new(),
        }
    }
}

/// The burnchain as block production reads it.
#[derive(Clone, Debug)]
pub struct BurnScan {
    magic: Magic,
    terms: Terms,
    min_share_bps: u64,
    registrations: KeyRegistrations,
    /// Every scanned block from the scan's first height on.
    blocks: BTreeMap<u64, Scanned>,
    first_height: u64,
    /// Each term's expected term-UTXO script.
    term_scripts: BTreeMap<u64, ScriptBuf>,
}

impl BurnScan {
    /// A scan of a burnchain with `magic` and `terms`, starting at burn height
    /// `first_height`.
    pub fn new(magic: Magic, terms: Terms, first_height: u64) -> BurnScan {
        BurnScan {
            magic,
            terms,
            min_share_bps: MIN_SHARE_BPS,
            registrations: KeyRegistrations::default(),
            blocks: BTreeMap::new(),
            first_height,
            term_scripts: BTreeMap::new(),
        }
    }

    /// The terms the scan counts in.
    pub fn terms(&self) -> Terms {
        self.terms
    }

    /// The height of the last block scanned.
    pub fn height(&self) -> Option<u64> {
        self.blocks.keys().next_back().copied()
    }

    /// The height of the next block to scan.
    pub fn next_height(&self) -> u64 {
        self.height()
            .map_or(self.first_height, |h| h.saturating_add(1))
    }

    /// The hash of the scanned block at `height`.
    pub fn hash_at(&self, height: u64) -> Option<BlockHash> {
        self.blocks.get(&height).map(|s| s.hash)
    }

    /// The term of the last block scanned.
    pub fn term(&self) -> Option<u64> {
        self.height().and_then(|h| self.terms.term_of(h))
    }

    /// The key registrations found.
    pub fn registrations(&self) -> &KeyRegistrations {
        &self.registrations
    }

    /// Scans `block`, the best chain's block at `height` (the next one). `prevout`
    /// finds the output an input spends (an enrollment's first input is checked
    /// against its registration's owner). Returns what was ignored, and why.
    pub fn scan_block(
        &mut self,
        height: u64,
        block: &BurnBlock,
        prevout: &dyn Fn(&OutPoint) -> Option<TxOut>,
    ) -> Result<Vec<Ignored>, ScanError> {
        let expected = self.next_height();
        if height != expected {
            return Err(ScanError::OutOfOrder {
                got: height,
                expected,
            });
        }
        if let Some(previous) = self.blocks.get(&height.wrapping_sub(1))
            && block.header.prev_blockhash != previous.hash
        {
            return Err(ScanError::NotAChild(height));
        }
        let mut ignored = Vec::new();
        let height32 = u32::try_from(height).unwrap_or(u32::MAX);
        self.registrations
            .scan_block(block, height32, self.magic, |offset, reason| {
                ignored.push(Ignored {
                    height,
                    offset,
                    reason: IgnoredReason::Registration(reason),
                });
            });
        let mut scanned = Scanned::new(block.block_hash());
        let term_now = self.terms.term_of(height);
        // Each term's UTXO as of the blocks before this one, kept current through
        // this block's transactions (computed once per block, not per transaction).
        let mut current = self.current_term_utxos(&Scanned::new(BlockHash::all_zeros()));
        for (offset, tx) in block.txdata.iter().enumerate().skip(1) {
            let offset = u16::try_from(offset).unwrap_or(u16::MAX);
            let txid = tx.compute_txid();
            // Enrollments.
            let first_push = crate::ops::op_return::first_output_push(tx);
            let is_enrollment = first_push.is_some_and(|p| {
                p.len() == enrollment::ENROLLMENT_BYTES
                    && p.get(..2) == Some(&self.magic.bytes()[..])
                    && p.get(2) == Some(&enrollment::OP_ENROLL)
            });
            if is_enrollment {
                match self.check_enrollment(tx, height, prevout) {
                    Ok(candidate) => scanned.enrollments.push(Candidate {
                        producer: candidate.0,
                        spent: candidate.1,
                        txid,
                    }),
                    Err(reason) => ignored.push(Ignored {
                        height,
                        offset,
                        reason,
                    }),
                }
            }
            // Announcements spending a term's current UTXO.
            for (term, (utxo, _)) in current.clone() {
                let Some((announcement, next)) = Announcement::parse(tx, &utxo, self.magic) else {
                    continue;
                };
                if announcement.term != term {
                    continue;
                }
                let script = self.term_scripts.get(&term);
                let next = tx
                    .output
                    .get(1)
                    .filter(|o| Some(&o.script_pubkey) == script)
                    .map(|o| (next, o.clone()));
                match &next {
                    Some(next) => current.insert(term, next.clone()),
                    None => current.remove(&term),
                };
                scanned.announcements.push((announcement, utxo, next));
            }
            // Outputs paying a term's script before the term starts.
            for (vout, out) in tx.output.iter().enumerate() {
                for (term, script) in &self.term_scripts {
                    let before_start = term_now.is_some_and(|now| now < *term);
                    if out.script_pubkey == *script && before_start {
                        let vout = u32::try_from(vout).unwrap_or(u32::MAX);
                        let first = !self.term_funded(*term)
                            && !scanned.term_outputs.iter().any(|(t, _, _)| t == term);
                        if first {
                            current.insert(*term, (OutPoint::new(txid, vout), out.clone()));
                        }
                        scanned
                            .term_outputs
                            .push((*term, OutPoint::new(txid, vout), out.clone()));
                    }
                }
            }
        }
        self.blocks.insert(height, scanned);
        Ok(ignored)
    }

    /// The (signing key, spend) of a valid enrollment.
    fn check_enrollment(
        &self,
        tx: &bitcoin::Transaction,
        height: u64,
        prevout: &dyn Fn(&OutPoint) -> Option<TxOut>,
    ) -> Result<(PublicKey, Amount), IgnoredReason> {
        let parsed =
            enrollment::parse(tx, self.magic, Payment::Burn).map_err(IgnoredReason::Enrollment)?;
        enrollment::check_term(&parsed.data, &self.terms, height)
            .map_err(IgnoredReason::Enrollment)?;
        let first = tx
            .input
            .first()
            .ok_or(IgnoredReason::EnrollmentKey(KeyRegistrationError::NoInput))?;
        let spent = prevout(&first.previous_output).ok_or(IgnoredReason::UnknownPrevout)?;
        self.registrations
            .check_enrollment(tx, &parsed.data, &spent)
            .map_err(IgnoredReason::EnrollmentKey)?;
        Ok((parsed.data.signing_pubkey, parsed.spent))
    }

    /// Whether `producer` has a valid enrollment mined during term `term`.
    pub fn enrolled(&self, term: u64, producer: &PublicKey) -> bool {
        self.blocks
            .range(self.terms.heights(term))
            .any(|(_, s)| s.enrollments.iter().any(|c| c.producer == *producer))
    }

    /// Whether the producer with x-only key `member` has a valid enrollment mined
    /// during term `term` or one of the two before it: a producer of `term`, the next
    /// term or the one after (the contacts topic's gate,
    /// [`crate::produce::contact`]).
    pub fn recently_enrolled(&self, term: u64, member: &XOnlyPublicKey) -> bool {
        let from = self.terms.heights(term.saturating_sub(2)).start;
        let to = self.terms.heights(term).end;
        self.blocks.range(from..to).any(|(_, s)| {
            s.enrollments
                .iter()
                .any(|c| c.producer.x_only_public_key().0 == *member)
        })
    }

    /// Forgets every block at `height` and above (a burnchain reorg); the new branch
    /// is scanned from there.
    pub fn rewind(&mut self, height: u64) {
        self.blocks.retain(|h, _| *h < height);
        self.registrations
            .rewind(u32::try_from(height).unwrap_or(u32::MAX));
    }

    /// Expects term `term`'s UTXO to pay `script` (the key-path taproot output of the
    /// term's certified group key). Blocks scanned before this call are not searched.
    pub fn expect_term_key(&mut self, term: u64, script: ScriptBuf) {
        self.term_scripts.insert(term, script);
    }

    /// The producers of `term`, once the last block of term N-2 is scanned; `None`
    /// before, or when nobody valid enrolled.
    pub fn plan(&self, term: u64) -> Option<TermPlan> {
        let enrollment_term = self.terms.enrollment_term_for(term)?;
        let last = self.terms.heights(enrollment_term).end.checked_sub(1)?;
        if self.height().is_none_or(|h| h < last) {
            return None;
        }
        // Credit is carried from term to term: select every earlier term in turn.
        let mut credit = BTreeMap::new();
        let mut selection = None;
        let first_term = self.terms.term_of(self.first_height).unwrap_or(0);
        for t in first_term.saturating_add(2)..=term {
            let Some(e) = self.terms.enrollment_term_for(t) else {
                continue;
            };
            let candidates: Vec<Candidate> = self
                .blocks
                .range(self.terms.heights(e))
                .flat_map(|(_, s)| s.enrollments.iter().cloned())
                .collect();
            if candidates.is_empty() && credit.is_empty() {
                selection = None;
                continue;
            }
            let chosen = terms::select(&candidates, &credit, self.min_share_bps);
            credit = chosen.credit.clone();
            selection = Some(chosen);
        }
        let producers = selection?.producers;
        if producers.is_empty() {
            return None;
        }
        let seed = self.hash_at(last)?.to_byte_array();
        Some(TermPlan {
            term,
            assignment: shares::assign(&producers, seed),
            producers,
            seed,
        })
    }

    /// The hash of the burn block a term's consensus hash is made from: the seed of
    /// its plan (term N-2's last block). `None` before it is scanned.
    pub fn consensus_block(&self, term: u64) -> Option<[u8; 32]> {
        let e = self.terms.enrollment_term_for(term)?;
        let last = self.terms.heights(e).end.checked_sub(1)?;
        self.hash_at(last).map(|h| h.to_byte_array())
    }

    /// Each term's current UTXO, as of the blocks scanned and `pending` (the block
    /// being scanned).
    fn current_term_utxos(&self, pending: &Scanned) -> BTreeMap<u64, (OutPoint, TxOut)> {
        let mut current: BTreeMap<u64, Option<(OutPoint, TxOut)>> = BTreeMap::new();
        for scanned in self.blocks.values().chain(std::iter::once(pending)) {
            for (term, outpoint, out) in &scanned.term_outputs {
                current
                    .entry(*term)
                    .or_insert_with(|| Some((*outpoint, out.clone())));
            }
            for (announcement, spent, next) in &scanned.announcements {
                if let Some(slot) = current.get_mut(&announcement.term)
                    && slot.as_ref().is_some_and(|(op, _)| op == spent)
                {
                    *slot = next.clone();
                }
            }
        }
        current
            .into_iter()
            .filter_map(|(t, c)| c.map(|c| (t, c)))
            .collect()
    }

    /// Term `term`'s current UTXO: the one its next announcement spends.
    pub fn term_utxo(&self, term: u64) -> Option<(OutPoint, TxOut)> {
        self.current_term_utxos(&Scanned::new(BlockHash::all_zeros()))
            .remove(&term)
    }

    /// Whether term `term` has a UTXO at all (announcements may have spent it since).
    pub fn term_funded(&self, term: u64) -> bool {
        self.blocks
            .values()
            .any(|s| s.term_outputs.iter().any(|(t, _, _)| *t == term))
    }

    /// Every announcement confirmed, in burn order, with its burn height.
    pub fn announcements(&self) -> Vec<(u64, Announcement)> {
        self.blocks
            .iter()
            .flat_map(|(h, s)| s.announcements.iter().map(move |(a, _, _)| (*h, *a)))
            .collect()
    }

    /// The latest block announced by `term` (the highest).
    pub fn latest_announcement(&self, term: u64) -> Option<Announcement> {
        self.announcements()
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| a.term == term)
            .max_by_key(|a| a.height)
    }

    /// The block the first block of `term` builds on: the last one announced by any
    /// earlier term.
    pub fn parent_for_term(&self, term: u64) -> Option<Announcement> {
        self.announcements()
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| a.term < term)
            .max_by_key(|a| (a.term, a.height))
    }
}
