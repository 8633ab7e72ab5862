//! Block validation: every rule of the module docs, in one place. Validation returns
//! the block's [`ChainChangeset`]; nothing changes until the caller applies it.

use bitcoin::secp256k1::{Message, SECP256K1, schnorr};

use super::{
    AccountId, Block, BlockError, BlockSignature, ChainChangeset, ChainState, CoinbaseError,
    Header, SIGNER_SHARES, SIGNING_THRESHOLD, TenureChangeError, TermContext, Transfer,
    TransferError, Tx, cost,
    fees::{pay_fees, signers_of},
    signatures::check_transfer_signatures,
    state::{Account, Working},
    tx_root,
};
use crate::tenure_change::{Cause, TenureChange, pubkey_hash};

/// How transactions are applied. Validation enforces every rule; the block builder
/// (`block::build`) trusts its caller, so tests can build a block that breaks one rule
/// and watch validation refuse it. Arithmetic is checked either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rules {
    /// Every rule.
    Enforce,
    /// Only what keeps the arithmetic sound.
    #[cfg_attr(not(any(test, feature = "test-utils")), allow(dead_code))]
    Trust,
}

/// How a block opens on a state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opening {
    /// It is its term's first block.
    pub(crate) first_of_term: bool,
    /// It opens with an `Extend`, renewing the term's budget.
    pub(crate) extends: bool,
}

/// A proposal's contents checked on a state: what its signed block will change there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedProposal {
    /// The checked header's hash.
    pub header: super::Hash,
    /// The tip it was checked on.
    pub parent: super::Hash,
    /// What the block changes (its signers not yet known).
    pub changes: ChainChangeset,
}

impl ChainState {
    /// Validates `block` on top of this state and returns what it changes. Nothing
    /// changes here: [`ChainState::apply`] merges the changeset, and `chain::store`
    /// persists it.
    pub fn validate(
        &self,
        block: &Block,
        context: &TermContext,
        network: &str,
    ) -> Result<ChainChangeset, BlockError> {
        self.check_place(&block.header, context)?;
        let header = &block.header;
        self.check_signatures(block, context)?;
        let (mut working, opening, block_cost) =
            self.check_contents(block, context, network, &|_| false)?;
        working.signature = Some(BlockSignature::of(block));
        Ok(self.changeset(working, header, opening, block_cost))
    }

    /// Validates a signed `block` whose contents this state already checked as a
    /// proposal (`checked`, from [`ChainState::check_proposal`] on this same state):
    /// its place, its signatures and signer evidence are checked; its contents, bound
    /// to the checked header by its hash, are not checked again.
    pub fn validate_checked(
        &self,
        block: &Block,
        context: &TermContext,
        checked: &CheckedProposal,
    ) -> Result<ChainChangeset, BlockError> {
        if block.header.hash() != checked.header || checked.parent != self.tip {
            return Err(BlockError::WrongParent);
        }
        if tx_root(&block.txs) != block.header.tx_root {
            return Err(BlockError::TxRoot);
        }
        self.check_place(&block.header, context)?;
        self.check_signatures(block, context)?;
        let mut changes = checked.changes.clone();
        changes.tip_signature = Some(BlockSignature::of(block));
        Ok(changes)
    }

    /// The producer signature, the signer evidence (each share verified) and its
    /// weight, and the stacker signature where one is required. Returns the shares
    /// that signed.
    fn check_signatures(
        &self,
        block: &Block,
        context: &TermContext,
    ) -> Result<std::collections::BTreeSet<u16>, BlockError> {
        let digest = Block::signing_message(&block.header);
        let message = Message::from_digest(digest);
        if !group_signed(&digest, &block.producer_signature, &context.producer_key) {
            return Err(BlockError::ProducerSignature);
        }
        // Who signed, share by share; the weight counts verified shares only.
        let shares = block.verified_signers(context)?;
        let weight = u32::try_from(shares.len()).unwrap_or(u32::MAX);
        if weight < SIGNING_THRESHOLD {
            return Err(BlockError::TooFewSigners { got: weight });
        }
        if let Some(stacker_key) = &context.stacker_key {
            let ok = block.stacker_signature.as_ref().is_some_and(|sig| {
                schnorr::Signature::from_slice(sig).is_ok_and(|sig| {
                    SECP256K1
                        .verify_schnorr(&sig, &message, stacker_key)
                        .is_ok()
                })
            });
            if !ok {
                return Err(BlockError::StackerSignature);
            }
        }
        Ok(shares)
    }

