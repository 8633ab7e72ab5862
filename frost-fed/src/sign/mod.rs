//! Signing without a trusted coordinator, sans-IO (ROAST-style; seed 004, "validation
//! before signing"; seed 001 "Producer Signing Protocol": any producer may ask, and
//! signing goes on while members holding 67 shares answer).
//!
//! Any member may ask the federation to sign a payload. Every member runs the
//! application's [`Validator`] on the payload and signs only the digest it approves.
//! Each request has [`coordinator_count`] coordinators ([`coordinators`]): the member
//! that asked first, then the others ranked by a hash of the request and member, the
//! k-th starting `k × stagger` after the request unless a signature has appeared, so
//! a crashed coordinator costs one stagger. That count is ROAST's n − t + 1 for
//! weights: with q the fewest members whose shares reach the threshold, at most
//! n − q members can be faulty while the honest still sign, so any n − q + 1
//! distinct coordinators include an honest one (and never fewer than
//! [`SigningConfig::coordinators`]).
//!
//! The asker coordinates first because it is the one member known to be up and to
//! want the signature, and because members can then commit to it as soon as they
//! approve the request: a member sends the asker its nonce commitments with no
//! `Start` in between, so a signature takes two round trips from the asker (request
//! and commitments, package and shares), not two and a half from a ranked
//! coordinator. A later coordinator announces itself with `Start`; a `Start` that
//! arrives before its request (they travel different paths) is remembered, at most
//! [`MAX_EARLY_STARTS`], and answered once the request is approved: dropping it left
//! that coordinator without this member's commitments.
//!
//! A payload the validator refuses is put to it again on every tick for
//! [`SigningConfig::approval_wait`] before the refusal stands: the request can
//! arrive before what the validator waits for (a producer's pre-commit to the
//! proposal it names), and a member that refused at once was missing from every
//! session of the request.
//!
//! A coordinator collects nonce commitments and opens a session as soon as the
//! members ready to sign hold the threshold of shares. A member that answers a
//! session sends fresh commitments with its shares, so it is ready again at once; a
//! member that stalls is simply not ready, and once a session has waited
//! [`SigningConfig::patience`] the coordinator opens another with the members that
//! are. A member's answer is checked when it arrives: exactly one share for each
//! share number it holds, no other; an incomplete answer or a share labelled with a
//! number the member does not hold marks it malicious at once. Share values are
//! checked on aggregation (`frost-core` names every member whose share fails). A
//! member marked malicious is never put in a session of that request again (ROAST),
//! and signing goes on while the members not excluded hold the threshold.
//!
//! The result is a [`SignatureRecord`]: the BIP340 signature plus the package and
//! shares, from which any verifier learns who signed and their weight. The
//! coordinator checks the shares in one batch ([`batch`]) and broadcasts the record;
//! the member that asked verifies it in full ([`SignOutput::Signed`]), every other
//! member only that the group signed ([`SignOutput::Seen`]): checking who signed is
//! the application's, where it matters (block validation checks a block's evidence),
//! and doing it at every member too doubled the cost of a signature.

pub mod batch;
pub mod message;
pub mod record;

use crate::ids::RequestId;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use frost_secp256k1_tr::{
    Identifier, SigningPackage,
    round1::{self, SigningCommitments, SigningNonces},
    round2::SignatureShare,
};
use rand_core::{CryptoRng, RngCore};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::{
    roster::MemberId,
    share::{KeyShare, identifier},
};
pub use message::{SignBody, SignMessage};
pub use record::{RecordError, SignatureRecord, SignerSet, verify_bip340};

/// The application's say on what the federation signs: block rules for producers,
/// payout rules for a pool.
pub trait Validator {
    /// Why this application refuses a payload (its own typed reasons: an invalid
    /// block, a skewed payout). Reported in [`SignOutput::Refused`] as text.
    type Refusal: std::fmt::Display;
    /// The 32-byte digest to sign for `payload`, or why this member refuses.
    fn approve(&self, payload: &[u8]) -> Result<[u8; 32], Self::Refusal>;
}

/// Any function from payload to digest is a validator; its error is the refusal.
impl<F, E> Validator for F
where
    F: Fn(&[u8]) -> Result<[u8; 32], E>,
    E: std::fmt::Display,
{
    type Refusal = E;
    fn approve(&self, payload: &[u8]) -> Result<[u8; 32], E> {
        self(payload)
    }
}

