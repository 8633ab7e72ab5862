//! The chain state on disk (sled): a node that restarts resumes at the same tip.
//!
//! The store keeps the best chain of blocks by height, every account, and for every
//! block an undo record (the tip before it and the accounts it touched as they were),
//! so the tip can be moved back: when a term's unannounced blocks are dropped, or a
//! burnchain reorg un-announces blocks. Every change (a block and its undo record, or
//! a rewind) is one atomic sled batch, flushed and synced to disk before the call
//! returns (sled's own flush does not survive a power cut: `tenure_stackerdb::disk`);
//! a crash or a power cut leaves the store at one tip or the other, never between.
//!
//! Blocks enter only through [`ChainStore::apply`], which validates them first, so
//! what is stored is always a valid chain. Opening checks that the stored accounts
//! hash to the tip block's state root, so a damaged store is an error, not a fork.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use tenure_stackerdb::disk::{DiskSync, SyncError};

use crate::{
    block::{
        Account, AccountId, Block, BlockError, BlockSignature, ChainChangeset, ChainState, Hash,
        TermContext,
    },
    ops::announce::Announcements,
};

/// On-disk format of the chain store. Format 2: the tip record is a CBOR map with
/// the signers' fees owed and the tip's verified signers.
pub const CHAIN_STORE_FORMAT: u32 = 2;

const FORMAT_KEY: &[u8] = b"format";
const TIP_KEY: &[u8] = b"tip";
const BLOCK: u8 = b'b';
const HEIGHT_OF: u8 = b'h';
const ACCOUNT: u8 = b'a';
const UNDO: u8 = b'u';

/// Why the chain store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("chain store: {0}")]
    Sled(#[from] sled::Error),
    /// A flushed change could not be made durable.
    #[error("chain store: {0}")]
    Sync(#[from] SyncError),
    /// Another format.
    #[error("chain store format {found} is not {CHAIN_STORE_FORMAT}")]
    Format {
        /// The format found.
        found: String,
    },
    /// A record does not decode, or the records disagree.
    #[error("chain store is damaged: {0}")]
    Corrupt(String),
    /// The block is not valid on the tip; nothing was stored.
    #[error("block refused: {0}")]
    Invalid(#[from] BlockError),
    /// A block the burnchain announced is not on this store's chain: the chain has to
    /// be rewound to where it forked and the block fetched before the term can build
    /// on it.
    #[error(
        "announced block {} at height {height} is not on this chain",
        hex::encode(hash)
    )]
    AnnouncedBlockMissing {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash,
    },
}

/// What a block changed, to take it back.
#[derive(Serialize, Deserialize)]
struct Undo {
    /// The tip record before the block.
    #[serde(with = "serde_bytes")]
    tip: Vec<u8>,
    /// Accounts the block touched, as they were (`None`: did not exist).
    accounts: Vec<(AccountId, Option<Account>)>,
}

/// The chain state on sled.
#[derive(Debug)]
pub struct ChainStore {
    db: sled::Db,
    disk: DiskSync,
    chain: sled::Tree,
    state: ChainState,
}

