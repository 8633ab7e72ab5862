//! `tenure node --config FILE`: one long-running node.
//!
//! On start it writes `node.json` into its data directory (peer id, listen addresses,
//! HTTP address) so scripts and tests can find it without guessing ports; it removes
//! the file on a clean shutdown.
//!
//! With a `[burnchain]` section the node follows the embedded regtest chain over the
//! overlay and scans every burn block ([`crate::burnchain::BurnDriver`]), mining it
//! when the section says so; with a `[producer]` section it registers and enrolls its
//! producer every term from its key's wallet, with the spend the config names, its
//! transactions relayed to the miner by gossip. `GET /v1/status` then shows the burn
//! tip, the term and the producers the burnchain chose with their shares.
//!
//! With a burnchain every node also replicates the boot producer DB, whose policy
//! follows the terms and whose old chunks are collected at each term's first burn
//! block ([`crate::producer_db`]); a producer writes its certificate of each term's
//! key there.
//!
//! A producer node also runs a federation member (its channel known to the others
//! from its contact, [`crate::contacts`]), the term driver ([`crate::terms`]: each
//! term's DKG, certificate and term UTXO) and, from its first term on, the producer
//! ([`crate::producer`]), whose chain API the HTTP server then serves; a node without
//! a producer follows the chain from the term keys' certificates
//! ([`crate::follower`]). A producer node keeps its chain in a store (`chain/` in its
//! data directory) and its key shares in a key store (`keys/`): killed and
//! restarted, it resumes at the store's tip, takes the keys of the terms it missed
//! from the others' proofs, catches up, and signs again in the current term with its
//! stored share of the term's key (a term whose key it did not help make, it follows
//! without signing).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::logs;
use anyhow::Context;
use serde::Serialize;
use tenure_chain::{
    ops::enrollment::Magic,
    produce::{Approvals, BurnScan, Enroller, producer_db, term_key::KeyCertificate},
    store::ChainStore,
    terms::Terms,
};
use tenure_frost_fed::store::KeyStore;
use tenure_overlay::{
    OverlayEvent, OverlayEvents, OverlayHandle, Service, Topic, heartbeat::Heartbeat,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    burnchain::{BurnDriver, BurnNode, BurnView, MinerSchedule},
    config::{BurnchainConfig, NodeConfig},
    contacts::{Contacts, PeerDirectory},
    http, keys,
    stackerdb::{DbCommand, StackerDbHandle, StackerDbs},
    terms::{TermDriver, TermKey, TermReports},
};

/// How often Stacker DB sync checks whether anti-entropy is due.
const SYNC_TICK: Duration = Duration::from_millis(250);

/// Commands from the HTTP API waiting for the loop, at most.
const DB_COMMAND_QUEUE: usize = 1024;

/// Commands applied under one flush, at most.
const MAX_COMMAND_BATCH: usize = 256;

/// Log target of the node.
/// How often the node gossips a heartbeat.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// What `node.json` holds.
#[derive(Debug, Serialize)]
struct NodeInfo {
    peer_id: String,
    listen_addrs: Vec<String>,
    http: Option<String>,
}

