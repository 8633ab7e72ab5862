//! A term's key made public: what its producers certify, and how any node, producer or
//! not, accepts it from public data (seed 001 "Producer Set Collaboration"; DESIGN
//! "Block production", "Who the term's key belongs to").
//!
//! A term's producers make its key with the weighted DKG during the term before. The
//! DKG's own certificates (every member's signature on its transcript) bind the key to
//! the round-1 commitments, which only the members hold. A node that took no part
//! needs the outcome itself, so each producer also signs a [`TermKeyRecord`]:
//!
//! - the **term** and its plan's **seed** (the burn block hash that decided the term's
//!   shares), so a record cannot be replayed into another term or another burnchain
//!   history;
//! - the producers **excluded** after failed DKG attempts: the key's roster is the
//!   plan's producers without them, shares assigned again by the same round-robin
//!   with the same seed ([`roster_of`]), which every node recomputes;
//! - the DKG **transcript** hash the members certified among themselves;
//! - the **public key package**, taproot-tweaked: the group key and the verifying
//!   share of each of the 100 shares, against which every block's signer evidence is
//!   checked.
//!
//! Each producer signs the record's digest ([`TermKeyRecord::digest`], which names the
//! network) with its enrollment's signing key, BIP340, and gossips the signed record
//! ([`KeyCertificate`]; the node's topic validator checks the signature alone, so a
//! peer without a producer key cannot get anything forwarded). A node accepts a term's
//! key ([`TermKeys`]) once members of its roster holding at least the signing
//! threshold (67 of the 100 shares) certified the same record: the weight that could
//! sign any block under the key vouches for it; fewer could not have produced a
//! block anyway.
//!
//! What an attacker can do, and what happens:
//!
//! - **Forge** a certificate without a roster member's key: the signature fails.
//! - **Replay** a record into another term, plan or network: the digest differs.
//! - **Pad** the weight: a member counts once, whatever it sends, and only with the
//!   shares the recomputed roster gives it.
//! - **Exclude** producers it dislikes: only with certificates of the threshold's
//!   weight, the same weight that controls the key.
//! - A member that certifies **two records** for one term is named
//!   ([`TermKeyError::Equivocation`]); its first certificate stays counted, the second
//!   is refused.
//! - **Flood**: the topic forwards only certificates of the term's producers whose
//!   signature verifies, at most [`FORWARDED_PER_MEMBER`] per member and term
//!   ([`CertificateGate`]); a node keeps one certificate per roster member and term.
//!
//! The term's context ([`TermKeyRecord::context`]) is built from the record and the
//! plan by one function for producers and followers alike, so every node validates
//! blocks against the same context.
//!
//! Certificates are gossiped when the key is made and again at the term's start; a
//! node that was not listening then (a follower that joined late, a producer that
//! restarts) takes the term's key from a [`TermKeyProof`] instead: the accepted record
//! with the signatures that carried it to the threshold, sent with blocks of the term
//! (`follower::BlockBatch`). A proof is checked as its certificates one by one, against
//! the node's own plan of the term: it is worth exactly what the certificates are, and
//! a signature that does not verify stops the proof there (the ones before it count,
//! as they would have one by one).

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::secp256k1::{Keypair, Message, SECP256K1, XOnlyPublicKey, schnorr};
use frost_secp256k1_tr::keys::PublicKeyPackage;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tenure_frost_fed::{MemberId, Roster};

use crate::{
    block::{AccountId, SIGNER_SHARES, SIGNING_THRESHOLD, TermContext},
    codec::{self, CodecError, Versioned},
    produce::{ProducerId, TermPlan},
    rewards, shares,
    tenure_change::consensus_hash,
    terms::Producer,
};

/// Each term's coinbase, in all, paid pro rata by spend.
pub const TERM_COINBASE: u64 = 100_000_000;

/// Each term's cost budget (the SIP: ten times a block's limit), renewed by an
/// `Extend`.
pub const TERM_COST_LIMIT: u64 = 10_000_000;

/// Wire version of [`KeyCertificate`].
pub const KEY_CERTIFICATE_VERSION: u16 = 1;

/// Largest encoded [`KeyCertificate`]: 100 verifying shares of 65 bytes with their
/// identifiers, up to 100 excluded keys, and room to spare.
pub const MAX_KEY_CERTIFICATE_BYTES: usize = 16 * 1024;

