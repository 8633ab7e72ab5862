//! A weighted distributed key generation, sans-IO (seed 004: FROST DKG over the
//! federation's broadcast and channels; seed 001 "Producer DB Setup": 100 shares, 67
//! to sign, a member holding shares in proportion to its weight).
//!
//! Each **member** (not each share) deals one polynomial of degree `threshold - 1`
//! (Pedersen's DKG as in FROST, with shares batched per member):
//!
//! 1. **Round 1**, by broadcast: the member's coefficient commitments and a Schnorr
//!    proof that it knows the constant term (no rogue keys).
//! 2. **Round 2**, over the private channel to each member: the dealer's polynomial at
//!    every share number the recipient holds, in one signed message. The recipient
//!    checks each value against the dealer's commitment; a bad one becomes a
//!    **complaint** carrying the dealer's signed message, so every member can check
//!    who lied: the dealer if the values are bad, the complainer if they are not.
//! 3. **Justification** (as in Gennaro–Jarecki–Krawczyk–Rabin's DKG): a recipient
//!    that holds no valid shares from a dealer, because none came within the round's
//!    timeout or they came with a signature that does not verify (which proves nothing
//!    to anyone else), broadcasts that it lacks them (`Missing`). The dealer must then
//!    open those shares to everyone (`Opened`, signed); every member checks them
//!    against the commitment, and the recipient takes them. Every timeout waits while a
//!    complaint is less than a round old. A dealer that does not open, or opens bad
//!    shares, is blamed by every member alike; before this, its victim blamed the
//!    dealer while every other member blamed the victim for not certifying.
//! 4. **Certification**: every member signs the transcript hash (roster, session and
//!    every commitment) with its member key and sends it to every member point to
//!    point; the key counts only with every member's signature (so no two members
//!    can end with different keys). Certificates need no echo broadcast: round 1's
//!    broadcast already gives honest members one transcript, so a certificate on
//!    another transcript can only come from a cheat, which it proves (it is signed);
//!    and an echo broadcast would not stop a cheat from certifying to some members
//!    only (it has no totality either). Sending them directly saves one of the DKG's
//!    two n³-echo rounds.
//!
//! A share is the sum of every dealer's polynomial at its number; the group key is
//! the sum of the constant-term commitments. The result is turned into
//! `frost-secp256k1-tr` key packages and taproot-tweaked exactly as that crate's own
//! DKG does, so signing is plain FROST.
//!
//! Dealing per member rather than per share is what makes 100 shares affordable: a
//! member checks `members × its weight` evaluations, each a Horner evaluation with
//! small share numbers ([`crate::curve`]), instead of `100 × 100` full checks.
//!
//! **Timeouts follow progress, not the clock.** A phase blames the members it has not
//! heard from only after `round_timeout` passes with no valid message of that phase
//! arriving (plus [`TIMEOUT_PER_MEMBER`] per roster member), so a large roster on a
//! loaded machine, still delivering, is never blamed for being slow. Each member can
//! make a phase progress once, so a really silent member is still blamed in bounded
//! time: at most one timeout per member of the roster.
//!
//! A failure ends the session with the members to blame (a bad proof or bad shares,
//! a false complaint, a wrong certificate, silence past the round timeout); the
//! caller retries with [`crate::Roster::without`] them and the next attempt number.

pub mod message;

use crate::ids::SessionId;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use zeroize::Zeroize;

use bitcoin::secp256k1::Keypair;
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage, SigningShare, VerifyingShare};
use k256::{ProjectivePoint, Scalar, elliptic_curve::Field};
use rand_core::{CryptoRng, RngCore};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::{
    curve,
    roster::{MemberId, Roster},
    share::{KeyShare, identifier, member_sign, member_verify},
};
pub use message::{DealtShares, DkgBody, DkgMessage};

/// How long a round may go without progress before the silent members are blamed.
pub const DEFAULT_ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// Added to the round timeout for each roster member: a larger roster's rounds carry
/// more messages.
pub const TIMEOUT_PER_MEMBER: Duration = Duration::from_millis(20);

/// The session id for `attempt` at making a key for `roster` in `context` (for
/// instance the term it is for). Every member derives it alone.
pub fn session_id(context: &[u8], roster: &Roster, attempt: u32) -> SessionId {
    let mut h = Sha256::new();
    h.update(b"tenure/frost-fed/dkg/session/v1");
    h.update((context.len() as u64).to_be_bytes());
    h.update(context);
    h.update(roster.digest());
    h.update(attempt.to_be_bytes());
    SessionId(h.finalize().into())
}

