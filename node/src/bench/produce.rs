//! `tenure bench produce`: block production by a producer set of loopback nodes in one
//! process, the testnet's set ([`crate::testnet::producers`]) under a measured load.
//!
//! 1. The producers make the term's key and produce the term's first block (the
//!    coinbase funds their accounts); each producer then funds 20 sender accounts.
//! 2. Transfers from the senders are submitted to every producer at `--rate` a second
//!    for `--seconds`. A transfer's latency is from its submission to the moment the
//!    last producer applied a block holding it (`p50_ms`, `p99_ms`); `tx_per_s` is the
//!    transfers included at every producer over the time from the first submission
//!    to the last inclusion.
//! 3. The leader's node is shut down; `failover_ms` is the time until another producer
//!    applies the next block.
//!
//! Memory is the process's resident set added per producer (`rss_mib_per_node`).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use anyhow::Context;
use bitcoin::secp256k1::{Keypair, SECP256K1};
use serde::Serialize;
use tenure_chain::block::{AccountId, Hash, Transfer, Tx};
use tenure_overlay::{NetworkId, OverlayHandle, localnet};

use super::{ms, percentile};
use crate::{
    process_stats::{mib, rss},
    testnet::producers::{self, NETWORK, ProducerSet},
};

/// Sender accounts each producer funds.
const SENDERS_PER_PRODUCER: usize = 20;

/// How long inclusion may take after the last submission.
const SETTLE: Duration = Duration::from_secs(10);

/// The production benchmark's figures.
#[derive(Debug, Serialize)]
pub struct ProduceReport {
    /// Producers.
    pub producers: usize,
    /// Transfers submitted per second.
    pub rate_per_s: u64,
    /// Transfers submitted.
    pub submitted: usize,
    /// Transfers included at every producer.
    pub included: usize,
    /// Submission to inclusion at every producer, median.
    pub p50_ms: f64,
    /// Submission to inclusion at every producer, 99th percentile.
    pub p99_ms: f64,
    /// Transfers included at every producer per second.
    pub tx_per_s: f64,
    /// Blocks produced during the measurement.
    pub blocks: u64,
    /// The term's DKG.
    pub dkg_ms: f64,
    /// From the leader's node shutting down to the next block at another producer.
    pub failover_ms: Option<f64>,
    /// Resident memory added per producer node.
    pub rss_mib_per_node: f64,
}

