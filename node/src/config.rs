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
//!
//! [burnchain]                       # optional: follow the embedded regtest chain
//! first_term_height = 111           # term 0's first burn block (the whole network's)
//! mine_interval_ms = 1000           # optional: this node mines, one block this often
//! premine_to = ["<x-only key hex>"] # the miner's blocks before term 0 pay these in turn
//!
//! [producer]                        # optional: enroll as a producer (needs [burnchain])
//! key_file = "producer.key"         # its secp256k1 key (`tenure keygen` writes one)
//! spend_sat = 200000                # what each enrollment burns
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
    #[serde(default)]
    burnchain: Option<RawBurnchain>,
    #[serde(default)]
    producer: Option<RawProducer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurnchain {
    first_term_height: u64,
    #[serde(default)]
    mine_interval_ms: Option<u64>,
    #[serde(default)]
    premine_to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProducer {
    key_file: PathBuf,
    spend_sat: u64,
}

/// The embedded regtest burnchain as this node follows (and maybe mines) it.
#[derive(Clone, Debug)]
pub struct BurnchainConfig {
    /// Term 0's first burn block: every node of the network must say the same.
    pub first_term_height: u64,
    /// This node mines, one block per interval once term 0 starts (the blocks before
    /// it, the premine, at once).
    pub mine_interval: Option<std::time::Duration>,
    /// Whom the premine pays, in turn (their wallets' taproot outputs).
    pub premine_to: Vec<bitcoin::XOnlyPublicKey>,
}

/// This node's producer: its key and what it spends on each enrollment.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    /// Its secp256k1 key file.
    pub key_file: PathBuf,
    /// What each enrollment burns, in satoshis.
    pub spend_sat: u64,
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
    /// The burnchain it follows, if any.
    pub burnchain: Option<BurnchainConfig>,
    /// Its producer, if it enrolls as one.
    pub producer: Option<ProducerSettings>,
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
        let burnchain = raw
            .burnchain
            .map(|b| parse_burnchain(&b).map_err(|m| field("burnchain", m)))
            .transpose()?;
        let producer = match raw.producer {
            Some(p) if burnchain.is_none() => {
                return Err(field(
                    "producer",
                    format!(
                        "{}: a producer enrolls on a burnchain: add a [burnchain] section",
                        p.key_file.display()
                    ),
                ));
            }
            Some(p) if p.spend_sat == 0 => {
                return Err(field("producer", "spend_sat must be above 0".into()));
            }
            Some(p) => Some(ProducerSettings {
                key_file: base.join(p.key_file),
                spend_sat: p.spend_sat,
            }),
            None => None,
        };
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
            burnchain,
            producer,
        })
    }
}

fn parse_burnchain(raw: &RawBurnchain) -> Result<BurnchainConfig, String> {
    let maturity = tenure_chain::burnchain::regtest::COINBASE_MATURITY;
    if raw.first_term_height <= maturity {
        return Err(format!(
            "first_term_height {} must be above {maturity}: the premine's coinbases mature before term 0",
            raw.first_term_height
        ));
    }
    let mine_interval = match raw.mine_interval_ms {
        Some(0) => return Err("mine_interval_ms must be above 0".into()),
        Some(ms) => Some(std::time::Duration::from_millis(ms)),
        None => None,
    };
    let premine_to = raw
        .premine_to
        .iter()
        .enumerate()
        .map(|(i, key)| {
            hex::decode(key)
                .ok()
                .and_then(|bytes| bitcoin::XOnlyPublicKey::from_slice(&bytes).ok())
                .ok_or_else(|| format!("premine_to[{i}] is not an x-only public key"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BurnchainConfig {
        first_term_height: raw.first_term_height,
        mine_interval,
        premine_to,
    })
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
    fn a_producer_and_its_burnchain_are_read_and_checked() {
        let key =
            bitcoin::secp256k1::Keypair::from_seckey_slice(bitcoin::secp256k1::SECP256K1, &[7; 32])
                .unwrap()
                .x_only_public_key()
                .0;
        let burn = format!(
            "\n[burnchain]\nfirst_term_height = 111\nmine_interval_ms = 500\npremine_to = [\"{key}\"]\n"
        );
        let producer = "\n[producer]\nkey_file = \"producer.key\"\nspend_sat = 200000\n";
        let config = parse(&format!("{GOOD}{burn}{producer}")).unwrap();
        let b = config.burnchain.unwrap();
        assert_eq!(b.first_term_height, 111);
        assert_eq!(b.mine_interval, Some(std::time::Duration::from_millis(500)));
        assert_eq!(b.premine_to, vec![key]);
        let p = config.producer.unwrap();
        assert_eq!(p.key_file, Path::new("/etc/tenure/producer.key"));
        assert_eq!(p.spend_sat, 200_000);
        // A producer without a burnchain, a premine too short to mature, a bad key.
        let err = parse(&format!("{GOOD}{producer}")).unwrap_err().to_string();
        assert!(err.contains("[burnchain]"), "{err}");
        let err = parse(&format!("{GOOD}{}", burn.replace("111", "50")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("first_term_height"), "{err}");
        let err = parse(&format!("{GOOD}{}", burn.replace(&key.to_string(), "zz")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("premine_to[0]"), "{err}");
    }

    #[test]
    fn a_missing_file_says_which() {
        let err = NodeConfig::load(Path::new("/nonexistent/tenure.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tenure.toml"));
    }
}
