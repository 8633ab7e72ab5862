//! `tenure testnet`: a local mesh of nodes on loopback that find each other from one
//! bootstrap address, form a gossip mesh and exchange heartbeats, follow the embedded
//! regtest burnchain that one more node mines (standing in for Bitcoin's miners: it
//! produces nothing else, so a killed producer never stops the burnchain; it also
//! follows the chain as a node that produces nothing, from each term key's
//! certificates and the gossiped blocks, [`crate::follower`]), enroll
//! their producers on it, and
//! produce signed blocks of transfers term after term, each term's producers and key
//! decided by the burnchain ([`terms`], [`producers`]), with live progress and a
//! summary.
//!
//! "Fully meshed" means every node has reached its gossip mesh degree on the heartbeat
//! topic and has heard a heartbeat from every other node. The run ends when the
//! burnchain passes the last producing term; then the miner stops and every node is
//! given a moment to reach its burn tip; the summary says how many did.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bitcoin::{
    Amount, ScriptBuf, Transaction,
    secp256k1::{Keypair, SECP256K1},
};
use serde::Serialize;
use tenure_chain::{
    ops::enrollment::Magic,
    produce::{BurnScan, Enroller},
    terms::Terms,
};
use tenure_overlay::{
    NetworkId, OverlayConfig, OverlayEvent, OverlayHandle, PeerId, Topic,
    heartbeat::Heartbeat,
    localnet::{self, LocalNode},
};
use tokio::sync::{mpsc, watch};

use crate::{
    burnchain::{self, BurnDriver, BurnNode, BurnStatus, BurnView, MinerSchedule},
    follower::{self, FollowerStatus},
    process_stats::{mib, rss},
    producer::TermBlocks,
};

pub mod producers;
pub mod terms;

use producers::ProducerSet;
use terms::TermKey;

/// How long producers get, once the load stops, to reach one tip.
const PRODUCER_SETTLE: Duration = Duration::from_secs(3);

/// How long the producers get to reach one tip after a run with `--partition`.
const PARTITION_SETTLE: Duration = Duration::from_secs(15);

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
    /// Producing terms to run (from term 3, the first with producers).
    pub terms: u64,
    /// The most the whole run may take.
    pub duration: Duration,
    /// How often the miner node mines a burn block.
    pub burn_interval: Duration,
    /// Kill the leader's node halfway through and show its replacement.
    pub kill_leader: bool,
    /// Make the leader byzantine halfway through: it proposes invalid blocks and sends
    /// invalid signature shares from then on.
    pub byzantine: bool,
    /// Cut a producer off the network for most of the middle term, then let it back.
    pub partition: bool,
    /// Serve the chain's HTTP API ([`crate::chain_api`]) for the first producer here.
    pub http: Option<std::net::SocketAddr>,
    /// An account the first producer pays 1,000,000 once its term's first block
    /// funded it, so a user's own key has coins to send.
    pub faucet: Option<tenure_chain::block::AccountId>,
}

#[derive(Default)]
struct Progress {
    heard_from: HashSet<PeerId>,
    sent: u64,
    received: u64,
    burn_height: u64,
    burn_tip: Option<String>,
    reorgs: u64,
}

