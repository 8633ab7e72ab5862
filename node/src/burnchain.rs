//! The embedded regtest burnchain, shared over the overlay (DESIGN.md "Chain").
//!
//! One node of a testnet mines; every node keeps a full [`RegtestChain`] and follows
//! it. A new block travels on the `burn-blocks` gossip topic, consensus-encoded. A
//! node that receives a block whose parent it does not know (it joined late, missed
//! a block, or the sender is on another branch) asks a peer over the
//! `burn-block-fetch` service, sending a block locator (its tip, then hashes at
//! exponentially growing distances back to genesis). The peer answers with the blocks
//! of its best chain after the highest locator hash it shares. The follower extends
//! its tip with them, or reorganises onto them when they form a longer branch. Every
//! two seconds it also asks a neighbour in turn, so a block it never heard of by gossip
//! (the last one before a quiet spell, say) still reaches it.
//!
//! Everything is checked before use: the gossip validator decodes a block and checks
//! its size, proof of work and merkle root (cheap, in the swarm task); the chain then
//! checks every transaction before the block extends it. [`BurnSync`] is sans-IO:
//! the node's loop feeds it bytes and sends what it returns.

use bitcoin::{Block, BlockHash, ScriptBuf, Target, consensus, hashes::Hash};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tenure_chain::regtest::{RegtestChain, RegtestError};
use tenure_overlay::{
    Misbehaviour, OverlayEvent, OverlayHandle, PeerId, RequestError, Service, Topic, Verdict,
};
use tokio::sync::mpsc;
use tracing::debug;

/// Log target of the burnchain follower.
const LOG_TARGET: &str = "tenure::burnchain";

/// Largest burn block accepted from a peer.
pub const MAX_BURN_BLOCK_BYTES: usize = 512 * 1024;

/// Largest fetch answer, in encoded blocks (within the overlay's frame limit).
pub const MAX_FETCH_BYTES: usize = 768 * 1024;

/// Most locator hashes a fetch request may carry (enough for 2^60 blocks).
pub const MAX_LOCATOR: usize = 64;

/// Version of the fetch messages.
const FETCH_VERSION: u16 = 1;

/// Why a burn block or fetch message was not used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BurnError {
    /// It does not decode, or breaks a size bound.
    #[error("undecodable burn data: {0}")]
    Undecodable(String),
    /// Its parent is not our tip: fetch from the sender.
    #[error("the block's parent is not our tip")]
    UnknownParent,
    /// The chain refused it.
    #[error("invalid burn block: {0}")]
    Invalid(#[from] RegtestError),
}

impl BurnError {
    /// Whether the sender broke the rules (rather than being ahead of us).
    pub fn is_misbehaviour(&self) -> bool {
        !matches!(
            self,
            BurnError::UnknownParent | BurnError::Invalid(RegtestError::NotLonger)
        )
    }
}

/// What changed at the tip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TipChange {
    /// New blocks on top of the old tip.
    Extended {
        /// The new height.
        height: u64,
        /// The new tip.
        tip: BlockHash,
    },
    /// A longer branch replaced blocks above `fork_height`.
    Reorganised {
        /// The last block both branches share.
        fork_height: u64,
        /// The new height.
        height: u64,
        /// The new tip.
        tip: BlockHash,
    },
}

#[derive(Serialize, Deserialize)]
struct FetchRequest {
    version: u16,
    locator: Vec<ByteBuf>,
}

#[derive(Serialize, Deserialize)]
struct FetchResponse {
    version: u16,
    blocks: Vec<ByteBuf>,
}

/// Judges a gossiped burn block in the swarm task: it decodes within the size bound,
/// and its proof of work and merkle root hold. Its transactions are checked later,
/// against the chain.
pub fn validate_gossip(_source: Option<PeerId>, data: &[u8]) -> Verdict {
    match decode_block(data) {
        Ok(block) => {
            if block.header.target() != Target::MAX_ATTAINABLE_REGTEST
                || block
                    .header
                    .validate_pow(Target::MAX_ATTAINABLE_REGTEST)
                    .is_err()
            {
                Verdict::Reject("burn block without its proof of work".into())
            } else if !block.check_merkle_root() {
                Verdict::Reject("burn block with a wrong merkle root".into())
            } else {
                Verdict::Accept
            }
        }
        Err(e) => Verdict::Reject(e.to_string()),
    }
}