/// Runs the node until Ctrl-C or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let key = keys::load(&config.key_file)?;
    // With a burnchain, the boot producer DB too: its policy follows the terms.
    let mut stacker_dbs = config.stacker_dbs.clone();
    if let Some(burnchain) = &config.burnchain {
        stacker_dbs.push(crate::config::StackerDbConfig {
            id: producer_db::producer_db_id()?,
            policy: producer_db::policy(None, &Terms::new(burnchain.first_term_height)),
        });
    }
    let mut overlay_config = config.overlay.clone();
    overlay_config.stacker_dbs = stacker_dbs
        .iter()
        .map(|db| db.id.as_str().to_owned())
        .collect();
    let (overlay, events) = tenure_overlay::spawn(overlay_config, key).await?;
    // Signed on by the producers and followers for the whole run.
    let network: &'static str = Box::leak(
        config
            .overlay
            .network_id
            .as_str()
            .to_owned()
            .into_boxed_str(),
    );
    let mut chain = None;
    let (db_handle, db_commands) = StackerDbHandle::channel(DB_COMMAND_QUEUE);
    let (burn_status, peer_copies, events) = match &config.burnchain {
        Some(burnchain) => {
            let (burn_events, rest) = events.split(4096, crate::burnchain::wants);
            let (own_txs_tx, own_txs) = mpsc::channel(64);
            let (term_keys_tx, term_keys) = mpsc::channel(8);
            let started = start_burnchain(
                &config,
                burnchain,
                &overlay,
                burn_events,
                own_txs,
                term_keys,
            )?;
            let (certificates_tx, certificates) = mpsc::channel(4);
            tokio::spawn(
                crate::producer_db::ProducerDbDriver {
                    network,
                    dbs: db_handle.clone(),
                    terms: Terms::new(burnchain.first_term_height),
                    keypair: started.producer,
                }
                .run(started.scans.clone(), certificates),
            );
            let rest = match started.producer {
                Some(keypair) => {
                    let (ours, rest) = crate::producer::split_events(rest);
                    let store = ChainStore::open(&config.data_dir.join("chain"))
                        .context("cannot open the chain store")?;
                    info!(target: logs::NODE, height = store.state().height, "chain store opened");
                    let key_store = KeyStore::open(&config.data_dir.join("keys"))
                        .context("cannot open the key store")?;
                    let slot = start_producer(
                        network,
                        keypair,
                        &overlay,
                        ours,
                        started.scans.clone(),
                        (own_txs_tx, term_keys_tx, certificates_tx),
                        (store, key_store),
                    )
                    .await?;
                    chain = Some(http::ChainSource::Producer(slot));
                    rest
                }
                None => {
                    let (ours, rest) = rest.split(4096, crate::follower::wants);
                    let status =
                        crate::follower::spawn(network, &overlay, ours, started.scans.clone())
                            .await?;
                    chain = Some(http::ChainSource::Follower(status));
                    rest
                }
            };
            (Some(started.status), Some(started.peers), rest)
        }
        None => (None, None, events),
    };
    overlay
        .subscribe(
            Topic::Heartbeat,
            Arc::new(tenure_overlay::heartbeat::validate),
        )
        .await?;
    let dbs = StackerDbs::attach(
        &overlay,
        config.overlay.network_id.as_str(),
        &config.data_dir.join("stackerdb"),
        &stacker_dbs,
    )
    .await?;
    let http = match config.http_listen {
        Some(addr) => {
            Some(http::serve(addr, overlay.clone(), db_handle, burn_status, chain).await?)
        }
        None => None,
    };
    let info_path = config.data_dir.join("node.json");
    let info = NodeInfo {
        peer_id: overlay.peer_id().to_string(),
        listen_addrs: overlay
            .listen_addrs()
            .iter()
            .map(ToString::to_string)
            .collect(),
        http: http.map(|a| a.to_string()),
    };
    std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)
        .with_context(|| format!("cannot write {}", info_path.display()))?;
    info!(target: logs::NODE, peer_id = %info.peer_id, listen = ?info.listen_addrs, http = ?info.http, "node started");

    let shutdown = shutdown_signal();
    serve(
        overlay.clone(),
        events,
        dbs,
        db_commands,
        Beacons::On,
        peer_copies,
        async move {
            shutdown.await;
            info!(target: logs::NODE, "shutting down");
        },
    )
    .await;
    overlay.shutdown().await;
    let _ = std::fs::remove_file(&info_path);
    Ok(())
}

/// A node's burnchain, started.
struct BurnStarted {
    status: watch::Receiver<crate::burnchain::BurnStatus>,
    /// Where peers' comings and goings are copied to it.
    peers: mpsc::Sender<OverlayEvent>,
    scans: watch::Receiver<Arc<BurnScan>>,
    /// The producer's key, when the config names one.
    producer: Option<bitcoin::secp256k1::Keypair>,
}

