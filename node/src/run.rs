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
//! tip, the term and the producers the burnchain chose with their shares. (Running
//! the term's DKG and producing blocks in `tenure node` is the next step; the
//! testnet does both.)

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
    produce::{BurnScan, Enroller},
    terms::Terms,
};
use tenure_overlay::{
    OverlayEvent, OverlayEvents, OverlayHandle, Service, Topic, heartbeat::Heartbeat,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    burnchain::{BurnDriver, BurnNode, BurnView, MinerSchedule},
    config::{BurnchainConfig, NodeConfig},
    http, keys,
    stackerdb::{DbCommand, StackerDbHandle, StackerDbs},
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
    let mut overlay_config = config.overlay.clone();
    overlay_config.stacker_dbs = config
        .stacker_dbs
        .iter()
        .map(|db| db.id.as_str().to_owned())
        .collect();
    let (overlay, events) = tenure_overlay::spawn(overlay_config, key).await?;
    let (burn_status, peer_copies, events) = match &config.burnchain {
        Some(burnchain) => {
            let (burn_events, rest) = events.split(4096, crate::burnchain::wants);
            let (status, peers) = start_burnchain(&config, burnchain, &overlay, burn_events)?;
            (Some(status), Some(peers), rest)
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
        &config.stacker_dbs,
    )
    .await?;
    let (db_handle, db_commands) = StackerDbHandle::channel(DB_COMMAND_QUEUE);
    let http = match config.http_listen {
        Some(addr) => Some(http::serve(addr, overlay.clone(), db_handle, burn_status).await?),
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

/// Starts the node's burnchain ([`BurnDriver`]) on `events`, enrolling its producer
/// if the config names one; returns its status and where peers' comings and goings
/// are copied to it.
fn start_burnchain(
    config: &NodeConfig,
    burnchain: &BurnchainConfig,
    overlay: &OverlayHandle,
    events: OverlayEvents,
) -> anyhow::Result<(
    watch::Receiver<crate::burnchain::BurnStatus>,
    mpsc::Sender<OverlayEvent>,
)> {
    let enroller = match &config.producer {
        Some(producer) => {
            let keypair = keys::load_producer(&producer.key_file)?;
            info!(target: logs::NODE, producer = %keypair.x_only_public_key().0, spend_sat = producer.spend_sat, "enrolling as a producer");
            Some(Enroller::new(
                keypair,
                bitcoin::Amount::from_sat(producer.spend_sat),
                Magic::Regtest,
            ))
        }
        None => None,
    };
    let terms = Terms::new(burnchain.first_term_height);
    let scan = BurnScan::new(Magic::Regtest, terms, terms.first_burn_height);
    let (view, _scans) = BurnView::new(scan, enroller);
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
    // Its producer's announcements come with block production; none yet.
    let (_own_tx, own_txs) = mpsc::channel(16);
    let driver = BurnDriver {
        burn,
        fetched,
        view,
        mining,
    };
    tokio::spawn(driver.run(events, peers, own_txs, status_tx));
    Ok((status, peers_tx))
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
