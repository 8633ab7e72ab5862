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

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

pub use bitcoin::secp256k1::PublicKey;
use tenure_overlay::{Hello, Misbehaviour, OverlayHandle, PeerId, Service, Topic, Verdict};
use tenure_stackerdb::{
    Chunk, DbId, Replica, SlotValue, Store, VectorClock, WriteError,
    order::SlotVersion,
    sync::{DbSync, SyncConfig, SyncOutput, message},
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::StackerDbConfig;

/// Log target of the Stacker DB wiring.
const LOG_TARGET: &str = "tenure::stackerdb";

/// Largest sync message accepted from a peer: a push of up to 2 MiB of chunks with
/// their signatures and framing.
pub const MAX_SYNC_MESSAGE_BYTES: usize = 3 * 1024 * 1024;

/// Largest announcement accepted on gossip.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 512;

/// Each sync neighbour and the last clock it reported.
pub type PeerClocks = Vec<(PeerId, Option<VectorClock>)>;

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

    /// A peer completed its hello: it becomes a sync neighbour of the DBs we share.
    pub fn on_peer_connected(&mut self, peer: PeerId, hello: &Hello) {
        for name in &hello.stacker_dbs {
            if let Some(db) = DbId::new(name.clone())
                .ok()
                .and_then(|id| self.dbs.get_mut(&id))
            {
                db.sync.add_peer(peer);
            }
        }
    }

    /// A peer left.
    pub fn on_peer_disconnected(&mut self, peer: &PeerId) {
        for db in self.dbs.values_mut() {
            db.sync.remove_peer(peer);
        }
    }

    /// An announcement arrived by gossip from `source`.
    pub fn on_announcement(&mut self, source: Option<PeerId>, data: &[u8], now: Instant) {
        let (Some(source), Ok(msg)) = (source, message::decode(data, MAX_ANNOUNCEMENT_BYTES))
        else {
            return;
        };
        self.handle(source, msg, now);
    }

    /// A sync message arrived as a request from `peer` (already acknowledged).
    pub fn on_sync_request(&mut self, peer: PeerId, body: &[u8], now: Instant) {
        match message::decode(body, MAX_SYNC_MESSAGE_BYTES) {
            Ok(msg) => self.handle(peer, msg, now),
            Err(err) => self.report(peer, format!("sync message: {err}")),
        }
    }

    fn handle(&mut self, from: PeerId, msg: message::SyncMessage, now: Instant) {
        let Some(db) = self.dbs.get_mut(&msg.db) else {
            return;
        };
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
                    let overlay = self.overlay.clone();
                    let body = message::encode(&msg);
                    tokio::spawn(async move {
                        if let Err(err) = overlay.request(to, Service::StackerDbSync, body).await {
                            debug!(target: LOG_TARGET, peer = %to, %err, "sync message not delivered");
                        }
                    });
                }
                SyncOutput::Announce(msg) => {
                    let overlay = self.overlay.clone();
                    let data = message::encode(&msg);
                    tokio::spawn(async move {
                        // With no peer subscribed yet, anti-entropy delivers it later.
                        let _ = overlay.publish(Topic::StackerDbChunks, data).await;
                    });
                }
                SyncOutput::Penalise { peer, reason } => self.report(peer, reason),
                SyncOutput::StorageFailed(err) => {
                    warn!(target: LOG_TARGET, %err, "storing a replicated chunk failed");
                }
                SyncOutput::Accepted { slot, from, .. } => {
                    debug!(target: LOG_TARGET, slot, peer = %from, "chunk replicated");
                }
            }
        }
    }
}

/// Gossip validation of announcements: they must decode within their bound.
pub fn validate_announcement(_: Option<PeerId>, data: &[u8]) -> Verdict {
    match message::decode(data, MAX_ANNOUNCEMENT_BYTES) {
        Ok(msg) if matches!(msg.body, message::SyncBody::Announce { .. }) => Verdict::Accept,
        Ok(_) => Verdict::Reject("not an announcement".into()),
        Err(err) => Verdict::Reject(err.to_string()),
    }
}
