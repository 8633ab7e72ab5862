//! The producer's driver: wires [`tenure_chain::produce::Producer`] (the protocol,
//! sans-IO) to the overlay, the node's federation member and time. No protocol rule
//! lives here.
//!
//! - **Transactions.** Transfers arrive on the transactions topic, judged before they
//!   are forwarded by [`tenure_chain::produce::judge_relay`] on this producer's chain
//!   state (valid: forwarded and put in the mempool; stale or unfunded: dropped; not a
//!   validly signed transfer: rejected and the forwarder penalised).
//!   [`ProducerHandle::broadcast`] puts a transfer in the local mempool and publishes it.
//!   Relayed transfers wait in a queue of their own ([`TRANSACTIONS_QUEUE`], dropped
//!   when full) and the loop takes them after everything else, so a flood of transfers
//!   never delays a vote or a pre-commit. The validator checked a relayed transfer's
//!   signature: the mempool does not check it again.
//! - **Transport.** Messages for every producer (proposals, blocks, vote requests) are
//!   published on the blocks topic. A message meant for one producer (a vote, a
//!   pre-commit, a request for missed blocks, the blocks sent back) goes to that
//!   producer's peer directly by request-response ([`Service::ProducerDirect`]); if
//!   the request fails (no connection, a timeout) it is published on the blocks topic,
//!   where the others' producers ignore it. A message counts only from an overlay peer
//!   in the producer directory, which names its producer (gossipsub signs every message
//!   with its publisher's peer key, request-response runs over the Noise-authenticated
//!   connection). A message from another peer is dropped without penalty (the
//!   directory lags: a producer that restarted publishes from a new peer before its
//!   new contact arrives, and penalising it banned its relayers); one from a
//!   producer's peer that does not decode is rejected and its sender penalised.
//!   The one exception is a follower's request for blocks (`GetBlocks` sent directly
//!   by a peer that is no producer): it is answered in the response itself with the
//!   blocks kept in memory, at most [`FOLLOWER_BATCH_BYTES`] of them
//!   ([`tenure_chain::produce::follower::BlockBatch`]).
//! - **Chain store.** With a [`ChainStore`], every block the producer applies is stored
//!   durably before the loop goes on, the producer starts from the store's tip (a
//!   restarted node resumes there and catches up from the others), and requests for
//!   blocks older than the producer keeps in memory are answered from the store.
//! - **Term keys for those that missed them.** With the node's term key book
//!   ([`crate::terms::SharedKeyBook`]), a follower's batch carries the proofs of its
//!   blocks' terms, and a `GetTermKeys` request from any peer is answered with the
//!   proofs from the term it names on ([`MAX_BATCH_PROOFS`] at most): public data, so
//!   nobody is asked who they are. These answers to anyone (blocks and keys) are
//!   rationed per peer ([`ANSWERS_PER_S`], bursts of [`ANSWERS_BURST`]): a peer over
//!   its budget is refused and penalised, so a stranger cannot keep the producer's
//!   loop reading its store.
//! - **Signing.** A `Sign` output goes to the federation member
//!   ([`crate::federation::FedHandle::sign`]) on a task of its own; the signature and
//!   its evidence come back into the producer's loop.
//! - **Time.** The producer's timers run every [`TICK`].

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bitcoin::{OutPoint, Transaction, TxOut};
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use tenure_chain::{
    block::{ChainState, Hash, SignerEvidence, TermContext, Transfer, Tx},
    produce::{
        PRODUCER_MESSAGE_VERSION, Producer, ProducerBody, ProducerId, ProducerMessage,
        ProducerOutput, RelayJudgement, RelayedNonces,
        follower::{BlockBatch, MAX_BATCH_PROOFS},
        judge_relay,
    },
    store::ChainStore,
};
use tenure_overlay::{
    Misbehaviour, OverlayEvent, OverlayEvents, OverlayHandle, PeerId, Refusal, Service, Topic,
    Verdict,
};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::{contacts::PeerDirectory, federation::FedHandle, logs, terms::SharedKeyBook};

/// How often the producer's timers run.
pub const TICK: Duration = Duration::from_millis(20);

/// Gossiped transfers waiting for the producer's loop: a queue of their own, so a flood
/// of them is dropped here and never delays the blocks topic's consensus messages.
pub const TRANSACTIONS_QUEUE: usize = 1024;

/// Bytes of blocks a producer sends a follower in one answer, at most (one block
/// always goes).
pub const FOLLOWER_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Block queries (the HTTP API) waiting for the producer's loop, at most.
const BLOCK_ASKS_QUEUE: usize = 64;

/// (sender, nonce) pairs the transactions topic's validator remembers as relayed.
const RELAYED_NONCES_KEPT: usize = 65_536;

