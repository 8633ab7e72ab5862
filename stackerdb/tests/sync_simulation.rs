//! A seeded simulation of Stacker DB sync: 20 replicas on their own sled stores, a
//! network that loses, duplicates and reorders messages, a partition healed later,
//! writers writing throughout and one writer equivocating. Whatever the seed, once
//! writes stop and the partition heals, every replica must hold byte-identical state.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{sync::Arc, time::Duration};

use bitcoin::secp256k1::{SECP256K1, SecretKey};
use tenure_stackerdb::{
    Chunk, DbId, Replica, SlotWriters, Store, TermSchedule,
    sync::{DbSync, SyncConfig, SyncOutput, message},
};
use tenure_tests::sim::{Faults, SimEvent, SimNet, Window};

const NET: &str = "sim";
const REPLICAS: usize = 20;
const SLOTS: u32 = 8;
const EQUIVOCATOR_SLOT: u32 = 3;
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// How often every replica's timers run.
const TICK: Duration = Duration::from_millis(100);

struct Node {
    replica: Replica,
    sync: DbSync<usize>,
    _dir: tempfile::TempDir,
}

struct Sim {
    net: SimNet<usize, Vec<u8>>,
    nodes: Vec<Node>,
    neighbours: Vec<Vec<usize>>,
}

/// 10% loss, 5% duplication, delays of 1–80 ms; during `partition`, the first half of
/// the replicas is cut off from the rest.
fn faults(partition: Option<Window>) -> Faults<usize> {
    Faults {
        loss: 0.10,
        duplicate: 0.05,
        delay_ms: (1, 80),
        partitions: partition
            .map(|window| (window, (0..REPLICAS / 2).collect()))
            .into_iter()
            .collect(),
        offline: Vec::new(),
    }
}

fn db() -> DbId {
    DbId::new("sim.db").unwrap()
}

fn writer(slot: u32) -> SecretKey {
    SecretKey::from_slice(&[slot as u8 + 1; 32]).unwrap()
}

impl Sim {
    fn new(seed: u64, faults: Faults<usize>) -> Sim {
        Sim::with_terms(seed, faults, 1_000_000)
    }