impl ChainStore {
    /// Opens (or creates) the store in `dir` and loads the state at its tip.
    pub fn open(dir: &Path) -> Result<ChainStore, StoreError> {
        let db = sled::open(dir)?;
        let disk = DiskSync::open(dir)?;
        let format = CHAIN_STORE_FORMAT.to_be_bytes();
        match db.get(FORMAT_KEY)? {
            Some(found) if found.as_ref() != format => {
                return Err(StoreError::Format {
                    found: hex::encode(found),
                });
            }
            Some(_) => {}
            None => {
                db.insert(FORMAT_KEY, &format)?;
                db.flush()?;
                disk.sync()?;
            }
        }
        let chain = db.open_tree("chain")?;
        let mut state = match chain.get(TIP_KEY)? {
            Some(bytes) => decode_tip(&bytes)?,
            None => ChainState::default(),
        };
        for entry in chain.scan_prefix([ACCOUNT]) {
            let (key, value) = entry?;
            let key: [u8; 32] = key
                .get(1..)
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| corrupt("account key"))?;
            let (balance, nonce) = decode_account(&value)?;
            state
                .accounts
                .insert(AccountId(key), Account { balance, nonce });
        }
        let store = ChainStore {
            db,
            disk,
            chain,
            state,
        };
        if store.state.height > 0 {
            let tip = store
                .block_at(store.state.height)?
                .ok_or_else(|| corrupt("the tip block is missing"))?;
            if tip.header.hash() != store.state.tip {
                return Err(corrupt("the tip record names another block"));
            }
            if tip.header.state_root != store.state.state_root() {
                return Err(corrupt("the accounts do not hash to the tip's state root"));
            }
        }
        Ok(store)
    }

    /// sled's flush, then the sync sled leaves out: the change is on the disk.
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.disk.sync()?;
        Ok(())
    }

    /// The state at the tip.
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// The best chain's block at `height` (1 and up).
    pub fn block_at(&self, height: u64) -> Result<Option<Block>, StoreError> {
        match self.chain.get(key(BLOCK, &height.to_be_bytes()))? {
            Some(bytes) => Block::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| corrupt(&format!("block {height}: {e}"))),
            None => Ok(None),
        }
    }

    /// The height of the best chain's block `hash`, if it is on it.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        match self.chain.get(key(HEIGHT_OF, hash))? {
            Some(bytes) => Ok(Some(decode_u64(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Validates `block` on the tip and stores it durably. An invalid block changes
    /// nothing.
    pub fn apply(
        &mut self,
        block: &Block,
        context: &TermContext,
        network: &str,
    ) -> Result<&ChainState, StoreError> {
        let changes = self.state.validate(block, context, network)?;
        let height = changes.height.to_be_bytes();
        // What the block changed, as it was: exactly the changeset's accounts.
        let undo = Undo {
            tip: encode_tip(&TipRecord::of_state(&self.state))?,
            accounts: changes
                .accounts
                .keys()
                .map(|k| (*k, self.state.accounts.get(k).copied()))
                .collect(),
        };
        let mut batch = sled::Batch::default();
        batch.insert(
            key(BLOCK, &height),
            block.to_bytes().map_err(|e| corrupt(&e.to_string()))?,
        );
        batch.insert(key(HEIGHT_OF, &changes.tip), &height);
        batch.insert(
            key(UNDO, &height),
            serde_cbor::to_vec(&undo).map_err(|e| corrupt(&e.to_string()))?,
        );
        for (k, account) in &changes.accounts {
            batch.insert(key(ACCOUNT, k.as_ref()), &encode_account(account));
        }
        batch.insert(TIP_KEY, encode_tip(&TipRecord::of_changes(&changes))?);
        self.chain.apply_batch(batch)?;
        self.flush()?;
        self.state.apply(&changes);
        Ok(&self.state)
    }

    /// Moves the tip back to `height`, undoing every block above it in one batch.
    /// Returns the dropped blocks, lowest first (their transfers can go back to the
    /// mempool).
    pub fn rewind_to(&mut self, height: u64) -> Result<Vec<Block>, StoreError> {
        if height >= self.state.height {
            return Ok(Vec::new());
        }
        let mut state = self.state.clone();
        let mut batch = sled::Batch::default();
        let mut dropped = Vec::new();
        // `height` is below the tip here, so `height + 1` cannot overflow.
        for h in (height.saturating_add(1)..=self.state.height).rev() {
            let hb = h.to_be_bytes();
            let block = self
                .block_at(h)?
                .ok_or_else(|| corrupt(&format!("block {h} is missing")))?;
            let undo: Undo = self
                .chain
                .get(key(UNDO, &hb))?
                .ok_or_else(|| corrupt(&format!("undo record {h} is missing")))
                .and_then(|b| {
                    serde_cbor::from_slice(&b).map_err(|e| corrupt(&format!("undo {h}: {e}")))
                })?;
            for (k, before) in &undo.accounts {
                match before {
                    Some(a) => {
                        state.accounts.insert(*k, *a);
                        batch.insert(key(ACCOUNT, k.as_ref()), &encode_account(a));
                    }
                    None => {
                        state.accounts.remove(k);
                        batch.remove(key(ACCOUNT, k.as_ref()));
                    }
                }
            }
            let accounts = std::mem::take(&mut state.accounts);
            state = decode_tip(&undo.tip)?;
            state.accounts = accounts;
            batch.remove(key(BLOCK, &hb));
            batch.remove(key(UNDO, &hb));
            batch.remove(key(HEIGHT_OF, &block.header.hash()));
            dropped.push(block);
        }
        batch.insert(TIP_KEY, encode_tip(&TipRecord::of_state(&state))?);
        self.chain.apply_batch(batch)?;
        self.flush()?;
        self.state = state;
        dropped.reverse();
        Ok(dropped)
    }

    /// Makes the chain what the burnchain says term `term` builds on: the last block
    /// announced by an earlier term (the empty chain if none). Blocks of earlier terms
    /// above it were never announced and are dropped, and with them anything built on
    /// them; blocks of `term` itself on top of it are kept. Call it when a term starts
    /// and after every burnchain reorg. Returns the dropped blocks.
    pub fn settle(
        &mut self,
        announcements: &Announcements,
        term: u64,
    ) -> Result<Vec<Block>, StoreError> {
        let (height, hash) = announcements
            .parent_for_term(term)
            .map_or((0, [0; 32]), |a| (a.height, a.block));
        let held = if height == 0 {
            Some([0; 32])
        } else {
            self.block_at(height)?.map(|b| b.header.hash())
        };
        if held != Some(hash) {
            return Err(StoreError::AnnouncedBlockMissing { height, hash });
        }
        match self.block_at(height.saturating_add(1))? {
            Some(next) if next.header.term < term => self.rewind_to(height),
            _ => Ok(Vec::new()),
        }
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len().saturating_add(1));
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn encode_account(a: &Account) -> [u8; 16] {
    let mut out = [0; 16];
    let (balance, nonce) = out.split_at_mut(8);
    balance.copy_from_slice(&a.balance.to_be_bytes());
    nonce.copy_from_slice(&a.nonce.to_be_bytes());
    out
}

fn decode_account(bytes: &[u8]) -> Result<(u64, u64), StoreError> {
    let (balance, nonce) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("account record"))?;
    let nonce: [u8; 8] = nonce.try_into().map_err(|_| corrupt("account record"))?;
    Ok((u64::from_be_bytes(*balance), u64::from_be_bytes(nonce)))
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        bytes.try_into().map_err(|_| corrupt("height record"))?,
    ))
}

