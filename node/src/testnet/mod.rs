//! `tenure testnet`: a local mesh of nodes on loopback that find each other from one
//! bootstrap address, form a gossip mesh and exchange heartbeats, follow the embedded
//! regtest burnchain that the first node mines, and, as a producer set, make their
//! term's key and produce signed blocks of transfers ([`producers`]), with live
//! progress and a summary.
//!
//! "Fully meshed" means every node has reached its gossip mesh degree on the heartbeat
//! topic and has heard a heartbeat from every other node. At the end the miner stops
//! and every node is given a moment to reach its burn tip; the summary says how many
//! did.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bitcoin::{BlockHash, ScriptBuf, secp256k1::SECP256K1};
use serde::Serialize;
use tenure_overlay::{
    NetworkId, OverlayConfig, OverlayEvent, OverlayHandle, PeerId, Topic,
    heartbeat::Heartbeat,
    localnet::{self, LocalNode},
};
use tokio::sync::watch;

use crate::{
    burnchain::{self, BurnNode, TipChange},
    process_stats::{mib, rss},
};

pub mod producers;

use producers::ProducerSet;

/// How long producers get, once the load stops, to reach one tip.
const PRODUCER_SETTLE: Duration = Duration::from_secs(3);

/// How often each node publishes a heartbeat.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// How soon a node tries again when it had nobody to send its heartbeat to.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(250);

/// How often progress is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long the nodes get to reach the miner's burn tip once it stops.
const BURN_SETTLE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Clone, Debug)]
pub struct TestnetOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// How long to run.
    pub duration: Duration,
    /// How often the first node mines a burn block.
    pub burn_interval: Duration,
    /// Kill the leader's node halfway through and show its replacement.
    pub kill_leader: bool,
}

#[derive(Default)]
struct Progress {
    heard_from: HashSet<PeerId>,
    sent: u64,
    received: u64,
    burn_height: u64,
    burn_tip: Option<BlockHash>,
    reorgs: u64,
}

/// The summary printed at the end.
#[derive(Debug, Serialize)]
pub struct TestnetSummary {
    /// Nodes run.
    pub nodes: usize,
    /// How long the testnet ran, in seconds.
    pub duration_s: f64,
    /// Whether Ctrl-C cut the run short.
    pub interrupted: bool,
    /// Whether every node reached its mesh degree and heard every other node.
    pub fully_meshed: bool,
    /// Time from start until fully meshed.
    pub time_to_full_mesh_ms: Option<u64>,
    /// Heartbeats published by all nodes.
    pub heartbeats_sent: u64,
    /// Heartbeats received by all nodes.
    pub heartbeats_received: u64,
    /// Fewest peers of any node at the end.
    pub peers_min: usize,
    /// Mean peers per node at the end.
    pub peers_avg: f64,
    /// Smallest heartbeat mesh of any node at the end.
    pub mesh_min: usize,
    /// Resident memory of the whole process at the end.
    pub rss_total_mib: f64,
    /// Resident memory added per node (end minus before start, over nodes).
    pub rss_per_node_mib: f64,
    /// Transport bytes sent per node over the run.
    pub bytes_sent_per_node: u64,
    /// Burn blocks the first node mined.
    pub burn_blocks: u64,
    /// Nodes at the miner's burn tip at the end.
    pub burn_tip_nodes: usize,
    /// Burnchain reorganisations seen by all nodes.
    pub burn_reorgs: u64,
    /// Terms completed (the testnet runs one term for now; it counts once blocks
    /// were produced in it).
    pub terms_completed: u64,
    /// How long the term's DKG took.
    pub dkg_ms: u64,
    /// Each producer's shares of the 100, in node order.
    pub producer_weights: Vec<u16>,
    /// Blocks produced (the highest tip).
    pub blocks: u64,
    /// Transfers in the blocks produced.
    pub transactions: u64,
    /// Transfers per second of the run, from the first block on.
    pub transactions_per_s: f64,
    /// Verified signer shares of the last block.
    pub last_block_signer_shares: usize,
    /// Leaders deposed, counted by every producer that deposed one.
    pub leaders_deposed: u64,
    /// Whether every producer ended on the same tip.
    pub tips_agree: bool,
    /// Announcements confirmed on the burnchain (not produced yet: 0).
    pub announcements_confirmed: u64,
    /// The node killed as leader (`--kill-leader`), if one was.
    pub leader_killed: Option<usize>,
    /// Nodes killed during the run.
    pub nodes_killed: usize,
    /// From killing the leader to the next block at another producer.
    pub failover_ms: Option<u64>,
}

