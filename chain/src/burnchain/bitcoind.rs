//! A bitcoind JSON-RPC client: the burnchain source of real deployments.
//!
//! URL plus cookie file or user and password; every failure is its own
//! [`BurnchainError`] (unreachable, credentials refused, RPC error, malformed answer),
//! never a hang or a panic, and a block is checked against the hash that was asked
//! for. This is the only module of the crate that does I/O: it is an adapter the node
//! calls, and the consensus rules never reach it.

use std::{path::Path, time::Duration};

use bitcoin::{Block, BlockHash, consensus};
use serde_json::{Value, json};

use super::{BurnchainError, BurnchainSource};

/// Largest JSON-RPC answer read (a 4 MB block as hex, with room).
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// A bitcoind JSON-RPC client.
pub struct BitcoindRpc {
    url: String,
    user: String,
    password: String,
    agent: ureq::Agent,
}

impl BitcoindRpc {
    /// A client for `url` with a user and password.
    pub fn with_credentials(url: &str, user: &str, password: &str) -> BitcoindRpc {
        BitcoindRpc {
            url: url.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// A client for `url` using bitcoind's cookie file (`<datadir>/.cookie`).
    pub fn with_cookie(url: &str, cookie: &Path) -> Result<BitcoindRpc, BurnchainError> {
        let cookie_error = |reason: String| BurnchainError::Cookie {
            path: cookie.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(cookie).map_err(|e| cookie_error(e.to_string()))?;
        let (user, password) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| cookie_error("not user:password".into()))?;
        Ok(BitcoindRpc::with_credentials(url, user, password))
    }

    fn call(&self, method: &str, params: Value) -> Result<Value, BurnchainError> {
        let body = json!({"jsonrpc": "1.0", "id": "tenure", "method": method, "params": params});
        let auth = basic_auth(&self.user, &self.password);
        let answer = match self
            .agent
            .post(&self.url)
            .set("Authorization", &auth)
            .send_json(body)
        {
            Ok(response) => response,
            // bitcoind answers RPC errors with HTTP 500 and a JSON body.
            Err(ureq::Error::Status(status, _)) if status == 401 || status == 403 => {
                return Err(BurnchainError::Unauthorized {
                    url: self.url.clone(),
                    status,
                });
            }
            Err(ureq::Error::Status(_, response)) => response,
            Err(err) => {
                return Err(BurnchainError::Unreachable {
                    url: self.url.clone(),
                    reason: err.to_string(),
                });
            }
        };
        let malformed = |reason: String| BurnchainError::Malformed {
            method: method.to_owned(),
            reason,
        };
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(answer.into_reader(), MAX_ANSWER_BYTES),
            &mut text,
        )
        .map_err(|e| malformed(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned();
            return Err(BurnchainError::Rpc {
                method: method.to_owned(),
                message,
            });
        }
        value
            .get("result")
            .cloned()
            .ok_or_else(|| malformed("no result".into()))
    }
}

impl BurnchainSource for BitcoindRpc {
    fn tip_height(&self) -> Result<u64, BurnchainError> {
        self.call("getblockcount", json!([]))?
            .as_u64()
            .ok_or_else(|| BurnchainError::Malformed {
                method: "getblockcount".into(),
                reason: "not a height".into(),
            })
    }

    fn block_hash(&self, height: u64) -> Result<BlockHash, BurnchainError> {
        let answer = self.call("getblockhash", json!([height]))?;
        answer
            .as_str()
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| BurnchainError::Malformed {
                method: "getblockhash".into(),
                reason: "not a block hash".into(),
            })
    }

    fn block(&self, hash: &BlockHash) -> Result<Block, BurnchainError> {
        let answer = self.call("getblock", json!([hash.to_string(), 0]))?;
        let malformed = |reason: String| BurnchainError::Malformed {
            method: "getblock".into(),
            reason,
        };
        let hex = answer.as_str().ok_or_else(|| malformed("not hex".into()))?;
        let bytes = hex::decode(hex).map_err(|e| malformed(e.to_string()))?;
        let block: Block = consensus::deserialize(&bytes).map_err(|e| malformed(e.to_string()))?;
        if block.block_hash() != *hash {
            return Err(malformed("a block with another hash".into()));
        }
        Ok(block)
    }
}

fn basic_auth(user: &str, password: &str) -> String {
    use bitcoin::base64::{Engine, engine::general_purpose::STANDARD};
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}