/// One producing term in the summary.
#[derive(Debug, Serialize)]
pub struct TermSummary {
    /// The term.
    pub term: u64,
    /// Whether the burnchain passed its end with blocks produced in it.
    pub completed: bool,
    /// Each node's shares of the 100 (0: not a producer of the term).
    pub shares: Vec<u16>,
    /// How long its DKG took, all attempts.
    pub dkg_ms: Option<u64>,
    /// DKG attempts.
    pub dkg_attempts: u32,
    /// Nodes left out of its key after a failed attempt.
    pub excluded: Vec<usize>,
    /// Blocks of the term.
    pub blocks: u64,
    /// Transfers in them.
    pub transactions: u64,
    /// Verified signer shares of its last block.
    pub last_block_signer_shares: usize,
    /// Its announcements confirmed on the burnchain.
    pub announcements: u64,
    /// The highest block it announced.
    pub announced_height: Option<u64>,
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
    /// Whether the time limit ended the run before its last term ended.
    pub timed_out: bool,
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
    /// Burn blocks the miner node mined.
    pub burn_blocks: u64,
    /// Nodes at the miner's burn tip at the end.
    pub burn_tip_nodes: usize,
    /// Burnchain reorganisations seen by all nodes.
    pub burn_reorgs: u64,
    /// Producing terms completed: the burnchain passed their end and they had blocks.
    pub terms_completed: u64,
    /// Each producing term.
    pub terms: Vec<TermSummary>,
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
    /// Announcements confirmed on the burnchain (as the first producer's scan found
    /// them).
    pub announcements_confirmed: u64,
    /// The highest block an announcement confirmed: it and its ancestors are final.
    pub final_height: Option<u64>,
    /// The node killed as leader (`--kill-leader`), if one was.
    pub leader_killed: Option<usize>,
    /// Nodes killed during the run.
    pub nodes_killed: usize,
    /// From killing the leader to the next block at another producer.
    pub failover_ms: Option<u64>,
    /// The byzantine producer (`--byzantine`), if one was made.
    pub byzantine: Option<ByzantineSummary>,
    /// The producer cut off (`--partition`), if one was.
    pub partition: Option<PartitionSummary>,
    /// The chain as the miner's node followed it, producing nothing.
    pub follower: FollowerSummary,
}

/// The chain as a node that produces nothing saw it: term keys accepted from the
/// producers' certificates and every block validated against them.
#[derive(Debug, Serialize)]
pub struct FollowerSummary {
    /// Height of its tip.
    pub height: u64,
    /// Whether its tip is the producers' tip.
    pub agrees: bool,
    /// Terms whose key it accepted from certificates.
    pub terms_certified: Vec<u64>,
    /// Blocks it refused as invalid.
    pub refused_blocks: u64,
    /// Certificates it refused.
    pub refused_certificates: u64,
}

impl FollowerSummary {
    fn of(status: &FollowerStatus, production: &Production) -> FollowerSummary {
        FollowerSummary {
            height: status.height,
            agrees: status.tip == production.tip,
            terms_certified: status.terms_certified.clone(),
            refused_blocks: status.refused_blocks,
            refused_certificates: status.refused_certificates,
        }
    }
}

/// What became of the producer cut off (`--partition`).
#[derive(Debug, Serialize)]
pub struct PartitionSummary {
    /// Its node.
    pub node: usize,
    /// How long it was cut off, in seconds.
    pub cut_off_s: f64,
    /// Blocks the others made meanwhile.
    pub blocks_missed: u64,
    /// From being let back to holding every block the others had then.
    pub caught_up_ms: Option<u64>,
}

/// What became of the byzantine producer (`--byzantine`).
#[derive(Debug, Serialize)]
pub struct ByzantineSummary {
    /// Its node.
    pub node: usize,
    /// Invalid proposals it sent.
    pub invalid_proposals: usize,
    /// Of those, blocks an honest producer applied (the group signed them): must be 0.
    pub invalid_proposals_signed: usize,
    /// Honest producers that deposed it for misbehaviour.
    pub deposed_by: usize,
    /// Times a signing coordinator named it for an invalid signature share.
    pub named_cheater: u64,
    /// Blocks produced after it turned byzantine.
    pub blocks_after: u64,
}

