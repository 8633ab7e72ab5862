//! A weighted distributed key generation, sans-IO (seed 004: FROST DKG over the
//! federation's broadcast and channels; seed 001 "Producer DB Setup": 100 shares, 67
//! to sign, a member holding shares in proportion to its weight).
//!
//! Each **member** (not each share) deals one polynomial of degree `threshold - 1`
//! (Pedersen's DKG as in FROST, with shares batched per member):
//!
//! 1. **Round 1**, point to point: the member's coefficient commitments and a
//!    Schnorr proof that it knows the constant term (no rogue keys), in a package the
//!    dealer signs, so that it is evidence: any member may relay it, and two packages
//!    of one dealer for one session prove it equivocated. A member still lacking
//!    packages half a round timeout after the last one came asks every member for
//!    them (`Lacking`), so a dealer that skips some members is blamed by no one while
//!    the others go on.
//! 2. **Round 2**, over the private channel to each member: the dealer's polynomial at
//!    every share number the recipient holds, in one signed message. Once every
//!    dealer's values are in, the recipient checks them **all at once** (as ChillDKG
//!    does): its summed value at share n must match the group commitment (the sum of
//!    the dealers') at n, which is the verifying share n the key needs anyway. Only
//!    when a sum is off is each dealer checked against its own commitment; a bad one
//!    becomes a **complaint** carrying the dealer's signed message, so every member
//!    can check who lied: the dealer if the values are bad, the complainer if they
//!    are not.
//! 3. **Justification** (as in Gennaro–Jarecki–Krawczyk–Rabin's DKG): a recipient
//!    that holds no valid shares from a dealer, because none came within the round's
//!    timeout or they came with a signature that does not verify (which proves nothing
//!    to anyone else), broadcasts that it lacks them (`Missing`). The dealer must then
//!    open those shares to everyone (`Opened`, signed); every member checks them
//!    against the commitment, and the recipient takes them. Every timeout waits while a
//!    complaint is less than a round old. A dealer that does not open, or opens bad
//!    shares, is blamed by every member alike; before this, its victim blamed the
//!    dealer while every other member blamed the victim for not certifying. A
//!    complaint carries the signed package the shares were checked against, so every
//!    member judges the same evidence whatever package it holds itself.
//! 4. **Certification**: every member signs the transcript hash (roster, session and
//!    every dealer's round-1 digest) with its member key and sends it to every member
//!    point to point; the key counts only with every member's signature (so no two
//!    members can end with different keys). This is the echo of round 1, compared
//!    once for all dealers (seed 004 and DESIGN "Federation": a member cannot show
//!    members different round-1 packages). A certificate on another transcript
//!    opens a **dispute**: the two members show each other their dealers' signed
//!    round-1 digests; a dealer that signed two is proven to have equivocated, the
//!    proof goes to every member and every member blames the dealer. A member that
//!    certified digests it cannot show signed, or never shows them within the round
//!    timeout, is blamed for its certificate.
//!
//! **Why not an echo broadcast for round 1.** Echoing every package to every member
//! costs n³ messages a round (a million echoes at 100 members), which is what kept
//! federations past 20–30 members on one machine from finishing round 1. Signed
//! packages and the certificates' one comparison cost n² messages; the price is that
//! a dealer's equivocation is caught at certification instead of at delivery, with
//! the same outcome (the session fails, blaming the dealer, with proof).
//!
//! A share is the sum of every dealer's polynomial at its number; the group key is
//! the sum of the constant-term commitments. The result is turned into
//! `frost-secp256k1-tr` key packages and taproot-tweaked exactly as that crate's own
//! DKG does, so signing is plain FROST.
//!
//! Dealing per member rather than per share is what makes 100 shares affordable, and
//! checking the summed shares makes a member's check independent of the roster: it
//! evaluates the group commitment at the 100 share numbers (Horner's rule with small
//! share numbers, [`crate::curve`]) and nothing per dealer unless a check fails.
//! Commitments travel uncompressed, so reading a dealer's costs no square roots.
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
pub use message::{DealtShares, DkgBody, DkgMessage, Round1Package, SignedRound1};

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
    /// Send to every other member through the echo broadcast.
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
    /// A member signed two different broadcasts for one tag, or two round-1
    /// packages.
    #[error("equivocated")]
    Equivocation,
    /// A member sent a proof of equivocation that proves nothing.
    #[error("sent a false proof of equivocation")]
    FalseEquivocationProof,
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
    /// Delivered by the echo broadcast (no two members got different ones).
    Broadcast,
    /// Sent to this member alone over its channel.
    Direct,
}

