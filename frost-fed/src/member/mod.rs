//! A federation member as one sans-IO state machine: the entry point a node (or a
//! mining pool's hub) drives, with the channels, the echo broadcast, the DKG and
//! signing behind it.
//!
//! The rules it adds to its parts (seed 004, the federation's members talk over
//! end-to-end channels carried by any peer):
//!
//! - **Transport.** Everything a member sends leaves as Noise frames
//!   ([`crate::channel`]); frames travel between overlay peers in bundles
//!   ([`message::encode_bundle`], bounded before decoding). A bundle may come from
//!   any peer, directly or by a relay: only the channel's authentication decides
//!   whose it is. Undecodable bundles are reported ([`MemberOutput::Junk`]) so the
//!   carrier can penalise the peer that handed them over.
//! - **Acks ride the answer.** A carrier that answers a member's bundle (a
//!   request-response exchange) calls [`Member::acks_for`] after handing the bundle
//!   over and puts the frames for that member into its answer: the ack of what
//!   arrived, and any handshake answer, go back on the same exchange instead of an
//!   exchange of their own. The answer is a bundle like any other.
//! - **Batching.** Messages for one member are gathered until the next
//!   [`Member::on_tick`] and leave as one channel message ([`FedMessage::Batch`]), so a
//!   member sends O(members) messages per round however many shares it holds.
//! - **Broadcast tags.** DKG complaints, missing-share notices and openings go by
//!   echo broadcast under the tag
//!   SHA-256("tenure/federation/dkg-broadcast" ‖ session ‖ kind): one broadcast per
//!   member, session and kind, so two different ones prove equivocation. Round-1
//!   packages (signed), round-2 shares, certificates and transcript disputes go point
//!   to point (see [`crate::dkg`]).
//! - **Early messages.** DKG messages for a session this member has not started yet
//!   (the first, a retry, the next term's) are kept (at most [`MAX_EARLY`]) and
//!   replayed when it starts that session.
//! - **Several keys in one life.** Each completed DKG's key replaces the one signing
//!   uses; the validator stays.
//! - **Keys.** A completed DKG is reported ([`MemberOutput::DkgCompleted`]); the caller
//!   persists the key share and then hands it back with [`Member::use_key`], so a
//!   member never signs with a key that a crash could lose. A failed DKG is reported
//!   with the blamed members and what they did; the retry roster must be the same at
//!   every member, so the caller (the chain, which agrees on such things) starts the
//!   retry with `Roster::without` them and the next attempt number.
//! - **Signing.** A request is answered only with the application's
//!   [`Validator`]'s approval ([`crate::sign`]).

pub mod fault;
pub mod message;

use crate::ids::{BroadcastTag, RequestId};
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use bitcoin::secp256k1::Keypair;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::{
    KeyShare, MemberId, Roster,
    broadcast::{BroadcastOutput, EchoBroadcast},
    channel::{ChannelConfig, ChannelKey, ChannelOutput, Channels},
    dkg::{self, Delivery, Dkg, DkgBody, DkgFailure, DkgMessage, DkgOutput},
    sign::{SignOutput, SignatureRecord, Signing, SigningConfig, Validator},
};

pub use fault::SignFault;
pub use message::{
    Broadcasted, BundleError, FedMessage, MAX_BUNDLE_BYTES, MAX_BUNDLE_FRAMES, decode_bundle,
    encode_bundle,
};

/// Early DKG messages kept for a session not started here yet.
pub const MAX_EARLY: usize = 4096;

/// Tuning of a member.
#[derive(Clone, Debug, Default)]
pub struct MemberConfig {
    /// Channels: retransmission, buffers, handshakes.
    pub channel: ChannelConfig,
    /// Signing: coordinators, session stalls, request timeouts.
    pub signing: SigningConfig,
}