/// Runs the benchmark.
pub async fn run(producers: usize, rate: u64, seconds: u64) -> anyhow::Result<ProduceReport> {
    anyhow::ensure!(producers >= 4, "at least 4 producers");
    anyhow::ensure!(rate >= 1 && seconds >= 1, "a rate and a duration");
    let baseline = rss();
    let network = NetworkId::new("bench-produce")?;
    let nodes = localnet::start(producers, &network, |_| {}).await?;
    let (handles, events) = producers::producers_only(nodes);
    let set = ProducerSet::start(&handles, events).await?;
    let dkg_ms = ms(set.dkg);
    wait_for("the term's first block", Duration::from_secs(60), || {
        set.statuses().iter().all(|s| s.height >= 1)
    })
    .await?;

    // Funding: each producer pays its senders.
    let senders: Vec<Keypair> = (0..producers * SENDERS_PER_PRODUCER)
        .map(|_| Keypair::new(SECP256K1, &mut bitcoin::secp256k1::rand::thread_rng()))
        .collect();
    for (i, producer) in set.keys.iter().enumerate() {
        for (j, sender) in senders
            .iter()
            .skip(i * SENDERS_PER_PRODUCER)
            .take(SENDERS_PER_PRODUCER)
            .enumerate()
        {
            let to = AccountId::of(&sender.x_only_public_key().0);
            submit(
                &set,
                Transfer::sign(NETWORK, producer, to, 50_000, 1, j as u64),
            );
        }
    }
    let accounts: Vec<AccountId> = senders
        .iter()
        .map(|k| AccountId::of(&k.x_only_public_key().0))
        .collect();
    wait_for("the senders' funding", Duration::from_secs(60), || {
        set.running().iter().all(|p| {
            let state = p.state();
            accounts.iter().all(|a| state.accounts.contains_key(a))
        })
    })
    .await?;

    // The measured load.
    let mut receivers: Vec<_> = set.running().iter().map(|p| p.applied()).collect();
    let height_before = set.statuses().iter().map(|s| s.height).max().unwrap_or(0);
    let mut submitted: HashMap<Hash, Instant> = HashMap::new();
    let mut nonces = vec![0u64; senders.len()];
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    let mut next_sender = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        for _ in 0..per_tick {
            let index = next_sender % senders.len();
            next_sender += 1;
            let (Some(key), Some(to), Some(nonce)) = (
                senders.get(index),
                accounts.get((index + 1) % accounts.len()),
                nonces.get_mut(index),
            ) else {
                continue;
            };
            let transfer = Transfer::sign(NETWORK, key, *to, 10, 1, *nonce);
            *nonce += 1;
            submitted.insert(Tx::Transfer(transfer.clone()).id(), Instant::now());
            submit(&set, transfer);
        }
    }
    // Inclusion at every producer.
    let mut seen: HashMap<Hash, (usize, Instant)> = HashMap::new();
    let mut latencies = Vec::new();
    let mut last_inclusion = started;
    let deadline = Instant::now() + SETTLE;
    while latencies.len() < submitted.len() && Instant::now() < deadline {
        for receiver in &mut receivers {
            while let Ok(block) = receiver.try_recv() {
                for id in block.txs {
                    let Some(sent) = submitted.get(&id) else {
                        continue;
                    };
                    let entry = seen.entry(id).or_insert((0, block.at));
                    entry.0 += 1;
                    entry.1 = entry.1.max(block.at);
                    if entry.0 == producers {
                        latencies.push(entry.1.saturating_duration_since(*sent));
                        last_inclusion = last_inclusion.max(entry.1);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let blocks = set
        .statuses()
        .iter()
        .map(|s| s.height)
        .max()
        .unwrap_or(0)
        .saturating_sub(height_before);
    let end_rss = rss();

    // Failover: the leader's node goes away.
    let failover_ms = failover(&set, &handles).await;
    localnet::shutdown(&handles).await;
    Ok(ProduceReport {
        producers,
        rate_per_s: rate,
        submitted: submitted.len(),
        included: latencies.len(),
        p50_ms: percentile(&latencies, 50.0).map_or(f64::NAN, ms),
        p99_ms: percentile(&latencies, 99.0).map_or(f64::NAN, ms),
        tx_per_s: latencies.len() as f64
            / last_inclusion
                .saturating_duration_since(started)
                .as_secs_f64()
                .max(1e-3),
        blocks,
        dkg_ms,
        failover_ms,
        rss_mib_per_node: mib(end_rss.current.saturating_sub(baseline.current)) / producers as f64,
    })
}

/// Shuts the leader's node down and times the next block at the others.
async fn failover(set: &ProducerSet, handles: &[OverlayHandle]) -> Option<f64> {
    let statuses = set.statuses();
    let leader = statuses.iter().find_map(|s| s.leader)?;
    let index = set.ids.iter().position(|id| *id == leader)?;
    let others: BTreeMap<usize, u64> = statuses
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(i, s)| (i, s.height))
        .collect();
    let top = others.values().copied().max()?;
    handles.get(index)?.shutdown().await;
    let crashed = Instant::now();
    let deadline = crashed + Duration::from_secs(30);
    while Instant::now() < deadline {
        let moved = set
            .statuses()
            .iter()
            .enumerate()
            .any(|(i, s)| i != index && s.height > top);
        if moved {
            return Some(ms(crashed.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn submit(set: &ProducerSet, transfer: Transfer) {
    for producer in &set.running() {
        producer.submit(transfer.clone());
    }
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return Err(anyhow::anyhow!("timed out waiting for {what}")).context("bench produce");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl ProduceReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "bench produce: {} producers, {} transfers/s submitted\n  included   {} of {} at every producer, {:.0} per second, in {} blocks\n  latency    p50 {:.1} ms, p99 {:.1} ms (submission to a block at every producer)\n  failover   {}\n  term key   {:.0} ms\n  memory     {:.2} MiB per producer node",
            self.producers,
            self.rate_per_s,
            self.included,
            self.submitted,
            self.tx_per_s,
            self.blocks,
            self.p50_ms,
            self.p99_ms,
            self.failover_ms
                .map_or("no block within 30 s".to_owned(), |f| format!(
                    "{f:.0} ms to the next block"
                )),
            self.dkg_ms,
            self.rss_mib_per_node,
        )
    }
}