/// How many members coordinate each request: ROAST's n − t + 1 for weights (see the
/// module docs), and at least `minimum`.
pub fn coordinator_count(roster: &crate::Roster, minimum: usize) -> usize {
    let mut weights: Vec<u16> = roster.members().iter().map(|(_, w)| *w).collect();
    weights.sort_unstable_by(|a, b| b.cmp(a));
    let threshold = u32::from(roster.threshold());
    let mut sum = 0u32;
    let quorum = weights
        .iter()
        .take_while(|w| {
            let before = sum;
            sum = sum.saturating_add(u32::from(**w));
            before < threshold
        })
        .count();
    weights
        .len()
        .saturating_sub(quorum)
        .saturating_add(1)
        .max(minimum)
        .max(1)
        .min(weights.len().max(1))
}

/// Tuning of signing.
#[derive(Clone, Debug)]
pub struct SigningConfig {
    /// The fewest members that coordinate one request; the roster may need more
    /// ([`coordinator_count`]).
    pub coordinators: usize,
    /// Delay between one coordinator and the next taking up a request.
    pub stagger: Duration,
    /// How long an open session may wait before another is opened with the members
    /// ready now.
    pub patience: Duration,
    /// A request still unsigned after this is given up.
    pub request_timeout: Duration,
    /// A request this member's validator refuses is put to it again every tick for
    /// this long before the refusal stands: the request and what the validator waits
    /// for (its producer's pre-commit to a proposal) travel different paths, and a
    /// member that refused for good would be missing from every session.
    pub approval_wait: Duration,
    /// Requests tracked at once; more are refused.
    pub max_requests: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            coordinators: 3,
            stagger: Duration::from_millis(300),
            patience: Duration::from_millis(200),
            request_timeout: Duration::from_secs(30),
            approval_wait: Duration::from_secs(1),
            max_requests: 64,
        }
    }
}

/// What signing asks its driver to do, and what it reports.
#[derive(Clone, Debug)]
pub enum SignOutput {
    /// Send to every other member.
    Broadcast(SignMessage),
    /// Send to one member.
    Send {
        /// The member.
        to: MemberId,
        /// The message.
        msg: SignMessage,
    },
    /// The federation signed a request this member asked for or coordinated; the
    /// record is verified, shares included.
    Signed {
        /// The request.
        request: RequestId,
        /// The signature and its evidence.
        record: SignatureRecord,
        /// Who signed.
        signers: SignerSet,
        /// Sessions the signing coordinator opened for it, as it reported them.
        sessions: u32,
    },
    /// Another member's request was signed: the signature verifies under the group
    /// key; who signed is not checked here ([`SignatureRecord::verify`] does).
    Seen {
        /// The request.
        request: RequestId,
        /// The signature and its evidence, unchecked.
        record: SignatureRecord,
    },
    /// This member's validator refused a request.
    Refused {
        /// The request.
        request: RequestId,
        /// The validator's reason.
        reason: String,
    },
    /// A request this member coordinated or asked for could not be signed.
    Failed {
        /// The request.
        request: RequestId,
        /// Why.
        reason: String,
    },
    /// A member sent an invalid signature share and is excluded from this request.
    Cheater {
        /// The request.
        request: RequestId,
        /// The member.
        member: MemberId,
    },
}

struct Session {
    package: SigningPackage,
    members: BTreeSet<MemberId>,
    shares: BTreeMap<MemberId, Vec<(u16, SignatureShare)>>,
    opened: Instant,
    /// A member's answer was malformed: no signature can come of it.
    dead: bool,
}

#[derive(Default)]
struct Coordination {
    ready: BTreeMap<MemberId, BTreeMap<u16, SigningCommitments>>,
    malicious: BTreeSet<MemberId>,
    sessions: BTreeMap<u32, Session>,
    next_session: u32,
}

struct Request {
    digest: Option<[u8; 32]>,
    /// The payload, kept while the validator refuses it and may still approve.
    unapproved: Option<Vec<u8>>,
    /// Coordinators that started while the payload was not approved here.
    started: BTreeSet<MemberId>,
    received: Instant,
    coordinators: Vec<MemberId>,
    /// Nonces committed to each coordinator, by share number.
    nonces: BTreeMap<MemberId, BTreeMap<u16, SigningNonces>>,
    coordinating: Option<Coordination>,
    asked_here: bool,
    done: bool,
    /// The signature, once made: a member asking again for a payload the group
    /// already signed (a new leader re-asking for what its predecessor had signed)
    /// gets it at once; the other members would ignore a second request.
    record: Option<SignatureRecord>,
}

