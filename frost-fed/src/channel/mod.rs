//! End-to-end channels between members, sans-IO: Noise KK sessions with explicit
//! nonces and a replay window, fragmentation above Noise's 65,535-byte limit, and
//! reliable delivery on top (seed 004: "Noise-authenticated reliable point-to-point
//! channels" between members, over any number of hops).
//!
//! Frames may cross relays (a gossip relay when two members are not connected): a
//! relay sees sender, recipient and ciphertext only, and any change it makes fails
//! decryption. Each member's static Noise key is bound to its member key and overlay
//! identity by a [`ChannelKey`] the member signs, so a key directory cannot be
//! forged.
//!
//! Reliable delivery: every message gets a sequence number, the receiver acks what
//! arrived (cumulative plus the ones above), the sender retransmits with exponential
//! backoff until acked or out of tries (the first delay follows the peer's measured
//! round trip, as TCP's does: RFC 6298, Karn's rule), and the receiver delivers each sequence
//! number once. Buffers are bounded: a full send buffer refuses new messages.
//!
//! Who may change a session (the rules that keep a peer without keys, or a replayer,
//! from tearing one down):
//! - Only a handshake step 2 answering the step 1 we are waiting on is read; any
//!   other step 2 changes nothing.
//! - Noise KK's step 1 is authentic but carries no freshness from us, so it can be
//!   replayed. A step 1 that arrives while a session is open only offers a
//!   **candidate** session; the live one stays until an authentic data frame arrives
//!   under the candidate, which only the initiator that read our step 2 can send. A
//!   copy of a step 1 already answered gets the same step 2 again, byte for byte
//!   (answering anew would make keys the initiator does not hold); it changes no
//!   state and costs no Diffie-Hellman work, so a replayer gains nothing.
//! - **Handshakes are retransmitted, not restarted.** A step 1 without an answer is
//!   sent again as is, with backoff; under load an answer that is merely late then
//!   still completes the handshake, where a new step 1 would cost both sides new
//!   Diffie-Hellman work and void the answer already on its way (measured at 50
//!   members on one machine: twice the handshakes needed, and rounds that never
//!   finished). After a few copies a fresh step 1 is made, in case the responder lost
//!   its answer. The responder keeps the answers to its last few step 1s, keyed by
//!   epoch and the step 1's bytes, so a replayed older step 1 cannot push out the
//!   answer the initiator waits for.
//! - **A new session only for a silent peer.** Messages unacked after a few
//!   transmissions open a new session (the peer may have restarted and lost ours)
//!   only if nothing authentic came under the current one for `retransmit_max`: a
//!   peer still answering holds the session, and its acks are only slow. A session
//!   counts as heard when it opens, so one opened by a replayed step 1 stands for up
//!   to `retransmit_max` before it is remade (the price of not remaking slow
//!   sessions; see `Peer::open`).
//! - Sequence numbers belong to a sender's **incarnation**: a random number each
//!   [`Channels`] draws when it starts, carried inside the handshake (step 1: epoch
//!   and incarnation; step 2: incarnation). When a peer's incarnation changes (it
//!   restarted), what was received from its previous incarnation is forgotten, so
//!   its new sequence numbers are not mistaken for duplicates. A peer that only
//!   opened a new session keeps its incarnation and its sequence numbers, so nothing
//!   is delivered twice across sessions.

pub mod frame;
pub mod replay;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use bitcoin::secp256k1::Keypair;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use snow::{HandshakeState, StatelessTransportState};

use crate::{
    roster::MemberId,
    share::{member_sign, member_verify},
};
pub use frame::{ChannelFrame, Fragment, FrameBody, Packet};
use replay::ReplayWindow;

/// The Noise protocol: both static keys known in advance.
pub const NOISE_PARAMS: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";

/// A member's static Noise key, bound to its member key and overlay identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelKey {
    /// The member.
    pub member: MemberId,
    /// Its static X25519 public key.
    pub noise_public: [u8; 32],
    /// Its overlay identity (libp2p peer id bytes).
    pub overlay_peer: ByteBuf,
    /// The member key's BIP340 signature over the binding.
    pub signature: ByteBuf,
}

impl ChannelKey {
    fn digest(member: &MemberId, noise_public: &[u8; 32], overlay_peer: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/channel-key/v1");
        h.update(member.0);
        h.update(noise_public);
        h.update(overlay_peer);
        h.finalize().into()
    }