/// Runs the testnet until `terms` producing terms are complete, the time limit, or
/// Ctrl-C.
pub async fn run(options: TestnetOptions) -> anyhow::Result<TestnetSummary> {
    anyhow::ensure!(options.nodes >= 2, "a testnet needs at least 2 nodes");
    anyhow::ensure!(options.terms >= 1, "a testnet runs at least one term");
    anyhow::ensure!(
        usize::from(options.kill_leader)
            + usize::from(options.byzantine)
            + usize::from(options.partition)
            <= 1,
        "one fault at a time: --kill-leader, --byzantine or --partition"
    );
    let baseline = rss();
    let started = Instant::now();
    let network = NetworkId::new("testnet")?;
    // The producers' nodes, then one more: the burnchain's miner, which stands in
    // for Bitcoin's miners and produces nothing else (so killing a producer never
    // stops the burnchain).
    let all = options.nodes + 1;
    let nodes = localnet::start(all, &network, |_| {}).await?;
    let wanted_mesh = localnet::reachable_mesh(all, &OverlayConfig::loopback(network.clone()));
    let handles: Vec<OverlayHandle> = nodes.iter().map(|n| n.handle.clone()).collect();
    let producer_handles: Vec<OverlayHandle> =
        handles.iter().take(options.nodes).cloned().collect();
    // Each producer node's federation frames and blocks go to its producer; the rest
    // to its own loop below.
    let mut producer_events = Vec::with_capacity(options.nodes);
    // The miner's node also follows the chain without producing: its blocks and term
    // keys go to its follower.
    let mut follower_events = None;
    let nodes: Vec<LocalNode> = nodes
        .into_iter()
        .enumerate()
        .map(|(index, node)| {
            if index == options.nodes {
                let (ours, rest) = node.events.split(4096, follower::wants);
                follower_events = Some(ours);
                return LocalNode {
                    handle: node.handle,
                    events: rest,
                };
            }
            let (ours, rest) = producers::split_events(node.events);
            producer_events.push(ours);
            LocalNode {
                handle: node.handle,
                events: rest,
            }
        })
        .collect();
    let keys: Vec<Keypair> = (0..options.nodes)
        .map(|_| Keypair::new(SECP256K1, &mut bitcoin::secp256k1::rand::thread_rng()))
        .collect();
    let burn_terms = terms::testnet_terms(options.nodes);
    let premine = terms::premine(options.nodes);
    let schedule = MinerSchedule {
        first_term_height: burn_terms.first_burn_height,
        interval: options.burn_interval,
        premine_to: terms::wallet_scripts(&keys),
        // The blocks after the premine pay nobody in particular.
        reward: ScriptBuf::new_op_return([0u8; 4]),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mining_tx, mining_rx) = watch::channel(true);
    // Progress is kept miner first.
    let mut progress: Vec<Arc<Mutex<Progress>>> = Vec::with_capacity(all);
    let mut tasks = Vec::with_capacity(all);
    let mut scans = Vec::with_capacity(options.nodes);
    let mut term_keys = Vec::with_capacity(options.nodes);
    // Each producer's burn transactions (announcements, from its producer) go to its
    // node's loop, which relays them on the burn-transactions topic.
    let mut burn_txs = Vec::with_capacity(options.nodes);
    let mut follower_scan = None;
    let producer_count = options.nodes;
    for (index, node) in nodes.into_iter().enumerate() {
        node.handle
            .subscribe(
                Topic::Heartbeat,
                Arc::new(tenure_overlay::heartbeat::validate),
            )
            .await?;
        let state = Arc::new(Mutex::new(Progress::default()));
        let miner = index == producer_count;
        if miner {
            progress.insert(0, state.clone());
        } else {
            progress.push(state.clone());
        }
        let scan = BurnScan::new(Magic::Regtest, burn_terms, burn_terms.first_burn_height);
        let enroller = keys.get(index).map(|key| {
            Enroller::with_spends(
                *key,
                move |term| Amount::from_sat(producers::spend_of(index, producer_count, term)),
                Magic::Regtest,
            )
        });
        let (view, scan_rx) = BurnView::new(scan, enroller);
        let (keys_tx, keys_rx) = mpsc::channel(8);
        let (own_tx, own_txs) = mpsc::channel(64);
        if miner {
            follower_scan = Some(scan_rx);
        } else {
            scans.push(scan_rx);
            term_keys.push(keys_tx);
            burn_txs.push(own_tx.clone());
        }
        let (burn, fetched) = BurnNode::new(node.handle.clone());
        let burn = NodeBurn {
            driver: BurnDriver {
                burn,
                fetched,
                view,
                mining: miner.then(|| schedule.clone()),
                mining_on: Some(mining_rx.clone()),
            },
            term_keys: keys_rx,
            own_txs,
        };
        tasks.push(tokio::spawn(run_node(node, state, burn, stop_rx.clone())));
    }
    // The views gather nodes in progress order: the miner first.
    let view_handles: Vec<OverlayHandle> = handles
        .last()
        .into_iter()
        .chain(producer_handles.iter())
        .cloned()
        .collect();
    eprintln!(
        "testnet: {} nodes on loopback, bootstrap {}; premine of {} burn blocks, then terms of {} (term 0 registers, enrollments from term 1, blocks from term {})",
        options.nodes,
        handles
            .first()
            .and_then(|h| h.listen_addrs().first())
            .map(ToString::to_string)
            .unwrap_or_default(),
        premine,
        burn_terms.length,
        terms::FIRST_TERM,
    );

    let follower = match (handles.last(), follower_events, follower_scan) {
        (Some(miner), Some(events), Some(scan)) => {
            follower::spawn(producers::NETWORK, miner, events, scan).await?
        }
        _ => anyhow::bail!("the testnet has no miner node to follow the chain"),
    };
    let set = ProducerSet::start_terms(
        &producer_handles,
        producer_events,
        keys,
        scans.clone(),
        burn_txs,
        term_keys,
    )
    .await?;
    if let Some(addr) = options.http {
        let slot = set
            .producers
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the testnet has no producer"))?;
        let bound = crate::chain_api::serve(addr, slot).await?;
        eprintln!("testnet: chain HTTP API on http://{bound} (the first producer's view)");
    }
    set.start_load(options.faucet);
    let last_term = terms::FIRST_TERM + options.terms - 1;
    let done_at = burn_terms.heights(last_term).end;
    // Halfway through the middle producing term: not at a term change.
    let kill_at = burn_terms
        .heights(terms::FIRST_TERM + options.terms / 2)
        .start
        + burn_terms.length / 2;
    let mut first_block_at: Option<Instant> = None;
    // (node, when, height then) of the leader killed, and when the next block came.
    let mut killed: Option<(usize, Instant, u64)> = None;
    let mut failover: Option<Duration> = None;
    // (node, height then) of the leader made byzantine, and the blocks an honest
    // producer applied since.
    let mut byzantine: Option<(usize, u64)> = None;
    let mut honest_blocks: Option<tokio::task::JoinHandle<HashSet<[u8; 32]>>> = None;
    let (watched_tx, watched_rx) = watch::channel(false);
    // A producing term before the last (the middle one of three): a producer is cut
    // off from its second burn block (once the next term's key is made, which it must
    // take part in) to its last, so it is back before the next term starts.
    let middle = burn_terms.heights(terms::FIRST_TERM + options.terms.saturating_sub(1) / 2);
    let (cut_from, cut_until) = (middle.start.saturating_add(1), middle.end.saturating_sub(1));
    let mut partition = Partition::default();
    let mut reported_terms = 0usize;

    let mut meshed_at = None;
    let mut interrupted = false;
    let mut timed_out = false;
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let end = tokio::time::sleep(options.duration);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let view = NetView::gather(&view_handles, &progress).await;
                let meshed = view.fully_meshed(all, wanted_mesh);
                if meshed && meshed_at.is_none() {
                    meshed_at = Some(started.elapsed());
                }
                if let Ok(reports) = set.reports.lock() {
                    for report in reports.values().skip(reported_terms) {
                        eprintln!(
                            "testnet: term {} key made in {} ms ({} attempt{}), shares {:?}",
                            report.term,
                            report.dkg.as_millis(),
                            report.attempts,
                            if report.attempts == 1 { "" } else { "s" },
                            report.shares
                        );
                    }
                    reported_terms = reports.len();
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
                let burn_height = view.burn.first().map_or(0, |(h, _)| *h);
                if options.kill_leader
                    && killed.is_none()
                    && burn_height >= kill_at
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
                if options.byzantine
                    && byzantine.is_none()
                    && burn_height >= kill_at
                    && production.height > 0
                    && let Some(leader) = production.leader
                    && let Some(producer) = set.producers.get(leader).and_then(|p| p.get())
                    && let Some(honest) = set
                        .producers
                        .get((leader + 1) % options.nodes)
                        .and_then(|p| p.get())
                {
                    eprintln!(
                        "testnet: the leader, node {leader}, turns byzantine at height {}: invalid proposals, invalid signature shares",
                        production.height
                    );
                    let mut applied = honest.applied();
                    let mut stop = watched_rx.clone();
                    honest_blocks = Some(tokio::spawn(async move {
                        let mut seen = HashSet::new();
                        loop {
                            tokio::select! {
                                block = applied.recv() => match block {
                                    Ok(block) => { seen.insert(block.hash); }
                                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                    Err(_) => return seen,
                                },
                                _ = stop.changed() => return seen,
                            }
                        }
                    }));
                    producer.misbehave().await;
                    byzantine = Some((leader, production.height));
                }
                if options.partition {
                    partition
                        .step(&set, &producer_handles, &production, burn_height, (cut_from, cut_until))
                        .await;
                }
                eprintln!(
                    "{} | {}",
                    view.progress_line(started.elapsed(), wanted_mesh, meshed_at, &burn_terms),
                    production.line(live)
                );
                if burn_height >= done_at {
                    break;
                }
            }
            _ = &mut end => {
                timed_out = true;
                eprintln!("testnet: time limit reached before term {last_term} ended");
                break;
            }
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
    // A producer cut off and let back gets longer: it may still be catching up.
    let settle_until = Instant::now()
        + if partition.cut.is_some() {
            PARTITION_SETTLE
        } else {
            PRODUCER_SETTLE
        };
    let dead = killed.map(|(node, _, _)| node);
    let mut production = Production::of(&set, dead);
    while !interrupted
        && Instant::now() < settle_until
        && (!production.tips_agree
            || partition.waiting()
            || follower.borrow().tip != production.tip)
    {
        partition
            .step(&set, &producer_handles, &production, u64::MAX, (0, 0))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        production = Production::of(&set, dead);
    }
    // The follower is judged at the moment the producers are: production may go on
    // (the mempool drains) while the burnchain settles below.
    let follower_summary = FollowerSummary::of(&follower.borrow(), &production);
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
    let mut view = NetView::gather(&view_handles, &progress).await;
    // A killed producer's node follows no more.
    let burn_followers = options.nodes - usize::from(dead.is_some());
    while !interrupted && Instant::now() < settle_until && view.burn_tip_nodes() < burn_followers {
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = NetView::gather(&view_handles, &progress).await;
    }
    let byzantine = match byzantine {
        Some((node, height)) => {
            let _ = watched_tx.send(true);
            let applied = match honest_blocks {
                Some(task) => task.await.unwrap_or_default(),
                None => HashSet::new(),
            };
            Some(ByzantineSummary::of(
                &set,
                node,
                height,
                &applied,
                production.height,
            ))
        }
        None => None,
    };
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

    let burn_height = view.burn.first().map_or(0, |(h, _)| *h);
    let announcements = scans
        .first()
        .map(|scan| scan.borrow().announcements())
        .unwrap_or_default();
    let reports = set.reports.lock().map(|r| r.clone()).unwrap_or_default();
    let terms: Vec<TermSummary> = (terms::FIRST_TERM..=last_term)
        .map(|term| {
            let report = reports.get(&term);
            let blocks = production.by_term.get(&term).copied().unwrap_or_default();
            TermSummary {
                term,
                completed: burn_height >= burn_terms.heights(term).end && blocks.blocks > 0,
                shares: report.map(|r| r.shares.clone()).unwrap_or_default(),
                dkg_ms: report.map(|r| r.dkg.as_millis() as u64),
                dkg_attempts: report.map_or(0, |r| r.attempts),
                excluded: report.map(|r| r.excluded.clone()).unwrap_or_default(),
                blocks: blocks.blocks,
                transactions: blocks.transfers,
                last_block_signer_shares: blocks.last_signer_shares,
                announcements: announcements.iter().filter(|(_, a)| a.term == term).count() as u64,
                announced_height: announcements
                    .iter()
                    .filter(|(_, a)| a.term == term)
                    .map(|(_, a)| a.height)
                    .max(),
            }
        })
        .collect();
    let n = options.nodes;
    Ok(TestnetSummary {
        nodes: n,
        duration_s: started.elapsed().as_secs_f64(),
        interrupted,
        timed_out,
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
        burn_blocks: burn_height,
        burn_tip_nodes: view.burn_tip_nodes(),
        burn_reorgs: view.reorgs,
        terms_completed: terms.iter().filter(|t| t.completed).count() as u64,
        terms,
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
        announcements_confirmed: announcements.len() as u64,
        final_height: announcements.iter().map(|(_, a)| a.height).max(),
        leader_killed: dead,
        nodes_killed: usize::from(dead.is_some()),
        failover_ms: failover.map(|d| d.as_millis() as u64),
        byzantine,
        partition: partition.summary(),
        follower: follower_summary,
    })
}

