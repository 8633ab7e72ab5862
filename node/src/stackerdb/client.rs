//! `tenure stackerdb …`: client commands that talk to a node's HTTP API.
//!
//! Writers sign locally with their own secp256k1 key; the node only ever sees signed
//! chunks. The network id a chunk is signed for is read from the node's status, so a
//! chunk cannot be signed for the wrong network by mistake.

use std::{io::Write, path::Path};

use anyhow::{Context, bail};
use bitcoin::secp256k1::{SECP256K1, SecretKey};
use tenure_stackerdb::{Chunk, DbId};

use super::api::{SlotJson, WriteJson};

/// Creates a chunk-signing key file (hex secret, mode 0600) and prints its public key.
pub fn keygen(out: &Path, force: bool) -> anyhow::Result<String> {
    if out.exists() && !force {
        bail!(
            "key file {} already exists; pass --force to replace it",
            out.display()
        );
    }
    let secret = SecretKey::new(&mut bitcoin::secp256k1::rand::thread_rng());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    writeln!(file, "{}", hex::encode(secret.secret_bytes()))?;
    Ok(hex::encode(secret.public_key(SECP256K1).serialize()))
}

/// Reads a chunk-signing key file.
pub fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let bytes = hex::decode(text.trim())
        .with_context(|| format!("key file {}: not hex", path.display()))?;
    SecretKey::from_slice(&bytes)
        .with_context(|| format!("key file {}: not a secret key", path.display()))
}

fn network_of(node: &str) -> anyhow::Result<String> {
    let status: serde_json::Value = ureq::get(&format!("http://{node}/v1/status"))
        .call()
        .with_context(|| format!("cannot reach the node at {node}"))?
        .into_json()?;
    status
        .get("network_id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .context("the node's status has no network_id")
}

/// Signs `data` and writes it to `slot` of `db` at the node; returns the node's answer.
pub fn put(
    node: &str,
    db: &str,
    slot: u32,
    version: u64,
    key: &SecretKey,
    data: Vec<u8>,
) -> anyhow::Result<String> {
    let id = DbId::new(db)?;
    let network = network_of(node)?;
    let chunk = Chunk::sign(&network, &id, slot, version, data, key);
    let body = WriteJson {
        slot,
        version,
        data: hex::encode(&chunk.data),
        signature: hex::encode(&chunk.signature),
    };
    match ureq::post(&format!("http://{node}/v1/stackerdb/{db}")).send_json(&body) {
        Ok(response) => Ok(response.into_string()?),
        Err(ureq::Error::Status(code, response)) => {
            let text = response.into_string().unwrap_or_default();
            bail!("the node refused the write ({code}): {text}")
        }
        Err(err) => Err(err).with_context(|| format!("cannot reach the node at {node}")),
    }
}

/// Reads `slot` of `db` from the node.
pub fn get(node: &str, db: &str, slot: u32) -> anyhow::Result<SlotJson> {
    match ureq::get(&format!("http://{node}/v1/stackerdb/{db}/{slot}")).call() {
        Ok(response) => Ok(response.into_json()?),
        Err(ureq::Error::Status(code, response)) => {
            let text = response.into_string().unwrap_or_default();
            bail!("the node answered {code}: {text}")
        }
        Err(err) => Err(err).with_context(|| format!("cannot reach the node at {node}")),
    }
}