/// One member's signing: its member side and its coordinator side.
pub struct Signing<V> {
    key: Arc<KeyShare>,
    validator: V,
    config: SigningConfig,
    requests: BTreeMap<RequestId, Request>,
    /// Coordinators whose `Start` came before their request, oldest first.
    early_starts: std::collections::VecDeque<(RequestId, MemberId)>,
}

/// The request id of `payload` under `key`: every member derives the same.
pub fn request_id(key: &KeyShare, payload: &[u8]) -> RequestId {
    let mut h = Sha256::new();
    h.update(b"tenure/frost-fed/sign/request/v1");
    h.update(key.transcript);
    h.update(payload);
    RequestId(h.finalize().into())
}

/// Starts kept for requests not received yet, at most.
pub const MAX_EARLY_STARTS: usize = 256;

/// The coordinators of request `id` asked by `asker`, in the order they take it up:
/// the asker, then the others by [`ranking`], [`coordinator_count`] in all.
pub fn coordinators(
    key: &KeyShare,
    id: RequestId,
    asker: MemberId,
    minimum: usize,
) -> Vec<MemberId> {
    let count = coordinator_count(&key.roster, minimum);
    let asker = key.roster.index_of(&asker).map(|_| asker);
    asker
        .into_iter()
        .chain(ranking(key, id).into_iter().filter(|m| Some(*m) != asker))
        .take(count)
        .collect()
}

/// Every member in the order it coordinates request `id` after the asker: by a hash
/// of the request and the member, so no one can choose to lead.
pub fn ranking(key: &KeyShare, id: RequestId) -> Vec<MemberId> {
    let mut ranked: Vec<([u8; 32], MemberId)> = key
        .roster
        .members()
        .iter()
        .map(|(m, _)| {
            let mut h = Sha256::new();
            h.update(id);
            h.update(m.0);
            (h.finalize().into(), *m)
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, m)| m).collect()
}

impl<V: Validator> Signing<V> {
    /// Signing with `key`, approving payloads with `validator`.
    pub fn new(key: Arc<KeyShare>, validator: V, config: SigningConfig) -> Self {
        Signing {
            key,
            validator,
            config,
            requests: BTreeMap::new(),
            early_starts: std::collections::VecDeque::new(),
        }
    }

    /// Signs with `key` from now on (a new term's, or a retried DKG's): requests under
    /// the old key are dropped; the validator stays.
    pub fn rekey(&mut self, key: Arc<KeyShare>) {
        self.key = key;
        self.requests.clear();
        self.early_starts.clear();
    }

    fn me(&self) -> MemberId {
        self.key.member
    }

    fn message(&self, request: RequestId, coordinator: MemberId, body: SignBody) -> SignMessage {
        SignMessage {
            version: message::SIGN_VERSION,
            request,
            coordinator,
            body,
        }
    }

    /// Asks the federation to sign `payload`. Returns the request id and messages.
    pub fn request<R: RngCore + CryptoRng>(
        &mut self,
        payload: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> (RequestId, Vec<SignOutput>) {
        let id = request_id(&self.key, payload);
        if let Some(r) = self.requests.get_mut(&id)
            && r.done
            && let Some(record) = r.record.clone()
        {
            r.asked_here = true;
            // Asked here now: checked in full, as the asker's record always is.
            let out = match record.verify(&self.key.public, &self.key.roster) {
                Ok(signers) => SignOutput::Signed {
                    request: id,
                    record,
                    signers,
                    sessions: 0,
                },
                Err(e) => SignOutput::Failed {
                    request: id,
                    reason: format!("the signature made earlier does not verify: {e}"),
                },
            };
            return (id, vec![out]);
        }
        let mut out = vec![SignOutput::Broadcast(self.message(
            id,
            self.me(),
            SignBody::Request {
                payload: ByteBuf::from(payload.to_vec()),
            },
        ))];
        let me = self.me();
        out.extend(self.on_request(id, payload, me, now, rng));
        if let Some(r) = self.requests.get_mut(&id) {
            r.asked_here = true;
        }
        (id, out)
    }

    /// A message from `from` (authenticated by the channel layer).
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        from: MemberId,
        msg: SignMessage,
        now: Instant,
        rng: &mut R,
    ) -> Vec<SignOutput> {
        if self.key.roster.index_of(&from).is_none() || msg.version != message::SIGN_VERSION {
            return Vec::new();
        }
        let out = match msg.body {
            SignBody::Request { payload } => {
                if request_id(&self.key, &payload) != msg.request {
                    return Vec::new();
                }
                self.on_request(msg.request, &payload, from, now, rng)
            }
            SignBody::Start if from == msg.coordinator => {
                if !self.requests.contains_key(&msg.request) {
                    self.remember_start(msg.request, from);
                }
                self.on_start(msg.request, from, rng)
            }
            SignBody::Commit { commitments } if msg.coordinator == self.me() => {
                self.on_commit(msg.request, from, &commitments, now)
            }
            SignBody::Package { session, package } if from == msg.coordinator => {
                self.on_package(msg.request, from, session, &package, rng)
            }
            SignBody::Shares {
                session,
                shares,
                next,
            } if msg.coordinator == self.me() => {
                self.on_shares(msg.request, from, session, &shares, &next, now)
            }
            SignBody::Done { record, sessions } => self.on_done(msg.request, &record, sessions),
            _ => Vec::new(),
        };
        self.deliver_local(out, now, rng)
    }