/// How long publishing a transfer may take before it is given up (the swarm task is
/// busy).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a running producer reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStatus {
    /// The term it produces (or follows).
    pub term: u64,
    /// Height of its tip.
    pub height: u64,
    /// Its tip.
    pub tip: Hash,
    /// The leader it follows.
    pub leader: Option<ProducerId>,
    /// Blocks it applied.
    pub blocks: u64,
    /// Transfers in the blocks it applied.
    pub transfers: u64,
    /// Verified signer shares of the last block it applied.
    pub last_signer_shares: usize,
    /// Leaders it deposed.
    pub deposed: u64,
    /// Transfers waiting in its mempool.
    pub mempool: usize,
    /// Announcements the group signed at this producer's request, submitted to the
    /// burnchain.
    pub announcements_sent: u64,
    /// Blocks and transfers it applied, by the blocks' term.
    pub by_term: BTreeMap<u64, TermBlocks>,
    /// Leaders it deposed for misbehaviour (an invalid proposal, equivocation), with
    /// how many times.
    pub deposed_misbehaving: BTreeMap<ProducerId, u64>,
    /// Headers of the invalid proposals it sent, once made byzantine
    /// ([`ProducerHandle::misbehave`]).
    pub invalid_proposals: Vec<Hash>,
}

/// Blocks of one term a producer applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TermBlocks {
    /// Blocks.
    pub blocks: u64,
    /// Transfers in them.
    pub transfers: u64,
    /// Verified signer shares of the term's last block applied.
    pub last_signer_shares: usize,
}

/// A block a producer applied, as its driver saw it.
#[derive(Clone, Debug)]
pub struct AppliedBlock {
    /// When it was applied.
    pub at: Instant,
    /// Its height.
    pub height: u64,
    /// Its header's hash.
    pub hash: Hash,
    /// The ids of its transactions.
    pub txs: Vec<Hash>,
}

/// The overlay events a producer takes: blocks-topic and direct messages, and
/// transactions-topic messages in a queue of their own.
pub struct ProducerStreams {
    /// Blocks-topic messages and direct producer messages.
    pub blocks: OverlayEvents,
    /// Transactions-topic messages ([`TRANSACTIONS_QUEUE`], dropped when full).
    pub transactions: OverlayEvents,
}

impl ProducerStreams {
    /// Splits a node's producer events: transactions-topic messages go to a queue of
    /// their own.
    pub fn split(events: OverlayEvents) -> ProducerStreams {
        let (transactions, blocks) = events.split(TRANSACTIONS_QUEUE, |event| {
            matches!(
                event,
                OverlayEvent::Gossip {
                    topic: Topic::Transactions,
                    ..
                }
            )
        });
        ProducerStreams {
            blocks,
            transactions,
        }
    }
}

/// A producer stopped by [`ProducerHandle::stop`], with what it ran on.
pub struct Stopped {
    /// The producer as it stopped.
    pub producer: Producer,
    /// Its events (they queue, and the oldest are lost, while it is stopped).
    pub streams: ProducerStreams,
    /// Its chain store, if it had one (drop it to close the files).
    pub store: Option<ChainStore>,
    wiring: Wiring,
}

impl Stopped {
    /// Starts the producer again from `store` (reopened from its files), as a node
    /// restarted with the same key and term: it resumes at the store's tip and catches
    /// up from the others ([`Producer::restarted`]).
    pub async fn resume(self, store: ChainStore) -> anyhow::Result<ProducerHandle> {
        let producer = self
            .producer
            .restarted(store.state().clone(), Instant::now(), &mut OsRng);
        let Wiring {
            overlay,
            federation,
            directory,
            burn_txs,
            book,
        } = self.wiring;
        spawn(
            overlay,
            self.streams,
            federation,
            producer,
            directory,
            ProducerOptions {
                burn_txs,
                store: Some(store),
                book,
            },
        )
        .await
    }
}

/// The events of one node a producer needs, split from the node's stream.
pub struct ProducerEvents {
    /// Federation frames, for the node's member.
    pub federation: OverlayEvents,
    /// Blocks- and transactions-topic messages and direct producer messages, for the
    /// producer; term-keys-topic messages, which the term driver takes out
    /// ([`crate::terms`]).
    pub blocks: OverlayEvents,
    /// Contacts, for the node's contacts.
    pub contacts: OverlayEvents,
}

/// Splits `events`: federation frames, blocks-, transactions- and term-keys-topic
/// messages and direct producer messages for the producer and its term driver,
/// contacts for the node's contacts;
/// everything else returned for the node's own loop.
pub fn split_events(events: OverlayEvents) -> (ProducerEvents, OverlayEvents) {
    let (ours, rest) = events.split(4096, |e| {
        matches!(
            e,
            OverlayEvent::Gossip {
                topic: Topic::FederationFrames
                    | Topic::Blocks
                    | Topic::Transactions
                    | Topic::Contacts
                    | Topic::TermKeys,
                ..
            } | OverlayEvent::InboundRequest {
                service: Service::FederationFrame | Service::ProducerDirect,
                ..
            }
        )
    });
    let (contacts, ours) = ours.split(256, crate::contacts::wants);
    let (blocks, federation) = ours.split(4096, |e| {
        matches!(
            e,
            OverlayEvent::Gossip {
                topic: Topic::Blocks | Topic::Transactions | Topic::TermKeys,
                ..
            } | OverlayEvent::InboundRequest {
                service: Service::ProducerDirect,
                ..
            }
        )
    });
    (
        ProducerEvents {
            federation,
            blocks,
            contacts,
        },
        rest,
    )
}