/// `--partition`: which producer is cut off, since when, and its catching up.
#[derive(Default)]
struct Partition {
    /// (node, when cut off, the others' height then).
    cut: Option<(usize, Instant, u64)>,
    /// (when let back, the others' height then).
    back: Option<(Instant, u64)>,
    caught_up: Option<Duration>,
}

impl Partition {
    /// Cuts a producer other than the leader off once the burnchain reaches `from` (and
    /// the next term's key is made), lets it back at `until`, and sees it catch up.
    async fn step(
        &mut self,
        set: &ProducerSet,
        overlays: &[OverlayHandle],
        production: &Production,
        burn_height: u64,
        (from, until): (u64, u64),
    ) {
        match (self.cut, self.back) {
            (None, _) => {
                let next_key_made = set
                    .reports
                    .lock()
                    .is_ok_and(|r| r.contains_key(&production.term.saturating_add(1)));
                if burn_height < from || burn_height >= until || !next_key_made {
                    return;
                }
                let Some(leader) = production.leader else {
                    return;
                };
                let node = (leader + 1) % overlays.len().max(1);
                let Some(overlay) = overlays.get(node) else {
                    return;
                };
                eprintln!(
                    "testnet: cutting node {node} off the network at height {}",
                    production.height
                );
                overlay.isolate(true).await;
                self.cut = Some((node, Instant::now(), production.height));
            }
            (Some((node, _, _)), None) => {
                if burn_height < until {
                    return;
                }
                let height = production.height;
                eprintln!("testnet: letting node {node} back at height {height}");
                if let Some(overlay) = overlays.get(node) {
                    overlay.isolate(false).await;
                }
                self.back = Some((Instant::now(), height));
            }
            (Some((node, _, _)), Some((at, height))) => {
                let caught_up = set.statuses().get(node).is_some_and(|s| s.height >= height);
                if self.caught_up.is_none() && caught_up {
                    self.caught_up = Some(at.elapsed());
                    eprintln!(
                        "testnet: node {node} caught up to height {height}, {} ms after it was let back",
                        at.elapsed().as_millis()
                    );
                }
            }
        }
    }

