//! `tenure bench stackerdb-write` and `tenure bench stackerdb-replicate`.
//!
//! Both run real nodes in this process: the overlay on loopback, replicas on sled files
//! in a temporary directory, and the node's own loop ([`crate::run::serve`]). Writes go
//! through the [`StackerDbHandle`] the HTTP API uses (after JSON decoding), so each one
//! is recovered, checked, stored and flushed before it counts.

use std::time::{Duration, Instant};

use anyhow::Context;
use bitcoin::secp256k1::{SECP256K1, SecretKey};
use serde::Serialize;
use tenure_overlay::{Multiaddr, NetworkId, OverlayHandle, Topic};
use tenure_stackerdb::{Chunk, DbId, SlotWriters, TermSchedule};
use tokio::sync::watch;

use super::{ms, percentile};
use tenure_overlay::localnet;

use crate::{
    config::StackerDbConfig,
    run::{Beacons, serve},
    stackerdb::{StackerDbHandle, StackerDbs},
};

/// Slots of the benchmark DB: the producer DB's size.
const SLOTS: u32 = 300;

/// Bytes per chunk.
const CHUNK_BYTES: usize = 4096;

/// Clients writing at once in the write benchmark.
const WRITERS: usize = 32;

/// How long a new network runs before replication is measured.
const SETTLE: Duration = Duration::from_secs(3);

/// How long an idle network's traffic is measured before the writes.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// How long a write may take to reach every replica before it counts as lost.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(10);

/// One in-process node with its Stacker DBs.
struct DbNode {
    overlay: OverlayHandle,
    dbs: StackerDbHandle,
}

fn db_config(writer: &SecretKey) -> anyhow::Result<StackerDbConfig> {
    let key = writer.public_key(SECP256K1);
    let never = TermSchedule {
        first_burn_height: u64::MAX,
        term_length: 0,
    };
    Ok(StackerDbConfig {
        id: DbId::new("bench.db")?,
        policy: SlotWriters::new(vec![Some(key); SLOTS as usize], CHUNK_BYTES, never),
    })
}

