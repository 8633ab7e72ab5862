//! Announcing the chain on Bitcoin (seed 001 "Block Signing and Announcement"; seed
//! 000: announcements make blocks final; DESIGN "Finality"), sans-IO: the
//! transaction, the digest the group signs, and what each member checks first.
//!
//! The rules:
//!
//! 1. **The term UTXO** pays the term's group key by key path: the P2TR output whose
//!    output key is the key blocks are signed under ([`term_script`]). Anyone may pay
//!    it; the first one mined before the term starts counts
//!    ([`super::burn_scan::BurnScan::term_utxo`]).
//! 2. **An announcement** spends the term's current UTXO, its only input, into
//!    exactly two outputs: the `OP_RETURN` committing to (term, height, block hash)
//!    ([`Announcement`]) and the next term UTXO, paying the same script, less a fee of
//!    at most [`MAX_FEE`] ([`unsigned`]).
//! 3. **The group signs the BIP341 key-path sighash** (`SIGHASH_DEFAULT`, which
//!    commits to the spent output's amount and script) with the term's FROST key; the
//!    signature alone is the witness ([`with_signature`]).
//! 4. **A member approves an announcement only if** it has the shape of rule 2 for
//!    its current term and its group's script, and it holds the announced block
//!    ([`check`]): the group never commits on Bitcoin to a block its members have not
//!    validated, and a member can lose the group at most [`MAX_FEE`] per signature.
//!
//! Decision: the leader announces its tip at most once per burn block, and only a tip
//! higher than the last it announced.

use bitcoin::{
    Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
    absolute::LockTime,
    consensus,
    hashes::Hash as _,
    key::TweakedPublicKey,
    secp256k1::XOnlyPublicKey,
    sighash::{Prevouts, SighashCache},
    transaction::Version,
};

use crate::{
    block::Hash,
    ops::{announce::Announcement, enrollment::Magic},
};

/// The fee an announcement pays.
pub const FEE: Amount = Amount::from_sat(1_000);

/// The most fee a member lets an announcement pay.
pub const MAX_FEE: Amount = Amount::from_sat(10_000);

/// The value a term UTXO is funded with in the testnet: enough for many
/// announcements.
pub const TERM_UTXO_VALUE: Amount = Amount::from_sat(1_000_000);

/// Why a member refuses to sign an announcement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementRefusal {
    /// The transaction or output does not decode.
    #[error("undecodable announcement")]
    Undecodable,
    /// Not one input spending the group's output into exactly two outputs.
    #[error("an announcement spends one group output into two outputs")]
    Shape,
    /// The spent output or the change does not pay the group's script.
    #[error("the announcement does not keep the term UTXO with the group")]
    NotTheGroup,
    /// The first output is not an announcement of this term.
    #[error("not an announcement of term {0}")]
    WrongTerm(u64),
    /// The fee is above [`MAX_FEE`], or the change exceeds what is spent.
    #[error("fee out of bounds")]
    Fee,
    /// The announced block is not one this member holds.
    #[error("block {height} is not held here")]
    NotHeld {
        /// The announced height.
        height: u64,
    },
    /// This member knows no term script to check against.
    #[error("no term to announce for")]
    NoTerm,
}

/// The term UTXO's script for a group whose signatures verify under `output_key`.
pub fn term_script(output_key: &XOnlyPublicKey) -> ScriptBuf {
    ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(*output_key))
}

/// The unsigned announcement of `announcement` spending `utxo` (which holds
/// `prevout`). `None` if the UTXO cannot pay [`FEE`].
pub fn unsigned(
    announcement: &Announcement,
    utxo: OutPoint,
    prevout: &TxOut,
    magic: Magic,
) -> Option<Transaction> {
    let change = prevout.value.checked_sub(FEE)?;
    Some(Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: utxo,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![
            announcement.op_return(magic),
            TxOut {
                value: change,
                script_pubkey: prevout.script_pubkey.clone(),
            },
        ],
    })
}

/// The digest the group signs: the key-path sighash of `tx`'s only input, spending
/// `prevout`. `None` if it cannot be computed.
pub fn sighash(tx: &Transaction, prevout: &TxOut) -> Option<Hash> {
    let mut cache = SighashCache::new(tx);
    cache
        .taproot_key_spend_signature_hash(
            0,
            &Prevouts::All(std::slice::from_ref(prevout)),
            bitcoin::TapSighashType::Default,
        )
        .ok()
        .map(|h| h.to_byte_array())
}

/// `tx` with the group's BIP340 `signature` as its input's witness.
pub fn with_signature(mut tx: Transaction, signature: &[u8; 64]) -> Transaction {
    for input in &mut tx.input {
        input.witness = Witness::from_slice(&[signature.as_slice()]);
    }
    tx
}