    /// Checks a proposed block, not yet signed, as validation will check it once signed:
    /// its place on this state and every rule of its contents. What producers check
    /// before they pre-commit to a leader's proposal. `verified` names transactions
    /// whose signatures the caller checked already (its mempool's). The result lets
    /// [`ChainState::validate_checked`] validate the signed block without checking its
    /// contents again.
    pub fn check_proposal(
        &self,
        block: &Block,
        context: &TermContext,
        network: &str,
        verified: &(dyn Fn(&Tx) -> bool + Sync),
    ) -> Result<CheckedProposal, BlockError> {
        self.check_place(&block.header, context)?;
        let (working, opening, block_cost) =
            self.check_contents(block, context, network, verified)?;
        Ok(CheckedProposal {
            header: block.header.hash(),
            parent: self.tip,
            changes: self.changeset(working, &block.header, opening, block_cost),
        })
    }

    /// The block builds on the tip, at the next height, in the current term.
    fn check_place(&self, header: &Header, context: &TermContext) -> Result<(), BlockError> {
        if header.parent != self.tip {
            return Err(BlockError::WrongParent);
        }
        let expected_height = self.height.saturating_add(1);
        if header.height != expected_height {
            return Err(BlockError::WrongHeight {
                got: header.height,
                expected: expected_height,
            });
        }
        if header.term != context.term || header.term < self.term {
            return Err(BlockError::WrongTerm {
                got: header.term,
                expected: context.term,
            });
        }
        Ok(())
    }

    /// Every rule of the block's contents: transaction root, cost, transfer signatures,
    /// the transactions applied, fees, the term's opening, the state root. Returns the
    /// changes made, how the block opens and its cost.
    fn check_contents(
        &self,
        block: &Block,
        context: &TermContext,
        network: &str,
        verified: &(dyn Fn(&Tx) -> bool + Sync),
    ) -> Result<(Working<'_>, Opening, u64), BlockError> {
        let header = &block.header;
        if tx_root(&block.txs) != header.tx_root {
            return Err(BlockError::TxRoot);
        }
        let opening = self.opening(header.term, &block.txs);
        let block_cost = block_cost(&block.txs);
        let left = context
            .cost_limit
            .saturating_sub(self.spent_before(opening));
        if block_cost > left {
            return Err(BlockError::CostLimit {
                cost: block_cost,
                left,
            });
        }
        check_transfer_signatures(&block.txs, network, verified)?;

        let working = self.transition(block, context, network, opening)?;
        if opening.first_of_term {
            if !matches!(block.txs.first(), Some(Tx::Coinbase { .. })) {
                return Err(CoinbaseError::Missing.into());
            }
            if !matches!(block.txs.get(1), Some(Tx::TenureChange(_))) {
                return Err(TenureChangeError::MissingBlockFound.into());
            }
        }
        if working.state_root() != header.state_root {
            return Err(BlockError::StateRoot);
        }
        Ok((working, opening, block_cost))
    }