    /// Binds `noise_public` and `overlay_peer` to the member holding `keypair`.
    pub fn bind(keypair: &Keypair, noise_public: [u8; 32], overlay_peer: Vec<u8>) -> ChannelKey {
        let member = MemberId::from(keypair.x_only_public_key().0);
        let signature = member_sign(keypair, Self::digest(&member, &noise_public, &overlay_peer));
        ChannelKey {
            member,
            noise_public,
            overlay_peer: ByteBuf::from(overlay_peer),
            signature: ByteBuf::from(signature.to_vec()),
        }
    }

    /// Whether the member really signed this binding.
    pub fn verify(&self) -> bool {
        member_verify(
            &self.member,
            Self::digest(&self.member, &self.noise_public, &self.overlay_peer),
            &self.signature,
        )
    }
}

/// A fresh static Noise key pair: (private, public).
pub fn noise_keypair() -> Option<(Vec<u8>, [u8; 32])> {
    let params = NOISE_PARAMS.parse().ok()?;
    let pair = snow::Builder::new(params).generate_keypair().ok()?;
    Some((pair.private, pair.public.as_slice().try_into().ok()?))
}

/// Unacknowledged transmissions of one message after which a new session is opened.
pub const RESESSION_AFTER: u32 = 3;

/// Tuning of channels.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Largest application message.
    pub max_message_bytes: usize,
    /// Messages sent and not yet acked, per peer; more are refused.
    pub max_unacked: usize,
    /// First retransmission delay before the peer's round trip is known.
    pub retransmit_initial: Duration,
    /// Shortest first retransmission delay once it is.
    pub retransmit_min: Duration,
    /// How long a handshake step 1 waits for its answer before a new one is sent
    /// (doubling each time, up to `retransmit_max`). A federation lengthens it with its
    /// size (`member::HANDSHAKE_WAIT_PER_MEMBER`): a new step 1 costs both sides
    /// Diffie-Hellman work that an answer merely late does not need.
    pub handshake_timeout: Duration,
    /// Longest retransmission delay.
    pub retransmit_max: Duration,
    /// Transmissions of one message before it is reported undeliverable.
    pub max_tries: u32,
    /// Partly received messages kept per peer.
    pub max_partial: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_message_bytes: 4 * 1024 * 1024,
            max_unacked: 1024,
            retransmit_initial: Duration::from_millis(300),
            retransmit_min: Duration::from_millis(100),
            handshake_timeout: Duration::from_millis(300),
            retransmit_max: Duration::from_secs(4),
            max_tries: 12,
            max_partial: 16,
        }
    }
}

/// What one member's channels sent, by kind: how much of a round's traffic is the
/// protocol's own messages and how much is acknowledgements, copies and handshakes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Application messages sent for the first time.
    pub messages: u64,
    /// Application messages sent again (no ack in time).
    pub retransmissions: u64,
    /// Acknowledgements sent.
    pub acks: u64,
    /// Handshake frames sent (step 1s, their copies, and step 2 answers).
    pub handshakes: u64,
}

/// What the channels ask their driver to do, or report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelOutput {
    /// Carry this encoded frame to `to` (directly or through a relay).
    Transmit {
        /// The recipient.
        to: MemberId,
        /// The encoded [`ChannelFrame`].
        frame: Vec<u8>,
    },
    /// A message arrived, authenticated and decrypted, once.
    Deliver {
        /// Its sender.
        from: MemberId,
        /// The message.
        payload: Vec<u8>,
    },
    /// A message could not be delivered.
    Undeliverable {
        /// The peer.
        to: MemberId,
        /// Why.
        reason: String,
    },
}

struct Pending {
    payload: Vec<u8>,
    due: Instant,
    rto: Duration,
    /// Transmissions (and handshake attempts while it waited) in all.
    tries: u32,
    /// Transmissions over the current session.
    in_session: u32,
    /// When it was first transmitted, and whether it was transmitted again since:
    /// only a message sent once gives a round-trip sample (Karn's rule).
    sent_at: Option<Instant>,
    resent: bool,
}

/// A peer's smoothed round trip (RFC 6298): retransmissions wait for what the path
/// and the peer's load really take, so a busy machine is not flooded with copies of
/// messages that are merely slow.
#[derive(Clone, Copy, Debug, Default)]
struct RoundTrip {
    /// Smoothed round trip and its variation, once a sample arrived.
    estimate: Option<(Duration, Duration)>,
}