/// The tip record: everything of the state but the accounts.
#[derive(Serialize, Deserialize)]
struct TipRecord {
    tip: Hash,
    height: u64,
    term: u64,
    term_blocks: u64,
    term_cost: u64,
    carried_fees: u64,
    signer_fees: u64,
    tip_signature: Option<BlockSignature>,
}

impl TipRecord {
    fn of_state(state: &ChainState) -> TipRecord {
        TipRecord {
            tip: state.tip,
            height: state.height,
            term: state.term,
            term_blocks: state.term_blocks,
            term_cost: state.term_cost,
            carried_fees: state.carried_fees,
            signer_fees: state.signer_fees,
            tip_signature: state.tip_signature.clone(),
        }
    }

    fn of_changes(changes: &ChainChangeset) -> TipRecord {
        TipRecord {
            tip: changes.tip,
            height: changes.height,
            term: changes.term,
            term_blocks: changes.term_blocks,
            term_cost: changes.term_cost,
            carried_fees: changes.carried_fees,
            signer_fees: changes.signer_fees,
            tip_signature: changes.tip_signature.clone(),
        }
    }
}

fn encode_tip(record: &TipRecord) -> Result<Vec<u8>, StoreError> {
    serde_cbor::to_vec(record).map_err(|e| corrupt(&format!("tip record: {e}")))
}

fn decode_tip(bytes: &[u8]) -> Result<ChainState, StoreError> {
    let record: TipRecord =
        serde_cbor::from_slice(bytes).map_err(|e| corrupt(&format!("tip record: {e}")))?;
    Ok(ChainState {
        tip: record.tip,
        height: record.height,
        term: record.term,
        term_blocks: record.term_blocks,
        term_cost: record.term_cost,
        carried_fees: record.carried_fees,
        signer_fees: record.signer_fees,
        tip_signature: record.tip_signature,
        accounts: BTreeMap::new(),
    })
}