/// Starts the node's burnchain ([`BurnDriver`]) on `events`, enrolling its producer
/// if the config names one; `own_txs` are the producer's transactions to relay,
/// `term_keys` the term keys whose UTXOs to look for (and pay).
fn start_burnchain(
    config: &NodeConfig,
    burnchain: &BurnchainConfig,
    overlay: &OverlayHandle,
    events: OverlayEvents,
    own_txs: mpsc::Receiver<bitcoin::Transaction>,
    term_keys: mpsc::Receiver<TermKey>,
) -> anyhow::Result<BurnStarted> {
    let producer = match &config.producer {
        Some(producer) => Some((keys::load_producer(&producer.key_file)?, producer.spend_sat)),
        None => None,
    };
    let enroller = producer.map(|(keypair, spend_sat)| {
        info!(target: logs::NODE, producer = %keypair.x_only_public_key().0, spend_sat, "enrolling as a producer");
        Enroller::new(keypair, bitcoin::Amount::from_sat(spend_sat), Magic::Regtest)
    });
    let terms = Terms::new(burnchain.first_term_height);
    let scan = BurnScan::new(Magic::Regtest, terms, terms.first_burn_height);
    let (view, scans) = BurnView::new(scan, enroller);
    let (burn, fetched) = BurnNode::new(overlay.clone());
    let reward = |key: &bitcoin::XOnlyPublicKey| {
        bitcoin::ScriptBuf::new_p2tr(bitcoin::secp256k1::SECP256K1, *key, None)
    };
    let mining = burnchain.mine_interval.map(|interval| MinerSchedule {
        first_term_height: burnchain.first_term_height,
        interval,
        premine_to: burnchain.premine_to.iter().map(reward).collect(),
        // Blocks after the premine pay nobody in particular.
        reward: bitcoin::ScriptBuf::new_op_return([0u8; 4]),
    });
    let (status_tx, status) = watch::channel(crate::burnchain::BurnStatus::default());
    let (peers_tx, peers) = mpsc::channel(256);
    let driver = BurnDriver {
        burn,
        fetched,
        view,
        mining,
        mining_on: None,
    };
    tokio::spawn(driver.run(events, peers, own_txs, term_keys, status_tx));
    Ok(BurnStarted {
        status,
        peers: peers_tx,
        scans,
        producer: producer.map(|(keypair, _)| keypair),
    })
}

/// Starts a producer node's federation member, contacts and term driver (which starts
/// the producer, on `store`, at its first term); `to_burnchain` carries the producer's
/// transactions and its term keys to the burnchain loop. Returns where the producer
/// appears.
async fn start_producer(
    network: &'static str,
    keypair: bitcoin::secp256k1::Keypair,
    overlay: &OverlayHandle,
    events: crate::producer::ProducerEvents,
    scans: watch::Receiver<Arc<BurnScan>>,
    to_burnchain: (
        mpsc::Sender<bitcoin::Transaction>,
        mpsc::Sender<TermKey>,
        mpsc::Sender<KeyCertificate>,
    ),
    stores: (ChainStore, KeyStore),
) -> anyhow::Result<crate::chain_api::ProducerSlot> {
    let (burn_txs, term_keys, certificates) = to_burnchain;
    let (store, key_store) = stores;
    let (private, public) = tenure_frost_fed::channel::noise_keypair()
        .ok_or_else(|| anyhow::anyhow!("no Noise key could be made"))?;
    let channel =
        tenure_frost_fed::channel::ChannelKey::bind(&keypair, public, overlay.peer_id().to_bytes());
    let approvals = Approvals::default();
    let validating = approvals.clone();
    let federation = crate::federation::spawn(
        overlay.clone(),
        events.federation,
        keypair,
        private,
        vec![channel.clone()],
        move |payload: &[u8]| validating.approve(payload, network),
        Some(key_store.clone()),
    )
    .await?;
    let directory = PeerDirectory::default();
    Contacts {
        network,
        keypair,
        channel,
        federation: federation.clone(),
        directory: directory.clone(),
    }
    .spawn(overlay, events.contacts, scans.clone())
    .await?;
    let slot = crate::chain_api::ProducerSlot::default();
    let driver = TermDriver {
        network,
        index: 0,
        keypair,
        overlay: overlay.clone(),
        blocks: events.blocks,
        federation,
        approvals,
        directory,
        keys: vec![keypair],
        slot: slot.clone(),
        reports: TermReports::default(),
        burn_txs,
        term_keys,
        store: Some(store),
        key_store: Some(key_store),
        certificates: Some(certificates),
    };
    tokio::spawn(driver.run(scans));
    Ok(slot)
}

