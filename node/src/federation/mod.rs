//! A federation member on the overlay: drives `tenure_frost_fed::member::Member` (the
//! sans-IO member, which states the protocol's rules) with the overlay's events, a
//! timer and the key store.
//!
//! Frames go to a member's overlay peer by request-response through a per-member
//! courier that bundles whatever is queued. The answer carries the receiving member's
//! frames for the sender that are ready at once (its acks of what the request brought,
//! a handshake answer), so an ack costs no exchange of its own: at 50 members the
//! acks were as many requests as the messages they acked. Only a bundle whose first
//! frame is the empty mark gets frames in its answer: a node that does not read
//! answers (an older one) leaves the mark out and gets its acks by the courier as
//! before, so a federation can be upgraded one node at a time. A request that fails goes out on the
//! federation-frames gossip topic instead (one that is slow is left to the channels'
//! retransmission), and every node hands bundles it
//! receives either way to its member. The Noise channels keep them confidential and
//! authentic whichever way they travel.
//!
//! Frames count only from roster members' peers, as the member's contacts bind them.
//! A frame from any other peer is refused (by request) or dropped unforwarded (by
//! gossip) without penalising the peer: a member that restarted binds a new peer, and
//! until the others take its new contact its frames come from a peer they do not know,
//! while it does not know theirs yet either (penalising them, two honest producers
//! banned each other, and a restarted producer banned the miner relaying the others'
//! frames and lost the burnchain). The check costs a map lookup, so a stranger's
//! frames cost no more than any other refused message.
//!
//! Key shares go to the sled [`KeyStore`] before the DKG is reported complete, and a
//! restarted member signs with the stored one at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use bitcoin::secp256k1::Keypair;
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use tenure_frost_fed::{
    KeyShare, MemberId, RequestId, Roster,
    channel::{ChannelKey, ChannelStats},
    dkg::{DkgFailure, DkgTimings},
    member::{
        MAX_BUNDLE_BYTES, MAX_BUNDLE_FRAMES, Member, MemberConfig, MemberOutput, decode_bundle,
        encode_bundle,
    },
    sign::{SignatureRecord, Validator},
    store::KeyStore,
};
use tenure_overlay::{
    Misbehaviour, OverlayEvent, OverlayEvents, OverlayHandle, PeerId, Refusal, Service, Topic,
    Verdict,
};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::logs;

pub mod local;

pub use tenure_frost_fed::member::SignFault;

/// How often the member's timers run.
const TICK: Duration = Duration::from_millis(10);

/// Why a DKG gave no key here.
#[derive(Debug, thiserror::Error)]
pub enum DkgError {
    /// This member is not in the roster.
    #[error("this member is not in the roster")]
    NotInRoster,
    /// The session failed; retry without the blamed members.
    #[error("DKG failed: {0}")]
    Failed(DkgFailure),
    /// The key could not be stored, so it is not used.
    #[error("the key could not be stored: {0}")]
    NotStored(String),
    /// The member's task stopped.
    #[error("the member stopped")]
    Stopped,
}

/// Why a signature was not made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No key yet.
    #[error("no key yet")]
    NoKey,
    /// The federation could not sign it.
    #[error("not signed: {0}")]
    Failed(String),
    /// This member's validator refused it.
    #[error("refused here: {0}")]
    Refused(String),
    /// The member's task stopped.
    #[error("the member stopped")]
    Stopped,
}

/// Where a signing request's outcome goes: the record and the sessions it took.
type SignReply = oneshot::Sender<Result<(SignatureRecord, u32), SignError>>;

/// Commands to a member's task.
enum FedCommand {
    Dkg {
        roster: Roster,
        context: Vec<u8>,
        attempt: u32,
        /// Sign with the new key as soon as it is made (else: on [`FedCommand::UseKey`]).
        activate: bool,
        reply: oneshot::Sender<Result<Arc<KeyShare>, DkgError>>,
    },
    /// Sign with this key from now on.
    UseKey(Arc<KeyShare>),
    Sign {
        payload: Vec<u8>,
        reply: SignReply,
    },
    /// Behave as crashed (drop everything, no timers) for a while, then resume with
    /// the state kept: a crash and restart with the key on disk.
    Crash(Duration),
    /// Send every frame by the gossip relay, as if no member were connected.
    RelayOnly(bool),
    /// Misbehave in signing (benchmarks, the testnet's byzantine producer).
    Misbehave(Option<SignFault>),
    /// Members' channel bindings learnt since the start (producer contacts).
    AddContacts(Vec<ChannelKey>),
}