/// The channel tuning a federation of `members` uses: a handshake waits longer for
/// its answer in a larger federation, since every member opens its channels to every
/// other at once when a DKG starts (n² handshakes on the same machines), and a new
/// step 1 sent because an answer is merely late costs both sides Diffie-Hellman work.
///
/// The first copy of a message to a member whose round trip is not measured yet waits
/// longer for its ack in the same way: in a DKG round every member sends to every
/// other at once, so a member acks our message only after it has taken the n - 1
/// messages of the round, and the wait grows with n. At 50 members on one machine a
/// fixed 300 ms sent every round-1 package 2.8 more times on average (138 copies per
/// member per round beside 49 messages), each copy acked again: the copies, not the
/// protocol, filled the machine.
fn channel_config(base: &ChannelConfig, members: usize) -> ChannelConfig {
    let members = u32::try_from(members).unwrap_or(u32::MAX);
    ChannelConfig {
        handshake_timeout: base
            .handshake_timeout
            .saturating_add(HANDSHAKE_WAIT_PER_MEMBER.saturating_mul(members)),
        retransmit_initial: base
            .retransmit_initial
            .saturating_add(ACK_WAIT_PER_MEMBER.saturating_mul(members))
            .min(base.retransmit_max),
        ..base.clone()
    }
}

/// Added to the channels' handshake timeout for each member of the federation.
pub const HANDSHAKE_WAIT_PER_MEMBER: std::time::Duration = std::time::Duration::from_millis(25);

/// Added to the channels' first retransmission delay (before a round trip is
/// measured) for each member of the federation.
pub const ACK_WAIT_PER_MEMBER: std::time::Duration = std::time::Duration::from_millis(25);

/// What the member asks its driver to do, or tells it.
#[derive(Debug)]
pub enum MemberOutput {
    /// Send `frame` to `to`'s overlay peer (bundled with others, or relayed).
    Transmit {
        /// The member.
        to: MemberId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// The DKG completed: persist the key share, then [`Member::use_key`].
    DkgCompleted(Box<KeyShare>),
    /// The DKG failed; the retry leaves out the blamed.
    DkgFailed(DkgFailure),
    /// A request was signed.
    Signed {
        /// The request.
        request: RequestId,
        /// The signature and its evidence.
        record: SignatureRecord,
        /// Sessions the signing coordinator opened for it.
        sessions: u32,
    },
    /// A request could not be signed.
    SignFailed {
        /// The request.
        request: RequestId,
        /// Why.
        reason: String,
    },
    /// This member's validator refused a request.
    Refused {
        /// The request.
        request: RequestId,
        /// The validator's reason.
        reason: String,
    },
    /// A member sent an invalid signature share.
    Cheater {
        /// The request.
        request: RequestId,
        /// The member.
        member: MemberId,
    },
    /// A message could not be sent to `to`.
    Undeliverable {
        /// The member.
        to: MemberId,
        /// Why.
        reason: String,
    },
    /// An authenticated message from `from` did not decode.
    Undecodable {
        /// The member.
        from: MemberId,
        /// What the decoder said.
        reason: String,
    },
    /// Bytes handed over by the overlay peer `from` were not a bundle of frames.
    Junk {
        /// The overlay peer that handed them over.
        from: Vec<u8>,
        /// What was wrong.
        error: BundleError,
    },
}

/// Why a DKG could not start here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// This member is not in the roster.
    #[error("this member is not in the roster")]
    NotInRoster,
}

/// Why a signing request could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignRequestError {
    /// No DKG has completed here, and no key was stored.
    #[error("no key yet")]
    NoKey,
}

/// One federation member.
pub struct Member<V> {
    me: MemberId,
    keypair: Keypair,
    /// Every other member whose channel binding verifies.
    others: Vec<MemberId>,
    channels: Channels,
    broadcast: EchoBroadcast,
    dkg: Option<Dkg>,
    /// How long the last completed DKG's phases took here.
    last_dkg_timings: Option<dkg::DkgTimings>,
    early: VecDeque<(MemberId, DkgMessage, Delivery)>,
    signing: Option<Signing<V>>,
    validator: Option<V>,
    config: MemberConfig,
    /// Messages gathered for each member until the next tick.
    outbox: BTreeMap<MemberId, Vec<FedMessage>>,
    /// How this member misbehaves in signing, on purpose ([`fault`]).
    fault: Option<SignFault>,
    /// Signing messages a slow member holds back, with when they may leave.
    held: Vec<(Instant, MemberId, crate::sign::SignMessage)>,
}

