//! The mempool: transfers waiting for a block, bounded, and ordered by fee.
//!
//! Rules (DESIGN "Block production": "the mempool is bounded and orders by fee"). The
//! pool holds only transfers a block could take: every one is funded and in line, so a
//! sender cannot park transfers that fill the pool and are never included.
//!
//! - **Admission.** A transfer enters only with a valid signature, a nonce not below
//!   its sender's account nonce and at most [`MAX_NONCE_GAP`] above it.
//! - **In line.** A sender's pooled transfers are a gap-free run of nonces from its
//!   account nonce. A transfer whose nonce is past the end of the run waits among the
//!   orphans (at most [`MAX_ORPHANS`], the oldest forgotten first; never selected) and
//!   joins the pool when the run reaches it, by a later transfer or by a block. Gossip
//!   can reorder one sender's transfers; the orphans absorb that, and a flood of
//!   gapped transfers only churns the orphans.
//! - **Funded together.** A sender's pooled transfers, all together, cost at most its
//!   balance on the chain state (amounts plus fees, checked arithmetic).
//! - **One transfer per (sender, nonce).** A second one replaces the first only with a
//!   fee at least a tenth higher, and by at least 1 ([`replaces`]; replace by fee);
//!   otherwise it is refused. The step keeps a sender from making every node relay a
//!   replacement per satoshi.
//! - **Bounded.** At most `capacity` transfers. When full, a newcomer must pay more than
//!   the cheapest transfer that is its sender's last (evicting it leaves no nonce gap);
//!   that one is evicted, else the newcomer is refused.
//! - **Selection by fee.** A block takes, repeatedly, the highest-fee transfer among
//!   each sender's next nonce; a sender's later transfers become eligible as its
//!   earlier ones are taken. Ties go to the lower transaction id, so every producer
//!   assembling from the same pool picks the same block.
//! - **Pruning** after every block, on the new state: transfers whose nonce the chain
//!   has passed are dropped; so is each sender's run from the first transfer that is out
//!   of line or no longer funded (its balance fell) onwards; and every transfer held
//!   for more than [`EXPIRY_BLOCKS`] blocks, with its sender's later ones (a transfer
//!   too cheap for the blocks of an hour leaves, and its sender may send again).
//!   Orphans the chain caught up with join the pool.
//! - **Relay** (the transactions gossip topic, [`judge_relay`], [`RelayedNonces`]). A
//!   node forwards a gossiped transfer only if it decodes, is a transfer of at most
//!   [`MAX_RELAYED_TX_BYTES`] **in its one canonical encoding** (gossip ids are hashes
//!   of the bytes: a re-encoded copy would be a new message to relay), carries a valid
//!   signature, passes the nonce window and its own balance check on the node's chain
//!   state, and is new at its (sender, nonce) or [`replaces`] what the node relayed
//!   there. Bytes that fail the first three are invalid (the forwarding peer is
//!   penalised: an honest peer validates before it forwards); a transfer that fails
//!   only the later checks is dropped without blame, since two honest nodes may be a
//!   block apart. A transfer the validator accepted has its signature checked: it
//!   enters the pool by [`Mempool::insert_verified`], without a second check.

use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};

use crate::block::{AccountId, ChainState, Hash, Transfer, Tx};

/// How far above its sender's account nonce a transfer may be.
pub const MAX_NONCE_GAP: u64 = 64;

/// Transfers waiting for the run of their sender's nonces to reach them.
pub const MAX_ORPHANS: usize = 1024;

/// Blocks a transfer may wait in the pool before it is dropped.
pub const EXPIRY_BLOCKS: u64 = 3600;

/// Largest transaction relayed on the transactions topic (a transfer is under 200).
pub const MAX_RELAYED_TX_BYTES: usize = 1024;

/// What a node does with a transfer gossiped to it (see the module docs, "Relay").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayJudgement {
    /// Valid on this node's state: deliver it to the mempool and forward it.
    Relay(Transfer),
    /// Valid bytes, but not admissible on this node's state (stale or early nonce, an
    /// account that cannot pay): dropped, nobody blamed.
    Drop(MempoolRefusal),
    /// Not a validly signed transfer: dropped, and the forwarding peer blamed.
    Invalid(String),
}

