//! A federation member on the overlay: wires `tenure-frost-fed`'s sans-IO parts
//! (channels, echo broadcast, DKG, signing) to libp2p.
//!
//! Frames go to a member's overlay peer by request-response; when that fails (not
//! connected) they are published on the federation-frames gossip topic, and every
//! node hands frames addressed to it to its channels. Either way the Noise channel
//! keeps them confidential and authentic.
//!
//! Over the channels travel [`FedMessage`]s: echo-broadcast messages (DKG round 1,
//! complaints, certificates), DKG round-2 shares to one member, and signing messages.
//!
//! Key shares go to a sled [`KeyStore`] before the DKG is reported complete, and a
//! restarted member signs with the stored one at once. A failed DKG is reported with
//! the members it blames; the retry roster must be the same at every member, so the
//! caller (the chain, which agrees on such things) starts the retry with
//! `Roster::without` them, rather than each member on its own view.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bitcoin::secp256k1::Keypair;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenure_frost_fed::{
    KeyShare, MemberId, Roster,
    broadcast::{BroadcastMessage, BroadcastOutput, EchoBroadcast},
    channel::{ChannelConfig, ChannelKey, ChannelOutput, Channels},
    dkg::{self, Dkg, DkgBody, DkgMessage, DkgOutput},
    sign::{self, SignOutput, SignatureRecord, Signing, SigningConfig, Validator},
    store::KeyStore,
};
use tenure_overlay::{OverlayEvent, OverlayEvents, OverlayHandle, PeerId, Service, Topic};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

const LOG_TARGET: &str = "tenure::federation";

/// How often the member's timers run.
const TICK: Duration = Duration::from_millis(10);

/// Early DKG messages kept for a session not started here yet.
const MAX_EARLY: usize = 4096;

/// What members say to each other over their channels.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FedMessage {
    /// Echo broadcast (carries an encoded [`Broadcasted`]).
    Broadcast(BroadcastMessage),
    /// A DKG message for this member alone (round-2 shares).
    Dkg(DkgMessage),
    /// A signing message.
    Sign(sign::SignMessage),
    /// Several messages for one member, gathered over one tick: a round's echoes to a
    /// member travel as one message, so a member sends O(members) per round.
    Batch(Vec<FedMessage>),
}

/// What is sent by echo broadcast.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Broadcasted {
    /// A DKG message for everyone.
    Dkg(DkgMessage),
}

/// Commands to a member's task.
enum FedCommand {
    Dkg {
        roster: Roster,
        context: Vec<u8>,
        reply: oneshot::Sender<Result<Arc<KeyShare>, String>>,
    },
    Sign {
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<SignatureRecord, String>>,
    },
    /// Behave as crashed (drop everything, no timers) for a while, then resume with
    /// the state kept: a crash and restart with the key on disk.
    Crash(Duration),
    /// Send every frame by the gossip relay, as if no member were connected.
    #[cfg_attr(not(test), allow(dead_code))]
    RelayOnly(bool),
}

/// A handle to a running member.
#[derive(Clone)]
pub struct FedHandle {
    commands: mpsc::Sender<FedCommand>,
}

impl FedHandle {
    /// Runs a DKG for `roster` (every member must start it) and returns this member's
    /// key share.
    pub async fn dkg(&self, roster: Roster, context: Vec<u8>) -> anyhow::Result<Arc<KeyShare>> {
        self.ask(|reply| FedCommand::Dkg {
            roster,
            context,
            reply,
        })
        .await
    }

    /// Sends the command `make` builds and waits for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> FedCommand,
    ) -> anyhow::Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .ok()
            .context("member stopped")?;
        answer
            .await
            .context("member stopped")?
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Makes the member send every frame by the gossip relay (for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn relay_only(&self, on: bool) {
        let _ = self.commands.send(FedCommand::RelayOnly(on)).await;
    }

    /// Makes the member behave as crashed for `duration` (for benchmarks and tests).
    pub async fn crash_for(&self, duration: Duration) {
        let _ = self.commands.send(FedCommand::Crash(duration)).await;
    }

    /// Asks the federation to sign `payload`; returns the signature record.
    pub async fn sign(&self, payload: Vec<u8>) -> anyhow::Result<SignatureRecord> {
        self.ask(|reply| FedCommand::Sign { payload, reply }).await
    }
}

