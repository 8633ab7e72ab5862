//! `tenure node --config FILE`: one long-running node.
//!
//! On start it writes `node.json` into its data directory (peer id, listen addresses,
//! HTTP address) so scripts and tests can find it without guessing ports; it removes
//! the file on a clean shutdown.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use serde::Serialize;
use tenure_overlay::{OverlayEvent, Topic};
use tracing::{info, warn};

use crate::{config::NodeConfig, heartbeat, heartbeat::Heartbeat, http, keys};

/// Log target of the node.
const LOG_TARGET: &str = "tenure::node";

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
    let (overlay, mut events) = tenure_overlay::spawn(config.overlay.clone(), key).await?;
    overlay
        .subscribe(Topic::Heartbeat, Arc::new(heartbeat::validate))
        .await?;
    let http = match config.http_listen {
        Some(addr) => Some(http::serve(addr, overlay.clone()).await?),
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
    info!(target: LOG_TARGET, peer_id = %info.peer_id, listen = ?info.listen_addrs, http = ?info.http, "node started");

    let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut seq = 0u64;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let beat = Heartbeat::new(overlay.peer_id(), seq).encode();
                if overlay.publish(Topic::Heartbeat, beat).await.is_ok() {
                    seq += 1;
                }
            }
            event = events.next() => match event {
                Some(event) => log_event(&event),
                None => break,
            },
            _ = &mut shutdown => {
                info!(target: LOG_TARGET, "shutting down");
                break;
            }
        }
    }
    overlay.shutdown().await;
    let _ = std::fs::remove_file(&info_path);
    Ok(())
}

fn log_event(event: &OverlayEvent) {
    match event {
        OverlayEvent::PeerConnected { peer, hello } => {
            info!(target: LOG_TARGET, %peer, dbs = hello.stacker_dbs.len(), "peer connected");
        }
        OverlayEvent::PeerDisconnected { peer } => {
            info!(target: LOG_TARGET, %peer, "peer disconnected");
        }
        OverlayEvent::PeerRefused { peer, reason } => {
            warn!(target: LOG_TARGET, %peer, %reason, "peer refused");
        }
        OverlayEvent::PeerBanned { peer } => warn!(target: LOG_TARGET, %peer, "peer banned"),
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