fn decode_block(data: &[u8]) -> Result<Block, BurnError> {
    if data.len() > MAX_BURN_BLOCK_BYTES {
        return Err(BurnError::Undecodable(format!(
            "a block of {} bytes is too large",
            data.len()
        )));
    }
    consensus::deserialize(data).map_err(|e| BurnError::Undecodable(e.to_string()))
}

/// A node's copy of the burnchain and the rules to follow it.
#[derive(Clone, Debug, Default)]
pub struct BurnSync {
    chain: RegtestChain,
}

impl BurnSync {
    /// A chain holding only regtest's genesis block.
    pub fn new() -> BurnSync {
        BurnSync::default()
    }

    /// The chain as followed so far.
    pub fn chain(&self) -> &RegtestChain {
        &self.chain
    }

    /// Mines the next block paying `reward`; returns what to publish and the change.
    pub fn mine(&mut self, reward: &ScriptBuf, time: u32) -> (Vec<u8>, TipChange) {
        let tip = self.chain.mine(reward, time);
        let bytes = self
            .chain
            .block_at(self.chain.height())
            .map(consensus::serialize)
            .unwrap_or_default();
        (
            bytes,
            TipChange::Extended {
                height: self.chain.height(),
                tip,
            },
        )
    }

    /// A block from gossip. `Ok(None)`: already held. `UnknownParent`: ask the sender
    /// with [`BurnSync::fetch_request`].
    pub fn on_block(&mut self, data: &[u8]) -> Result<Option<TipChange>, BurnError> {
        let block = decode_block(data)?;
        let hash = block.block_hash();
        if self.chain.height_of(&hash).is_some() {
            return Ok(None);
        }
        if block.header.prev_blockhash != self.chain.tip() {
            return Err(BurnError::UnknownParent);
        }
        self.chain.accept(block)?;
        Ok(Some(TipChange::Extended {
            height: self.chain.height(),
            tip: hash,
        }))
    }

    /// Hashes of our best chain from the tip back to genesis: the last ten, then at
    /// doubling distances.
    pub fn locator(&self) -> Vec<BlockHash> {
        let mut hashes = Vec::new();
        let mut height = self.chain.height();
        let mut step = 1;
        loop {
            if let Some(block) = self.chain.block_at(height) {
                hashes.push(block.block_hash());
            }
            if height == 0 || hashes.len() >= MAX_LOCATOR - 1 {
                break;
            }
            if hashes.len() >= 10 {
                step *= 2;
            }
            height = height.saturating_sub(step);
        }
        if let Some(genesis) = self.chain.block_at(0)
            && hashes.last() != Some(&genesis.block_hash())
        {
            hashes.push(genesis.block_hash());
        }
        hashes
    }

    /// The body of a fetch request for what follows our chain.
    pub fn fetch_request(&self) -> Vec<u8> {
        let request = FetchRequest {
            version: FETCH_VERSION,
            locator: self
                .locator()
                .iter()
                .map(|h| ByteBuf::from(h.to_byte_array().to_vec()))
                .collect(),
        };
        serde_cbor::to_vec(&request).unwrap_or_default()
    }

    /// Answers a peer's fetch request: our best chain's blocks after the highest
    /// locator hash we hold, up to [`MAX_FETCH_BYTES`].
    pub fn answer_fetch(&self, body: &[u8]) -> Result<Vec<u8>, BurnError> {
        let request: FetchRequest =
            serde_cbor::from_slice(body).map_err(|e| BurnError::Undecodable(e.to_string()))?;
        if request.version != FETCH_VERSION || request.locator.len() > MAX_LOCATOR {
            return Err(BurnError::Undecodable(
                "fetch request of another version or too long a locator".into(),
            ));
        }
        let mut from = 0;
        for hash in &request.locator {
            let hash = BlockHash::from_slice(hash)
                .map_err(|_| BurnError::Undecodable("locator hash".into()))?;
            if let Some(height) = self.chain.height_of(&hash) {
                from = height;
                break;
            }
        }
        let mut blocks = Vec::new();
        let mut size = 0;
        for height in from + 1..=self.chain.height() {
            let Some(block) = self.chain.block_at(height) else {
                break;
            };
            let bytes = consensus::serialize(block);
            size += bytes.len();
            if size > MAX_FETCH_BYTES {
                break;
            }
            blocks.push(ByteBuf::from(bytes));
        }
        serde_cbor::to_vec(&FetchResponse {
            version: FETCH_VERSION,
            blocks,
        })
        .map_err(|e| BurnError::Undecodable(e.to_string()))
    }