    /// Whether a producer was let back and has not caught up yet.
    fn waiting(&self) -> bool {
        self.back.is_some() && self.caught_up.is_none()
    }

    fn summary(&self) -> Option<PartitionSummary> {
        let (node, cut_at, height) = self.cut?;
        Some(PartitionSummary {
            node,
            cut_off_s: self
                .back
                .map_or(cut_at.elapsed(), |(at, _)| {
                    at.saturating_duration_since(cut_at)
                })
                .as_secs_f64(),
            blocks_missed: self.back.map_or(0, |(_, h)| h.saturating_sub(height)),
            caught_up_ms: self.caught_up.map(|d| d.as_millis() as u64),
        })
    }
}

impl ByzantineSummary {
    /// What the honest producers saw of node `node`, byzantine from `height` on;
    /// `applied` are the blocks an honest producer applied since.
    fn of(
        set: &ProducerSet,
        node: usize,
        height: u64,
        applied: &HashSet<[u8; 32]>,
        tip: u64,
    ) -> ByzantineSummary {
        let statuses = set.statuses();
        let invalid = statuses
            .get(node)
            .map(|s| s.invalid_proposals.clone())
            .unwrap_or_default();
        let id = set.ids.get(node).copied();
        let member = set.members.get(node).copied();
        let honest = statuses
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != node)
            .map(|(_, s)| s);
        ByzantineSummary {
            node,
            invalid_proposals: invalid.len(),
            invalid_proposals_signed: invalid.iter().filter(|h| applied.contains(*h)).count(),
            deposed_by: honest
                .filter(|s| id.is_some_and(|id| s.deposed_misbehaving.contains_key(&id)))
                .count(),
            named_cheater: set
                .running()
                .iter()
                .map(|p| member.map_or(0, |m| p.cheaters().get(&m).copied().unwrap_or(0)))
                .sum(),
            blocks_after: tip.saturating_sub(height),
        }
    }
}

