//! The node's Stacker DBs: replicas on sled, synced over the overlay.
//!
//! The node's loop owns [`StackerDbs`]. It feeds it overlay events (peers' hellos,
//! announcements gossiped on `stackerdb-chunks`, sync messages arriving as requests on
//! the `StackerDbSync` service, which are acknowledged at once and handled after) and
//! commands from the HTTP API through a [`StackerDbHandle`]. What the sync state machine
//! asks for goes back out through the overlay on spawned tasks, so the loop never waits
//! on the network.

pub mod api;
pub mod client;

use crate::logs;
use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

pub use bitcoin::secp256k1::PublicKey;
use tenure_overlay::{Hello, Misbehaviour, OverlayHandle, PeerId, Service, Topic, Verdict};
use tenure_stackerdb::{
    Chunk, DbId, Replica, SlotValue, SlotWriters, Store, VectorClock, WriteError,
    order::SlotVersion,
    sync::{DbSync, SyncConfig, SyncOutput, message},
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace, warn};

use crate::config::StackerDbConfig;

/// Each sync neighbour and the last clock it reported.
pub type PeerClocks = Vec<(PeerId, Option<VectorClock>)>;

/// The slots a burn block reset, per DB that collected garbage.
pub type Collected = Vec<(DbId, Vec<u32>)>;

/// Commands from the HTTP API (or a benchmark) to the loop that owns the replicas.
pub enum DbCommand {
    /// Apply a signed write.
    Write {
        /// The DB.
        db: DbId,
        /// The write.
        chunk: Chunk,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<SlotVersion, WriteFailure>>,
    },
    /// Read a slot.
    Read {
        /// The DB.
        db: DbId,
        /// The slot.
        slot: u32,
        /// `None` when the node does not replicate the DB.
        reply: oneshot::Sender<Option<SlotValue>>,
    },
    /// The DB's clock.
    Clock {
        /// The DB.
        db: DbId,
        /// `None` when the node does not replicate the DB.
        reply: oneshot::Sender<Option<VectorClock>>,
    },
    /// A burn block arrived: switch the DBs given new policies (a boot DB's at a
    /// term's start), then collect garbage where the policies say so, in one step so
    /// no sync message is judged between the two. Sent by the node's burnchain view
    /// ([`crate::producer_db`]).
    BurnBlock {
        /// Its height.
        height: u64,
        /// New policies, by DB.
        policies: Vec<(DbId, SlotWriters)>,
        /// The slots reset, per DB that collected.
        reply: oneshot::Sender<Result<Collected, String>>,
    },
    /// Each sync neighbour's last clock.
    PeerClocks {
        /// The DB.
        db: DbId,
        /// `None` when the node does not replicate the DB.
        reply: oneshot::Sender<Option<PeerClocks>>,
    },
}

/// Why a write was not applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    /// The node does not replicate this DB.
    #[error("this node does not replicate {0}")]
    UnknownDb(DbId),
    /// Refused or not stored.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The write was applied but the flush failed, so it is not acknowledged.
    #[error("the write could not be made durable: {0}")]
    NotDurable(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A cloneable handle for sending [`DbCommand`]s to the node's loop.
#[derive(Clone)]
pub struct StackerDbHandle(mpsc::Sender<DbCommand>);

impl StackerDbHandle {
    /// A handle and the receiver the loop drains.
    pub fn channel(capacity: usize) -> (StackerDbHandle, mpsc::Receiver<DbCommand>) {
        let (tx, rx) = mpsc::channel(capacity);
        (StackerDbHandle(tx), rx)
    }

    /// Applies a write; `Ok` once it is durable.
    pub async fn write(&self, db: DbId, chunk: Chunk) -> Result<SlotVersion, WriteFailure> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(DbCommand::Write { db, chunk, reply })
            .await
            .map_err(|_| WriteFailure::ShuttingDown)?;
        answer.await.unwrap_or(Err(WriteFailure::ShuttingDown))
    }

    /// Reads a slot.
    pub async fn read(&self, db: DbId, slot: u32) -> Option<SlotValue> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(DbCommand::Read { db, slot, reply })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// The DB's clock.
    pub async fn clock(&self, db: DbId) -> Option<VectorClock> {
        let (reply, answer) = oneshot::channel();
        self.0.send(DbCommand::Clock { db, reply }).await.ok()?;
        answer.await.ok().flatten()
    }

    /// Delivers a burn block (from the node's burnchain view): the DBs collect
    /// garbage where their policies say so. Returns the slots reset per DB.
    pub async fn burn_block(&self, height: u64) -> Result<Collected, String> {
        self.burn_block_with(height, Vec::new()).await
    }

    /// As [`StackerDbHandle::burn_block`], switching the DBs in `policies` to their
    /// new policies first ([`tenure_stackerdb::Replica::set_policy`]).
    pub async fn burn_block_with(
        &self,
        height: u64,
        policies: Vec<(DbId, SlotWriters)>,
    ) -> Result<Collected, String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(DbCommand::BurnBlock {
                height,
                policies,
                reply,
            })
            .await
            .map_err(|_| "the node is shutting down".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the node is shutting down".to_owned()))
    }

    /// Each neighbour's last clock.
    pub async fn peer_clocks(&self, db: DbId) -> Option<PeerClocks> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(DbCommand::PeerClocks { db, reply })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }
}