/// A handle to a running member.
#[derive(Clone)]
pub struct FedHandle {
    commands: mpsc::Sender<FedCommand>,
    dkg_timings: Arc<std::sync::Mutex<Option<DkgTimings>>>,
    channel_stats: Arc<std::sync::Mutex<ChannelStats>>,
    cheaters: Cheaters,
}

/// The overlay peers of the members this member knows.
type MemberPeers = Arc<std::sync::RwLock<BTreeSet<PeerId>>>;

/// Members this member found sending invalid signature shares, with how often.
type Cheaters = Arc<std::sync::Mutex<BTreeMap<MemberId, u64>>>;

impl FedHandle {
    /// Runs attempt `attempt` of a DKG for `roster` (every member must start the same
    /// one) and returns this member's key share.
    pub async fn dkg(
        &self,
        roster: Roster,
        context: Vec<u8>,
        attempt: u32,
    ) -> Result<Arc<KeyShare>, DkgError> {
        self.run_dkg(roster, context, attempt, true).await
    }

    /// As [`FedHandle::dkg`], but the member keeps signing with its current key until
    /// told to switch ([`FedHandle::use_key`]): the next term's key is made while the
    /// current term still signs.
    pub async fn dkg_next(
        &self,
        roster: Roster,
        context: Vec<u8>,
        attempt: u32,
    ) -> Result<Arc<KeyShare>, DkgError> {
        self.run_dkg(roster, context, attempt, false).await
    }