/// What the DKG asks its driver to do, or how it ended.
#[derive(Clone, Debug)]
pub enum DkgOutput {
    /// Send to every other member (through the echo broadcast).
    Broadcast(DkgMessage),
    /// Send to one member over its private channel.
    Send {
        /// The member.
        to: MemberId,
        /// The message.
        msg: DkgMessage,
    },
    /// The key is made and certified by every member.
    Completed(Box<KeyShare>),
    /// The session failed; retry without `blamed`.
    Failed(DkgFailure),
}

/// Why a session failed and whom to leave out next time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkgFailure {
    /// Members whose messages (or silence) failed the session.
    pub blamed: Vec<MemberId>,
    /// What they did.
    pub fault: DkgFault,
}

impl std::fmt::Display for DkgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.fault)?;
        if !self.blamed.is_empty() {
            let blamed: Vec<String> = self.blamed.iter().map(ToString::to_string).collect();
            write!(f, " (blamed: {})", blamed.join(", "))?;
        }
        Ok(())
    }
}

/// What failed a DKG session: each case names what the blamed members did.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DkgFault {
    /// A member signed two different broadcasts for one tag.
    #[error("equivocated in a broadcast")]
    Equivocation,
    /// The blamed said nothing within the round's timeout.
    #[error("no answer within {timeout:?} in {phase:?}")]
    Silence {
        /// The phase that timed out.
        phase: DkgPhase,
        /// The timeout.
        timeout: Duration,
    },
    /// A round-1 commitment that is not a list of curve points.
    #[error("malformed round-1 commitment")]
    MalformedCommitment,
    /// A round-1 proof of knowledge that does not verify.
    #[error("round-1 proof of knowledge does not verify")]
    BadProofOfKnowledge,
    /// A dealer dealt shares that do not match its commitment.
    #[error("dealer {dealer}: {fault}")]
    BadShares {
        /// The dealer.
        dealer: MemberId,
        /// What was wrong.
        fault: ShareFault,
    },
    /// A complaint about someone outside the roster.
    #[error("complaint about a non-member")]
    ComplaintAboutNonMember,
    /// A complaint that does not carry the dealer's signed shares.
    #[error("complaint without the dealer's signed shares")]
    ComplaintWithoutEvidence,
    /// A complaint about shares that are valid.
    #[error("complained about valid shares")]
    FalseComplaint,
    /// A dealer did not open the shares a member said it lacked.
    #[error("did not open the shares of {recipient}")]
    NotOpened {
        /// The member that lacked them.
        recipient: MemberId,
    },
    /// A certificate of another transcript than this member computed.
    #[error("certified another transcript")]
    AnotherTranscript,
    /// A certificate whose signature does not verify, or of the wrong length.
    #[error("a certificate that does not verify")]
    BadCertificate,
    /// Every message was valid, yet the key could not be computed (no one to blame).
    #[error("the key could not be computed: {0}")]
    KeyComputation(String),
}

/// Why a dealer's shares for one recipient are invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareFault {
    /// The recipient is not in the roster.
    #[error("shares for a non-member")]
    NotForMember,
    /// Not one value per share the recipient holds.
    #[error("{got} values for {expected} shares")]
    WrongCount {
        /// Values dealt.
        got: usize,
        /// Shares the recipient holds.
        expected: usize,
    },
    /// The dealer's commitment has not arrived (a complaint judged too early).
    #[error("no commitment yet")]
    NoCommitment,
    /// A value that is not a scalar.
    #[error("share {0} is not a scalar")]
    NotAScalar(u16),
    /// A value that does not match the dealer's commitment.
    #[error("share {0} does not match the dealer's commitment")]
    Mismatch(u16),
}

/// How a DKG message reached this member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered by the echo broadcast (every member got the same).
    Broadcast,
    /// Sent to this member alone over its channel.
    Direct,
}

impl Delivery {
    /// The way a message of this kind must travel: round-2 shares and certificates
    /// point to point, everything else by echo broadcast.
    pub fn of(msg: &DkgMessage) -> Delivery {
        match msg.body {
            DkgBody::Round2(_) | DkgBody::Certificate { .. } => Delivery::Direct,
            _ => Delivery::Broadcast,
        }
    }
}

/// The phases of a DKG session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DkgPhase {
    /// Commitments and proofs of knowledge, by echo broadcast.
    Round1,
    /// Each dealer's signed shares to each recipient.
    Round2,
    /// Every member certifies the transcript.
    Certify,
    /// Completed or failed.
    Ended,
}