impl Delivery {
    /// The way a message of this kind must travel: complaints, missing-share
    /// notices and openings by echo broadcast, everything else point to point.
    pub fn of(msg: &DkgMessage) -> Delivery {
        match msg.body {
            DkgBody::Complaint { .. } | DkgBody::Missing { .. } | DkgBody::Opened(_) => {
                Delivery::Broadcast
            }
            DkgBody::Round1(_)
            | DkgBody::Lacking { .. }
            | DkgBody::Round2(_)
            | DkgBody::Certificate { .. }
            | DkgBody::Transcript { .. }
            | DkgBody::Equivocation { .. } => Delivery::Direct,
        }
    }
}

/// The phases of a DKG session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DkgPhase {
    /// Signed commitments and proofs of knowledge, point to point.
    Round1,
    /// Each dealer's signed shares to each recipient.
    Round2,
    /// Every member certifies the transcript.
    Certify,
    /// Completed or failed.
    Ended,
}

/// A dealer's round-1 package as held, with its signed digest (computed once: the
/// transcript, disputes and equivocation checks all read it).
struct Held {
    package: Round1Package,
    signed: SignedRound1,
}

impl Held {
    fn new(package: Round1Package, session: &SessionId) -> Held {
        let signed = package.signed(session);
        Held { package, signed }
    }
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
    /// Every dealer's signed round-1 package, as held here: relayed to members that
    /// lack one, and the evidence a transcript dispute or a complaint rests on.
    round1s: BTreeMap<usize, Held>,
    /// Whether this member asked the others for the round-1 packages it lacks.
    asked_round1: bool,
    /// Round-1 packages relayed, as (asker, dealer): each at most once.
    relayed: std::collections::BTreeSet<(usize, usize)>,
    /// Round-1 packages members asked for that are not held here yet, as (asker,
    /// dealer): relayed when they come (a dealer that sends its package only after
    /// the members that lack it asked is relayed all the same).
    wanted: std::collections::BTreeSet<(usize, usize)>,
    /// Members whose (validly signed) certificate names another transcript, with
    /// that transcript: settled by their signed round-1 digests.
    disputes: BTreeMap<usize, [u8; 32]>,
    /// The signed round-1 digests members sent to settle a dispute (the first
    /// from each).
    their_round1s: BTreeMap<usize, Vec<SignedRound1>>,
    /// Round-2 messages that came before their dealer's round 1.
    early: BTreeMap<usize, DealtShares>,
    /// Shares for this member, by dealer: read, under their dealer's signature.
    received: BTreeMap<usize, Vec<Scalar>>,
    /// The signed messages of the shares in `received` not yet checked against their
    /// dealer's commitment: they are checked together once all are in, and one by
    /// one only if that fails (to find the dealer to blame).
    unchecked: BTreeMap<usize, DealtShares>,
    /// Certificates that came before the transcript was known here.
    early_certificates: BTreeMap<usize, ([u8; 32], Vec<u8>)>,
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
        let mut package = Round1Package {
            dealer: member,
            commitment: commitment
                .iter()
                .map(|p| ByteBuf::from(curve::point_bytes_uncompressed(p)))
                .collect(),
            proof_r: ByteBuf::from(curve::point_bytes(&r)),
            proof_z: ByteBuf::from(curve::scalar_bytes(&z).to_vec()),
            signature: ByteBuf::new(),
        };
        let signed = SignedRound1::signed_message(&session, &member, &package.digest(&session));
        package.signature = ByteBuf::from(member_sign(&keypair, signed).to_vec());
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
            round1s: BTreeMap::new(),
            asked_round1: false,
            relayed: std::collections::BTreeSet::new(),
            wanted: std::collections::BTreeSet::new(),
            disputes: BTreeMap::new(),
            their_round1s: BTreeMap::new(),
            early: BTreeMap::new(),
            received: BTreeMap::new(),
            unchecked: BTreeMap::new(),
            early_certificates: BTreeMap::new(),
            missing: std::collections::BTreeSet::new(),
            early_openings: Vec::new(),
            justify_until: None,
            certificates: BTreeMap::new(),
            pending: None,
        };
        dkg.commitments.insert(me, commitment);
        dkg.round1s.insert(me, Held::new(package.clone(), &session));
        let mut out = dkg.to_others(&DkgBody::Round1(package));
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
        // Complaints, missing-share notices and openings count only as delivered by
        // the echo broadcast; everything else only point to point (round-1 packages
        // are signed, so a dealer that shows members different ones is caught by the
        // certificates, with proof).
        if Delivery::of(&msg) != delivery {
            return Vec::new();
        }
        let Some(sender) = self.roster.index_of(&from) else {
            return Vec::new();
        };
        match msg.body {
            DkgBody::Round1(package) => self.on_round1(package, now),
            DkgBody::Lacking { dealers } => self.on_lacking(sender, &dealers),
            DkgBody::Round2(dealt) => self.on_round2(sender, dealt, now),
            DkgBody::Complaint { shares, round1 } => self.on_complaint(from, shares, round1),
            DkgBody::Missing { dealer } => self.on_missing(sender, dealer, now),
            DkgBody::Opened(dealt) => self.on_opened(sender, dealt, now),
            DkgBody::Certificate {
                transcript,
                signature,
            } => self.on_certificate(sender, transcript, signature.into_vec(), now),
            DkgBody::Transcript { round1 } => self.on_transcript(sender, round1),
            DkgBody::Equivocation {
                dealer,
                first,
                second,
            } => self.on_equivocation_proof(from, dealer, first, second),
        }
    }

    /// `body` to every other member, point to point.
    fn to_others(&self, body: &DkgBody) -> Vec<DkgOutput> {
        let me = self.member;
        self.roster
            .members()
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| *m != me)
            .map(|to| DkgOutput::Send {
                to,
                msg: DkgMessage {
                    version: message::DKG_VERSION,
                    session: self.session,
                    body: body.clone(),
                },
            })
            .collect()
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
        let quiet = now.saturating_duration_since(self.progress_at);
        if self.phase == DkgPhase::Round1 && !self.asked_round1 && quiet >= self.round_timeout / 2 {
            // Half a timeout without a new package: ask every member for the ones
            // still lacking. A dealer that sent its package to some members only is
            // then not blamed by the rest while those go on (the package is signed,
            // so any member can relay it).
            self.asked_round1 = true;
            let dealers: Vec<MemberId> = self
                .roster
                .members()
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.commitments.contains_key(i))
                .map(|(_, (m, _))| *m)
                .collect();
            return self.to_others(&DkgBody::Lacking { dealers });
        }
        if quiet < self.round_timeout {
            return Vec::new();
        }
        if self.phase == DkgPhase::Certify && !self.disputes.is_empty() {
            // They certified another transcript and never showed a dealer's two
            // signatures that would explain it.
            let blamed = self
                .disputes
                .keys()
                .filter_map(|i| self.roster.members().get(*i).map(|(m, _)| *m))
                .collect();
            return self.fail(blamed, DkgFault::AnotherTranscript);
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

    /// A dealer's signed round-1 package, from the dealer or relayed.
    fn on_round1(&mut self, package: Round1Package, now: Instant) -> Vec<DkgOutput> {
        // A package about a non-member, or under a signature that does not verify,
        // proves nothing: the dealer's silence is judged in time.
        let Some(dealer) = self.roster.index_of(&package.dealer) else {
            return Vec::new();
        };
        let signed = package.signed(&self.session);
        let held = self.round1s.get(&dealer).map(|h| h.signed.clone());
        // A copy of the package held costs no signature check.
        if held.as_ref().is_some_and(|h| h.digest == signed.digest)
            || !signed.verify(&self.session, &package.dealer)
        {
            return Vec::new();
        }
        if let Some(held) = held {
            return self.equivocation_proven(dealer, held, signed);
        }
        let points = match self.parse_round1(&package) {
            Ok(points) => points,
            Err(fault) => {
                // The dealer signed it: every member is shown it and blames the dealer.
                let mut out = self.to_others(&DkgBody::Round1(package.clone()));
                out.extend(self.fail(vec![package.dealer], fault));
                return out;
            }
        };
        self.commitments.insert(dealer, points);
        self.round1s.insert(
            dealer,
            Held {
                package,
                signed: signed.clone(),
            },
        );
        self.progress_at = now;
        let askers: Vec<usize> = self
            .wanted
            .iter()
            .filter(|(_, d)| *d == dealer)
            .map(|(asker, _)| *asker)
            .collect();
        self.wanted.retain(|(_, d)| *d != dealer);
        let mut out: Vec<DkgOutput> = askers
            .into_iter()
            .filter_map(|asker| self.relay(asker, dealer))
            .collect();
        out.extend(self.after_round1(now));
        if let Some(dealt) = self.early.remove(&dealer) {
            out.extend(self.on_round2(dealer, dealt, now));
        }
        let (openings, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_openings)
            .into_iter()
            .partition(|(index, _)| *index == dealer);
        self.early_openings = waiting;
        for (index, dealt) in openings {
            if self.phase == DkgPhase::Ended {
                break;
            }
            out.extend(self.on_opened(index, dealt, now));
        }
        out
    }

    /// The commitment of a round-1 package, once its form and its proof of knowledge
    /// check.
    fn parse_round1(&self, package: &Round1Package) -> Result<Vec<ProjectivePoint>, DkgFault> {
        let points: Option<Vec<ProjectivePoint>> = package
            .commitment
            .iter()
            .map(|b| curve::point_from_bytes(b))
            .collect();
        let checked = points.filter(|p| p.len() == usize::from(self.roster.threshold()));
        let (Some(points), Some(r), Some(z)) = (
            checked,
            curve::point_from_bytes(&package.proof_r),
            curve::scalar_from_bytes(&package.proof_z),
        ) else {
            return Err(DkgFault::MalformedCommitment);
        };
        let constant = points.first().copied().unwrap_or(ProjectivePoint::IDENTITY);
        let c = proof_challenge(&self.session, &package.dealer, &constant, &r);
        if ProjectivePoint::GENERATOR * z != r + constant * c {
            return Err(DkgFault::BadProofOfKnowledge);
        }
        Ok(points)
    }

    /// `dealer` signed two round-1 packages: every member is shown the proof, and
    /// the session fails blaming the dealer.
    fn equivocation_proven(
        &mut self,
        dealer: usize,
        first: SignedRound1,
        second: SignedRound1,
    ) -> Vec<DkgOutput> {
        let Some((dealer, _)) = self.roster.members().get(dealer).copied() else {
            return Vec::new();
        };
        let mut out = self.to_others(&DkgBody::Equivocation {
            dealer,
            first,
            second,
        });
        out.extend(self.fail(vec![dealer], DkgFault::Equivocation));
        out
    }

    /// A member shows that `dealer` signed two round-1 packages.
    fn on_equivocation_proof(
        &mut self,
        from: MemberId,
        dealer: MemberId,
        first: SignedRound1,
        second: SignedRound1,
    ) -> Vec<DkgOutput> {
        match self.roster.index_of(&dealer) {
            Some(index)
                if message::proves_equivocation(&self.session, &dealer, &first, &second) =>
            {
                // Passed on, so that every member learns it even from a sender that
                // told only some.
                self.equivocation_proven(index, first, second)
            }
            _ => self.fail(vec![from], DkgFault::FalseEquivocationProof),
        }
    }

    /// A member asks for the round-1 packages of `dealers`: those held here are sent
    /// to it, and the others once they come; each package at most once per asker.
    fn on_lacking(&mut self, asker: usize, dealers: &[MemberId]) -> Vec<DkgOutput> {
        if asker == self.me {
            return Vec::new();
        }
        let asked: std::collections::BTreeSet<usize> = dealers
            .iter()
            .take(self.roster.len())
            .filter_map(|d| self.roster.index_of(d))
            .collect();
        let mut out = Vec::new();
        for dealer in asked {
            if self.round1s.contains_key(&dealer) {
                out.extend(self.relay(asker, dealer));
            } else {
                self.wanted.insert((asker, dealer));
            }
        }
        out
    }

    /// Sends `dealer`'s package to `asker`, unless it was already.
    fn relay(&mut self, asker: usize, dealer: usize) -> Option<DkgOutput> {
        let (to, _) = self.roster.members().get(asker).copied()?;
        let package = self.round1s.get(&dealer)?.package.clone();
        if !self.relayed.insert((asker, dealer)) {
            return None;
        }
        Some(DkgOutput::Send {
            to,
            msg: DkgMessage {
                version: message::DKG_VERSION,
                session: self.session,
                body: DkgBody::Round1(package),
            },
        })
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

    /// Checks `dealt` against its dealer's commitment as held here. `Ok(values)` when
    /// every value matches; `Err(reason)` when the dealer dealt badly. The signature
    /// is checked by the caller.
    fn check_dealt(&self, dealer: usize, dealt: &DealtShares) -> Result<Vec<Scalar>, ShareFault> {
        let commitment = self
            .commitments
            .get(&dealer)
            .ok_or(ShareFault::NoCommitment)?;
        self.check_against(commitment, dealt)
    }

    /// Checks `dealt` against `commitment`.
    fn check_against(
        &self,
        commitment: &[ProjectivePoint],
        dealt: &DealtShares,
    ) -> Result<Vec<Scalar>, ShareFault> {
        let values = self.read_dealt(dealt)?;
        let numbers = self
            .roster
            .index_of(&dealt.recipient)
            .and_then(|r| self.roster.shares_of(r))
            .ok_or(ShareFault::NotForMember)?;
        for (n, value) in numbers.zip(&values) {
            if ProjectivePoint::GENERATOR * value != curve::evaluate_commitment(commitment, n) {
                return Err(ShareFault::Mismatch(n));
            }
        }
        Ok(values)
    }

    /// The values of `dealt`, one scalar per share its recipient holds, unchecked
    /// against any commitment.
    fn read_dealt(&self, dealt: &DealtShares) -> Result<Vec<Scalar>, ShareFault> {
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
        numbers
            .zip(&dealt.shares)
            .map(|(n, bytes)| curve::scalar_from_bytes(bytes).ok_or(ShareFault::NotAScalar(n)))
            .collect()
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
        match self.read_dealt(&dealt) {
            Ok(values) => {
                // Checked against the commitments with every other dealer's, once all
                // are in.
                self.received.insert(sender, values);
                self.unchecked.insert(sender, dealt);
                self.progress_at = now;
                self.after_round2(now)
            }
            Err(reason) => self.complain(vec![(sender, dealt, reason)]),
        }
    }

    /// Shows every member the signed shares of the first (in roster order) dealer
    /// whose shares do not match its commitment, and fails blaming that dealer. One
    /// complaint only: every member judges it alike, where several would end members
    /// blaming whichever arrived first.
    fn complain(&mut self, bad: Vec<(usize, DealtShares, ShareFault)>) -> Vec<DkgOutput> {
        let Some((dealer, dealt, fault)) = bad.into_iter().min_by_key(|(index, _, _)| *index)
        else {
            return Vec::new();
        };
        let Some(round1) = self.round1s.get(&dealer).map(|h| h.package.clone()) else {
            return Vec::new();
        };
        let blamed = dealt.dealer;
        let mut out = vec![DkgOutput::Broadcast(DkgMessage {
            version: message::DKG_VERSION,
            session: self.session,
            body: DkgBody::Complaint {
                shares: dealt,
                round1,
            },
        })];
        out.extend(self.fail(
            vec![blamed],
            DkgFault::BadShares {
                dealer: blamed,
                fault,
            },
        ));
        out
    }

    /// A complaint is judged on the evidence it carries alone (the dealer's signed
    /// shares and the signed package they were checked against), so every member
    /// reaches the same verdict whatever it holds itself; a package other than the
    /// one held here convicts the dealer of equivocation.
    fn on_complaint(
        &mut self,
        from: MemberId,
        dealt: DealtShares,
        round1: Round1Package,
    ) -> Vec<DkgOutput> {
        let Some(dealer) = self.roster.index_of(&dealt.dealer) else {
            return self.fail(vec![from], DkgFault::ComplaintAboutNonMember);
        };
        let signed = round1.signed(&self.session);
        if dealt.recipient != from
            || !member_verify(&dealt.dealer, dealt.digest(&self.session), &dealt.signature)
            || round1.dealer != dealt.dealer
            || !signed.verify(&self.session, &round1.dealer)
        {
            return self.fail(vec![from], DkgFault::ComplaintWithoutEvidence);
        }
        if let Some(held) = self.round1s.get(&dealer)
            && held.signed.digest != signed.digest
        {
            let held = held.signed.clone();
            return self.equivocation_proven(dealer, held, signed);
        }
        let commitment = match self.parse_round1(&round1) {
            Ok(points) => points,
            Err(fault) => return self.fail(vec![dealt.dealer], fault),
        };
        match self.check_against(&commitment, &dealt) {
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
        // The group polynomial's commitment (the sum of every dealer's) evaluated at
        // every share number: the verifying shares, which the key needs anyway.
        let threshold = usize::from(self.roster.threshold());
        let mut group = vec![ProjectivePoint::IDENTITY; threshold];
        for commitment in self.commitments.values() {
            for (sum, point) in group.iter_mut().zip(commitment) {
                *sum += point;
            }
        }
        let verifying: Vec<ProjectivePoint> = (1..=self.roster.total_shares())
            .map(|n| curve::evaluate_commitment(&group, n))
            .collect();
        // Every dealer's shares at once (as in ChillDKG): the sum of this member's
        // values at share n must be the group's verifying share n. Only if a sum is
        // off is each dealer checked against its own commitment, to name the culprit.
        if !self.unchecked.is_empty() && !self.shares_sum_to(&verifying) {
            let unchecked = std::mem::take(&mut self.unchecked);
            let bad: Vec<(usize, DealtShares, ShareFault)> = unchecked
                .into_iter()
                .filter_map(|(dealer, dealt)| {
                    self.check_dealt(dealer, &dealt)
                        .err()
                        .map(|fault| (dealer, dealt, fault))
                })
                .collect();
            if bad.is_empty() {
                let reason = "shares checked one by one but not together".to_string();
                return self.fail(Vec::new(), DkgFault::KeyComputation(reason));
            }
            return self.complain(bad);
        }
        self.unchecked.clear();
        let key_share = match self.compute_key(&group, &verifying) {
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
        let mut out = self.to_others(&DkgBody::Certificate {
            transcript,
            signature: ByteBuf::from(signature.to_vec()),
        });
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
        let mine = pending.key_share.transcript;
        let Some((member, _)) = self.roster.members().get(sender).copied() else {
            return Vec::new();
        };
        if self.disputes.contains_key(&sender) {
            return Vec::new();
        }
        if !member_verify(&member, transcript, &signature) {
            return self.fail(vec![member], DkgFault::BadCertificate);
        }
        if transcript != mine {
            // Honest members hold one transcript unless a dealer showed them different
            // packages: show the member every signed round-1 digest held here, and
            // settle it with the ones it shows back.
            self.disputes.insert(sender, transcript);
            let mut out = vec![DkgOutput::Send {
                to: member,
                msg: DkgMessage {
                    version: message::DKG_VERSION,
                    session: self.session,
                    body: DkgBody::Transcript {
                        round1: self.signed_round1s(),
                    },
                },
            }];
            out.extend(self.settle_dispute(sender));
            return out;
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

    /// A member's signed round-1 digests, shown to settle a dispute.
    fn on_transcript(&mut self, sender: usize, round1: Vec<SignedRound1>) -> Vec<DkgOutput> {
        if sender == self.me || round1.len() != self.roster.len() {
            return match self.roster.members().get(sender) {
                Some((member, _)) if self.disputes.contains_key(&sender) => {
                    let member = *member;
                    self.fail(vec![member], DkgFault::AnotherTranscript)
                }
                _ => Vec::new(),
            };
        }
        self.their_round1s.entry(sender).or_insert(round1);
        self.settle_dispute(sender)
    }

    /// Settles the dispute with `sender` once its certificate and its signed
    /// round-1 digests are both in: digests that hash to another transcript than it
    /// certified, or a digest its dealer never signed, blame the member; a dealer's
    /// signature on a digest other than the one held here blames the dealer.
    fn settle_dispute(&mut self, sender: usize) -> Vec<DkgOutput> {
        let (Some(claimed), Some(theirs)) =
            (self.disputes.get(&sender), self.their_round1s.get(&sender))
        else {
            return Vec::new();
        };
        let Some((member, _)) = self.roster.members().get(sender).copied() else {
            return Vec::new();
        };
        let digests: Vec<[u8; 32]> = theirs.iter().map(|s| s.digest).collect();
        if transcript_of(&self.session, &self.roster, &digests) != *claimed {
            return self.fail(vec![member], DkgFault::AnotherTranscript);
        }
        let differing = self
            .round1s
            .iter()
            .zip(theirs)
            .find(|((_, held), their)| held.signed.digest != their.digest)
            .map(|((index, held), their)| (*index, held.signed.clone(), their.clone()));
        match differing {
            Some((index, held, their)) => {
                let dealer = self.roster.members().get(index).map(|(m, _)| *m);
                match dealer {
                    Some(dealer)
                        if message::proves_equivocation(&self.session, &dealer, &held, &their) =>
                    {
                        self.equivocation_proven(index, held, their)
                    }
                    _ => self.fail(vec![member], DkgFault::AnotherTranscript),
                }
            }
            None => self.fail(vec![member], DkgFault::AnotherTranscript),
        }
    }

    /// Every dealer's signed round-1 digest held here, in roster order.
    fn signed_round1s(&self) -> Vec<SignedRound1> {
        self.round1s.values().map(|h| h.signed.clone()).collect()
    }

    fn transcript(&self) -> [u8; 32] {
        let digests: Vec<[u8; 32]> = self.round1s.values().map(|h| h.signed.digest).collect();
        transcript_of(&self.session, &self.roster, &digests)
    }

    /// Whether this member's summed shares match the group's verifying shares
    /// (`verifying[n - 1]` for share n).
    fn shares_sum_to(&self, verifying: &[ProjectivePoint]) -> bool {
        let Some(numbers) = self.roster.shares_of(self.me) else {
            return false;
        };
        numbers.enumerate().all(|(offset, n)| {
            let sum = self
                .received
                .values()
                .map(|values| values.get(offset).copied().unwrap_or(Scalar::ZERO))
                .fold(Scalar::ZERO, |acc, v| acc + v);
            let expected = usize::from(n).checked_sub(1).and_then(|i| verifying.get(i));
            expected.is_some_and(|v| ProjectivePoint::GENERATOR * sum == *v)
        })
    }

    /// The key share from the group commitment and its verifying shares
    /// (`verifying[n - 1]` for share n).
    fn compute_key(
        &self,
        group: &[ProjectivePoint],
        verifying: &[ProjectivePoint],
    ) -> Result<KeyShare, String> {
        let group_key = group.first().copied().unwrap_or(ProjectivePoint::IDENTITY);
        let verifying_key =
            frost_secp256k1_tr::VerifyingKey::deserialize(&curve::point_bytes(&group_key))
                .map_err(|e| format!("group key: {e}"))?;
        let frost = |e: frost_secp256k1_tr::Error| e.to_string();
        let mut verifying_shares = BTreeMap::new();
        for (n, share) in (1..=self.roster.total_shares()).zip(verifying) {
            let id = identifier(n).ok_or("share number 0")?;
            verifying_shares.insert(
                id,
                VerifyingShare::deserialize(&curve::point_bytes(share)).map_err(frost)?,
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

/// The transcript hash every member certifies: the session, the roster and every
/// dealer's round-1 digest in roster order.
fn transcript_of(session: &SessionId, roster: &Roster, round1_digests: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tenure/frost-fed/dkg/transcript/v2");
    h.update(session);
    h.update(roster.digest());
    for digest in round1_digests {
        h.update(digest);
    }
    h.finalize().into()
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