/// Why a term key record or certificate is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TermKeyError {
    /// The bytes are not a certificate.
    #[error("not a key certificate: {0}")]
    Codec(#[from] CodecError),
    /// The record is for another term than the plan.
    #[error("record for term {record}, the plan is term {plan}'s")]
    WrongTerm {
        /// The record's term.
        record: u64,
        /// The plan's.
        plan: u64,
    },
    /// The record's seed is not the plan's: another burnchain history.
    #[error("record for another burnchain history of term {0}")]
    WrongSeed(u64),
    /// The excluded producers are not a sorted list of distinct plan producers, or
    /// leave nobody.
    #[error("bad exclusion list: {0}")]
    BadExclusion(&'static str),
    /// The certificate's signer holds no shares of the key's roster.
    #[error("{0} is not in the term key's roster")]
    NotAMember(MemberId),
    /// The signature does not verify under the signer's key.
    #[error("the certificate of {0} does not verify")]
    BadSignature(MemberId),
    /// The public key package does not decode, or does not hold exactly the term's
    /// 100 verifying shares.
    #[error("bad public key package: {0}")]
    BadKey(String),
    /// A proof of the wrong shape (too many signatures, a member twice, too large).
    #[error("bad proof: {0}")]
    BadProof(String),
    /// The member already certified another record for this term.
    #[error("{member} certified two records for term {term}")]
    Equivocation {
        /// The member.
        member: MemberId,
        /// The term.
        term: u64,
    },
}

/// What a term's producers certify about the key they made (module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermKeyRecord {
    /// The term.
    pub term: u64,
    /// Its plan's seed.
    pub seed: [u8; 32],
    /// Producers left out after failed attempts (x-only keys), sorted, distinct.
    pub excluded: Vec<[u8; 32]>,
    /// The DKG transcript hash the members certified among themselves.
    pub transcript: [u8; 32],
    /// The public key package, taproot-tweaked, serialised.
    pub public: ByteBuf,
}

impl TermKeyRecord {
    /// The record of `term`'s key: its plan's `seed`, the producers `excluded`, the
    /// DKG's `transcript` and its tweaked `public` key package.
    pub fn new(
        term: u64,
        seed: [u8; 32],
        excluded: &BTreeSet<MemberId>,
        transcript: [u8; 32],
        public: &PublicKeyPackage,
    ) -> Result<TermKeyRecord, TermKeyError> {
        Ok(TermKeyRecord {
            term,
            seed,
            excluded: excluded.iter().map(|m| m.0).collect(),
            transcript,
            public: ByteBuf::from(
                public
                    .serialize()
                    .map_err(|e| TermKeyError::BadKey(e.to_string()))?,
            ),
        })
    }

    /// The digest producers sign: every field, and the network, length-prefixed.
    pub fn digest(&self, network: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/term-key/v1");
        h.update((network.len() as u64).to_be_bytes());
        h.update(network.as_bytes());
        h.update(self.term.to_be_bytes());
        h.update(self.seed);
        h.update((self.excluded.len() as u64).to_be_bytes());
        for key in &self.excluded {
            h.update(key);
        }
        h.update(self.transcript);
        h.update((self.public.len() as u64).to_be_bytes());
        h.update(&self.public);
        h.finalize().into()
    }

    /// Checks the record against `plan` (term, seed, exclusions) and returns the key's
    /// roster and its producers with their shares.
    pub fn roster(&self, plan: &TermPlan) -> Result<KeyRoster, TermKeyError> {
        if self.term != plan.term {
            return Err(TermKeyError::WrongTerm {
                record: self.term,
                plan: plan.term,
            });
        }
        if self.seed != plan.seed {
            return Err(TermKeyError::WrongSeed(plan.term));
        }
        if !self.excluded.windows(2).all(|w| w.first() < w.get(1)) {
            return Err(TermKeyError::BadExclusion("not sorted and distinct"));
        }
        let excluded: BTreeSet<MemberId> = self.excluded.iter().map(|k| MemberId(*k)).collect();
        if !excluded
            .iter()
            .all(|m| plan.producers.iter().any(|p| member_of(p) == *m))
        {
            return Err(TermKeyError::BadExclusion("not a producer of the plan"));
        }
        roster_of(plan, &excluded)
    }