/// Signs the SHA-256 of any payload: for benchmarks and tests.
pub struct SignDigests;

impl Validator for SignDigests {
    fn approve(&self, payload: &[u8]) -> Result<[u8; 32], String> {
        Ok(Sha256::digest(payload).into())
    }
}

/// One member's state, owned by its task.
struct Member<V> {
    me: MemberId,
    keypair: Keypair,
    overlay: OverlayHandle,
    peers: BTreeMap<MemberId, PeerId>,
    channels: Channels,
    broadcast: EchoBroadcast,
    dkg: Option<Dkg>,
    dkg_reply: Option<oneshot::Sender<Result<Arc<KeyShare>, String>>>,
    early: VecDeque<(MemberId, DkgMessage)>,
    signing: Option<Signing<V>>,
    validator: Option<V>,
    sign_replies: BTreeMap<[u8; 32], oneshot::Sender<Result<SignatureRecord, String>>>,
    /// Messages gathered for each member until the end of the current step.
    outbox: BTreeMap<MemberId, Vec<FedMessage>>,
    /// One sender task per member.
    couriers: BTreeMap<MemberId, mpsc::Sender<Vec<u8>>>,
    /// Where key shares are kept across restarts.
    key_store: Option<KeyStore>,
    /// Every frame goes by gossip relay (tests).
    relay_only: bool,
}

/// Frames waiting for one member, at most.
const COURIER_QUEUE: usize = 4096;

/// Bytes of frames in one request, at most.
const MAX_BUNDLE_BYTES: usize = 2 * 1024 * 1024;

/// Frames in one bundle, at most.
const MAX_BUNDLE_FRAMES: usize = 4096;

/// Requests in flight to one member, at most.
const COURIER_IN_FLIGHT: usize = 4;

/// How long a bundle may wait for its answer before it goes by gossip relay: a member
/// that hangs must not hold up the frames behind it.
const COURIER_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends frames to one member's overlay peer, a few requests at a time, each carrying
/// every frame queued meanwhile: a burst of frames costs one request, not one
/// substream each. A request that fails or hangs goes out by the gossip relay.
fn spawn_courier(overlay: OverlayHandle, peer: PeerId, relay_only: bool) -> mpsc::Sender<Vec<u8>> {
    let (sender, mut queue) = mpsc::channel::<Vec<u8>>(COURIER_QUEUE);
    let permits = Arc::new(tokio::sync::Semaphore::new(COURIER_IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let mut size = first.len();
            let mut frames = vec![first];
            while size < MAX_BUNDLE_BYTES && frames.len() < MAX_BUNDLE_FRAMES {
                match queue.try_recv() {
                    Ok(frame) => {
                        size += frame.len();
                        frames.push(frame);
                    }
                    Err(_) => break,
                }
            }
            let bundle = encode_bundle(frames);
            let overlay = overlay.clone();
            tokio::spawn(async move {
                let sent = if relay_only {
                    false
                } else {
                    matches!(
                        tokio::time::timeout(
                            COURIER_TIMEOUT,
                            overlay.request(peer, Service::FederationFrame, bundle.clone()),
                        )
                        .await,
                        Ok(Ok(_))
                    )
                };
                if !sent {
                    debug!(target: LOG_TARGET, %peer, "relaying frames by gossip");
                    let _ = overlay.publish(Topic::FederationFrames, bundle).await;
                }
                drop(permit);
            });
        }
    });
    sender
}

fn encode_bundle(frames: Vec<Vec<u8>>) -> Vec<u8> {
    let frames: Vec<serde_bytes::ByteBuf> =
        frames.into_iter().map(serde_bytes::ByteBuf::from).collect();
    serde_cbor::to_vec(&frames).unwrap_or_default()
}

fn decode_bundle(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.len()
        > MAX_BUNDLE_BYTES + tenure_frost_fed::channel::frame::MAX_FRAME_BYTES + 64 * 1024
    {
        return Err("bundle too large".into());
    }
    let frames: Vec<serde_bytes::ByteBuf> =
        serde_cbor::from_slice(bytes).map_err(|e| e.to_string())?;
    if frames.len() > MAX_BUNDLE_FRAMES {
        return Err("too many frames".into());
    }
    Ok(frames
        .into_iter()
        .map(serde_bytes::ByteBuf::into_vec)
        .collect())
}

