//! The burnchain follower's driver: carries [`BurnSync`] (the sans-IO protocol in
//! `tenure_chain::burnchain::follow`, which states the rules) over the overlay.
//!
//! Gossiped burn blocks and fetch answers go into the protocol; its fetch requests go
//! out as request-response calls on spawned tasks, so the node's loop never waits on
//! the network; peers whose bytes break the rules are reported for a penalty.
//!
//! Burn transactions (enrollments, term UTXO payments, announcements) travel on the
//! burn-transactions topic to whoever mines ([`BurnNode::relay`]): the topic's
//! validator ([`BurnNode::relay_validator`]) forwards a transaction only when the next
//! block could take it, by [`tenure_chain::burnchain::relay`]'s rules, against the
//! node's chain and mempool, which every node keeps (so the miner's is everyone's).

use std::sync::{Arc, RwLock};

use bitcoin::{ScriptBuf, Transaction, consensus};
use tenure_chain::burnchain::{
    follow::{BurnError, BurnSync, check_gossip},
    regtest::PendingUtxos,
    relay::{self, RelayVerdict},
};
use tenure_overlay::{
    GossipValidator, Misbehaviour, OverlayEvent, OverlayHandle, PeerId, RequestError, Service,
    Topic, Verdict,
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::logs;

pub use tenure_chain::burnchain::follow::{ANTI_ENTROPY_INTERVAL, TipChange};

/// The gossip validator of the burn-blocks topic: [`check_gossip`] in the swarm task,
/// so a block without its proof of work is never forwarded.
pub fn validate_gossip(_source: Option<PeerId>, data: &[u8]) -> Verdict {
    match check_gossip(data) {
        Ok(()) => Verdict::Accept,
        Err(e) => Verdict::Reject(e.to_string()),
    }
}

/// Fetch answers waiting for the node's loop, at most.
const FETCH_QUEUE: usize = 16;

/// A fetch answer from a peer.
pub type Fetched = (PeerId, Result<Vec<u8>, RequestError>);

/// A node's burnchain follower on the overlay: feeds [`BurnSync`] from gossip and
/// fetches, answers peers' fetches, and publishes what it mines.
pub struct BurnNode {
    sync: BurnSync,
    overlay: OverlayHandle,
    fetched: mpsc::Sender<Fetched>,
    fetching: bool,
    /// A fetch asked for while another was under way: made when that one ends.
    wanted: Option<PeerId>,
    /// Connected peers, to fetch from when the sender of a block cannot be asked.
    peers: Vec<PeerId>,
    /// Fetches that failed in a row; at most one round of the peers is tried.
    failures: usize,
    next_peer: usize,
    /// What the next block may spend, for the burn-transactions validator.
    pending: Arc<RwLock<PendingUtxos>>,
}

impl BurnNode {
    /// A follower at genesis on `overlay`; fetch answers arrive on the receiver and
    /// go to [`BurnNode::on_fetched`].
    pub fn new(overlay: OverlayHandle) -> (BurnNode, mpsc::Receiver<Fetched>) {
        let (fetched, answers) = mpsc::channel(FETCH_QUEUE);
        (
            BurnNode {
                sync: BurnSync::new(),
                overlay,
                fetched,
                fetching: false,
                wanted: None,
                peers: Vec::new(),
                failures: 0,
                next_peer: 0,
                pending: Arc::default(),
            },
            answers,
        )
    }

    /// The chain followed so far.
    pub fn sync(&self) -> &BurnSync {
        &self.sync
    }

    /// Adds `tx` to the mempool of the blocks this node mines.
    pub fn submit(
        &mut self,
        tx: bitcoin::Transaction,
    ) -> Result<(), tenure_chain::burnchain::regtest::RegtestError> {
        let submitted = self.sync.submit(tx);
        self.refresh_pending();
        submitted
    }

    /// The burn-transactions topic's validator, judging against this node's chain and
    /// mempool as they are when a message arrives.
    pub fn relay_validator(&self) -> Arc<dyn GossipValidator> {
        let pending = self.pending.clone();
        Arc::new(move |_: Option<PeerId>, data: &[u8]| {
            let pending = pending
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match relay::judge(data, &pending) {
                RelayVerdict::Forward(_) => Verdict::Accept,
                RelayVerdict::Ignore(why) => Verdict::Ignore(why),
                RelayVerdict::Reject(why) => Verdict::Reject(why),
            }
        })
    }

    /// Subscribes to the burn-transactions topic: transactions that peers relay go
    /// into this node's mempool ([`BurnNode::on_event`]).
    pub async fn relay_transactions(&mut self) -> anyhow::Result<()> {
        self.refresh_pending();
        self.overlay
            .subscribe(Topic::BurnTransactions, self.relay_validator())
            .await?;
        Ok(())
    }

    /// Takes `tx` into this node's mempool and relays it to the others (whoever mines
    /// takes it from there). A transaction this node's chain refuses is not relayed.
    pub async fn relay(&mut self, tx: Transaction) {
        if let Err(e) = self.submit(tx.clone()) {
            debug!(target: logs::BURNCHAIN, %e, "own burn transaction refused");
            return;
        }
        if let Err(e) = self
            .overlay
            .publish(Topic::BurnTransactions, consensus::serialize(&tx))
            .await
        {
            debug!(target: logs::BURNCHAIN, %e, "burn transaction not relayed");
        }
    }

    fn refresh_pending(&self) {
        *self
            .pending
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.sync.chain().pending_utxos();
    }

    /// Mines a block paying `reward` and publishes it.
    pub async fn mine(&mut self, reward: &ScriptBuf) -> TipChange {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let (bytes, change) = self.sync.mine(reward, time);
        self.refresh_pending();
        // With nobody subscribed yet the block still reaches peers: they fetch it
        // when they connect or see its successor.
        let _ = self.overlay.publish(Topic::BurnBlocks, bytes).await;
        change
    }

    /// Mines a block paying `reward` and tells no one: peers learn of it only by
    /// fetching (anti-entropy tests).
    pub fn mine_unpublished(&mut self, reward: &ScriptBuf) -> TipChange {
        let change = self.sync.mine(reward, 1_800_000_000).1;
        self.refresh_pending();
        change
    }

    /// Handles the overlay events that concern the burnchain (others pass untouched);
    /// returns the tip change it caused.
    pub async fn on_event(&mut self, event: &OverlayEvent) -> Option<TipChange> {
        match event {
            OverlayEvent::Gossip {
                topic: Topic::BurnBlocks,
                source,
                data,
            } => match self.sync.on_block(data) {
                Ok(change) => {
                    if change.is_some() {
                        self.refresh_pending();
                    }
                    change
                }
                Err(e) => {
                    if let Some(peer) = source {
                        self.on_refused(*peer, &e).await;
                    }
                    None
                }
            },
            OverlayEvent::InboundRequest {
                id,
                peer,
                service: Service::BurnBlockFetch,
                body,
            } => {
                let answer = self.sync.answer_fetch(body);
                if let Err(e) = &answer {
                    self.on_refused(*peer, e).await;
                }
                let _ = self
                    .overlay
                    .respond(
                        *id,
                        answer.map_err(|e| tenure_overlay::Refusal::Invalid(e.to_string())),
                    )
                    .await;
                None
            }
            OverlayEvent::PeerConnected { peer, .. } => {
                if !self.peers.contains(peer) {
                    self.peers.push(*peer);
                }
                self.fetch_from(*peer);
                None
            }
            OverlayEvent::PeerDisconnected { peer } => {
                self.peers.retain(|p| p != peer);
                None
            }
            OverlayEvent::Gossip {
                topic: Topic::BurnTransactions,
                data,
                ..
            } => {
                // The validator judged it against this view; a spend that came in
                // between wins, without blame.
                if let Ok(tx) = consensus::deserialize::<Transaction>(data)
                    && let Err(e) = self.submit(tx)
                {
                    debug!(target: logs::BURNCHAIN, %e, "relayed burn transaction not taken");
                }
                None
            }
            _ => None,
        }
    }

    /// A fetch answer arrived. More may follow from the same peer while it brings
    /// something new.
    pub async fn on_fetched(&mut self, (peer, answer): Fetched) -> Option<TipChange> {
        self.fetching = false;
        let change = self.take_answer(peer, answer).await;
        if let Some(wanted) = self.wanted.take() {
            self.fetch_from(wanted);
        }
        change
    }

    /// Anti-entropy: asks a neighbour, in turn, whether it holds more. A follower
    /// that missed the last gossiped block has nothing else to tell it so.
    pub fn on_tick(&mut self) {
        if let Some(peer) = self.another_peer() {
            self.fetch_from(peer);
        }
    }

    async fn take_answer(
        &mut self,
        peer: PeerId,
        answer: Result<Vec<u8>, RequestError>,
    ) -> Option<TipChange> {
        let Ok(body) = answer else {
            // Unreachable or slow: ask the next connected peer, once round.
            self.failures += 1;
            if self.failures <= self.peers.len()
                && let Some(next) = self.another_peer()
            {
                self.fetch_from(next);
            }
            return None;
        };
        self.failures = 0;
        match self.sync.on_fetch_response(&body) {
            Ok(Some(change)) => {
                self.refresh_pending();
                self.fetch_from(peer);
                Some(change)
            }
            Ok(None) => None,
            Err(e) => {
                self.on_refused(peer, &e).await;
                None
            }
        }
    }

    async fn on_refused(&mut self, peer: PeerId, error: &BurnError) {
        if error.is_misbehaviour() {
            debug!(target: logs::BURNCHAIN, %peer, %error, "burn data refused");
            self.overlay
                .report(peer, Misbehaviour::Protocol(error.to_string()))
                .await;
        } else if self.peers.contains(&peer) {
            self.fetch_from(peer);
        } else if let Some(next) = self.another_peer() {
            // The block's publisher is not a neighbour: one that relayed it knows it.
            self.fetch_from(next);
        }
    }

    /// The next connected peer in turn.
    fn another_peer(&mut self) -> Option<PeerId> {
        let peer = *self.peers.get(self.next_peer % self.peers.len().max(1))?;
        self.next_peer = self.next_peer.wrapping_add(1);
        Some(peer)
    }

    /// Asks `peer` for what follows our chain, unless a fetch is under way.
    fn fetch_from(&mut self, peer: PeerId) {
        if self.fetching {
            self.wanted = Some(peer);
            return;
        }
        self.fetching = true;
        let overlay = self.overlay.clone();
        let body = self.sync.fetch_request();
        let fetched = self.fetched.clone();
        let body = match body {
            Ok(body) => body,
            Err(error) => {
                self.fetching = false;
                debug!(target: logs::BURNCHAIN, %error, "no fetch request");
                return;
            }
        };
        tokio::spawn(async move {
            let answer = overlay.request(peer, Service::BurnBlockFetch, body).await;
            let _ = fetched.send((peer, answer)).await;
        });
    }
}