    /// Time passed: later coordinators take up unsigned requests, stalled sessions are
    /// replaced, old requests are given up.
    pub fn on_tick<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Vec<SignOutput> {
        let mut out = Vec::new();
        let me = self.me();
        let ids: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in ids {
            let Some(r) = self.requests.get(&id) else {
                continue;
            };
            let age = now.saturating_duration_since(r.received);
            if age >= self.config.request_timeout {
                if !r.done && (r.asked_here || r.coordinating.is_some()) {
                    out.push(SignOutput::Failed {
                        request: id,
                        reason: format!("not signed within {:?}", self.config.request_timeout),
                    });
                }
                self.requests.remove(&id);
                continue;
            }
            if r.digest.is_none() {
                out.extend(self.approve_again(id, age, rng));
                continue;
            }
            if r.done {
                continue;
            }
            if r.coordinating.is_none() {
                let rank = r.coordinators.iter().position(|c| *c == me);
                if let Some(rank) = rank
                    && age >= self.config.stagger * rank as u32
                {
                    out.extend(self.start_coordinating(id, rng));
                }
            } else {
                out.extend(self.maybe_open_session(id, now));
            }
        }
        self.deliver_local(out, now, rng)
    }

    /// Messages to this member itself are handled at once, not sent.
    fn deliver_local<R: RngCore + CryptoRng>(
        &mut self,
        outputs: Vec<SignOutput>,
        now: Instant,
        rng: &mut R,
    ) -> Vec<SignOutput> {
        let me = self.me();
        let mut pending = outputs;
        let mut out = Vec::new();
        let mut rounds = 0;
        while !pending.is_empty() && rounds < 16 {
            rounds += 1;
            let mut next = Vec::new();
            for output in pending {
                match output {
                    SignOutput::Send { to, msg } if to == me => {
                        next.extend(self.handle(me, msg, now, rng));
                    }
                    other => out.push(other),
                }
            }
            pending = next;
        }
        out
    }

    /// A request the validator refused: asked again while `approval_wait` lasts; once
    /// approved, this member commits to the asker and to every coordinator that
    /// started meanwhile. After the wait the refusal stands and is reported.
    fn approve_again<R: RngCore + CryptoRng>(
        &mut self,
        id: RequestId,
        age: Duration,
        rng: &mut R,
    ) -> Vec<SignOutput> {
        let me = self.me();
        let wait = self.config.approval_wait;
        let Some(r) = self.requests.get_mut(&id) else {
            return Vec::new();
        };
        let Some(payload) = r.unapproved.take() else {
            return Vec::new();
        };
        match self.validator.approve(&payload) {
            Ok(digest) => {
                r.digest = Some(digest);
                let asker = r.coordinators.first().copied().filter(|a| *a != me);
                let started: Vec<MemberId> = std::mem::take(&mut r.started).into_iter().collect();
                let mut out = Vec::new();
                for coordinator in asker.into_iter().chain(started) {
                    out.extend(self.on_start(id, coordinator, rng));
                }
                out
            }
            Err(refusal) if age >= wait => vec![SignOutput::Refused {
                request: id,
                reason: refusal.to_string(),
            }],
            Err(_) => {
                r.unapproved = Some(payload);
                Vec::new()
            }
        }
    }