    async fn run_dkg(
        &self,
        roster: Roster,
        context: Vec<u8>,
        attempt: u32,
        activate: bool,
    ) -> Result<Arc<KeyShare>, DkgError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(FedCommand::Dkg {
                roster,
                context,
                attempt,
                activate,
                reply,
            })
            .await
            .map_err(|_| DkgError::Stopped)?;
        answer.await.unwrap_or(Err(DkgError::Stopped))
    }

    /// Signs with `key` from now on (a term's key made by [`FedHandle::dkg_next`]).
    pub async fn use_key(&self, key: Arc<KeyShare>) {
        let _ = self.commands.send(FedCommand::UseKey(key)).await;
    }

    /// Asks the federation to sign `payload`; returns the signature record.
    pub async fn sign(&self, payload: Vec<u8>) -> Result<SignatureRecord, SignError> {
        Ok(self.sign_counted(payload).await?.0)
    }

    /// As [`FedHandle::sign`], with the number of sessions the signing coordinator
    /// opened for the request (for benchmarks).
    pub async fn sign_counted(
        &self,
        payload: Vec<u8>,
    ) -> Result<(SignatureRecord, u32), SignError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(FedCommand::Sign { payload, reply })
            .await
            .map_err(|_| SignError::Stopped)?;
        answer.await.unwrap_or(Err(SignError::Stopped))
    }

    /// The members this member, coordinating, found sending invalid signature shares
    /// (ROAST names them and signs without them), with how many times.
    pub fn cheaters(&self) -> BTreeMap<MemberId, u64> {
        self.cheaters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// How long the phases of the last DKG this member completed took (benchmarks).
    pub fn last_dkg_timings(&self) -> Option<DkgTimings> {
        self.dkg_timings.lock().ok().and_then(|t| *t)
    }

    /// What the member's channels had sent when its last DKG or signature ended, by
    /// kind (benchmarks).
    pub fn channel_stats(&self) -> ChannelStats {
        self.channel_stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Takes members' channel bindings learnt since the start (the producer contacts
    /// a node gathers from gossip): new members are reached from now on, and a member
    /// whose Noise key or overlay peer changed is reached at the new one. The caller
    /// hands over only bindings newer than those it handed over before
    /// ([`tenure_frost_fed::channel::Channels::add`]).
    pub async fn add_contacts(&self, keys: Vec<ChannelKey>) {
        let _ = self.commands.send(FedCommand::AddContacts(keys)).await;
    }

    /// Makes the member send every frame by the gossip relay (for tests).
    pub async fn relay_only(&self, on: bool) {
        let _ = self.commands.send(FedCommand::RelayOnly(on)).await;
    }

    /// Makes the member misbehave in signing, or honest again with `None` (for
    /// benchmarks and tests).
    pub async fn misbehave(&self, fault: Option<SignFault>) {
        let _ = self.commands.send(FedCommand::Misbehave(fault)).await;
    }

    /// Makes the member behave as crashed for `duration` (for benchmarks and tests).
    pub async fn crash_for(&self, duration: Duration) {
        let _ = self.commands.send(FedCommand::Crash(duration)).await;
    }
}

/// Signs the SHA-256 of any payload: for benchmarks and tests.
pub struct SignDigests;

impl Validator for SignDigests {
    type Refusal = std::convert::Infallible;
    fn approve(&self, payload: &[u8]) -> Result<[u8; 32], Self::Refusal> {
        Ok(Sha256::digest(payload).into())
    }
}

/// Bytes of frames waiting for one member, at most. A member that stops taking its
/// frames pins this much of our memory and no more; frames past it are dropped, and
/// reliable delivery sends them again once the queue drains. Four bundles' worth.
const COURIER_QUEUE_BYTES: usize = 4 * MAX_BUNDLE_BYTES;

/// Frames waiting for one member, at most (small frames: acknowledgements, echoes).
const COURIER_QUEUE_FRAMES: usize = 4096;

/// The queue in front of one member's courier, bounded in frames and in bytes.
#[derive(Clone)]
struct CourierQueue {
    sender: mpsc::Sender<Vec<u8>>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// The courier's end of its queue.
struct CourierInbox {
    receiver: mpsc::Receiver<Vec<u8>>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl CourierQueue {
    fn new() -> (CourierQueue, CourierInbox) {
        let (sender, receiver) = mpsc::channel(COURIER_QUEUE_FRAMES);
        let queued_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (
            CourierQueue {
                sender,
                queued_bytes: queued_bytes.clone(),
            },
            CourierInbox {
                receiver,
                queued_bytes,
            },
        )
    }

    /// Queues `frame` unless the queue is full in frames or in bytes.
    fn try_send(&self, frame: Vec<u8>) -> bool {
        use std::sync::atomic::Ordering;
        let len = frame.len();
        let reserved = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued
                    .checked_add(len)
                    .filter(|total| *total <= COURIER_QUEUE_BYTES)
            })
            .is_ok();
        if !reserved {
            return false;
        }
        if self.sender.try_send(frame).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl CourierInbox {
    fn taken(&self, frame: &[u8]) {
        self.queued_bytes
            .fetch_sub(frame.len(), std::sync::atomic::Ordering::AcqRel);
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.receiver.recv().await?;
        self.taken(&frame);
        Some(frame)
    }

    fn try_recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.receiver.try_recv().ok()?;
        self.taken(&frame);
        Some(frame)
    }
}

/// Requests in flight to one member, at most. Fewer requests carry more frames each
/// (at 20 members, 4 in flight made 262 requests per member per DKG round, 1 made
/// 72); but with 1, a request waiting on a busy member holds everything behind it
/// (signing with a member crashed: p50 1 s instead of 150 ms). Two keeps both near
/// their best (96 requests; 167 ms).
const COURIER_IN_FLIGHT: usize = 2;

/// How long a bundle may wait for its answer before it is given up (its frames are
/// sent again by the channels' retransmission). Long, because giving up early is what
/// loads a busy machine further: at 2 s, a 50-member DKG in one process gave up
/// 37,000 requests that were only queued, the channels sent every frame again, and no
/// round finished; at 10 s it completes. A member that really hangs holds up only its
/// own courier.
const COURIER_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers to our requests (frames the members sent back) waiting for the member, at
/// most; a courier with an answer waits for room. With [`MAX_ANSWER_BYTES`], at most
/// 16 MiB wait.
const ANSWERS_QUEUED: usize = 256;

/// Bytes of frames one answer carries, at most: acks and handshake answers are a few
/// hundred bytes; frames past this go by the courier, and a larger answer is dropped
/// unread.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Bytes of frames put into one answer, each counted with its encoding's header,
/// leaving room for the list's own within [`MAX_ANSWER_BYTES`].
const ANSWER_FRAME_BYTES: usize = MAX_ANSWER_BYTES - 16;

/// The longest CBOR header of a byte string.
const CBOR_ITEM_HEADER: usize = 9;

/// Whether a bundle's sender reads the frames in answers: its first frame is the
/// empty mark (which no member decodes as a frame, so nodes without it ignore it).
/// A bundle is a CBOR array of byte strings: after the array's header, an empty byte
/// string is the single byte 0x40.
fn reads_answers(bundle: &[u8]) -> bool {
    let header = match bundle.first() {
        Some(0x80..=0x97) => 1,
        Some(0x98) => 2,
        Some(0x99) => 3,
        Some(0x9a) => 5,
        Some(0x9b) => 9,
        _ => return false,
    };
    bundle.get(header) == Some(&0x40)
}

/// Splits `outputs` into the frames for `sender` that go back in the answer (module
/// docs) and the rest. In order: once a frame for `sender` does not fit, it and the
/// ones after it go by the courier.
fn take_answer(outputs: Vec<MemberOutput>, sender: MemberId) -> (Vec<Vec<u8>>, Vec<MemberOutput>) {
    let mut frames = Vec::new();
    let mut size = 0usize;
    let mut full = false;
    let mut rest = Vec::new();
    for output in outputs {
        match output {
            MemberOutput::Transmit { to, frame } if to == sender && !full => {
                let grown = size.saturating_add(frame.len() + CBOR_ITEM_HEADER);
                if grown <= ANSWER_FRAME_BYTES && frames.len() < MAX_BUNDLE_FRAMES {
                    size = grown;
                    frames.push(frame);
                } else {
                    full = true;
                    rest.push(MemberOutput::Transmit { to, frame });
                }
            }
            other => rest.push(other),
        }
    }
    (frames, rest)
}

/// Requests to one peer that must hang in a row before its frames go by the gossip
/// relay: one slow answer is load, several in a row look like a dead connection.
const COURIER_HUNG_BEFORE_RELAY: u32 = 3;

/// Sends frames to one member's overlay peer, a few requests at a time, each carrying
/// every frame queued meanwhile: a burst of frames costs one request, not one
/// substream each.
///
/// A request that fails (the peer is not reachable directly) goes out by the gossip
/// relay, and so do bundles once [`COURIER_HUNG_BEFORE_RELAY`] requests in a row hung
/// (a connection dead without the overlay knowing); one that is merely slow does not. Every relayed bundle reaches every node
/// and costs each a gossip signature check, so relaying because a loaded machine
/// answers slowly adds load exactly when there is none to spare: at 20 members in
/// one process that feedback turned a busy second into thousands of relays and a
/// failed DKG.
fn spawn_courier(
    overlay: OverlayHandle,
    peer: PeerId,
    relay_only: bool,
    answers: mpsc::Sender<(PeerId, Vec<u8>)>,
) -> CourierQueue {
    let (sender, mut queue) = CourierQueue::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(COURIER_IN_FLIGHT));
    // Requests to this peer that hung in a row, since the last that was answered.
    let hung = Arc::new(std::sync::atomic::AtomicU32::new(0));
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let mut size = first.len();
            // The mark first: this node reads the frames in answers (module docs).
            let mut frames = vec![Vec::new(), first];
            while size < MAX_BUNDLE_BYTES && frames.len() < MAX_BUNDLE_FRAMES {
                match queue.try_recv() {
                    Some(frame) => {
                        size += frame.len();
                        frames.push(frame);
                    }
                    None => break,
                }
            }
            let bundle = match encode_bundle(frames) {
                Ok(bundle) => bundle,
                Err(error) => {
                    debug!(target: logs::FED_COURIER, %peer, %error, "frames dropped");
                    continue;
                }
            };
            let overlay = overlay.clone();
            let hung = hung.clone();
            let answers = answers.clone();
            tokio::spawn(async move {
                use std::sync::atomic::Ordering;
                let relay = if relay_only {
                    true
                } else {
                    match tokio::time::timeout(
                        COURIER_TIMEOUT,
                        overlay.request(peer, Service::FederationFrame, bundle.clone()),
                    )
                    .await
                    {
                        Ok(Ok(answer)) => {
                            hung.store(0, Ordering::Release);
                            // The answer carries the member's acks (module docs).
                            if !answer.is_empty() && answer.len() <= MAX_ANSWER_BYTES {
                                // Waits for room (holding this courier's permit, so
                                // at most two answers wait per member): a dropped
                                // answer would cost its data a retransmission.
                                let _ = answers.send((peer, answer)).await;
                            }
                            false
                        }
                        Ok(Err(error)) => {
                            debug!(target: logs::FED_COURIER, %peer, %error, "request failed");
                            true
                        }
                        Err(_) => {
                            // A peer whose requests keep hanging may sit behind a dead
                            // connection the overlay still counts as open: past a few in
                            // a row, its frames go by the relay after all.
                            let in_a_row = hung.fetch_add(1, Ordering::AcqRel).saturating_add(1);
                            debug!(target: logs::FED_COURIER, %peer, in_a_row, "request hung");
                            in_a_row >= COURIER_HUNG_BEFORE_RELAY
                        }
                    }
                };
                if relay {
                    debug!(target: logs::FED_COURIER, %peer, "relaying frames by gossip");
                    let _ = overlay.publish(Topic::FederationFrames, bundle).await;
                }
                drop(permit);
            });
        }
    });
    sender
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
    let peers: BTreeMap<MemberId, PeerId> = directory
        .iter()
        .filter(|k| k.verify())
        .filter_map(|k| Some((k.member, PeerId::from_bytes(&k.overlay_peer).ok()?)))
        .collect();
    // Relayed frames are accepted only from roster members' peers (others' dropped,
    // module docs), and only as bundles (a member's junk is rejected, its relayer
    // penalised).
    let roster_peers: MemberPeers =
        Arc::new(std::sync::RwLock::new(peers.values().copied().collect()));
    // Every member keeps a direct connection to every other, outside the peer cap.
    overlay
        .keep_connected(peers.values().copied().collect())
        .await;
    let validator_peers = roster_peers.clone();
    overlay
        .subscribe(
            Topic::FederationFrames,
            Arc::new(move |source: Option<PeerId>, data: &[u8]| {
                let member_peer = source.is_some_and(|s| {
                    validator_peers
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains(&s)
                });
                if !member_peer {
                    Verdict::Ignore("federation frames from a peer not known as a member".into())
                } else if let Err(error) = decode_bundle(data) {
                    Verdict::Reject(error.to_string())
                } else {
                    Verdict::Accept
                }
            }),
        )
        .await?;
    // A key made before a restart: signing is ready at once.
    let me = MemberId::from(keypair.x_only_public_key().0);
    let stored = match &key_store {
        Some(store) => store.current()?.filter(|k| k.member == me).map(Arc::new),
        None => None,
    };
    let member = Member::new(
        keypair,
        noise_private,
        &directory,
        validator,
        stored,
        MemberConfig::default(),
    );
    let dkg_timings = Arc::new(std::sync::Mutex::new(None));
    let channel_stats = Arc::new(std::sync::Mutex::new(ChannelStats::default()));
    let cheaters = Cheaters::default();
    let (answers, answered) = mpsc::channel(ANSWERS_QUEUED);
    let driver = Driver {
        answers,
        cheaters: cheaters.clone(),
        member,
        overlay,
        peers,
        roster_peers,
        dkg_reply: None,
        dkg_activate: true,
        sign_replies: BTreeMap::new(),
        couriers: BTreeMap::new(),
        key_store,
        relay_only: false,
        dkg_timings: dkg_timings.clone(),
        channel_stats: channel_stats.clone(),
    };
    let (commands, receiver) = mpsc::channel(64);
    tokio::spawn(driver.run(events, receiver, answered));
    Ok(FedHandle {
        commands,
        dkg_timings,
        channel_stats,
        cheaters,
    })
}

