//! The node's TOML configuration file.
//!
//! ```toml
//! network_id = "testnet"
//! listen_addrs = ["/ip4/127.0.0.1/tcp/7400"]
//! bootstrap_peers = ["/ip4/127.0.0.1/tcp/7401/p2p/12D3Koo..."]
//! data_dir = "data/node0"
//! key_file = "data/node0/node.key"
//! http_listen = "127.0.0.1:7700"   # optional: the HTTP API
//! enable_mdns = false               # optional
//! ```
//!
//! Every problem is reported on one line that names the field: a user fixing a config
//! should not have to read a stack of parser context.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use tenure_overlay::{Multiaddr, NetworkId, OverlayConfig};
use tenure_stackerdb::{DbId, SlotWriters, TermSchedule};

use crate::stackerdb::PublicKey;

/// A configuration problem, on one line, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, a field is missing or has the wrong type.
    #[error("config {path}{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// ` line N` where the parser knows it.
        line: String,
        /// The parser's message, which names the field.
        message: String,
    },
    /// A field parsed but its value is not usable.
    #[error("config {path}: field `{field}`: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong with its value.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    network_id: String,
    listen_addrs: Vec<String>,
    #[serde(default)]
    bootstrap_peers: Vec<String>,
    data_dir: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    http_listen: Option<String>,
    #[serde(default)]
    enable_mdns: bool,
    #[serde(default)]
    stackerdb: Vec<RawStackerDb>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStackerDb {
    id: String,
    #[serde(default = "default_max_chunk_bytes")]
    max_chunk_bytes: usize,
    // The key allowed to write each slot; `slot_signers` was its earlier name.
    #[serde(alias = "slot_signers")]
    slot_writers: Vec<String>,
}

fn default_max_chunk_bytes() -> usize {
    DEFAULT_MAX_CHUNK_BYTES
}

/// Largest chunk of a configured Stacker DB unless the config says otherwise.
pub const DEFAULT_MAX_CHUNK_BYTES: usize = 4096;

/// Largest chunk any Stacker DB may allow (it must fit one sync message).
pub const MAX_CHUNK_BYTES_LIMIT: usize = 1024 * 1024;

/// A Stacker DB this node replicates, with its policy.
#[derive(Clone, Debug)]
pub struct StackerDbConfig {
    /// The DB's id.
    pub id: DbId,
    /// Who may write each slot, and how large a chunk may be.
    pub policy: SlotWriters,
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The overlay's configuration.
    pub overlay: OverlayConfig,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// The node's secret key file.
    pub key_file: PathBuf,
    /// Where the HTTP API listens, if anywhere.
    pub http_listen: Option<SocketAddr>,
    /// The Stacker DBs this node replicates.
    pub stacker_dbs: Vec<StackerDbConfig>,
}

impl NodeConfig {
    /// Reads and validates the config at `path`. Relative paths inside the file are
    /// taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigFileError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigFileError::Parse {
            path: path.to_owned(),
            line: e
                .span()
                .map(|span| format!(" line {}", line_of(text, span.start)))
                .unwrap_or_default(),
            message: e.message().trim().replace('\n', " "),
        })?;
        let field = |field: &'static str, message: String| ConfigFileError::Field {
            path: path.to_owned(),
            field,
            message,
        };
        let network_id =
            NetworkId::new(raw.network_id).map_err(|e| field("network_id", e.to_string()))?;
        let listen_addrs = parse_addrs(&raw.listen_addrs).map_err(|m| field("listen_addrs", m))?;
        if listen_addrs.is_empty() {
            return Err(field(
                "listen_addrs",
                "must list at least one address".into(),
            ));
        }
        let bootstrap_peers =
            parse_addrs(&raw.bootstrap_peers).map_err(|m| field("bootstrap_peers", m))?;
        let http_listen = raw
            .http_listen
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|e| field("http_listen", format!("{s:?}: {e}")))
            })
            .transpose()?;

        let stacker_dbs = raw
            .stackerdb
            .iter()
            .map(|db| parse_stacker_db(db).map_err(|m| field("stackerdb", m)))
            .collect::<Result<Vec<_>, _>>()?;
        if stacker_dbs.len() > tenure_overlay::hello::MAX_STACKER_DBS {
            return Err(field(
                "stackerdb",
                format!("{} DBs, at most 256", stacker_dbs.len()),
            ));
        }
        let mut overlay = OverlayConfig::loopback(network_id);
        overlay.listen_addrs = listen_addrs;
        overlay.bootstrap_peers = bootstrap_peers;
        overlay.enable_mdns = raw.enable_mdns;
        overlay
            .validate()
            .map_err(|e| field("overlay", e.to_string()))?;
        Ok(NodeConfig {
            overlay,
            data_dir: base.join(raw.data_dir),
            key_file: base.join(raw.key_file),
            http_listen,
            stacker_dbs,
        })
    }
}