impl<V: Validator> Member<V> {
    /// A member with `keypair` and static Noise key `noise_private`; `directory` holds
    /// every member's channel key (this one's too). `stored` is a key share kept
    /// across a restart: signing is ready with it at once.
    pub fn new(
        keypair: Keypair,
        noise_private: Vec<u8>,
        directory: &[ChannelKey],
        validator: V,
        stored: Option<Arc<KeyShare>>,
        config: MemberConfig,
    ) -> Member<V> {
        let me = MemberId::from(keypair.x_only_public_key().0);
        let others = directory
            .iter()
            .filter(|k| k.member != me && k.verify())
            .map(|k| k.member)
            .collect();
        let members: Vec<MemberId> = directory.iter().map(|k| k.member).collect();
        let mut member = Member {
            me,
            keypair,
            others,
            channels: Channels::new(
                me,
                noise_private,
                directory,
                channel_config(&config.channel, directory.len()),
            ),
            broadcast: EchoBroadcast::new(keypair, members),
            dkg: None,
            last_dkg_timings: None,
            early: VecDeque::new(),
            signing: None,
            validator: Some(validator),
            config,
            outbox: BTreeMap::new(),
            fault: None,
            held: Vec::new(),
        };
        if let Some(key) = stored.filter(|k| k.member == me) {
            member.use_key(key);
        }
        member
    }

    /// This member.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// Makes this member misbehave in signing (`None`: honest again). For benchmarks,
    /// simulations and the testnet's byzantine producer.
    pub fn set_fault(&mut self, fault: Option<SignFault>) {
        self.fault = fault;
    }

    /// Takes `key` as a member's channel binding ([`Channels::add`]): a member that
    /// arrived after this one started (its binding published later), or one that
    /// restarted with a new Noise key or overlay identity. Whether anything changed.
    pub fn add_contact(&mut self, key: ChannelKey) -> bool {
        let member = key.member;
        if !self.channels.add(key) {
            return false;
        }
        if !self.others.contains(&member) {
            self.others.push(member);
        }
        self.broadcast.add_member(member);
        true
    }