/// Judges gossiped `bytes` as a transfer of `network` on `state`.
pub fn judge_relay(bytes: &[u8], network: &str, state: &ChainState) -> RelayJudgement {
    if bytes.len() > MAX_RELAYED_TX_BYTES {
        return RelayJudgement::Invalid(format!("{} bytes", bytes.len()));
    }
    let transfer = match Tx::from_bytes(bytes) {
        Ok(Tx::Transfer(transfer)) => transfer,
        Ok(_) => return RelayJudgement::Invalid("not a transfer".into()),
        Err(e) => return RelayJudgement::Invalid(e.to_string()),
    };
    match Tx::Transfer(transfer.clone()).to_bytes() {
        Ok(canonical) if canonical == bytes => {}
        _ => return RelayJudgement::Invalid("not the transfer's canonical encoding".into()),
    }
    if let Err(refusal) = admissible(&transfer, state) {
        return RelayJudgement::Drop(refusal);
    }
    if !transfer.signature_valid(network) {
        return RelayJudgement::Invalid(MempoolRefusal::Signature.to_string());
    }
    RelayJudgement::Relay(transfer)
}

/// Whether a transfer paying `new_fee` may replace one paying `held_fee` at the same
/// (sender, nonce): a tenth more, and at least 1 more.
pub fn replaces(held_fee: u64, new_fee: u64) -> bool {
    new_fee >= held_fee.saturating_add((held_fee / 10).max(1))
}

/// The (sender, nonce) pairs a node relayed lately, with the fee relayed: a transfer
/// is relayed only if new there or if it [`replaces`] that one. Bounded: the oldest
/// pairs are forgotten first.
#[derive(Debug)]
pub struct RelayedNonces {
    fees: std::collections::HashMap<(AccountId, u64), u64>,
    order: std::collections::VecDeque<(AccountId, u64)>,
    capacity: usize,
}

impl RelayedNonces {
    /// Remembers at most `capacity` pairs.
    pub fn new(capacity: usize) -> RelayedNonces {
        RelayedNonces {
            fees: std::collections::HashMap::new(),
            order: std::collections::VecDeque::new(),
            capacity,
        }
    }

    /// Records `transfer` as relayed if it may be; false if an earlier transfer at its
    /// (sender, nonce) was relayed and this one does not replace it.
    pub fn admit(&mut self, transfer: &Transfer) -> bool {
        let key = (transfer.from, transfer.nonce);
        match self.fees.get_mut(&key) {
            Some(fee) if !replaces(*fee, transfer.fee) => false,
            Some(fee) => {
                *fee = transfer.fee;
                true
            }
            None => {
                self.fees.insert(key, transfer.fee);
                self.order.push_back(key);
                while self.order.len() > self.capacity {
                    if let Some(old) = self.order.pop_front() {
                        self.fees.remove(&old);
                    }
                }
                true
            }
        }
    }
}

/// The checks against the chain state: the nonce window and the balance.
fn admissible(transfer: &Transfer, state: &ChainState) -> Result<(), MempoolRefusal> {
    let account = state
        .accounts
        .get(&transfer.from)
        .copied()
        .unwrap_or_default();
    if transfer.nonce < account.nonce {
        return Err(MempoolRefusal::NonceUsed {
            got: transfer.nonce,
            expected: account.nonce,
        });
    }
    if transfer.nonce > account.nonce.saturating_add(MAX_NONCE_GAP) {
        return Err(MempoolRefusal::NonceTooFar {
            got: transfer.nonce,
            expected: account.nonce,
        });
    }
    let needed = transfer.amount.saturating_add(transfer.fee);
    if transfer.amount.checked_add(transfer.fee).is_none() || needed > account.balance {
        return Err(MempoolRefusal::Unfunded {
            balance: account.balance,
            needed,
        });
    }
    Ok(())
}