    /// The public key package, checked to hold the group key and exactly the verifying
    /// shares of shares 1 to 100.
    pub fn public_key_package(&self) -> Result<PublicKeyPackage, TermKeyError> {
        let package = PublicKeyPackage::deserialize(&self.public)
            .map_err(|e| TermKeyError::BadKey(e.to_string()))?;
        let shares = package.verifying_shares();
        let complete = shares.len() == SIGNER_SHARES
            && (1..=SIGNER_SHARES as u16).all(|n| {
                frost_secp256k1_tr::Identifier::try_from(n).is_ok_and(|id| shares.contains_key(&id))
            });
        if !complete {
            return Err(TermKeyError::BadKey(format!(
                "{} verifying shares, not shares 1 to {SIGNER_SHARES}",
                shares.len()
            )));
        }
        Ok(package)
    }

    /// The term's context from this record and its `plan`; `previous_consensus_block`
    /// is the burn block term N-1's consensus hash was made from (`None`: zeros). The
    /// coinbase pays the roster's producers pro rata by spend; each share's owner is
    /// the producer the roster numbers it to.
    pub fn context(
        &self,
        plan: &TermPlan,
        previous_consensus_block: Option<[u8; 32]>,
    ) -> Result<TermContext, TermKeyError> {
        let roster = self.roster(plan)?;
        let package = self.public_key_package()?;
        term_context(
            plan.term,
            package,
            &roster,
            consensus_hash(plan.term, &plan.seed),
            consensus_hash(
                plan.term.saturating_sub(1),
                &previous_consensus_block.unwrap_or([0; 32]),
            ),
        )
    }
}

/// Term `term`'s context for the key `package` (taproot-tweaked) made by `roster`'s
/// producers: the coinbase pays them pro rata by spend, each share's owner is the
/// producer the roster numbers it to.
pub fn term_context(
    term: u64,
    package: PublicKeyPackage,
    roster: &KeyRoster,
    consensus_hash: [u8; 20],
    previous_consensus_hash: [u8; 20],
) -> Result<TermContext, TermKeyError> {
    let group = package
        .verifying_key()
        .serialize()
        .map_err(|e| TermKeyError::BadKey(e.to_string()))?;
    let producer_key = group
        .get(1..33)
        .and_then(|x| XOnlyPublicKey::from_slice(x).ok())
        .ok_or_else(|| TermKeyError::BadKey("group key".into()))?;
    let members: Vec<MemberId> = roster.members.iter().map(|(p, _)| member_of(p)).collect();
    let share_owners = (1..=SIGNER_SHARES as u16)
        .map(|s| {
            roster
                .roster
                .holder_of(s)
                .and_then(|holder| members.iter().position(|m| *m == holder))
                .and_then(|i| u16::try_from(i).ok())
                .ok_or(TermKeyError::BadKey(format!("share {s} has no holder")))
        })
        .collect::<Result<Vec<u16>, TermKeyError>>()?;
    let accounts: Vec<AccountId> = roster
        .members
        .iter()
        .map(|(p, _)| AccountId(ProducerId::of(&p.producer.x_only_public_key().0).0))
        .collect();
    let spends: Vec<u64> = roster
        .members
        .iter()
        .map(|(p, _)| p.weight.to_sat())
        .collect();
    Ok(TermContext {
        term,
        producer_key,
        producer_shares: package,
        stacker_key: None,
        coinbase: accounts
            .iter()
            .copied()
            .zip(rewards::coinbase(TERM_COINBASE, &spends))
            .collect(),
        cost_limit: TERM_COST_LIMIT,
        consensus_hash,
        previous_consensus_hash,
        producers: accounts.into_iter().zip(spends).collect(),
        share_owners,
    })
}

/// A term key's roster: the plan's producers without the excluded, with their shares.
#[derive(Clone, Debug)]
pub struct KeyRoster {
    /// The federation roster (100 shares, threshold 67), in plan order.
    pub roster: Roster,
    /// Each member's producer and shares, in the same order.
    pub members: Vec<(Producer, u16)>,
}

/// The producer's federation member: its enrollment signing key, x-only.
pub fn member_of(producer: &Producer) -> MemberId {
    MemberId::from(producer.producer.x_only_public_key().0)
}

/// The roster of `plan`'s producers without `excluded`: shares assigned again among
/// the rest by the SIP's round-robin with the plan's seed; producers left with no
/// share are not in it. Every producer derives the same retry roster from the same
/// blamed set.
pub fn roster_of(
    plan: &TermPlan,
    excluded: &BTreeSet<MemberId>,
) -> Result<KeyRoster, TermKeyError> {
    let kept: Vec<Producer> = plan
        .producers
        .iter()
        .filter(|p| !excluded.contains(&member_of(p)))
        .cloned()
        .collect();
    if kept.is_empty() {
        return Err(TermKeyError::BadExclusion("nobody left"));
    }
    let assignment = shares::assign(&kept, plan.seed);
    let members: Vec<(Producer, u16)> = kept
        .into_iter()
        .zip(assignment.shares.iter().copied())
        .filter(|(_, shares)| *shares > 0)
        .collect();
    let roster = Roster::new(
        members.iter().map(|(p, s)| (member_of(p), *s)).collect(),
        SIGNER_SHARES as u16,
        SIGNING_THRESHOLD as u16,
    )
    .map_err(|_| TermKeyError::BadExclusion("no valid roster is left"))?;
    Ok(KeyRoster { roster, members })
}