    /// A `Start` for a request not received yet: answered when it arrives.
    fn remember_start(&mut self, id: RequestId, coordinator: MemberId) {
        if self.early_starts.contains(&(id, coordinator)) {
            return;
        }
        self.early_starts.push_back((id, coordinator));
        while self.early_starts.len() > MAX_EARLY_STARTS {
            self.early_starts.pop_front();
        }
    }

    fn on_request<R: RngCore + CryptoRng>(
        &mut self,
        id: RequestId,
        payload: &[u8],
        asker: MemberId,
        now: Instant,
        rng: &mut R,
    ) -> Vec<SignOutput> {
        if self.requests.contains_key(&id) {
            return Vec::new();
        }
        if self.requests.len() >= self.config.max_requests {
            return vec![SignOutput::Refused {
                request: id,
                reason: format!("{} requests already open", self.config.max_requests),
            }];
        }
        let coordinators = coordinators(&self.key, id, asker, self.config.coordinators);
        let (digest, unapproved) = match self.validator.approve(payload) {
            Ok(digest) => (Some(digest), None),
            // Put to the validator again on every tick for `approval_wait`.
            Err(_) => (None, Some(payload.to_vec())),
        };
        let mut out = Vec::new();
        self.requests.insert(
            id,
            Request {
                digest,
                unapproved,
                started: BTreeSet::new(),
                received: now,
                coordinators,
                nonces: BTreeMap::new(),
                coordinating: None,
                asked_here: false,
                record: None,
                done: false,
            },
        );
        // Commitments go to the asker at once, and to every coordinator that already
        // started; `on_start` keeps to approved requests and listed coordinators.
        let early: Vec<MemberId> = self
            .early_starts
            .iter()
            .filter(|(r, _)| *r == id)
            .map(|(_, c)| *c)
            .collect();
        self.early_starts.retain(|(r, _)| *r != id);
        if asker != self.me() {
            out.extend(self.on_start(id, asker, rng));
        }
        for coordinator in early {
            out.extend(self.on_start(id, coordinator, rng));
        }
        out.extend(self.on_tick(now, rng));
        out
    }

    fn start_coordinating<R: RngCore + CryptoRng>(
        &mut self,
        id: RequestId,
        rng: &mut R,
    ) -> Vec<SignOutput> {
        let me = self.me();
        let Some(r) = self.requests.get_mut(&id) else {
            return Vec::new();
        };
        r.coordinating = Some(Coordination::default());
        let mut out = vec![SignOutput::Broadcast(self.message(id, me, SignBody::Start))];
        out.extend(self.on_start(id, me, rng));
        out
    }

    /// Fresh nonces for every share this member holds, committed to `coordinator`.
    fn commit<R: RngCore + CryptoRng>(
        &mut self,
        id: RequestId,
        coordinator: MemberId,
        rng: &mut R,
    ) -> Option<Vec<(u16, ByteBuf)>> {
        let key = self.key.clone();
        let r = self.requests.get_mut(&id)?;
        let mut nonces = BTreeMap::new();
        let mut commitments = Vec::new();
        for (n, package) in &key.key_packages {
            let (nonce, commitment) = round1::commit(package.signing_share(), rng);
            nonces.insert(*n, nonce);
            commitments.push((*n, ByteBuf::from(commitment.serialize().ok()?)));
        }
        r.nonces.insert(coordinator, nonces);
        Some(commitments)
    }

    fn on_start<R: RngCore + CryptoRng>(
        &mut self,
        id: RequestId,
        coordinator: MemberId,
        rng: &mut R,
    ) -> Vec<SignOutput> {
        let Some(r) = self.requests.get_mut(&id) else {
            return Vec::new();
        };
        if r.digest.is_none() && r.unapproved.is_some() && r.coordinators.contains(&coordinator) {
            // Answered if the validator approves in time.
            r.started.insert(coordinator);
        }
        if r.done
            || r.digest.is_none()
            || !r.coordinators.contains(&coordinator)
            || r.nonces.contains_key(&coordinator)
        {
            return Vec::new();
        }
        let Some(commitments) = self.commit(id, coordinator, rng) else {
            return Vec::new();
        };
        vec![SignOutput::Send {
            to: coordinator,
            msg: self.message(id, coordinator, SignBody::Commit { commitments }),
        }]
    }