    /// The unsigned block a leader proposes on this state: `txs` (transfers taken in
    /// order while each is valid on what came before; the others are left out), after
    /// the term's coinbase and `opening` tenure change on a term's first block (or an
    /// `Extend`), with the header's roots computed. Returns the block and the
    /// transfers left out. The caller signs it after the producers pre-committed.
    pub fn assemble(
        &self,
        context: &TermContext,
        opening_txs: Vec<Tx>,
        candidates: Vec<Transfer>,
        time: u64,
        network: &str,
    ) -> Result<(Block, Vec<Transfer>), BlockError> {
        let mut txs = opening_txs;
        let opening = self.opening(context.term, &txs);
        let mut room = context
            .cost_limit
            .saturating_sub(self.spent_before(opening))
            .saturating_sub(block_cost(&txs));
        // Balances and nonces as the block leaves them so far.
        let mut working = Working::over(self);
        let mut left_out = Vec::new();
        for t in candidates {
            let tx_cost = cost(&Tx::Transfer(t.clone()));
            let sender = working.account(&t.from);
            let receiver = working.account(&t.to);
            let balance = t
                .amount
                .checked_add(t.fee)
                .and_then(|needed| sender.balance.checked_sub(needed));
            let fits = tx_cost <= room && t.nonce == sender.nonce && t.signature_valid(network);
            let Some(balance) = balance.filter(|_| fits) else {
                left_out.push(t);
                continue;
            };
            working.set(
                t.from,
                Account {
                    balance,
                    nonce: sender.nonce.saturating_add(1),
                },
            );
            if working.credit(t.to, t.amount).is_none() {
                working.set(t.from, sender);
                working.set(t.to, receiver);
                left_out.push(t);
                continue;
            }
            room = room.saturating_sub(tx_cost);
            txs.push(Tx::Transfer(t));
        }
        let mut block = Block::unsigned(
            Header {
                parent: self.tip,
                term: context.term,
                height: self.height.saturating_add(1),
                tx_root: tx_root(&txs),
                state_root: [0; 32],
                time,
            },
            txs,
        );
        block.parent_signature = self.parent_signature_for(context);
        // The roots come from the rules themselves, so the block validates as built.
        block.header.state_root = self
            .transition(&block, context, network, opening)?
            .state_root();
        Ok((block, left_out))
    }

