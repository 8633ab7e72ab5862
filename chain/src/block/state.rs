//! The chain state blocks apply to, the term context they are checked against, and
//! the changeset a valid block makes.

use std::collections::BTreeMap;

use bitcoin::XOnlyPublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AccountId, BlockSignature, Hash, Header};

/// An account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Balance.
    pub balance: u64,
    /// Transactions sent so far.
    pub nonce: u64,
}

/// What validation needs to know about the current term.
#[derive(Clone, Debug)]
pub struct TermContext {
    /// The term.
    pub term: u64,
    /// The producer group's output key.
    pub producer_key: XOnlyPublicKey,
    /// The producer group's public key package (taproot-tweaked, as signatures verify
    /// under it): the verifying share of each of the 100 shares, against which every
    /// block's signer evidence is checked.
    pub producer_shares: frost_secp256k1_tr::keys::PublicKeyPackage,
    /// The stacker group's key, where a stacker set is configured.
    pub stacker_key: Option<XOnlyPublicKey>,
    /// The coinbase this term must pay, in order (from [`crate::rewards::coinbase`]).
    pub coinbase: Vec<(AccountId, u64)>,
    /// The term's cost budget (the SIP: 10 × a block's limit), renewed by an
    /// `Extend`.
    pub cost_limit: u64,
    /// The term's consensus hash ([`crate::tenure_change::consensus_hash`]).
    pub consensus_hash: [u8; 20],
    /// The previous term's consensus hash.
    pub previous_consensus_hash: [u8; 20],
    /// The term's producers: (account, BTC spent), in selection order.
    pub producers: Vec<(AccountId, u64)>,
    /// The producer (index into `producers`) holding each of the 100 shares: signer
    /// slot i is share i + 1 ([`crate::shares::Assignment::share_owners`]).
    pub share_owners: Vec<u16>,
}

/// The chain state validation works on: the tip and every account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    /// Hash of the tip block.
    pub tip: Hash,
    /// Height of the tip.
    pub height: u64,
    /// The tip's term (0 before the first block).
    pub term: u64,
    /// Blocks of the tip's term so far.
    pub term_blocks: u64,
    /// Cost spent in the tip's term since it started or was last extended.
    pub term_cost: u64,
    /// Fees waiting for the next term's producers (60% of every block's).
    pub carried_fees: u64,
    /// The tip's signers' part of its fees (40%), paid to them by the next block.
    pub signer_fees: u64,
    /// The tip's signature and signer evidence, as this node applied it: what a block
    /// this node proposes on the tip carries as its parent's ([`super::Block::parent_signature`]).
    /// Not part of the state root: another node may hold another valid version.
    pub tip_signature: Option<BlockSignature>,
    /// Accounts by x-only key.
    pub accounts: BTreeMap<AccountId, Account>,
}

/// What a valid block changes: the new tip record and the accounts it touched, as
/// they are after it. [`ChainState::apply`] merges it; `chain::store` persists exactly
/// it, so the rules of which accounts change live in validation alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainChangeset {
    /// Hash of the new tip.
    pub tip: Hash,
    /// Its height.
    pub height: u64,
    /// Its term.
    pub term: u64,
    /// Blocks of that term so far.
    pub term_blocks: u64,
    /// Cost spent in the term since it started or was last extended.
    pub term_cost: u64,
    /// Fees waiting for the next term's producers.
    pub carried_fees: u64,
    /// The block's signers' part of its fees, paid by the next block.
    pub signer_fees: u64,
    /// The block's signature and signer evidence.
    pub tip_signature: Option<BlockSignature>,
    /// Every account the block touched, after it (an account touched is created, as
    /// a zero balance, if it did not exist).
    pub accounts: BTreeMap<AccountId, Account>,
}

impl ChainState {
    /// The state root: a hash of every account in key order, then the carried fees
    /// and the signers' fees owed.
    pub fn state_root(&self) -> Hash {
        state_root(self.accounts.iter(), self.carried_fees, self.signer_fees)
    }

