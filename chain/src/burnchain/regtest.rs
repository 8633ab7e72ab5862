//! The embedded regtest burnchain: real `bitcoin` blocks with regtest proof of work
//! and real transactions, kept in memory, for the testnet and the tests.
//!
//! Transactions are checked the way the testnet spends: every input must spend an
//! unspent output of the best chain (coinbase outputs after 100 blocks), outputs may
//! not exceed inputs, and every input must be a taproot key-path spend whose BIP340
//! signature verifies over its BIP341 sighash. Other scripts are refused, not trusted.
//! Before any of that, every transaction passes Bitcoin's own context-free checks
//! (Bitcoin Core's `CheckTransaction`): at least one input and one output, every
//! output and their total within the money range (21 million BTC), no input spent
//! twice; a coinbase's outputs must be in range too. Every sum of amounts is
//! checked, so a peer's block can neither wrap a sum into an inflation nor panic
//! the node. Blocks from elsewhere are checked for proof of work, merkle root and
//! every transaction before they extend the chain; a longer branch from an ancestor
//! replaces the tip (a reorg), and the transactions it drops go back to the mempool.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxMerkleNode, TxOut, Witness, XOnlyPublicKey,
    absolute::LockTime,
    block::{Header, Version as BlockVersion},
    blockdata::constants::genesis_block,
    hashes::Hash,
    key::{Keypair, TapTweak},
    secp256k1::{Message, SECP256K1, schnorr},
    sighash::{Prevouts, SighashCache, TapSighashType},
    transaction::Version,
};

use crate::burnchain::{BurnchainError, BurnchainSource};

/// Confirmations before a coinbase output may be spent.
pub const COINBASE_MATURITY: u64 = 100;

/// Why a transaction or block is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegtestError {
    /// An input spends nothing the chain knows unspent.
    #[error("input {0} spends an unknown or spent output")]
    MissingInput(usize),
    /// An input spends a coinbase output too young.
    #[error("input {0} spends an immature coinbase")]
    Immature(usize),
    /// Outputs exceed inputs.
    #[error("outputs exceed inputs")]
    Overspend,
    /// An input is not a valid taproot key-path spend.
    #[error("input {index}: {reason}")]
    Script {
        /// The input.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The block does not build on a known block.
    #[error("the block's parent is unknown")]
    UnknownParent,
    /// Proof of work, merkle root or coinbase is wrong.
    #[error("invalid block: {0}")]
    InvalidBlock(String),
    /// A branch no longer than the best chain.
    #[error("the branch has no more work than the best chain")]
    NotLonger,
    /// The transaction breaks a context-free rule of Bitcoin.
    #[error("malformed transaction: {0}")]
    Malformed(TxFault),
    /// The mempool holds [`MAX_MEMPOOL`] transactions.
    #[error("the mempool is full")]
    MempoolFull,
}

/// Bitcoin's context-free transaction rules (Bitcoin Core's `CheckTransaction`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxFault {
    /// No inputs.
    #[error("no inputs")]
    NoInputs,
    /// No outputs.
    #[error("no outputs")]
    NoOutputs,
    /// An output above 21 million BTC.
    #[error("output {0} is out of the money range")]
    OutputOutOfRange(usize),
    /// Outputs adding up past 21 million BTC.
    #[error("the outputs add up past the money range")]
    TotalOutOfRange,
    /// One outpoint spent by two inputs.
    #[error("input {0} spends what an earlier input spends")]
    DuplicateInput(usize),
    /// A coinbase where none may be, or a null outpoint in a spend.
    #[error("input {0} spends the null outpoint")]
    NullInput(usize),
}