    /// The member's commitments, if they are exactly one per share it holds.
    fn parse_commitments(
        &self,
        member: &MemberId,
        commitments: &[(u16, ByteBuf)],
    ) -> Option<BTreeMap<u16, SigningCommitments>> {
        let index = self.key.roster.index_of(member)?;
        let numbers: BTreeSet<u16> = self.key.roster.shares_of(index)?.collect();
        let parsed: BTreeMap<u16, SigningCommitments> = commitments
            .iter()
            .map(|(n, b)| Some((*n, SigningCommitments::deserialize(b).ok()?)))
            .collect::<Option<_>>()?;
        (parsed.keys().copied().collect::<BTreeSet<u16>>() == numbers).then_some(parsed)
    }

    fn on_commit(
        &mut self,
        id: RequestId,
        from: MemberId,
        commitments: &[(u16, ByteBuf)],
        now: Instant,
    ) -> Vec<SignOutput> {
        let Some(parsed) = self.parse_commitments(&from, commitments) else {
            return Vec::new();
        };
        let Some(c) = self
            .requests
            .get_mut(&id)
            .filter(|r| !r.done)
            .and_then(|r| r.coordinating.as_mut())
        else {
            return Vec::new();
        };
        if c.malicious.contains(&from)
            || c.sessions
                .values()
                .any(|s| s.members.contains(&from) && !s.shares.contains_key(&from))
        {
            return Vec::new();
        }
        c.ready.insert(from, parsed);
        self.maybe_open_session(id, now)
    }

    /// Opens a session when the ready members hold the threshold and no open session
    /// is still within its patience.
    fn maybe_open_session(&mut self, id: RequestId, now: Instant) -> Vec<SignOutput> {
        let me = self.me();
        let threshold = u32::from(self.key.roster.threshold());
        let roster = self.key.roster.clone();
        let patience = self.config.patience;
        let Some(r) = self.requests.get_mut(&id).filter(|r| !r.done) else {
            return Vec::new();
        };
        let Some(digest) = r.digest else {
            return Vec::new();
        };
        let Some(c) = r.coordinating.as_mut() else {
            return Vec::new();
        };
        // A session holding a member marked malicious cannot give a signature, so
        // it is not waited for.
        let waiting = c.sessions.values().any(|s| {
            !s.dead
                && s.members.is_disjoint(&c.malicious)
                && s.shares.len() < s.members.len()
                && now.saturating_duration_since(s.opened) < patience
        });
        let ready: BTreeSet<MemberId> = c.ready.keys().copied().collect();
        if waiting || roster.weight(&ready) < threshold {
            return Vec::new();
        }
        // The fewest ready members that reach the threshold, heaviest first: fewer
        // shares make a cheaper session.
        let mut candidates: Vec<(u16, MemberId)> =
            ready.iter().map(|m| (roster.weight_of(m), *m)).collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut chosen = BTreeSet::new();
        let mut weight = 0u32;
        for (w, m) in candidates {
            if weight >= threshold {
                break;
            }
            weight += u32::from(w);
            chosen.insert(m);
        }
        let mut commitments: BTreeMap<Identifier, SigningCommitments> = BTreeMap::new();
        for m in &chosen {
            if let Some(list) = c.ready.remove(m) {
                for (n, commitment) in list {
                    if let Some(i) = identifier(n) {
                        commitments.insert(i, commitment);
                    }
                }
            }
        }
        let package = SigningPackage::new(commitments, &digest);
        let Ok(bytes) = package.serialize() else {
            return Vec::new();
        };
        let session = c.next_session;
        c.next_session += 1;
        c.sessions.insert(
            session,
            Session {
                package,
                members: chosen.clone(),
                shares: BTreeMap::new(),
                opened: now,
                dead: false,
            },
        );
        chosen
            .into_iter()
            .map(|to| SignOutput::Send {
                to,
                msg: SignMessage {
                    version: message::SIGN_VERSION,
                    request: id,
                    coordinator: me,
                    body: SignBody::Package {
                        session,
                        package: ByteBuf::from(bytes.clone()),
                    },
                },
            })
            .collect()
    }