/// A producer's signature on a term key record, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCertificate {
    /// Wire version ([`KEY_CERTIFICATE_VERSION`]).
    pub version: u16,
    /// The record.
    pub record: TermKeyRecord,
    /// The certifying producer's enrollment key, x-only.
    pub member: MemberId,
    /// Its BIP340 signature on the record's digest.
    pub signature: ByteBuf,
}

impl Versioned for KeyCertificate {
    const VERSION: u16 = KEY_CERTIFICATE_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

impl KeyCertificate {
    /// `keypair`'s certificate of `record` on `network`.
    pub fn sign(network: &str, record: TermKeyRecord, keypair: &Keypair) -> KeyCertificate {
        let message = Message::from_digest(record.digest(network));
        let signature = SECP256K1.sign_schnorr(&message, keypair);
        KeyCertificate {
            version: KEY_CERTIFICATE_VERSION,
            record,
            member: MemberId::from(keypair.x_only_public_key().0),
            signature: ByteBuf::from(signature.as_ref().to_vec()),
        }
    }

    /// Encodes the certificate.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes a certificate of at most [`MAX_KEY_CERTIFICATE_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyCertificate, CodecError> {
        codec::decode(bytes, MAX_KEY_CERTIFICATE_BYTES)
    }

    /// Whether the signature verifies under the member's key on `network`: the
    /// stateless check a topic validator makes before a certificate is forwarded.
    pub fn check_signature(&self, network: &str) -> Result<(), TermKeyError> {
        let bad = || TermKeyError::BadSignature(self.member);
        let key = self.member.key().ok_or_else(bad)?;
        let signature = schnorr::Signature::from_slice(&self.signature).map_err(|_| bad())?;
        SECP256K1
            .verify_schnorr(
                &signature,
                &Message::from_digest(self.record.digest(network)),
                &key,
            )
            .map_err(|_| bad())
    }
}

/// Certificates of one member for one term that a node forwards, at most: its first,
/// its republication at the term's start, and room for a retry.
pub const FORWARDED_PER_MEMBER: u8 = 4;

/// What a term-keys topic validator does with a certificate ([`CertificateGate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Deliver and forward it.
    Forward,
    /// Drop it without blame: its term's producers are not known here yet, or its
    /// member was forwarded enough for the term.
    Ignore,
    /// Drop it and blame its sender: not a producer's, or a bad signature.
    Reject(TermKeyError),
}

/// The term-keys topic's gate (module docs, "Flood"): a certificate is forwarded only
/// when the node's burnchain view names its member a producer of its term and its
/// signature verifies, and at most [`FORWARDED_PER_MEMBER`] times per member and term,
/// so neither a stranger's keys nor a member's fresh signatures can fill the network.
#[derive(Debug)]
pub struct CertificateGate {
    network: String,
    forwarded: BTreeMap<(u64, MemberId), u8>,
}

impl CertificateGate {
    /// A gate on `network`.
    pub fn new(network: &str) -> CertificateGate {
        CertificateGate {
            network: network.to_owned(),
            forwarded: BTreeMap::new(),
        }
    }

    /// Judges `certificate`, given the plan of its term as this node's burnchain view
    /// has it (`None`: not known here).
    pub fn judge(&mut self, certificate: &KeyCertificate, plan: Option<&TermPlan>) -> GateVerdict {
        let term = certificate.record.term;
        let Some(plan) = plan.filter(|p| p.term == term) else {
            return GateVerdict::Ignore;
        };
        let member = certificate.member;
        if !plan.producers.iter().any(|p| member_of(p) == member) {
            return GateVerdict::Reject(TermKeyError::NotAMember(member));
        }
        let count = self.forwarded.entry((term, member)).or_insert(0);
        if *count >= FORWARDED_PER_MEMBER {
            return GateVerdict::Ignore;
        }
        if let Err(e) = certificate.check_signature(&self.network) {
            return GateVerdict::Reject(e);
        }
        *count = count.saturating_add(1);
        // Terms well past are forgotten: the map holds at most a few terms' producers.
        let recent = term.saturating_sub(2);
        self.forwarded.retain(|(t, _), _| *t >= recent);
        GateVerdict::Forward
    }
}