/// Computed once every member's shares are in: waiting for certificates.
struct Pending {
    key_share: KeyShare,
}

/// How long each phase took at one member: from the session's start (or the previous
/// phase's end) until this member had what the phase gathers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DkgTimings {
    /// Until every round-1 commitment was in.
    pub round1: Duration,
    /// Until every dealer's shares were in and checked, and the key computed.
    pub round2: Duration,
    /// Until every certificate was in.
    pub certify: Duration,
}

/// One member's side of one DKG session.
pub struct Dkg {
    session: SessionId,
    roster: Roster,
    me: usize,
    member: MemberId,
    keypair: Keypair,
    polynomial: Vec<Scalar>,
    round_timeout: Duration,
    phase: DkgPhase,
    /// When the current phase last made progress: it began, or a valid message of it
    /// arrived. Silence is blamed only `round_timeout` after this.
    progress_at: Instant,
    /// When the current phase began, and how long the finished ones took.
    phase_began: Instant,
    timings: DkgTimings,
    commitments: BTreeMap<usize, Vec<ProjectivePoint>>,
    /// Round-2 messages that came before their dealer's round 1.
    early: BTreeMap<usize, DealtShares>,
    /// Checked shares for this member, by dealer.
    received: BTreeMap<usize, Vec<Scalar>>,
    /// Certificates that came before the transcript was known here.
    early_certificates: BTreeMap<usize, ([u8; 32], Vec<u8>)>,
    /// Complaints about dealers whose round 1 had not arrived yet.
    early_complaints: Vec<(MemberId, DealtShares)>,
    /// Shares members said they lack and their dealers have not opened yet:
    /// (dealer, recipient) by index.
    missing: std::collections::BTreeSet<(usize, usize)>,
    /// Shares opened whose dealer's round 1 had not arrived yet.
    early_openings: Vec<(usize, DealtShares)>,
    /// Timeouts wait until this passes: a complaint deserves a round to be answered.
    justify_until: Option<Instant>,
    certificates: BTreeMap<usize, [u8; 64]>,
    pending: Option<Pending>,
}