    /// Merges a block's changeset into this state.
    pub fn apply(&mut self, changes: &ChainChangeset) {
        self.tip = changes.tip;
        self.height = changes.height;
        self.term = changes.term;
        self.term_blocks = changes.term_blocks;
        self.term_cost = changes.term_cost;
        self.carried_fees = changes.carried_fees;
        self.signer_fees = changes.signer_fees;
        self.tip_signature = changes.tip_signature.clone();
        for (key, account) in &changes.accounts {
            self.accounts.insert(*key, *account);
        }
    }
}

/// The state root of `accounts` (in key order), `carried_fees` and `signer_fees`.
fn state_root<'a>(
    accounts: impl Iterator<Item = (&'a AccountId, &'a Account)>,
    carried_fees: u64,
    signer_fees: u64,
) -> Hash {
    let mut h = Sha256::new();
    h.update(b"tenure/chain/state/v2");
    for (key, account) in accounts {
        h.update(key);
        h.update(account.balance.to_be_bytes());
        h.update(account.nonce.to_be_bytes());
    }
    h.update(carried_fees.to_be_bytes());
    h.update(signer_fees.to_be_bytes());
    h.finalize().into()
}

/// A block's changes being made over a state, which stays untouched: accounts read
/// through to the state until the block writes them.
#[derive(Debug)]
pub(crate) struct Working<'a> {
    base: &'a ChainState,
    /// Accounts the block touched, after it.
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    /// The carried fees after it.
    pub(crate) carried_fees: u64,
    /// The block's signers' fees, owed to them by the next block.
    pub(crate) signer_fees: u64,
    /// The block's signature and signer evidence, once known.
    pub(crate) signature: Option<BlockSignature>,
}

impl<'a> Working<'a> {
    /// No changes yet over `base`.
    pub(crate) fn over(base: &'a ChainState) -> Working<'a> {
        Working {
            base,
            accounts: BTreeMap::new(),
            carried_fees: base.carried_fees,
            signer_fees: base.signer_fees,
            signature: None,
        }
    }

    /// The account as the block leaves it so far (empty if it never existed).
    pub(crate) fn account(&self, key: &AccountId) -> Account {
        self.accounts
            .get(key)
            .or_else(|| self.base.accounts.get(key))
            .copied()
            .unwrap_or_default()
    }

    /// Writes the account.
    pub(crate) fn set(&mut self, key: AccountId, account: Account) {
        self.accounts.insert(key, account);
    }

    /// Adds `amount` to the account; `None` if its balance would overflow.
    pub(crate) fn credit(&mut self, key: AccountId, amount: u64) -> Option<()> {
        let mut account = self.account(&key);
        account.balance = account.balance.checked_add(amount)?;
        self.set(key, account);
        Some(())
    }

    /// The state root after the block: the state's accounts with the block's over
    /// them, in key order.
    pub(crate) fn state_root(&self) -> Hash {
        let mut base = self.base.accounts.iter().peekable();
        let mut changed = self.accounts.iter().peekable();
        let merged = std::iter::from_fn(move || match (base.peek(), changed.peek()) {
            (Some((b, _)), Some((c, _))) if b < c => base.next(),
            (Some((b, _)), Some((c, _))) if b == c => {
                base.next();
                changed.next()
            }
            (Some(_), Some(_)) | (None, Some(_)) => changed.next(),
            (Some(_), None) => base.next(),
            (None, None) => None,
        });
        state_root(merged, self.carried_fees, self.signer_fees)
    }

    /// The changeset: the tip moved to `header`, with the term's counters.
    pub(crate) fn into_changeset(
        self,
        header: &Header,
        term_blocks: u64,
        term_cost: u64,
    ) -> ChainChangeset {
        ChainChangeset {
            tip: header.hash(),
            height: header.height,
            term: header.term,
            term_blocks,
            term_cost,
            carried_fees: self.carried_fees,
            signer_fees: self.signer_fees,
            tip_signature: self.signature,
            accounts: self.accounts,
        }
    }
}