    fn with_terms(seed: u64, faults: Faults<usize>, term_length: u64) -> Sim {
        let owners = (0..SLOTS)
            .map(|s| Some(writer(s).public_key(SECP256K1)))
            .collect();
        let policy = Arc::new(SlotWriters::new(
            owners,
            1024,
            TermSchedule {
                first_burn_height: 0,
                term_length,
            },
        ));
        let mut net = SimNet::new(seed, TICK, faults);
        let nodes = (0..REPLICAS)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let replica =
                    Replica::open(NET, db(), policy.clone(), Store::open(dir.path()).unwrap())
                        .unwrap();
                Node {
                    replica,
                    sync: DbSync::new(db(), SyncConfig::default()),
                    _dir: dir,
                }
            })
            .collect();
        // A ring, so the graph is connected, plus two random chords per replica.
        let mut neighbours = vec![Vec::new(); REPLICAS];
        let link = |a: usize, b: usize, n: &mut Vec<Vec<usize>>| {
            if a != b && !n[a].contains(&b) {
                n[a].push(b);
                n[b].push(a);
            }
        };
        for i in 0..REPLICAS {
            link(i, (i + 1) % REPLICAS, &mut neighbours);
            for _ in 0..2 {
                let j = net.rng.below(REPLICAS as u64) as usize;
                link(i, j, &mut neighbours);
            }
        }
        let mut sim = Sim {
            net,
            nodes,
            neighbours,
        };
        for i in 0..REPLICAS {
            for j in sim.neighbours[i].clone() {
                sim.nodes[i].sync.add_peer(j);
            }
        }
        sim
    }

    fn send(&mut self, from: usize, to: usize, msg: &message::SyncMessage) {
        let bytes = message::encode(msg).unwrap();
        self.net.send(from, to, bytes);
    }

    fn apply(&mut self, node: usize, outputs: Vec<SyncOutput<usize>>) {
        for output in outputs {
            match output {
                SyncOutput::Send { to, msg } => self.send(node, to, &msg),
                SyncOutput::Announce(msg) => {
                    // Gossip reaches every replica, each copy subject to the faults.
                    for to in (0..REPLICAS).filter(|to| *to != node) {
                        self.send(node, to, &msg);
                    }
                }
                SyncOutput::Penalise { peer, reason } => {
                    panic!("honest replica {peer} penalised by {node}: {reason}")
                }
                SyncOutput::StorageFailed(e) => panic!("storage failed at {node}: {e}"),
                SyncOutput::Accepted { .. } => {}
            }
        }
    }

    /// A client writes `chunk` at replica `node`.
    fn client_write(&mut self, node: usize, chunk: Chunk) {
        let slot = chunk.slot;
        if self.nodes[node].replica.write(chunk).is_ok() {
            let now = self.net.now();
            let n = &mut self.nodes[node];
            let out = n.sync.on_local_write(&n.replica, slot, now);
            self.apply(node, out);
        }
    }

    /// Replica `node` sees burn block `height`.
    fn burn_block(&mut self, node: usize, height: u64) {
        let now = self.net.now();
        let n = &mut self.nodes[node];
        n.replica.on_burn_block(height).unwrap();
        let out = n.sync.on_garbage_collected(&n.replica, now);
        self.apply(node, out);
    }

    /// Runs the network until `until_ms`, ticking every replica every 100 ms.
    fn run_until(&mut self, until_ms: u64) {
        while let Some(event) = self.net.next_event(until_ms) {
            let now = self.net.now();
            match event {
                SimEvent::Deliver { from, to, msg } => {
                    let msg = message::decode(&msg, MAX_MESSAGE).unwrap();
                    let node = &mut self.nodes[to];
                    let out = node.sync.handle(&mut node.replica, from, msg, now);
                    self.apply(to, out);
                }
                SimEvent::Tick => {
                    for i in 0..REPLICAS {
                        let node = &mut self.nodes[i];
                        let out = node.sync.on_tick(&node.replica, now);
                        self.apply(i, out);
                    }
                }
            }
        }
    }

    fn assert_identical(&self, seed: u64) {
        let reference = &self.nodes[0].replica;
        for (i, node) in self.nodes.iter().enumerate() {
            assert_eq!(
                node.replica.clock(),
                reference.clock(),
                "seed {seed}: replica {i} has another clock"
            );
            for slot in 0..SLOTS {
                assert_eq!(
                    node.replica.read(slot),
                    reference.read(slot),
                    "seed {seed}: replica {i} differs in slot {slot}"
                );
            }
        }
    }
}

fn run(seed: u64) {
    let mut sim = Sim::new(
        seed,
        faults(Some(Window {
            from: 2_000,
            until: 12_000,
        })),
    );
    // Writes over the first ten seconds, during the partition, at random replicas.
    let mut writes: Vec<(u64, usize, Chunk)> = Vec::new();
    for slot in 0..SLOTS {
        for version in 1..=4u64 {
            let at = sim.net.rng.below(10_000);
            let node = sim.net.rng.below(REPLICAS as u64) as usize;
            let data = format!("slot {slot} v{version}").into_bytes();
            writes.push((
                at,
                node,
                Chunk::sign(NET, &db(), slot, version, data, &writer(slot)),
            ));
            if slot == EQUIVOCATOR_SLOT {
                // The equivocator shows another replica different data at the same version.
                let other = sim.net.rng.below(REPLICAS as u64) as usize;
                let twin = format!("slot {slot} v{version} (equivocated)").into_bytes();
                writes.push((
                    at,
                    other,
                    Chunk::sign(NET, &db(), slot, version, twin, &writer(slot)),
                ));
            }
        }
    }
    writes.sort_by_key(|(at, _, _)| *at);
    for (at, node, chunk) in writes {
        sim.run_until(at);
        sim.client_write(node, chunk);
    }
    // The partition heals at 12 s; give anti-entropy time to repair everything.
    sim.run_until(40_000);
    sim.assert_identical(seed);

    // Every slot ends at its last version, and the equivocation was noticed somewhere.
    for slot in 0..SLOTS {
        assert_eq!(sim.nodes[0].replica.clock().slots[slot as usize].version, 4);
    }
    let evidence: usize = sim
        .nodes
        .iter()
        .map(|n| n.replica.evidence().unwrap().len())
        .sum();
    assert!(
        evidence >= 2,
        "seed {seed}: no replica kept equivocation evidence"
    );
    assert!(sim.net.stats.lost > 0 && sim.net.stats.delivered > 0);
}

