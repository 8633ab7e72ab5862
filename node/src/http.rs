//! The node's HTTP API (JSON), bound where the config says (loopback by default).
//!
//! - `GET /v1/status`: peer id, listen addresses, peers with their hellos, mesh sizes;
//!   with a burnchain, `burn`: its tip, the term, and the current and next terms'
//!   producers with their weights and shares ([`crate::burnchain::BurnStatus`]);
//!   with a chain, `chain`: `{role, term, height, tip, leader}` as the node's
//!   producer or follower has it (a follower names no leader).
//! - A producer's node also serves the chain API ([`crate::chain_api`]): the tip,
//!   accounts, transfers in.
//! - `GET /metrics`: the Prometheus registry as text.
//! - `/v1/stackerdb/…`: the Stacker DB API ([`crate::stackerdb::api`]).

use crate::logs;
use std::net::SocketAddr;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tenure_overlay::OverlayHandle;

use crate::{burnchain::BurnStatus, stackerdb::StackerDbHandle};
use tokio::sync::watch;
use tracing::warn;

/// Bodies up to this size are read (a 1 MiB chunk as hex, with its JSON).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Binds `addr` and serves the API in the background; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    overlay: OverlayHandle,
    dbs: StackerDbHandle,
    burn: Option<watch::Receiver<BurnStatus>>,
    chain: Option<ChainSource>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the HTTP API on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let mut app = Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(Api {
            overlay,
            burn,
            chain: chain.clone(),
        })
        .merge(crate::stackerdb::api::routes().with_state(dbs));
    if let Some(ChainSource::Producer(slot)) = chain {
        app = app.merge(crate::chain_api::routes().with_state(slot));
    }
    let app = app.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            warn!(target: logs::HTTP, %err, "HTTP API stopped");
        }
    });
    Ok(bound)
}

/// Where a node's chain is read from.
#[derive(Clone)]
pub enum ChainSource {
    /// Its producer (once it runs).
    Producer(crate::chain_api::ProducerSlot),
    /// Its follower.
    Follower(watch::Receiver<crate::follower::FollowerStatus>),
}

impl ChainSource {
    fn json(&self) -> serde_json::Value {
        let (role, term, height, tip, leader) = match self {
            ChainSource::Producer(slot) => {
                let status = slot.get().map(|p| p.status()).unwrap_or_default();
                let leader = status.leader.map(|l| hex::encode(l.0));
                ("producer", status.term, status.height, status.tip, leader)
            }
            ChainSource::Follower(status) => {
                let status = status.borrow();
                ("follower", status.term, status.height, status.tip, None)
            }
        };
        serde_json::json!({
            "role": role,
            "term": term,
            "height": height,
            "tip": hex::encode(tip),
            "leader": leader,
        })
    }
}

/// What the status and metrics routes read.
#[derive(Clone)]
struct Api {
    overlay: OverlayHandle,
    burn: Option<watch::Receiver<BurnStatus>>,
    chain: Option<ChainSource>,
}

async fn status(State(api): State<Api>) -> impl IntoResponse {
    let status = match api.overlay.status().await {
        Ok(status) => status,
        Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    };
    let mut body = match serde_json::to_value(status) {
        Ok(body) => body,
        Err(err) => return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    };
    if let (Some(burn), Some(fields)) = (&api.burn, body.as_object_mut()) {
        let burn = burn.borrow().clone();
        fields.insert(
            "burn".into(),
            serde_json::to_value(burn).unwrap_or_default(),
        );
    }
    if let (Some(chain), Some(fields)) = (&api.chain, body.as_object_mut()) {
        fields.insert("chain".into(), chain.json());
    }
    Json(body).into_response()
}

async fn metrics(State(api): State<Api>) -> String {
    api.overlay.metrics().encode_text()
}