/// What a producer's driver is wired to.
#[derive(Clone)]
struct Wiring {
    overlay: OverlayHandle,
    federation: FedHandle,
    directory: PeerDirectory,
    burn_txs: Option<mpsc::Sender<Transaction>>,
    book: Option<SharedKeyBook>,
}

/// What a producer may be given besides its overlay, member and directory.
#[derive(Default)]
pub struct ProducerOptions {
    /// Where the announcements the group signs go (dropped without).
    pub burn_txs: Option<mpsc::Sender<Transaction>>,
    /// Where the blocks it applies are stored; the producer must start from its tip.
    pub store: Option<ChainStore>,
    /// The node's term keys, whose proofs it sends those that missed them.
    pub book: Option<SharedKeyBook>,
}

/// Which block `GET /v1/blocks/{id}` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockQuery {
    /// The best chain's block at this height.
    Height(u64),
    /// The block with this header hash, if it is on the best chain.
    Hash(Hash),
}

/// A block asked of the producer's loop, with where the answer goes.
type BlockAsk = (
    BlockQuery,
    tokio::sync::oneshot::Sender<Option<tenure_chain::block::Block>>,
);

/// A term change for the producer's loop.
enum TermChange {
    /// [`Producer::begin_term`].
    Begin(TermContext),
    /// [`Producer::learn_term`].
    Learn(TermContext),
}

/// A handle to a running producer.
#[derive(Clone)]
pub struct ProducerHandle {
    network: String,
    overlay: OverlayHandle,
    submit: mpsc::Sender<Transfer>,
    blocks: mpsc::Sender<BlockAsk>,
    terms: mpsc::Sender<TermChange>,
    burn: mpsc::Sender<Option<(OutPoint, TxOut)>>,
    status: watch::Receiver<ProducerStatus>,
    state: watch::Receiver<Arc<ChainState>>,
    applied: tokio::sync::broadcast::Sender<AppliedBlock>,
    stop: mpsc::Sender<tokio::sync::oneshot::Sender<Stopped>>,
    byzantine: Arc<std::sync::atomic::AtomicBool>,
    federation: FedHandle,
}

impl ProducerHandle {
    /// The members its federation member, coordinating, named for invalid signature
    /// shares ([`FedHandle::cheaters`]).
    pub fn cheaters(&self) -> BTreeMap<tenure_frost_fed::MemberId, u64> {
        self.federation.cheaters()
    }

    /// Makes this producer byzantine, for the testnet's fault on demand: from now on
    /// every proposal it sends carries a wrong state root (honest producers refuse it
    /// and depose the leader that sent it), and its federation member sends signature
    /// shares that are not its own (the signing coordinators name it).
    pub async fn misbehave(&self) {
        self.byzantine
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.federation
            .misbehave(Some(tenure_frost_fed::member::SignFault::InvalidShare))
            .await;
    }

    /// Stops the producer (its driver returns what it ran on); `None` if it had stopped
    /// already.
    pub async fn stop(&self) -> Option<Stopped> {
        let (reply, stopped) = tokio::sync::oneshot::channel();
        self.stop.send(reply).await.ok()?;
        stopped.await.ok()
    }

    /// Submits a transfer to the producer's mempool (dropped if the queue is full).
    pub fn submit(&self, transfer: Transfer) -> bool {
        self.submit.try_send(transfer).is_ok()
    }