fn parse_stacker_db(raw: &RawStackerDb) -> Result<StackerDbConfig, String> {
    let id = DbId::new(raw.id.clone()).map_err(|e| format!("id {:?}: {e}", raw.id))?;
    if raw.max_chunk_bytes == 0 || raw.max_chunk_bytes > MAX_CHUNK_BYTES_LIMIT {
        return Err(format!(
            "{id}: max_chunk_bytes {} must be 1 to {MAX_CHUNK_BYTES_LIMIT}",
            raw.max_chunk_bytes
        ));
    }
    let owners = raw
        .slot_writers
        .iter()
        .enumerate()
        .map(|(slot, hex_key)| {
            hex::decode(hex_key)
                .ok()
                .and_then(|bytes| PublicKey::from_slice(&bytes).ok())
                .map(Some)
                .ok_or_else(|| format!("{id}: slot_writers[{slot}] is not a compressed public key"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if owners.is_empty() {
        return Err(format!("{id}: slot_writers is empty"));
    }
    // Configured DBs have no term: garbage collection comes with the chain's boot DBs.
    let never = TermSchedule {
        first_burn_height: u64::MAX,
        term_length: 0,
    };
    Ok(StackerDbConfig {
        policy: SlotWriters::new(owners, raw.max_chunk_bytes, never),
        id,
    })
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, String> {
    addrs
        .iter()
        .map(|a| a.parse::<Multiaddr>().map_err(|e| format!("{a:?}: {e}")))
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

#[cfg(test)]
mod tests {
    use tenure_stackerdb::policy::DbPolicy;

    use super::*;

    const GOOD: &str = r#"
network_id = "testnet"
listen_addrs = ["/ip4/127.0.0.1/tcp/0"]
bootstrap_peers = ["/ip4/127.0.0.1/tcp/7401"]
data_dir = "data"
key_file = "node.key"
http_listen = "127.0.0.1:0"
"#;

    fn parse(text: &str) -> Result<NodeConfig, ConfigFileError> {
        NodeConfig::parse(text, Path::new("node.toml"), Path::new("/etc/tenure"))
    }

    #[test]
    fn a_complete_config_parses_with_paths_relative_to_the_file() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.overlay.network_id.as_str(), "testnet");
        assert_eq!(config.overlay.bootstrap_peers.len(), 1);
        assert_eq!(config.data_dir, Path::new("/etc/tenure/data"));
        assert_eq!(config.key_file, Path::new("/etc/tenure/node.key"));
        assert!(config.http_listen.is_some());
    }

    #[test]
    fn a_missing_field_is_named_on_one_line() {
        let text = GOOD.replace("network_id = \"testnet\"\n", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("network_id"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_with_its_line() {
        let text = GOOD.replace("data_dir = \"data\"", "data_dir = 7");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 5"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_bad_address_is_named_with_its_field() {
        let text = GOOD.replace("/ip4/127.0.0.1/tcp/7401", "not-an-address");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("field `bootstrap_peers`"), "{err}");
        assert!(err.contains("not-an-address"), "{err}");
    }

    #[test]
    fn a_bad_network_id_is_named() {
        let text = GOOD.replace("\"testnet\"", "\"Test Net\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("field `network_id`"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let text = format!("{GOOD}\nlisten_port = 3\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn stacker_dbs_are_read_with_their_slot_writers() {
        let key = "02".to_owned() + &"11".repeat(32);
        let text = format!(
            "{GOOD}\n[[stackerdb]]\nid = \"demo.db\"\nslot_writers = [\"{key}\", \"{key}\"]\n"
        );
        match parse(&text) {
            Ok(config) => {
                assert_eq!(config.stacker_dbs.len(), 1);
                assert_eq!(config.stacker_dbs[0].policy.slot_count(), 2);
            }
            // A fixed key that is not on the curve: the error must name it.
            Err(err) => assert!(err.to_string().contains("slot_writers[0]"), "{err}"),
        }
        let bad = format!("{GOOD}\n[[stackerdb]]\nid = \"demo.db\"\nslot_writers = [\"zz\"]\n");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("slot_writers[0]"), "{err}");
        // The earlier name of the field is still read as this one.
        let old = format!("{GOOD}\n[[stackerdb]]\nid = \"demo.db\"\nslot_signers = [\"zz\"]\n");
        let err = parse(&old).unwrap_err().to_string();
        assert!(err.contains("slot_writers[0]"), "{err}");
    }

    #[test]
    fn a_missing_file_says_which() {
        let err = NodeConfig::load(Path::new("/nonexistent/tenure.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tenure.toml"));
    }
}