    /// Whether this member holds a key to sign with.
    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
    }

    /// Starts attempt `attempt` of a DKG for `roster` (every member must start the
    /// same one), keyed by the application's `context`.
    pub fn start_dkg<R: RngCore + CryptoRng>(
        &mut self,
        roster: Roster,
        context: &[u8],
        attempt: u32,
        now: Instant,
        rng: &mut R,
    ) -> Result<Vec<MemberOutput>, StartError> {
        let session = dkg::session_id(context, &roster, attempt);
        // Delivery counts the roster's echoes only: members outside it may be known
        // (enrolled, not selected) and must not hold the quorum up.
        self.broadcast
            .count_only(roster.members().iter().map(|(m, _)| *m).collect());
        let (state, out) = Dkg::start(
            session,
            roster,
            self.keypair,
            dkg::DEFAULT_ROUND_TIMEOUT,
            now,
            rng,
        )
        .ok_or(StartError::NotInRoster)?;
        self.dkg = Some(state);
        let mut outputs = self.on_dkg(out, now);
        // Early messages of this session are replayed; those of any other (an older
        // session's stragglers) are dropped, so they cannot crowd out the next.
        let early: Vec<_> = std::mem::take(&mut self.early)
            .into_iter()
            .filter(|(_, msg, _)| msg.session == session)
            .collect();
        for (from, msg, delivery) in early {
            outputs.extend(self.deliver_dkg(from, msg, delivery, now));
        }
        Ok(outputs)
    }

    /// Signs with `key` from now on: a key share the caller has persisted.
    pub fn use_key(&mut self, key: Arc<KeyShare>) {
        if let Some(signing) = self.signing.as_mut() {
            signing.rekey(key);
        } else if let Some(validator) = self.validator.take() {
            self.signing = Some(Signing::new(key, validator, self.config.signing.clone()));
        }
    }

    /// Asks the federation to sign `payload`; the request's id names its outcome.
    pub fn sign<R: RngCore + CryptoRng>(
        &mut self,
        payload: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Result<(RequestId, Vec<MemberOutput>), SignRequestError> {
        let signing = self.signing.as_mut().ok_or(SignRequestError::NoKey)?;
        let (id, out) = signing.request(payload, now, rng);
        Ok((id, self.on_signing(out, now)))
    }

    /// A bundle of frames handed over by the overlay peer `from` (its id's bytes).
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        from: &[u8],
        bundle: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Vec<MemberOutput> {
        let frames = match decode_bundle(bundle) {
            Ok(frames) => frames,
            Err(error) => {
                return vec![MemberOutput::Junk {
                    from: from.to_vec(),
                    error,
                }];
            }
        };
        let mut outputs = Vec::new();
        for frame in frames {
            let out = self.channels.handle(&frame, now);
            outputs.extend(self.on_channel(out, now, rng));
        }
        outputs
    }

    /// The frames for `member` that can leave at once: its due ack. A carrier that
    /// answers a bundle of `member`'s sends them back in the answer (module docs).
    pub fn acks_for(&mut self, member: MemberId) -> Vec<MemberOutput> {
        let out = self.channels.ack_now(member);
        self.channel_transmits(out)
    }

    /// What this member's channels sent so far, by kind (for benchmarks).
    pub fn channel_stats(&self) -> crate::channel::ChannelStats {
        self.channels.stats()
    }

    /// How long the phases of the last DKG this member completed took here (for
    /// benchmarks).
    pub fn last_dkg_timings(&self) -> Option<dkg::DkgTimings> {
        self.last_dkg_timings
    }

    /// Time passed: the parts' timers run, then what was gathered for each member
    /// leaves as one message.
    pub fn on_tick<R: RngCore + CryptoRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Vec<MemberOutput> {
        let out = self.channels.on_tick(now);
        let mut outputs = self.on_channel(out, now, rng);
        if let Some(dkg) = self.dkg.as_mut() {
            let out = dkg.on_tick(now);
            outputs.extend(self.on_dkg(out, now));
        }
        if let Some(signing) = self.signing.as_mut() {
            let out = signing.on_tick(now, rng);
            outputs.extend(self.on_signing(out, now));
        }
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.held = held;
        for (_, to, msg) in due {
            self.send(to, FedMessage::Sign(msg));
        }
        outputs.extend(self.flush(now));
        outputs
    }

    fn send(&mut self, to: MemberId, msg: FedMessage) {
        self.outbox.entry(to).or_default().push(msg);
    }

    /// Sends what was gathered: one channel message per member. Sending makes more
    /// to send only through local delivery, which the channels do not do, so one pass
    /// empties the outbox.
    fn flush(&mut self, now: Instant) -> Vec<MemberOutput> {
        let outbox = std::mem::take(&mut self.outbox);
        let mut outputs = Vec::new();
        for (to, mut messages) in outbox {
            let msg = if messages.len() == 1 {
                messages.remove(0)
            } else {
                FedMessage::Batch(messages)
            };
            match serde_cbor::to_vec(&msg) {
                Ok(bytes) => {
                    let out = self.channels.send(to, bytes, now);
                    outputs.extend(self.channel_transmits(out));
                }
                Err(err) => outputs.push(MemberOutput::Undeliverable {
                    to,
                    reason: format!("encoding failed: {err}"),
                }),
            }
        }
        outputs
    }

    /// Channel outputs of a send: frames and failures, never deliveries.
    fn channel_transmits(&mut self, outputs: Vec<ChannelOutput>) -> Vec<MemberOutput> {
        outputs
            .into_iter()
            .filter_map(|output| match output {
                ChannelOutput::Transmit { to, frame } => Some(MemberOutput::Transmit { to, frame }),
                ChannelOutput::Undeliverable { to, reason } => {
                    Some(MemberOutput::Undeliverable { to, reason })
                }
                ChannelOutput::Deliver { .. } => None,
            })
            .collect()
    }

    fn on_channel<R: RngCore + CryptoRng>(
        &mut self,
        outputs: Vec<ChannelOutput>,
        now: Instant,
        rng: &mut R,
    ) -> Vec<MemberOutput> {
        let mut out = Vec::new();
        for output in outputs {
            match output {
                ChannelOutput::Transmit { to, frame } => {
                    out.push(MemberOutput::Transmit { to, frame });
                }
                ChannelOutput::Deliver { from, payload } => {
                    match serde_cbor::from_slice::<FedMessage>(&payload) {
                        Ok(msg) => out.extend(self.on_message(from, msg, 0, now, rng)),
                        Err(err) => out.push(MemberOutput::Undecodable {
                            from,
                            reason: err.to_string(),
                        }),
                    }
                }
                ChannelOutput::Undeliverable { to, reason } => {
                    out.push(MemberOutput::Undeliverable { to, reason });
                }
            }
        }
        out
    }

    fn on_message<R: RngCore + CryptoRng>(
        &mut self,
        from: MemberId,
        msg: FedMessage,
        depth: u8,
        now: Instant,
        rng: &mut R,
    ) -> Vec<MemberOutput> {
        match msg {
            FedMessage::Broadcast(msg) => {
                let out = self.broadcast.handle(from, msg);
                self.on_broadcast(out, now)
            }
            FedMessage::Dkg(msg) => self.deliver_dkg(from, msg, Delivery::Direct, now),
            FedMessage::Sign(msg) => match self.signing.as_mut() {
                Some(signing) => {
                    let out = signing.handle(from, msg, now, rng);
                    self.on_signing(out, now)
                }
                None => Vec::new(),
            },
            FedMessage::Batch(messages) if depth == 0 => messages
                .into_iter()
                .flat_map(|msg| self.on_message(from, msg, 1, now, rng))
                .collect(),
            FedMessage::Batch(_) => Vec::new(),
        }
    }

    fn on_broadcast(&mut self, outputs: Vec<BroadcastOutput>, now: Instant) -> Vec<MemberOutput> {
        let mut out = Vec::new();
        for output in outputs {
            match output {
                BroadcastOutput::Send { to, msg } => self.send(to, FedMessage::Broadcast(msg)),
                BroadcastOutput::Deliver {
                    sender, payload, ..
                } => match serde_cbor::from_slice::<Broadcasted>(&payload) {
                    Ok(Broadcasted::Dkg(msg)) => {
                        out.extend(self.deliver_dkg(sender, msg, Delivery::Broadcast, now));
                    }
                    Err(err) => out.push(MemberOutput::Undecodable {
                        from: sender,
                        reason: err.to_string(),
                    }),
                },
                BroadcastOutput::Equivocation { sender, .. } => {
                    if let Some(dkg) = self.dkg.as_mut() {
                        let dkg_out = dkg.on_equivocation(sender);
                        out.extend(self.on_dkg(dkg_out, now));
                    }
                }
            }
        }
        out
    }

    fn deliver_dkg(
        &mut self,
        from: MemberId,
        msg: DkgMessage,
        delivery: Delivery,
        now: Instant,
    ) -> Vec<MemberOutput> {
        match self.dkg.as_mut() {
            Some(dkg) if dkg.session() == msg.session => {
                let out = dkg.handle(from, msg, delivery, now);
                self.on_dkg(out, now)
            }
            // Another session (a retry, the next term's) this member has not started
            // yet: kept until it does, within the bound.
            _ => {
                if self.early.len() < MAX_EARLY {
                    self.early.push_back((from, msg, delivery));
                }
                Vec::new()
            }
        }
    }

    fn on_dkg(&mut self, outputs: Vec<DkgOutput>, now: Instant) -> Vec<MemberOutput> {
        let mut out = Vec::new();
        for output in outputs {
            match output {
                DkgOutput::Broadcast(msg) => {
                    let tag = broadcast_tag(&msg);
                    match serde_cbor::to_vec(&Broadcasted::Dkg(msg)) {
                        Ok(payload) => {
                            let sent = self.broadcast.broadcast(tag, payload);
                            out.extend(self.on_broadcast(sent, now));
                        }
                        Err(err) => out.push(MemberOutput::Undeliverable {
                            to: self.me,
                            reason: format!("encoding a broadcast failed: {err}"),
                        }),
                    }
                }
                DkgOutput::Send { to, msg } => self.send(to, FedMessage::Dkg(msg)),
                DkgOutput::Completed(key) => {
                    self.last_dkg_timings = self.dkg.as_ref().map(Dkg::timings);
                    out.push(MemberOutput::DkgCompleted(key));
                }
                DkgOutput::Failed(failure) => out.push(MemberOutput::DkgFailed(failure)),
            }
        }
        out
    }

    /// Sends a signing message, through this member's fault if it has one.
    fn send_sign(&mut self, to: MemberId, msg: crate::sign::SignMessage, now: Instant) {
        match self.fault {
            None => self.send(to, FedMessage::Sign(msg)),
            Some(fault) => {
                for (at, to, msg) in fault.apply(to, msg, now) {
                    if at <= now {
                        self.send(to, FedMessage::Sign(msg));
                    } else {
                        self.held.push((at, to, msg));
                    }
                }
            }
        }
    }

    fn on_signing(&mut self, outputs: Vec<SignOutput>, now: Instant) -> Vec<MemberOutput> {
        let mut out = Vec::new();
        for output in outputs {
            match output {
                SignOutput::Broadcast(msg) => {
                    for to in self.others.clone() {
                        self.send_sign(to, msg.clone(), now);
                    }
                }
                SignOutput::Send { to, msg } => self.send_sign(to, msg, now),
                SignOutput::Signed {
                    request,
                    record,
                    sessions,
                    ..
                } => out.push(MemberOutput::Signed {
                    request,
                    record,
                    sessions,
                }),
                // Another member's signature: nothing here waits for it.
                SignOutput::Seen { .. } => {}
                SignOutput::Failed { request, reason } => {
                    out.push(MemberOutput::SignFailed { request, reason });
                }
                SignOutput::Refused { request, reason } => {
                    out.push(MemberOutput::Refused { request, reason });
                }
                SignOutput::Cheater { request, member } => {
                    out.push(MemberOutput::Cheater { request, member });
                }
            }
        }
        out
    }
}

/// The echo-broadcast tag of a DKG message: one per session and kind, and per dealer
/// or recipient for the justification messages (a member may lack shares from several
/// dealers, and a dealer may be asked to open several recipients' shares).
pub fn broadcast_tag(msg: &DkgMessage) -> BroadcastTag {
    let (kind, about): (&[u8], Option<&MemberId>) = match &msg.body {
        DkgBody::Round1(_) => (b"round1", None),
        DkgBody::Lacking { .. } => (b"lacking", None),
        DkgBody::Complaint { .. } => (b"complaint", None),
        DkgBody::Certificate { .. } => (b"certificate", None),
        DkgBody::Transcript { .. } => (b"transcript", None),
        DkgBody::Equivocation { .. } => (b"equivocation", None),
        DkgBody::Round2(_) => (b"round2", None),
        DkgBody::Missing { dealer } => (b"missing", Some(dealer)),
        DkgBody::Opened(dealt) => (b"opened", Some(&dealt.recipient)),
    };
    let mut h = Sha256::new();
    h.update(b"tenure/federation/dkg-broadcast");
    h.update(msg.session);
    h.update(kind);
    if let Some(member) = about {
        h.update(member.0);
    }
    BroadcastTag(h.finalize().into())
}