    /// The block's transactions applied under every rule, and its fees paid.
    fn transition(
        &self,
        block: &Block,
        context: &TermContext,
        network: &str,
        opening: Opening,
    ) -> Result<Working<'_>, BlockError> {
        let mut working = Working::over(self);
        self.apply_txs(
            &mut working,
            block,
            context,
            network,
            opening,
            Rules::Enforce,
        )?;
        let paid = self.paid_signers(block.parent_signature.as_ref(), context)?;
        pay_fees(
            &mut working,
            context,
            &block.txs,
            opening.first_of_term,
            &paid,
        )?;
        Ok(working)
    }

    /// The parent version a block of `context`'s term on this state carries: this
    /// node's version of the tip, when the tip belongs to the same term.
    pub(crate) fn parent_signature_for(&self, context: &TermContext) -> Option<BlockSignature> {
        self.parent_in_term(context)
            .then(|| self.tip_signature.clone())
            .flatten()
    }

    /// Whether the tip is a block of `context`'s term (whose signers a block of the
    /// term pays).
    fn parent_in_term(&self, context: &TermContext) -> bool {
        self.height > 0 && self.term == context.term
    }

    /// The signers a block pays what its parent owed them: those of the parent version
    /// it carries, checked as a block's own (the group signature over the tip, every
    /// share, at least 67 of 100) unless it is the version this state applied, which
    /// was checked so when it was. A block opening a term pays none and must carry
    /// none.
    pub(crate) fn paid_signers(
        &self,
        parent: Option<&BlockSignature>,
        context: &TermContext,
    ) -> Result<Vec<(AccountId, u64)>, BlockError> {
        let parent = match (self.parent_in_term(context), parent) {
            (false, None) => return Ok(Vec::new()),
            (false, Some(_)) => {
                return Err(BlockError::ParentSignature(
                    "a block opening a term carries no parent version".into(),
                ));
            }
            (true, None) => {
                return Err(BlockError::ParentSignature(
                    "the parent version whose signers the block pays is missing".into(),
                ));
            }
            (true, Some(parent)) => parent,
        };
        // The version this node applied was verified then (signature and every
        // share, all or nothing): carried again unchanged, its listed shares are the
        // verified ones. Half of a validator's signature-share work (profiled: share
        // verification was 37% of the CPU of `tenure bench produce`).
        if self.tip_signature.as_ref() == Some(parent) {
            let shares: std::collections::BTreeSet<u16> =
                parent.signers.shares.iter().map(|(n, _)| *n).collect();
            return Ok(signers_of(context, &shares));
        }
        let message = Block::signing_message_of(&self.tip);
        if !group_signed(&message, &parent.signature, &context.producer_key) {
            return Err(BlockError::ParentSignature(
                "the parent's signature does not verify".into(),
            ));
        }
        let shares = parent
            .signers
            .verified_shares(message, &parent.signature, context)
            .map_err(BlockError::ParentSignature)?;
        let weight = u32::try_from(shares.len()).unwrap_or(u32::MAX);
        if weight < SIGNING_THRESHOLD {
            return Err(BlockError::ParentSignature(format!(
                "the parent's evidence shows {weight} valid shares"
            )));
        }
        Ok(signers_of(context, &shares))
    }

    /// The state after `block`: [`ChainState::validate`], then
    /// [`ChainState::apply`] on a copy.
    pub fn after(
        &self,
        block: &Block,
        context: &TermContext,
        network: &str,
    ) -> Result<ChainState, BlockError> {
        let changes = self.validate(block, context, network)?;
        let mut next = self.clone();
        next.apply(&changes);
        Ok(next)
    }

    /// How a block of `term` with `txs` opens on this state.
    pub(crate) fn opening(&self, term: u64, txs: &[Tx]) -> Opening {
        Opening {
            first_of_term: term != self.term || self.term_blocks == 0,
            extends: matches!(
                txs.first(),
                Some(Tx::TenureChange(tc)) if tc.cause == Cause::Extend
            ),
        }
    }

    /// Cost the term has spent before a block that opens so.
    fn spent_before(&self, opening: Opening) -> u64 {
        if opening.first_of_term || opening.extends {
            0
        } else {
            self.term_cost
        }
    }

    /// The changeset of a block with `header` whose changes are in `working`: the tip
    /// moves to it and the term counts it.
    pub(crate) fn changeset(
        &self,
        working: Working<'_>,
        header: &Header,
        opening: Opening,
        block_cost: u64,
    ) -> ChainChangeset {
        let blocks_before = if opening.first_of_term {
            0
        } else {
            self.term_blocks
        };
        working.into_changeset(
            header,
            blocks_before.saturating_add(1),
            self.spent_before(opening).saturating_add(block_cost),
        )
    }

    /// Applies `block`'s transactions into `working`.
    pub(crate) fn apply_txs(
        &self,
        working: &mut Working<'_>,
        block: &Block,
        context: &TermContext,
        network: &str,
        opening: Opening,
        rules: Rules,
    ) -> Result<(), BlockError> {
        let enforce = rules == Rules::Enforce;
        for (index, tx) in block.txs.iter().enumerate() {
            match tx {
                Tx::Coinbase { term, payouts } => {
                    if enforce {
                        if !(opening.first_of_term && index == 0) {
                            return Err(CoinbaseError::Misplaced.into());
                        }
                        if *term != context.term || *payouts != context.coinbase {
                            return Err(CoinbaseError::WrongPayouts.into());
                        }
                    }
                    for (to, amount) in payouts {
                        working.credit(*to, *amount).ok_or(BlockError::Transfer {
                            index,
                            error: TransferError::BalanceOverflows,
                        })?;
                    }
                }
                Tx::Transfer(t) => {
                    let refuse = |error| BlockError::Transfer { index, error };
                    let from = working.account(&t.from);
                    if enforce && t.nonce != from.nonce {
                        return Err(refuse(TransferError::WrongNonce {
                            got: t.nonce,
                            expected: from.nonce,
                        }));
                    }
                    let needed = t
                        .amount
                        .checked_add(t.fee)
                        .ok_or(refuse(TransferError::AmountOverflows))?;
                    let balance = from.balance.checked_sub(needed).ok_or(refuse(
                        TransferError::InsufficientBalance {
                            balance: from.balance,
                            needed,
                        },
                    ))?;
                    working.set(
                        t.from,
                        Account {
                            balance,
                            nonce: from.nonce.saturating_add(1),
                        },
                    );
                    working
                        .credit(t.to, t.amount)
                        .ok_or(refuse(TransferError::BalanceOverflows))?;
                }
                Tx::TenureChange(tc) => {
                    if enforce {
                        let expected = match (opening.first_of_term, index) {
                            (true, 1) => Cause::BlockFound,
                            (false, 0) => Cause::Extend,
                            _ => return Err(TenureChangeError::Misplaced(index).into()),
                        };
                        self.check_tenure_change(tc, expected, block, context, network)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a tenure change of the `expected` cause in `block` on this state.
    fn check_tenure_change(
        &self,
        tc: &TenureChange,
        expected: Cause,
        block: &Block,
        context: &TermContext,
        network: &str,
    ) -> Result<(), TenureChangeError> {
        if tc.cause != expected {
            return Err(TenureChangeError::WrongCause { expected });
        }
        if tc.tenure_consensus_hash != context.consensus_hash {
            return Err(TenureChangeError::ConsensusHash);
        }
        if expected == Cause::BlockFound
            && tc.previous_tenure_consensus_hash != context.previous_consensus_hash
        {
            return Err(TenureChangeError::PreviousConsensusHash);
        }
        if tc.previous_tenure_end != block.header.parent {
            return Err(TenureChangeError::PreviousTenureEnd);
        }
        if u64::from(tc.previous_tenure_blocks) != self.term_blocks {
            return Err(TenureChangeError::PreviousTenureBlocks {
                got: u64::from(tc.previous_tenure_blocks),
                expected: self.term_blocks,
            });
        }
        if tc.pubkey_hash != pubkey_hash(&context.producer_key) {
            return Err(TenureChangeError::PubkeyHash);
        }
        let key = context.stacker_key.unwrap_or(context.producer_key);
        if context.stacker_key.is_none()
            && (tc.signers.len() != SIGNER_SHARES
                || u32::try_from(tc.signer_count()).unwrap_or(0) < SIGNING_THRESHOLD)
        {
            return Err(TenureChangeError::TooFewSigners);
        }
        if !tc.signature_valid(network, &key) {
            return Err(TenureChangeError::Signature);
        }
        Ok(())
    }
}

/// A block's cost: the sum of its transactions' (saturating: a block that costs
/// that much is over any budget anyway).
pub(crate) fn block_cost(txs: &[Tx]) -> u64 {
    txs.iter().map(cost).fold(0, u64::saturating_add)
}

/// Whether `signature` is a valid BIP340 signature of `key` over `digest`.
impl Block {
    /// Whether the producer signature verifies under the term key `key`: one BIP340
    /// check, what a gossip validator can afford before forwarding a block (the signer
    /// evidence and the contents are validation's).
    pub fn group_signed_by(&self, key: &bitcoin::XOnlyPublicKey) -> bool {
        group_signed(
            &Block::signing_message(&self.header),
            &self.producer_signature,
            key,
        )
    }
}

fn group_signed(digest: &super::Hash, signature: &[u8], key: &bitcoin::XOnlyPublicKey) -> bool {
    schnorr::Signature::from_slice(signature).is_ok_and(|sig| {
        SECP256K1
            .verify_schnorr(&sig, &Message::from_digest(*digest), key)
            .is_ok()
    })
}