    fn on_package<R: RngCore + CryptoRng>(
        &mut self,
        id: RequestId,
        coordinator: MemberId,
        session: u32,
        package: &[u8],
        rng: &mut R,
    ) -> Vec<SignOutput> {
        let key = self.key.clone();
        let Ok(package) = SigningPackage::deserialize(package) else {
            return Vec::new();
        };
        let Some(r) = self.requests.get_mut(&id).filter(|r| !r.done) else {
            return Vec::new();
        };
        let Some(digest) = r.digest else {
            return Vec::new();
        };
        if package.message().as_slice() != digest {
            return Vec::new();
        }
        let Some(nonces) = r.nonces.get(&coordinator) else {
            return Vec::new();
        };
        // The package must hold exactly the commitments this member made for this
        // coordinator, for every share it holds; each nonce signs once.
        let mut signers = Vec::with_capacity(key.key_packages.len());
        for (n, kp) in &key.key_packages {
            let (Some(i), Some(nonce)) = (identifier(*n), nonces.get(n)) else {
                return Vec::new();
            };
            if package.signing_commitments().get(&i) != Some(nonce.commitments()) {
                return Vec::new();
            }
            signers.push((nonce, kp));
        }
        // All of this member's shares with one precomputation (`batch`).
        let Ok(signed) = batch::sign_all(&package, &signers) else {
            return Vec::new();
        };
        let shares: Vec<(u16, ByteBuf)> = key
            .key_packages
            .keys()
            .zip(signed)
            .map(|(n, share)| (*n, ByteBuf::from(share.serialize())))
            .collect();
        r.nonces.remove(&coordinator);
        let Some(next) = self.commit(id, coordinator, rng) else {
            return Vec::new();
        };
        vec![SignOutput::Send {
            to: coordinator,
            msg: self.message(
                id,
                coordinator,
                SignBody::Shares {
                    session,
                    shares,
                    next,
                },
            ),
        }]
    }

    fn on_shares(
        &mut self,
        id: RequestId,
        from: MemberId,
        session: u32,
        shares: &[(u16, ByteBuf)],
        next: &[(u16, ByteBuf)],
        now: Instant,
    ) -> Vec<SignOutput> {
        let key = self.key.clone();
        let next = self.parse_commitments(&from, next);
        let Some(r) = self.requests.get_mut(&id).filter(|r| !r.done) else {
            return Vec::new();
        };
        let Some(c) = r.coordinating.as_mut() else {
            return Vec::new();
        };
        let Some(s) = c.sessions.get_mut(&session) else {
            return Vec::new();
        };
        if !s.members.contains(&from) || s.shares.contains_key(&from) {
            return Vec::new();
        }
        // Exactly one well-formed share per share number the member holds: anything
        // else (a share left out, a number it does not hold, bytes that are no share)
        // can only fail the session, so the member is marked at once.
        let held: Option<BTreeSet<u16>> = key
            .roster
            .index_of(&from)
            .and_then(|i| key.roster.shares_of(i))
            .map(|r| r.collect());
        let parsed: Option<Vec<(u16, SignatureShare)>> = shares
            .iter()
            .map(|(n, b)| Some((*n, SignatureShare::deserialize(b).ok()?)))
            .collect();
        let numbers: BTreeSet<u16> = shares.iter().map(|(n, _)| *n).collect();
        let well_formed =
            parsed.filter(|p| held.as_ref() == Some(&numbers) && p.len() == numbers.len());
        let mut out = Vec::new();
        match well_formed {
            Some(parsed) => {
                s.shares.insert(from, parsed);
                // Its fresh commitments make it ready for another session.
                if let Some(next) = next
                    && !c.malicious.contains(&from)
                {
                    c.ready.insert(from, next);
                }
            }
            None => {
                // The session cannot give a signature: it waits no longer, and the
                // others' answers to it still bring their fresh commitments.
                s.shares.insert(from, Vec::new());
                s.dead = true;
                c.ready.remove(&from);
                if c.malicious.insert(from) {
                    out.push(SignOutput::Cheater {
                        request: id,
                        member: from,
                    });
                }
            }
        }
        let complete = s.shares.len() == s.members.len();
        if complete && s.dead {
            c.sessions.remove(&session);
        } else if complete {
            out.extend(Self::finish_session(&key, id, c, session));
        }
        if let Some(record) = out.iter().find_map(|o| match o {
            SignOutput::Signed { record, .. } => Some(record.clone()),
            _ => None,
        }) {
            r.done = true;
            r.record = Some(record);
            return out;
        }
        out.extend(self.after_exclusion(id, now));
        out
    }