/// Why a transfer was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MempoolRefusal {
    /// The signature does not verify.
    #[error("signature does not verify")]
    Signature,
    /// The nonce is already used on chain.
    #[error("nonce {got} is below the account's {expected}")]
    NonceUsed {
        /// The transfer's nonce.
        got: u64,
        /// The account's next nonce.
        expected: u64,
    },
    /// The nonce is too far ahead.
    #[error("nonce {got} is more than {MAX_NONCE_GAP} above the account's {expected}")]
    NonceTooFar {
        /// The transfer's nonce.
        got: u64,
        /// The account's next nonce.
        expected: u64,
    },
    /// The account cannot pay amount plus fee (with its transfers already pooled).
    #[error("balance {balance} cannot pay {needed}")]
    Unfunded {
        /// The sender's balance.
        balance: u64,
        /// Amount plus fee, with the sender's other pooled transfers.
        needed: u64,
    },
    /// Already held, or another transfer holds its nonce with a fee at least as high.
    #[error("already held, or its nonce is taken at a fee of {held_fee}")]
    Duplicate {
        /// The fee of the transfer held.
        held_fee: u64,
    },
    /// Full, and the transfer does not pay more than the cheapest evictable one.
    #[error("full; a fee above {cheapest} is needed")]
    Full {
        /// The fee to beat.
        cheapest: u64,
    },
}

/// Where an admitted transfer went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Into the pool: a block can take it.
    Pooled,
    /// Among the orphans: its sender's run of nonces has not reached it yet.
    Orphan,
}

/// A pooled transfer and the height at which it entered.
#[derive(Clone, Debug)]
struct Held {
    transfer: Transfer,
    since: u64,
}

/// Transfers waiting for a block.
#[derive(Debug)]
pub struct Mempool {
    network: String,
    capacity: usize,
    /// Transfers by sender, then nonce: each sender's a gap-free, funded run.
    by_sender: BTreeMap<AccountId, BTreeMap<u64, Held>>,
    len: usize,
    /// Transfers past the end of their sender's run, oldest first (signatures checked).
    orphans: VecDeque<Transfer>,
}

/// A sender's next transfer, ordered by fee then by the lower id.
#[derive(PartialEq, Eq)]
struct Candidate {
    fee: u64,
    id: std::cmp::Reverse<Hash>,
    sender: AccountId,
    nonce: u64,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.fee, &self.id).cmp(&(other.fee, &other.id))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What a transfer costs its sender: amount plus fee, `None` past `u64`.
fn cost(transfer: &Transfer) -> Option<u64> {
    transfer.amount.checked_add(transfer.fee)
}

impl Mempool {
    /// An empty pool of at most `capacity` transfers of `network`.
    pub fn new(network: &str, capacity: usize) -> Mempool {
        Mempool {
            network: network.to_owned(),
            capacity,
            by_sender: BTreeMap::new(),
            len: 0,
            orphans: VecDeque::new(),
        }
    }

    /// Transfers held in the pool (orphans not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Transfers waiting among the orphans.
    pub fn orphans(&self) -> usize {
        self.orphans.len()
    }

    /// Admits `transfer` against `state`, checking its signature, or says why not.
    pub fn insert(
        &mut self,
        transfer: Transfer,
        state: &ChainState,
    ) -> Result<Admitted, MempoolRefusal> {
        self.admit_and_adopt(transfer, state, true)
    }

    /// Admits `transfer` whose signature under this pool's network was checked already
    /// (by the transactions topic's validator, [`judge_relay`]).
    pub fn insert_verified(
        &mut self,
        transfer: Transfer,
        state: &ChainState,
    ) -> Result<Admitted, MempoolRefusal> {
        self.admit_and_adopt(transfer, state, false)
    }

    /// Admits `transfer`, then the sender's orphans its run now reaches.
    fn admit_and_adopt(
        &mut self,
        transfer: Transfer,
        state: &ChainState,
        check_signature: bool,
    ) -> Result<Admitted, MempoolRefusal> {
        let sender = transfer.from;
        let admitted = self.admit(transfer, state, check_signature)?;
        self.adopt_orphans(&sender, state);
        Ok(admitted)
    }