/// Bitcoin's context-free checks of `tx`; `coinbase`: it is its block's coinbase.
/// Returns the outputs' total.
pub fn check_sanity(tx: &Transaction, coinbase: bool) -> Result<Amount, TxFault> {
    if tx.input.is_empty() {
        return Err(TxFault::NoInputs);
    }
    if tx.output.is_empty() {
        return Err(TxFault::NoOutputs);
    }
    let mut total = Amount::ZERO;
    for (i, out) in tx.output.iter().enumerate() {
        if out.value > Amount::MAX_MONEY {
            return Err(TxFault::OutputOutOfRange(i));
        }
        total = total
            .checked_add(out.value)
            .filter(|t| *t <= Amount::MAX_MONEY)
            .ok_or(TxFault::TotalOutOfRange)?;
    }
    if !coinbase {
        let mut spent = BTreeSet::new();
        for (i, input) in tx.input.iter().enumerate() {
            if input.previous_output == OutPoint::null() {
                return Err(TxFault::NullInput(i));
            }
            if !spent.insert(input.previous_output) {
                return Err(TxFault::DuplicateInput(i));
            }
        }
    }
    Ok(total)
}

#[derive(Clone, Copy, Debug)]
struct Coin {
    height: u64,
    coinbase: bool,
}

/// What the next block may spend: the best chain's unspent outputs with the mempool's
/// transactions applied ([`RegtestChain::pending_utxos`]). A relayed transaction is
/// checked against it before it is forwarded.
#[derive(Clone, Debug, Default)]
pub struct PendingUtxos {
    utxos: BTreeMap<OutPoint, (TxOut, Coin)>,
    height: u64,
}

impl PendingUtxos {
    /// Checks `tx` as the mempool would take it: every rule of the module docs.
    pub fn check(&self, tx: &Transaction) -> Result<Amount, RegtestError> {
        check_tx(tx, &self.utxos, self.height)
    }
}

/// Transactions the mempool holds, at most; more are refused until a block takes some.
pub const MAX_MEMPOOL: usize = 10_000;

/// The embedded regtest chain.
#[derive(Clone, Debug)]
pub struct RegtestChain {
    blocks: Vec<Block>,
    /// Height of every block of `blocks`, by hash.
    heights: HashMap<BlockHash, u64>,
    utxos: BTreeMap<OutPoint, (TxOut, Coin)>,
    /// Every output of the best chain, spent or not (what bitcoind's transaction
    /// index answers).
    outputs: HashMap<OutPoint, TxOut>,
    mempool: Vec<Transaction>,
}

impl Default for RegtestChain {
    fn default() -> Self {
        RegtestChain::new()
    }
}

impl RegtestChain {
    /// A chain holding regtest's genesis block.
    pub fn new() -> RegtestChain {
        let mut chain = RegtestChain {
            blocks: Vec::new(),
            heights: HashMap::new(),
            utxos: BTreeMap::new(),
            outputs: HashMap::new(),
            mempool: Vec::new(),
        };
        chain.connect(genesis_block(Network::Regtest));
        chain
    }

    /// Height of the tip.
    pub fn height(&self) -> u64 {
        self.blocks.len().saturating_sub(1) as u64
    }

    /// Hash of the tip.
    pub fn tip(&self) -> BlockHash {
        self.blocks
            .last()
            .map_or(BlockHash::all_zeros(), Block::block_hash)
    }

    /// The height of block `hash` if it is on the best chain.
    pub fn height_of(&self, hash: &BlockHash) -> Option<u64> {
        self.heights.get(hash).copied()
    }

    /// The best chain's block at `height`.
    pub fn block_at(&self, height: u64) -> Option<&Block> {
        self.blocks.get(height as usize)
    }

    /// The unspent output at `outpoint`.
    pub fn utxo(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        self.utxos.get(outpoint).map(|(out, _)| out)
    }

    /// The output at `outpoint` on the best chain, spent or not.
    pub fn output(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        self.outputs.get(outpoint)
    }

    /// Every output paying `script` that the next block may spend (a coinbase once
    /// it has [`COINBASE_MATURITY`] confirmations, as `check_tx` rules).
    pub fn utxos_of(&self, script: &ScriptBuf) -> Vec<(OutPoint, TxOut)> {
        self.utxos
            .iter()
            .filter(|(_, (out, coin))| {
                out.script_pubkey == *script
                    && (!coin.coinbase
                        || self.height().saturating_add(1).saturating_sub(coin.height)
                            >= COINBASE_MATURITY)
            })
            .map(|(op, (out, _))| (*op, out.clone()))
            .collect()
    }