    /// Submits a transfer here and, once queued, publishes it on the transactions topic,
    /// from which every other producer takes it. False if it could not be queued here
    /// (then it is not published); a failed or slow publication is only logged.
    pub async fn broadcast(&self, transfer: Transfer) -> bool {
        let Ok(bytes) = Tx::Transfer(transfer.clone()).to_bytes() else {
            return false;
        };
        if !self.submit(transfer) {
            return false;
        }
        match tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.overlay.publish(Topic::Transactions, bytes),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(target: logs::PRODUCER, %e, "transfer not published"),
            Err(_) => debug!(target: logs::PRODUCER, "transfer not published in time"),
        }
        true
    }

    /// The network name the producer signs and checks under.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Moves the producer to the next term (see [`Producer::begin_term`]).
    pub async fn begin_term(&self, context: TermContext) {
        let _ = self.terms.send(TermChange::Begin(context)).await;
    }

    /// Gives the producer an earlier term's context, learned from the term key's
    /// proof (see [`Producer::learn_term`]).
    pub async fn learn_term(&self, context: TermContext) {
        let _ = self.terms.send(TermChange::Learn(context)).await;
    }

    /// A burn block arrived; `term_utxo` is the producer's term's UTXO now (see
    /// [`Producer::on_burn_block`]). Dropped if the producer is behind.
    pub fn burn_block(&self, term_utxo: Option<(OutPoint, TxOut)>) {
        let _ = self.burn.try_send(term_utxo);
    }

    /// A block of the producer's chain: from its chain store, or without one from the
    /// blocks it keeps in memory (the last 64). `None` if it has none such, or is busy.
    pub async fn block(&self, query: BlockQuery) -> Option<tenure_chain::block::Block> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.blocks.try_send((query, reply)).ok()?;
        answer.await.ok().flatten()
    }

    /// The producer's latest status.
    pub fn status(&self) -> ProducerStatus {
        self.status.borrow().clone()
    }

    /// Every block the producer applies from now on (a lagging receiver loses the
    /// oldest).
    pub fn applied(&self) -> tokio::sync::broadcast::Receiver<AppliedBlock> {
        self.applied.subscribe()
    }

    /// The chain state at the producer's tip (accounts and nonces, for clients).
    pub fn state(&self) -> Arc<ChainState> {
        self.state.borrow().clone()
    }
}

/// Starts `producer` on `overlay`: `streams` are the node's producer events,
/// `directory` maps overlay peers to producers; `options` say where announcements go,
/// where blocks are stored and where term key proofs come from.
pub async fn spawn(
    overlay: OverlayHandle,
    streams: ProducerStreams,
    federation: FedHandle,
    producer: Producer,
    directory: PeerDirectory,
    options: ProducerOptions,
) -> anyhow::Result<ProducerHandle> {
    let ProducerOptions {
        burn_txs,
        store,
        book,
    } = options;
    if let Some(store) = &store {
        anyhow::ensure!(
            store.state().tip == producer.state().tip,
            "the producer starts at height {}, its chain store's tip is at {}",
            producer.state().height,
            store.state().height
        );
    }
    let members = directory.clone();
    overlay
        .subscribe(
            Topic::Blocks,
            Arc::new(move |source: Option<PeerId>, data: &[u8]| {
                if !source.is_some_and(|s| members.contains(&s)) {
                    // Not a producer's peer as this node's contacts have it: a
                    // stranger, or a producer whose new contact has not arrived yet
                    // (it restarted). Dropped without blame either way.
                    Verdict::Ignore("producer message from a peer not known as a producer".into())
                } else if let Err(e) = ProducerMessage::from_bytes(data) {
                    Verdict::Reject(e.to_string())
                } else {
                    Verdict::Accept
                }
            }),
        )
        .await?;
    let (submit, submitted) = mpsc::channel(4096);
    let (blocks, block_asks) = mpsc::channel(BLOCK_ASKS_QUEUE);
    let (terms, term_changes) = mpsc::channel(4);
    let (burn, burn_blocks) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(ProducerStatus::default());
    let (state_tx, state) = watch::channel(Arc::new(producer.state().clone()));
    let network = producer.network().to_owned();
    let (relay_network, relay_state) = (network.clone(), state.clone());
    let relayed = std::sync::Mutex::new(RelayedNonces::new(RELAYED_NONCES_KEPT));
    overlay
        .subscribe(
            Topic::Transactions,
            Arc::new(move |_: Option<PeerId>, data: &[u8]| {
                let state = relay_state.borrow().clone();
                match judge_relay(data, &relay_network, &state) {
                    RelayJudgement::Relay(transfer) => {
                        let mut relayed = relayed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if relayed.admit(&transfer) {
                            Verdict::Accept
                        } else {
                            Verdict::Ignore(
                                "its nonce was relayed at a fee it does not replace".into(),
                            )
                        }
                    }
                    RelayJudgement::Drop(why) => Verdict::Ignore(why.to_string()),
                    RelayJudgement::Invalid(why) => Verdict::Reject(why),
                }
            }),
        )
        .await?;
    let (applied, _) = tokio::sync::broadcast::channel(1024);
    let wiring = Wiring {
        overlay: overlay.clone(),
        federation: federation.clone(),
        directory: directory.clone(),
        burn_txs: burn_txs.clone(),
        book,
    };
    let driver = Driver {
        byzantine: Arc::default(),
        wiring,
        applied: applied.clone(),
        store,
        producer,
        overlay: overlay.clone(),
        federation,
        directory,
        status: status_tx,
        state: state_tx,
        report: ProducerStatus::default(),
        published: VecDeque::new(),
        answers: AnswerBudget::default(),
        burn_txs,
    };
    let (stop, stops) = mpsc::channel(1);
    let byzantine = driver.byzantine.clone();
    let fed_handle = driver.wiring.federation.clone();
    tokio::spawn(driver.run(
        streams,
        submitted,
        term_changes,
        burn_blocks,
        stops,
        block_asks,
    ));
    Ok(ProducerHandle {
        network,
        overlay,
        submit,
        blocks,
        terms,
        burn,
        status,
        state,
        applied,
        stop,
        byzantine,
        federation: fed_handle,
    })
}