/// Runs the testnet until `duration` passes or Ctrl-C.
pub async fn run(options: TestnetOptions) -> anyhow::Result<TestnetSummary> {
    anyhow::ensure!(options.nodes >= 2, "a testnet needs at least 2 nodes");
    let baseline = rss();
    let started = Instant::now();
    let network = NetworkId::new("testnet")?;
    let nodes = localnet::start(options.nodes, &network, |_| {}).await?;
    let wanted_mesh =
        localnet::reachable_mesh(options.nodes, &OverlayConfig::loopback(network.clone()));
    let handles: Vec<OverlayHandle> = nodes.iter().map(|n| n.handle.clone()).collect();
    // Each node's federation frames and blocks go to its producer; the rest to its
    // own loop below.
    let mut producer_events = Vec::with_capacity(nodes.len());
    let nodes: Vec<LocalNode> = nodes
        .into_iter()
        .map(|node| {
            let (ours, rest) = producers::split_events(node.events);
            producer_events.push(ours);
            LocalNode {
                handle: node.handle,
                events: rest,
            }
        })
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mining_tx, mining_rx) = watch::channel(true);
    let mut progress = Vec::with_capacity(nodes.len());
    let mut tasks = Vec::with_capacity(nodes.len());
    for (index, node) in nodes.into_iter().enumerate() {
        node.handle
            .subscribe(
                Topic::Heartbeat,
                Arc::new(tenure_overlay::heartbeat::validate),
            )
            .await?;
        node.handle
            .subscribe(Topic::BurnBlocks, Arc::new(burnchain::validate_gossip))
            .await?;
        let state = Arc::new(Mutex::new(Progress::default()));
        progress.push(state.clone());
        let mining = (index == 0).then(|| (options.burn_interval, mining_rx.clone()));
        tasks.push(tokio::spawn(run_node(node, state, mining, stop_rx.clone())));
    }
    eprintln!(
        "testnet: {} nodes on loopback, bootstrap {}",
        options.nodes,
        handles
            .first()
            .and_then(|h| h.listen_addrs().first())
            .map(ToString::to_string)
            .unwrap_or_default()
    );

    let set = ProducerSet::start(&handles, producer_events).await?;
    set.start_load();
    eprintln!(
        "testnet: term {} key made by {} producers in {} ms (shares {:?})",
        1,
        options.nodes,
        set.dkg.as_millis(),
        set.weights
    );
    let mut first_block_at: Option<Instant> = None;
    // (node, when, height then) of the leader killed, and when the next block came.
    let mut killed: Option<(usize, Instant, u64)> = None;
    let mut failover: Option<Duration> = None;

    let mut meshed_at = None;
    let mut interrupted = false;
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let end = tokio::time::sleep(options.duration);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let view = NetView::gather(&handles, &progress).await;
                let meshed = view.fully_meshed(options.nodes, wanted_mesh);
                if meshed && meshed_at.is_none() {
                    meshed_at = Some(started.elapsed());
                }
                let dead = killed.map(|(node, _, _)| node);
                let production = Production::of(&set, dead);
                let live = options.nodes - usize::from(dead.is_some());
                if production.height > 0 && first_block_at.is_none() {
                    first_block_at = Some(Instant::now());
                }
                if let Some((_, at, height)) = killed
                    && failover.is_none()
                    && production.height > height
                {
                    failover = Some(at.elapsed());
                    eprintln!(
                        "testnet: block {} by a new leader, {:.1} s after the kill",
                        production.height,
                        at.elapsed().as_secs_f64()
                    );
                }
                let halfway = started.elapsed() >= options.duration / 2;
                if options.kill_leader
                    && killed.is_none()
                    && halfway
                    && production.height > 0
                    && let Some(leader) = production.leader
                    && let Some(handle) = handles.get(leader)
                {
                    eprintln!(
                        "testnet: killing the leader, node {leader}, at height {}",
                        production.height
                    );
                    handle.shutdown().await;
                    killed = Some((leader, Instant::now(), production.height));
                }
                eprintln!(
                    "{} | {}",
                    view.progress_line(started.elapsed(), wanted_mesh, meshed_at),
                    production.line(live)
                );
            }
            _ = &mut end => break,
            _ = &mut ctrl_c => {
                interrupted = true;
                eprintln!("testnet: interrupted, shutting down");
                break;
            }
        }
    }

    // The load stops; producers get a moment to reach one tip.
    set.stop_load();
    let producing_until = Instant::now();
    let settle_until = Instant::now() + PRODUCER_SETTLE;
    let dead = killed.map(|(node, _, _)| node);
    let mut production = Production::of(&set, dead);
    while !interrupted && Instant::now() < settle_until && !production.tips_agree {
        tokio::time::sleep(Duration::from_millis(100)).await;
        production = Production::of(&set, dead);
    }
    if let Some((_, at, height)) = killed
        && failover.is_none()
        && production.height > height
    {
        failover = Some(at.elapsed());
    }

    // The miner stops; every node gets a moment to reach its tip.
    let _ = mining_tx.send(false);
    // The summary reports the view that ended the wait: gathering again could catch a
    // block the miner finished as it stopped, before anyone could follow it.
    let settle_until = Instant::now() + BURN_SETTLE;
    let mut view = NetView::gather(&handles, &progress).await;
    while !interrupted && Instant::now() < settle_until && view.burn_tip_nodes() != options.nodes {
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = NetView::gather(&handles, &progress).await;
    }
    let end_rss = rss();
    let bytes_out: u64 = handles
        .iter()
        .map(|h| h.metrics().snapshot().transport_bytes_out)
        .sum();
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    localnet::shutdown(&handles).await;

    let n = options.nodes;
    Ok(TestnetSummary {
        nodes: n,
        duration_s: started.elapsed().as_secs_f64(),
        interrupted,
        fully_meshed: meshed_at.is_some(),
        time_to_full_mesh_ms: meshed_at.map(|d| d.as_millis() as u64),
        heartbeats_sent: view.sent,
        heartbeats_received: view.received,
        peers_min: view.peers.iter().copied().min().unwrap_or(0),
        peers_avg: view.peers.iter().sum::<usize>() as f64 / n as f64,
        mesh_min: view.mesh.iter().copied().min().unwrap_or(0),
        rss_total_mib: mib(end_rss.current),
        rss_per_node_mib: mib(end_rss.current.saturating_sub(baseline.current)) / n as f64,
        bytes_sent_per_node: bytes_out / n as u64,
        burn_blocks: view.burn.first().map_or(0, |(h, _)| *h),
        burn_tip_nodes: view.burn_tip_nodes(),
        burn_reorgs: view.reorgs,
        terms_completed: u64::from(production.height > 0),
        dkg_ms: set.dkg.as_millis() as u64,
        producer_weights: set.weights.clone(),
        blocks: production.height,
        transactions: production.transfers,
        transactions_per_s: first_block_at.map_or(0.0, |at| {
            production.transfers as f64
                / producing_until
                    .saturating_duration_since(at)
                    .as_secs_f64()
                    .max(1e-3)
        }),
        last_block_signer_shares: production.last_signer_shares,
        leaders_deposed: production.deposed,
        tips_agree: production.tips_agree,
        announcements_confirmed: 0,
        leader_killed: dead,
        nodes_killed: usize::from(dead.is_some()),
        failover_ms: failover.map(|d| d.as_millis() as u64),
    })
}

