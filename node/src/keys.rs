//! Key files: a 32-byte secret as one line of hex, readable only by its owner. A node
//! key is an ed25519 secret (the overlay identity); a producer key is a secp256k1
//! secret (the enrollment's signing key, the wallet, the federation member). `tenure
//! keygen` writes either.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use tenure_overlay::NodeKey;

/// A key file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file is missing.
    #[error("key file {0} does not exist; create one with `tenure keygen --out {0}`")]
    Missing(PathBuf),
    /// Reading or writing failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold 64 hex digits.
    #[error("key file {path}: expected 64 hex digits (a 32-byte secret), {found}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        found: String,
    },
    /// The file exists and overwriting was not asked for.
    #[error("key file {0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// The key itself is unusable.
    #[error("key file {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Reads the node key at `path`.
pub fn load(path: &Path) -> Result<NodeKey, KeyFileError> {
    let secret = read_secret(path)?;
    NodeKey::from_secret_bytes(secret).map_err(|e| KeyFileError::Key {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads the producer key at `path`.
pub fn load_producer(path: &Path) -> Result<bitcoin::secp256k1::Keypair, KeyFileError> {
    let secret = read_secret(path)?;
    bitcoin::secp256k1::Keypair::from_seckey_slice(bitcoin::secp256k1::SECP256K1, &secret).map_err(
        |e| KeyFileError::Key {
            path: path.to_owned(),
            message: format!("not a secp256k1 secret: {e}"),
        },
    )
}

/// The 32-byte secret in the key file at `path`.
fn read_secret(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing(path.to_owned()));
        }
        Err(source) => {
            return Err(KeyFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let malformed = |found: String| KeyFileError::Malformed {
        path: path.to_owned(),
        found,
    };
    let trimmed = text.trim();
    let bytes = hex::decode(trimmed).map_err(|e| malformed(format!("not hex ({e})")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| malformed(format!("{} bytes", b.len())))
}

/// Writes `key` to `path` (mode 0600 on Unix), refusing to overwrite unless `force`.
pub fn save(key: &NodeKey, path: &Path, force: bool) -> Result<(), KeyFileError> {
    if path.exists() && !force {
        return Err(KeyFileError::Exists(path.to_owned()));
    }
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let secret = key.secret_bytes().map_err(|e| KeyFileError::Key {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    writeln!(file, "{}", hex::encode(secret)).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_key_loads_with_the_same_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.key");
        let key = NodeKey::generate();
        save(&key, &path, false).unwrap();
        assert_eq!(load(&path).unwrap().peer_id(), key.peer_id());
    }

    #[test]
    fn a_key_file_also_serves_as_a_producer_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("producer.key");
        let key = NodeKey::generate();
        save(&key, &path, false).unwrap();
        let producer = load_producer(&path).unwrap();
        assert_eq!(producer.secret_bytes(), key.secret_bytes().unwrap());
        std::fs::write(&path, format!("{}\n", "00".repeat(32))).unwrap();
        assert!(
            load_producer(&path)
                .unwrap_err()
                .to_string()
                .contains("secp256k1")
        );
    }

    #[test]
    fn an_existing_key_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        save(&NodeKey::generate(), &path, false).unwrap();
        assert!(matches!(
            save(&NodeKey::generate(), &path, false),
            Err(KeyFileError::Exists(_))
        ));
        assert!(save(&NodeKey::generate(), &path, true).is_ok());
    }

    #[test]
    fn missing_and_malformed_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("tenure keygen")
        );
        std::fs::write(&path, "abcd\n").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("2 bytes"));
        std::fs::write(&path, "zz\n").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("not hex"));
    }
}