/// Starts a member: `directory` holds every member's channel key (this one's too).
pub async fn spawn<V: Validator + Send + 'static>(
    overlay: OverlayHandle,
    events: OverlayEvents,
    keypair: Keypair,
    noise_private: Vec<u8>,
    directory: Vec<ChannelKey>,
    validator: V,
    key_store: Option<KeyStore>,
) -> anyhow::Result<FedHandle> {
    overlay
        .subscribe(Topic::FederationFrames, tenure_overlay::accept_all())
        .await?;
    let me = MemberId::from(keypair.x_only_public_key().0);
    let peers = directory
        .iter()
        .filter(|k| k.verify())
        .filter_map(|k| Some((k.member, PeerId::from_bytes(&k.overlay_peer).ok()?)))
        .collect();
    let members: Vec<MemberId> = directory.iter().map(|k| k.member).collect();
    // A key made before a restart: signing is ready at once.
    let stored = match &key_store {
        Some(store) => store.current()?.filter(|k| k.member == me).map(Arc::new),
        None => None,
    };
    let mut validator = Some(validator);
    let signing = stored.and_then(|key| {
        Some(Signing::new(
            key,
            validator.take()?,
            SigningConfig::default(),
        ))
    });
    let member = Member {
        me,
        keypair,
        overlay,
        peers,
        channels: Channels::new(me, noise_private, &directory, ChannelConfig::default()),
        broadcast: EchoBroadcast::new(keypair, members),
        dkg: None,
        dkg_reply: None,
        early: VecDeque::new(),
        signing,
        validator,
        key_store,
        sign_replies: BTreeMap::new(),
        outbox: BTreeMap::new(),
        couriers: BTreeMap::new(),
        relay_only: false,
    };
    let (commands, receiver) = mpsc::channel(64);
    tokio::spawn(member.run(events, receiver));
    Ok(FedHandle { commands })
}

