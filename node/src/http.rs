//! The node's HTTP API (JSON), bound where the config says (loopback by default).
//!
//! - `GET /v1/status`: peer id, listen addresses, peers with their hellos, mesh sizes.
//! - `GET /metrics`: the Prometheus registry as text.
//! - `/v1/stackerdb/…`: the Stacker DB API ([`crate::stackerdb::api`]).

use crate::logs;
use std::net::SocketAddr;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tenure_overlay::OverlayHandle;

use crate::stackerdb::StackerDbHandle;
use tracing::warn;

/// Bodies up to this size are read (a 1 MiB chunk as hex, with its JSON).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Binds `addr` and serves the API in the background; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    overlay: OverlayHandle,
    dbs: StackerDbHandle,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the HTTP API on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(overlay)
        .merge(crate::stackerdb::api::routes().with_state(dbs))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            warn!(target: logs::HTTP, %err, "HTTP API stopped");
        }
    });
    Ok(bound)
}

async fn status(State(overlay): State<OverlayHandle>) -> impl IntoResponse {
    match overlay.status().await {
        Ok(status) => Json(status).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

async fn metrics(State(overlay): State<OverlayHandle>) -> String {
    overlay.metrics().encode_text()
}