impl Dkg {
    /// Starts this member's side of `session` for `roster`. Returns the state and the
    /// round-1 broadcast. `None` when `keypair` is not a member of the roster.
    pub fn start<R: RngCore + CryptoRng>(
        session: SessionId,
        roster: Roster,
        keypair: Keypair,
        round_timeout: Duration,
        now: Instant,
        rng: &mut R,
    ) -> Option<(Dkg, Vec<DkgOutput>)> {
        let member = MemberId::from(keypair.x_only_public_key().0);
        let me = roster.index_of(&member)?;
        let members = u32::try_from(roster.len()).unwrap_or(u32::MAX);
        let round_timeout =
            round_timeout.saturating_add(TIMEOUT_PER_MEMBER.saturating_mul(members));
        let polynomial = curve::random_polynomial(roster.threshold(), rng);
        let commitment = curve::commit(&polynomial);
        let constant = polynomial.first().copied().unwrap_or(Scalar::ZERO);
        let commitment0 = commitment
            .first()
            .copied()
            .unwrap_or(ProjectivePoint::IDENTITY);
        // Proof of knowledge of the constant term, bound to the session and member.
        let k = Scalar::random(&mut *rng);
        let r = ProjectivePoint::GENERATOR * k;
        let c = proof_challenge(&session, &member, &commitment0, &r);
        let z = k + constant * c;
        let round1 = DkgMessage {
            version: message::DKG_VERSION,
            session,
            body: DkgBody::Round1 {
                commitment: commitment
                    .iter()
                    .map(|p| ByteBuf::from(curve::point_bytes(p)))
                    .collect(),
                proof_r: ByteBuf::from(curve::point_bytes(&r)),
                proof_z: ByteBuf::from(curve::scalar_bytes(&z).to_vec()),
            },
        };
        let mut dkg = Dkg {
            session,
            roster,
            me,
            member,
            keypair,
            polynomial,
            round_timeout,
            phase: DkgPhase::Round1,
            progress_at: now,
            phase_began: now,
            timings: DkgTimings::default(),
            commitments: BTreeMap::new(),
            early: BTreeMap::new(),
            received: BTreeMap::new(),
            early_certificates: BTreeMap::new(),
            early_complaints: Vec::new(),
            missing: std::collections::BTreeSet::new(),
            early_openings: Vec::new(),
            justify_until: None,
            certificates: BTreeMap::new(),
            pending: None,
        };
        dkg.commitments.insert(me, commitment);
        let mut out = vec![DkgOutput::Broadcast(round1)];
        out.extend(dkg.after_round1(now));
        Some((dkg, out))
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// How long this member's phases took so far.
    pub fn timings(&self) -> DkgTimings {
        self.timings
    }

    /// Whether the session has completed or failed.
    pub fn is_over(&self) -> bool {
        self.phase == DkgPhase::Ended
    }

    /// A message from `from` (authenticated by the channel or broadcast layer).
    pub fn handle(
        &mut self,
        from: MemberId,
        msg: DkgMessage,
        delivery: Delivery,
        now: Instant,
    ) -> Vec<DkgOutput> {
        if self.phase == DkgPhase::Ended || msg.session != self.session {
            return Vec::new();
        }
        // Round 1, complaints and openings count only as delivered by the echo
        // broadcast, so nobody can show members different ones; round-2 shares and
        // certificates only point to point.
        if Delivery::of(&msg) != delivery {
            return Vec::new();
        }
        let Some(sender) = self.roster.index_of(&from) else {
            return Vec::new();
        };
        match msg.body {
            DkgBody::Round1 {
                commitment,
                proof_r,
                proof_z,
            } => self.on_round1(sender, from, &commitment, &proof_r, &proof_z, now),
            DkgBody::Round2(dealt) => self.on_round2(sender, dealt, now),
            DkgBody::Complaint(dealt) => self.on_complaint(from, dealt),
            DkgBody::Missing { dealer } => self.on_missing(sender, dealer, now),
            DkgBody::Opened(dealt) => self.on_opened(sender, dealt, now),
            DkgBody::Certificate {
                transcript,
                signature,
            } => self.on_certificate(sender, transcript, signature.into_vec(), now),
        }
    }

    /// The broadcast layer proved that `member` equivocated: the session fails,
    /// blaming it.
    pub fn on_equivocation(&mut self, member: MemberId) -> Vec<DkgOutput> {
        if self.phase == DkgPhase::Ended {
            return Vec::new();
        }
        self.fail(vec![member], DkgFault::Equivocation)
    }

    /// Time passed: a round that outlived its timeout fails, blaming the silent; a
    /// recipient still lacking a dealer's shares says so first and waits a round for
    /// them to be opened; a dealer that did not open them is blamed.
    pub fn on_tick(&mut self, now: Instant) -> Vec<DkgOutput> {
        if self.phase == DkgPhase::Ended {
            return Vec::new();
        }
        if let Some(until) = self.justify_until {
            if now < until {
                return Vec::new();
            }
            if let Some((_, recipient)) = self.missing.first().copied() {
                let member = |i: usize| self.roster.members().get(i).map(|(m, _)| *m);
                let blamed: Vec<MemberId> = self
                    .missing
                    .iter()
                    .filter_map(|(d, _)| member(*d))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let fault = DkgFault::NotOpened {
                    recipient: member(recipient).unwrap_or(self.member),
                };
                return self.fail(blamed, fault);
            }
        }
        if now.saturating_duration_since(self.progress_at) < self.round_timeout {
            return Vec::new();
        }
        if self.phase == DkgPhase::Round2 {
            let lacking: Vec<usize> = (0..self.roster.len())
                .filter(|d| {
                    !self.received.contains_key(d) && !self.missing.contains(&(*d, self.me))
                })
                .filter(|d| self.commitments.contains_key(d))
                .collect();
            if !lacking.is_empty() {
                let mut out = Vec::new();
                for dealer in lacking {
                    out.extend(self.say_missing(dealer, now));
                }
                return out;
            }
        }
        let heard: Vec<usize> = match self.phase {
            DkgPhase::Round1 => self.commitments.keys().copied().collect(),
            DkgPhase::Round2 => self.received.keys().copied().collect(),
            DkgPhase::Certify => self.certificates.keys().copied().collect(),
            DkgPhase::Ended => return Vec::new(),
        };
        let silent: Vec<MemberId> = self
            .roster
            .members()
            .iter()
            .enumerate()
            .filter(|(i, _)| !heard.contains(i))
            .map(|(_, (m, _))| *m)
            .collect();
        let fault = DkgFault::Silence {
            phase: self.phase,
            timeout: self.round_timeout,
        };
        self.fail(silent, fault)
    }

    /// Tells everyone this member lacks `dealer`'s shares.
    fn say_missing(&mut self, dealer: usize, now: Instant) -> Vec<DkgOutput> {
        let Some((dealer_id, _)) = self.roster.members().get(dealer).copied() else {
            return Vec::new();
        };
        if !self.missing.insert((dealer, self.me)) {
            return Vec::new();
        }
        self.extend_justification(now);
        vec![DkgOutput::Broadcast(DkgMessage {
            version: message::DKG_VERSION,
            session: self.session,
            body: DkgBody::Missing { dealer: dealer_id },
        })]
    }

    fn extend_justification(&mut self, now: Instant) {
        let until = now.checked_add(self.round_timeout).unwrap_or(now);
        self.justify_until = Some(self.justify_until.map_or(until, |u| u.max(until)));
    }

    /// `recipient` says it lacks `dealer`'s shares: remember it, and open them if they
    /// are ours.
    fn on_missing(&mut self, recipient: usize, dealer: MemberId, now: Instant) -> Vec<DkgOutput> {
        let Some(dealer) = self.roster.index_of(&dealer) else {
            let from = self.roster.members().get(recipient).map(|(m, _)| *m);
            return self.fail(
                from.into_iter().collect(),
                DkgFault::ComplaintAboutNonMember,
            );
        };
        if dealer == recipient || !self.missing.insert((dealer, recipient)) {
            return Vec::new();
        }
        self.extend_justification(now);
        if dealer != self.me {
            return Vec::new();
        }
        match self.deal(recipient) {
            Some(dealt) => vec![DkgOutput::Broadcast(DkgMessage {
                version: message::DKG_VERSION,
                session: self.session,
                body: DkgBody::Opened(dealt),
            })],
            None => Vec::new(),
        }
    }

    /// A dealer opened shares: check them; the recipient takes them.
    fn on_opened(&mut self, sender: usize, dealt: DealtShares, now: Instant) -> Vec<DkgOutput> {
        let Some((dealer_id, _)) = self.roster.members().get(sender).copied() else {
            return Vec::new();
        };
        let Some(recipient) = self.roster.index_of(&dealt.recipient) else {
            return Vec::new();
        };
        if dealt.dealer != dealer_id
            || !member_verify(&dealt.dealer, dealt.digest(&self.session), &dealt.signature)
        {
            return self.fail(vec![dealer_id], DkgFault::ComplaintWithoutEvidence);
        }
        if !self.commitments.contains_key(&sender) {
            if self.early_openings.len() < self.roster.len() {
                self.early_openings.push((sender, dealt));
            }
            return Vec::new();
        }
        match self.check_dealt(sender, &dealt) {
            Err(fault) => self.fail(
                vec![dealer_id],
                DkgFault::BadShares {
                    dealer: dealer_id,
                    fault,
                },
            ),
            Ok(values) => {
                self.missing.remove(&(sender, recipient));
                if recipient == self.me && !self.received.contains_key(&sender) {
                    self.received.insert(sender, values);
                    return self.after_round2(now);
                }
                Vec::new()
            }
        }
    }

    fn fail(&mut self, blamed: Vec<MemberId>, fault: DkgFault) -> Vec<DkgOutput> {
        self.phase = DkgPhase::Ended;
        vec![DkgOutput::Failed(DkgFailure { blamed, fault })]
    }

    fn on_round1(
        &mut self,
        sender: usize,
        from: MemberId,
        commitment: &[ByteBuf],
        proof_r: &[u8],
        proof_z: &[u8],
        now: Instant,
    ) -> Vec<DkgOutput> {
        if self.commitments.contains_key(&sender) {
            return Vec::new();
        }
        let points: Option<Vec<ProjectivePoint>> = commitment
            .iter()
            .map(|b| curve::point_from_bytes(b))
            .collect();
        let checked = points.filter(|p| p.len() == usize::from(self.roster.threshold()));
        let (Some(points), Some(r), Some(z)) = (
            checked,
            curve::point_from_bytes(proof_r),
            curve::scalar_from_bytes(proof_z),
        ) else {
            return self.fail(vec![from], DkgFault::MalformedCommitment);
        };
        let constant = points.first().copied().unwrap_or(ProjectivePoint::IDENTITY);
        let c = proof_challenge(&self.session, &from, &constant, &r);
        if ProjectivePoint::GENERATOR * z != r + constant * c {
            return self.fail(vec![from], DkgFault::BadProofOfKnowledge);
        }
        self.commitments.insert(sender, points);
        self.progress_at = now;
        let mut out = self.after_round1(now);
        if let Some(dealt) = self.early.remove(&sender) {
            out.extend(self.on_round2(sender, dealt, now));
        }
        // Complaints about this dealer that came before its round 1 are judged now.
        let (now_judged, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_complaints)
            .into_iter()
            .partition(|(_, dealt)| dealt.dealer == from);
        self.early_complaints = waiting;
        for (complainer, dealt) in now_judged {
            if self.phase == DkgPhase::Ended {
                break;
            }
            out.extend(self.on_complaint(complainer, dealt));
        }
        let (openings, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_openings)
            .into_iter()
            .partition(|(dealer, _)| *dealer == sender);
        self.early_openings = waiting;
        for (dealer, dealt) in openings {
            if self.phase == DkgPhase::Ended {
                break;
            }
            out.extend(self.on_opened(dealer, dealt, now));
        }
        out
    }

    /// Once every commitment is in: deal round 2.
    fn after_round1(&mut self, now: Instant) -> Vec<DkgOutput> {
        if self.phase != DkgPhase::Round1 || self.commitments.len() < self.roster.len() {
            return Vec::new();
        }
        self.phase = DkgPhase::Round2;
        self.progress_at = now;
        self.timings.round1 = now.saturating_duration_since(self.phase_began);
        self.phase_began = now;
        let mut out = Vec::new();
        for index in 0..self.roster.len() {
            if index == self.me {
                let Some(numbers) = self.roster.shares_of(index) else {
                    continue;
                };
                let values: Vec<Scalar> = numbers
                    .map(|n| curve::evaluate(&self.polynomial, n))
                    .collect();
                self.received.insert(index, values);
                continue;
            }
            let Some(dealt) = self.deal(index) else {
                continue;
            };
            out.push(DkgOutput::Send {
                to: dealt.recipient,
                msg: DkgMessage {
                    version: message::DKG_VERSION,
                    session: self.session,
                    body: DkgBody::Round2(dealt),
                },
            });
        }
        out.extend(self.after_round2(now));
        out
    }

    /// This member's signed shares for the member at `index`.
    fn deal(&self, index: usize) -> Option<DealtShares> {
        let (recipient, _) = self.roster.members().get(index).copied()?;
        let numbers = self.roster.shares_of(index)?;
        let mut dealt = DealtShares {
            dealer: self.member,
            recipient,
            shares: numbers
                .map(|n| {
                    let mut value = curve::evaluate(&self.polynomial, n);
                    let bytes = ByteBuf::from(curve::scalar_bytes(&value).to_vec());
                    value.zeroize();
                    bytes
                })
                .collect(),
            signature: ByteBuf::new(),
        };
        dealt.signature =
            ByteBuf::from(member_sign(&self.keypair, dealt.digest(&self.session)).to_vec());
        Some(dealt)
    }

    /// Checks `dealt` against its dealer's commitment. `Ok(values)` when every value
    /// matches; `Err(reason)` when the dealer dealt badly. The signature is checked by
    /// the caller.
    fn check_dealt(&self, dealer: usize, dealt: &DealtShares) -> Result<Vec<Scalar>, ShareFault> {
        let recipient = self
            .roster
            .index_of(&dealt.recipient)
            .ok_or(ShareFault::NotForMember)?;
        let numbers = self
            .roster
            .shares_of(recipient)
            .ok_or(ShareFault::NotForMember)?;
        if dealt.shares.len() != numbers.clone().count() {
            return Err(ShareFault::WrongCount {
                got: dealt.shares.len(),
                expected: numbers.count(),
            });
        }
        let commitment = self
            .commitments
            .get(&dealer)
            .ok_or(ShareFault::NoCommitment)?;
        let mut values = Vec::with_capacity(dealt.shares.len());
        for (n, bytes) in numbers.zip(&dealt.shares) {
            let value = curve::scalar_from_bytes(bytes).ok_or(ShareFault::NotAScalar(n))?;
            if ProjectivePoint::GENERATOR * value != curve::evaluate_commitment(commitment, n) {
                return Err(ShareFault::Mismatch(n));
            }
            values.push(value);
        }
        Ok(values)
    }

    fn on_round2(&mut self, sender: usize, dealt: DealtShares, now: Instant) -> Vec<DkgOutput> {
        if self.received.contains_key(&sender)
            || dealt.recipient != self.member
            || self.roster.index_of(&dealt.dealer) != Some(sender)
        {
            // Not a message for us from its dealer: the channel authenticated the
            // sender, so this is a bug's doing, not evidence.
            return Vec::new();
        }
        if !member_verify(&dealt.dealer, dealt.digest(&self.session), &dealt.signature) {
            // The dealer sent it (the channel says so) but it proves nothing to anyone
            // else: ask for the shares to be opened.
            return self.say_missing(sender, now);
        }
        if !self.commitments.contains_key(&sender) {
            self.early.insert(sender, dealt);
            return Vec::new();
        }
        match self.check_dealt(sender, &dealt) {
            Ok(values) => {
                self.received.insert(sender, values);
                self.progress_at = now;
                self.after_round2(now)
            }
            Err(reason) => {
                let mut out = vec![DkgOutput::Broadcast(DkgMessage {
                    version: message::DKG_VERSION,
                    session: self.session,
                    body: DkgBody::Complaint(dealt.clone()),
                })];
                let fault = DkgFault::BadShares {
                    dealer: dealt.dealer,
                    fault: reason,
                };
                out.extend(self.fail(vec![dealt.dealer], fault));
                out
            }
        }
    }

    fn on_complaint(&mut self, from: MemberId, dealt: DealtShares) -> Vec<DkgOutput> {
        let Some(dealer) = self.roster.index_of(&dealt.dealer) else {
            return self.fail(vec![from], DkgFault::ComplaintAboutNonMember);
        };
        if dealt.recipient != from
            || !member_verify(&dealt.dealer, dealt.digest(&self.session), &dealt.signature)
        {
            return self.fail(vec![from], DkgFault::ComplaintWithoutEvidence);
        }
        if !self.commitments.contains_key(&dealer) {
            // Judged when the dealer's round 1 arrives (or its silence is blamed).
            if self.early_complaints.len() < self.roster.len() {
                self.early_complaints.push((from, dealt));
            }
            return Vec::new();
        }
        match self.check_dealt(dealer, &dealt) {
            Err(fault) => self.fail(
                vec![dealt.dealer],
                DkgFault::BadShares {
                    dealer: dealt.dealer,
                    fault,
                },
            ),
            Ok(_) => self.fail(vec![from], DkgFault::FalseComplaint),
        }
    }

    /// Once every dealer's shares are in: compute the key and certify the transcript.
    fn after_round2(&mut self, now: Instant) -> Vec<DkgOutput> {
        if self.phase != DkgPhase::Round2 || self.received.len() < self.roster.len() {
            return Vec::new();
        }
        let key_share = match self.compute_key() {
            Ok(k) => k,
            Err(reason) => return self.fail(Vec::new(), DkgFault::KeyComputation(reason)),
        };
        self.phase = DkgPhase::Certify;
        self.progress_at = now;
        self.timings.round2 = now.saturating_duration_since(self.phase_began);
        self.phase_began = now;
        let transcript = key_share.transcript;
        let signature = member_sign(&self.keypair, transcript);
        self.certificates.insert(self.me, signature);
        self.pending = Some(Pending { key_share });
        let certificate = DkgMessage {
            version: message::DKG_VERSION,
            session: self.session,
            body: DkgBody::Certificate {
                transcript,
                signature: ByteBuf::from(signature.to_vec()),
            },
        };
        let me = self.member;
        let mut out: Vec<DkgOutput> = self
            .roster
            .members()
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| *m != me)
            .map(|to| DkgOutput::Send {
                to,
                msg: certificate.clone(),
            })
            .collect();
        let early: Vec<_> = std::mem::take(&mut self.early_certificates)
            .into_iter()
            .collect();
        for (sender, (their_transcript, signature)) in early {
            out.extend(self.on_certificate(sender, their_transcript, signature, now));
        }
        out
    }