struct Driver {
    wiring: Wiring,
    /// Corrupts its proposals ([`ProducerHandle::misbehave`]).
    byzantine: Arc<std::sync::atomic::AtomicBool>,
    producer: Producer,
    store: Option<ChainStore>,
    overlay: OverlayHandle,
    federation: FedHandle,
    /// Which peer is which producer (filled from contacts as they arrive).
    directory: PeerDirectory,
    status: watch::Sender<ProducerStatus>,
    state: watch::Sender<Arc<ChainState>>,
    applied: tokio::sync::broadcast::Sender<AppliedBlock>,
    report: ProducerStatus,
    /// Digests of messages published lately: gossip refuses to publish the same bytes
    /// twice (a vote or certificate answered again), so they are not sent again.
    published: VecDeque<Hash>,
    /// Each peer's budget for requests answered to anyone (blocks, term keys).
    answers: AnswerBudget,
    burn_txs: Option<mpsc::Sender<Transaction>>,
}

/// Requests for blocks or term keys a peer may make each second, once its burst is
/// spent (a follower with a gap asks twice a second, a node missing keys every two
/// seconds or less often).
pub const ANSWERS_PER_S: f64 = 4.0;

/// The burst of such requests a peer may make at once.
pub const ANSWERS_BURST: f64 = 16.0;

/// Peers whose budgets are remembered; past it, the idle ones are forgotten.
const ANSWER_PEERS_KEPT: usize = 4096;

/// Each peer's budget for the requests a producer answers to anyone: a token bucket.
/// A peer over budget is refused, and penalised at most once per ten seconds.
#[derive(Debug, Default)]
struct AnswerBudget {
    peers: std::collections::HashMap<PeerId, (f64, Instant, Option<Instant>)>,
}

impl AnswerBudget {
    /// Whether `peer` may be answered now (and its budget spent).
    fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.peers.len() >= ANSWER_PEERS_KEPT && !self.peers.contains_key(&peer) {
            self.peers.retain(|_, (_, last, _)| {
                now.saturating_duration_since(*last) < Duration::from_secs(60)
            });
            if self.peers.len() >= ANSWER_PEERS_KEPT {
                return false;
            }
        }
        let (tokens, last, _) = self.peers.entry(peer).or_insert((ANSWERS_BURST, now, None));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * ANSWERS_PER_S;
        *tokens = (*tokens + refill).min(ANSWERS_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether to penalise `peer`, over budget, now (once per ten seconds).
    fn penalise_now(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        match self.peers.get_mut(&peer) {
            Some((_, _, penalised)) => {
                let due = penalised
                    .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(10));
                if due {
                    *penalised = Some(now);
                }
                due
            }
            None => false,
        }
    }
}

/// Recently published messages remembered.
const PUBLISHED_KEPT: usize = 512;

/// A signature the federation made, back into the loop.
type Signed = ([u8; 32], [u8; 64], SignerEvidence);