    fn connect(&mut self, block: Block) {
        let height = self.blocks.len() as u64;
        for (i, tx) in block.txdata.iter().enumerate() {
            for input in &tx.input {
                self.utxos.remove(&input.previous_output);
            }
            let txid = tx.compute_txid();
            for (out_index, out) in tx.output.iter().enumerate() {
                self.outputs
                    .insert(OutPoint::new(txid, out_index as u32), out.clone());
                if out.script_pubkey.is_op_return() {
                    continue;
                }
                let coin = Coin {
                    height,
                    coinbase: i == 0,
                };
                self.utxos
                    .insert(OutPoint::new(txid, out_index as u32), (out.clone(), coin));
            }
        }
        let ids: BTreeSet<_> = block.txdata.iter().map(Transaction::compute_txid).collect();
        self.mempool.retain(|tx| !ids.contains(&tx.compute_txid()));
        self.heights.insert(block.block_hash(), height);
        self.blocks.push(block);
    }

    /// What the next block may spend, the mempool applied.
    pub fn pending_utxos(&self) -> PendingUtxos {
        let mut utxos = self.utxos.clone();
        let height = self.height().saturating_add(1);
        for pending in &self.mempool {
            apply(&mut utxos, pending, height);
        }
        PendingUtxos { utxos, height }
    }
}

/// Checks `tx` against `utxos` (spent in this block so far are gone from it).
fn check_tx(
    tx: &Transaction,
    utxos: &BTreeMap<OutPoint, (TxOut, Coin)>,
    height: u64,
) -> Result<Amount, RegtestError> {
    let output_value = check_sanity(tx, false).map_err(RegtestError::Malformed)?;
    let mut prevouts = Vec::with_capacity(tx.input.len());
    let mut input_value = Amount::ZERO;
    for (i, input) in tx.input.iter().enumerate() {
        let (out, coin) = utxos
            .get(&input.previous_output)
            .ok_or(RegtestError::MissingInput(i))?;
        if coin.coinbase && height.saturating_sub(coin.height) < COINBASE_MATURITY {
            return Err(RegtestError::Immature(i));
        }
        // Unspent outputs passed the money range when they were made, so this
        // cannot overflow; checked all the same.
        input_value = input_value
            .checked_add(out.value)
            .ok_or(RegtestError::Malformed(TxFault::TotalOutOfRange))?;
        prevouts.push(out.clone());
    }
    let fee = input_value
        .checked_sub(output_value)
        .ok_or(RegtestError::Overspend)?;
    let mut cache = SighashCache::new(tx);
    for (index, (input, prevout)) in tx.input.iter().zip(&prevouts).enumerate() {
        let script = |reason: &str| RegtestError::Script {
            index,
            reason: reason.to_owned(),
        };
        if !prevout.script_pubkey.is_p2tr() {
            return Err(script("not a taproot output"));
        }
        let key = prevout
            .script_pubkey
            .as_bytes()
            .get(2..34)
            .and_then(|k| XOnlyPublicKey::from_slice(k).ok())
            .ok_or_else(|| script("bad taproot key"))?;
        let sig_bytes = match input.witness.len() {
            1 => input.witness.nth(0).unwrap_or_default(),
            _ => return Err(script("not a key-path spend")),
        };
        let (sig, hash_type) = match sig_bytes.len() {
            64 => (sig_bytes, TapSighashType::Default),
            65 => (
                sig_bytes.get(..64).unwrap_or_default(),
                TapSighashType::from_consensus_u8(*sig_bytes.last().unwrap_or(&0))
                    .map_err(|_| script("bad sighash type"))?,
            ),
            _ => return Err(script("bad signature length")),
        };
        let sighash = cache
            .taproot_key_spend_signature_hash(index, &Prevouts::All(&prevouts), hash_type)
            .map_err(|e| script(&e.to_string()))?;
        let sig = schnorr::Signature::from_slice(sig).map_err(|_| script("bad signature"))?;
        SECP256K1
            .verify_schnorr(&sig, &Message::from_digest(sighash.to_byte_array()), &key)
            .map_err(|_| script("signature does not verify"))?;
    }
    Ok(fee)
}