impl RoundTrip {
    fn sample(&mut self, rtt: Duration) {
        self.estimate = Some(match self.estimate {
            None => (rtt, rtt / 2),
            Some((srtt, var)) => {
                let delta = srtt.abs_diff(rtt);
                (srtt * 7 / 8 + rtt / 8, var * 3 / 4 + delta / 4)
            }
        });
    }

    /// The first retransmission delay: the configured initial one until a sample
    /// arrives, then srtt + 4·var, within the configured bounds.
    fn rto(&self, config: &ChannelConfig) -> Duration {
        match self.estimate {
            None => config.retransmit_initial,
            Some((srtt, var)) => (srtt + (var * 4).max(Duration::from_millis(10)))
                .clamp(config.retransmit_min, config.retransmit_max),
        }
    }
}

enum Session {
    None,
    /// We sent handshake step 1 for `epoch` (the encoded frame, sent again as is
    /// while no answer comes: no new Diffie-Hellman work on either side).
    Initiating {
        epoch: u64,
        handshake: Box<HandshakeState>,
        sent: Instant,
        step1: Vec<u8>,
        /// Copies of `step1` sent after the first.
        copies: u32,
    },
    Open {
        epoch: u64,
        transport: Box<StatelessTransportState>,
        next_nonce: u64,
        replay: ReplayWindow,
    },
}

struct Peer {
    key: ChannelKey,
    session: Session,
    next_seq: u64,
    unacked: BTreeMap<u64, Pending>,
    /// Highest contiguous sequence number received, and those above it.
    received_upto: u64,
    received_above: BTreeSet<u64>,
    /// A session the peer offered while ours was open: it replaces ours only once an
    /// authentic data frame arrives under it. A replayed handshake step 1 (Noise KK's
    /// first message carries no freshness from us) thus never tears a live session
    /// down.
    candidate: Option<Candidate>,
    /// The peer's incarnation that `received_upto` and `received_above` count.
    incarnation: Option<u64>,
    /// Handshakes started since the last session opened.
    handshakes: u32,
    /// Data arrived since the last ack.
    ack_due: bool,
    /// When an authentic frame last came under the open session: a peer heard from
    /// recently still holds the session, so slow acks do not make a new one.
    heard_at: Option<Instant>,
    /// The last few handshake step 1s answered (epoch, digest of the Noise bytes)
    /// and the step 2 frame sent for each: a copy of one (the answer was lost, or is
    /// late) gets the same step 2 again, at no Diffie-Hellman cost. Several, so that
    /// a replayed older step 1 answered meanwhile does not push out the answer the
    /// initiator is waiting for.
    answered: VecDeque<Answered>,
    round_trip: RoundTrip,
    partial: BTreeMap<u64, (u16, BTreeMap<u16, Vec<u8>>)>,
}

/// A step 1 answered: its epoch, the digest of its Noise bytes, the step 2 frame.
type Answered = (u64, [u8; 32], Vec<u8>);

/// Step 1s whose answers are kept per peer.
const ANSWERS_KEPT: usize = 4;

/// Copies of one step 1 sent before a fresh one is made (in case the responder lost
/// its answer).
const STEP1_COPIES: u32 = 3;

/// A session the peer offered (epoch, keys, the peer's incarnation).
type Candidate = (u64, Box<StatelessTransportState>, u64);

impl Peer {
    /// A peer with binding `key` and no session yet.
    fn new(key: ChannelKey) -> Peer {
        Peer {
            key,
            session: Session::None,
            next_seq: 1,
            unacked: BTreeMap::new(),
            received_upto: 0,
            received_above: BTreeSet::new(),
            candidate: None,
            incarnation: None,
            handshakes: 0,
            ack_due: false,
            heard_at: None,
            answered: VecDeque::new(),
            round_trip: RoundTrip::default(),
            partial: BTreeMap::new(),
        }
    }

    /// A session is open with the peer's incarnation `incarnation`: unacked messages
    /// go again over it, at once. A new incarnation restarts what we count as
    /// received from the peer.
    fn open(
        &mut self,
        epoch: u64,
        transport: StatelessTransportState,
        incarnation: u64,
        now: Instant,
    ) {
        if self.incarnation != Some(incarnation) {
            self.incarnation = Some(incarnation);
            self.received_upto = 0;
            self.received_above.clear();
            self.partial.clear();
        }
        self.session = Session::Open {
            epoch,
            transport: Box::new(transport),
            next_nonce: 0,
            replay: ReplayWindow::default(),
        };
        self.candidate = None;
        self.handshakes = 0;
        // A session counts as heard when it opens, also one opened by answering a
        // step 1. That step 1 may be a replay (a session the initiator does not
        // hold), which then stands for up to `retransmit_max` before a new one is
        // made; counting such sessions silent until data came instead made every
        // slow peer's session be remade, and doubled a 50-member DKG's time.
        self.heard_at = Some(now);
        for pending in self.unacked.values_mut() {
            pending.due = now;
        }
    }
}