impl Driver {
    async fn run(
        mut self,
        streams: ProducerStreams,
        mut submitted: mpsc::Receiver<Transfer>,
        mut terms: mpsc::Receiver<TermChange>,
        mut burn_blocks: mpsc::Receiver<Option<(OutPoint, TxOut)>>,
        mut stops: mpsc::Receiver<tokio::sync::oneshot::Sender<Stopped>>,
        mut block_asks: mpsc::Receiver<BlockAsk>,
    ) {
        let ProducerStreams {
            blocks: mut events,
            mut transactions,
        } = streams;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (signed_tx, mut signed) = mpsc::channel::<Signed>(16);
        loop {
            // Biased: timers, the federation and consensus first, transfers last.
            let outputs = tokio::select! {
                biased;
                Some(reply) = stops.recv() => {
                    let _ = reply.send(Stopped {
                        producer: self.producer,
                        streams: ProducerStreams { blocks: events, transactions },
                        store: self.store,
                        wiring: self.wiring,
                    });
                    return;
                }
                _ = tick.tick() => self.producer.on_tick(Instant::now(), &mut OsRng),
                Some((digest, signature, evidence)) = signed.recv() => {
                    self.producer.on_signed(digest, signature, evidence, Instant::now(), &mut OsRng)
                }
                Some(change) = terms.recv() => match change {
                    TermChange::Begin(context) => {
                        debug!(target: logs::PRODUCER, term = context.term, "term begins");
                        self.producer.begin_term(context, Instant::now(), &mut OsRng)
                    }
                    TermChange::Learn(context) => {
                        debug!(target: logs::PRODUCER, term = context.term, "earlier term learned");
                        self.producer.learn_term(context);
                        Vec::new()
                    }
                },
                Some(term_utxo) = burn_blocks.recv() => self.producer.on_burn_block(term_utxo),
                event = events.next() => match event {
                    Some(OverlayEvent::Gossip { topic: Topic::Blocks, source, data }) => {
                        self.on_message(source, &data)
                    }
                    Some(OverlayEvent::InboundRequest {
                        id,
                        peer,
                        service: Service::ProducerDirect,
                        body,
                    }) => self.on_direct(id, peer, &body).await,
                    Some(OverlayEvent::InboundRequest { id, service, .. }) => {
                        let _ = self.overlay.respond(id, Err(Refusal::NotServed(service))).await;
                        Vec::new()
                    }
                    Some(_) => Vec::new(),
                    None => return,
                },
                Some((query, reply)) = block_asks.recv() => {
                    let _ = reply.send(self.block(query));
                    Vec::new()
                }
                Some(transfer) = submitted.recv() => {
                    if let Err(e) = self.producer.submit(transfer) {
                        debug!(target: logs::PRODUCER, %e, "transfer refused");
                    }
                    Vec::new()
                }
                Some(event) = transactions.next() => {
                    // The topic's validator checked the signature (`judge_relay`); the
                    // mempool checks the rest again on its own state.
                    if let OverlayEvent::Gossip { data, .. } = event
                        && let Ok(Tx::Transfer(transfer)) = Tx::from_bytes(&data)
                        && let Err(e) = self.producer.submit_verified(transfer)
                    {
                        debug!(target: logs::PRODUCER, %e, "relayed transfer refused");
                    }
                    Vec::new()
                }
            };
            self.on_outputs(outputs, &signed_tx).await;
            self.report.mempool = self.producer.mempool_len();
            self.report.leader = self.producer.leader();
            self.report.term = self.producer.term();
            self.report.height = self.producer.state().height;
            self.report.tip = self.producer.state().tip;
            self.status.send_if_modified(|s| {
                let changed = *s != self.report;
                if changed {
                    *s = self.report.clone();
                }
                changed
            });
        }
    }

    /// The blocks from `from` on, at most [`FOLLOWER_BATCH_BYTES`] of them (at least
    /// one), for a follower, with the key proofs of their terms: those the producer
    /// keeps in memory, or from the chain store when `from` is older.
    fn batch_for_follower(&self, from: u64) -> Result<Vec<u8>, Refusal> {
        let mut blocks: Vec<tenure_chain::block::Block> = Vec::new();
        let mut bytes = 0usize;
        let mut take = |block: tenure_chain::block::Block| {
            let size = block.to_bytes().map_or(usize::MAX, |b| b.len());
            if !blocks.is_empty() && bytes.saturating_add(size) > FOLLOWER_BATCH_BYTES {
                return false;
            }
            bytes = bytes.saturating_add(size);
            blocks.push(block);
            true
        };
        let in_memory = self
            .producer
            .recent_blocks(0)
            .next()
            .is_some_and(|b| b.header.height <= from);
        match &self.store {
            Some(store) if !in_memory => {
                for height in from..=self.producer.state().height {
                    let Ok(Some(block)) = store.block_at(height) else {
                        break;
                    };
                    if !take(block) {
                        break;
                    }
                }
            }
            _ => {
                for block in self.producer.recent_blocks(from) {
                    if !take(block.clone()) {
                        break;
                    }
                }
            }
        }
        let mut terms: Vec<u64> = blocks.iter().map(|b| b.header.term).collect();
        terms.dedup();
        let proofs = match &self.wiring.book {
            Some(book) => {
                let book = book
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                terms
                    .iter()
                    .filter_map(|t| book.proof(*t).cloned())
                    .take(MAX_BATCH_PROOFS)
                    .collect()
            }
            None => Vec::new(),
        };
        BlockBatch::new(blocks, proofs)
            .to_bytes()
            .map_err(|e| Refusal::Invalid(e.to_string()))
    }

    /// The best chain's block `query` names: from the store, or from memory.
    fn block(&self, query: BlockQuery) -> Option<tenure_chain::block::Block> {
        if let Some(store) = &self.store {
            let height = match query {
                BlockQuery::Height(height) => height,
                BlockQuery::Hash(hash) => store.height_of(&hash).ok().flatten()?,
            };
            return store.block_at(height).ok().flatten();
        }
        self.producer
            .recent_blocks(0)
            .find(|b| match query {
                BlockQuery::Height(height) => b.header.height == height,
                BlockQuery::Hash(hash) => b.header.hash() == hash,
            })
            .cloned()
    }