impl RegtestChain {
    /// Adds `tx` to the mempool after checking it against the tip and the mempool
    /// (at most [`MAX_MEMPOOL`] transactions wait).
    pub fn submit(&mut self, tx: Transaction) -> Result<(), RegtestError> {
        if self.mempool.len() >= MAX_MEMPOOL {
            return Err(RegtestError::MempoolFull);
        }
        self.pending_utxos().check(&tx)?;
        self.mempool.push(tx);
        Ok(())
    }

    /// Transactions waiting for a block.
    pub fn mempool(&self) -> &[Transaction] {
        &self.mempool
    }

    /// Mines a block of the mempool paying its reward to `reward`, at `time`.
    pub fn mine(&mut self, reward: &ScriptBuf, time: u32) -> BlockHash {
        let height = self.height().saturating_add(1);
        let mut utxos = self.utxos.clone();
        let mut txs = Vec::new();
        let mut fees = Amount::ZERO;
        for tx in std::mem::take(&mut self.mempool) {
            let Ok(fee) = check_tx(&tx, &utxos, height) else {
                continue;
            };
            // Fees of valid transactions are each in the money range; a sum past it
            // leaves the transaction for a later block.
            let Some(with) = fees.checked_add(fee).filter(|f| *f <= Amount::MAX_MONEY) else {
                continue;
            };
            fees = with;
            apply(&mut utxos, &tx, height);
            txs.push(tx);
        }
        let reward_value = subsidy(height).checked_add(fees).unwrap_or(subsidy(height));
        let mut txdata = vec![coinbase(height, reward, reward_value)];
        txdata.extend(txs);
        let block = seal(self.tip(), txdata, time);
        let hash = block.block_hash();
        self.connect(block);
        hash
    }

    /// Checks `block` as the next block on `base` (a copy of the chain at its parent).
    fn check_block(base: &RegtestChain, block: &Block) -> Result<(), RegtestError> {
        let invalid = |r: &str| RegtestError::InvalidBlock(r.to_owned());
        if block.header.prev_blockhash != base.tip() {
            return Err(RegtestError::UnknownParent);
        }
        block
            .header
            .validate_pow(regtest_target().into())
            .map_err(|_| invalid("proof of work"))?;
        if !block.check_merkle_root() {
            return Err(invalid("merkle root"));
        }
        let height = base.height().saturating_add(1);
        let mut utxos = base.utxos.clone();
        let mut fees = Amount::ZERO;
        let (coinbase, rest) = block
            .txdata
            .split_first()
            .ok_or_else(|| invalid("no coinbase"))?;
        if !coinbase.is_coinbase() {
            return Err(invalid("first transaction is not a coinbase"));
        }
        let claimed = check_sanity(coinbase, true).map_err(RegtestError::Malformed)?;
        for tx in rest {
            if tx.is_coinbase() {
                return Err(invalid("a second coinbase"));
            }
            let fee = check_tx(tx, &utxos, height)?;
            fees = fees
                .checked_add(fee)
                .filter(|f| *f <= Amount::MAX_MONEY)
                .ok_or_else(|| invalid("fees past the money range"))?;
            apply(&mut utxos, tx, height);
        }
        let allowed = subsidy(height)
            .checked_add(fees)
            .ok_or_else(|| invalid("fees past the money range"))?;
        if claimed > allowed {
            return Err(invalid("coinbase claims too much"));
        }
        Ok(())
    }