/// One member's task state.
struct Driver<V> {
    member: Member<V>,
    overlay: OverlayHandle,
    peers: BTreeMap<MemberId, PeerId>,
    /// The members' peers, shared with the relayed-frames validator.
    roster_peers: MemberPeers,
    dkg_reply: Option<oneshot::Sender<Result<Arc<KeyShare>, DkgError>>>,
    /// Whether the DKG under way signs as soon as it completes.
    dkg_activate: bool,
    /// Who waits for each request: asking again for a payload already asked for (the
    /// same request) adds a waiter, it does not drop the first.
    sign_replies: BTreeMap<RequestId, Vec<SignReply>>,
    /// One sender task per member.
    couriers: BTreeMap<MemberId, CourierQueue>,
    /// Where couriers hand the answers to their requests (frames for this member).
    answers: mpsc::Sender<(PeerId, Vec<u8>)>,
    /// Where key shares are kept across restarts.
    key_store: Option<KeyStore>,
    /// Every frame goes by gossip relay (tests).
    relay_only: bool,
    /// The last completed DKG's phase times, for the handle.
    dkg_timings: Arc<std::sync::Mutex<Option<DkgTimings>>>,
    /// The channels' traffic when the last DKG or signature ended, for the handle.
    channel_stats: Arc<std::sync::Mutex<ChannelStats>>,
    /// Members found sending invalid shares, for the handle.
    cheaters: Cheaters,
}