/// The producer set as seen at one moment.
struct Production {
    height: u64,
    transfers: u64,
    last_signer_shares: usize,
    deposed: u64,
    tips_agree: bool,
    mempool_max: usize,
    leader: Option<usize>,
    at_tip: usize,
}

impl Production {
    /// The producers' view, leaving out the node killed (if any).
    fn of(set: &ProducerSet, dead: Option<usize>) -> Production {
        let statuses: Vec<_> = set
            .statuses()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != dead)
            .map(|(_, s)| s)
            .collect();
        let best = statuses.iter().max_by_key(|s| s.height);
        Production {
            height: best.map_or(0, |s| s.height),
            transfers: best.map_or(0, |s| s.transfers),
            last_signer_shares: best.map_or(0, |s| s.last_signer_shares),
            deposed: statuses.iter().map(|s| s.deposed).sum(),
            tips_agree: statuses
                .first()
                .is_some_and(|first| statuses.iter().all(|s| s.tip == first.tip)),
            mempool_max: statuses.iter().map(|s| s.mempool).max().unwrap_or(0),
            leader: best
                .and_then(|s| s.leader)
                .and_then(|l| set.ids.iter().position(|id| *id == l)),
            at_tip: statuses
                .iter()
                .filter(|s| Some(s.height) == best.map(|b| b.height))
                .count(),
        }
    }

    fn line(&self, live: usize) -> String {
        format!(
            "term 1 height {} on {}/{live} | leader {} | signers {} shares | transfers {} | mempool {}",
            self.height,
            self.at_tip,
            self.leader
                .map_or("none".to_owned(), |l| format!("node {l}")),
            self.last_signer_shares,
            self.transfers,
            self.mempool_max,
        )
    }
}