    /// A block from elsewhere that extends the tip.
    pub fn accept(&mut self, block: Block) -> Result<(), RegtestError> {
        RegtestChain::check_block(self, &block)?;
        self.connect(block);
        Ok(())
    }

    /// Replaces the blocks above `fork_height` with `branch` if the branch ends higher
    /// than the tip (every block has the same regtest work). Transactions of the
    /// dropped blocks that the new branch does not hold go back to the mempool.
    /// Returns the dropped blocks.
    pub fn reorg(
        &mut self,
        fork_height: u64,
        branch: Vec<Block>,
    ) -> Result<Vec<Block>, RegtestError> {
        let branch_len = u64::try_from(branch.len()).unwrap_or(u64::MAX);
        if fork_height.saturating_add(branch_len) <= self.height() {
            return Err(RegtestError::NotLonger);
        }
        let mut candidate = self.rewound(fork_height);
        for block in &branch {
            RegtestChain::check_block(&candidate, block)?;
            candidate.connect(block.clone());
        }
        let keep = usize::try_from(fork_height)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .min(self.blocks.len());
        let dropped: Vec<Block> = self.blocks.split_off(keep);
        let kept: BTreeSet<_> = branch
            .iter()
            .flat_map(|b| b.txdata.iter().map(Transaction::compute_txid))
            .collect();
        let mut mempool: Vec<Transaction> = dropped
            .iter()
            .flat_map(|b| b.txdata.iter().skip(1).cloned())
            .filter(|tx| !kept.contains(&tx.compute_txid()))
            .collect();
        mempool.extend(std::mem::take(&mut self.mempool));
        *self = candidate;
        for tx in mempool {
            let _ = self.submit(tx);
        }
        Ok(dropped)
    }

    /// This chain as it was at `height`.
    fn rewound(&self, height: u64) -> RegtestChain {
        let mut chain = RegtestChain {
            blocks: Vec::new(),
            heights: HashMap::new(),
            utxos: BTreeMap::new(),
            outputs: HashMap::new(),
            mempool: Vec::new(),
        };
        let keep = usize::try_from(height)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        for block in self.blocks.iter().take(keep) {
            chain.connect(block.clone());
        }
        chain
    }
}

fn apply(utxos: &mut BTreeMap<OutPoint, (TxOut, Coin)>, tx: &Transaction, height: u64) {
    for input in &tx.input {
        utxos.remove(&input.previous_output);
    }
    let txid = tx.compute_txid();
    for (out_index, out) in tx.output.iter().enumerate() {
        if !out.script_pubkey.is_op_return() {
            let coin = Coin {
                height,
                coinbase: false,
            };
            utxos.insert(OutPoint::new(txid, out_index as u32), (out.clone(), coin));
        }
    }
}

/// The coinbase of the block at `height` paying `value` to `reward` (the height is in
/// its script, as BIP34 asks).
pub fn coinbase(height: u64, reward: &ScriptBuf, value: Amount) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: bitcoin::script::Builder::new()
                .push_int(height as i64)
                .push_opcode(bitcoin::opcodes::OP_TRUE)
                .into_script(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value,
            script_pubkey: reward.clone(),
        }],
    }
}

/// Regtest's block subsidy: 50 BTC halving every 150 blocks.
pub fn subsidy(height: u64) -> Amount {
    let halvings = height / 150;
    if halvings >= 64 {
        Amount::ZERO
    } else {
        Amount::from_sat((50 * 100_000_000) >> halvings)
    }
}

fn regtest_target() -> CompactTarget {
    CompactTarget::from_consensus(0x207f_ffff)
}

/// A block of `txdata` on `prev`, with its proof of work found.
pub fn seal(prev: BlockHash, txdata: Vec<Transaction>, time: u32) -> Block {
    let mut block = Block {
        header: Header {
            version: BlockVersion::TWO,
            prev_blockhash: prev,
            merkle_root: TxMerkleNode::all_zeros(),
            time,
            bits: regtest_target(),
            nonce: 0,
        },
        txdata,
    };
    block.header.merkle_root = block
        .compute_merkle_root()
        .unwrap_or(TxMerkleNode::all_zeros());
    // Regtest's target is half of all hashes: a few tries at most.
    while block.header.validate_pow(regtest_target().into()).is_err() {
        block.header.nonce = block.header.nonce.wrapping_add(1);
    }
    block
}