    fn admit(
        &mut self,
        transfer: Transfer,
        state: &ChainState,
        check_signature: bool,
    ) -> Result<Admitted, MempoolRefusal> {
        admissible(&transfer, state)?;
        let account = state
            .accounts
            .get(&transfer.from)
            .copied()
            .unwrap_or_default();
        let pooled = self.by_sender.get(&transfer.from);
        if let Some(held) = pooled.and_then(|s| s.get(&transfer.nonce))
            && !replaces(held.transfer.fee, transfer.fee)
        {
            return Err(MempoolRefusal::Duplicate {
                held_fee: held.transfer.fee,
            });
        }
        let run_end = account
            .nonce
            .saturating_add(pooled.map_or(0, |s| s.len() as u64));
        if transfer.nonce > run_end {
            if let Some(held) = self
                .orphans
                .iter()
                .find(|o| o.from == transfer.from && o.nonce == transfer.nonce)
                && !replaces(held.fee, transfer.fee)
            {
                return Err(MempoolRefusal::Duplicate { held_fee: held.fee });
            }
            if check_signature && !transfer.signature_valid(&self.network) {
                return Err(MempoolRefusal::Signature);
            }
            self.orphans
                .retain(|o| !(o.from == transfer.from && o.nonce == transfer.nonce));
            self.orphans.push_back(transfer);
            while self.orphans.len() > MAX_ORPHANS {
                self.orphans.pop_front();
            }
            return Ok(Admitted::Orphan);
        }
        // Funded together: the sender's whole run, with this transfer in its place.
        let others = pooled
            .into_iter()
            .flat_map(|s| s.values())
            .filter(|h| h.transfer.nonce != transfer.nonce)
            .try_fold(0u64, |sum, h| sum.checked_add(cost(&h.transfer)?));
        let needed = others.and_then(|o| o.checked_add(cost(&transfer)?));
        match needed {
            Some(needed) if needed <= account.balance => {}
            needed => {
                return Err(MempoolRefusal::Unfunded {
                    balance: account.balance,
                    needed: needed.unwrap_or(u64::MAX),
                });
            }
        }
        // The signature last: it is the expensive check.
        if check_signature && !transfer.signature_valid(&self.network) {
            return Err(MempoolRefusal::Signature);
        }
        let replacing = pooled.is_some_and(|s| s.contains_key(&transfer.nonce));
        if !replacing && self.len >= self.capacity {
            // Never the sender's own last: the newcomer extends that run.
            match self.cheapest_last(&transfer.from) {
                Some((fee, sender, nonce)) if transfer.fee > fee => self.remove(&sender, nonce),
                Some((fee, _, _)) => return Err(MempoolRefusal::Full { cheapest: fee }),
                None => return Err(MempoolRefusal::Full { cheapest: 0 }),
            }
        }
        let sender = transfer.from;
        let nonce = transfer.nonce;
        let run = self.by_sender.entry(sender).or_default();
        let held = Held {
            transfer,
            since: state.height,
        };
        if run.insert(nonce, held).is_none() {
            self.len = self.len.saturating_add(1);
        }
        Ok(Admitted::Pooled)
    }

    /// Moves `sender`'s orphans that its run now reaches into the pool.
    fn adopt_orphans(&mut self, sender: &AccountId, state: &ChainState) {
        loop {
            let run_end = state
                .accounts
                .get(sender)
                .map_or(0, |a| a.nonce)
                .saturating_add(self.by_sender.get(sender).map_or(0, |s| s.len() as u64));
            let Some(at) = self
                .orphans
                .iter()
                .position(|o| o.from == *sender && o.nonce == run_end)
            else {
                return;
            };
            let Some(orphan) = self.orphans.remove(at) else {
                return;
            };
            if self.admit(orphan, state, false) != Ok(Admitted::Pooled) {
                return;
            }
        }
    }

    /// Keeps of `sender`'s pooled transfers only the gap-free run from its account
    /// nonce that its balance pays for, held at most [`EXPIRY_BLOCKS`].
    fn trim(&mut self, sender: &AccountId, state: &ChainState) {
        let Some(run) = self.by_sender.get_mut(sender) else {
            return;
        };
        let account = state.accounts.get(sender).copied().unwrap_or_default();
        let before = run.len();
        let mut expected = account.nonce;
        let mut spent = 0u64;
        let mut keep = 0usize;
        for (nonce, held) in run.range(account.nonce..) {
            let fresh = state.height.saturating_sub(held.since) <= EXPIRY_BLOCKS;
            let total = cost(&held.transfer).and_then(|c| spent.checked_add(c));
            match total {
                Some(total) if *nonce == expected && fresh && total <= account.balance => {
                    spent = total;
                    expected = expected.saturating_add(1);
                    keep = keep.saturating_add(1);
                }
                _ => break,
            }
        }
        let kept: BTreeMap<u64, Held> = run
            .range(account.nonce..)
            .take(keep)
            .map(|(n, h)| (*n, h.clone()))
            .collect();
        *run = kept;
        let removed = before.saturating_sub(run.len());
        self.len = self.len.saturating_sub(removed);
        if run.is_empty() {
            self.by_sender.remove(sender);
        }
    }