    /// The proofs of the term keys from term `from` on, at most [`MAX_BATCH_PROOFS`],
    /// in a batch without blocks.
    fn term_keys_from(&self, from: u64) -> Result<Vec<u8>, Refusal> {
        let proofs = match &self.wiring.book {
            Some(book) => book
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .proofs_from(from)
                .take(MAX_BATCH_PROOFS)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        BlockBatch::new(Vec::new(), proofs)
            .to_bytes()
            .map_err(|e| Refusal::Invalid(e.to_string()))
    }

    /// A message sent to this producer directly: from a producer's peer, or a
    /// follower's request for blocks, or anyone's for term keys.
    async fn on_direct(
        &mut self,
        id: tenure_overlay::InboundId,
        peer: PeerId,
        body: &[u8],
    ) -> Vec<ProducerOutput> {
        // Decoded once: answers for anyone (public data), within each peer's
        // budget; anything else only from a producer's peer.
        let message = ProducerMessage::from_bytes(body);
        let public = match &message {
            Ok(ProducerMessage {
                body: ProducerBody::GetTermKeys { from },
                ..
            }) => Some((true, *from)),
            Ok(ProducerMessage {
                body: ProducerBody::GetBlocks { from },
                ..
            }) if !self.directory.contains(&peer) => Some((false, *from)),
            _ => None,
        };
        if let Some((term_keys, from)) = public {
            if !self.answers.admit(peer, Instant::now()) {
                let _ = self
                    .overlay
                    .respond(id, Err(Refusal::NotServed(Service::ProducerDirect)))
                    .await;
                if self.answers.penalise_now(peer) {
                    self.overlay
                        .report(
                            peer,
                            Misbehaviour::Protocol(
                                "requests for blocks or keys over budget".into(),
                            ),
                        )
                        .await;
                }
                return Vec::new();
            }
            let answer = if term_keys {
                self.term_keys_from(from)
            } else {
                self.batch_for_follower(from)
            };
            let _ = self.overlay.respond(id, answer).await;
            return Vec::new();
        }
        if !self.directory.contains(&peer) {
            // Refused without penalty, as on the blocks topic (module docs).
            let _ = self
                .overlay
                .respond(id, Err(Refusal::NotServed(Service::ProducerDirect)))
                .await;
            return Vec::new();
        }
        let msg = match message {
            Ok(msg) => msg,
            Err(e) => {
                let _ = self
                    .overlay
                    .respond(id, Err(Refusal::Invalid(e.to_string())))
                    .await;
                self.overlay
                    .report(peer, Misbehaviour::Protocol(e.to_string()))
                    .await;
                return Vec::new();
            }
        };
        let _ = self.overlay.respond(id, Ok(Vec::new())).await;
        self.on_decoded(Some(peer), msg)
    }

    /// Sends `bytes` to producer `to` directly, falling back to the blocks topic.
    fn send_direct(&self, to: ProducerId, bytes: Vec<u8>) {
        let overlay = self.overlay.clone();
        let peer = self.directory.peer_of(&to);
        tokio::spawn(async move {
            if let Some(peer) = peer
                && overlay
                    .request(peer, Service::ProducerDirect, bytes.clone())
                    .await
                    .is_ok()
            {
                return;
            }
            if let Err(e) = overlay.publish(Topic::Blocks, bytes).await {
                debug!(target: logs::PRODUCER, %e, "producer message not published");
            }
        });
    }

    /// Sends producer `to` up to `count` blocks from the store, from height `from`.
    fn serve_from_store(&self, to: ProducerId, from: u64, count: usize, term: u64) {
        let Some(store) = &self.store else { return };
        for height in from..from.saturating_add(count as u64) {
            let block = match store.block_at(height) {
                Ok(Some(block)) => block,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(target: logs::PRODUCER, height, %e, "chain store unreadable");
                    return;
                }
            };
            let msg = ProducerMessage {
                version: PRODUCER_MESSAGE_VERSION,
                term,
                body: ProducerBody::Block(block),
            };
            if let Ok(bytes) = msg.to_bytes() {
                self.send_direct(to, bytes);
            }
        }
    }

    fn on_message(&mut self, source: Option<PeerId>, data: &[u8]) -> Vec<ProducerOutput> {
        match ProducerMessage::from_bytes(data) {
            Ok(msg) => self.on_decoded(source, msg),
            Err(_) => Vec::new(),
        }
    }

    /// A decoded message from `source`: taken only from a producer's peer.
    fn on_decoded(&mut self, source: Option<PeerId>, msg: ProducerMessage) -> Vec<ProducerOutput> {
        let Some(from) = source.and_then(|s| self.directory.producer_of(&s)) else {
            return Vec::new();
        };
        match self.producer.handle(from, msg, Instant::now(), &mut OsRng) {
            Ok(out) => out,
            Err(e) => {
                debug!(target: logs::PRODUCER, %from, %e, "producer message not taken");
                Vec::new()
            }
        }
    }