    /// After a session ended without a signature: give up if the members not marked
    /// malicious hold too few shares, else open another session when ready.
    fn after_exclusion(&mut self, id: RequestId, now: Instant) -> Vec<SignOutput> {
        let roster = self.key.roster.clone();
        let Some(r) = self.requests.get_mut(&id).filter(|r| !r.done) else {
            return Vec::new();
        };
        let Some(c) = r.coordinating.as_ref() else {
            return Vec::new();
        };
        let remaining: BTreeSet<MemberId> = roster
            .members()
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| !c.malicious.contains(m))
            .collect();
        if roster.weight(&remaining) < u32::from(roster.threshold()) {
            r.done = true;
            return vec![SignOutput::Failed {
                request: id,
                reason: "the members not excluded hold too few shares".into(),
            }];
        }
        self.maybe_open_session(id, now)
    }

    /// Aggregates a complete session: the signature, or the cheaters excluded.
    fn finish_session(
        key: &KeyShare,
        id: RequestId,
        c: &mut Coordination,
        session: u32,
    ) -> Vec<SignOutput> {
        let Some(s) = c.sessions.remove(&session) else {
            return Vec::new();
        };
        let mut shares = BTreeMap::new();
        let mut numbered = Vec::new();
        for (member, list) in &s.shares {
            for (n, share) in list {
                if let Some(i) = identifier(*n)
                    && key.roster.holder_of(*n) == Some(*member)
                {
                    shares.insert(i, *share);
                    numbered.push((*n, ByteBuf::from(share.serialize())));
                }
            }
        }
        // Every share checked in one batch (which names the cheaters when it fails);
        // the signature is their sum.
        match batch::verify_all(&s.package, &shares, &key.public) {
            Ok(verified) => {
                let Ok(package) = s.package.serialize() else {
                    return Vec::new();
                };
                let mut sig = Vec::with_capacity(64);
                sig.extend_from_slice(&verified.r_x);
                sig.extend_from_slice(&verified.z);
                let mut message = [0u8; 32];
                message.copy_from_slice(s.package.message().get(..32).unwrap_or(&[0; 32]));
                let record = SignatureRecord {
                    message,
                    signature: ByteBuf::from(sig),
                    package: ByteBuf::from(package),
                    shares: numbered,
                };
                // The batch just checked every share: the coordinator need not
                // verify its own record again.
                let signers =
                    SignerSet::of(record.shares.iter().map(|(n, _)| *n).collect(), &key.roster);
                let mut out = Vec::new();
                // A record that cannot be encoded is not sent (members then learn of
                // the signature by their own sessions); it is still ours.
                if let Ok(bytes) = record.to_bytes() {
                    out.push(SignOutput::Broadcast(SignMessage {
                        version: message::SIGN_VERSION,
                        request: id,
                        coordinator: key.member,
                        body: SignBody::Done {
                            record: ByteBuf::from(bytes),
                            sessions: c.next_session,
                        },
                    }));
                }
                out.push(SignOutput::Signed {
                    request: id,
                    record,
                    signers,
                    sessions: c.next_session,
                });
                out
            }
            Err(err) => {
                let culprits: BTreeSet<MemberId> = err
                    .culprits()
                    .iter()
                    .filter_map(|i| {
                        (1..=key.roster.total_shares())
                            .find(|n| identifier(*n).as_ref() == Some(i))
                            .and_then(|n| key.roster.holder_of(n))
                    })
                    .collect();
                let mut out = Vec::new();
                for member in culprits {
                    c.ready.remove(&member);
                    if c.malicious.insert(member) {
                        out.push(SignOutput::Cheater {
                            request: id,
                            member,
                        });
                    }
                }
                out
            }
        }
    }

    fn on_done(&mut self, id: RequestId, record: &[u8], sessions: u32) -> Vec<SignOutput> {
        let Some(r) = self.requests.get_mut(&id).filter(|r| !r.done) else {
            return Vec::new();
        };
        let Ok(record) = SignatureRecord::from_bytes(record) else {
            return Vec::new();
        };
        if r.digest != Some(record.message) {
            return Vec::new();
        }
        // The member that asked checks everything, who signed included; any other
        // only that the group signed (its application checks the evidence where
        // it matters, as block validation does).
        if !r.asked_here {
            if verify_bip340(&self.key.public, &record.message, &record.signature).is_err() {
                return Vec::new();
            }
            r.done = true;
            r.coordinating = None;
            r.nonces.clear();
            r.record = Some(record.clone());
            return vec![SignOutput::Seen {
                request: id,
                record,
            }];
        }
        match record.verify(&self.key.public, &self.key.roster) {
            Ok(signers) => {
                r.done = true;
                r.coordinating = None;
                r.nonces.clear();
                r.record = Some(record.clone());
                vec![SignOutput::Signed {
                    request: id,
                    record,
                    signers,
                    sessions,
                }]
            }
            Err(_) => Vec::new(),
        }
    }
}