/// An announcement as the federation is asked to sign it: the transaction and the
/// output it spends, consensus-encoded.
pub fn decode(tx: &[u8], prevout: &[u8]) -> Result<(Transaction, TxOut), AnnouncementRefusal> {
    let tx: Transaction =
        consensus::deserialize(tx).map_err(|_| AnnouncementRefusal::Undecodable)?;
    let prevout: TxOut =
        consensus::deserialize(prevout).map_err(|_| AnnouncementRefusal::Undecodable)?;
    Ok((tx, prevout))
}

/// Checks an announcement before signing it (rule 4): for `term`, whose UTXO pays
/// `script`, a block `holds` says this member has. Returns the digest to sign.
pub fn check(
    tx: &Transaction,
    prevout: &TxOut,
    term: u64,
    script: &ScriptBuf,
    magic: Magic,
    holds: impl Fn(u64, &Hash) -> bool,
) -> Result<Hash, AnnouncementRefusal> {
    let [input] = tx.input.as_slice() else {
        return Err(AnnouncementRefusal::Shape);
    };
    let [_, change] = tx.output.as_slice() else {
        return Err(AnnouncementRefusal::Shape);
    };
    if prevout.script_pubkey != *script || change.script_pubkey != *script {
        return Err(AnnouncementRefusal::NotTheGroup);
    }
    let (announcement, _) = Announcement::parse(tx, &input.previous_output, magic)
        .ok_or(AnnouncementRefusal::WrongTerm(term))?;
    if announcement.term != term {
        return Err(AnnouncementRefusal::WrongTerm(term));
    }
    let fee = prevout
        .value
        .checked_sub(change.value)
        .ok_or(AnnouncementRefusal::Fee)?;
    if fee > MAX_FEE {
        return Err(AnnouncementRefusal::Fee);
    }
    if !holds(announcement.height, &announcement.block) {
        return Err(AnnouncementRefusal::NotHeld {
            height: announcement.height,
        });
    }
    sighash(tx, prevout).ok_or(AnnouncementRefusal::Undecodable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{
        Txid,
        secp256k1::{Keypair, SECP256K1, SecretKey},
    };

    fn script() -> ScriptBuf {
        let key = Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[3; 32]).unwrap());
        term_script(&key.x_only_public_key().0)
    }

    fn prevout() -> TxOut {
        TxOut {
            value: Amount::from_sat(50_000),
            script_pubkey: script(),
        }
    }

    fn announcement() -> Announcement {
        Announcement {
            term: 4,
            height: 9,
            block: [9; 32],
        }
    }

    fn tx() -> Transaction {
        unsigned(
            &announcement(),
            OutPoint::new(Txid::all_zeros(), 0),
            &prevout(),
            Magic::Regtest,
        )
        .unwrap()
    }

    fn checked(tx: &Transaction, prevout: &TxOut) -> Result<Hash, AnnouncementRefusal> {
        check(tx, prevout, 4, &script(), Magic::Regtest, |h, b| {
            h == 9 && *b == [9; 32]
        })
    }

    #[test]
    fn a_well_formed_announcement_of_a_held_block_is_approved() {
        assert_eq!(
            checked(&tx(), &prevout()),
            Ok(sighash(&tx(), &prevout()).unwrap())
        );
    }

    #[test]
    fn an_announcement_that_moves_funds_or_names_an_unheld_block_is_refused() {
        let mut theft = tx();
        theft.output[1].script_pubkey = ScriptBuf::new_op_return([]);
        assert_eq!(
            checked(&theft, &prevout()),
            Err(AnnouncementRefusal::NotTheGroup)
        );

        let mut greedy = tx();
        greedy.output[1].value = Amount::from_sat(30_000);
        assert_eq!(checked(&greedy, &prevout()), Err(AnnouncementRefusal::Fee));

        let mut inflated = tx();
        inflated.output[1].value = Amount::from_sat(60_000);
        assert_eq!(
            checked(&inflated, &prevout()),
            Err(AnnouncementRefusal::Fee)
        );

        let mut extra = tx();
        extra.output.push(prevout());
        assert_eq!(checked(&extra, &prevout()), Err(AnnouncementRefusal::Shape));

        let announcing = |announcement: Announcement| {
            unsigned(
                &announcement,
                OutPoint::new(Txid::all_zeros(), 0),
                &prevout(),
                Magic::Regtest,
            )
            .unwrap()
        };
        let unheld = announcing(Announcement {
            block: [8; 32],
            ..announcement()
        });
        assert_eq!(
            checked(&unheld, &prevout()),
            Err(AnnouncementRefusal::NotHeld { height: 9 })
        );
        let other_term = announcing(Announcement {
            term: 5,
            ..announcement()
        });
        assert_eq!(
            checked(&other_term, &prevout()),
            Err(AnnouncementRefusal::WrongTerm(4))
        );
        assert_eq!(
            decode(&[1, 2, 3], &[4]),
            Err(AnnouncementRefusal::Undecodable)
        );
    }
}