    fn on_certificate(
        &mut self,
        sender: usize,
        transcript: [u8; 32],
        signature: Vec<u8>,
        now: Instant,
    ) -> Vec<DkgOutput> {
        // A member's certificate counts once: a copy sent again (certificates travel
        // point to point, where no broadcast drops duplicates) neither costs another
        // check nor counts as progress, so resending cannot keep a phase from timing
        // out on a member that is silent.
        if self.certificates.contains_key(&sender) {
            return Vec::new();
        }
        let Some(pending) = &self.pending else {
            if self.early_certificates.len() < self.roster.len() {
                self.early_certificates
                    .insert(sender, (transcript, signature));
            }
            return Vec::new();
        };
        let Some((member, _)) = self.roster.members().get(sender).copied() else {
            return Vec::new();
        };
        if transcript != pending.key_share.transcript {
            return self.fail(vec![member], DkgFault::AnotherTranscript);
        }
        if !member_verify(&member, transcript, &signature) {
            return self.fail(vec![member], DkgFault::BadCertificate);
        }
        let Ok(signature) = <[u8; 64]>::try_from(signature.as_slice()) else {
            return self.fail(vec![member], DkgFault::BadCertificate);
        };
        self.certificates.insert(sender, signature);
        self.progress_at = now;
        if self.certificates.len() < self.roster.len() {
            return Vec::new();
        }
        self.phase = DkgPhase::Ended;
        self.timings.certify = now.saturating_duration_since(self.phase_began);
        let Some(Pending { mut key_share }) = self.pending.take() else {
            return Vec::new();
        };
        key_share.certificates = self
            .certificates
            .iter()
            .filter_map(|(i, sig)| Some((self.roster.members().get(*i)?.0, *sig)))
            .collect();
        vec![DkgOutput::Completed(Box::new(key_share))]
    }

