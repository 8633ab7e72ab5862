//! The mempool: transfers waiting for a block, bounded, and ordered by fee.
//!
//! Rules (DESIGN "Block production": "the mempool is bounded and orders by fee"):
//!
//! - **Admission.** A transfer enters only with a valid signature, a nonce not below
//!   its sender's account nonce and at most [`MAX_NONCE_GAP`] above it, and a balance
//!   that covers amount plus fee on the chain state (the pool's earlier transfers of
//!   the sender are not counted: validation of the block has the last word).
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
//! - **Pruning.** After a block, transfers whose nonce the chain has passed are dropped.
//! - **Relay** (the transactions gossip topic, [`judge_relay`], [`RelayedNonces`]). A
//!   node forwards a gossiped transfer only if it decodes, is a transfer of at most
//!   [`MAX_RELAYED_TX_BYTES`] **in its one canonical encoding** (gossip ids are hashes
//!   of the bytes: a re-encoded copy would be a new message to relay), carries a valid
//!   signature, passes the pool's nonce and balance checks on the node's chain state,
//!   and is new at its (sender, nonce) or [`replaces`] what the node relayed there.
//!   Bytes that fail the first three are invalid (the forwarding peer is penalised: an
//!   honest peer validates before it forwards); a transfer that fails only the later
//!   checks is dropped without blame, since two honest nodes may be a block apart.

use std::collections::{BTreeMap, BinaryHeap, HashSet};

use crate::block::{AccountId, ChainState, Hash, Transfer, Tx};

/// How far above its sender's account nonce a transfer may be.
pub const MAX_NONCE_GAP: u64 = 64;

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
    /// The account cannot pay amount plus fee.
    #[error("balance {balance} cannot pay {needed}")]
    Unfunded {
        /// The sender's balance.
        balance: u64,
        /// Amount plus fee.
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

/// Transfers waiting for a block.
#[derive(Debug)]
pub struct Mempool {
    network: String,
    capacity: usize,
    /// Transfers by sender, then nonce.
    by_sender: BTreeMap<AccountId, BTreeMap<u64, Transfer>>,
    len: usize,
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

impl Mempool {
    /// An empty pool of at most `capacity` transfers of `network`.
    pub fn new(network: &str, capacity: usize) -> Mempool {
        Mempool {
            network: network.to_owned(),
            capacity,
            by_sender: BTreeMap::new(),
            len: 0,
        }
    }

    /// Transfers held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Admits `transfer` against `state`, or says why not.
    pub fn insert(&mut self, transfer: Transfer, state: &ChainState) -> Result<(), MempoolRefusal> {
        admissible(&transfer, state)?;
        if let Some(held) = self
            .by_sender
            .get(&transfer.from)
            .and_then(|s| s.get(&transfer.nonce))
            && !replaces(held.fee, transfer.fee)
        {
            return Err(MempoolRefusal::Duplicate { held_fee: held.fee });
        }
        // The signature last: it is the expensive check.
        if !transfer.signature_valid(&self.network) {
            return Err(MempoolRefusal::Signature);
        }
        let replaces = self
            .by_sender
            .get(&transfer.from)
            .is_some_and(|s| s.contains_key(&transfer.nonce));
        if !replaces && self.len >= self.capacity {
            let cheapest = self.cheapest_last();
            match cheapest {
                Some((fee, sender, nonce)) if transfer.fee > fee => self.remove(&sender, nonce),
                Some((fee, _, _)) => return Err(MempoolRefusal::Full { cheapest: fee }),
                None => return Err(MempoolRefusal::Full { cheapest: 0 }),
            }
        }
        let sender = self.by_sender.entry(transfer.from).or_default();
        if sender.insert(transfer.nonce, transfer).is_none() {
            self.len = self.len.saturating_add(1);
        }
        Ok(())
    }

    /// The cheapest transfer that is its sender's last: (fee, sender, nonce).
    fn cheapest_last(&self) -> Option<(u64, AccountId, u64)> {
        self.by_sender
            .iter()
            .filter_map(|(sender, txs)| {
                let (nonce, t) = txs.last_key_value()?;
                Some((t.fee, *sender, *nonce))
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
            let t = self.by_sender.get(sender)?.get(&nonce)?;
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
            if let Some(t) = self
                .by_sender
                .get(&best.sender)
                .and_then(|s| s.get(&best.nonce))
            {
                out.push(t.clone());
            }
            if let Some(next) = next_of(&best.sender, best.nonce.saturating_add(1)) {
                heap.push(next);
            }
        }
        out
    }

    /// Drops transfers the chain has passed (their nonce is used) after a block.
    pub fn prune(&mut self, state: &ChainState) {
        let mut emptied = HashSet::new();
        let mut removed = 0usize;
        for (sender, txs) in &mut self.by_sender {
            let next = state.accounts.get(sender).map_or(0, |a| a.nonce);
            let before = txs.len();
            txs.retain(|nonce, _| *nonce >= next);
            removed = removed.saturating_add(before.saturating_sub(txs.len()));
            if txs.is_empty() {
                emptied.insert(*sender);
            }
        }
        self.by_sender.retain(|sender, _| !emptied.contains(sender));
        self.len = self.len.saturating_sub(removed);
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
}