/// Whether the node gossips heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beacons {
    /// Gossip a heartbeat every few seconds.
    On,
    /// Stay quiet (benchmarks that count bytes).
    Off,
}

/// The node's loop: routes overlay events and API commands to their owners and runs the
/// timers, until `shutdown` resolves or the overlay stops.
pub async fn serve(
    overlay: OverlayHandle,
    mut events: OverlayEvents,
    mut dbs: StackerDbs,
    mut db_commands: mpsc::Receiver<DbCommand>,
    beacons: Beacons,
    peer_copies: Option<mpsc::Sender<OverlayEvent>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut sync_tick = tokio::time::interval(SYNC_TICK);
    let mut seq = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = beat.tick(), if beacons == Beacons::On => {
                if let Ok(beat) = Heartbeat::new(overlay.peer_id(), seq).encode()
                    && overlay.publish(Topic::Heartbeat, beat).await.is_ok()
                {
                    seq += 1;
                }
            }
            event = events.next() => match event {
                Some(event) => {
                    if let Some(copies) = &peer_copies {
                        let copy = match &event {
                            OverlayEvent::PeerConnected { peer, hello } => Some(OverlayEvent::PeerConnected { peer: *peer, hello: hello.clone() }),
                            OverlayEvent::PeerDisconnected { peer } => Some(OverlayEvent::PeerDisconnected { peer: *peer }),
                            _ => None,
                        };
                        if let Some(copy) = copy {
                            let _ = copies.try_send(copy);
                        }
                    }
                    on_event(event, &overlay, &mut dbs).await
                }
                None => break,
            },
            Some(command) = db_commands.recv() => {
                // Group commit: take every command already waiting, flush once.
                let mut batch = vec![command];
                while batch.len() < MAX_COMMAND_BATCH {
                    match db_commands.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
                dbs.execute_batch(batch);
            }
            _ = sync_tick.tick() => dbs.on_tick(Instant::now()),
            _ = &mut shutdown => break,
        }
    }
}

/// Routes one overlay event to the part of the node it concerns.
async fn on_event(event: OverlayEvent, overlay: &OverlayHandle, dbs: &mut StackerDbs) {
    match event {
        OverlayEvent::PeerConnected { peer, hello } => {
            info!(target: logs::NODE, %peer, dbs = hello.stacker_dbs.len(), "peer connected");
            dbs.on_peer_connected(peer, &hello);
        }
        OverlayEvent::PeerDisconnected { peer } => {
            info!(target: logs::NODE, %peer, "peer disconnected");
            dbs.on_peer_disconnected(&peer);
        }
        OverlayEvent::Gossip {
            topic: Topic::StackerDbChunks,
            source,
            data,
        } => dbs.on_announcement(source, &data, Instant::now()),
        OverlayEvent::InboundRequest {
            id,
            peer,
            service: Service::StackerDbSync,
            body,
        } => {
            // Acknowledge at once: the sync answers with messages of its own.
            let _ = overlay.respond(id, Ok(Vec::new())).await;
            dbs.on_sync_request(peer, &body, Instant::now());
        }
        OverlayEvent::InboundRequest { id, service, .. } => {
            let _ = overlay
                .respond(id, Err(tenure_overlay::Refusal::NotServed(service)))
                .await;
        }
        OverlayEvent::PeerRefused { peer, reason } => {
            warn!(target: logs::NODE, %peer, %reason, "peer refused");
        }
        OverlayEvent::PeerBanned { peer } => warn!(target: logs::NODE, %peer, "peer banned"),
        _ => {}
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