impl<V: Validator + Send + 'static> Driver<V> {
    async fn run(
        mut self,
        mut events: OverlayEvents,
        mut commands: mpsc::Receiver<FedCommand>,
        mut answered: mpsc::Receiver<(PeerId, Vec<u8>)>,
    ) {
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
                Some((peer, answer)) = answered.recv() => if !crashed {
                    let out = self.member.handle(&peer.to_bytes(), &answer, Instant::now(), &mut OsRng);
                    self.on_outputs(out).await;
                },
                _ = tick.tick() => if !crashed {
                    let out = self.member.on_tick(Instant::now(), &mut OsRng);
                    self.on_outputs(out).await;
                },
            }
        }
    }

    async fn on_event(&mut self, event: OverlayEvent) {
        let out = match event {
            OverlayEvent::InboundRequest {
                id,
                peer,
                service: Service::FederationFrame,
                body,
            } => {
                // Frames come only from roster members' peers (module docs).
                let Some(sender) = self
                    .peers
                    .iter()
                    .find_map(|(member, p)| (*p == peer).then_some(*member))
                else {
                    let _ = self
                        .overlay
                        .respond(id, Err(Refusal::NotServed(Service::FederationFrame)))
                        .await;
                    return;
                };
                let mut out =
                    self.member
                        .handle(&peer.to_bytes(), &body, Instant::now(), &mut OsRng);
                if !reads_answers(&body) {
                    // A node that ignores answers gets its acks by the courier.
                    let _ = self.overlay.respond(id, Ok(Vec::new())).await;
                    self.on_outputs(out).await;
                    return;
                }
                out.extend(self.member.acks_for(sender));
                let (frames, rest) = take_answer(out, sender);
                let answer = if frames.is_empty() {
                    Vec::new()
                } else {
                    encode_bundle(frames).unwrap_or_default()
                };
                // The answer leaves without this task waiting for the overlay's
                // word on it: a member waiting on each answer takes its frames only
                // as fast as a loaded overlay replies, and at 100 members in one
                // process that held requests past their timeout.
                let overlay = self.overlay.clone();
                tokio::spawn(async move { overlay.respond(id, Ok(answer)).await });
                rest
            }
            OverlayEvent::InboundRequest { id, service, .. } => {
                let _ = self
                    .overlay
                    .respond(id, Err(Refusal::NotServed(service)))
                    .await;
                return;
            }
            OverlayEvent::Gossip {
                topic: Topic::FederationFrames,
                source,
                data,
            } => {
                let from = source.map(|p| p.to_bytes()).unwrap_or_default();
                self.member.handle(&from, &data, Instant::now(), &mut OsRng)
            }
            _ => return,
        };
        self.on_outputs(out).await;
    }

    fn on_command(&mut self, command: FedCommand) {
        match command {
            FedCommand::Dkg {
                roster,
                context,
                attempt,
                activate,
                reply,
            } => {
                self.dkg_activate = activate;
                match self
                    .member
                    .start_dkg(roster, &context, attempt, Instant::now(), &mut OsRng)
                {
                    Ok(out) => {
                        self.dkg_reply = Some(reply);
                        // Messages gathered now leave on the next tick, with the
                        // frames of any other output.
                        self.on_outputs_now(out);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(DkgError::NotInRoster));
                    }
                }
            }
            FedCommand::Crash(_) => {}
            FedCommand::UseKey(key) => self.member.use_key(key),
            FedCommand::AddContacts(keys) => self.add_contacts(keys),
            FedCommand::Misbehave(fault) => self.member.set_fault(fault),
            FedCommand::RelayOnly(on) => {
                self.relay_only = on;
                self.couriers.clear();
            }
            FedCommand::Sign { payload, reply } => {
                match self.member.sign(&payload, Instant::now(), &mut OsRng) {
                    Ok((id, out)) => {
                        self.sign_replies.entry(id).or_default().push(reply);
                        self.on_outputs_now(out);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(SignError::NoKey));
                    }
                }
            }
        }
    }

    /// Outputs of an overlay event: junk handed over by a peer is reported to the
    /// overlay for a penalty.
    async fn on_outputs(&mut self, outputs: Vec<MemberOutput>) {
        for output in outputs {
            match output {
                MemberOutput::Junk { from, error } => {
                    if let Ok(peer) = PeerId::from_bytes(&from) {
                        debug!(target: logs::FED_COURIER, %peer, %error, "junk frames");
                        self.overlay
                            .report(peer, Misbehaviour::Protocol(error.to_string()))
                            .await;
                    }
                }
                other => self.on_output(other),
            }
        }
    }

    /// Outputs of a command: nothing in them waits on the network.
    fn on_outputs_now(&mut self, outputs: Vec<MemberOutput>) {
        for output in outputs {
            self.on_output(output);
        }
    }

    fn on_output(&mut self, output: MemberOutput) {
        if matches!(
            output,
            MemberOutput::DkgCompleted(_)
                | MemberOutput::DkgFailed(_)
                | MemberOutput::Signed { .. }
                | MemberOutput::SignFailed { .. }
        ) && let Ok(mut stats) = self.channel_stats.lock()
        {
            *stats = self.member.channel_stats();
        }
        match output {
            MemberOutput::Transmit { to, frame } => self.transmit(to, frame),
            MemberOutput::DkgCompleted(key) => {
                if let Some(store) = &self.key_store
                    && let Err(err) = store.put(&key)
                {
                    if let Some(reply) = self.dkg_reply.take() {
                        let _ = reply.send(Err(DkgError::NotStored(err.to_string())));
                    }
                    return;
                }
                if let Ok(mut timings) = self.dkg_timings.lock() {
                    *timings = self.member.last_dkg_timings();
                }
                let key = Arc::new(*key);
                if self.dkg_activate {
                    self.member.use_key(key.clone());
                }
                if let Some(reply) = self.dkg_reply.take() {
                    let _ = reply.send(Ok(key));
                }
            }
            MemberOutput::DkgFailed(failure) => {
                debug!(target: logs::FED_DKG, %failure, "DKG failed");
                if let Some(reply) = self.dkg_reply.take() {
                    let _ = reply.send(Err(DkgError::Failed(failure)));
                }
            }
            MemberOutput::Signed {
                request,
                record,
                sessions,
            } => {
                for reply in self.sign_replies.remove(&request).unwrap_or_default() {
                    let _ = reply.send(Ok((record.clone(), sessions)));
                }
            }
            MemberOutput::SignFailed { request, reason } => {
                for reply in self.sign_replies.remove(&request).unwrap_or_default() {
                    let _ = reply.send(Err(SignError::Failed(reason.clone())));
                }
            }
            MemberOutput::Refused { request, reason } => {
                for reply in self.sign_replies.remove(&request).unwrap_or_default() {
                    let _ = reply.send(Err(SignError::Refused(reason.clone())));
                }
            }
            MemberOutput::Cheater { member, .. } => {
                debug!(target: logs::FED_SIGN, %member, "invalid signature share");
                if let Ok(mut cheaters) = self.cheaters.lock() {
                    let count = cheaters.entry(member).or_default();
                    *count = count.saturating_add(1);
                }
            }
            MemberOutput::Undeliverable { to, reason } => {
                debug!(target: logs::FED_CHANNEL, %to, %reason, "undeliverable");
            }
            MemberOutput::Undecodable { from, reason } => {
                debug!(target: logs::FED_CHANNEL, %from, %reason, "undecodable message");
            }
            MemberOutput::Junk { from, error } => {
                debug!(target: logs::FED_COURIER, from = %hex::encode(from), %error, "junk frames");
            }
        }
    }

    /// Takes members' bindings learnt since the start ([`FedHandle::add_contacts`]).
    fn add_contacts(&mut self, keys: Vec<ChannelKey>) {
        let mut changed = false;
        for key in keys {
            let Ok(peer) = PeerId::from_bytes(&key.overlay_peer) else {
                continue;
            };
            let member = key.member;
            if !self.member.add_contact(key) {
                continue;
            }
            changed = true;
            // A member at a new peer gets a new courier.
            if self
                .peers
                .insert(member, peer)
                .is_some_and(|old| old != peer)
            {
                self.couriers.remove(&member);
            }
        }
        if changed {
            let peers: BTreeSet<PeerId> = self.peers.values().copied().collect();
            *self
                .roster_peers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = peers.clone();
            let overlay = self.overlay.clone();
            tokio::spawn(async move { overlay.keep_connected(peers.into_iter().collect()).await });
        }
    }

    /// Hands a frame to the member's courier.
    fn transmit(&mut self, to: MemberId, frame: Vec<u8>) {
        let Some(peer) = self.peers.get(&to).copied() else {
            return;
        };
        let overlay = self.overlay.clone();
        let relay_only = self.relay_only;
        let answers = self.answers.clone();
        let courier = self
            .couriers
            .entry(to)
            .or_insert_with(|| spawn_courier(overlay, peer, relay_only, answers));
        // A full queue drops the frame; reliable delivery sends it again.
        if !courier.try_send(frame) {
            debug!(target: logs::FED_COURIER, member = %to, queued = courier.queued_bytes(), "courier queue full; frame dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark is read from bundles of any length, and only as the first frame.
    #[test]
    fn the_answer_mark_is_the_first_frame_of_a_bundle_of_any_length() {
        for count in [0usize, 1, 23, 24, 300, 70_000] {
            let mut frames = vec![vec![7u8; 3]; count];
            assert!(!reads_answers(&encode_bundle(frames.clone()).unwrap()));
            frames.insert(0, Vec::new());
            assert!(
                reads_answers(&encode_bundle(frames.clone()).unwrap()),
                "{count}"
            );
            frames.swap(0, count);
            if count > 0 {
                assert!(!reads_answers(&encode_bundle(frames).unwrap()), "{count}");
            }
        }
        assert!(!reads_answers(&[]));
        assert!(!reads_answers(&[0x81]));
        assert!(!reads_answers(&[0x40]));
    }

    /// Item 7 of the review: a member that stops taking its frames could pin 4,096 frames
    /// of up to 64 KiB each (256 MiB) in our memory. Now the queue stops at its byte
    /// bound, and takes frames again as soon as it drains.
    #[tokio::test]
    async fn a_member_that_never_takes_its_frames_pins_at_most_the_byte_bound() {
        let (queue, mut inbox) = CourierQueue::new();
        let frame = vec![7u8; 64 * 1024];
        let accepted = (0..COURIER_QUEUE_FRAMES)
            .filter(|_| queue.try_send(frame.clone()))
            .count();
        assert_eq!(accepted, COURIER_QUEUE_BYTES / frame.len());
        assert!(queue.queued_bytes() <= COURIER_QUEUE_BYTES);
        // Small frames are refused too while the bytes are used up...
        assert!(!queue.try_send(vec![1]));
        // ...and the queue works again once the courier takes a frame.
        assert_eq!(inbox.recv().await.map(|f| f.len()), Some(frame.len()));
        assert!(queue.try_send(vec![1; 100]));
        while inbox.try_recv().is_some() {}
        assert_eq!(queue.queued_bytes(), 0);
    }
}