/// One node's loop: publish heartbeats, record the ones heard, follow the burnchain
/// (and mine it every interval while `mining` says so).
async fn run_node(
    mut node: LocalNode,
    progress: Arc<Mutex<Progress>>,
    mining: Option<(Duration, watch::Receiver<bool>)>,
    mut stop: watch::Receiver<bool>,
) {
    let me = node.handle.peer_id();
    let mut seq = 0u64;
    let beat = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(beat);
    let (mut burn, mut fetched) = BurnNode::new(node.handle.clone());
    let (interval, mining_on) = match mining {
        Some((interval, on)) => (interval, Some(on)),
        None => (Duration::from_secs(3600), None),
    };
    let mut anti_entropy = tokio::time::interval(burnchain::ANTI_ENTROPY_INTERVAL);
    let mut mine_tick = tokio::time::interval(interval);
    mine_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reward = ScriptBuf::new_p2tr(
        SECP256K1,
        bitcoin::key::Keypair::new(SECP256K1, &mut bitcoin::secp256k1::rand::thread_rng())
            .x_only_public_key()
            .0,
        None,
    );
    let record = |change: Option<TipChange>, burn: &BurnNode| {
        if let (Some(change), Ok(mut p)) = (change, progress.lock()) {
            p.burn_height = burn.sync().chain().height();
            p.burn_tip = Some(burn.sync().chain().tip());
            if matches!(change, TipChange::Reorganised { .. }) {
                p.reorgs += 1;
            }
        }
    };
    loop {
        tokio::select! {
            _ = mine_tick.tick(), if mining_on.as_ref().is_some_and(|on| *on.borrow()) => {
                let change = burn.mine(&reward).await;
                record(Some(change), &burn);
            }
            Some(answer) = fetched.recv() => {
                let change = burn.on_fetched(answer).await;
                record(change, &burn);
            }
            _ = anti_entropy.tick(), if mining_on.is_none() => burn.on_tick(),
            _ = &mut beat => {
                // Until subscriptions are exchanged there is nobody to publish to: try
                // again shortly rather than a whole interval later.
                let published = match Heartbeat::new(me, seq).encode() {
                    Ok(beat) => node.handle.publish(Topic::Heartbeat, beat).await.is_ok(),
                    Err(_) => false,
                };
                let next = if published {
                    seq += 1;
                    if let Ok(mut p) = progress.lock() {
                        p.sent += 1;
                    }
                    HEARTBEAT_INTERVAL
                } else {
                    HEARTBEAT_RETRY
                };
                beat.as_mut().reset(tokio::time::Instant::now() + next);
            }
            event = node.events.next() => match event {
                Some(event) if matches!(
                    event,
                    OverlayEvent::Gossip { topic: Topic::BurnBlocks, .. }
                        | OverlayEvent::InboundRequest { .. }
                        | OverlayEvent::PeerConnected { .. }
                        | OverlayEvent::PeerDisconnected { .. }
                ) => {
                    let change = burn.on_event(&event).await;
                    record(change, &burn);
                }
                Some(OverlayEvent::Gossip { topic: Topic::Heartbeat, data, .. }) => {
                    if let (Some(sender), Ok(mut p)) =
                        (Heartbeat::decode(&data).and_then(|b| b.sender()), progress.lock())
                    {
                        p.heard_from.insert(sender);
                        p.received += 1;
                    }
                }
                Some(_) => {}
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// The network as seen at one moment.
struct NetView {
    peers: Vec<usize>,
    mesh: Vec<usize>,
    heard: Vec<usize>,
    sent: u64,
    received: u64,
    /// Burn height and tip of every node, the miner first.
    burn: Vec<(u64, Option<BlockHash>)>,
    reorgs: u64,
}

impl NetView {
    async fn gather(handles: &[OverlayHandle], progress: &[Arc<Mutex<Progress>>]) -> Self {
        let mut view = NetView {
            peers: Vec::new(),
            mesh: Vec::new(),
            heard: Vec::new(),
            sent: 0,
            received: 0,
            burn: Vec::new(),
            reorgs: 0,
        };
        for (handle, state) in handles.iter().zip(progress) {
            let (peers, mesh) = match handle.status().await {
                Ok(s) => (
                    s.peers.len(),
                    s.mesh.get(Topic::Heartbeat.name()).copied().unwrap_or(0),
                ),
                Err(_) => (0, 0),
            };
            view.peers.push(peers);
            view.mesh.push(mesh);
            if let Ok(p) = state.lock() {
                view.heard.push(p.heard_from.len());
                view.sent += p.sent;
                view.received += p.received;
                view.burn.push((p.burn_height, p.burn_tip));
                view.reorgs += p.reorgs;
            }
        }
        view
    }

    /// Nodes whose burn tip is the miner's.
    fn burn_tip_nodes(&self) -> usize {
        match self.burn.first() {
            Some((_, tip)) => self.burn.iter().filter(|(_, t)| t == tip).count(),
            None => 0,
        }
    }

    fn fully_meshed(&self, nodes: usize, wanted_mesh: usize) -> bool {
        self.mesh.len() == nodes
            && self.mesh.iter().all(|m| *m >= wanted_mesh)
            && self.heard.iter().all(|h| *h + 1 >= nodes)
    }

    fn progress_line(
        &self,
        elapsed: Duration,
        wanted_mesh: usize,
        meshed_at: Option<Duration>,
    ) -> String {
        let n = self.peers.len().max(1);
        let hearing_all = self.heard.iter().filter(|h| **h + 1 >= n).count();
        let meshed = self.mesh.iter().filter(|m| **m >= wanted_mesh).count();
        let state = match meshed_at {
            Some(at) => format!("fully meshed at {:.1}s", at.as_secs_f64()),
            None => "forming".to_owned(),
        };
        format!(
            "[{:>5.1}s] peers avg {:.1} min {} | mesh ok {meshed}/{n} | hear all {hearing_all}/{n} | heartbeats {} sent {} received | burn tip {} on {}/{n} | {state}",
            elapsed.as_secs_f64(),
            self.peers.iter().sum::<usize>() as f64 / n as f64,
            self.peers.iter().copied().min().unwrap_or(0),
            self.sent,
            self.received,
            self.burn.first().map_or(0, |(h, _)| *h),
            self.burn_tip_nodes(),
        )
    }
}

impl TestnetSummary {
    /// The summary for people.
    pub fn to_text(&self) -> String {
        let mesh = match self.time_to_full_mesh_ms {
            Some(ms) => format!("fully meshed after {:.2} s", ms as f64 / 1000.0),
            None => "NOT fully meshed".to_owned(),
        };
        format!(
            "testnet summary\n  nodes              {}\n  ran                {:.1} s{}\n  mesh               {mesh}\n  peers per node     min {} avg {:.1}\n  heartbeat mesh     min {}\n  heartbeats         {} sent, {} received\n  burnchain          {} blocks mined, {} of {} nodes at the tip, {} reorgs\n  memory             {:.1} MiB total, {:.2} MiB per node\n  bytes sent / node  {}\n  term 1             key in {} ms, shares {:?}\n  blocks             {} ({} transfers, {:.0} per second), last signed by {} shares\n  leaders deposed    {}{}\n  tips agree         {}",
            self.nodes,
            self.duration_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.peers_min,
            self.peers_avg,
            self.mesh_min,
            self.heartbeats_sent,
            self.heartbeats_received,
            self.burn_blocks,
            self.burn_tip_nodes,
            self.nodes,
            self.burn_reorgs,
            self.rss_total_mib,
            self.rss_per_node_mib,
            self.bytes_sent_per_node,
            self.dkg_ms,
            self.producer_weights,
            self.blocks,
            self.transactions,
            self.transactions_per_s,
            self.last_block_signer_shares,
            self.leaders_deposed,
            match (self.leader_killed, self.failover_ms) {
                (Some(node), Some(ms)) =>
                    format!(" (leader node {node} killed; next block {ms} ms later)"),
                (Some(node), None) => format!(" (leader node {node} killed; no block after it)"),
                _ => String::new(),
            },
            self.tips_agree,
        )
    }
}