impl BurnchainSource for RegtestChain {
    fn tip_height(&self) -> Result<u64, BurnchainError> {
        Ok(self.height())
    }

    fn block_hash(&self, height: u64) -> Result<BlockHash, BurnchainError> {
        self.block_at(height)
            .map(Block::block_hash)
            .ok_or_else(|| BurnchainError::Malformed {
                method: "block_hash".into(),
                reason: format!("no block at height {height}"),
            })
    }

    fn block(&self, hash: &BlockHash) -> Result<Block, BurnchainError> {
        self.height_of(hash)
            .and_then(|h| self.block_at(h))
            .cloned()
            .ok_or_else(|| BurnchainError::Malformed {
                method: "block".into(),
                reason: format!("no block {hash}"),
            })
    }
}

/// A key-path taproot wallet for one key: the testnet's producers pay enrollments
/// from it.
pub struct Wallet {
    keypair: Keypair,
}

impl Wallet {
    /// A wallet for `keypair`.
    pub fn new(keypair: Keypair) -> Wallet {
        Wallet { keypair }
    }

    /// Its output script (key-path taproot, no script tree).
    pub fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2tr(SECP256K1, self.keypair.x_only_public_key().0, None)
    }

    /// Spendable balance on `chain`.
    pub fn balance(&self, chain: &RegtestChain) -> Amount {
        chain
            .utxos_of(&self.script())
            .iter()
            .fold(Amount::ZERO, |sum, (_, o)| {
                sum.checked_add(o.value).unwrap_or(Amount::MAX_MONEY)
            })
    }

    /// A signed transaction paying `outputs` plus `fee`, change back to the wallet.
    /// `None` when the balance is short.
    pub fn pay(
        &self,
        chain: &RegtestChain,
        outputs: Vec<TxOut>,
        fee: Amount,
    ) -> Option<Transaction> {
        let needed = outputs
            .iter()
            .try_fold(fee, |sum, o| sum.checked_add(o.value))?;
        let mut chosen = Vec::new();
        let mut total = Amount::ZERO;
        for (op, out) in chain.utxos_of(&self.script()) {
            if total >= needed {
                break;
            }
            total = total.checked_add(out.value)?;
            chosen.push((op, out));
        }
        if total < needed {
            return None;
        }
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: chosen
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        let change = total.checked_sub(needed)?;
        if change > Amount::ZERO {
            tx.output.push(TxOut {
                value: change,
                script_pubkey: self.script(),
            });
        }
        let prevouts: Vec<TxOut> = chosen.into_iter().map(|(_, o)| o).collect();
        self.sign(&mut tx, &prevouts)?;
        Some(tx)
    }

    /// Signs every input of `tx` (key-path, default sighash), spending `prevouts`,
    /// which must all be this wallet's. `None` when a sighash cannot be made.
    pub fn sign(&self, tx: &mut Transaction, prevouts: &[TxOut]) -> Option<()> {
        let tweaked = self.keypair.tap_tweak(SECP256K1, None).to_keypair();
        let mut signatures = Vec::new();
        {
            let mut cache = SighashCache::new(&*tx);
            for index in 0..tx.input.len() {
                let sighash = cache
                    .taproot_key_spend_signature_hash(
                        index,
                        &Prevouts::All(prevouts),
                        TapSighashType::Default,
                    )
                    .ok()?;
                let sig = SECP256K1
                    .sign_schnorr(&Message::from_digest(sighash.to_byte_array()), &tweaked);
                signatures.push(sig);
            }
        }
        for (input, sig) in tx.input.iter_mut().zip(signatures) {
            input.witness = Witness::from_slice(&[sig.as_ref()]);
        }
        Some(())
    }
}