/// What a certificate offered to [`TermKeys`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Counted: the record's certified shares so far, not yet the threshold.
    Counted {
        /// Shares of the members that certified the record.
        shares: u16,
    },
    /// This certificate brought the record to the threshold: the term's key is
    /// accepted.
    Certified(Box<TermKeyRecord>),
    /// Already counted, or the term's key is already accepted.
    Known,
}

/// A term's key with the signatures that made it accepted (module docs): what a node
/// that missed the term's certificates is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermKeyProof {
    /// The accepted record.
    pub record: TermKeyRecord,
    /// Its certifiers, each with its BIP340 signature on the record's digest.
    pub signatures: Vec<(MemberId, ByteBuf)>,
}

/// Why a proof is refused before any of its signatures is checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// More signatures than a roster has members, or a member twice.
    #[error("a proof of {0} signatures, or one member twice")]
    Signatures(usize),
    /// A record larger than a certificate may be.
    #[error("a record of {0} bytes")]
    TooLarge(usize),
}

impl TermKeyProof {
    /// The cheap checks before any signature: at most one signature per possible
    /// roster member (100), no member twice, a record no larger than a certificate's.
    pub fn check_shape(&self) -> Result<(), ProofError> {
        let members: BTreeSet<&MemberId> = self.signatures.iter().map(|(m, _)| m).collect();
        if self.signatures.len() > SIGNER_SHARES || members.len() != self.signatures.len() {
            return Err(ProofError::Signatures(self.signatures.len()));
        }
        let size = self
            .record
            .public
            .len()
            .saturating_add(self.record.excluded.len().saturating_mul(32));
        if size > MAX_KEY_CERTIFICATE_BYTES {
            return Err(ProofError::TooLarge(size));
        }
        Ok(())
    }

    /// The certificates the proof stands for.
    pub fn certificates(&self) -> impl Iterator<Item = KeyCertificate> + '_ {
        self.signatures
            .iter()
            .map(|(member, signature)| KeyCertificate {
                version: KEY_CERTIFICATE_VERSION,
                record: self.record.clone(),
                member: *member,
                signature: signature.clone(),
            })
    }
}

/// One record certified for a term, with its certifiers.
#[derive(Debug)]
struct Certifications {
    record: TermKeyRecord,
    /// Shares of its certifiers.
    shares: u16,
    /// Its certifiers' signatures.
    signatures: Vec<(MemberId, ByteBuf)>,
}

/// Certificates of one term.
#[derive(Debug, Default)]
struct TermCertificates {
    /// The record digest each member certified (its first).
    by_member: BTreeMap<MemberId, [u8; 32]>,
    /// Each record certified, with its certifiers.
    records: BTreeMap<[u8; 32], Certifications>,
    /// The accepted record's digest.
    certified: Option<[u8; 32]>,
}

/// The term keys a node accepts, from producers' certificates (module docs).
#[derive(Debug)]
pub struct TermKeys {
    network: String,
    terms: BTreeMap<u64, TermCertificates>,
}

impl TermKeys {
    /// Term keys on `network`.
    pub fn new(network: &str) -> TermKeys {
        TermKeys {
            network: network.to_owned(),
            terms: BTreeMap::new(),
        }
    }

    /// Offers `certificate` for the term `plan` describes (the node's own view of the
    /// burnchain): checked against the plan, the recomputed roster and the signature,
    /// then counted once per member.
    pub fn offer(
        &mut self,
        certificate: &KeyCertificate,
        plan: &TermPlan,
    ) -> Result<Offered, TermKeyError> {
        let record = &certificate.record;
        let roster = record.roster(plan)?;
        let member = certificate.member;
        let shares = roster.roster.weight_of(&member);
        if shares == 0 {
            return Err(TermKeyError::NotAMember(member));
        }
        certificate.check_signature(&self.network)?;
        let digest = record.digest(&self.network);
        let term = self.terms.entry(plan.term).or_default();
        match term.by_member.get(&member) {
            Some(known) if *known == digest => return Ok(Offered::Known),
            Some(_) => {
                return Err(TermKeyError::Equivocation {
                    member,
                    term: plan.term,
                });
            }
            None => {}
        }
        // Decoded once per record, and only once a roster member signed it: nobody
        // else makes a node parse a key package.
        if !term.records.contains_key(&digest) {
            record.public_key_package()?;
        }
        term.by_member.insert(member, digest);
        let entry = term
            .records
            .entry(digest)
            .or_insert_with(|| Certifications {
                record: record.clone(),
                shares: 0,
                signatures: Vec::new(),
            });
        entry.shares = entry.shares.saturating_add(shares);
        if term.certified.is_some() {
            return Ok(Offered::Known);
        }
        entry
            .signatures
            .push((member, certificate.signature.clone()));
        if entry.shares >= roster.roster.threshold() {
            term.certified = Some(digest);
            return Ok(Offered::Certified(Box::new(entry.record.clone())));
        }
        Ok(Offered::Counted {
            shares: entry.shares,
        })
    }