    fn transcript(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/dkg/transcript/v1");
        h.update(self.session);
        h.update(self.roster.digest());
        for commitment in self.commitments.values() {
            for point in commitment {
                h.update(curve::point_bytes(point));
            }
        }
        h.finalize().into()
    }

    fn compute_key(&self) -> Result<KeyShare, String> {
        let threshold = usize::from(self.roster.threshold());
        // The group polynomial's commitment: the sum of every dealer's.
        let mut group = vec![ProjectivePoint::IDENTITY; threshold];
        for commitment in self.commitments.values() {
            for (sum, point) in group.iter_mut().zip(commitment) {
                *sum += point;
            }
        }
        let group_key = group.first().copied().unwrap_or(ProjectivePoint::IDENTITY);
        let verifying_key =
            frost_secp256k1_tr::VerifyingKey::deserialize(&curve::point_bytes(&group_key))
                .map_err(|e| format!("group key: {e}"))?;
        let frost = |e: frost_secp256k1_tr::Error| e.to_string();
        let mut verifying_shares = BTreeMap::new();
        for n in 1..=self.roster.total_shares() {
            let share = curve::evaluate_commitment(&group, n);
            let id = identifier(n).ok_or("share number 0")?;
            verifying_shares.insert(
                id,
                VerifyingShare::deserialize(&curve::point_bytes(&share)).map_err(frost)?,
            );
        }
        let numbers = self.roster.shares_of(self.me).ok_or("not a member")?;
        let mut key_packages = BTreeMap::new();
        for (offset, n) in numbers.enumerate() {
            let secret = self
                .received
                .values()
                .map(|values| values.get(offset).copied().unwrap_or(Scalar::ZERO))
                .fold(Scalar::ZERO, |acc, v| acc + v);
            let id = identifier(n).ok_or("share number 0")?;
            let signing_share =
                SigningShare::deserialize(&curve::scalar_bytes(&secret)).map_err(frost)?;
            let verifying_share = *verifying_shares.get(&id).ok_or("missing verifying share")?;
            let package = KeyPackage::new(
                id,
                signing_share,
                verifying_share,
                verifying_key,
                self.roster.threshold(),
            );
            key_packages.insert(n, package);
        }
        let public = PublicKeyPackage::new(
            verifying_shares,
            verifying_key,
            Some(self.roster.threshold()),
        );
        KeyShare::from_internal(
            self.roster.clone(),
            self.session,
            self.member,
            key_packages,
            public,
            0,
            self.transcript(),
            Vec::new(),
        )
        .map_err(|e| e.to_string())
    }
}

fn proof_challenge(
    session: &SessionId,
    member: &MemberId,
    constant: &ProjectivePoint,
    r: &ProjectivePoint,
) -> Scalar {
    curve::hash_to_scalar(
        b"tenure/frost-fed/dkg/proof/v1",
        &[
            session.as_ref(),
            &member.0,
            &curve::point_bytes(constant),
            &curve::point_bytes(r),
        ],
    )
}
/// The secret polynomial and the shares dealt to this member are wiped when the
/// session is dropped; the key share itself lives on in frost's key packages, which
/// wipe themselves.
impl Drop for Dkg {
    fn drop(&mut self) {
        self.polynomial.zeroize();
        for values in self.received.values_mut() {
            values.zeroize();
        }
    }
}