    /// A peer's answer to our fetch request: extends our tip, or reorganises onto a
    /// longer branch. `Ok(None)`: nothing new.
    pub fn on_fetch_response(&mut self, body: &[u8]) -> Result<Option<TipChange>, BurnError> {
        if body.len() > MAX_FETCH_BYTES + 64 * 1024 {
            return Err(BurnError::Undecodable("fetch answer too large".into()));
        }
        let response: FetchResponse =
            serde_cbor::from_slice(body).map_err(|e| BurnError::Undecodable(e.to_string()))?;
        if response.version != FETCH_VERSION {
            return Err(BurnError::Undecodable(
                "fetch answer of another version".into(),
            ));
        }
        let mut branch = response
            .blocks
            .iter()
            .map(|b| decode_block(b))
            .collect::<Result<Vec<Block>, _>>()?;
        // Skip what we already hold.
        let held = branch
            .iter()
            .take_while(|b| self.chain.height_of(&b.block_hash()).is_some())
            .count();
        branch.drain(..held);
        let Some(first) = branch.first() else {
            return Ok(None);
        };
        let fork_height = self
            .chain
            .height_of(&first.header.prev_blockhash)
            .ok_or(BurnError::Invalid(RegtestError::UnknownParent))?;
        if fork_height == self.chain.height() {
            for block in branch {
                self.chain.accept(block)?;
            }
            return Ok(Some(TipChange::Extended {
                height: self.chain.height(),
                tip: self.chain.tip(),
            }));
        }
        self.chain.reorg(fork_height, branch)?;
        Ok(Some(TipChange::Reorganised {
            fork_height,
            height: self.chain.height(),
            tip: self.chain.tip(),
        }))
    }
}