/// One member's channels to the others.
pub struct Channels {
    me: MemberId,
    noise_private: Vec<u8>,
    config: ChannelConfig,
    peers: BTreeMap<MemberId, Peer>,
    /// This instance's incarnation: drawn at start, so a restart is told apart.
    incarnation: u64,
    stats: ChannelStats,
}

impl Channels {
    /// Channels for the member with static Noise key `noise_private`, to every member
    /// in `directory` whose binding verifies (others are skipped).
    pub fn new(
        me: MemberId,
        noise_private: Vec<u8>,
        directory: &[ChannelKey],
        config: ChannelConfig,
    ) -> Channels {
        let peers = directory
            .iter()
            .filter(|k| k.member != me && k.verify())
            .map(|k| (k.member, Peer::new(k.clone())))
            .collect();
        Channels {
            me,
            noise_private,
            config,
            peers,
            incarnation: OsRng.next_u64(),
            stats: ChannelStats::default(),
        }
    }

    /// What these channels sent so far, by kind.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Takes `key` as its member's binding: a member not known yet is added; a known
    /// one whose Noise key or overlay identity changed (it restarted with new ones)
    /// starts afresh, with no session and nothing pending. A binding that does not
    /// verify, this member's own, or one already held changes nothing. The caller
    /// decides which of two valid bindings is newer (a replayed older one would
    /// otherwise reset the peer). Whether anything changed.
    pub fn add(&mut self, key: ChannelKey) -> bool {
        if key.member == self.me || !key.verify() {
            return false;
        }
        if self.peers.get(&key.member).is_some_and(|p| p.key == key) {
            return false;
        }
        self.peers.insert(key.member, Peer::new(key));
        true
    }

    /// Queues `payload` for reliable delivery to `to`.
    pub fn send(&mut self, to: MemberId, payload: Vec<u8>, now: Instant) -> Vec<ChannelOutput> {
        let undeliverable = |reason: String| vec![ChannelOutput::Undeliverable { to, reason }];
        if payload.len() > self.config.max_message_bytes {
            return undeliverable(format!("message of {} bytes is too large", payload.len()));
        }
        let max_unacked = self.config.max_unacked;
        let Some(peer) = self.peers.get_mut(&to) else {
            return undeliverable("no channel key for this member".into());
        };
        let rto = peer.round_trip.rto(&self.config);
        if peer.unacked.len() >= max_unacked {
            return undeliverable("send buffer full".into());
        }
        let seq = peer.next_seq;
        peer.next_seq += 1;
        peer.unacked.insert(
            seq,
            Pending {
                payload,
                due: now,
                rto,
                tries: 0,
                in_session: 0,
                sent_at: None,
                resent: false,
            },
        );
        self.flush(to, now)
    }

