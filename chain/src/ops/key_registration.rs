//! Leader VRF key registrations (SIP-001, which the enrollment SIP refers to): the
//! transaction a would-be producer mines before it enrolls.
//!
//! ```text
//!   0      2  3              23                   55                        80
//!   |------|--|---------------|--------------------|-------------------------|
//!    magic  op consensus hash  proving public key             memo
//! ```
//!
//! `op = ^`. Output 0 is that `OP_RETURN`; output 1 names the producer: an enrollment
//! is accepted only if its first input spends an output paying that same script,
//! found at the registration's `(key_block, key_txoff)`. So whoever controls the
//! registration's address, and only they, can enroll with its key.

use std::collections::BTreeMap;

use bitcoin::{Amount, Block, ScriptBuf, Transaction, TxOut, script::PushBytesBuf};

use crate::{
    ops::enrollment::{EnrollmentData, Magic},
    ops::op_return,
};

/// The key registration's operation byte.
pub const OP_KEY_REGISTRATION: u8 = b'^';

/// Bytes of the registration data.
pub const KEY_REGISTRATION_BYTES: usize = 80;

/// Bytes of its memo.
pub const MEMO_BYTES: usize = 25;

/// A leader VRF key registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRegistration {
    /// The consensus hash of the burn view it was made in.
    pub consensus_hash: [u8; 20],
    /// The VRF proving key (an Ed25519 point, as SIP-001 defines it).
    pub proving_key: [u8; 32],
    /// Free bytes.
    pub memo: [u8; MEMO_BYTES],
    /// Its output 1: the script an enrollment's first input must spend from.
    pub owner: ScriptBuf,
}

/// Why a key registration, or an enrollment's reference to one, is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRegistrationError {
    /// No output 1 naming the owner.
    #[error("no owner output")]
    MissingOwner,
    /// The enrollment names no registration that the burnchain holds.
    #[error("no key registration at burn block {block}, offset {txoff}")]
    Unknown {
        /// The enrollment's `key_block`.
        block: u32,
        /// The enrollment's `key_txoff`.
        txoff: u16,
    },
    /// The enrollment's first input does not come from the registration's owner.
    #[error("the enrollment is not funded by the key registration's owner")]
    NotOwner,
    /// The enrollment has no inputs.
    #[error("the enrollment spends nothing")]
    NoInput,
}

impl KeyRegistration {
    /// The registration's outputs: the `OP_RETURN`, then `dust` to the owner's script.
    pub fn outputs(&self, magic: Magic, dust: Amount) -> [TxOut; 2] {
        let mut data = Vec::with_capacity(KEY_REGISTRATION_BYTES);
        data.extend_from_slice(&magic.bytes());
        data.push(OP_KEY_REGISTRATION);
        data.extend_from_slice(&self.consensus_hash);
        data.extend_from_slice(&self.proving_key);
        data.extend_from_slice(&self.memo);
        [
            TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_op_return(
                    PushBytesBuf::try_from(data).unwrap_or_default(),
                ),
            },
            TxOut {
                value: dust,
                script_pubkey: self.owner.clone(),
            },
        ]
    }

    /// Reads a registration from `tx`: `None` if it is none, the reason if it is
    /// malformed.
    pub fn parse(
        tx: &Transaction,
        magic: Magic,
    ) -> Option<Result<KeyRegistration, KeyRegistrationError>> {
        let payload = op_return::operation(tx, magic, OP_KEY_REGISTRATION, KEY_REGISTRATION_BYTES)?;
        let (consensus_hash, rest) = payload.split_first_chunk::<20>()?;
        let (proving_key, memo) = rest.split_first_chunk::<32>()?;
        let memo: [u8; MEMO_BYTES] = memo.try_into().ok()?;
        Some(match tx.output.get(1) {
            Some(owner) => Ok(KeyRegistration {
                consensus_hash: *consensus_hash,
                proving_key: *proving_key,
                memo,
                owner: owner.script_pubkey.clone(),
            }),
            None => Err(KeyRegistrationError::MissingOwner),
        })
    }
}

/// The key registrations on the burnchain, by (burn height, offset in the block).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRegistrations {
    by_position: BTreeMap<(u32, u16), KeyRegistration>,
}

impl KeyRegistrations {
    /// Records the registrations of `block` at `height`; each malformed one goes to
    /// `ignored` with its offset and reason.
    pub fn scan_block(
        &mut self,
        block: &Block,
        height: u32,
        magic: Magic,
        mut ignored: impl FnMut(u16, KeyRegistrationError),
    ) {
        for (offset, tx) in block.txdata.iter().enumerate() {
            let Ok(offset) = u16::try_from(offset) else {
                break;
            };
            match KeyRegistration::parse(tx, magic) {
                Some(Ok(registration)) => {
                    self.by_position.insert((height, offset), registration);
                }
                Some(Err(reason)) => ignored(offset, reason),
                None => {}
            }
        }
    }

    /// Forgets the registrations at `height` and above (a burnchain reorg).
    pub fn rewind(&mut self, height: u32) {
        self.by_position.retain(|(h, _), _| *h < height);
    }

    /// The position `(block, txoff)` of the latest registration owned by `owner`.
    pub fn find_owner(&self, owner: &ScriptBuf) -> Option<(u32, u16)> {
        self.by_position
            .iter()
            .rev()
            .find(|(_, r)| r.owner == *owner)
            .map(|(position, _)| *position)
    }

    /// The registration at `(block, txoff)`.
    pub fn get(&self, block: u32, txoff: u16) -> Option<&KeyRegistration> {
        self.by_position.get(&(block, txoff))
    }

    /// Checks that `enrollment` (the data of `tx`) names a registration the
    /// burnchain holds and that its first input spends from that registration's
    /// owner; `first_prevout` is the output that input spends.
    pub fn check_enrollment(
        &self,
        tx: &Transaction,
        enrollment: &EnrollmentData,
        first_prevout: &TxOut,
    ) -> Result<&KeyRegistration, KeyRegistrationError> {
        let registration = self.get(enrollment.key_block, enrollment.key_txoff).ok_or(
            KeyRegistrationError::Unknown {
                block: enrollment.key_block,
                txoff: enrollment.key_txoff,
            },
        )?;
        if tx.input.is_empty() {
            return Err(KeyRegistrationError::NoInput);
        }
        if first_prevout.script_pubkey != registration.owner {
            return Err(KeyRegistrationError::NotOwner);
        }
        Ok(registration)
    }
}