/// How often a follower asks a neighbour whether it holds more blocks.
pub const ANTI_ENTROPY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

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
            },
            answers,
        )
    }

    /// The chain followed so far.
    pub fn sync(&self) -> &BurnSync {
        &self.sync
    }

    /// Mines a block paying `reward` and publishes it.
    pub async fn mine(&mut self, reward: &ScriptBuf) -> TipChange {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let (bytes, change) = self.sync.mine(reward, time);
        // With nobody subscribed yet the block still reaches peers: they fetch it
        // when they connect or see its successor.
        let _ = self.overlay.publish(Topic::BurnBlocks, bytes).await;
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
                Ok(change) => change,
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
                    .respond(*id, answer.map_err(|e| e.to_string()))
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
            debug!(target: LOG_TARGET, %peer, %error, "burn data refused");
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
        tokio::spawn(async move {
            let answer = overlay.request(peer, Service::BurnBlockFetch, body).await;
            let _ = fetched.send((peer, answer)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;
    use crate::localnet::{self, LocalNode};
    use std::{sync::Arc, time::Duration};
    use tenure_chain::regtest::{coinbase, seal, subsidy};
    use tenure_overlay::{NetworkId, NodeKey, OverlayConfig};
    use tokio::sync::watch;

    fn reward() -> ScriptBuf {
        ScriptBuf::new_op_return([1u8; 4])
    }

    fn miner_with(blocks: u32) -> (BurnSync, Vec<Vec<u8>>) {
        let mut miner = BurnSync::new();
        let published = (0..blocks)
            .map(|i| miner.mine(&reward(), 1_700_000_000 + i).0)
            .collect();
        (miner, published)
    }

    #[test]
    fn a_follower_takes_gossiped_blocks_in_order_and_ignores_repeats() {
        let (miner, published) = miner_with(3);
        let mut follower = BurnSync::new();
        for (i, block) in published.iter().enumerate() {
            assert!(matches!(
                follower.on_block(block),
                Ok(Some(TipChange::Extended { height, .. })) if height == i as u64 + 1
            ));
            assert_eq!(validate_gossip(None, block), Verdict::Accept);
        }
        assert_eq!(follower.on_block(&published[1]), Ok(None));
        assert_eq!(follower.chain().tip(), miner.chain().tip());
    }

    #[test]
    fn a_late_follower_fetches_what_it_missed() {
        let (miner, published) = miner_with(30);
        let mut follower = BurnSync::new();
        follower.on_block(&published[0]).unwrap();
        // Block 30 arrives by gossip: its parent is unknown, so it asks.
        assert_eq!(
            follower.on_block(&published[29]),
            Err(BurnError::UnknownParent)
        );
        let answer = miner.answer_fetch(&follower.fetch_request()).unwrap();
        assert_eq!(
            follower.on_fetch_response(&answer),
            Ok(Some(TipChange::Extended {
                height: 30,
                tip: miner.chain().tip()
            }))
        );
        // Asking again brings nothing new.
        let answer = miner.answer_fetch(&follower.fetch_request()).unwrap();
        assert_eq!(follower.on_fetch_response(&answer), Ok(None));
    }

    #[test]
    fn a_longer_branch_fetched_from_a_peer_reorganises_the_follower() {
        let (mut miner, published) = miner_with(5);
        let mut follower = BurnSync::new();
        for block in &published {
            follower.on_block(block).unwrap();
        }
        // The follower mines two blocks of its own; the miner's branch grows to 9.
        follower.mine(&ScriptBuf::new_op_return([2u8; 4]), 1_800_000_000);
        follower.mine(&ScriptBuf::new_op_return([2u8; 4]), 1_800_000_001);
        for i in 0..4 {
            miner.mine(&reward(), 1_700_000_100 + i);
        }
        let answer = miner.answer_fetch(&follower.fetch_request()).unwrap();
        assert_eq!(
            follower.on_fetch_response(&answer),
            Ok(Some(TipChange::Reorganised {
                fork_height: 5,
                height: 9,
                tip: miner.chain().tip()
            }))
        );
        // The miner, shorter than nothing now, ignores the follower's old branch.
        let answer = follower.answer_fetch(&miner.fetch_request()).unwrap();
        assert_eq!(miner.on_fetch_response(&answer), Ok(None));
    }

    #[test]
    fn bad_blocks_and_messages_are_refused_with_their_reason() {
        let (_, published) = miner_with(1);
        let mut follower = BurnSync::new();
        assert!(matches!(validate_gossip(None, b"junk"), Verdict::Reject(_)));
        assert!(matches!(
            validate_gossip(None, &vec![0; MAX_BURN_BLOCK_BYTES + 1]),
            Verdict::Reject(reason) if reason.contains("too large")
        ));
        // A block claiming more than the subsidy: proof of work and merkle root hold,
        // the chain refuses it.
        let genesis = follower.chain().tip();
        let greedy = seal(
            genesis,
            vec![coinbase(
                1,
                &reward(),
                subsidy(1) + bitcoin::Amount::from_sat(1),
            )],
            1_700_000_000,
        );
        let bytes = consensus::serialize(&greedy);
        assert_eq!(validate_gossip(None, &bytes), Verdict::Accept);
        let refused = follower.on_block(&bytes).unwrap_err();
        assert!(matches!(
            refused,
            BurnError::Invalid(RegtestError::InvalidBlock(_))
        ));
        assert!(refused.is_misbehaviour());
        // The merkle root changed after sealing.
        let mut tampered: Block = consensus::deserialize(&published[0]).unwrap();
        tampered.txdata[0].output[0].value = bitcoin::Amount::from_sat(1);
        assert!(matches!(
            validate_gossip(None, &consensus::serialize(&tampered)),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            follower.answer_fetch(b"junk"),
            Err(BurnError::Undecodable(_))
        ));
        assert!(matches!(
            follower.on_fetch_response(b"junk"),
            Err(BurnError::Undecodable(_))
        ));
        assert_eq!(follower.chain().height(), 0, "nothing was taken");
    }

    /// A node following the burnchain over the overlay; `mine` makes it mine a block
    /// and publish it (`true`) or keep it to itself (`false`).
    struct Follower {
        handle: OverlayHandle,
        tip: watch::Receiver<(u64, BlockHash)>,
        mine: mpsc::Sender<bool>,
    }

    async fn follow(mut node: LocalNode) -> Follower {
        node.handle
            .subscribe(Topic::BurnBlocks, Arc::new(validate_gossip))
            .await
            .unwrap();
        let (mut burn, mut fetched) = BurnNode::new(node.handle.clone());
        let (tip_tx, tip) = watch::channel((0, burn.sync().chain().tip()));
        let (mine, mut mine_rx) = mpsc::channel(8);
        let handle = node.handle.clone();
        tokio::spawn(async move {
            let mut anti_entropy = tokio::time::interval(ANTI_ENTROPY_INTERVAL);
            loop {
                tokio::select! {
                    Some(publish) = mine_rx.recv() => {
                        if publish {
                            burn.mine(&reward()).await;
                        } else {
                            burn.sync.mine(&reward(), 1_800_000_000);
                        }
                    }
                    _ = anti_entropy.tick() => burn.on_tick(),
                    Some(answer) = fetched.recv() => {
                        burn.on_fetched(answer).await;
                    }
                    event = node.events.next() => match event {
                        Some(event) => {
                            burn.on_event(&event).await;
                        }
                        None => return,
                    },
                }
                let chain = burn.sync().chain();
                tip_tx.send_replace((chain.height(), chain.tip()));
            }
        });
        Follower { handle, tip, mine }
    }

    async fn wait_for_tip(followers: &[&Follower], tip: (u64, BlockHash)) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let tips: Vec<_> = followers.iter().map(|f| *f.tip.borrow()).collect();
            if tips.iter().all(|t| *t == tip) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tips {tips:?}, wanted {tip:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_on_loopback_follow_the_miner_catch_up_and_ignore_a_bad_block() {
        let network = NetworkId::new("burn-test").unwrap();
        let nodes = localnet::start(3, &network, |_| {}).await.unwrap();
        let bootstrap = nodes[0].handle.listen_addrs().to_vec();
        let mut followers = Vec::new();
        for node in nodes {
            followers.push(follow(node).await);
        }
        let handles: Vec<_> = followers.iter().map(|f| f.handle.clone()).collect();
        // Each node meshed with at least one other: gossip then reaches all three.
        localnet::wait_for_mesh(&handles, Topic::BurnBlocks, 1, Duration::from_secs(20))
            .await
            .unwrap();
        for _ in 0..5 {
            followers[0].mine.send(true).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let miner_tip = |f: &Follower| *f.tip.borrow();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(miner_tip(&followers[0]).0, 5);
        wait_for_tip(
            &followers.iter().collect::<Vec<_>>(),
            miner_tip(&followers[0]),
        )
        .await;

        // A node that joins now has seen none of it: it fetches on connecting.
        let mut config = OverlayConfig::loopback(network.clone());
        config.bootstrap_peers = bootstrap;
        let (handle, events) = tenure_overlay::spawn(config, NodeKey::generate())
            .await
            .unwrap();
        let late = follow(LocalNode { handle, events }).await;
        wait_for_tip(&[&late], miner_tip(&followers[0])).await;

        // Node 1 publishes a block that claims more than the subsidy: it passes the
        // cheap gossip checks and the chain refuses it everywhere.
        let tip = miner_tip(&followers[0]);
        let greedy = seal(
            tip.1,
            vec![coinbase(
                6,
                &reward(),
                subsidy(6) + bitcoin::Amount::from_sat(1),
            )],
            1_700_000_000,
        );
        followers[1]
            .handle
            .publish(Topic::BurnBlocks, consensus::serialize(&greedy))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        for f in followers.iter().chain([&late]) {
            assert_eq!(*f.tip.borrow(), tip);
        }
        // The chain goes on.
        followers[0].mine.send(true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = miner_tip(&followers[0]);
        assert_eq!(next.0, 6);
        wait_for_tip(&followers.iter().chain([&late]).collect::<Vec<_>>(), next).await;

        // A block nobody hears of by gossip: the followers' anti-entropy finds it.
        followers[0].mine.send(false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let unheard = miner_tip(&followers[0]);
        assert_eq!(unheard.0, 7);
        wait_for_tip(
            &followers.iter().chain([&late]).collect::<Vec<_>>(),
            unheard,
        )
        .await;
        let mut all = handles;
        all.push(late.handle.clone());
        localnet::shutdown(&all).await;
    }

    #[test]
    fn the_locator_reaches_genesis_in_few_hashes() {
        let (miner, _) = miner_with(300);
        let locator = miner.locator();
        assert_eq!(locator.first(), Some(&miner.chain().tip()));
        assert_eq!(
            locator.last(),
            Some(&miner.chain().block_at(0).unwrap().block_hash())
        );
        assert!(locator.len() < 25, "{}", locator.len());
    }
}
