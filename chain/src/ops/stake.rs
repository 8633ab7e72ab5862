//! Stakes on the burnchain: how proof-of-mainstake's tickets are found in Bitcoin
//! blocks (seed 003).
//!
//! Bitcoin has no `OP_STAKEVERIFY`, so a stake is an output Bitcoin itself keeps
//! locked: a taproot output whose only spending path is the script
//! `<lock height> OP_CHECKLOCKTIMEVERIFY OP_DROP <owner> OP_CHECKSIG`, under the
//! BIP341 "nothing up my sleeve" internal key, so no key path exists. Consensus
//! refuses any spend before the lock height; after it, the owner takes the coins back
//! ([`reclaim`]).
//!
//! A stake is registered by the transaction that creates it: output 0 is an
//! `OP_RETURN` (magic, `S`, lock height, owner key) and output 1 the locked output.
//! [`Stakes`] scans burn blocks: a registration whose output is not exactly the lock
//! script of its own lock height and owner is ignored with a reason, since
//! otherwise anyone could claim lottery weight for coins they can spend at will.

use std::collections::BTreeMap;

use bitcoin::{
    Amount, Block, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
    XOnlyPublicKey,
    absolute::LockTime,
    hashes::Hash,
    key::Keypair,
    opcodes::all::{OP_CHECKSIG, OP_CLTV, OP_DROP},
    script::{Builder, PushBytesBuf},
    secp256k1::{Message, SECP256K1},
    sighash::{Prevouts, SighashCache, TapSighashType},
    taproot::{LeafVersion, TapLeafHash, TaprootBuilder, TaprootSpendInfo},
    transaction::Version,
};

use crate::{
    mainstake::Ticket,
    ops::{enrollment::Magic, op_return},
};

/// The stake registration's operation byte.
pub const OP_STAKE: u8 = b'S';

/// Bytes of a registration: magic, op, lock height, owner key.
pub const REGISTRATION_BYTES: usize = 2 + 1 + 8 + 32;

/// `OP_CHECKLOCKTIMEVERIFY` reads values below this as block heights.
pub const LOCK_HEIGHT_LIMIT: u64 = 500_000_000;

/// BIP341's provably unspendable internal key: lift_x(SHA256 of the generator).
const UNSPENDABLE_KEY: [u8; 32] = [
    0x50, 0x92, 0x9b, 0x74, 0xc1, 0xa0, 0x49, 0x54, 0xb7, 0x8b, 0x4b, 0x60, 0x35, 0xe9, 0x7a, 0x5e,
    0x07, 0x8a, 0x5a, 0x0f, 0x28, 0xec, 0x96, 0xd5, 0x47, 0xbf, 0xee, 0x9a, 0xce, 0x80, 0x3a, 0xc0,
];

/// Why a stake registration was ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StakeError {
    /// The owner key is not a valid x-only key.
    #[error("the owner key is not a valid x-only key")]
    OwnerKey,
    /// The lock height is 0 or not a block height for `OP_CHECKLOCKTIMEVERIFY`.
    #[error("lock height {0} is not a block height CLTV accepts")]
    LockHeight(u64),
    /// No output 1.
    #[error("no staked output")]
    MissingOutput,
    /// Output 1 is not locked by the registered script.
    #[error("output 1 is not locked until the registered height by the owner's script")]
    NotLocked,
    /// Output 1 holds nothing.
    #[error("the staked output holds nothing")]
    Empty,
}

/// The leaf script that locks a stake until `lock_height`, then pays `owner`.
pub fn lock_script(owner: &XOnlyPublicKey, lock_height: u64) -> ScriptBuf {
    Builder::new()
        .push_int(i64::try_from(lock_height).unwrap_or(i64::MAX))
        .push_opcode(OP_CLTV)
        .push_opcode(OP_DROP)
        .push_x_only_key(owner)
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

fn spend_info(owner: &XOnlyPublicKey, lock_height: u64) -> Option<TaprootSpendInfo> {
    let internal = XOnlyPublicKey::from_slice(&UNSPENDABLE_KEY).ok()?;
    TaprootBuilder::new()
        .add_leaf(0, lock_script(owner, lock_height))
        .ok()?
        .finalize(SECP256K1, internal)
        .ok()
}

fn check_lock_height(lock_height: u64) -> Result<(), StakeError> {
    if lock_height == 0 || lock_height >= LOCK_HEIGHT_LIMIT {
        return Err(StakeError::LockHeight(lock_height));
    }
    Ok(())
}

/// The outputs that stake `value` until `lock_height` for `owner`: the registration
/// `OP_RETURN` and the locked output, in that order.
pub fn stake_outputs(
    owner: &XOnlyPublicKey,
    lock_height: u64,
    value: Amount,
    magic: Magic,
) -> Result<[TxOut; 2], StakeError> {
    check_lock_height(lock_height)?;
    let info = spend_info(owner, lock_height).ok_or(StakeError::OwnerKey)?;
    let mut data = Vec::with_capacity(REGISTRATION_BYTES);
    data.extend_from_slice(&magic.bytes());
    data.push(OP_STAKE);
    data.extend_from_slice(&lock_height.to_be_bytes());
    data.extend_from_slice(&owner.serialize());
    Ok([
        TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(
                PushBytesBuf::try_from(data).unwrap_or_default(),
            ),
        },
        TxOut {
            value,
            script_pubkey: ScriptBuf::new_p2tr_tweaked(info.output_key()),
        },
    ])
}