    /// Time passed: send the acks due, retransmit what is due, retry stalled
    /// handshakes. Call it often (every 10 ms or so): acks wait for it.
    pub fn on_tick(&mut self, now: Instant) -> Vec<ChannelOutput> {
        let ids: Vec<MemberId> = self.peers.keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.ack_now(id));
            out.extend(self.flush(id, now));
        }
        out
    }

    /// The ack due to `to`, now rather than at the next tick: the carrier can take it
    /// back on the exchange that brought the data (an answer to the request), so an
    /// ack costs no exchange of its own.
    pub fn ack_now(&mut self, to: MemberId) -> Vec<ChannelOutput> {
        let ack = self.peers.get_mut(&to).and_then(|peer| {
            std::mem::take(&mut peer.ack_due).then(|| Packet::Ack {
                upto: peer.received_upto,
                also: peer.received_above.iter().rev().take(64).copied().collect(),
            })
        });
        match ack {
            Some(ack) => {
                self.stats.acks += 1;
                self.transmit(to, &ack)
            }
            None => Vec::new(),
        }
    }

    /// Sends what is due to `to`: a handshake when there is no session, else every
    /// unacked message whose time has come.
    fn flush(&mut self, to: MemberId, now: Instant) -> Vec<ChannelOutput> {
        let config = self.config.clone();
        let Some(peer) = self.peers.get_mut(&to) else {
            return Vec::new();
        };
        if peer.unacked.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let handshake_due = match &mut peer.session {
            Session::None => true,
            Session::Initiating {
                sent,
                step1,
                copies,
                ..
            } => {
                // Handshakes back off like retransmissions.
                let wait = (config.handshake_timeout
                    * 2u32.saturating_pow(peer.handshakes.min(16)))
                .min(config.retransmit_max);
                if now.saturating_duration_since(*sent) < wait {
                    return Vec::new();
                }
                if peer.handshakes < config.max_tries && *copies < STEP1_COPIES {
                    // The same step 1 again: an answer merely late still completes
                    // it, and nobody does Diffie-Hellman work twice. After a few
                    // copies a fresh one, in case the responder lost its answer.
                    *sent = now;
                    *copies += 1;
                    peer.handshakes += 1;
                    self.stats.handshakes += 1;
                    return vec![ChannelOutput::Transmit {
                        to,
                        frame: step1.clone(),
                    }];
                }
                true
            }
            // Sent a few times over this session without an ack, and nothing heard
            // under it for a while: the peer may have lost it (a restart); open a
            // new one. A peer still answering holds the session; its acks are slow.
            Session::Open { .. } => {
                let silent = peer
                    .heard_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= config.retransmit_max);
                silent
                    && peer
                        .unacked
                        .values()
                        .any(|p| p.in_session >= RESESSION_AFTER && p.due <= now)
            }
        };
        if handshake_due {
            // A member that never completes a handshake ends as undeliverable.
            if peer.handshakes >= config.max_tries {
                let count = peer.unacked.len();
                peer.unacked.clear();
                peer.handshakes = 0;
                peer.session = Session::None;
                out.push(ChannelOutput::Undeliverable {
                    to,
                    reason: format!(
                        "{count} messages dropped: no session after {} handshakes",
                        config.max_tries
                    ),
                });
                return out;
            }
            peer.handshakes += 1;
            for pending in peer.unacked.values_mut() {
                pending.in_session = 0;
            }
            out.extend(self.initiate(to, now));
            return out;
        }
        let mut packets = Vec::new();
        let mut given_up = Vec::new();
        for (seq, pending) in peer.unacked.iter_mut() {
            if pending.due > now {
                continue;
            }
            if pending.tries >= config.max_tries {
                given_up.push(*seq);
                continue;
            }
            pending.tries += 1;
            pending.in_session += 1;
            if pending.sent_at.is_some() {
                pending.resent = true;
                self.stats.retransmissions += 1;
            } else {
                self.stats.messages += 1;
                pending.sent_at = Some(now);
            }
            pending.due = now + pending.rto;
            pending.rto = (pending.rto * 2).min(config.retransmit_max);
            packets.push(Packet::Data {
                seq: *seq,
                payload: ByteBuf::from(pending.payload.clone()),
            });
        }
        for seq in given_up {
            peer.unacked.remove(&seq);
            out.push(ChannelOutput::Undeliverable {
                to,
                reason: format!(
                    "message {seq} unacknowledged after {} tries",
                    config.max_tries
                ),
            });
        }
        for packet in packets {
            out.extend(self.transmit(to, &packet));
        }
        out
    }

    fn initiate(&mut self, to: MemberId, now: Instant) -> Vec<ChannelOutput> {
        let me = self.me;
        let Some(peer) = self.peers.get_mut(&to) else {
            return Vec::new();
        };
        let Some(mut handshake) = build(&self.noise_private, &peer.key.noise_public, true) else {
            return Vec::new();
        };
        let epoch = OsRng.next_u64();
        let mut buf = vec![0u8; frame::NOISE_MAX];
        let mut hello = [0u8; 16];
        let (e, i) = hello.split_at_mut(8);
        e.copy_from_slice(&epoch.to_be_bytes());
        i.copy_from_slice(&self.incarnation.to_be_bytes());
        let Ok(len) = handshake.write_message(&hello, &mut buf) else {
            return Vec::new();
        };
        buf.truncate(len);
        let step1 = transmit_frame(
            me,
            to,
            FrameBody::Handshake {
                epoch,
                step: 1,
                noise: ByteBuf::from(buf),
            },
        );
        let ChannelOutput::Transmit { frame, .. } = &step1 else {
            return vec![step1];
        };
        self.stats.handshakes += 1;
        peer.session = Session::Initiating {
            epoch,
            handshake: Box::new(handshake),
            sent: now,
            step1: frame.clone(),
            copies: 0,
        };
        vec![step1]
    }

    /// Encrypts `packet` to `to`, in fragments when large.
    fn transmit(&mut self, to: MemberId, packet: &Packet) -> Vec<ChannelOutput> {
        let me = self.me;
        let Some(peer) = self.peers.get_mut(&to) else {
            return Vec::new();
        };
        let Session::Open {
            epoch,
            transport,
            next_nonce,
            ..
        } = &mut peer.session
        else {
            return Vec::new();
        };
        let Ok(bytes) = serde_cbor::to_vec(packet) else {
            return Vec::new();
        };
        // A data packet's fragments are numbered by its sequence number, so the
        // fragments of every retransmission fill the same partial message.
        let message = match packet {
            Packet::Data { seq, .. } => *seq,
            Packet::Ack { .. } => 0,
        };
        let pieces: Vec<&[u8]> = bytes.chunks(frame::FRAGMENT_BYTES).collect();
        let count = pieces.len() as u16;
        let mut out = Vec::new();
        for (index, piece) in pieces.into_iter().enumerate() {
            let fragment = Fragment {
                message,
                index: index as u16,
                count,
                bytes: ByteBuf::from(piece.to_vec()),
            };
            let Ok(plain) = serde_cbor::to_vec(&fragment) else {
                continue;
            };
            let mut buf = vec![0u8; plain.len() + 16];
            let nonce = *next_nonce;
            *next_nonce += 1;
            let Ok(len) = transport.write_message(nonce, &plain, &mut buf) else {
                continue;
            };
            buf.truncate(len);
            out.push(transmit_frame(
                me,
                to,
                FrameBody::Data {
                    epoch: *epoch,
                    nonce,
                    ciphertext: ByteBuf::from(buf),
                },
            ));
        }
        out
    }

    /// An encoded frame arrived (from any path). Frames not for this member, from
    /// unknown members, replayed or altered are dropped.
    pub fn handle(&mut self, bytes: &[u8], now: Instant) -> Vec<ChannelOutput> {
        let Ok(frame) = frame::decode(bytes) else {
            return Vec::new();
        };
        if frame.to != self.me || !self.peers.contains_key(&frame.from) {
            return Vec::new();
        }
        match frame.body {
            FrameBody::Handshake { epoch, step, noise } => {
                self.on_handshake(frame.from, epoch, step, &noise, now)
            }
            FrameBody::Data {
                epoch,
                nonce,
                ciphertext,
            } => self.on_data(frame.from, epoch, nonce, &ciphertext, now),
        }
    }

    fn on_handshake(
        &mut self,
        from: MemberId,
        epoch: u64,
        step: u8,
        noise: &[u8],
        now: Instant,
    ) -> Vec<ChannelOutput> {
        let me = self.me;
        let own_incarnation = self.incarnation.to_be_bytes();
        let Some(peer) = self.peers.get_mut(&from) else {
            return Vec::new();
        };
        let mut buf = vec![0u8; frame::NOISE_MAX];
        match step {
            1 => {
                // Both initiated at once: the smaller member's handshake wins.
                if matches!(peer.session, Session::Initiating { .. }) && me < from {
                    return Vec::new();
                }
                // A copy of a step 1 already answered: answering anew would make
                // other keys than the ones the initiator took from our first answer,
                // so the first answer goes again (it may have been lost).
                let noise_digest: [u8; 32] = Sha256::digest(noise).into();
                if let Some((_, _, frame)) = peer
                    .answered
                    .iter()
                    .find(|(e, d, _)| *e == epoch && *d == noise_digest)
                {
                    self.stats.handshakes += 1;
                    return vec![ChannelOutput::Transmit {
                        to: from,
                        frame: frame.clone(),
                    }];
                }
                let current = match &peer.session {
                    Session::Open { epoch, .. } => Some(*epoch),
                    Session::None | Session::Initiating { .. } => None,
                };
                if current == Some(epoch) || peer.candidate.as_ref().map(|c| c.0) == Some(epoch) {
                    return Vec::new();
                }
                let Some(mut handshake) = build(&self.noise_private, &peer.key.noise_public, false)
                else {
                    return Vec::new();
                };
                let Ok(len) = handshake.read_message(noise, &mut buf) else {
                    return Vec::new();
                };
                let Some((offered, incarnation)) = buf
                    .get(..len)
                    .and_then(|hello| hello.split_first_chunk::<8>())
                    .and_then(|(e, i)| Some((*e, <[u8; 8]>::try_from(i).ok()?)))
                else {
                    return Vec::new();
                };
                if u64::from_be_bytes(offered) != epoch {
                    return Vec::new();
                }
                let incarnation = u64::from_be_bytes(incarnation);
                let Ok(len) = handshake.write_message(&own_incarnation, &mut buf) else {
                    return Vec::new();
                };
                let Ok(transport) = handshake.into_stateless_transport_mode() else {
                    return Vec::new();
                };
                buf.truncate(len);
                let live = matches!(peer.session, Session::Open { .. });
                if live {
                    peer.candidate = Some((epoch, Box::new(transport), incarnation));
                } else {
                    peer.open(epoch, transport, incarnation, now);
                }
                let step2 = transmit_frame(
                    me,
                    from,
                    FrameBody::Handshake {
                        epoch,
                        step: 2,
                        noise: ByteBuf::from(buf),
                    },
                );
                if let ChannelOutput::Transmit { frame, .. } = &step2 {
                    if peer.answered.len() >= ANSWERS_KEPT {
                        peer.answered.pop_front();
                    }
                    peer.answered
                        .push_back((epoch, noise_digest, frame.clone()));
                }
                self.stats.handshakes += 1;
                let mut out = vec![step2];
                if !live {
                    out.extend(self.flush(from, now));
                }
                out
            }
            2 => {
                // Only an answer to the handshake we are waiting on is looked at: any
                // other step 2 (forged, replayed, late) leaves every session as it is.
                if !matches!(&peer.session, Session::Initiating { epoch: ours, .. } if *ours == epoch)
                {
                    return Vec::new();
                }
                let Session::Initiating {
                    epoch: ours,
                    handshake,
                    step1,
                    copies,
                    ..
                } = std::mem::replace(&mut peer.session, Session::None)
                else {
                    return Vec::new();
                };
                let mut handshake = *handshake;
                let incarnation = handshake
                    .read_message(noise, &mut buf)
                    .ok()
                    .and_then(|len| buf.get(..len))
                    .and_then(|i| <[u8; 8]>::try_from(i).ok())
                    .map(u64::from_be_bytes);
                let Some(incarnation) = incarnation else {
                    peer.session = Session::Initiating {
                        epoch: ours,
                        handshake: Box::new(handshake),
                        sent: now,
                        step1,
                        copies,
                    };
                    return Vec::new();
                };
                let Ok(transport) = handshake.into_stateless_transport_mode() else {
                    return Vec::new();
                };
                peer.open(epoch, transport, incarnation, now);
                self.flush(from, now)
            }
            _ => Vec::new(),
        }
    }

    fn on_data(
        &mut self,
        from: MemberId,
        epoch: u64,
        nonce: u64,
        ciphertext: &[u8],
        now: Instant,
    ) -> Vec<ChannelOutput> {
        let max_partial = self.config.max_partial;
        let max_message = self.config.max_message_bytes;
        let Some(peer) = self.peers.get_mut(&from) else {
            return Vec::new();
        };
        let mut plain = vec![0u8; ciphertext.len()];
        let current = matches!(&peer.session, Session::Open { epoch: ours, .. } if *ours == epoch);
        let len = if current {
            let Session::Open { transport, .. } = &mut peer.session else {
                return Vec::new();
            };
            let Ok(len) = transport.read_message(nonce, ciphertext, &mut plain) else {
                return Vec::new();
            };
            len
        } else {
            // The first authentic frame under the session the peer offered: the peer
            // completed that handshake, so it replaces ours.
            let Some((_, transport, _)) = peer.candidate.as_ref().filter(|c| c.0 == epoch) else {
                return Vec::new();
            };
            let Ok(len) = transport.read_message(nonce, ciphertext, &mut plain) else {
                return Vec::new();
            };
            let Some((_, transport, incarnation)) = peer.candidate.take() else {
                return Vec::new();
            };
            peer.open(epoch, *transport, incarnation, now);
            len
        };
        let Session::Open { replay, .. } = &mut peer.session else {
            return Vec::new();
        };
        // Only an authentic frame moves the window, so forgeries cannot block nonces.
        if !replay.accept(nonce) {
            return Vec::new();
        }
        peer.heard_at = Some(now);
        plain.truncate(len);
        let Ok(fragment) = serde_cbor::from_slice::<Fragment>(&plain) else {
            return Vec::new();
        };
        if fragment.count == 0 || fragment.index >= fragment.count {
            return Vec::new();
        }
        let bytes = if fragment.count == 1 {
            fragment.bytes.into_vec()
        } else {
            if usize::from(fragment.count) * frame::FRAGMENT_BYTES
                > max_message + frame::FRAGMENT_BYTES
            {
                return Vec::new();
            }
            if !peer.partial.contains_key(&fragment.message) && peer.partial.len() >= max_partial {
                // Drop the oldest partial message; its sender retransmits.
                if let Some(oldest) = peer.partial.keys().next().copied() {
                    peer.partial.remove(&oldest);
                }
            }
            let entry = peer
                .partial
                .entry(fragment.message)
                .or_insert_with(|| (fragment.count, BTreeMap::new()));
            if entry.0 != fragment.count {
                return Vec::new();
            }
            entry.1.insert(fragment.index, fragment.bytes.into_vec());
            if entry.1.len() < usize::from(entry.0) {
                return Vec::new();
            }
            let Some((_, parts)) = peer.partial.remove(&fragment.message) else {
                return Vec::new();
            };
            parts.into_values().flatten().collect()
        };
        let Ok(packet) = serde_cbor::from_slice::<Packet>(&bytes) else {
            return Vec::new();
        };
        match packet {
            Packet::Ack { upto, also } => {
                let round_trip = &mut peer.round_trip;
                peer.unacked.retain(|seq, pending| {
                    let acked = *seq <= upto || also.contains(seq);
                    if acked
                        && !pending.resent
                        && let Some(sent_at) = pending.sent_at
                    {
                        round_trip.sample(now.saturating_duration_since(sent_at));
                    }
                    !acked
                });
                Vec::new()
            }
            Packet::Data { seq, payload } => {
                let fresh = seq > peer.received_upto && !peer.received_above.contains(&seq);
                if fresh {
                    peer.received_above.insert(seq);
                    while peer.received_above.remove(&(peer.received_upto + 1)) {
                        peer.received_upto += 1;
                    }
                    // Bounded: a peer far ahead of its gaps loses the oldest marks,
                    // which only costs a duplicate delivery check.
                    while peer.received_above.len() > 4096 {
                        peer.received_above.pop_first();
                    }
                }
                // Acked at the next tick, once for everything that arrived meanwhile.
                peer.ack_due = true;
                let _ = now;
                if fresh {
                    vec![ChannelOutput::Deliver {
                        from,
                        payload: payload.into_vec(),
                    }]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Messages to `to` not yet acknowledged.
    pub fn unacked(&self, to: &MemberId) -> usize {
        self.peers.get(to).map_or(0, |p| p.unacked.len())
    }
}

fn build(private: &[u8], remote: &[u8; 32], initiator: bool) -> Option<HandshakeState> {
    let params = NOISE_PARAMS.parse().ok()?;
    let builder = snow::Builder::new(params)
        .local_private_key(private)
        .ok()?
        .remote_public_key(remote)
        .ok()?;
    if initiator {
        builder.build_initiator().ok()
    } else {
        builder.build_responder().ok()
    }
}

fn transmit_frame(from: MemberId, to: MemberId, body: FrameBody) -> ChannelOutput {
    let frame = ChannelFrame {
        version: frame::FRAME_VERSION,
        from,
        to,
        body,
    };
    match frame::encode(&frame) {
        Ok(frame) => ChannelOutput::Transmit { to, frame },
        Err(error) => ChannelOutput::Undeliverable {
            to,
            reason: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first retransmission waits for the round trip the peer really shows: a
    /// loaded peer answering in about a second is not sent copies every 300 ms, and a
    /// quick one is not kept waiting the initial 300 ms.
    #[test]
    fn the_retransmission_delay_follows_the_measured_round_trip_within_bounds() {
        let config = ChannelConfig::default();
        let mut slow = RoundTrip::default();
        assert_eq!(slow.rto(&config), config.retransmit_initial);
        for _ in 0..20 {
            slow.sample(Duration::from_millis(1000));
        }
        let rto = slow.rto(&config);
        assert!(rto >= Duration::from_millis(1000) && rto < Duration::from_millis(1100));
        let mut quick = RoundTrip::default();
        for _ in 0..20 {
            quick.sample(Duration::from_millis(5));
        }
        assert_eq!(quick.rto(&config), config.retransmit_min);
        let mut stalled = RoundTrip::default();
        stalled.sample(Duration::from_secs(60));
        assert_eq!(stalled.rto(&config), config.retransmit_max);
    }
}
