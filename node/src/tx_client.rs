//! `tenure tx …`: a client of the chain's HTTP API ([`crate::chain_api`]).
//!
//! Keys are the Stacker DB client's key files (a secp256k1 secret in hex, made with
//! `tenure stackerdb keygen`); an account is the key's x-only public key. Transfers are
//! signed here: the node only ever sees signed transactions.

use std::path::Path;

use anyhow::{Context, bail};
use bitcoin::secp256k1::{Keypair, SECP256K1};
use tenure_chain::block::{AccountId, Transfer, Tx};

use crate::{
    chain_api::{AccountJson, TxJson},
    stackerdb::client::load_key,
};

/// How long a request to the node may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build()
}

/// The account of the key in `key_file`.
pub fn account_of(key_file: &Path) -> anyhow::Result<AccountId> {
    let keypair = Keypair::from_secret_key(SECP256K1, &load_key(key_file)?);
    Ok(AccountId::of(&keypair.x_only_public_key().0))
}

/// The account `account` (hex) as the node sees it.
pub fn balance(node: &str, account: &str) -> anyhow::Result<AccountJson> {
    agent()
        .get(&format!("http://{node}/v1/accounts/{account}"))
        .call()
        .map_err(|e| answer_error(node, e))?
        .into_json()
        .context("the node's answer is not an account")
}

/// Signs a transfer of `amount` (and `fee`) from the key's account to `to` (hex) with
/// `network`'s name and the account's next nonce (asked of the node unless given), and
/// submits it. Returns the node's answer.
pub fn send(
    node: &str,
    network: &str,
    key_file: &Path,
    to: &str,
    amount: u64,
    fee: u64,
    nonce: Option<u64>,
) -> anyhow::Result<serde_json::Value> {
    let keypair = Keypair::from_secret_key(SECP256K1, &load_key(key_file)?);
    let from = AccountId::of(&keypair.x_only_public_key().0);
    let to = AccountId::from_hex(to).context("--to is an account: 64 hex digits")?;
    let nonce = match nonce {
        Some(n) => n,
        None => balance(node, &from.to_string())?.nonce,
    };
    let transfer = Transfer::sign(network, &keypair, to, amount, fee, nonce);
    let tx = hex::encode(Tx::Transfer(transfer).to_bytes()?);
    let answer: serde_json::Value = agent()
        .post(&format!("http://{node}/v1/transactions"))
        .send_json(serde_json::to_value(TxJson { tx })?)
        .map_err(|e| answer_error(node, e))?
        .into_json()?;
    Ok(answer)
}

/// A refusal with the node's reason, or why the node could not be reached.
fn answer_error(node: &str, error: ureq::Error) -> anyhow::Error {
    match error {
        ureq::Error::Status(code, response) => {
            let reason = response
                .into_json::<serde_json::Value>()
                .ok()
                .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                .unwrap_or_default();
            anyhow::anyhow!("the node refused ({code}): {reason}")
        }
        other => anyhow::anyhow!("cannot reach the node at {node}: {other}"),
    }
}

/// Fails unless `answer` says the transfer was taken.
pub fn check_taken(answer: &serde_json::Value) -> anyhow::Result<()> {
    if answer.get("txid").is_none() {
        bail!("the node did not take the transfer: {answer}");
    }
    Ok(())
}