    /// The accepted record of `term`, if one is.
    pub fn certified(&self, term: u64) -> Option<&TermKeyRecord> {
        let term = self.terms.get(&term)?;
        term.records.get(&term.certified?).map(|c| &c.record)
    }

    /// The accepted record of `term` with the signatures that carried it to the
    /// threshold.
    pub fn proof(&self, term: u64) -> Option<TermKeyProof> {
        let term = self.terms.get(&term)?;
        term.records.get(&term.certified?).map(|c| TermKeyProof {
            record: c.record.clone(),
            signatures: c.signatures.clone(),
        })
    }

    /// Forgets the terms before `term`.
    pub fn forget_before(&mut self, term: u64) {
        self.terms = self.terms.split_off(&term);
    }

    /// Forgets what was counted for `term` (its plan changed: a burnchain reorg).
    pub fn forget(&mut self, term: u64) {
        self.terms.remove(&term);
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::{Amount, Txid, hashes::Hash as _, secp256k1::SecretKey};

    use super::*;
    use crate::block::build::ProducerGroup;

    const NET: &str = "testnet";

    fn keypair(n: u8) -> Keypair {
        Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
    }

    /// A plan of `n` producers with keys 1..=n, spends 10, 20, 30, ...
    fn plan(n: u8) -> (TermPlan, Vec<Keypair>) {
        let keys: Vec<Keypair> = (1..=n).map(keypair).collect();
        let producers: Vec<Producer> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Producer {
                producer: k.public_key(),
                weight: Amount::from_sat(10_000 * (i as u64 + 1)),
                txid: Txid::from_byte_array([i as u8; 32]),
            })
            .rev()
            .collect();
        let seed = [7; 32];
        let plan = TermPlan {
            term: 5,
            assignment: shares::assign(&producers, seed),
            producers,
            seed,
        };
        (plan, keys)
    }

    fn record(plan: &TermPlan, excluded: &BTreeSet<MemberId>, group: u64) -> TermKeyRecord {
        let public = ProducerGroup::generate(group).unwrap().public;
        TermKeyRecord::new(plan.term, plan.seed, excluded, [9; 32], &public).unwrap()
    }

    fn member(k: &Keypair) -> MemberId {
        MemberId::from(k.x_only_public_key().0)
    }

    /// Offers each key's certificate of `record` in turn; the outcomes.
    fn offer_all(
        keys_: &mut TermKeys,
        plan: &TermPlan,
        record: &TermKeyRecord,
        keys: &[Keypair],
    ) -> Vec<Result<Offered, TermKeyError>> {
        keys.iter()
            .map(|k| keys_.offer(&KeyCertificate::sign(NET, record.clone(), k), plan))
            .collect()
    }

    #[test]
    fn a_key_is_accepted_once_the_threshold_of_shares_certified_it() {
        let (plan, keys) = plan(10);
        let record = record(&plan, &BTreeSet::new(), 1);
        let roster = record.roster(&plan).unwrap();
        let mut accepted = TermKeys::new(NET);
        // Heaviest first until the threshold: the last offer accepts the key.
        let mut by_weight: Vec<&Keypair> = keys.iter().collect();
        by_weight.sort_by_key(|k| std::cmp::Reverse(roster.roster.weight_of(&member(k))));
        let mut certified = 0u16;
        for key in by_weight {
            let offered = accepted
                .offer(&KeyCertificate::sign(NET, record.clone(), key), &plan)
                .unwrap();
            certified += roster.roster.weight_of(&member(key));
            if certified < 67 {
                assert_eq!(offered, Offered::Counted { shares: certified });
                assert!(accepted.certified(plan.term).is_none());
            } else {
                assert_eq!(offered, Offered::Certified(Box::new(record.clone())));
                break;
            }
        }
        assert_eq!(accepted.certified(plan.term), Some(&record));
        // The context every follower derives is the one producers use.
        let context = record.context(&plan, Some([3; 32])).unwrap();
        assert_eq!(context.producer_shares.verifying_shares().len(), 100);
        assert_eq!(context.share_owners.len(), 100);
        assert_eq!(
            context.coinbase.iter().map(|(_, c)| c).sum::<u64>(),
            TERM_COINBASE
        );
        assert_eq!(
            context.producer_key,
            ProducerGroup::generate(1).unwrap().key()
        );
    }