    async fn on_outputs(&mut self, outputs: Vec<ProducerOutput>, signed: &mpsc::Sender<Signed>) {
        for output in outputs {
            match output {
                ProducerOutput::Send { to, msg } => match msg.to_bytes() {
                    Ok(bytes) => self.send_direct(to, bytes),
                    Err(e) => debug!(target: logs::PRODUCER, %e, "producer message not encoded"),
                },
                ProducerOutput::ServeBlocks {
                    to,
                    from,
                    count,
                    term,
                } => self.serve_from_store(to, from, count, term),
                ProducerOutput::Broadcast(mut msg) => {
                    if let ProducerBody::Proposal { block, .. } = &mut msg.body
                        && self.byzantine.load(std::sync::atomic::Ordering::Relaxed)
                    {
                        block.header.state_root = [0xbb; 32];
                        self.report.invalid_proposals.push(block.header.hash());
                    }
                    match msg.to_bytes() {
                        Ok(bytes) => {
                            let digest: Hash = Sha256::digest(&bytes).into();
                            if self.published.contains(&digest) {
                                continue;
                            }
                            self.published.push_back(digest);
                            if self.published.len() > PUBLISHED_KEPT {
                                self.published.pop_front();
                            }
                            if let Err(e) = self.overlay.publish(Topic::Blocks, bytes).await {
                                debug!(target: logs::PRODUCER, %e, "producer message not published");
                            }
                        }
                        Err(e) => {
                            debug!(target: logs::PRODUCER, %e, "producer message not encoded")
                        }
                    }
                }
                ProducerOutput::Sign { payload } => {
                    debug!(target: logs::PRODUCER, bytes = payload.len(), "asking the federation to sign");
                    let federation = self.federation.clone();
                    let signed = signed.clone();
                    tokio::spawn(async move {
                        match federation.sign(payload).await {
                            Ok(record) => {
                                let Ok(signature) =
                                    <[u8; 64]>::try_from(record.signature.as_slice())
                                else {
                                    return;
                                };
                                let evidence = SignerEvidence::of(&record);
                                let _ = signed.send((record.message, signature, evidence)).await;
                            }
                            Err(e) => debug!(target: logs::PRODUCER, %e, "signing failed"),
                        }
                    });
                }
                ProducerOutput::Applied(block) => {
                    debug!(target: logs::PRODUCER, height = block.header.height, txs = block.txs.len(), "block applied");
                    if let Some(store) = &mut self.store {
                        let context = self.producer.context_for(block.header.term);
                        if let Err(e) = store.apply(&block, context, self.producer.network()) {
                            tracing::error!(target: logs::PRODUCER, height = block.header.height, %e, "block not stored");
                        }
                    }
                    self.report.blocks = self.report.blocks.saturating_add(1);
                    let transfers = block
                        .txs
                        .iter()
                        .filter(|t| matches!(t, Tx::Transfer(_)))
                        .count();
                    self.report.transfers = self.report.transfers.saturating_add(transfers as u64);
                    self.report.last_signer_shares = block.signers.shares.len();
                    let term = self.report.by_term.entry(block.header.term).or_default();
                    term.blocks = term.blocks.saturating_add(1);
                    term.transfers = term.transfers.saturating_add(transfers as u64);
                    term.last_signer_shares = block.signers.shares.len();
                    self.state
                        .send_replace(Arc::new(self.producer.state().clone()));
                    let _ = self.applied.send(AppliedBlock {
                        at: Instant::now(),
                        height: block.header.height,
                        hash: block.header.hash(),
                        txs: block.txs.iter().map(Tx::id).collect(),
                    });
                }
                ProducerOutput::Announce(tx) => {
                    debug!(target: logs::PRODUCER, txid = %tx.compute_txid(), "announcement signed");
                    self.report.announcements_sent =
                        self.report.announcements_sent.saturating_add(1);
                    if let Some(burn_txs) = &self.burn_txs {
                        let _ = burn_txs.try_send(*tx);
                    }
                }
                ProducerOutput::Leader { leader, round } => {
                    debug!(target: logs::PRODUCER, %leader, round, "leader");
                }
                ProducerOutput::Deposed { leader, why } => {
                    self.report.deposed = self.report.deposed.saturating_add(1);
                    if why == tenure_chain::produce::Deposed::Misbehaved {
                        let count = self.report.deposed_misbehaving.entry(leader).or_default();
                        *count = count.saturating_add(1);
                    }
                    debug!(target: logs::PRODUCER, %leader, ?why, "leader deposed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer gets its burst at once, then the refill rate; another peer is not
    /// charged for it; penalties come at most once per ten seconds.
    #[test]
    fn answers_are_rationed_per_peer() {
        let mut budget = AnswerBudget::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let start = Instant::now();
        let granted = (0..40).filter(|_| budget.admit(a, start)).count();
        assert_eq!(granted, ANSWERS_BURST as usize);
        assert!(budget.admit(b, start));
        // A second later, the refill: four more.
        let later = start + Duration::from_secs(1);
        let granted = (0..40).filter(|_| budget.admit(a, later)).count();
        assert_eq!(granted, ANSWERS_PER_S as usize);
        assert!(budget.penalise_now(a));
        assert!(!budget.penalise_now(a));
    }
}
