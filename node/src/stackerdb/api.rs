//! The Stacker DB HTTP API (JSON).
//!
//! - `GET  /v1/stackerdb/{db}/{slot}` → `{chunk, version, public_key}` (the SIP's read
//!   format: `version` is `"0x00"` and 16 hex digits; version 0 is the empty chunk).
//! - `POST /v1/stackerdb/{db}` with `{slot, version, data, signature}` (hex) → 200
//!   `{slot, version}` once durable, or 403 `{reason}` with nothing changed.
//! - `GET  /v1/stackerdb/{db}/clock` → the DB's vector clock and its digest.
//! - `GET  /v1/stackerdb/{db}/peers` → each sync neighbour's last-seen clock and how
//!   many slots it is behind ours (replication progress).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tenure_stackerdb::{Chunk, DbId, VectorClock, WriteError};

use super::{StackerDbHandle, WriteFailure};

/// A slot as the read endpoint returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SlotJson {
    /// The data, hex.
    pub chunk: String,
    /// `"0x00"` and the version as 16 hex digits.
    pub version: String,
    /// The writer's compressed key, hex (empty for the empty chunk).
    pub public_key: String,
}

/// A signed write as the write endpoint takes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteJson {
    /// The slot.
    pub slot: u32,
    /// The version.
    pub version: u64,
    /// The data, hex.
    pub data: String,
    /// The 65-byte recoverable signature, hex.
    pub signature: String,
}

#[derive(Serialize)]
struct Accepted {
    slot: u32,
    version: u64,
}

#[derive(Serialize)]
struct Refusal {
    reason: String,
}

#[derive(Serialize)]
struct ClockJson {
    digest: String,
    slots: Vec<SlotClockJson>,
}

#[derive(Serialize)]
struct SlotClockJson {
    version: u64,
    leading_zeros: u32,
    hash_prefix: String,
}

#[derive(Serialize)]
struct PeerClockJson {
    peer_id: String,
    slots_behind: Option<usize>,
    clock: Option<ClockJson>,
}

/// The version as the SIP writes it.
pub fn version_text(version: u64) -> String {
    format!("0x00{version:016x}")
}

fn clock_json(clock: &VectorClock) -> ClockJson {
    ClockJson {
        digest: hex::encode(clock.digest()),
        slots: clock
            .slots
            .iter()
            .map(|s| SlotClockJson {
                version: s.version,
                leading_zeros: s.leading_zeros,
                hash_prefix: hex::encode(s.hash_prefix),
            })
            .collect(),
    }
}

fn refuse(status: StatusCode, reason: impl ToString) -> Response {
    (
        status,
        Json(Refusal {
            reason: reason.to_string(),
        }),
    )
        .into_response()
}

fn db_id(raw: &str) -> Result<DbId, String> {
    DbId::new(raw).map_err(|e| e.to_string())
}

/// The routes, over a [`StackerDbHandle`].
pub fn routes() -> Router<StackerDbHandle> {
    Router::new()
        .route("/v1/stackerdb/{db}", post(write))
        .route("/v1/stackerdb/{db}/clock", get(clock))
        .route("/v1/stackerdb/{db}/peers", get(peers))
        .route("/v1/stackerdb/{db}/{slot}", get(read))
}

async fn read(
    State(dbs): State<StackerDbHandle>,
    Path((db, slot)): Path<(String, u32)>,
) -> Response {
    let db = match db_id(&db) {
        Ok(db) => db,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason),
    };
    match dbs.read(db.clone(), slot).await {
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("this node does not replicate {db}"),
        ),
        Some(value) => Json(SlotJson {
            chunk: value
                .chunk
                .as_ref()
                .map(|c| hex::encode(&c.data))
                .unwrap_or_default(),
            version: version_text(value.chunk.as_ref().map_or(0, |c| c.version)),
            public_key: value
                .writer
                .map(|k| hex::encode(k.serialize()))
                .unwrap_or_default(),
        })
        .into_response(),
    }
}

async fn write(
    State(dbs): State<StackerDbHandle>,
    Path(db): Path<String>,
    body: Result<Json<WriteJson>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let db = match db_id(&db) {
        Ok(db) => db,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason),
    };
    let Json(write) = match body {
        Ok(body) => body,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, err.body_text()),
    };
    let (Ok(data), Ok(signature)) = (hex::decode(&write.data), hex::decode(&write.signature))
    else {
        return refuse(StatusCode::BAD_REQUEST, "data and signature must be hex");
    };
    let chunk = Chunk {
        slot: write.slot,
        version: write.version,
        data: ByteBuf::from(data),
        signature: ByteBuf::from(signature),
    };
    match dbs.write(db, chunk).await {
        Ok(standing) => Json(Accepted {
            slot: write.slot,
            version: standing.version,
        })
        .into_response(),
        Err(WriteFailure::Write(WriteError::Rejected(rejection))) => {
            refuse(StatusCode::FORBIDDEN, rejection)
        }
        Err(err @ WriteFailure::UnknownDb(_)) => refuse(StatusCode::NOT_FOUND, err),
        Err(err) => refuse(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

async fn clock(State(dbs): State<StackerDbHandle>, Path(db): Path<String>) -> Response {
    let db = match db_id(&db) {
        Ok(db) => db,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason),
    };
    match dbs.clock(db.clone()).await {
        Some(clock) => Json(clock_json(&clock)).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("this node does not replicate {db}"),
        ),
    }
}

async fn peers(State(dbs): State<StackerDbHandle>, Path(db): Path<String>) -> Response {
    let db = match db_id(&db) {
        Ok(db) => db,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason),
    };
    let (Some(ours), Some(peers)) = (
        dbs.clock(db.clone()).await,
        dbs.peer_clocks(db.clone()).await,
    ) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("this node does not replicate {db}"),
        );
    };
    let peers: Vec<PeerClockJson> = peers
        .into_iter()
        .map(|(peer, clock)| PeerClockJson {
            peer_id: peer.to_string(),
            slots_behind: clock.as_ref().map(|c| ours.ahead_of(c).len()),
            clock: clock.as_ref().map(clock_json),
        })
        .collect();
    Json(peers).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_written_as_the_sip_reads_them() {
        assert_eq!(version_text(0), "0x000000000000000000");
        assert_eq!(version_text(255), "0x0000000000000000ff");
        assert_eq!(version_text(u64::MAX), "0x00ffffffffffffffff");
    }
}
