//! A producer's side of enrolling on the embedded regtest burnchain, sans-IO: what it
//! submits, block after block, to produce every term (SIP "Producer Set
//! Selection"; the key registration of SIP-001 that an enrollment names).
//!
//! 1. Once its wallet can pay, it registers its key, and registers again if the
//!    registration has not been mined [`RESUBMIT_AFTER`] blocks later.
//! 2. In every term E from 1 on, once its registration is mined, it enrolls for term
//!    E + 2 with its spend, naming the first burn block of term E − 1 in `set_block`
//!    (the term rule of [`crate::ops::enrollment::check_term`]), and enrolls again if
//!    the scan has not found the enrollment [`RESUBMIT_AFTER`] blocks later.
//!
//! 3. Asked to fund a term's UTXO ([`Enroller::fund_term`]; anyone may, seed 000),
//!    it pays the term's script before the term starts, again if the scan has not
//!    found the output [`RESUBMIT_AFTER`] blocks later, and never once the term
//!    started.
//!
//! One transaction is outstanding at a time, so the wallet never spends an output
//! twice. Decision: `state_root` is zero until announcements carry state roots
//! the scan can compare it with.

use std::collections::BTreeMap;

use bitcoin::{Amount, ScriptBuf, Transaction, TxOut, secp256k1::Keypair};

use super::burn_scan::BurnScan;
use crate::{
    burnchain::regtest::{RegtestChain, Wallet},
    ops::{
        enrollment::{EnrollmentData, Magic, burn_output},
        key_registration::KeyRegistration,
    },
};

/// Burn blocks after which a transaction not yet seen is submitted again.
pub const RESUBMIT_AFTER: u64 = 3;

/// The fee of each registration and enrollment.
pub const FEE: Amount = Amount::from_sat(1_000);

/// The value of a registration's owner output.
pub const DUST: Amount = Amount::from_sat(1_000);

/// One producer enrolling term after term.
pub struct Enroller {
    keypair: Keypair,
    wallet: Wallet,
    spend: Box<dyn Fn(u64) -> Amount + Send + Sync>,
    magic: Magic,
    /// (what, burn height it was submitted at) of the transaction outstanding.
    outstanding: Option<(Pending, u64)>,
    /// Term UTXOs to fund: the term, its script and value.
    funding: BTreeMap<u64, TxOut>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Registration,
    Enrollment(u64),
    Funding(u64),
}

impl Enroller {
    /// A producer with `keypair` (its signing key and its wallet's) spending `spend`
    /// on each enrollment.
    pub fn new(keypair: Keypair, spend: Amount, magic: Magic) -> Enroller {
        Enroller::with_spends(keypair, move |_| spend, magic)
    }

    /// A producer whose enrollment in term E spends `spend(E)`.
    pub fn with_spends(
        keypair: Keypair,
        spend: impl Fn(u64) -> Amount + Send + Sync + 'static,
        magic: Magic,
    ) -> Enroller {
        Enroller {
            keypair,
            wallet: Wallet::new(keypair),
            spend: Box::new(spend),
            magic,
            outstanding: None,
            funding: BTreeMap::new(),
        }
    }

    /// Pays `value` to `script`, term `term`'s UTXO, before the term starts.
    pub fn fund_term(&mut self, term: u64, script: ScriptBuf, value: Amount) {
        self.funding.insert(
            term,
            TxOut {
                value,
                script_pubkey: script,
            },
        );
    }

    /// The wallet's script: where its funds must be paid.
    pub fn script(&self) -> bitcoin::ScriptBuf {
        self.wallet.script()
    }

    /// What to submit now that `chain` and `scan` are at a new burn block.
    pub fn on_burn_block(&mut self, chain: &RegtestChain, scan: &BurnScan) -> Option<Transaction> {
        let height = scan.height()?;
        let registered = scan.registrations().find_owner(&self.wallet.script());
        let now = scan.term();
        self.funding
            .retain(|term, _| !scan.term_funded(*term) && now.is_none_or(|now| now < *term));
        let wanted = match (registered, now) {
            (None, _) => Pending::Registration,
            (Some(_), Some(term))
                if term >= 1 && !scan.enrolled(term, &self.keypair.public_key()) =>
            {
                Pending::Enrollment(term)
            }
            (Some(_), _) => match self.funding.keys().next() {
                Some(term) => Pending::Funding(*term),
                None => return None,
            },
        };
        if let Some((pending, at)) = self.outstanding
            && pending == wanted
            && height.saturating_sub(at) < RESUBMIT_AFTER
        {
            return None;
        }
        let outputs = match (wanted, registered) {
            (Pending::Registration, _) => KeyRegistration {
                consensus_hash: [0; 20],
                proving_key: self.keypair.x_only_public_key().0.serialize(),
                memo: [0; 25],
                owner: self.wallet.script(),
            }
            .outputs(self.magic, DUST)
            .to_vec(),
            (Pending::Enrollment(term), Some((key_block, key_txoff))) => {
                let set_block = scan.terms().heights(term.checked_sub(1)?).start;
                let data = EnrollmentData {
                    set_block: u32::try_from(set_block).ok()?,
                    set_txoff: 0,
                    key_block,
                    key_txoff,
                    signing_pubkey: self.keypair.public_key(),
                    state_root: [0; 32],
                };
                vec![data.op_return(self.magic), burn_output((self.spend)(term))]
            }
            (Pending::Enrollment(_), None) => return None,
            (Pending::Funding(term), _) => vec![self.funding.get(&term)?.clone()],
        };
        let tx = self.wallet.pay(chain, outputs, FEE)?;
        self.outstanding = Some((wanted, height));
        Some(tx)
    }
}