struct Db {
    replica: Replica,
    sync: DbSync<PeerId>,
}

/// Every Stacker DB the node replicates.
pub struct StackerDbs {
    dbs: BTreeMap<DbId, Db>,
    store: Store,
    overlay: OverlayHandle,
}

impl StackerDbs {
    /// What every node does before its loop starts: subscribes the overlay to
    /// announcements and opens the replicas under `dir`.
    pub async fn attach(
        overlay: &OverlayHandle,
        network: &str,
        dir: &Path,
        configs: &[StackerDbConfig],
    ) -> anyhow::Result<StackerDbs> {
        overlay
            .subscribe(Topic::StackerDbChunks, Arc::new(validate_announcement))
            .await?;
        StackerDbs::open(network, dir, configs, overlay.clone())
    }

    /// Opens the store under `dir` and a replica for each configured DB.
    pub fn open(
        network: &str,
        dir: &Path,
        configs: &[StackerDbConfig],
        overlay: OverlayHandle,
    ) -> anyhow::Result<StackerDbs> {
        let store = Store::open(dir)?;
        let mut dbs = BTreeMap::new();
        for config in configs {
            let replica = Replica::open(
                network,
                config.id.clone(),
                Arc::new(config.policy.clone()),
                store.clone(),
            )?;
            let sync = DbSync::new(config.id.clone(), SyncConfig::default());
            dbs.insert(config.id.clone(), Db { replica, sync });
        }
        Ok(StackerDbs {
            dbs,
            store,
            overlay,
        })
    }

    /// A peer completed its hello: it becomes a sync neighbour of the DBs we share,
    /// and gets our digest at once, so a node that just joined catches up without
    /// waiting for the next anti-entropy round.
    pub fn on_peer_connected(&mut self, peer: PeerId, hello: &Hello) {
        let mut outputs = Vec::new();
        for name in &hello.stacker_dbs {
            if let Some(db) = DbId::new(name.clone())
                .ok()
                .and_then(|id| self.dbs.get_mut(&id))
            {
                outputs.extend(db.sync.on_new_peer(&db.replica, peer));
            }
        }
        self.apply(outputs);
    }

    /// A peer left.
    pub fn on_peer_disconnected(&mut self, peer: &PeerId) {
        for db in self.dbs.values_mut() {
            db.sync.remove_peer(peer);
        }
    }

    /// An announcement arrived by gossip from `source`.
    pub fn on_announcement(&mut self, source: Option<PeerId>, data: &[u8], now: Instant) {
        let (Some(source), Ok(msg)) = (source, message::check_announcement(data)) else {
            return;
        };
        self.handle(source, msg, now);
    }

    /// A sync message arrived as a request from `peer` (already acknowledged).
    pub fn on_sync_request(&mut self, peer: PeerId, body: &[u8], now: Instant) {
        match message::decode(body, message::MAX_SYNC_MESSAGE_BYTES) {
            Ok(msg) => self.handle(peer, msg, now),
            Err(err) => self.report(peer, format!("sync message: {err}")),
        }
    }

    fn handle(&mut self, from: PeerId, msg: message::SyncMessage, now: Instant) {
        let Some(db) = self.dbs.get_mut(&msg.db) else {
            return;
        };
        trace!(target: logs::STACKERDB, me = %self.overlay.peer_id(), peer = %from, "received {}", msg.describe());
        let outputs = db.sync.handle(&mut db.replica, from, msg, now);
        self.apply(outputs);
    }

    /// Time passed: anti-entropy.
    pub fn on_tick(&mut self, now: Instant) {
        let mut outputs = Vec::new();
        for db in self.dbs.values_mut() {
            outputs.extend(db.sync.on_tick(&db.replica, now));
        }
        self.apply(outputs);
    }