    #[test]
    fn forged_replayed_and_outsider_certificates_count_nothing() {
        let (plan, keys) = plan(10);
        let record = record(&plan, &BTreeSet::new(), 1);
        let mut accepted = TermKeys::new(NET);
        // Signed by someone outside the roster.
        let outsider = keypair(99);
        assert_eq!(
            accepted.offer(&KeyCertificate::sign(NET, record.clone(), &outsider), &plan),
            Err(TermKeyError::NotAMember(member(&outsider)))
        );
        // A member's name on someone else's signature.
        let mut forged = KeyCertificate::sign(NET, record.clone(), &outsider);
        forged.member = member(&keys[0]);
        assert_eq!(
            accepted.offer(&forged, &plan),
            Err(TermKeyError::BadSignature(member(&keys[0])))
        );
        // Signed for another network.
        assert_eq!(
            accepted.offer(
                &KeyCertificate::sign("other", record.clone(), &keys[0]),
                &plan
            ),
            Err(TermKeyError::BadSignature(member(&keys[0])))
        );
        // Replayed into another term, or another burnchain history.
        let mut other_term = plan.clone();
        other_term.term = 6;
        assert!(matches!(
            accepted.offer(
                &KeyCertificate::sign(NET, record.clone(), &keys[0]),
                &other_term
            ),
            Err(TermKeyError::WrongTerm { .. })
        ));
        let mut other_seed = plan.clone();
        other_seed.seed = [8; 32];
        assert_eq!(
            accepted.offer(
                &KeyCertificate::sign(NET, record.clone(), &keys[0]),
                &other_seed
            ),
            Err(TermKeyError::WrongSeed(5))
        );
        // Nothing was counted: every member's certificate still counts in full.
        let outcomes = offer_all(&mut accepted, &plan, &record, &keys);
        assert!(outcomes.iter().all(Result::is_ok));
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Ok(Offered::Certified(_))))
        );
    }

    #[test]
    fn a_member_counts_once_and_one_that_certifies_two_keys_is_named() {
        let (plan, keys) = plan(10);
        let honest = record(&plan, &BTreeSet::new(), 1);
        let other = record(&plan, &BTreeSet::new(), 2);
        let mut accepted = TermKeys::new(NET);
        let heaviest = keys
            .iter()
            .max_by_key(|k| honest.roster(&plan).unwrap().roster.weight_of(&member(k)))
            .unwrap();
        let first = accepted
            .offer(&KeyCertificate::sign(NET, other.clone(), heaviest), &plan)
            .unwrap();
        // The same member again, even with a fresh signature: no more weight.
        for _ in 0..5 {
            assert_eq!(
                accepted.offer(&KeyCertificate::sign(NET, other.clone(), heaviest), &plan),
                Ok(Offered::Known)
            );
        }
        assert!(matches!(first, Offered::Counted { .. }));
        // Its certificate of another key is refused and names it.
        assert_eq!(
            accepted.offer(&KeyCertificate::sign(NET, honest.clone(), heaviest), &plan),
            Err(TermKeyError::Equivocation {
                member: member(heaviest),
                term: 5
            })
        );
        // The others still certify the honest key: 100 minus the equivocator's shares
        // is above the threshold with 10 producers.
        let rest: Vec<Keypair> = keys.iter().filter(|k| *k != heaviest).copied().collect();
        let outcomes = offer_all(&mut accepted, &plan, &honest, &rest);
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Ok(Offered::Certified(_))))
        );
        assert_eq!(accepted.certified(5), Some(&honest));
    }

    #[test]
    fn exclusions_must_name_plan_producers_and_change_the_roster_every_node_derives() {
        let (plan, keys) = plan(10);
        let dropped: BTreeSet<MemberId> = [member(&keys[9]), member(&keys[3])].into();
        let retry = record(&plan, &dropped, 1);
        let roster = retry.roster(&plan).unwrap();
        assert_eq!(roster.roster.len(), 8);
        assert_eq!(roster.roster.weight_of(&member(&keys[9])), 0);
        assert_eq!(roster.roster.total_shares(), 100);
        assert_eq!(
            roster.roster.digest(),
            roster_of(&plan, &dropped).unwrap().roster.digest()
        );
        // An excluded producer's certificate is refused.
        let mut accepted = TermKeys::new(NET);
        assert_eq!(
            accepted.offer(&KeyCertificate::sign(NET, retry.clone(), &keys[9]), &plan),
            Err(TermKeyError::NotAMember(member(&keys[9])))
        );
        // Exclusions naming strangers, or out of order, or everyone.
        let mut stranger = retry.clone();
        stranger.excluded = vec![member(&keypair(99)).0];
        assert!(matches!(
            stranger.roster(&plan),
            Err(TermKeyError::BadExclusion(_))
        ));
        let mut unsorted = retry.clone();
        unsorted.excluded.reverse();
        assert!(matches!(
            unsorted.roster(&plan),
            Err(TermKeyError::BadExclusion(_))
        ));
        let mut everyone = retry.clone();
        everyone.excluded = {
            let mut all: Vec<[u8; 32]> = keys.iter().map(|k| member(k).0).collect();
            all.sort();
            all
        };
        assert!(matches!(
            everyone.roster(&plan),
            Err(TermKeyError::BadExclusion(_))
        ));
    }

    #[test]
    fn a_key_package_without_the_100_verifying_shares_is_refused() {
        let (plan, keys) = plan(4);
        let mut short = record(&plan, &BTreeSet::new(), 1);
        short.public = ByteBuf::from(vec![1, 2, 3]);
        let mut accepted = TermKeys::new(NET);
        assert!(matches!(
            accepted.offer(&KeyCertificate::sign(NET, short, &keys[0]), &plan),
            Err(TermKeyError::BadKey(_))
        ));
        // A refused key counted nothing for its signer.
        let good = record(&plan, &BTreeSet::new(), 1);
        let outcomes = offer_all(&mut accepted, &plan, &good, &keys);
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Ok(Offered::Certified(_))))
        );
    }

    #[test]
    fn the_gate_forwards_only_producers_certificates_and_few_of_each() {
        let (plan, keys) = plan(4);
        let record = record(&plan, &BTreeSet::new(), 1);
        let mut gate = CertificateGate::new(NET);
        // A stranger's certificate, validly signed by its own key: refused, blamed.
        let stranger = KeyCertificate::sign(NET, record.clone(), &keypair(99));
        assert_eq!(
            gate.judge(&stranger, Some(&plan)),
            GateVerdict::Reject(TermKeyError::NotAMember(member(&keypair(99))))
        );
        // A producer's name on a forged signature: refused, blamed.
        let mut forged = stranger.clone();
        forged.member = member(&keys[0]);
        assert_eq!(
            gate.judge(&forged, Some(&plan)),
            GateVerdict::Reject(TermKeyError::BadSignature(member(&keys[0])))
        );
        // Its term's producers unknown here: dropped without blame.
        let honest = KeyCertificate::sign(NET, record.clone(), &keys[0]);
        assert_eq!(gate.judge(&honest, None), GateVerdict::Ignore);
        // A producer's certificates, freshly signed each time: a few are forwarded.
        let forwarded = (0..20)
            .filter(|_| {
                gate.judge(
                    &KeyCertificate::sign(NET, record.clone(), &keys[0]),
                    Some(&plan),
                ) == GateVerdict::Forward
            })
            .count();
        assert_eq!(forwarded, usize::from(FORWARDED_PER_MEMBER));
        // Another producer is not held back by the first one's flood.
        assert_eq!(
            gate.judge(&KeyCertificate::sign(NET, record, &keys[1]), Some(&plan)),
            GateVerdict::Forward
        );
    }

    #[test]
    fn certificates_round_trip_and_oversized_bytes_are_refused() {
        let (plan, keys) = plan(3);
        let certificate = KeyCertificate::sign(NET, record(&plan, &BTreeSet::new(), 1), &keys[0]);
        let bytes = certificate.to_bytes().unwrap();
        assert!(bytes.len() < MAX_KEY_CERTIFICATE_BYTES);
        assert_eq!(KeyCertificate::from_bytes(&bytes).unwrap(), certificate);
        assert!(certificate.check_signature(NET).is_ok());
        assert!(matches!(
            KeyCertificate::from_bytes(&vec![0; MAX_KEY_CERTIFICATE_BYTES + 1]),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