/// The producer set as seen at one moment.
struct Production {
    term: u64,
    height: u64,
    /// The best producer's tip.
    tip: [u8; 32],
    transfers: u64,
    last_signer_shares: usize,
    deposed: u64,
    tips_agree: bool,
    mempool_max: usize,
    leader: Option<usize>,
    at_tip: usize,
    by_term: BTreeMap<u64, TermBlocks>,
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
            term: best.map_or(0, |s| s.term),
            height: best.map_or(0, |s| s.height),
            tip: best.map_or([0; 32], |s| s.tip),
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
            by_term: best.map(|s| s.by_term.clone()).unwrap_or_default(),
        }
    }

    fn line(&self, live: usize) -> String {
        if self.term == 0 {
            return "no term yet".to_owned();
        }
        format!(
            "term {} height {} on {}/{live} | leader {} | signers {} shares | transfers {} | mempool {}",
            self.term,
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

/// A node's burnchain: the driver `tenure node` runs too ([`BurnDriver`]: follow,
/// scan, enroll, relay, mine on the miner node), and what its term driver sends it.
struct NodeBurn {
    driver: BurnDriver,
    /// Term keys from the node's term driver.
    term_keys: mpsc::Receiver<TermKey>,
    /// The node's producer's burn transactions (announcements), to relay.
    own_txs: mpsc::Receiver<Transaction>,
}

/// One node's loop: its burnchain driver on a task of its own, heartbeats published
/// and the ones heard recorded, the burn tip copied into the progress.
async fn run_node(
    node: LocalNode,
    progress: Arc<Mutex<Progress>>,
    burn: NodeBurn,
    mut stop: watch::Receiver<bool>,
) {
    let me = node.handle.peer_id();
    let mut seq = 0u64;
    let beat = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(beat);
    let (burn_events, mut events) = node.events.split(4096, burnchain::wants);
    let (peers_tx, peers) = mpsc::channel(256);
    let (status_tx, mut status) = watch::channel(BurnStatus::default());
    let driver =
        tokio::spawn(
            burn.driver
                .run(burn_events, peers, burn.own_txs, burn.term_keys, status_tx),
        );
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let status = status.borrow_and_update().clone();
                if let Ok(mut p) = progress.lock() {
                    p.burn_height = status.height;
                    p.burn_tip = Some(status.tip);
                    p.reorgs = status.reorgs;
                }
            }
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
            event = events.next() => match event {
                Some(OverlayEvent::PeerConnected { peer, hello }) => {
                    let _ = peers_tx.try_send(OverlayEvent::PeerConnected { peer, hello });
                }
                Some(OverlayEvent::PeerDisconnected { peer }) => {
                    let _ = peers_tx.try_send(OverlayEvent::PeerDisconnected { peer });
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
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    driver.abort();
}

/// The network as seen at one moment.
struct NetView {
    peers: Vec<usize>,
    mesh: Vec<usize>,
    heard: Vec<usize>,
    sent: u64,
    received: u64,
    /// Burn height and tip of every node, the miner first.
    burn: Vec<(u64, Option<String>)>,
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
                view.burn.push((p.burn_height, p.burn_tip.clone()));
                view.reorgs += p.reorgs;
            }
        }
        view
    }

    /// Producer nodes whose burn tip is the miner's.
    fn burn_tip_nodes(&self) -> usize {
        match self.burn.split_first() {
            Some(((_, tip), producers)) => producers.iter().filter(|(_, t)| t == tip).count(),
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
        terms: &Terms,
    ) -> String {
        let n = self.peers.len().max(1);
        let hearing_all = self.heard.iter().filter(|h| **h + 1 >= n).count();
        let meshed = self.mesh.iter().filter(|m| **m >= wanted_mesh).count();
        let state = match meshed_at {
            Some(at) => format!("fully meshed at {:.1}s", at.as_secs_f64()),
            None => "forming".to_owned(),
        };
        let burn_height = self.burn.first().map_or(0, |(h, _)| *h);
        let burn_term = terms
            .term_of(burn_height)
            .map_or("premine".to_owned(), |t| format!("term {t}"));
        if meshed_at.is_some() {
            return format!(
                "[{:>5.1}s] meshed | burn {burn_height} ({burn_term}) on {}/{n}",
                elapsed.as_secs_f64(),
                self.burn_tip_nodes(),
            );
        }
        format!(
            "[{:>5.1}s] peers avg {:.1} min {} | mesh ok {meshed}/{n} | hear all {hearing_all}/{n} | heartbeats {} sent {} received | burn {burn_height} ({burn_term}) on {}/{n} | {state}",
            elapsed.as_secs_f64(),
            self.peers.iter().sum::<usize>() as f64 / n as f64,
            self.peers.iter().copied().min().unwrap_or(0),
            self.sent,
            self.received,
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
        let mut text = format!(
            "testnet summary\n  nodes              {}\n  ran                {:.1} s{}\n  mesh               {mesh}\n  peers per node     min {} avg {:.1}\n  heartbeat mesh     min {}\n  heartbeats         {} sent, {} received\n  burnchain          {} blocks mined, {} of {} nodes at the tip, {} reorgs\n  memory             {:.1} MiB total, {:.2} MiB per node\n  bytes sent / node  {}\n",
            self.nodes,
            self.duration_s,
            if self.interrupted {
                " (interrupted)"
            } else if self.timed_out {
                " (time limit)"
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
        );
        text.push_str(
            "  term  done  key ms  attempts  blocks  transfers  signer shares  announced  up to  shares by node\n",
        );
        for t in &self.terms {
            text.push_str(&format!(
                "  {:>4}  {:>4}  {:>6}  {:>8}  {:>6}  {:>9}  {:>13}  {:>9}  {:>5}  {:?}{}\n",
                t.term,
                if t.completed { "yes" } else { "no" },
                t.dkg_ms.map_or("-".to_owned(), |ms| ms.to_string()),
                t.dkg_attempts,
                t.blocks,
                t.transactions,
                t.last_block_signer_shares,
                t.announcements,
                t.announced_height.map_or("-".to_owned(), |h| h.to_string()),
                t.shares,
                if t.excluded.is_empty() {
                    String::new()
                } else {
                    format!(" (left out: nodes {:?})", t.excluded)
                },
            ));
        }
        text.push_str(&format!(
            "  terms completed    {} of {}\n  announcements      {} confirmed, final up to height {}\n  blocks             {} ({} transfers, {:.0} per second), last signed by {} shares\n  leaders deposed    {}{}\n  tips agree         {}",
            self.terms_completed,
            self.terms.len(),
            self.announcements_confirmed,
            self.final_height.map_or("-".to_owned(), |h| h.to_string()),
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
        ));
        text.push_str(&format!(
            "\n  follower           the miner's node, producing nothing: keys of terms {:?} accepted from certificates, height {} ({}), {} blocks and {} certificates refused",
            self.follower.terms_certified,
            self.follower.height,
            if self.follower.agrees {
                "the producers' tip"
            } else {
                "NOT the producers' tip"
            },
            self.follower.refused_blocks,
            self.follower.refused_certificates,
        ));
        if let Some(p) = &self.partition {
            text.push_str(&format!(
                "\n  partition          node {} cut off for {:.1} s while {} blocks were made; {}",
                p.node,
                p.cut_off_s,
                p.blocks_missed,
                p.caught_up_ms
                    .map_or("it did NOT catch up".to_owned(), |ms| format!(
                        "caught up {ms} ms after it was let back"
                    )),
            ));
        }
        if let Some(b) = &self.byzantine {
            text.push_str(&format!(
                "\n  byzantine          node {}: {} invalid proposals, {} signed; deposed for misbehaviour by {} producers; named {} times for invalid signature shares; {} blocks made without it",
                b.node,
                b.invalid_proposals,
                b.invalid_proposals_signed,
                b.deposed_by,
                b.named_cheater,
                b.blocks_after,
            ));
        }
        text
    }
}