    /// Executes a batch of commands with group commit: every write is applied, the
    /// store is flushed once, and only then are the writes acknowledged and announced.
    /// Reads run after the flush, so they never see a write that is not durable.
    pub fn execute_batch(&mut self, commands: Vec<DbCommand>) {
        let mut pending = Vec::new();
        let mut others = Vec::new();
        for command in commands {
            match command {
                DbCommand::Write { db, chunk, reply } => {
                    let slot = chunk.slot;
                    let outcome = match self.dbs.get_mut(&db) {
                        Some(d) => d.replica.write_unflushed(chunk).map_err(WriteFailure::from),
                        None => Err(WriteFailure::UnknownDb(db.clone())),
                    };
                    pending.push((reply, outcome, db, slot));
                }
                other => others.push(other),
            }
        }
        let flushed = if pending.iter().any(|(_, outcome, _, _)| outcome.is_ok()) {
            self.store.flush().map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        for (reply, outcome, db, slot) in pending {
            let outcome = match (outcome, &flushed) {
                (Ok(standing), Ok(())) => {
                    if let Some(d) = self.dbs.get_mut(&db) {
                        let outputs = d.sync.on_local_write(&d.replica, slot, Instant::now());
                        self.apply(outputs);
                    }
                    Ok(standing)
                }
                (Ok(_), Err(err)) => Err(WriteFailure::NotDurable(err.clone())),
                (Err(err), _) => Err(err),
            };
            let _ = reply.send(outcome);
        }
        for command in others {
            self.execute(command);
        }
    }

    /// Executes one command from the API.
    pub fn execute(&mut self, command: DbCommand) {
        match command {
            DbCommand::Write { db, chunk, reply } => {
                let outcome = self.write(db, chunk);
                let _ = reply.send(outcome);
            }
            DbCommand::Read { db, slot, reply } => {
                let _ = reply.send(self.dbs.get(&db).map(|d| d.replica.read(slot)));
            }
            DbCommand::Clock { db, reply } => {
                let _ = reply.send(self.dbs.get(&db).map(|d| d.replica.clock()));
            }
            DbCommand::BurnBlock {
                height,
                policies,
                reply,
            } => {
                let mut outcome = Ok(());
                for (db, policy) in policies {
                    let switched = match self.dbs.get_mut(&db) {
                        Some(d) => d
                            .replica
                            .set_policy(Arc::new(policy))
                            .map_err(|e| format!("{db}: {e}")),
                        None => Err(format!("{db} is not replicated here")),
                    };
                    if let Err(e) = switched {
                        outcome = Err(e);
                    }
                }
                let collected = self.on_burn_block(height, Instant::now());
                let _ = reply.send(outcome.and(collected));
            }
            DbCommand::PeerClocks { db, reply } => {
                let _ = reply.send(self.dbs.get(&db).map(|d| {
                    d.sync
                        .peer_clocks()
                        .map(|(peer, clock)| (*peer, clock.cloned()))
                        .collect()
                }));
            }
        }
    }

    /// A burn block: every DB whose policy collects at it resets its garbage slots
    /// (durably) and tells its neighbours. A storage failure stops at that DB and is
    /// returned; the DBs before it have collected.
    pub fn on_burn_block(&mut self, height: u64, now: Instant) -> Result<Collected, String> {
        let mut collected = Vec::new();
        let mut outputs = Vec::new();
        for (id, db) in &mut self.dbs {
            let epoch = db.replica.gc_epoch();
            let reset = db
                .replica
                .on_burn_block(height)
                .map_err(|err| format!("garbage collection of {id} failed: {err}"))?;
            if db.replica.gc_epoch() != epoch {
                debug!(target: logs::STACKERDB, db = %id, height, slots = reset.len(), "garbage collected");
                outputs.extend(db.sync.on_garbage_collected(&db.replica, now));
                collected.push((id.clone(), reset));
            }
        }
        self.apply(outputs);
        Ok(collected)
    }

    fn write(&mut self, id: DbId, chunk: Chunk) -> Result<SlotVersion, WriteFailure> {
        let Some(db) = self.dbs.get_mut(&id) else {
            return Err(WriteFailure::UnknownDb(id));
        };
        let slot = chunk.slot;
        let standing = db.replica.write(chunk)?;
        let outputs = db.sync.on_local_write(&db.replica, slot, Instant::now());
        self.apply(outputs);
        Ok(standing)
    }

    fn report(&self, peer: PeerId, reason: String) {
        let overlay = self.overlay.clone();
        tokio::spawn(async move { overlay.report(peer, Misbehaviour::Protocol(reason)).await });
    }

    /// Carries out what the sync asked for, without waiting on the network.
    fn apply(&self, outputs: Vec<SyncOutput<PeerId>>) {
        for output in outputs {
            match output {
                SyncOutput::Send { to, msg } => {
                    trace!(target: logs::STACKERDB, me = %self.overlay.peer_id(), peer = %to, "sending {}", msg.describe());
                    let overlay = self.overlay.clone();
                    let Ok(body) = message::encode(&msg) else {
                        warn!(target: logs::STACKERDB, peer = %to, "a sync message did not encode");
                        continue;
                    };
                    tokio::spawn(async move {
                        if let Err(err) = overlay.request(to, Service::StackerDbSync, body).await {
                            debug!(target: logs::STACKERDB, peer = %to, %err, "sync message not delivered");
                        }
                    });
                }
                SyncOutput::Announce(msg) => {
                    let overlay = self.overlay.clone();
                    let Ok(data) = message::encode(&msg) else {
                        warn!(target: logs::STACKERDB, "an announcement did not encode");
                        continue;
                    };
                    tokio::spawn(async move {
                        // With no peer subscribed yet, anti-entropy delivers it later.
                        let _ = overlay.publish(Topic::StackerDbChunks, data).await;
                    });
                }
                SyncOutput::Penalise { peer, reason } => self.report(peer, reason),
                SyncOutput::StorageFailed(err) => {
                    warn!(target: logs::STACKERDB, %err, "storing a replicated chunk failed");
                }
                SyncOutput::Accepted { slot, from, .. } => {
                    debug!(target: logs::STACKERDB, slot, peer = %from, "chunk replicated");
                }
            }
        }
    }
}

/// The gossip validator of the announcements topic: `message::check_announcement` in
/// the swarm task.
pub fn validate_announcement(_: Option<PeerId>, data: &[u8]) -> Verdict {
    match message::check_announcement(data) {
        Ok(_) => Verdict::Accept,
        Err(err) => Verdict::Reject(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Beacons, serve};
    use bitcoin::secp256k1::{SECP256K1, SecretKey};
    use tenure_overlay::{NetworkId, NodeKey, OverlayConfig};
    use tenure_stackerdb::{SlotWriters, TermSchedule};

    #[tokio::test]
    async fn a_term_starting_burn_block_empties_the_slots_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let network = NetworkId::new("gc-test").unwrap();
        let writer = SecretKey::from_slice(&[7; 32]).unwrap();
        let config = crate::config::StackerDbConfig {
            id: DbId::new("gc.db").unwrap(),
            policy: SlotWriters::new(
                vec![Some(writer.public_key(SECP256K1)); 4],
                1024,
                TermSchedule {
                    first_burn_height: 100,
                    term_length: 10,
                },
            ),
        };
        let (overlay, events) = tenure_overlay::spawn(
            OverlayConfig::loopback(network.clone()),
            NodeKey::generate(),
        )
        .await
        .unwrap();
        let dbs = StackerDbs::attach(
            &overlay,
            network.as_str(),
            dir.path(),
            std::slice::from_ref(&config),
        )
        .await
        .unwrap();
        let (handle, commands) = StackerDbHandle::channel(16);
        let (stop, stopped) = oneshot::channel::<()>();
        let node = tokio::spawn(serve(
            overlay.clone(),
            events,
            dbs,
            commands,
            Beacons::Off,
            None,
            async {
                let _ = stopped.await;
            },
        ));
        // Term 0 starts at burn block 100.
        assert_eq!(
            handle.burn_block(100).await.unwrap(),
            vec![(config.id.clone(), vec![])]
        );
        let chunk = Chunk::sign(
            network.as_str(),
            &config.id,
            2,
            5,
            b"term 0".to_vec(),
            &writer,
        );
        handle.write(config.id.clone(), chunk).await.unwrap();

        assert_eq!(handle.burn_block(105).await.unwrap(), vec![]);
        assert!(
            handle
                .read(config.id.clone(), 2)
                .await
                .unwrap()
                .chunk
                .is_some()
        );
        assert_eq!(
            handle.burn_block(110).await.unwrap(),
            vec![(config.id.clone(), vec![2])]
        );
        assert!(
            handle
                .read(config.id.clone(), 2)
                .await
                .unwrap()
                .chunk
                .is_none()
        );
        // Replayed: nothing more to do.
        assert_eq!(handle.burn_block(110).await.unwrap(), vec![]);
        let _ = stop.send(());
        let _ = node.await;
        overlay.shutdown().await;
    }
}