/// Reads a stake registration from `tx`: `None` if it is none, the reason if it is
/// malformed, else the ticket.
pub fn parse(tx: &Transaction, magic: Magic) -> Option<Result<Ticket, StakeError>> {
    let payload = op_return::operation(tx, magic, OP_STAKE, REGISTRATION_BYTES)?;
    let (lock, owner) = payload.split_first_chunk::<8>()?;
    Some(ticket(tx, u64::from_be_bytes(*lock), owner))
}

fn ticket(tx: &Transaction, lock_height: u64, owner: &[u8]) -> Result<Ticket, StakeError> {
    let owner = XOnlyPublicKey::from_slice(owner).map_err(|_| StakeError::OwnerKey)?;
    check_lock_height(lock_height)?;
    let staked = tx.output.get(1).ok_or(StakeError::MissingOutput)?;
    let info = spend_info(&owner, lock_height).ok_or(StakeError::OwnerKey)?;
    if staked.script_pubkey != ScriptBuf::new_p2tr_tweaked(info.output_key()) {
        return Err(StakeError::NotLocked);
    }
    if staked.value == Amount::ZERO {
        return Err(StakeError::Empty);
    }
    Ok(Ticket {
        outpoint: OutPoint::new(tx.compute_txid(), 1),
        value: staked.value.to_sat(),
        lock_height,
        owner,
    })
}

/// The live stakes, read from the burn blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stakes {
    tickets: BTreeMap<OutPoint, Ticket>,
}

impl Stakes {
    /// Reads `blocks` (the best chain, in order). Each ignored registration is
    /// reported to `ignored` with its transaction and reason.
    pub fn scan<'a>(
        blocks: impl IntoIterator<Item = &'a Block>,
        magic: Magic,
        mut ignored: impl FnMut(&Transaction, StakeError),
    ) -> Stakes {
        let mut stakes = Stakes::default();
        for block in blocks {
            for tx in &block.txdata {
                for input in &tx.input {
                    stakes.tickets.remove(&input.previous_output);
                }
                match parse(tx, magic) {
                    Some(Ok(ticket)) => {
                        stakes.tickets.insert(ticket.outpoint, ticket);
                    }
                    Some(Err(reason)) => ignored(tx, reason),
                    None => {}
                }
            }
        }
        stakes
    }

    /// The unspent stakes, in outpoint order (what [`crate::mainstake::winner`] draws
    /// from; a stake past its lock has no weight).
    pub fn tickets(&self) -> Vec<Ticket> {
        self.tickets.values().cloned().collect()
    }
}

/// A transaction that takes a stake back: it spends `ticket` by its script path,
/// signed by `owner`, paying all but `fee` to `to`, with lock time `lock_time` (a
/// block height). Bitcoin accepts it only with a lock time of at least the ticket's
/// lock height, and only in a block at least that high.
pub fn reclaim(
    ticket: &Ticket,
    owner: &Keypair,
    to: ScriptBuf,
    fee: Amount,
    lock_time: u32,
) -> Option<Transaction> {
    let script = lock_script(&ticket.owner, ticket.lock_height);
    let info = spend_info(&ticket.owner, ticket.lock_height)?;
    let control = info.control_block(&(script.clone(), LeafVersion::TapScript))?;
    let prevout = TxOut {
        value: Amount::from_sat(ticket.value),
        script_pubkey: ScriptBuf::new_p2tr_tweaked(info.output_key()),
    };
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::from_height(lock_time).ok()?,
        input: vec![TxIn {
            previous_output: ticket.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: prevout.value.checked_sub(fee)?,
            script_pubkey: to,
        }],
    };
    let leaf = TapLeafHash::from_script(&script, LeafVersion::TapScript);
    let sighash = SighashCache::new(&tx)
        .taproot_script_spend_signature_hash(
            0,
            &Prevouts::All(&[prevout]),
            leaf,
            TapSighashType::Default,
        )
        .ok()?;
    let sig = SECP256K1.sign_schnorr(&Message::from_digest(sighash.to_byte_array()), owner);
    let mut witness = Witness::new();
    witness.push(sig.as_ref());
    witness.push(script.as_bytes());
    witness.push(control.serialize());
    if let Some(input) = tx.input.first_mut() {
        input.witness = witness;
    }
    Some(tx)
}