impl<V: Validator + Send + 'static> Member<V> {
    async fn run(mut self, mut events: OverlayEvents, mut commands: mpsc::Receiver<FedCommand>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut crashed_until: Option<Instant> = None;
        loop {
            let crashed = crashed_until.is_some_and(|until| Instant::now() < until);
            tokio::select! {
                event = events.next() => match event {
                    Some(_) if crashed => {}
                    Some(event) => self.on_event(event).await,
                    None => return,
                },
                command = commands.recv() => match command {
                    Some(FedCommand::Crash(duration)) => crashed_until = Some(Instant::now() + duration),
                    Some(_) if crashed => {}
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = tick.tick() => if !crashed {
                    self.on_tick();
                    self.flush();
                },
            }
        }
    }

    async fn on_event(&mut self, event: OverlayEvent) {
        match event {
            OverlayEvent::InboundRequest {
                id,
                service: Service::FederationFrame,
                body,
                ..
            } => {
                let _ = self.overlay.respond(id, Ok(Vec::new())).await;
                self.on_frame(&body);
            }
            OverlayEvent::InboundRequest { id, service, .. } => {
                let _ = self
                    .overlay
                    .respond(id, Err(format!("{} is not served here", service.name())))
                    .await;
            }
            OverlayEvent::Gossip {
                topic: Topic::FederationFrames,
                data,
                ..
            } => self.on_frame(&data),
            _ => {}
        }
    }

    /// A bundle of frames arrived (by request or gossip relay).
    fn on_frame(&mut self, bytes: &[u8]) {
        let Ok(frames) = decode_bundle(bytes) else {
            return;
        };
        for frame in frames {
            let out = self.channels.handle(&frame, Instant::now());
            self.on_channel(out);
        }
    }

    fn on_command(&mut self, command: FedCommand) {
        match command {
            FedCommand::Dkg {
                roster,
                context,
                reply,
            } => {
                let session = dkg::session_id(&context, &roster, 0);
                let started = Dkg::start(
                    session,
                    roster,
                    self.keypair,
                    dkg::DEFAULT_ROUND_TIMEOUT,
                    Instant::now(),
                    &mut OsRng,
                );
                let Some((state, out)) = started else {
                    let _ = reply.send(Err("this member is not in the roster".into()));
                    return;
                };
                self.dkg = Some(state);
                self.dkg_reply = Some(reply);
                self.on_dkg(out);
                let early: Vec<_> = self.early.drain(..).collect();
                for (from, msg) in early {
                    self.deliver_dkg(from, msg);
                }
            }
            FedCommand::Crash(_) => {}
            FedCommand::RelayOnly(on) => {
                self.relay_only = on;
                self.couriers.clear();
            }
            FedCommand::Sign { payload, reply } => {
                let Some(signing) = self.signing.as_mut() else {
                    let _ = reply.send(Err("no key yet".into()));
                    return;
                };
                let (id, out) = signing.request(&payload, Instant::now(), &mut OsRng);
                self.sign_replies.insert(id, reply);
                self.on_signing(out);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let out = self.channels.on_tick(now);
        self.on_channel(out);
        if let Some(dkg) = self.dkg.as_mut() {
            let out = dkg.on_tick(now);
            self.on_dkg(out);
        }
        if let Some(signing) = self.signing.as_mut() {
            let out = signing.on_tick(now, &mut OsRng);
            self.on_signing(out);
        }
    }

    fn send(&mut self, to: MemberId, msg: &FedMessage) {
        self.outbox.entry(to).or_default().push(msg.clone());
    }

    /// Sends what was gathered: one channel message per member.
    fn flush(&mut self) {
        // Sending can make more to send only through local delivery, which the
        // channels do not do; one pass empties the outbox.
        let outbox = std::mem::take(&mut self.outbox);
        for (to, mut messages) in outbox {
            let msg = if messages.len() == 1 {
                messages.remove(0)
            } else {
                FedMessage::Batch(messages)
            };
            let Ok(bytes) = serde_cbor::to_vec(&msg) else {
                continue;
            };
            let out = self.channels.send(to, bytes, Instant::now());
            self.on_channel(out);
        }
    }

    fn on_channel(&mut self, outputs: Vec<ChannelOutput>) {
        for output in outputs {
            match output {
                ChannelOutput::Transmit { to, frame } => self.transmit(to, frame),
                ChannelOutput::Deliver { from, payload } => {
                    match serde_cbor::from_slice::<FedMessage>(&payload) {
                        Ok(msg) => self.on_message(from, msg, 0),
                        Err(err) => debug!(target: LOG_TARGET, %from, %err, "undecodable message"),
                    }
                }
                ChannelOutput::Undeliverable { to, reason } => {
                    debug!(target: LOG_TARGET, %to, %reason, "undeliverable");
                }
            }
        }
    }

    fn on_message(&mut self, from: MemberId, msg: FedMessage, depth: u8) {
        match msg {
            FedMessage::Broadcast(msg) => {
                let out = self.broadcast.handle(from, msg);
                self.on_broadcast(out);
            }
            FedMessage::Dkg(msg) => self.deliver_dkg(from, msg),
            FedMessage::Sign(msg) => {
                if let Some(signing) = self.signing.as_mut() {
                    let out = signing.handle(from, msg, Instant::now(), &mut OsRng);
                    self.on_signing(out);
                }
            }
            // Batches are flat: a nested one is not something this node sends.
            FedMessage::Batch(messages) if depth == 0 => {
                for msg in messages {
                    self.on_message(from, msg, 1);
                }
            }
            FedMessage::Batch(_) => {}
        }
    }

    /// Hands a frame to the member's courier.
    fn transmit(&mut self, to: MemberId, frame: Vec<u8>) {
        let Some(peer) = self.peers.get(&to).copied() else {
            return;
        };
        let overlay = self.overlay.clone();
        let relay_only = self.relay_only;
        let courier = self
            .couriers
            .entry(to)
            .or_insert_with(|| spawn_courier(overlay, peer, relay_only));
        // A full queue drops the frame; reliable delivery sends it again.
        let _ = courier.try_send(frame);
    }

    fn on_broadcast(&mut self, outputs: Vec<BroadcastOutput>) {
        for output in outputs {
            match output {
                BroadcastOutput::Send { to, msg } => self.send(to, &FedMessage::Broadcast(msg)),
                BroadcastOutput::Deliver {
                    sender, payload, ..
                } => match serde_cbor::from_slice::<Broadcasted>(&payload) {
                    Ok(Broadcasted::Dkg(msg)) => self.deliver_dkg(sender, msg),
                    Err(err) => debug!(target: LOG_TARGET, %sender, %err, "undecodable broadcast"),
                },
                BroadcastOutput::Equivocation { sender, .. } => {
                    if let Some(dkg) = self.dkg.as_mut() {
                        let out = dkg.on_equivocation(sender);
                        self.on_dkg(out);
                    }
                }
            }
        }
    }

    fn deliver_dkg(&mut self, from: MemberId, msg: DkgMessage) {
        match self.dkg.as_mut() {
            Some(dkg) if dkg.session() == msg.session => {
                let out = dkg.handle(from, msg, Instant::now());
                self.on_dkg(out);
            }
            Some(_) => {}
            None => {
                if self.early.len() < MAX_EARLY {
                    self.early.push_back((from, msg));
                }
            }
        }
    }

    fn on_dkg(&mut self, outputs: Vec<DkgOutput>) {
        for output in outputs {
            match output {
                DkgOutput::Broadcast(msg) => {
                    let kind: &[u8] = match msg.body {
                        DkgBody::Round1 { .. } => b"round1",
                        DkgBody::Complaint(_) => b"complaint",
                        DkgBody::Certificate { .. } => b"certificate",
                        DkgBody::Round2(_) => b"round2",
                    };
                    let mut h = Sha256::new();
                    h.update(b"tenure/federation/dkg-broadcast");
                    h.update(msg.session);
                    h.update(kind);
                    let tag: [u8; 32] = h.finalize().into();
                    let Ok(payload) = serde_cbor::to_vec(&Broadcasted::Dkg(msg)) else {
                        continue;
                    };
                    let out = self.broadcast.broadcast(tag, payload);
                    self.on_broadcast(out);
                }
                DkgOutput::Send { to, msg } => self.send(to, &FedMessage::Dkg(msg)),
                DkgOutput::Completed(key) => {
                    if let Some(store) = &self.key_store
                        && let Err(err) = store.put(&key)
                    {
                        if let Some(reply) = self.dkg_reply.take() {
                            let _ = reply.send(Err(format!("the key could not be stored: {err}")));
                        }
                        continue;
                    }
                    let key = Arc::new(*key);
                    if let Some(validator) = self.validator.take() {
                        self.signing = Some(Signing::new(
                            key.clone(),
                            validator,
                            SigningConfig::default(),
                        ));
                    }
                    if let Some(reply) = self.dkg_reply.take() {
                        let _ = reply.send(Ok(key));
                    }
                }
                DkgOutput::Failed(failure) => {
                    if let Some(reply) = self.dkg_reply.take() {
                        let blamed: Vec<String> =
                            failure.blamed.iter().map(|m| m.to_string()).collect();
                        let _ = reply.send(Err(format!(
                            "DKG failed: {} (blamed: {})",
                            failure.reason,
                            blamed.join(", ")
                        )));
                    }
                }
            }
        }
    }

    fn on_signing(&mut self, outputs: Vec<SignOutput>) {
        for output in outputs {
            match output {
                SignOutput::Broadcast(msg) => {
                    let others: Vec<MemberId> = self
                        .peers
                        .keys()
                        .copied()
                        .filter(|m| *m != self.me)
                        .collect();
                    for to in others {
                        self.send(to, &FedMessage::Sign(msg.clone()));
                    }
                }
                SignOutput::Send { to, msg } => self.send(to, &FedMessage::Sign(msg)),
                SignOutput::Signed {
                    request, record, ..
                } => {
                    if let Some(reply) = self.sign_replies.remove(&request) {
                        let _ = reply.send(Ok(record));
                    }
                }
                SignOutput::Failed { request, reason } => {
                    if let Some(reply) = self.sign_replies.remove(&request) {
                        let _ = reply.send(Err(reason));
                    }
                }
                SignOutput::Refused { request, reason } => {
                    if let Some(reply) = self.sign_replies.remove(&request) {
                        let _ = reply.send(Err(format!("refused here: {reason}")));
                    }
                }
                SignOutput::Cheater { member, .. } => {
                    debug!(target: LOG_TARGET, %member, "invalid signature share");
                }
            }
        }
    }
}
