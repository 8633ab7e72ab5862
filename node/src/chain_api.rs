//! The chain's HTTP API (JSON), served by a producer's node: transfers in, balances
//! and the tip out. The testnet serves it for its first producer (`--http`).
//!
//! - `GET  /v1/chain` → `{term, height, tip, leader}` (`tip` hex; `leader` the
//!   producer followed, or null).
//! - `GET  /v1/accounts/{account}` → `{account, balance, nonce}` at the producer's tip
//!   (`account` is the x-only key, 64 hex digits; an account never paid is 0 and 0).
//! - `GET  /v1/blocks/{id}` → the best chain's block at a height (`id` decimal) or
//!   with a header hash (`id` 64 hex digits): `{height, hash, parent, term, time,
//!   state_root, signer_shares, txs, bytes}`, `txs` each `{id, kind}` and the
//!   transfer's or coinbase's fields, `bytes` the block's encoding in hex; 404 if the
//!   node has no such block. A node with a chain store (`tenure node`) serves its
//!   whole chain; one without (the testnet's) the last 64 blocks it applied.
//! - `POST /v1/transactions` with `{tx}` (hex of a chain transaction, bodies of at most
//!   4 KiB) → 202 `{txid}` once it passed the topic's checks and is queued for the
//!   producer's mempool and gossiped on the transactions topic (the mempool checks it
//!   again: a transfer that does not replace the one held at its nonce goes no
//!   further); 400 `{reason}` if it is not a validly signed transfer; 409 `{reason}` if it
//!   is not admissible on the tip (nonce used or too far ahead, balance too low). The
//!   judgement is the topic's own ([`tenure_chain::produce::judge_relay`]): what the
//!   API takes, every producer takes.

use std::sync::{Arc, OnceLock};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tenure_chain::{
    block::{AccountId, Block, Tx},
    produce::{RelayJudgement, judge_relay},
};

use crate::producer::{BlockQuery, ProducerHandle};

/// Bodies up to this size are read: a transaction is at most 1 KiB, twice that in hex.
const MAX_BODY_BYTES: usize = 4096;

/// The producer the API speaks for, once it runs.
pub type ProducerSlot = Arc<OnceLock<ProducerHandle>>;

/// The tip as `GET /v1/chain` returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChainJson {
    /// The producer's term.
    pub term: u64,
    /// Height of the tip.
    pub height: u64,
    /// The tip's hash, hex.
    pub tip: String,
    /// The leader the producer follows.
    pub leader: Option<String>,
}

/// An account as `GET /v1/accounts/{account}` returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountJson {
    /// The account, hex.
    pub account: String,
    /// Its balance.
    pub balance: u64,
    /// The nonce its next transfer must carry.
    pub nonce: u64,
}

/// A block as `GET /v1/blocks/{id}` returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BlockJson {
    /// Its height.
    pub height: u64,
    /// Its header's hash, hex.
    pub hash: String,
    /// Its parent's, hex.
    pub parent: String,
    /// Its term.
    pub term: u64,
    /// Its header's time, seconds since the Unix epoch.
    pub time: u64,
    /// The state root after it, hex.
    pub state_root: String,
    /// The shares (1 to 100) whose signature shares its group signature holds.
    pub signer_shares: Vec<u16>,
    /// Its transactions.
    pub txs: Vec<serde_json::Value>,
    /// The whole block, encoded, hex.
    pub bytes: String,
}

impl BlockJson {
    /// `block` as the API shows it.
    pub fn of(block: &Block) -> BlockJson {
        let txs = block
            .txs
            .iter()
            .map(|tx| {
                let id = hex::encode(tx.id());
                match tx {
                    Tx::Coinbase { term, payouts } => serde_json::json!({
                        "id": id,
                        "kind": "coinbase",
                        "term": term,
                        "payouts": payouts
                            .iter()
                            .map(|(account, amount)| serde_json::json!({"account": account.to_string(), "amount": amount}))
                            .collect::<Vec<_>>(),
                    }),
                    Tx::Transfer(t) => serde_json::json!({
                        "id": id,
                        "kind": "transfer",
                        "from": t.from.to_string(),
                        "to": t.to.to_string(),
                        "amount": t.amount,
                        "fee": t.fee,
                        "nonce": t.nonce,
                    }),
                    Tx::TenureChange(change) => serde_json::json!({
                        "id": id,
                        "kind": "tenure_change",
                        "cause": format!("{:?}", change.cause),
                    }),
                }
            })
            .collect();
        BlockJson {
            height: block.header.height,
            hash: hex::encode(block.header.hash()),
            parent: hex::encode(block.header.parent),
            term: block.header.term,
            time: block.header.time,
            state_root: hex::encode(block.header.state_root),
            signer_shares: block.signers.shares.iter().map(|(n, _)| *n).collect(),
            txs,
            bytes: block.to_bytes().map(hex::encode).unwrap_or_default(),
        }
    }
}