#[test]
fn twenty_replicas_converge_through_loss_reordering_duplication_a_partition_and_an_equivocator() {
    for seed in [1, 2, 3, 4, 5] {
        run(seed);
    }
}

/// Garbage collection at a term start reaches the replicas over three seconds, while
/// anti-entropy runs and the new term's writers start writing at replicas that have
/// collected. No replica may hand a collected chunk back to one that has collected.
fn gc_run(seed: u64) {
    let mut sim = Sim::with_terms(seed, faults(None), 100);
    for slot in 0..SLOTS {
        for version in 1..=3u64 {
            let at = sim.net.rng.below(3_000);
            let node = sim.net.rng.below(REPLICAS as u64) as usize;
            let data = format!("term 0 slot {slot} v{version}").into_bytes();
            sim.run_until(at.max(sim.net.now_ms()));
            sim.client_write(
                node,
                Chunk::sign(NET, &db(), slot, version, data, &writer(slot)),
            );
        }
    }
    sim.run_until(10_000);
    sim.assert_identical(seed);

    // Burn block 100 starts term 1; each replica sees it at some point in 3 s.
    let mut seen_at: Vec<(u64, usize)> = (0..REPLICAS)
        .map(|node| (10_000 + sim.net.rng.below(3_000), node))
        .collect();
    seen_at.sort();
    let mut collected = Vec::new();
    for (at, node) in seen_at {
        sim.run_until(at);
        sim.burn_block(node, 100);
        collected.push(node);
        // The new term's writers write at replicas that have collected.
        let slot = sim.net.rng.below(SLOTS as u64) as u32;
        let data = format!("term 1 slot {slot}").into_bytes();
        sim.client_write(node, Chunk::sign(NET, &db(), slot, 1, data, &writer(slot)));
    }
    sim.run_until(40_000);
    sim.assert_identical(seed);
    for slot in 0..SLOTS {
        let value = sim.nodes[0].replica.read(slot);
        if let Some(chunk) = value.chunk {
            assert!(
                chunk.data.starts_with(b"term 1") && chunk.version == 1,
                "seed {seed}: slot {slot} holds collected data again"
            );
        }
    }
    assert!(sim.nodes.iter().all(|n| n.replica.gc_epoch() == 100));
}

#[test]
fn garbage_collection_at_a_term_start_never_resurrects_collected_chunks() {
    for seed in [1, 2, 3, 4, 5] {
        gc_run(seed);
    }
}

#[test]
fn a_peer_flooding_sync_messages_is_cut_off_and_penalised_while_others_sync_on() {
    let mut sim = Sim::new(9, faults(None));
    let now = sim.net.now();
    // Replica 0 holds a chunk, so a digest from an empty replica differs from its own.
    let chunk = Chunk::sign(NET, &db(), 2, 1, b"held".to_vec(), &writer(2));
    sim.nodes[0].replica.write(chunk).unwrap();
    let stale = sim.nodes[1].replica.clock().range_digest();
    let digest =
        || message::SyncMessage::new(db(), 0, message::SyncBody::ClockDigest(stale.clone()));
    // Peer 1 sends ten thousand digests in one instant: each one cost replica 0 a
    // clock comparison and an answer.
    let mut answered = 0;
    let mut penalties = 0;
    for _ in 0..10_000 {
        let msg = digest();
        let node = &mut sim.nodes[0];
        for output in node.sync.handle(&mut node.replica, 1, msg, now) {
            match output {
                SyncOutput::Send { .. } => answered += 1,
                SyncOutput::Penalise { peer, .. } => {
                    assert_eq!(peer, 1);
                    penalties += 1;
                }
                _ => {}
            }
        }
    }
    let budget = 2.0 * SyncConfig::default().inbound_work_per_second;
    assert!(answered as f64 <= budget, "{answered} answered");
    assert_eq!(penalties, 1, "one penalty per second of flooding");
    // Another peer's digest is still answered at once.
    let msg = digest();
    let node = &mut sim.nodes[0];
    let out = node.sync.handle(&mut node.replica, 2, msg, now);
    assert!(
        out.iter()
            .any(|o| matches!(o, SyncOutput::Send { to: 2, .. })),
        "{out:?}"
    );
}
