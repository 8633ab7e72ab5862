//! The term keys a node accepted, each with the plan it was checked against, its
//! context and its proof ([`super::term_key`] states the rules). Followers and
//! producers keep one: a follower to validate blocks of every term, a producer to
//! catch up through terms it was not in (it restarted, or joined late) and to send
//! the proofs on to those that missed the certificates.
//!
//! - Certificates are counted against the node's own plan of their term, from its
//!   burnchain scan; ones that arrive before the plan wait, at most
//!   [`MAX_EARLY_CERTIFICATES`], once their signature is checked.
//! - A proof ([`TermKeyProof`]) counts exactly as its certificates, and only for a
//!   term whose plan the book has (a proof of any other term is dropped unchecked, so
//!   nobody can fill the early queue with keys of their own making); its shape is
//!   checked first (at most 100 signatures, no member twice, a record no larger than
//!   a certificate), and its signatures are offered until one does not verify, which
//!   refuses the rest (those before it count, as they would have one by one).
//! - A plan replaced by another for the same term (a burnchain reorg changed its
//!   seed) drops what was counted and accepted for the term under the old one.
//! - Every accepted term keeps its context and its proof (a proof is the record, about
//!   7 KB, and up to 100 signatures: about 17 KB a term at most).

use std::collections::{BTreeMap, VecDeque};

use crate::block::TermContext;

use super::{
    TermPlan,
    term_key::{KeyCertificate, Offered, TermKeyError, TermKeyProof, TermKeys},
};

/// Certificates held until the burnchain names their term's producers, at most.
pub const MAX_EARLY_CERTIFICATES: usize = 256;

/// The term keys a node accepted (module docs).
#[derive(Debug)]
pub struct TermKeyBook {
    network: String,
    keys: TermKeys,
    /// Each term's plan and the burn block term N-1's consensus hash came from.
    plans: BTreeMap<u64, (TermPlan, Option<[u8; 32]>)>,
    contexts: BTreeMap<u64, TermContext>,
    proofs: BTreeMap<u64, TermKeyProof>,
    early: VecDeque<KeyCertificate>,
    refused: u64,
}

impl TermKeyBook {
    /// An empty book on `network`.
    pub fn new(network: &str) -> TermKeyBook {
        TermKeyBook {
            network: network.to_owned(),
            keys: TermKeys::new(network),
            plans: BTreeMap::new(),
            contexts: BTreeMap::new(),
            proofs: BTreeMap::new(),
            early: VecDeque::new(),
            refused: 0,
        }
    }

    /// Whether the burnchain named `term`'s producers to this book.
    pub fn has_plan(&self, term: u64) -> bool {
        self.plans.contains_key(&term)
    }

    /// The seed of the plan of `term` this book has.
    pub fn plan_seed(&self, term: u64) -> Option<[u8; 32]> {
        self.plans.get(&term).map(|(plan, _)| plan.seed)
    }

    /// The burnchain named term `plan.term`'s producers; `previous_consensus_block`
    /// is the block term N-1's consensus hash was made from. Certificates that were
    /// waiting for it are offered; returns the terms whose key was accepted.
    pub fn on_plan(
        &mut self,
        plan: TermPlan,
        previous_consensus_block: Option<[u8; 32]>,
    ) -> Vec<u64> {
        let term = plan.term;
        match self.plans.get(&term) {
            Some((known, previous))
                if known.seed == plan.seed && *previous == previous_consensus_block =>
            {
                return Vec::new();
            }
            Some(_) => {
                // Another history of the burnchain: what the old plan accepted goes.
                self.keys.forget(term);
                self.contexts.remove(&term);
                self.proofs.remove(&term);
            }
            None => {}
        }
        self.plans.insert(term, (plan, previous_consensus_block));
        let (now, later): (Vec<KeyCertificate>, Vec<KeyCertificate>) =
            self.early.drain(..).partition(|c| c.record.term == term);
        self.early = later.into();
        let mut certified = Vec::new();
        for certificate in now {
            if let Ok(Some(term)) = self.on_certificate(certificate) {
                certified.push(term);
            }
        }
        certified
    }

    /// A producer's certificate of its term's key: `Ok(Some(term))` when it made the
    /// term's key accepted.
    pub fn on_certificate(
        &mut self,
        certificate: KeyCertificate,
    ) -> Result<Option<u64>, TermKeyError> {
        let term = certificate.record.term;
        let Some((plan, previous)) = self.plans.get(&term) else {
            if let Err(e) = certificate.check_signature(&self.network) {
                self.refused = self.refused.saturating_add(1);
                return Err(e);
            }
            if self.early.len() >= MAX_EARLY_CERTIFICATES {
                self.early.pop_front();
            }
            self.early.push_back(certificate);
            return Ok(None);
        };
        let offered = match self.keys.offer(&certificate, plan) {
            Ok(offered) => offered,
            Err(e) => {
                self.refused = self.refused.saturating_add(1);
                return Err(e);
            }
        };
        let Offered::Certified(record) = offered else {
            return Ok(None);
        };
        let context = record.context(plan, *previous)?;
        self.contexts.insert(term, context);
        if let Some(proof) = self.keys.proof(term) {
            self.proofs.insert(term, proof);
        }
        Ok(Some(term))
    }

    /// A proof of a term's key: its certificates offered one by one. `Ok(Some(term))`
    /// when it made the term's key accepted; a proof of a term already accepted is
    /// not checked again.
    pub fn on_proof(&mut self, proof: &TermKeyProof) -> Result<Option<u64>, TermKeyError> {
        if self.contexts.contains_key(&proof.record.term)
            || !self.plans.contains_key(&proof.record.term)
        {
            return Ok(None);
        }
        if let Err(e) = proof.check_shape() {
            self.refused = self.refused.saturating_add(1);
            return Err(TermKeyError::BadProof(e.to_string()));
        }
        for certificate in proof.certificates() {
            if let Some(term) = self.on_certificate(certificate)? {
                return Ok(Some(term));
            }
        }
        Ok(None)
    }

    /// The context of `term`, once its key is accepted.
    pub fn context(&self, term: u64) -> Option<&TermContext> {
        self.contexts.get(&term)
    }

    /// The contexts of the accepted terms from `term` on, in term order.
    pub fn contexts_from(&self, term: u64) -> impl Iterator<Item = &TermContext> {
        self.contexts.range(term..).map(|(_, c)| c)
    }

    /// The proof of `term`'s key, once accepted.
    pub fn proof(&self, term: u64) -> Option<&TermKeyProof> {
        self.proofs.get(&term)
    }

    /// The proofs of the accepted terms from `term` on, in term order.
    pub fn proofs_from(&self, term: u64) -> impl Iterator<Item = &TermKeyProof> {
        self.proofs.range(term..).map(|(_, p)| p)
    }

    /// The terms whose key was accepted.
    pub fn terms_certified(&self) -> Vec<u64> {
        self.contexts.keys().copied().collect()
    }

    /// Certificates and proofs refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Forgets the certificates counted for the terms before `term` (their accepted
    /// contexts and proofs stay).
    pub fn forget_certificates_before(&mut self, term: u64) {
        self.keys.forget_before(term);
    }
}