/// Starts one node bootstrapping from `bootstrap`, replicating `config`'s DB.
async fn start_node(
    network: &NetworkId,
    bootstrap: &[Multiaddr],
    config: &StackerDbConfig,
    dir: &std::path::Path,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<DbNode> {
    let mut overlay_config = localnet::loopback_config(network, bootstrap);
    overlay_config.stacker_dbs = vec![config.id.as_str().to_owned()];
    let (overlay, events) =
        tenure_overlay::spawn(overlay_config, tenure_overlay::NodeKey::generate()).await?;
    let dbs = StackerDbs::attach(
        &overlay,
        network.as_str(),
        dir,
        std::slice::from_ref(config),
    )
    .await?;
    let (handle, commands) = StackerDbHandle::channel(1024);
    let mut stop = stop.clone();
    tokio::spawn(serve(
        overlay.clone(),
        events,
        dbs,
        commands,
        Beacons::Off,
        None,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    Ok(DbNode {
        overlay,
        dbs: handle,
    })
}

fn sign_all(network: &NetworkId, db: &DbId, writer: &SecretKey, count: usize) -> Vec<Chunk> {
    (0..count)
        .map(|n| {
            let slot = (n % SLOTS as usize) as u32;
            let version = (n / SLOTS as usize) as u64 + 1;
            // Distinct data per write: its number, then filler.
            let mut data = (n as u64).to_be_bytes().to_vec();
            data.resize(CHUNK_BYTES, (n % 251) as u8);
            Chunk::sign(network.as_str(), db, slot, version, data, writer)
        })
        .collect()
}

/// The write benchmark's figures.
#[derive(Debug, Serialize)]
pub struct WriteReport {
    /// Writes accepted.
    pub writes: usize,
    /// Bytes per chunk.
    pub chunk_bytes: usize,
    /// Clients writing at once.
    pub concurrent_writers: usize,
    /// Wall time of all writes.
    pub elapsed_ms: f64,
    /// Durable writes per second.
    pub writes_per_s: f64,
}

/// Runs the write benchmark.
pub async fn write(writes: usize) -> anyhow::Result<WriteReport> {
    anyhow::ensure!(writes >= 1, "write at least once");
    let dir = tempfile::tempdir()?;
    let network = NetworkId::new("bench-stackerdb")?;
    let writer = SecretKey::new(&mut bitcoin::secp256k1::rand::thread_rng());
    let config = db_config(&writer)?;
    let (stop_tx, stop) = watch::channel(false);
    let node = start_node(&network, &[], &config, dir.path(), &stop).await?;
    let chunks = sign_all(&network, &config.id, &writer, writes);

    // Each slot belongs to one client, so its versions arrive in order.
    let mut per_client: Vec<Vec<Chunk>> = vec![Vec::new(); WRITERS];
    for chunk in chunks {
        if let Some(list) = per_client.get_mut(chunk.slot as usize % WRITERS) {
            list.push(chunk);
        }
    }
    let started = Instant::now();
    let tasks: Vec<_> = per_client
        .into_iter()
        .map(|list| {
            let (dbs, db) = (node.dbs.clone(), config.id.clone());
            tokio::spawn(async move {
                let mut accepted = 0usize;
                for chunk in list {
                    if dbs.write(db.clone(), chunk).await.is_ok() {
                        accepted += 1;
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await?;
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    node.overlay.shutdown().await;
    Ok(WriteReport {
        writes: accepted,
        chunk_bytes: CHUNK_BYTES,
        concurrent_writers: WRITERS,
        elapsed_ms: ms(elapsed),
        writes_per_s: accepted as f64 / elapsed.as_secs_f64(),
    })
}

/// The replication benchmark's figures.
#[derive(Debug, Serialize)]
pub struct ReplicateReport {
    /// Replicas.
    pub nodes: usize,
    /// Writes measured.
    pub writes: usize,
    /// Writes that reached every replica within the deadline.
    pub reached_all: usize,
    /// Median time from an acknowledged write to every replica holding it.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
    /// Time for a fresh node to catch up a full 300 × 4 KiB DB.
    pub catch_up_ms: f64,
    /// Transport bytes sent by all nodes per byte written, while writes replicated
    /// (at least nodes - 1: every other replica must receive each byte).
    pub replication_bytes_per_byte_written: f64,
    /// The same per receiving replica: traffic per byte each replica had to receive.
    pub bytes_per_replica_per_byte_written: f64,
    /// What the idle network sent per second just before the writes (all nodes),
    /// for scale: it is included in the replication figures.
    pub idle_bytes_per_s: f64,
}

/// Runs the replication benchmark.
pub async fn replicate(nodes: usize, writes: usize) -> anyhow::Result<ReplicateReport> {
    anyhow::ensure!(nodes >= 2, "replication needs at least 2 nodes");
    anyhow::ensure!(
        (1..=SLOTS as usize).contains(&writes),
        "writes must be 1 to {SLOTS}"
    );
    let dir = tempfile::tempdir()?;
    let network = NetworkId::new("bench-replicate")?;
    let writer = SecretKey::new(&mut bitcoin::secp256k1::rand::thread_rng());
    let config = db_config(&writer)?;
    let (stop_tx, stop) = watch::channel(false);
    let mut replicas = Vec::with_capacity(nodes);
    let mut bootstrap = Vec::new();
    for i in 0..nodes {
        let node = start_node(
            &network,
            &bootstrap,
            &config,
            &dir.path().join(i.to_string()),
            &stop,
        )
        .await?;
        if i == 0 {
            bootstrap = node.overlay.listen_addrs().to_vec();
        }
        replicas.push(node);
    }
    let overlays: Vec<OverlayHandle> = replicas.iter().map(|n| n.overlay.clone()).collect();
    let wanted = localnet::reachable_mesh(
        nodes,
        &tenure_overlay::OverlayConfig::loopback(network.clone()),
    );
    localnet::wait_for_mesh(
        &overlays,
        Topic::StackerDbChunks,
        wanted,
        Duration::from_secs(30),
    )
    .await?;
    let writer_node = replicas.first().context("no nodes")?;
    let chunks = sign_all(&network, &config.id, &writer, SLOTS as usize);

    // A network seconds old still runs Kademlia's bootstrap queries, identify and the
    // first clock exchanges (about 3 MB/s across 20 nodes here): let it settle, then
    // note what an idle network sends, so the replication figure is not its start-up.
    tokio::time::sleep(SETTLE).await;
    let idle_before = bytes_sent(&overlays);
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_bytes_per_s = bytes_sent(&overlays).saturating_sub(idle_before) as f64
        / idle_started.elapsed().as_secs_f64();

    // Phase 1: one write at a time, each to a fresh slot; time until all hold it.
    let bytes_before = bytes_sent(&overlays);
    let mut latencies = Vec::with_capacity(writes);
    for chunk in chunks.iter().take(writes) {
        writer_node
            .dbs
            .write(config.id.clone(), chunk.clone())
            .await?;
        let acknowledged = Instant::now();
        if wait_all_hold(&replicas, &config.id, chunk.slot, chunk.version).await {
            latencies.push(acknowledged.elapsed());
        }
    }
    // Let the last announcements and digests settle before counting bytes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replication_bytes = bytes_sent(&overlays).saturating_sub(bytes_before);

    // Phase 2: fill the DB, then time a fresh node catching up from nothing.
    for chunk in chunks.iter().skip(writes) {
        writer_node
            .dbs
            .write(config.id.clone(), chunk.clone())
            .await?;
    }
    let full = writer_node
        .dbs
        .clock(config.id.clone())
        .await
        .context("writer lost its DB")?;
    // The fresh node joins a settled network: every replica holds the full DB.
    for chunk in chunks.iter().skip(writes) {
        wait_all_hold(&replicas, &config.id, chunk.slot, chunk.version).await;
    }
    let started = Instant::now();
    let fresh = start_node(
        &network,
        &bootstrap,
        &config,
        &dir.path().join("fresh"),
        &stop,
    )
    .await?;
    let deadline = started + Duration::from_secs(60);
    let caught_up = loop {
        if fresh.dbs.clock(config.id.clone()).await.as_ref() == Some(&full) {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let _ = stop_tx.send(true);
    for overlay in overlays.iter().chain(std::iter::once(&fresh.overlay)) {
        overlay.shutdown().await;
    }
    let figure = |p| percentile(&latencies, p).map_or(f64::NAN, ms);
    Ok(ReplicateReport {
        nodes,
        writes,
        reached_all: latencies.len(),
        p50_ms: figure(50.0),
        p99_ms: figure(99.0),
        catch_up_ms: caught_up.map_or(f64::NAN, ms),
        replication_bytes_per_byte_written: replication_bytes as f64
            / (writes * CHUNK_BYTES) as f64,
        bytes_per_replica_per_byte_written: replication_bytes as f64
            / (writes * CHUNK_BYTES * (nodes - 1)) as f64,
        idle_bytes_per_s,
    })
}

async fn wait_all_hold(replicas: &[DbNode], db: &DbId, slot: u32, version: u64) -> bool {
    let deadline = Instant::now() + REPLICATION_DEADLINE;
    let mut pending: Vec<&DbNode> = replicas.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::with_capacity(pending.len());
        for node in pending {
            let held = node
                .dbs
                .clock(db.clone())
                .await
                .and_then(|c| c.slots.get(slot as usize).map(|e| e.version))
                .unwrap_or(0);
            if held < version {
                still.push(node);
            }
        }
        pending = still;
        if Instant::now() > deadline {
            return false;
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    true
}

fn bytes_sent(overlays: &[OverlayHandle]) -> u64 {
    overlays
        .iter()
        .map(|o| o.metrics().snapshot().transport_bytes_out)
        .sum()
}

impl WriteReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "stackerdb-write: {} signed {}-byte chunks, {} writers at once\n  {:.0} durable writes/s ({:.0} ms)",
            self.writes,
            self.chunk_bytes,
            self.concurrent_writers,
            self.writes_per_s,
            self.elapsed_ms
        )
    }
}

impl ReplicateReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "stackerdb-replicate: {} replicas, {} writes ({} reached all)\n  write to all replicas  p50 {:.1} ms  p99 {:.1} ms\n  fresh node catch-up    {:.0} ms for 300 x 4 KiB\n  replication traffic    {:.2} bytes sent per byte written ({:.2} per receiving replica; idle network {:.0} KB/s)",
            self.nodes,
            self.writes,
            self.reached_all,
            self.p50_ms,
            self.p99_ms,
            self.catch_up_ms,
            self.replication_bytes_per_byte_written,
            self.bytes_per_replica_per_byte_written,
            self.idle_bytes_per_s / 1000.0
        )
    }
}