    /// The cheapest transfer that is its sender's last, of a sender other than
    /// `except`: (fee, sender, nonce).
    fn cheapest_last(&self, except: &AccountId) -> Option<(u64, AccountId, u64)> {
        self.by_sender
            .iter()
            .filter(|(sender, _)| *sender != except)
            .filter_map(|(sender, txs)| {
                let (nonce, held) = txs.last_key_value()?;
                Some((held.transfer.fee, *sender, *nonce))
            })
            .min()
    }

    fn remove(&mut self, sender: &AccountId, nonce: u64) {
        if let Some(txs) = self.by_sender.get_mut(sender) {
            if txs.remove(&nonce).is_some() {
                self.len = self.len.saturating_sub(1);
            }
            if txs.is_empty() {
                self.by_sender.remove(sender);
            }
        }
    }

    /// Up to `max` transfers for a block on `state`, by fee, each sender's in nonce
    /// order from its account nonce.
    pub fn select(&self, state: &ChainState, max: usize) -> Vec<Transfer> {
        let next_of = |sender: &AccountId, nonce: u64| -> Option<Candidate> {
            let t = &self.by_sender.get(sender)?.get(&nonce)?.transfer;
            Some(Candidate {
                fee: t.fee,
                id: std::cmp::Reverse(Tx::Transfer(t.clone()).id()),
                sender: *sender,
                nonce,
            })
        };
        let mut heap: BinaryHeap<Candidate> = self
            .by_sender
            .keys()
            .filter_map(|sender| {
                let nonce = state.accounts.get(sender).map_or(0, |a| a.nonce);
                next_of(sender, nonce)
            })
            .collect();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(best) = heap.pop() else { break };
            if let Some(held) = self
                .by_sender
                .get(&best.sender)
                .and_then(|s| s.get(&best.nonce))
            {
                out.push(held.transfer.clone());
            }
            if let Some(next) = next_of(&best.sender, best.nonce.saturating_add(1)) {
                heap.push(next);
            }
        }
        out
    }

    /// Prunes the pool on the state after a block (see the module docs, "Pruning").
    pub fn prune(&mut self, state: &ChainState) {
        let senders: Vec<AccountId> = self.by_sender.keys().copied().collect();
        for sender in &senders {
            self.trim(sender, state);
        }
        self.orphans.retain(|o| {
            let next = state.accounts.get(&o.from).map_or(0, |a| a.nonce);
            o.nonce >= next
        });
        let waiting: HashSet<AccountId> = self.orphans.iter().map(|o| o.from).collect();
        for sender in &waiting {
            self.adopt_orphans(sender, state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Account;
    use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};

    fn key(n: u8) -> Keypair {
        Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
    }

    fn account(n: u8) -> AccountId {
        AccountId::of(&key(n).x_only_public_key().0)
    }

    fn funded(senders: &[u8]) -> ChainState {
        let mut state = ChainState::default();
        for n in senders {
            state.accounts.insert(
                account(*n),
                Account {
                    balance: 1_000_000,
                    nonce: 0,
                },
            );
        }
        state
    }

    fn transfer(from: u8, fee: u64, nonce: u64) -> Transfer {
        Transfer::sign("net", &key(from), account(99), 10, fee, nonce)
    }

    #[test]
    fn a_block_takes_the_highest_fees_in_each_senders_nonce_order() {
        let state = funded(&[1, 2]);
        let mut pool = Mempool::new("net", 100);
        // Sender 1: a cheap first transfer unlocking an expensive second one.
        pool.insert(transfer(1, 1, 0), &state).unwrap();
        pool.insert(transfer(1, 50, 1), &state).unwrap();
        pool.insert(transfer(2, 10, 0), &state).unwrap();
        let picked: Vec<(u64, u64)> = pool
            .select(&state, 10)
            .iter()
            .map(|t| (t.fee, t.nonce))
            .collect();
        assert_eq!(picked, vec![(10, 0), (1, 0), (50, 1)]);
        assert_eq!(pool.select(&state, 1).len(), 1);
    }

    #[test]
    fn bad_transfers_are_refused_with_their_reason() {
        let mut state = funded(&[1]);
        state.accounts.get_mut(&account(1)).unwrap().nonce = 5;
        let mut pool = Mempool::new("net", 100);
        assert_eq!(
            pool.insert(transfer(1, 1, 4), &state),
            Err(MempoolRefusal::NonceUsed {
                got: 4,
                expected: 5
            })
        );
        assert!(matches!(
            pool.insert(transfer(1, 1, 5 + MAX_NONCE_GAP + 1), &state),
            Err(MempoolRefusal::NonceTooFar { .. })
        ));
        assert!(matches!(
            pool.insert(transfer(3, 1, 0), &state),
            Err(MempoolRefusal::Unfunded { balance: 0, .. })
        ));
        let mut forged = transfer(1, 1, 5);
        forged.amount = 999;
        assert_eq!(pool.insert(forged, &state), Err(MempoolRefusal::Signature));
        pool.insert(transfer(1, 5, 5), &state).unwrap();
        assert_eq!(
            pool.insert(transfer(1, 5, 5), &state),
            Err(MempoolRefusal::Duplicate { held_fee: 5 })
        );
        // A higher fee replaces the transfer at that nonce.
        pool.insert(transfer(1, 6, 5), &state).unwrap();
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.select(&state, 1)[0].fee, 6);
    }

    #[test]
    fn a_full_pool_evicts_the_cheapest_last_transfer_only_for_a_higher_fee() {
        let state = funded(&[1, 2, 3]);
        let mut pool = Mempool::new("net", 2);
        pool.insert(transfer(1, 5, 0), &state).unwrap();
        pool.insert(transfer(2, 3, 0), &state).unwrap();
        assert_eq!(
            pool.insert(transfer(3, 3, 0), &state),
            Err(MempoolRefusal::Full { cheapest: 3 })
        );
        pool.insert(transfer(3, 4, 0), &state).unwrap();
        assert_eq!(pool.len(), 2);
        let fees: Vec<u64> = pool.select(&state, 10).iter().map(|t| t.fee).collect();
        assert_eq!(fees, vec![5, 4]);
    }

    #[test]
    fn transfers_the_chain_passed_are_pruned() {
        let mut state = funded(&[1, 2]);
        let mut pool = Mempool::new("net", 100);
        for nonce in 0..3 {
            pool.insert(transfer(1, 1, nonce), &state).unwrap();
        }
        pool.insert(transfer(2, 1, 0), &state).unwrap();
        state.accounts.get_mut(&account(1)).unwrap().nonce = 2;
        state.accounts.get_mut(&account(2)).unwrap().nonce = 1;
        pool.prune(&state);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.select(&state, 10)[0].nonce, 2);
    }

    #[test]
    fn a_gossiped_transfer_is_relayed_dropped_or_invalid_by_the_rules() {
        let state = funded(&[1]);
        let bytes = |t: Transfer| Tx::Transfer(t).to_bytes().unwrap();
        let good = transfer(1, 5, 0);
        assert_eq!(
            judge_relay(&bytes(good.clone()), "net", &state),
            RelayJudgement::Relay(good)
        );
        // State checks: dropped without blame.
        assert!(matches!(
            judge_relay(&bytes(transfer(2, 5, 0)), "net", &state),
            RelayJudgement::Drop(MempoolRefusal::Unfunded { .. })
        ));
        assert!(matches!(
            judge_relay(&bytes(transfer(1, 5, MAX_NONCE_GAP + 1)), "net", &state),
            RelayJudgement::Drop(MempoolRefusal::NonceTooFar { .. })
        ));
        // A forged signature, another network's, junk, a huge message: invalid.
        let mut forged = transfer(1, 5, 0);
        forged.amount += 1;
        for bad in [
            bytes(forged),
            bytes(Transfer::sign("other", &key(1), account(99), 10, 5, 0)),
            vec![0xff; 40],
            vec![0; MAX_RELAYED_TX_BYTES + 1],
        ] {
            assert!(
                matches!(judge_relay(&bad, "net", &state), RelayJudgement::Invalid(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_re_encoded_transfer_is_invalid_and_a_nonce_is_relayed_again_only_for_a_real_fee_step() {
        let state = funded(&[1]);
        let good = transfer(1, 100, 0);
        let bytes = Tx::Transfer(good.clone()).to_bytes().unwrap();
        // The same transfer under another encoding of the same value: a trailing
        // byte, and the envelope map re-encoded with an extra key.
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut value: serde_cbor::Value = serde_cbor::from_slice(&bytes).unwrap();
        if let serde_cbor::Value::Map(map) = &mut value {
            map.insert(serde_cbor::Value::Text("x".into()), serde_cbor::Value::Null);
        }
        let extra_key = serde_cbor::to_vec(&value).unwrap();
        for other in [trailing, extra_key] {
            assert!(
                matches!(
                    judge_relay(&other, "net", &state),
                    RelayJudgement::Invalid(_)
                ),
                "{other:?}"
            );
        }
        let mut relayed = RelayedNonces::new(2);
        assert!(relayed.admit(&good));
        assert!(!relayed.admit(&transfer(1, 100, 0)));
        assert!(!relayed.admit(&transfer(1, 109, 0)), "a 9% step");
        assert!(relayed.admit(&transfer(1, 110, 0)));
        // Bounded: two newer pairs push the first out.
        assert!(relayed.admit(&transfer(1, 1, 1)));
        assert!(relayed.admit(&transfer(1, 1, 2)));
        assert!(relayed.admit(&transfer(1, 110, 0)));
        // The pool's replace-by-fee takes the same step.
        let mut pool = Mempool::new("net", 10);
        pool.insert(transfer(1, 100, 0), &state).unwrap();
        assert!(pool.insert(transfer(1, 109, 0), &state).is_err());
        pool.insert(transfer(1, 110, 0), &state).unwrap();
    }

    fn big(from: u8, amount: u64, fee: u64, nonce: u64) -> Transfer {
        Transfer::sign("net", &key(from), account(99), amount, fee, nonce)
    }

    #[test]
    fn a_sender_cannot_park_unfundable_or_gapped_transfers_in_the_pool() {
        // Balance 1,000,000: two transfers of 400,000 are funded together, a third is
        // not, though each alone would be.
        let state = funded(&[1]);
        let mut pool = Mempool::new("net", 100);
        assert_eq!(
            pool.insert(big(1, 400_000, 1, 0), &state),
            Ok(Admitted::Pooled)
        );
        assert_eq!(
            pool.insert(big(1, 400_000, 1, 1), &state),
            Ok(Admitted::Pooled)
        );
        assert_eq!(
            pool.insert(big(1, 400_000, 1, 2), &state),
            Err(MempoolRefusal::Unfunded {
                balance: 1_000_000,
                needed: 1_200_003
            })
        );
        // A replacement is funded with the rest of the run too.
        assert!(matches!(
            pool.insert(big(1, 700_000, 2, 0), &state),
            Err(MempoolRefusal::Unfunded { .. })
        ));
        // Amount plus fee past u64 is unfunded, not a wrap.
        assert!(matches!(
            pool.insert(big(1, u64::MAX, 1, 2), &state),
            Err(MempoolRefusal::Unfunded { .. })
        ));
        // Past the end of the run: an orphan, never selected.
        assert_eq!(pool.insert(big(1, 1, 50, 5), &state), Ok(Admitted::Orphan));
        assert_eq!((pool.len(), pool.orphans()), (2, 1));
        let nonces: Vec<u64> = pool.select(&state, 10).iter().map(|t| t.nonce).collect();
        assert_eq!(nonces, vec![0, 1]);
    }

    #[test]
    fn a_jammers_high_fee_transfers_no_longer_keep_honest_ones_out() {
        // The review's jam: one account parks high-fee transfers it cannot pay for, or
        // that can never be included, in a small pool. Now only what it can pay for
        // enters, and honest transfers fill the rest.
        let mut state = funded(&[2, 3, 4]);
        state.accounts.insert(
            account(1),
            Account {
                balance: 100,
                nonce: 0,
            },
        );
        let mut pool = Mempool::new("net", 5);
        let mut jammed = 0;
        for nonce in 0..MAX_NONCE_GAP {
            if pool.insert(big(1, 0, 50, nonce), &state) == Ok(Admitted::Pooled) {
                jammed += 1;
            }
        }
        assert_eq!(jammed, 2, "only what the balance pays for");
        for (from, nonce) in [(2, 0), (3, 0), (4, 0)] {
            assert_eq!(
                pool.insert(transfer(from, 1, nonce), &state),
                Ok(Admitted::Pooled)
            );
        }
        assert_eq!(pool.select(&state, 10).len(), 5);
    }

    #[test]
    fn orphans_join_the_pool_when_the_run_reaches_them_by_a_transfer_or_by_a_block() {
        let mut state = funded(&[1, 2]);
        let mut pool = Mempool::new("net", 100);
        // Gossip reordered sender 1's transfers.
        assert_eq!(pool.insert(transfer(1, 1, 2), &state), Ok(Admitted::Orphan));
        assert_eq!(pool.insert(transfer(1, 1, 1), &state), Ok(Admitted::Orphan));
        assert_eq!(pool.insert(transfer(1, 1, 0), &state), Ok(Admitted::Pooled));
        assert_eq!((pool.len(), pool.orphans()), (3, 0));
        // Sender 2's nonce 0 went into a block through another node.
        assert_eq!(pool.insert(transfer(2, 1, 1), &state), Ok(Admitted::Orphan));
        state.accounts.get_mut(&account(2)).unwrap().nonce = 1;
        pool.prune(&state);
        assert_eq!((pool.len(), pool.orphans()), (4, 0));
        // An orphan at a nonce the chain passed is forgotten.
        pool.insert(transfer(2, 1, 5), &state).unwrap();
        state.accounts.get_mut(&account(2)).unwrap().nonce = 6;
        pool.prune(&state);
        assert_eq!(pool.orphans(), 0);
    }

    #[test]
    fn a_flood_of_gapped_transfers_only_churns_the_orphans() {
        let senders: Vec<u8> = (10..=40).collect();
        let state = funded(&senders);
        let mut pool = Mempool::new("net", 100);
        let mut flooded = 0;
        'flood: for from in &senders {
            for nonce in 1..=MAX_NONCE_GAP {
                if flooded > MAX_ORPHANS + 10 {
                    break 'flood;
                }
                pool.insert(transfer(*from, 1_000, nonce), &state).unwrap();
                flooded += 1;
            }
        }
        assert_eq!((pool.len(), pool.orphans()), (0, MAX_ORPHANS));
        assert_eq!(
            pool.insert(transfer(1, 1, 0), &funded(&[1])),
            Ok(Admitted::Pooled)
        );
        assert_eq!(pool.select(&funded(&[1]), 10).len(), 1);
    }

    #[test]
    fn pruning_drops_what_became_unfundable_and_what_waited_too_long() {
        let mut state = funded(&[1, 2]);
        let mut pool = Mempool::new("net", 100);
        for nonce in 0..3 {
            pool.insert(big(1, 300_000, 1, nonce), &state).unwrap();
        }
        pool.insert(transfer(2, 1, 0), &state).unwrap();
        // Sender 1 spent elsewhere: its balance pays for one of its three now.
        state.accounts.get_mut(&account(1)).unwrap().balance = 500_000;
        state.height = 1;
        pool.prune(&state);
        assert_eq!(pool.len(), 2);
        // Sender 2's transfer, too cheap for any block, leaves after EXPIRY_BLOCKS.
        state.height = EXPIRY_BLOCKS;
        pool.prune(&state);
        assert_eq!(pool.len(), 2);
        state.height = EXPIRY_BLOCKS + 1;
        pool.prune(&state);
        assert!(pool.is_empty());
        // And the sender may send again.
        pool.insert(transfer(2, 1, 0), &state).unwrap();
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_verified_transfer_is_not_checked_again_but_every_other_rule_holds() {
        let state = funded(&[1]);
        let mut pool = Mempool::new("net", 100);
        let mut forged = transfer(1, 1, 0);
        forged.amount = 999;
        // The caller vouches for the signature: the pool takes its word ...
        assert_eq!(pool.insert_verified(forged, &state), Ok(Admitted::Pooled));
        // ... but not for the nonce or the balance.
        assert!(matches!(
            pool.insert_verified(big(1, 2_000_000, 1, 1), &state),
            Err(MempoolRefusal::Unfunded { .. })
        ));
    }
}