/// A transaction as `POST /v1/transactions` takes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TxJson {
    /// The transaction's bytes, hex.
    pub tx: String,
}

/// Binds `addr` and serves the routes for `slot` in the background; returns the bound
/// address.
pub async fn serve(
    addr: std::net::SocketAddr,
    slot: ProducerSlot,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the chain HTTP API on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = routes()
        .with_state(slot)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(target: crate::logs::HTTP, %err, "chain HTTP API stopped");
        }
    });
    Ok(bound)
}

/// The routes, for a router whose state is the producer's slot.
pub fn routes() -> Router<ProducerSlot> {
    Router::new()
        .route("/v1/chain", get(chain))
        .route("/v1/accounts/{account}", get(account))
        .route("/v1/blocks/{id}", get(block))
        .route("/v1/transactions", post(submit))
}

fn refused(status: StatusCode, reason: impl ToString) -> Response {
    (
        status,
        Json(serde_json::json!({ "reason": reason.to_string() })),
    )
        .into_response()
}

fn not_started() -> Response {
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "the producer has not started",
    )
}

async fn chain(State(slot): State<ProducerSlot>) -> Response {
    let Some(producer) = slot.get() else {
        return not_started();
    };
    let status = producer.status();
    Json(ChainJson {
        term: status.term,
        height: status.height,
        tip: hex::encode(status.tip),
        leader: status.leader.map(|l| l.to_string()),
    })
    .into_response()
}

async fn account(State(slot): State<ProducerSlot>, Path(account): Path<String>) -> Response {
    let Some(producer) = slot.get() else {
        return not_started();
    };
    let Some(id) = AccountId::from_hex(&account) else {
        return refused(StatusCode::BAD_REQUEST, "an account is 64 hex digits");
    };
    let state = producer.state();
    let held = state.accounts.get(&id).copied().unwrap_or_default();
    Json(AccountJson {
        account: id.to_string(),
        balance: held.balance,
        nonce: held.nonce,
    })
    .into_response()
}

async fn block(State(slot): State<ProducerSlot>, Path(id): Path<String>) -> Response {
    let Some(producer) = slot.get() else {
        return not_started();
    };
    let query = if let Ok(height) = id.parse::<u64>() {
        BlockQuery::Height(height)
    } else if let Some(hash) = hex::decode(&id)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    {
        BlockQuery::Hash(hash)
    } else {
        return refused(
            StatusCode::BAD_REQUEST,
            "a block is named by its height (decimal) or its hash (64 hex digits)",
        );
    };
    match producer.block(query).await {
        Some(block) => Json(BlockJson::of(&block)).into_response(),
        None => refused(StatusCode::NOT_FOUND, format!("no block {id} here")),
    }
}

async fn submit(State(slot): State<ProducerSlot>, Json(body): Json<TxJson>) -> Response {
    let Some(producer) = slot.get() else {
        return not_started();
    };
    let Ok(bytes) = hex::decode(body.tx.trim()) else {
        return refused(StatusCode::BAD_REQUEST, "tx is not hex");
    };
    match judge_relay(&bytes, producer.network(), &producer.state()) {
        RelayJudgement::Relay(transfer) => {
            let txid = hex::encode(Tx::Transfer(transfer.clone()).id());
            if producer.broadcast(transfer).await {
                (
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({ "txid": txid })),
                )
                    .into_response()
            } else {
                refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the producer's queue is full",
                )
            }
        }
        RelayJudgement::Drop(why) => refused(StatusCode::CONFLICT, why),
        RelayJudgement::Invalid(why) => refused(StatusCode::BAD_REQUEST, why),
    }
}
